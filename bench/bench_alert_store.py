"""Time to store a storm batch of alert changes: each change on its own (:func:`twin.store.alerts.apply_change`)
against the whole batch in one pipeline (:func:`~twin.store.alerts.apply_changes`, what ingest does).

For each form, on a fresh schema, --changes raises of as many sensors in 5 districts (new alerts: incidents found or
opened), then as many updates, clears and raises again, each step one transaction; prints milliseconds a change
(wall time, client and server on this machine), medians of --repeats.

    python bench/bench_alert_store.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

from twin.alerts import AlertChange
from twin.store.alerts import apply_change, apply_changes
from twin.store.db import DictConnection, connect
from twin.store.schema import drop_schema, migrate

PG_URL = os.environ.get("LIFELINE_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
STEPS = ("raised", "updated", "cleared", "raised again")

Apply = Callable[[DictConnection, Sequence[AlertChange], str], list[int | None]]


def _one_by_one(conn: DictConnection, changes: Sequence[AlertChange], schema: str) -> list[int | None]:
    return [apply_change(conn, change, schema=schema) for change in changes]


def _batch(conn: DictConnection, changes: Sequence[AlertChange], schema: str) -> list[int | None]:
    return apply_changes(conn, changes, schema=schema)


def _changes(n: int, event: str, at: datetime) -> list[AlertChange]:
    return [
        AlertChange(
            event,
            f"threshold:D-L-{i:04d}:high",
            "threshold",
            f"D-L-{i:04d}",
            "drainage",
            f"district {i % 5}",
            3,
            at,
            1.5 + i / 1000,
            1.0,
            "水位超限",
            "level high",
            {"eta_s": 60},
        )
        for i in range(n)
    ]


def run(apply: Apply, n: int) -> dict[str, float]:
    schema = "bench_alerts_" + uuid.uuid4().hex[:8]
    out: dict[str, float] = {}
    with connect(PG_URL, schema=schema, autocommit=True) as conn:
        migrate(conn, schema=schema)
        try:
            at = datetime.now(UTC)
            for step in STEPS:
                changes = _changes(n, step.split()[0], at)
                at += timedelta(seconds=1)
                started = time.perf_counter()
                with conn.transaction():
                    ids = apply(conn, changes, schema)
                out[step] = (time.perf_counter() - started) / n * 1000
                if sum(i is not None for i in ids) != n:
                    raise SystemExit(f"{step}: {n} changes, {sum(i is not None for i in ids)} events")
        finally:
            drop_schema(conn, schema=schema)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--changes", type=int, default=300, help="alert changes in a batch")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(
        f"# alert store, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.1f}; batches of {args.changes} changes, medians of {args.repeats}"
    )
    results: dict[str, list[dict[str, float]]] = {"one by one": [], "one pipeline": []}
    for _ in range(args.repeats):
        results["one by one"].append(run(_one_by_one, args.changes))
        results["one pipeline"].append(run(_batch, args.changes))
    print("| form | " + " | ".join(f"{s} ms/change" for s in STEPS) + " |")
    print("|---|" + "---:|" * len(STEPS))
    medians = {form: {s: statistics.median(r[s] for r in runs) for s in STEPS} for form, runs in results.items()}
    for form, m in medians.items():
        print(f"| {form} | " + " | ".join(f"{m[s]:.3f}" for s in STEPS) + " |")
    print(
        "| ratio | " + " | ".join(f"{medians['one by one'][s] / medians['one pipeline'][s]:.1f}x" for s in STEPS) + " |"
    )


if __name__ == "__main__":
    main()
