"""Bad input over a real broker: every kind lands in dead_letter with its reason, and nothing good is lost."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from simulators.publisher import Publisher
from twin.mqtt import MqttConfig
from twin.store.db import DictConnection

from .conftest import wait_for

pytestmark = pytest.mark.integration


def test_malformed_messages_land_in_dead_letter_and_good_items_are_stored(
    start_ingest: Any, broker: MqttConfig, prefix: str, db: DictConnection
) -> None:
    svc = start_ingest()
    now = datetime.now(UTC)
    iso = now.isoformat()
    good = {"ts": iso, "value": 1.0, "unit": "m"}
    cases: list[tuple[str, bytes, str]] = [
        ("drainage/D-L-001", b"not json at all", "not_json"),
        ("drainage/D-L-001", b'{"ts": "' + iso.encode() + b'", "value": "1.0", "unit": "m"}', "wrong_type"),
        ("drainage/D-L-001", b'{"ts": "' + iso.encode() + b'", "value": NaN, "unit": "m"}', "non_finite"),
        ("drainage/D-L-001", b'{"ts": "' + iso.encode() + b'", "value": -Infinity, "unit": "m"}', "non_finite"),
        ("drainage/D-L-001", orjson.dumps({"ts": iso, "unit": "m"}), "missing_field"),
        ("drainage/D-L-001", orjson.dumps({**good, "unit": "fathom"}), "unknown_unit"),
        ("drainage/D-L-001", orjson.dumps({**good, "ts": (now + timedelta(days=2)).isoformat()}), "ts_in_future"),
        ("drainage/D-L-001", orjson.dumps({**good, "pad": "x" * 300_000}), "oversized"),
        ("drainage", orjson.dumps(good), "topic_shape"),
        ("drainage/D-L-001/x", orjson.dumps(good), "topic_shape"),
        ("drainage/D-L-999", orjson.dumps(good), "unknown_sensor"),
        ("gas/D-L-001", orjson.dumps(good), "network_mismatch"),
        ("drainage/D-L-001", b"[]", "not_object"),
    ]
    batch = {
        "unit": "m",
        "readings": [
            {"ts": (now - timedelta(seconds=3)).isoformat(), "value": 0.4},
            {"ts": (now - timedelta(seconds=2)).isoformat(), "value": None},
            {"ts": (now - timedelta(seconds=1)).isoformat(), "value": 0.5},
        ],
    }
    with Publisher(broker, client_id=f"bad-{uuid.uuid4().hex[:6]}") as pub:
        for suffix, payload, _reason in cases:
            pub.publish(f"{prefix}/{suffix}", payload)
        pub.publish(f"{prefix}/drainage/D-L-002", orjson.dumps(batch))
        pub.publish(f"{prefix}/drainage/D-L-004", orjson.dumps(good))  # and a good one after all that

    wait_for(lambda: svc.stats.messages == len(cases) + 2, what="all messages processed")
    letters = db.execute(
        "SELECT topic, raw, raw_size, item_index, reason, detail FROM dead_letter ORDER BY id"
    ).fetchall()
    assert sorted(
        (row["topic"].removeprefix(prefix + "/"), row["reason"]) for row in letters if row["item_index"] < 0
    ) == sorted((suffix, reason) for suffix, _p, reason in cases)
    by_reason = {row["reason"]: row for row in letters}
    assert by_reason["not_json"]["raw"] == b"not json at all"
    assert by_reason["oversized"]["raw_size"] > 300_000
    assert all(row["detail"] for row in letters)
    (item,) = [row for row in letters if row["item_index"] >= 0]
    assert (item["item_index"], item["reason"], item["topic"]) == (1, "wrong_type", f"{prefix}/drainage/D-L-002")
    stored = db.execute("SELECT sensor_id, value FROM readings ORDER BY sensor_id, ts").fetchall()
    assert [(r["sensor_id"], r["value"]) for r in stored] == [("D-L-002", 0.4), ("D-L-002", 0.5), ("D-L-004", 1.0)]


def test_sensor_added_while_running_is_accepted_after_refresh(
    start_ingest: Any, broker: MqttConfig, prefix: str, db: DictConnection
) -> None:
    from twin.sensors import Network, Quantity, Sensor
    from twin.store.sensors import upsert_sensors

    svc = start_ingest()
    body = orjson.dumps({"ts": datetime.now(UTC).isoformat(), "value": 2.0, "unit": "mm/h"})
    with Publisher(broker, client_id=f"new-{uuid.uuid4().hex[:6]}") as pub:
        pub.publish(f"{prefix}/rain/R-NEW", body)
        wait_for(lambda: svc.stats.dead_letters == 1, what="unknown sensor dead-lettered")
        upsert_sensors(db, [Sensor("R-NEW", Network.RAIN, Quantity.RAIN_RATE, "新雨量计")])
        wait_for(lambda: "R-NEW" in (svc._decoder.sensors if svc._decoder else {}), timeout=5, what="registry refresh")
        pub.publish(
            f"{prefix}/rain/R-NEW", orjson.dumps({"ts": datetime.now(UTC).isoformat(), "value": 2.0, "unit": "mm/h"})
        )
    wait_for(lambda: svc.stats.readings_stored == 1, what="reading of the new sensor stored")
