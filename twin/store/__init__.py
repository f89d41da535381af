"""The store of the twin's live state in PostgreSQL (with or without TimescaleDB): schema, writes and queries."""
