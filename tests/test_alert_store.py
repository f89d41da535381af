"""Alert changes in the store: what each change does, and a storm batch (all changes in one pipeline) leaving the
same alerts, incidents and events as the same changes applied one at a time."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from twin.alerts import AlertChange
from twin.store.alerts import INCIDENT_WINDOW_S, apply_change, apply_changes
from twin.store.db import DictConnection, connect
from twin.store.schema import drop_schema, migrate

pytestmark = pytest.mark.integration

T0 = datetime(2026, 7, 1, 8, 0, tzinfo=UTC)


def _change(event: str, sensor: str, at: datetime, *, grade: int = 3, district: str = "吉州区", kind: str = "threshold",
            value: float = 1.5, network: str = "drainage") -> AlertChange:  # fmt: skip
    return AlertChange(
        event=event,
        cause_key=f"{kind}:{sensor}:high",
        kind=kind,
        sensor_id=sensor,
        network=network,
        district=district,
        grade=grade,
        ts=at,
        value=value,
        threshold=1.0,
        message="水位超限",
        message_en="level high",
        detail={"eta_s": 60} if event != "cleared" else None,
    )


@pytest.fixture
def two_schemas(pg_url: str) -> Iterator[tuple[DictConnection, DictConnection]]:
    names = ["t_" + uuid.uuid4().hex[:10] for _ in range(2)]
    conns = []
    for name in names:
        conn = connect(pg_url, schema=name, autocommit=True)
        migrate(conn, schema=name)
        conns.append(conn)
    yield conns[0], conns[1]
    for name, conn in zip(names, conns, strict=True):
        drop_schema(conn, schema=name)
        conn.close()


def _rows(db: DictConnection, query: str) -> list[tuple[Any, ...]]:
    return [tuple(r.values()) for r in db.execute(query).fetchall()]


def _contents(db: DictConnection) -> dict[str, list[tuple[Any, ...]]]:
    return {
        "alerts": _rows(
            db,
            "SELECT id, cause_key, kind, sensor_id, network, district, grade, active, raised_at, updated_at,"
            " cleared_at, value, threshold, peak_value, message, detail, incident_id FROM alerts ORDER BY id",
        ),
        "incidents": _rows(
            db, "SELECT id, network, district, opened_at, updated_at, alerts FROM incidents ORDER BY id"
        ),
        "events": _rows(db, "SELECT id, alert_id, event, ts, grade, value FROM alert_events ORDER BY id"),
    }


def test_each_kind_of_change_does_what_it_says(db: DictConnection, schema: str) -> None:
    with db.transaction():
        ids = apply_changes(
            db,
            [
                _change("raised", "D-L-001", T0),
                _change("raised", "D-L-002", T0 + timedelta(seconds=5)),  # same district: the same incident
                _change("raised", "D-L-001", T0 + timedelta(seconds=10), grade=2, value=2.5),  # active: an update
                _change("updated", "D-L-009", T0),  # no active alert: nothing
                _change("cleared", "D-L-002", T0 + timedelta(seconds=20), value=0.5),
                _change("cleared", "D-L-002", T0 + timedelta(seconds=25)),  # already cleared: nothing
                _change("raised", "G-M-001", T0, kind="sensor_health", network="gas"),  # maintenance: no incident
                _change("raised", "W-P-001", T0, district="青原区", network="water"),  # another district
            ],
            schema=schema,
        )
    assert [i is not None for i in ids] == [True, True, True, False, True, False, True, True]
    assert [i for i in ids if i is not None] == sorted(i for i in ids if i is not None)  # ids in change order
    events = _rows(
        db, "SELECT a.sensor_id, e.event, e.grade FROM alert_events e JOIN alerts a ON a.id = e.alert_id ORDER BY e.id"
    )
    assert events == [
        ("D-L-001", "raised", 3),
        ("D-L-002", "raised", 3),
        ("D-L-001", "updated", 2),
        ("D-L-002", "cleared", 3),
        ("G-M-001", "raised", 3),
        ("W-P-001", "raised", 3),
    ]
    alerts = {r["sensor_id"]: r for r in db.execute("SELECT * FROM alerts").fetchall()}
    assert alerts["D-L-001"]["grade"] == 2 and alerts["D-L-001"]["peak_value"] == 2.5 and alerts["D-L-001"]["active"]
    assert not alerts["D-L-002"]["active"] and alerts["D-L-002"]["cleared_at"] == T0 + timedelta(seconds=20)
    assert alerts["D-L-001"]["incident_id"] == alerts["D-L-002"]["incident_id"] is not None
    assert alerts["G-M-001"]["incident_id"] is None
    assert alerts["W-P-001"]["incident_id"] not in (None, alerts["D-L-001"]["incident_id"])
    incidents = {r["id"]: r["alerts"] for r in db.execute("SELECT id, alerts FROM incidents").fetchall()}
    assert incidents == {alerts["D-L-001"]["incident_id"]: 2, alerts["W-P-001"]["incident_id"]: 1}
    # A raise after the incident window opens a new incident.
    later = T0 + timedelta(seconds=INCIDENT_WINDOW_S + 60)
    assert apply_change(db, _change("raised", "D-L-003", later), schema=schema) is not None
    row = db.execute("SELECT incident_id FROM alerts WHERE sensor_id = 'D-L-003'").fetchone()
    assert row is not None and row["incident_id"] not in incidents


@pytest.mark.parametrize("seed", [1, 2])
def test_a_storm_batch_in_one_pipeline_equals_the_changes_one_by_one(
    two_schemas: tuple[DictConnection, DictConnection], seed: int
) -> None:
    """Hundreds of raises, updates and clears over 60 sensors in 3 districts (some for causes not active, some
    maintenance alerts, some after the incident window): one call for the whole batch in one schema, one
    transaction per change in the other; alerts, incidents and events are equal, ids included."""
    rng = random.Random(seed)
    changes = []
    at = T0
    for _ in range(400):
        at += timedelta(seconds=rng.choice([1, 5, 60, 600]))
        sensor = f"D-L-{rng.randrange(60):03d}"
        kind = "sensor_health" if sensor.endswith(("7", "9")) else "threshold"
        changes.append(
            _change(
                rng.choice(["raised", "raised", "updated", "cleared"]),
                sensor,
                at,
                grade=rng.randint(1, 4),
                district=rng.choice(["吉州区", "青原区", "井冈山经开区"]),
                kind=kind,
                value=round(rng.uniform(0.5, 3.0), 3),
            )
        )
    batched, single = two_schemas
    with batched.transaction():
        ids_batched = apply_changes(batched, changes, schema=_schema_of(batched))
    ids_single = []
    for change in changes:
        with single.transaction():
            ids_single.append(apply_change(single, change, schema=_schema_of(single)))
    assert ids_batched == ids_single
    assert sum(i is not None for i in ids_batched) > 200
    contents = _contents(batched)
    assert contents == _contents(single)
    assert len(contents["incidents"]) > 3


def _schema_of(db: DictConnection) -> str:
    row = db.execute("SELECT current_schema() AS s").fetchone()
    assert row is not None
    return str(row["s"])
