"""Query benchmark: one sensor's 30 days (raw and rolled up), the latest value of every sensor, the alert list.

Fills a fresh schema (plain-PostgreSQL mode) through the same write path as ingest (``ReadingStore``: COPY, the
1-minute and 1-hour rollups folded per batch): --sensors sensors registered, --history of them with 30 days at
one reading a minute, every other sensor with one reading, and --alerts alerts. Then starts ``lifeline serve``
(its own process, access open for the run) and times each query over HTTP --runs times (median, p95), and the
same queries straight on the database (the SQL the API runs), so the API's own share shows.

    python bench/bench_queries.py                        # 1,000 sensors, 20 with 30 days (864,000 readings)
    python bench/bench_queries.py --history 5 --runs 10  # quicker
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from lifeline.embedded import free_port
from twin.alerts import AlertChange
from twin.sensors import AlarmLimit, Direction, Grade, Network, Quantity, Sensor
from twin.store.alerts import apply_change
from twin.store.db import connect
from twin.store.readings import ReadingStore
from twin.store.schema import StorageMode, drop_schema, migrate
from twin.store.sensors import upsert_sensors

PG_URL = os.environ.get("LIFELINE_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
DAYS = 30


def _sensors(n: int) -> list[Sensor]:
    limits = (AlarmLimit(Grade.IV, Direction.LOW, 150.0), AlarmLimit(Grade.I, Direction.LOW, 50.0))
    districts = ("吉州区", "青原区")
    return [
        Sensor(f"Q{i:05d}", Network.WATER, Quantity.PRESSURE, f"bench {i}", district=districts[i % 2], limits=limits)
        for i in range(n)
    ]


def fill(schema: str, *, sensors: int, history: int, alerts: int, end: datetime) -> int:
    """Create and fill *schema*; return the readings written."""
    written = 0
    with connect(PG_URL, schema=schema, autocommit=True) as conn:
        migrate(conn, schema=schema, mode="postgresql")
        upsert_sensors(conn, _sensors(sensors))
        store = ReadingStore(conn, mode=StorageMode.POSTGRESQL)
        start = end - timedelta(days=DAYS)
        minutes = DAYS * 24 * 60
        t0 = time.perf_counter()
        for i in range(history):
            sid = f"Q{i:05d}"
            for chunk in range(0, minutes, 5000):
                rows = [
                    (sid, start + timedelta(minutes=m), 300.0 + 20.0 * ((m % 1440) / 1440.0) + (m * 7919 % 13) * 0.1, 0)
                    for m in range(chunk, min(chunk + 5000, minutes))
                ]
                written += store.write(rows)
            print(f"  filled {i + 1}/{history} sensors with 30 days ({time.perf_counter() - t0:.0f} s)", flush=True)
        written += store.write([(f"Q{i:05d}", end, 300.0, 0) for i in range(history, sensors)])
        conn.execute("ANALYZE")
        for k in range(alerts):
            i = k % sensors
            ts = end - timedelta(minutes=alerts - k)
            apply_change(
                conn,
                AlertChange(
                    event="raised",
                    cause_key=f"bench:Q{i:05d}:{k}",
                    kind="threshold",
                    sensor_id=f"Q{i:05d}",
                    network="water",
                    district="吉州区" if i % 2 == 0 else "青原区",
                    grade=1 + k % 4,
                    ts=ts,
                    value=120.0,
                    threshold=150.0,
                    message="压力低",
                    message_en="pressure low",
                ),
                schema=schema,
            )
    return written


def timed(fn: Callable[[], object], runs: int) -> tuple[float, float, object]:
    """Return (median ms, p95 ms, last result) of *runs* calls of *fn* after one warm-up call."""
    fn()
    times = []
    result: object = None
    for _ in range(runs):
        t0 = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - t0) * 1000.0)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(0.95 * len(times)))], result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sensors", type=int, default=1000)
    parser.add_argument("--history", type=int, default=20, help="sensors with 30 days of 1-minute readings")
    parser.add_argument("--alerts", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    schema = "bench_q_" + uuid.uuid4().hex[:8]
    end = datetime.now(UTC).replace(second=0, microsecond=0)
    print(
        f"# query benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.1f}; {args.sensors} sensors, {args.history} with 30 days of 1-minute readings, "
        f"{args.alerts} alerts; medians of {args.runs}",
        flush=True,
    )
    t0 = time.perf_counter()
    written = fill(schema, sensors=args.sensors, history=args.history, alerts=args.alerts, end=end)
    fill_s = time.perf_counter() - t0
    print(f"  wrote {written:,} readings and {args.alerts:,} alerts in {fill_s:.1f} s", flush=True)
    port = free_port()
    env = {
        **os.environ,
        "LIFELINE_DATABASE_URL": PG_URL,
        "LIFELINE_DB_SCHEMA": schema,
        "LIFELINE_AUTH": "off",
        "LIFELINE_LOG_LEVEL": "WARNING",
        "LIFELINE_API_RATE_PER_S": "100000",
        "LIFELINE_API_BURST": "100000",
    }
    viewer = subprocess.Popen(
        [sys.executable, "-m", "lifeline", "serve", "--host", "127.0.0.1", "--port", str(port)], env=env
    )
    start = end - timedelta(days=DAYS)
    rows_out: list[tuple[str, str, float, float, int]] = []
    try:
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=60) as http:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if http.get("/healthz").status_code < 500:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or viewer.poll() is not None:
                    raise RuntimeError("lifeline serve did not start")
                time.sleep(0.2)
            iso = {"from": start.isoformat(), "to": end.isoformat()}
            day = {"from": (end - timedelta(days=1)).isoformat(), "to": end.isoformat()}
            queries: list[tuple[str, str, dict[str, str]]] = [
                ("one sensor, 1 day raw", "/api/sensors/Q00000/readings", day),
                (
                    "one sensor, 30 days at 1 min (1-minute rollup)",
                    "/api/sensors/Q00000/readings",
                    {**iso, "step": "1m"},
                ),
                (
                    "one sensor, 30 days at 15 min (1-minute rollup)",
                    "/api/sensors/Q00000/readings",
                    {**iso, "step": "15m"},
                ),
                ("one sensor, 30 days at 1 h (1-hour rollup)", "/api/sensors/Q00000/readings", {**iso, "step": "1h"}),
                ("latest value of every sensor", "/api/sensors", {}),
                ("alert list (newest 200)", "/api/alerts", {}),
                (
                    "active grade I–II alerts (up to 1,000)",
                    "/api/alerts",
                    {"active": "true", "min_grade": "2", "limit": "1000"},
                ),
            ]
            for label, path, params in queries:

                def get(p: str = path, q: dict[str, str] = params) -> httpx.Response:
                    return http.get(p, params=q)

                med, p95, resp = timed(get, args.runs)
                assert isinstance(resp, httpx.Response)
                resp.raise_for_status()
                body = resp.json()
                n = len(body["points"]) if isinstance(body, dict) else len(body)
                rows_out.append(("HTTP", label, med, p95, n))
        with connect(PG_URL, schema=schema, autocommit=True) as conn:
            sql_queries: list[tuple[str, str, tuple[object, ...]]] = [
                (
                    "one sensor, 30 days raw (SQL; the API refuses over 20,000 raw points)",
                    "SELECT ts, value FROM readings WHERE sensor_id = %s AND ts >= %s AND ts < %s ORDER BY ts",
                    ("Q00000", start, end),
                ),
                (
                    "one sensor, 30 days at 1 h from raw (SQL, no rollup)",
                    "SELECT date_bin('1 hour', ts, TIMESTAMPTZ '2000-01-01 00:00:00+00') b, avg(value) FROM readings"
                    " WHERE sensor_id = %s AND ts >= %s AND ts < %s GROUP BY b ORDER BY b",
                    ("Q00000", start, end),
                ),
                (
                    "one sensor, 30 days at 1 h from the 1-hour rollup (SQL)",
                    "SELECT bucket, sum_value / n FROM readings_1h WHERE sensor_id = %s AND bucket >= %s"
                    " AND bucket < %s ORDER BY bucket",
                    ("Q00000", start, end),
                ),
                ("latest value of every sensor (SQL)", "SELECT * FROM sensor_latest", ()),
            ]
            for label, query, sql_params in sql_queries:

                def run(q: str = query, a: tuple[object, ...] = sql_params) -> list[Any]:
                    return conn.execute(q, a).fetchall()

                med, p95, res = timed(run, args.runs)
                rows_out.append(("SQL", label, med, p95, len(res) if isinstance(res, list) else 0))
    finally:
        viewer.terminate()
        viewer.wait(20)
        with connect(PG_URL, schema=schema, autocommit=True) as conn:
            drop_schema(conn, schema=schema)
    print()
    print("| via | query | rows | median ms | p95 ms |")
    print("|---|---|---:|---:|---:|")
    for via, label, med, p95, n in rows_out:
        print(f"| {via} | {label} | {n:,} | {med:.1f} | {p95:.1f} |")


if __name__ == "__main__":
    main()
