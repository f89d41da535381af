"""The city information model: sensors, assets and the store of the city's live state.

``twin`` is the bottom layer: it imports nothing else of the project.
"""
