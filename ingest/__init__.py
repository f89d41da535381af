"""MQTT ingest: decode and validate sensor messages, batch them, store them, run the detectors on each batch."""
