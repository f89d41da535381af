"""Versioned schema migrations for the store, on TimescaleDB or on plain PostgreSQL ≥ 15.

With the ``timescaledb`` extension available, ``readings`` is a hypertable and ``readings_1m`` / ``readings_1h``
are continuous aggregates with refresh, compression and retention policies. Without it, ``readings`` is a plain
table with a BRIN index on ``ts`` and the same two rollups are tables the writer keeps up to date, in the same
transaction as the readings or (ingest) by folding ``readings_pending`` about once a second (see
:mod:`twin.store.readings`). Both modes expose the same columns, so every query runs unchanged on either.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import psycopg
from psycopg import sql

from twin.errors import SchemaError
from twin.store.db import check_schema_name

log = logging.getLogger(__name__)


class StorageMode(enum.StrEnum):
    """How readings are stored: ``timescaledb`` (hypertable + continuous aggregates) or ``postgresql``."""

    TIMESCALEDB = "timescaledb"
    POSTGRESQL = "postgresql"


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """How long data is kept and when raw chunks are compressed (TimescaleDB only), as intervals.

    Raw readings are kept 800 days: the yearly health check reads a year's raw readings (hours over limits,
    overflow events, drain times) and those of the year before for comparison, so both must still be there in the
    spring after the year checked. With 400 days (the value of earlier versions, which the schemas they migrated
    keep: ``SELECT remove_retention_policy('readings')`` and ``add_retention_policy`` with 800 days changes it),
    the year before was partly gone by then and its figures undercounted.
    """

    raw_retention: timedelta = timedelta(days=800)
    compress_after: timedelta = timedelta(days=7)


Migration = Callable[[psycopg.Connection[object], StorageMode, RetentionPolicy], None]


def _v1_core(conn: psycopg.Connection[object], mode: StorageMode, policy: RetentionPolicy) -> None:
    conn.execute(
        """
        CREATE TABLE sensors (
            sensor_id   text PRIMARY KEY,
            network     text NOT NULL CHECK (network IN ('drainage', 'water', 'gas', 'rain')),
            quantity    text NOT NULL,
            unit        text NOT NULL,
            name        text NOT NULL,
            asset_id    text,
            district    text NOT NULL DEFAULT '',
            x_m         double precision NOT NULL DEFAULT 0,
            y_m         double precision NOT NULL DEFAULT 0,
            valid_min   double precision,
            valid_max   double precision,
            interval_s  double precision NOT NULL DEFAULT 60,
            limits      jsonb NOT NULL DEFAULT '[]',
            updated_at  timestamptz NOT NULL DEFAULT now()
        )"""
    )
    conn.execute(
        """
        CREATE TABLE readings (
            ts          timestamptz NOT NULL,
            sensor_id   text NOT NULL,
            value       double precision NOT NULL,
            quality     smallint NOT NULL DEFAULT 0,
            PRIMARY KEY (sensor_id, ts)
        )"""
    )
    conn.execute(
        """
        CREATE TABLE sensor_latest (
            sensor_id   text PRIMARY KEY,
            ts          timestamptz NOT NULL,
            value       double precision NOT NULL,
            quality     smallint NOT NULL,
            received_at timestamptz NOT NULL DEFAULT now()
        )"""
    )
    conn.execute(
        """
        CREATE TABLE alerts (
            id          bigserial PRIMARY KEY,
            cause_key   text NOT NULL,
            kind        text NOT NULL,
            sensor_id   text,
            network     text NOT NULL,
            district    text NOT NULL DEFAULT '',
            grade       smallint NOT NULL CHECK (grade BETWEEN 1 AND 4),
            active      boolean NOT NULL DEFAULT true,
            state       text NOT NULL DEFAULT 'raised',
            raised_at   timestamptz NOT NULL,
            updated_at  timestamptz NOT NULL,
            cleared_at  timestamptz,
            value       double precision,
            threshold   double precision,
            peak_value  double precision,
            message     text NOT NULL,
            message_en  text NOT NULL
        )"""
    )
    # One active alert per cause: a lasting exceedance updates its alert instead of raising new ones.
    conn.execute("CREATE UNIQUE INDEX alerts_one_active_per_cause ON alerts (cause_key) WHERE active")
    conn.execute("CREATE INDEX alerts_raised_at ON alerts (raised_at DESC)")
    conn.execute(
        """
        CREATE TABLE alert_events (
            id          bigserial PRIMARY KEY,
            alert_id    bigint NOT NULL REFERENCES alerts (id),
            event       text NOT NULL,
            ts          timestamptz NOT NULL DEFAULT now(),
            grade       smallint NOT NULL,
            value       double precision,
            actor       text NOT NULL DEFAULT 'system',
            note        text NOT NULL DEFAULT ''
        )"""
    )
    conn.execute("CREATE INDEX alert_events_alert ON alert_events (alert_id, id)")
    conn.execute(
        """
        CREATE TABLE dead_letter (
            id          bigserial PRIMARY KEY,
            received_at timestamptz NOT NULL DEFAULT now(),
            topic       text NOT NULL,
            raw         bytea NOT NULL,
            raw_size    integer NOT NULL,
            digest      bytea NOT NULL,
            item_index  integer NOT NULL DEFAULT -1,
            reason      text NOT NULL,
            detail      text NOT NULL,
            UNIQUE (digest, item_index)
        )"""
    )
    conn.execute("CREATE INDEX dead_letter_received_at ON dead_letter (received_at DESC)")
    if mode is StorageMode.TIMESCALEDB:
        _v1_timescaledb(conn, policy)
    else:
        _v1_postgresql(conn)


_ROLLUPS = (("readings_1m", "1 minute"), ("readings_1h", "1 hour"))


def _v1_postgresql(conn: psycopg.Connection[object]) -> None:
    conn.execute("CREATE INDEX readings_ts_brin ON readings USING brin (ts) WITH (pages_per_range = 32)")
    for table, _width in _ROLLUPS:
        conn.execute(
            sql.SQL(
                """
                CREATE TABLE {} (
                    sensor_id   text NOT NULL,
                    bucket      timestamptz NOT NULL,
                    n           bigint NOT NULL,
                    sum_value   double precision NOT NULL,
                    min_value   double precision NOT NULL,
                    max_value   double precision NOT NULL,
                    PRIMARY KEY (sensor_id, bucket)
                )"""
            ).format(sql.Identifier(table))
        )


def _v1_timescaledb(conn: psycopg.Connection[object], policy: RetentionPolicy) -> None:
    conn.execute("SELECT create_hypertable('readings', by_range('ts', INTERVAL '1 day'))")
    for table, width in _ROLLUPS:
        conn.execute(
            sql.SQL(
                """
                CREATE MATERIALIZED VIEW {table}
                WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
                SELECT sensor_id, time_bucket(INTERVAL {width}, ts) AS bucket, count(*) AS n,
                       sum(value) AS sum_value, min(value) AS min_value, max(value) AS max_value
                FROM readings GROUP BY sensor_id, bucket WITH NO DATA"""
            ).format(table=sql.Identifier(table), width=sql.Literal(width))
        )
    conn.execute(
        "SELECT add_continuous_aggregate_policy('readings_1m', start_offset => INTERVAL '2 days',"
        " end_offset => INTERVAL '1 minute', schedule_interval => INTERVAL '1 minute')"
    )
    conn.execute(
        "SELECT add_continuous_aggregate_policy('readings_1h', start_offset => INTERVAL '3 days',"
        " end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '30 minutes')"
    )
    conn.execute(
        "ALTER TABLE readings SET (timescaledb.compress, timescaledb.compress_segmentby = 'sensor_id',"
        " timescaledb.compress_orderby = 'ts DESC')"
    )
    conn.execute("SELECT add_compression_policy('readings', %s::interval)", (policy.compress_after,))
    conn.execute("SELECT add_retention_policy('readings', %s::interval)", (policy.raw_retention,))


def _v2_twin_assets(conn: psycopg.Connection[object], mode: StorageMode, policy: RetentionPolicy) -> None:
    """The twin's assets, versioned: every import of a model is a new version; the newest is current."""
    conn.execute(
        """
        CREATE TABLE twin_models (
            model_id      bigserial PRIMARY KEY,
            layer         text NOT NULL,
            version       integer NOT NULL,
            name          text NOT NULL,
            crs           text NOT NULL,
            source_format text NOT NULL DEFAULT '',
            source        text NOT NULL DEFAULT '',
            checksum      text NOT NULL,
            counts        jsonb NOT NULL DEFAULT '{}',
            imported_at   timestamptz NOT NULL DEFAULT now(),
            UNIQUE (layer, version)
        )"""
    )
    conn.execute(
        """
        CREATE TABLE twin_nodes (
            model_id  bigint NOT NULL REFERENCES twin_models ON DELETE CASCADE,
            node_id   text NOT NULL,
            kind      text NOT NULL,
            x_m       double precision NOT NULL,
            y_m       double precision NOT NULL,
            z_m       double precision NOT NULL,
            depth_m   double precision NOT NULL DEFAULT 0,
            ground_m  double precision,
            attrs     jsonb NOT NULL DEFAULT '{}',
            PRIMARY KEY (model_id, node_id)
        )"""
    )
    conn.execute(
        """
        CREATE TABLE twin_links (
            model_id    bigint NOT NULL REFERENCES twin_models ON DELETE CASCADE,
            link_id     text NOT NULL,
            kind        text NOT NULL,
            from_id     text NOT NULL,
            to_id       text NOT NULL,
            diameter_m  double precision NOT NULL,
            length_m    double precision NOT NULL,
            roughness   double precision NOT NULL DEFAULT 0,
            vertices    jsonb NOT NULL DEFAULT '[]',
            attrs       jsonb NOT NULL DEFAULT '{}',
            PRIMARY KEY (model_id, link_id)
        )"""
    )
    conn.execute(
        """
        CREATE TABLE twin_valves (
            model_id      bigint NOT NULL REFERENCES twin_models ON DELETE CASCADE,
            valve_id      text NOT NULL,
            link_id       text NOT NULL,
            near_node_id  text NOT NULL,
            x_m           double precision NOT NULL,
            y_m           double precision NOT NULL,
            PRIMARY KEY (model_id, valve_id)
        )"""
    )
    conn.execute(
        """
        CREATE TABLE twin_buildings (
            model_id     bigint NOT NULL REFERENCES twin_models ON DELETE CASCADE,
            building_id  text NOT NULL,
            footprint    jsonb NOT NULL,
            height_m     double precision NOT NULL,
            floors       integer NOT NULL,
            ground_m     double precision NOT NULL,
            use          text NOT NULL,
            basement     boolean NOT NULL,
            occupants    integer NOT NULL,
            name         text NOT NULL DEFAULT '',
            PRIMARY KEY (model_id, building_id)
        )"""
    )


def _v3_detectors(conn: psycopg.Connection[object], mode: StorageMode, policy: RetentionPolicy) -> None:
    """Evidence on alerts (localisation candidates, projected times) and the streaming detectors' learned state."""
    conn.execute("ALTER TABLE alerts ADD COLUMN detail jsonb")
    conn.execute(
        """
        CREATE TABLE detector_state (
            name        text PRIMARY KEY,
            version     integer NOT NULL,
            state       jsonb NOT NULL,
            saved_at    timestamptz NOT NULL DEFAULT now()
        )"""
    )


def _v4_audit(conn: psycopg.Connection[object], mode: StorageMode, policy: RetentionPolicy) -> None:
    """Who did what through the viewer: sign-ins, refusals, drills, actions on alerts."""
    conn.execute(
        """
        CREATE TABLE audit_log (
            id          bigserial PRIMARY KEY,
            ts          timestamptz NOT NULL DEFAULT now(),
            actor       text NOT NULL,
            role        text NOT NULL,
            action      text NOT NULL,
            target      text NOT NULL DEFAULT '',
            outcome     text NOT NULL,
            remote      text NOT NULL DEFAULT '',
            detail      jsonb
        )"""
    )
    conn.execute("CREATE INDEX audit_log_ts ON audit_log (ts DESC)")


def _v5_lifecycle(conn: psycopg.Connection[object], mode: StorageMode, policy: RetentionPolicy) -> None:
    """People handling alerts: states, escalation, work orders, incidents; webhook delivery cursors."""
    conn.execute(
        """
        CREATE TABLE incidents (
            id          bigserial PRIMARY KEY,
            network     text NOT NULL,
            district    text NOT NULL DEFAULT '',
            opened_at   timestamptz NOT NULL,
            updated_at  timestamptz NOT NULL,
            closed_at   timestamptz,
            alerts      integer NOT NULL DEFAULT 0
        )"""
    )
    conn.execute("CREATE INDEX incidents_open ON incidents (network, district, updated_at) WHERE closed_at IS NULL")
    conn.execute(
        """ALTER TABLE alerts
               ADD COLUMN escalation_level smallint NOT NULL DEFAULT 0,
               ADD COLUMN acknowledged_at  timestamptz,
               ADD COLUMN assignee         text,
               ADD COLUMN incident_id      bigint REFERENCES incidents (id),
               ADD COLUMN created_at       timestamptz NOT NULL DEFAULT now()"""
    )
    conn.execute("CREATE INDEX alerts_unacknowledged ON alerts (raised_at) WHERE state = 'raised'")
    conn.execute("ALTER TABLE alert_events ADD COLUMN detail jsonb")
    conn.execute(
        """
        CREATE TABLE webhook_cursor (
            name          text PRIMARY KEY,
            last_event_id bigint NOT NULL,
            updated_at    timestamptz NOT NULL DEFAULT now()
        )"""
    )


def _v6_zone_models(conn: psycopg.Connection[object], mode: StorageMode, policy: RetentionPolicy) -> None:
    """Multivariate models per network zone, every fit a new version (``lifeline models fit``)."""
    conn.execute(
        """
        CREATE TABLE zone_models (
            zone         text NOT NULL,
            version      integer NOT NULL,
            fitted_at    timestamptz NOT NULL DEFAULT now(),
            period_from  timestamptz NOT NULL,
            period_to    timestamptz NOT NULL,
            hours        integer NOT NULL,
            sensors      jsonb NOT NULL,
            threshold    double precision NOT NULL,
            model        bytea NOT NULL,
            PRIMARY KEY (zone, version)
        )"""
    )


def _v7_health_check(conn: psycopg.Connection[object], mode: StorageMode, policy: RetentionPolicy) -> None:
    """The city health check's ledger: billed water, problems, treatment tasks, re-checks."""
    from twin.store.healthcheck import create_tables

    create_tables(conn)


def _v8_drills_and_risk_maps(conn: psycopg.Connection[object], mode: StorageMode, policy: RetentionPolicy) -> None:
    """The drill registry that marks the alerts a drill raises; the waterlogging risk maps issued."""
    from twin.store import drills, risk_maps

    drills.create_tables(conn)
    risk_maps.create_tables(conn)


def _v9_drill_incidents(conn: psycopg.Connection[object], mode: StorageMode, policy: RetentionPolicy) -> None:
    """Drill alerts and real alerts grouped in separate incidents."""
    from twin.store import drills
    from twin.store.alerts import INCIDENT_WINDOW_S

    drills.separate_incidents(conn, window_s=INCIDENT_WINDOW_S)


def _v10_pending_fold(conn: psycopg.Connection[object], mode: StorageMode, policy: RetentionPolicy) -> None:
    """Per-batch aggregates waiting to be folded into the rollups and ``sensor_latest`` (see
    :meth:`twin.store.readings.ReadingStore.fold_pending`).

    Ingest appends one row per (sensor, minute) of each batch, in the batch's transaction, and a fold about once a
    second deletes them all (``DELETE … RETURNING``) and upserts their sums: a rollup or latest row is then updated
    about once a second, not once per batch. Append-only and read only by that whole-table DELETE, so no index:
    each one would cost every insert. Logged, so a committed batch's aggregates survive a crash with its readings.
    ``bucket_s`` is the minute's start in Unix seconds and ``last_us`` the newest reading's time in microseconds
    (plain integers: cheap to COPY from numpy); ``n``, a count within one batch, is an integer so that the fold's
    ``sum(n)`` is a bigint rather than a numeric.

    Every row is deleted within about a second, so the table is mostly dead tuples: autovacuum is told to come
    after a fixed number of them (not a fraction of a table that is always almost empty) and without its cost
    delay, so the space is reused and the fold's scan stays short. It still comes at most once per
    ``autovacuum_naptime`` (1 min by default), so the table holds up to that long of dead rows, which each fold's
    scan passes over (cheaply: the scan prunes dead rows' pages as it goes).
    """
    conn.execute(
        """
        CREATE TABLE readings_pending (
            sensor_id     text NOT NULL,
            bucket_s      bigint NOT NULL,
            n             integer NOT NULL,
            sum_value     double precision NOT NULL,
            min_value     double precision NOT NULL,
            max_value     double precision NOT NULL,
            last_us       bigint NOT NULL,
            last_value    double precision NOT NULL,
            last_quality  smallint NOT NULL
        ) WITH (
            autovacuum_vacuum_scale_factor = 0,
            autovacuum_vacuum_threshold = 20000,
            autovacuum_vacuum_insert_scale_factor = 0,
            autovacuum_vacuum_insert_threshold = 20000,
            autovacuum_analyze_scale_factor = 0,
            autovacuum_analyze_threshold = 20000,
            autovacuum_vacuum_cost_delay = 0
        )"""
    )


_PENDING_ARRAYS = (
    ("sensor_id", "text"),
    ("bucket_s", "bigint"),
    ("n", "integer"),
    ("sum_value", "double precision"),
    ("min_value", "double precision"),
    ("max_value", "double precision"),
    ("last_us", "bigint"),
    ("last_value", "double precision"),
    ("last_quality", "smallint"),
)


def _v11_pending_per_batch(conn: psycopg.Connection[object], mode: StorageMode, policy: RetentionPolicy) -> None:
    """``readings_pending`` holds one row per batch, its aggregates as parallel arrays, instead of one row per
    (sensor, minute).

    Ingest's batches of single readings hold each sensor about once, so the old table got a row per reading: a
    heap tuple inserted, deleted by the fold and vacuumed, about half of the database's CPU beyond the readings
    themselves. A batch's arrays are one tuple (and a few TOAST chunks: stored uncompressed, ``EXTERNAL``, since
    compressing float arrays costs more than it saves); the fold unnests them. Rows already pending are carried
    over as one row.

    The fold updates each sensor's rollup rows and latest value about once a second: with room left in their pages
    (``fillfactor``) those updates are HOT (the new row version on the same page, no index entry), ~20 % less of
    the fold's CPU. Pages already full keep their layout until they are rewritten.
    """
    fill = [("sensor_latest", 50)]
    if mode is StorageMode.POSTGRESQL:
        fill += [("readings_1m", 70), ("readings_1h", 70)]
    for table, percent in fill:
        conn.execute(
            sql.SQL("ALTER TABLE {} SET (fillfactor = {})").format(sql.Identifier(table), sql.Literal(percent))
        )
    columns = sql.SQL(", ").join(
        sql.SQL("{} {}[] NOT NULL").format(sql.Identifier(name), sql.SQL(kind)) for name, kind in _PENDING_ARRAYS
    )
    options = ", ".join(
        f"{prefix}{option} = {value}"
        for prefix in ("", "toast.")
        for option, value in (
            ("autovacuum_vacuum_scale_factor", "0"),
            ("autovacuum_vacuum_threshold", "1000"),
            ("autovacuum_vacuum_insert_scale_factor", "0"),
            ("autovacuum_vacuum_insert_threshold", "1000"),
            ("autovacuum_vacuum_cost_delay", "0"),
        )
    )
    conn.execute(sql.SQL("CREATE TABLE readings_pending_batches ({}) WITH ({})").format(columns, sql.SQL(options)))
    for name, _kind in _PENDING_ARRAYS:
        conn.execute(
            sql.SQL("ALTER TABLE readings_pending_batches ALTER COLUMN {} SET STORAGE EXTERNAL").format(
                sql.Identifier(name)
            )
        )
    names = sql.SQL(", ").join(sql.Identifier(name) for name, _kind in _PENDING_ARRAYS)
    aggregated = sql.SQL(", ").join(sql.SQL("array_agg({})").format(sql.Identifier(n)) for n, _k in _PENDING_ARRAYS)
    conn.execute(
        sql.SQL("INSERT INTO readings_pending_batches ({}) SELECT {} FROM readings_pending HAVING count(*) > 0").format(
            names, aggregated
        )
    )
    conn.execute("DROP TABLE readings_pending")
    conn.execute("ALTER TABLE readings_pending_batches RENAME TO readings_pending")


def _v12_rain_forecasts(conn: psycopg.Connection[object], mode: StorageMode, policy: RetentionPolicy) -> None:
    """Rain forecasts pushed by the meteorological service, at one-minute steps (:mod:`twin.store.forecasts`).

    A plain table in both storage modes: a few forecasts an hour, far too few for a hypertable.
    """
    from twin.store import forecasts

    forecasts.create_tables(conn)


def _v13_raw_retention(conn: psycopg.Connection[object], mode: StorageMode, policy: RetentionPolicy) -> None:
    """Where the application's pruning of raw readings has reached (:mod:`twin.store.retention`), one row.

    Kept so that whoever reads raw readings later (the health check) can tell a period whose raw readings were
    deleted from one that had none. On TimescaleDB the retention policy's interval says it instead.
    """
    conn.execute(
        """
        CREATE TABLE raw_retention (
            id              boolean PRIMARY KEY DEFAULT true CHECK (id),
            deleted_before  timestamptz NOT NULL,
            deleted_rows    bigint NOT NULL DEFAULT 0,
            updated_at      timestamptz NOT NULL DEFAULT now()
        )"""
    )


MIGRATIONS: tuple[tuple[int, str, Migration], ...] = (
    (1, "sensors, readings, rollups, alerts, dead letter", _v1_core),
    (2, "twin assets, versioned per import", _v2_twin_assets),
    (3, "alert evidence and detector state", _v3_detectors),
    (4, "audit log", _v4_audit),
    (5, "alert lifecycle, escalation, incidents, webhook cursors", _v5_lifecycle),
    (6, "zone models", _v6_zone_models),
    (7, "health check ledger", _v7_health_check),
    (8, "drill registry and marked alerts, waterlogging risk maps", _v8_drills_and_risk_maps),
    (9, "drill alerts in incidents of their own", _v9_drill_incidents),
    (10, "readings' aggregates pending their fold into the rollups", _v10_pending_fold),
    (11, "pending aggregates as one row of arrays per batch", _v11_pending_per_batch),
    (12, "rain forecasts", _v12_rain_forecasts),
    (13, "how far raw readings have been pruned", _v13_raw_retention),
)


def timescaledb_available(conn: psycopg.Connection[object]) -> bool:
    """Tell whether the server offers (or already has) the ``timescaledb`` extension."""
    row = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'").fetchone()
    return row is not None


def detect_mode(conn: psycopg.Connection[object], requested: str = "auto") -> StorageMode:
    """Choose the storage mode: *requested* is ``auto``, ``timescaledb`` or ``postgresql``.

    Raises:
        SchemaError: ``timescaledb`` was requested and the server does not offer the extension.
    """
    available = timescaledb_available(conn)
    if requested == "auto":
        return StorageMode.TIMESCALEDB if available else StorageMode.POSTGRESQL
    mode = StorageMode(requested)
    if mode is StorageMode.TIMESCALEDB and not available:
        raise SchemaError("storage mode 'timescaledb' requested, but the server has no timescaledb extension")
    return mode


def current_mode(conn: psycopg.Connection[object], *, schema: str) -> StorageMode | None:
    """Return the mode *schema* was created in, or None if it has not been migrated."""
    if not _has_migrations_table(conn, check_schema_name(schema)):
        return None
    query = sql.SQL("SELECT mode FROM {}.schema_migrations WHERE version = 1").format(sql.Identifier(schema))
    row = conn.execute(query).fetchone()
    return StorageMode(str(_first(row))) if row else None


def _first(row: object) -> object:
    """Return the first column of a tuple row or a dict row."""
    if isinstance(row, dict):
        return next(iter(row.values()))
    return row[0]  # type: ignore[index]


def _has_migrations_table(conn: psycopg.Connection[object], schema: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM information_schema.tables WHERE table_schema = %s AND table_name = 'schema_migrations'",
        (schema,),
    ).fetchone()
    return row is not None


def migrate(
    conn: psycopg.Connection[object],
    *,
    schema: str,
    mode: str = "auto",
    policy: RetentionPolicy | None = None,
) -> StorageMode:
    """Create *schema* if needed and apply every migration it lacks, each in its own transaction.

    Safe to run from several processes at once: an advisory lock serialises them.

    Args:
        conn: a connection (autocommit or not; transactions are managed here).
        schema: the schema to create or bring up to date.
        mode: ``auto`` (TimescaleDB when the server offers it), ``timescaledb`` or ``postgresql``.
        policy: retention and compression intervals; defaults to :class:`RetentionPolicy()`.

    Returns:
        The storage mode the schema uses (for an existing schema, the mode it was created in).

    Raises:
        SchemaError: a migration failed (the message names it) or the requested mode is not available.
    """
    check_schema_name(schema)
    policy = policy or RetentionPolicy()
    if not conn.autocommit and conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        conn.commit()
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"lifeline-migrate:{schema}",))
        existing = current_mode(conn, schema=schema)
        chosen = existing or detect_mode(conn, mode)
        if chosen is StorageMode.TIMESCALEDB:
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        conn.execute(sql.SQL("SET LOCAL search_path TO {}, public").format(sql.Identifier(schema)))
        conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version integer PRIMARY KEY, name text NOT NULL, mode text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        done = {int(_first(r)) for r in conn.execute("SELECT version FROM schema_migrations").fetchall()}  # type: ignore[call-overload]
        for version, name, step in MIGRATIONS:
            if version in done:
                continue
            try:
                with conn.transaction():
                    step(conn, chosen, policy)
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name, mode) VALUES (%s, %s, %s)",
                        (version, name, chosen.value),
                    )
            except psycopg.Error as exc:
                raise SchemaError(f"migration {version} ({name}) failed in schema {schema!r}: {exc}") from exc
            log.info("schema %s: applied migration %d (%s)", schema, version, name)
    if existing is not None and existing is not detect_mode(conn, "auto") and mode == "auto":
        log.warning("schema %s was created in %s mode; keeping it", schema, existing.value)
    log.info(
        "storage mode: %s (schema %s)%s",
        chosen.value,
        schema,
        "" if chosen is StorageMode.TIMESCALEDB else " — plain PostgreSQL, rollups kept by the application",
    )
    return chosen


def drop_schema(conn: psycopg.Connection[object], *, schema: str) -> None:
    """Drop *schema* and everything in it (tests and ``lifeline db reset``)."""
    conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(check_schema_name(schema))))
