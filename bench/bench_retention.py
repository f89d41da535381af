"""Raw-reading retention on plain PostgreSQL: how long deleting a day of the demo city's readings takes.

On a fresh schema (plain-PostgreSQL mode) with the demo city's 638 sensors, --days days of one reading a minute
from every sensor are stored through the reading store (COPY, rollups folded), in time order as ingest stores
them; then :func:`twin.store.retention.prune_readings` deletes the oldest day (what ingest's daily run deletes in
steady state) in slices of --slice-hours. Printed: rows deleted, wall time, rows a second, each slice's wall
time (median and largest: how long a slice holds its locks beside ingest's writes) and the PostgreSQL backend's
CPU time (``/proc/<pid>/stat``: the server must run on this machine), and the time of a ``VACUUM readings`` after
it (the index cleanup the deletes leave for autovacuum). Repeated on a fresh schema each time.

    python bench/bench_retention.py                     # 2 days, slices of 1 h, 3 repeats
    python bench/bench_retention.py --slice-hours 6 --repeats 1
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np

from twin.democity.city import build_demo_city
from twin.readings import ReadingBatch
from twin.store.db import DictConnection, connect
from twin.store.readings import ReadingStore
from twin.store.retention import prune_readings
from twin.store.schema import StorageMode, drop_schema, migrate
from twin.store.sensors import upsert_sensors

PG_URL = os.environ.get("LIFELINE_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
END = datetime(2026, 11, 26, 0, 0, tzinfo=UTC)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def backend_cpu_s(conn: DictConnection) -> float:
    """CPU seconds (user + system) the connection's backend has used so far."""
    with open(f"/proc/{conn.info.backend_pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def fill(conn: DictConnection, sensor_ids: list[str], days: int) -> int:
    """Store *days* of one reading a minute per sensor, ending at END, a minute at a time; return the rows."""
    store = ReadingStore(conn, mode=StorageMode.POSTGRESQL)
    start_us = int((END - timedelta(days=days)).timestamp()) * 1_000_000
    n = len(sensor_ids)
    rng = np.random.default_rng(1)
    total = 0
    minutes_per_batch = 10
    for first in range(0, days * 1440, minutes_per_batch):
        minutes = np.arange(first, min(first + minutes_per_batch, days * 1440), dtype=np.int64)
        ts = np.repeat(start_us + minutes * 60_000_000, n)
        batch = ReadingBatch(
            sensor_ids * len(minutes),
            ts,
            rng.normal(1.0, 0.1, len(ts)),
            np.zeros(len(ts), dtype=np.int16),
        )
        with conn.transaction():
            total += store.write(batch)
    return total


class SliceTimer:
    """A progress callback that keeps each slice's wall time."""

    def __init__(self) -> None:
        self.slices: list[float] = []
        self.last = time.monotonic()

    def __call__(self, _end: datetime, _deleted: int, _done: int, _planned: int) -> None:
        now = time.monotonic()
        self.slices.append(now - self.last)
        self.last = now


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=2, help="days stored; the oldest one is deleted")
    parser.add_argument("--slice-hours", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    city = build_demo_city()
    sensor_ids = sorted(city.sensors)
    print(
        f"{len(sensor_ids)} sensors × {args.days} days at 1/min, delete the oldest day in slices of "
        f"{args.slice_hours:g} h; plain PostgreSQL, {args.repeats} repeats"
    )
    runs = []
    for k in range(args.repeats):
        schema = "bench_ret_" + uuid.uuid4().hex[:8]
        with connect(PG_URL, schema=schema, autocommit=True) as conn:
            migrate(conn, schema=schema, mode="postgresql")
            upsert_sensors(conn, list(city.sensors.values()))
            began = time.monotonic()
            stored = fill(conn, sensor_ids, args.days)
            conn.execute("VACUUM ANALYZE readings")
            fill_s = time.monotonic() - began
            timer = SliceTimer()
            cpu0 = backend_cpu_s(conn)
            timer.last = time.monotonic()
            result = prune_readings(
                conn,
                schema=schema,
                keep=timedelta(days=args.days - 1),
                now=END,
                slice_span=timedelta(hours=args.slice_hours),
                progress=timer,
            )
            cpu = backend_cpu_s(conn) - cpu0
            left = conn.execute("SELECT count(*) AS n FROM readings").fetchone()
            assert left is not None and left["n"] + result.deleted == stored
            began = time.monotonic()
            conn.execute("VACUUM readings")  # the work the deletes leave for autovacuum (the index entries)
            vacuum_s = time.monotonic() - began
            drop_schema(conn, schema=schema)
        slices = timer.slices
        runs.append((result.deleted, result.seconds, cpu, statistics.median(slices), max(slices), vacuum_s))
        print(
            f"  run {k + 1}: stored {stored:,} rows in {fill_s:.1f} s; deleted {result.deleted:,} in "
            f"{result.slices} slices, {result.seconds:.2f} s ({result.deleted / result.seconds:,.0f} rows/s), "
            f"backend CPU {cpu:.2f} s, a slice {1000 * statistics.median(slices):.0f} ms median, "
            f"{1000 * max(slices):.0f} ms largest; VACUUM after it {vacuum_s:.2f} s"
        )
    deleted, seconds, cpu, median_slice, worst, vacuum = (statistics.median(col) for col in zip(*runs, strict=True))
    print(
        f"median: {deleted:,.0f} rows deleted in {seconds:.2f} s ({deleted / seconds:,.0f} rows/s), backend CPU "
        f"{cpu:.2f} s, a slice {1000 * median_slice:.0f} ms (largest {1000 * worst:.0f} ms); VACUUM {vacuum:.2f} s"
    )


if __name__ == "__main__":
    main()
