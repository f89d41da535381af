"""Database CPU per reading of ingest's write: each batch folded as it is written, or its aggregates deferred to
``readings_pending`` and folded once a second.

Ingest at ~9,000 single readings a second writes a batch every 50 ms of ~450 readings from ~450 sensors. Folding
each batch into ``readings_1m``, ``readings_1h`` and ``sensor_latest`` then upserts ~3 rows per reading; deferred,
the batch appends one pending row per reading's (sensor, minute) and one fold per second upserts one row per
(sensor, minute), (sensor, hour) and sensor of that second.

On a fresh schema (plain-PostgreSQL mode) for each variant and repeat, --seconds of simulated data are written as
batches of --batch readings, each from --batch distinct sensors of --sensors, --batches-per-s of them per simulated
second, as fast as they go (one connection, one transaction per batch, as an ingest writer). (a) direct: each batch
folded in its transaction; (b) deferred: pending rows, and ``fold_pending`` after every simulated second (the last
one included). What is measured is the PostgreSQL backend's CPU time (``/proc/<pid>/stat`` utime + stime of the
connection's backend: the server must run on this machine) and the wall time.

Rows in ``readings_pending`` live about a second, so the table is mostly dead rows; autovacuum is off on the
bench's tables (so it does not run at random moments in another process) and (b) runs ``VACUUM readings_pending``
itself every --vacuum-every-s simulated seconds (60: autovacuum's default naptime), counted. After each run both
variants vacuum every table they wrote (``VACUUM`` of the rollups' dead row versions is work the direct fold leaves
for autovacuum), reported apart.

    python bench/bench_fold.py                      # 90 s of 9,000 readings/s, 3 repeats
    python bench/bench_fold.py --seconds 30 --repeats 1
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import psycopg

from twin.readings import ReadingBatch, ts_to_us
from twin.store.db import connect
from twin.store.readings import ReadingStore
from twin.store.schema import StorageMode, drop_schema, migrate

PG_URL = os.environ.get("LIFELINE_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
T0 = datetime(2026, 11, 25, 7, 59, 15, tzinfo=UTC)
"""The simulated data begins 45 s before an hour edge, so buckets of both rollups change during a run."""
TABLES = ("readings", "readings_1m", "readings_1h", "sensor_latest", "readings_pending")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class Run:
    variant: str
    readings: int
    backend_cpu_s: float
    wall_s: float
    vacuum_cpu_s: float
    folds: int
    pending_peak_pages: int

    @property
    def us_per_reading(self) -> float:
        return self.backend_cpu_s / self.readings * 1e6

    @property
    def vacuum_us_per_reading(self) -> float:
        return self.vacuum_cpu_s / self.readings * 1e6


def make_batches(*, seconds: int, per_s: int, batch: int, sensors: int, seed: int) -> list[ReadingBatch]:
    """Batches of *batch* single readings, each from distinct sensors, *per_s* of them per simulated second."""
    rng = np.random.default_rng(seed)
    names = [f"B-{k:05d}" for k in range(sensors)]
    step_us = 1_000_000 // per_s
    start = ts_to_us(T0)
    out: list[ReadingBatch] = []
    for k in range(seconds * per_s):
        chosen = rng.choice(sensors, size=batch, replace=False)
        ts = start + k * step_us + rng.integers(0, step_us, size=batch)
        out.append(
            ReadingBatch(
                [names[i] for i in chosen.tolist()],
                ts.astype(np.int64),
                rng.normal(1.0, 0.2, size=batch),
                np.zeros(batch, np.int16),
            )
        )
    return out


def backend_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process *pid* so far (fields 14 and 15 of /proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def run(variant: str, batches: list[ReadingBatch], *, per_s: int, vacuum_every_s: float) -> Run:
    schema = "bench_fold_" + uuid.uuid4().hex[:8]
    deferred = variant == "deferred"
    with connect(PG_URL, schema=schema, autocommit=True) as conn:
        migrate(conn, schema=schema, mode="postgresql")
        try:
            for table in TABLES:
                conn.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
            row = conn.execute("SELECT pg_backend_pid() AS pid").fetchone()
            assert row is not None
            pid = int(row["pid"])
            if not os.path.exists(f"/proc/{pid}/stat"):
                raise SystemExit(f"backend {pid} is not a process of this machine: run the bench beside the server")
            store = ReadingStore(conn, mode=StorageMode.POSTGRESQL, defer_fold=deferred)
            vacuum_every = max(1, round(vacuum_every_s * per_s))
            folds = peak = 0
            cpu0, wall0 = backend_cpu_s(pid), time.perf_counter()
            for k, batch in enumerate(batches, start=1):
                with conn.transaction():
                    store.write(batch)
                if deferred and (k % per_s == 0 or k == len(batches)):
                    peak = max(peak, _pages(conn, "readings_pending"))
                    store.fold_pending()
                    folds += 1
                if deferred and k % vacuum_every == 0:
                    conn.execute("VACUUM (PARALLEL 0) readings_pending")
            cpu1, wall1 = backend_cpu_s(pid), time.perf_counter()
            for table in TABLES:
                conn.execute(f"VACUUM (PARALLEL 0) {table}")
            cpu2 = backend_cpu_s(pid)
            readings = sum(len(b) for b in batches)
            _check(conn, readings)
            return Run(variant, readings, cpu1 - cpu0, wall1 - wall0, cpu2 - cpu1, folds, peak)
        finally:
            drop_schema(conn, schema=schema)


def _pages(conn: psycopg.Connection[dict[str, object]], table: str) -> int:
    row = conn.execute("SELECT pg_relation_size(%s::regclass) / 8192 AS pages", (table,)).fetchone()
    return int(str(row["pages"])) if row else 0


def _check(conn: psycopg.Connection[dict[str, object]], readings: int) -> None:
    """Both variants must have stored and folded every reading once."""
    row = conn.execute(
        "SELECT (SELECT count(*) FROM readings) AS r, (SELECT sum(n) FROM readings_1m) AS m,"
        " (SELECT sum(n) FROM readings_1h) AS h, (SELECT count(*) FROM readings_pending) AS p"
    ).fetchone()
    assert row is not None
    got = (int(str(row["r"])), int(str(row["m"])), int(str(row["h"])), int(str(row["p"])))
    if got != (readings, readings, readings, 0):
        raise SystemExit(f"wrong totals (readings, 1m, 1h, pending) = {got}, expected {readings} each and 0 pending")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=450, help="readings per batch, each from another sensor")
    parser.add_argument("--sensors", type=int, default=1000, help="sensors the batches draw from")
    parser.add_argument("--batches-per-s", type=int, default=20, help="batches per simulated second")
    parser.add_argument("--seconds", type=int, default=90, help="simulated seconds of data per run")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each variant (medians are reported)")
    parser.add_argument(
        "--vacuum-every-s", type=float, default=60.0, help="deferred: VACUUM readings_pending every this many s"
    )
    args = parser.parse_args()
    if args.batch > args.sensors:
        parser.error("--batch cannot exceed --sensors (a batch's readings are from distinct sensors)")
    batches = make_batches(
        seconds=args.seconds, per_s=args.batches_per_s, batch=args.batch, sensors=args.sensors, seed=1
    )
    readings = sum(len(b) for b in batches)
    print(
        f"{len(batches)} batches of {args.batch} readings from {args.sensors} sensors, {args.batches_per_s} per"
        f" simulated second ({readings:,} readings, {args.seconds} s); {args.repeats} repeats; server {PG_URL}"
    )
    runs: dict[str, list[Run]] = {"direct": [], "deferred": []}
    for repeat in range(args.repeats):
        for variant in ("direct", "deferred") if repeat % 2 == 0 else ("deferred", "direct"):
            r = run(variant, batches, per_s=args.batches_per_s, vacuum_every_s=args.vacuum_every_s)
            runs[variant].append(r)
            extra = f", {r.folds} folds, pending table peak {r.pending_peak_pages} pages" if r.folds else ""
            print(
                f"  {variant:8s} #{repeat + 1}: backend CPU {r.backend_cpu_s:6.2f} s"
                f" = {r.us_per_reading:5.2f} µs/reading, wall {r.wall_s:6.2f} s"
                f" ({r.readings / r.wall_s:,.0f} readings/s);"
                f" vacuum after {r.vacuum_us_per_reading:4.2f} µs/reading{extra}"
            )
    med = {
        v: (
            statistics.median(r.us_per_reading for r in rs),
            statistics.median(r.wall_s for r in rs),
            statistics.median(r.vacuum_us_per_reading for r in rs),
        )
        for v, rs in runs.items()
    }
    print(f"medians of {args.repeats}:")
    for variant, (cpu, wall, vac) in med.items():
        print(
            f"  {variant:8s} backend CPU {cpu:5.2f} µs/reading (+{vac:4.2f} vacuum after), wall {wall:6.2f} s"
            f" ({readings / wall:,.0f} readings/s)"
        )
    (dc, dw, dv), (fc, fw, fv) = med["direct"], med["deferred"]
    print(
        f"direct / deferred: backend CPU {dc / fc:.2f}x ({(dc + dv) / (fc + fv):.2f}x with the vacuum after),"
        f" wall {dw / fw:.2f}x"
    )


if __name__ == "__main__":
    main()
