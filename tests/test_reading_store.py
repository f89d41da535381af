"""The reading store's two write paths give the same rows, rollups and latest values.

The fast path COPYs straight into ``readings`` and folds aggregates computed in Python; the slow path (taken when a
batch holds a reading already stored, or the same reading twice) stages and moves with ``ON CONFLICT DO NOTHING``
and folds in SQL. Whatever mix of the two a stream takes, the rollups must equal aggregates computed from the
stored readings, and ``sensor_latest`` must hold each sensor's newest reading.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from twin.store.db import DictConnection
from twin.store.readings import ReadingRow, ReadingStore
from twin.store.schema import current_mode

T0 = datetime(2026, 11, 25, 7, 58, 30, tzinfo=UTC)
SENSORS = ["D-L-001", "W-P-001", "G-M-001", "R-001"]


def _rollup_mismatches(db: DictConnection, table: str, width: str) -> list[dict[str, object]]:
    return db.execute(
        f"""
        WITH truth AS (
            SELECT sensor_id, date_bin(INTERVAL '{width}', ts, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS bucket,
                   count(*) AS n, sum(value) AS s, min(value) AS mn, max(value) AS mx
            FROM readings GROUP BY 1, 2)
        SELECT * FROM truth t FULL JOIN {table} r USING (sensor_id, bucket)
        WHERE t.n IS DISTINCT FROM r.n OR abs(t.s - r.sum_value) > 1e-9 * greatest(1, abs(t.s))
              OR t.mn IS DISTINCT FROM r.min_value OR t.mx IS DISTINCT FROM r.max_value"""  # noqa: S608
    ).fetchall()


def test_fast_and_slow_paths_store_the_same_rows_rollups_and_latest(db: DictConnection) -> None:
    mode = current_mode(db, schema=db.execute("SELECT current_schema() AS s").fetchone()["s"])  # type: ignore[index]
    assert mode is not None
    store = ReadingStore(db, mode=mode)
    rng = random.Random(11)
    stored: dict[tuple[str, datetime], ReadingRow] = {}
    written: list[ReadingRow] = []
    for batch_no in range(40):
        batch: list[ReadingRow] = []
        for _ in range(rng.randint(1, 300)):
            sensor = rng.choice(SENSORS)
            ts = T0 + timedelta(microseconds=rng.randint(0, 3 * 3600 * 10**6))
            batch.append((sensor, ts, round(rng.uniform(0.0, 2.0), 6), rng.choice([0, 0, 0, 2])))
        if batch_no % 4 == 3 and written:
            batch += rng.sample(written, min(20, len(written)))  # redelivered readings: the slow path
        elif batch_no % 7 == 5:
            batch.append(batch[0])  # the same reading twice in one batch: the slow path too
        expected_new = len({(s, t) for s, t, _v, _q in batch} - stored.keys())
        with db.transaction():
            assert store.write(batch) == expected_new
        for row in batch:
            stored.setdefault((row[0], row[1]), row)
        written += batch
    assert store.fast_batches >= 20 and store.slow_batches >= 10, (store.fast_batches, store.slow_batches)

    rows = db.execute("SELECT sensor_id, ts, value, quality FROM readings").fetchall()
    assert {(r["sensor_id"], r["ts"]): (r["value"], r["quality"]) for r in rows} == {
        k: (v[2], v[3]) for k, v in stored.items()
    }
    assert _rollup_mismatches(db, "readings_1m", "1 minute") == []
    assert _rollup_mismatches(db, "readings_1h", "1 hour") == []
    latest = {r["sensor_id"]: r["ts"] for r in db.execute("SELECT sensor_id, ts FROM sensor_latest").fetchall()}
    newest: dict[str, datetime] = {}
    for sensor, ts in stored:
        newest[sensor] = max(ts, newest.get(sensor, ts))
    assert latest == newest


def test_a_failed_fast_path_leaves_nothing_behind(db: DictConnection) -> None:
    """A batch with one reading already stored takes the slow path; the rest of it is stored once."""
    mode = current_mode(db, schema=db.execute("SELECT current_schema() AS s").fetchone()["s"])  # type: ignore[index]
    assert mode is not None
    store = ReadingStore(db, mode=mode)
    first = [("D-L-001", T0 + timedelta(minutes=k), 0.1 * k, 0) for k in range(10)]
    assert store.write(first) == 10
    again = [*first[5:], *[("D-L-001", T0 + timedelta(minutes=k), 0.1 * k, 0) for k in range(10, 15)]]
    assert store.write(again) == 5
    assert (store.fast_batches, store.slow_batches) == (1, 1)
    assert db.execute("SELECT count(*) AS n FROM readings").fetchone() == {"n": 15}
    assert db.execute("SELECT sum(n) AS n FROM readings_1m").fetchone() == {"n": 15}
