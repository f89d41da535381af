"""A pump that does not obey its control, seen live: C-Town's twin stored, BATADAL's readings sent over MQTT."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pandas as pd
import pytest

from simulators.publisher import Publisher
from twin.mqtt import MqttConfig
from twin.sensors import Network, Quantity, Sensor
from twin.store.assets import save_network
from twin.store.db import DictConnection
from twin.store.sensors import upsert_sensors
from twin.water import read_epanet

from .conftest import wait_for
from .models.test_offline import _batadal_dir

pytestmark = pytest.mark.integration

COLUMNS = {"L_T4": (Quantity.LEVEL, "m"), "F_PU6": (Quantity.FLOW, "L/s"), "F_PU7": (Quantity.FLOW, "L/s")}


def test_ingest_raises_a_control_alert_from_the_stored_twins_own_rules(
    start_ingest: Any, broker: MqttConfig, prefix: str, db: DictConnection
) -> None:
    folder = _batadal_dir()
    if not (folder / "CTOWN.INP").exists():
        pytest.skip(f"BATADAL data not found in {folder} (set LIFELINE_SHARED_DIR)")
    with db.transaction():
        save_network(db, read_epanet(folder / "CTOWN.INP"), crs="EPSG:4547")
        upsert_sensors(
            db,
            [
                Sensor(f"CT-{c}", Network.WATER, quantity, c, asset_id=f"water:{c[2:]}", interval_s=3600)
                for c, (quantity, _unit) in COLUMNS.items()
            ],
        )
    svc = start_ingest()
    assert "water_control" in [d.name for d in svc.detectors.detectors]  # the stored model has controls

    # 27 November 2016, 00:00–12:00: the labelled PU7 attack runs from 04:00 to 10:00 (PU7 on with T4 above 4.5 m).
    table = pd.read_csv(folder / "BATADAL_dataset04.csv", skipinitialspace=True)
    table.columns = [c.strip() for c in table.columns]
    hours = table[table["DATETIME"].str.startswith("27/11/16")].iloc[:13]
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    with Publisher(broker, client_id=f"pub-{prefix[5:15]}") as pub:
        for k, (_i, row) in enumerate(hours.iterrows()):
            ts = (end - timedelta(hours=len(hours) - 1 - k)).isoformat()
            for column, (_quantity, unit) in COLUMNS.items():
                payload = {"ts": ts, "value": float(row[column]), "unit": unit}
                pub.publish(f"{prefix}/water/CT-{column}", orjson.dumps(payload))
    wait_for(
        lambda: db.execute("SELECT count(*) AS n FROM readings").fetchone()["n"] == 3 * len(hours),  # type: ignore[index]
        what="every reading stored",
    )
    wait_for(
        lambda: db.execute("SELECT 1 FROM alerts WHERE kind = 'water_control'").fetchone() is not None,
        what="a water_control alert",
    )
    alerts = db.execute(
        "SELECT cause_key, grade, message, detail, active FROM alerts WHERE kind = 'water_control'"
    ).fetchall()
    assert [a["cause_key"] for a in alerts] == ["water_control:PU7"]
    alert = alerts[0]
    assert alert["grade"] == 3 and "PU7" in alert["message"] and alert["detail"]["node"] == "T4"
    assert alert["detail"]["value"] > 4.5 and alert["detail"]["running"] is True
    # A backlog of thirteen hours came in as few batches: each hour was judged in order, the alert raised at the
    # second hour of the attack (05:00 of the replayed day) and nothing before it.
    state = svc.detectors.dump_states()["water_control"]
    assert state["active"]["PU7"] == (end - timedelta(hours=len(hours) - 1 - 5)).timestamp()
