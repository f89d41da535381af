"""What a store holds, for an operator: ``lifeline db status``.

Mode and migrations, the size of the big tables (row counts as PostgreSQL estimates them, so the answer is quick
on a table of billions of rows; bytes with indexes and TOAST), the time span of the raw readings and how far
retention has deleted them. Every figure is read with cheap queries: the oldest reading by one primary-key probe
per sensor, the newest from ``sensor_latest``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from twin.errors import SchemaError
from twin.store.retention import oldest_raw_reading, raw_deleted_before
from twin.store.schema import MIGRATIONS, StorageMode, current_mode

TABLES = ("readings", "readings_1m", "readings_1h", "readings_pending", "alerts", "alert_events", "dead_letter")
"""The tables whose size is reported (TimescaleDB: the hypertable's chunks and the aggregates' materialisations)."""


@dataclass(frozen=True, slots=True)
class TableSize:
    """One table: estimated rows and bytes on disk (indexes and TOAST included)."""

    name: str
    rows: int
    bytes: int


@dataclass(frozen=True, slots=True)
class StoreStatus:
    """What :func:`store_status` found.

    Attributes:
        schema: the store's schema.
        mode: its storage mode.
        version: the newest migration applied.
        pending: migrations this version of Lifeline knows and the schema lacks (``lifeline db migrate``).
        sensors: sensors defined.
        tables: the big tables' sizes.
        oldest_raw, newest_raw: the span of the raw readings (None: none stored).
        raw_deleted_before: raw readings before this have been deleted by retention (None: none were).
    """

    schema: str
    mode: StorageMode
    version: int
    pending: tuple[int, ...]
    sensors: int
    tables: tuple[TableSize, ...]
    oldest_raw: datetime | None
    newest_raw: datetime | None
    raw_deleted_before: datetime | None


def store_status(conn: psycopg.Connection[Any], *, schema: str) -> StoreStatus:
    """Return what *schema* holds (see the module docstring).

    Raises:
        SchemaError: the schema is not migrated.
    """
    mode = current_mode(conn, schema=schema)
    if mode is None:
        raise SchemaError(f"schema {schema!r} is not migrated: run 'lifeline db migrate'")
    cur = conn.cursor(row_factory=dict_row)
    applied = {int(r["version"]) for r in cur.execute("SELECT version FROM schema_migrations").fetchall()}
    pending = tuple(version for version, _name, _step in MIGRATIONS if version not in applied)
    sensors = cur.execute("SELECT count(*) AS n FROM sensors").fetchone()
    sizes = []
    for name in TABLES:
        sizes.append(_size(cur, schema, name, mode))
    newest = cur.execute("SELECT max(ts) AS t FROM sensor_latest").fetchone()
    return StoreStatus(
        schema=schema,
        mode=mode,
        version=max(applied, default=0),
        pending=pending,
        sensors=int(sensors["n"]) if sensors else 0,
        tables=tuple(s for s in sizes if s is not None),
        oldest_raw=oldest_raw_reading(conn),
        newest_raw=newest["t"] if newest else None,
        raw_deleted_before=raw_deleted_before(conn, schema=schema),
    )


def _size(cur: psycopg.Cursor[dict[str, Any]], schema: str, name: str, mode: StorageMode) -> TableSize | None:
    """A table's estimated rows and bytes (None: no such table).

    TimescaleDB's hypertable and continuous aggregates are measured with its own functions over their chunks. A
    plain table PostgreSQL has not analysed yet has no estimate: it is counted when under 256 MiB.
    """
    if mode is StorageMode.TIMESCALEDB and name in ("readings", "readings_1m", "readings_1h"):
        target = f"{_quote(schema)}.{_quote(name)}"
        if name != "readings":
            mat = cur.execute(
                """SELECT materialization_hypertable_schema AS s, materialization_hypertable_name AS n
                   FROM timescaledb_information.continuous_aggregates WHERE view_schema = %s AND view_name = %s""",
                (schema, name),
            ).fetchone()
            if mat is None:
                return None
            target = f"{_quote(mat['s'])}.{_quote(mat['n'])}"
        row = cur.execute(
            """SELECT approximate_row_count(%s::regclass) AS rows,
                      (SELECT total_bytes FROM hypertable_detailed_size(%s::regclass)) AS bytes""",
            (target, target),
        ).fetchone()
        return None if row is None else TableSize(name, int(row["rows"] or 0), int(row["bytes"] or 0))
    row = cur.execute(
        """SELECT c.reltuples::bigint AS rows, pg_total_relation_size(c.oid) AS bytes,
                  pg_relation_size(c.oid) AS heap
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s""",
        (schema, name),
    ).fetchone()
    if row is None:
        return None
    rows = int(row["rows"])
    if rows < 0 and int(row["heap"]) < 256 * 2**20:  # never analysed: count it while that is cheap
        counted = cur.execute(
            sql.SQL("SELECT count(*) AS n FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(name))
        ).fetchone()
        rows = int(counted["n"]) if counted else 0
    return TableSize(name, max(rows, 0), int(row["bytes"]))


def _quote(identifier: str) -> str:
    """*identifier* quoted for a regclass literal."""
    return '"' + identifier.replace('"', '""') + '"'
