"""Simulators: synthetic and scenario sensor streams, published over MQTT exactly as real sensors would.

Simulators import only ``twin``; they meet ingest and the models through MQTT and the database.
"""
