"""Connecting to the store: one schema per deployment (or per test), selected through ``search_path``."""

from __future__ import annotations

import re
from typing import Any

import psycopg
from psycopg.rows import dict_row

from twin.errors import ConfigError

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

DictConnection = psycopg.Connection[dict[str, Any]]


def check_schema_name(schema: str) -> str:
    """Return *schema* if it is a plain lower-case SQL identifier, else raise :class:`ConfigError`."""
    if not _SCHEMA_NAME.match(schema):
        raise ConfigError(f"schema name {schema!r} must match {_SCHEMA_NAME.pattern}")
    return schema


def connect_kwargs(schema: str) -> dict[str, Any]:
    """Return psycopg connect keyword arguments that put *schema* first on the search path.

    ``public`` stays on the path because that is where the TimescaleDB extension's functions live.
    """
    check_schema_name(schema)
    return {"options": f"-c search_path={schema},public -c TimeZone=UTC", "application_name": "lifeline-twin"}


def connect(conninfo: str, *, schema: str, autocommit: bool = False) -> DictConnection:
    """Open a connection to *conninfo* whose rows are dicts and whose search path starts with *schema*."""
    return psycopg.connect(conninfo, autocommit=autocommit, row_factory=dict_row, **connect_kwargs(schema))


def alerts_channel(schema: str) -> str:
    """Return the LISTEN/NOTIFY channel on which alert events of *schema* are announced."""
    return f"lifeline_alerts_{check_schema_name(schema)}"
