"""Sensors in the store: upsert from the twin, load back into a registry."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson
import psycopg

from twin.sensors import Sensor, SensorRegistry, sensor_from_record

_UPSERT = """
INSERT INTO sensors (sensor_id, network, quantity, unit, name, asset_id, district, x_m, y_m,
                     valid_min, valid_max, interval_s, limits, updated_at)
VALUES (%(sensor_id)s, %(network)s, %(quantity)s, %(unit)s, %(name)s, %(asset_id)s, %(district)s, %(x_m)s,
        %(y_m)s, %(valid_min)s, %(valid_max)s, %(interval_s)s, %(limits)s::jsonb, now())
ON CONFLICT (sensor_id) DO UPDATE SET
    network = excluded.network, quantity = excluded.quantity, unit = excluded.unit, name = excluded.name,
    asset_id = excluded.asset_id, district = excluded.district, x_m = excluded.x_m, y_m = excluded.y_m,
    valid_min = excluded.valid_min, valid_max = excluded.valid_max, interval_s = excluded.interval_s,
    limits = excluded.limits, updated_at = now()
"""


def upsert_sensors(conn: psycopg.Connection[Any], sensors: Iterable[Sensor]) -> int:
    """Insert or update *sensors*; return how many were written. The caller commits."""
    records = []
    for sensor in sensors:
        record = sensor.to_record()
        record["limits"] = orjson.dumps(record["limits"]).decode()
        records.append(record)
    with conn.cursor() as cur:
        cur.executemany(_UPSERT, records)
    return len(records)


def sensor_records(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    """Return every sensor as a dict with its latest reading (``latest_ts``, ``latest_value``, ``latest_quality``)."""
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        cur.execute(
            """SELECT s.sensor_id, s.network, s.quantity, s.unit, s.name, s.asset_id, s.district, s.x_m, s.y_m,
                      s.valid_min, s.valid_max, s.interval_s, s.limits,
                      l.ts AS latest_ts, l.value AS latest_value, l.quality AS latest_quality
               FROM sensors s LEFT JOIN sensor_latest l USING (sensor_id)
               ORDER BY s.network, s.sensor_id"""
        )
        return cur.fetchall()


def load_registry(conn: psycopg.Connection[Any]) -> SensorRegistry:
    """Read every sensor from the store into a :class:`SensorRegistry`."""
    return SensorRegistry(sensor_from_record(rec, source="sensors table") for rec in sensor_records(conn))
