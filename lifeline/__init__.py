"""Lifeline Twin's composition root: settings, the ``lifeline`` command, embedded services and the demo."""

__version__ = "0.1.0"
