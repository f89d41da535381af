"""The dashboard's figures against data whose answer is known."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from twin.alerts import AlertChange
from twin.store.alerts import apply_change
from twin.store.db import DictConnection
from twin.store.readings import ReadingStore
from twin.store.schema import current_mode

pytestmark = pytest.mark.integration


def _alert(sensor: str, network: str, grade: int, at: datetime, kind: str = "threshold") -> AlertChange:
    return AlertChange(
        event="raised",
        cause_key=f"{kind}:{sensor}:x",
        kind=kind,
        sensor_id=sensor,
        network=network,
        district="吉州区",
        grade=grade,
        ts=at,
        value=1.0,
        threshold=0.5,
        message="m",
        message_en="m",
    )


def test_dashboard_counts_rain_and_response_times(viewer_url: str, db: DictConnection, schema: str) -> None:
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    mode = current_mode(db, schema=schema)
    assert mode is not None
    # Two gauges: 12 mm/h and 6 mm/h for the last 90 minutes, one reading a minute.
    rows = [
        (sid, now - timedelta(minutes=k), rate, 0)
        for sid, rate in (("R-001", 12.0), ("R-002", 6.0))
        for k in range(1, 91)
    ]
    with db.transaction():
        ReadingStore(db, mode=mode).write(rows)
        for change in (
            _alert("D-L-001", "drainage", 2, now - timedelta(minutes=30)),
            _alert("D-L-002", "drainage", 3, now - timedelta(minutes=20)),
            _alert("W-P-001", "water", 1, now - timedelta(minutes=10)),
            _alert("G-P-001", "gas", 4, now - timedelta(minutes=5), kind="sensor_health"),
        ):
            apply_change(db, change, schema=schema)
    # Acknowledged 6 minutes after it reached the store.
    db.execute(
        "UPDATE alerts SET state = 'acknowledged', acknowledged_at = created_at + interval '6 minutes'"
        " WHERE sensor_id = 'D-L-001'"
    )
    db.execute("UPDATE alerts SET escalation_level = 1 WHERE sensor_id = 'W-P-001'")
    d = httpx.get(f"{viewer_url}/api/dashboard").json()
    assert d["active"] == {"drainage": {"2": 1, "3": 1}, "water": {"1": 1}}  # maintenance alerts apart
    assert (d["awaiting_response"], d["escalated"], d["maintenance"]) == (3, 1, 1)
    assert d["sensors"]["rain"] == {"total": 2, "online": 2}
    assert d["sensors"]["all"]["online"] == 2 and d["sensors"]["all"]["total"] == 21
    # Mean of the gauges: 9 mm/h → 9 mm in the last hour (60 full minutes), 13.5 mm in the 90 minutes of 3 h.
    assert d["rain"]["last_1h_mm"] == pytest.approx(9.0, abs=0.16)
    assert d["rain"]["last_3h_mm"] == pytest.approx(13.5, abs=0.01)
    assert d["rain"]["now_mm_h"] == pytest.approx(9.0)
    assert d["response"] == {
        "raised": 3,
        "acknowledged": 1,
        "resolved": 0,
        "median_ack_min": 6.0,
        "median_resolve_min": None,
    }
