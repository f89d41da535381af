"""Pump and valve controls watched live: real EPANET runs of Net1, and BATADAL's C-Town fed hour by hour."""

from __future__ import annotations

import json
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import wntr

from models.pump_control import KIND, KPA_PER_M, PumpControlDetector, cause_key, rules_of
from models.registry import learned_detectors
from twin.alerts import AlertChange
from twin.model import City
from twin.readings import Reading
from twin.sensors import Network, Quantity, Sensor
from twin.water import read_epanet

from .test_offline import _batadal_dir

NET1 = Path(wntr.__file__).parent / "library" / "networks" / "Net1.inp"
START = datetime(2025, 3, 1, tzinfo=UTC)
SENSORS = {
    "WL-2": Sensor("WL-2", Network.WATER, Quantity.LEVEL, "tank 2 level", asset_id="water:2", interval_s=3600),
    "WF-9": Sensor("WF-9", Network.WATER, Quantity.FLOW, "pump 9 flow", asset_id="water:9", interval_s=3600),
}


def _run(*, drop_closing: bool) -> list[list[Reading]]:
    """A week of Net1 by EPANET, hourly: tank 2's level (m) and pump 9's flow (L/s) as batches of readings."""
    model = wntr.network.WaterNetworkModel(str(NET1))
    if drop_closing:  # the controller no longer stops the pump at 140 ft: the tank overfills
        model.remove_control(next(name for name, c in model.controls() if "CLOSED" in str(c)))
    model.options.time.duration = 7 * 24 * 3600
    model.options.time.report_timestep = 3600
    with tempfile.TemporaryDirectory() as folder:  # EPANET's files, not in the working directory
        results = wntr.sim.EpanetSimulator(model).run_sim(file_prefix=str(Path(folder) / "run"))
    level = results.node["pressure"]["2"].to_numpy()
    flow = results.link["flowrate"]["9"].to_numpy() * 1000.0
    return [
        [
            Reading("WL-2", START + timedelta(hours=k), float(level[k]), 0),
            Reading("WF-9", START + timedelta(hours=k), float(flow[k]), 0),
        ]
        for k in range(level.size)
    ]


def _replay(detector: PumpControlDetector, batches: list[list[Reading]]) -> list[AlertChange]:
    changes: list[AlertChange] = []
    for batch in batches:
        result = detector.evaluate(batch, now=batch[-1].ts, suspect=frozenset())
        detector.commit(result)
        changes.extend(result.changes)
    return changes


def test_the_rules_come_from_the_twins_own_model() -> None:
    network = read_epanet(NET1)
    assert [r.describe() for r in rules_of(network)] == [
        "9 open if 2 level < 33.528 m",
        "9 closed if 2 level > 42.672 m",
    ]
    detector = PumpControlDetector(network, SENSORS)
    assert detector.unmetered is None and set(detector.sensors) == {"WL-2", "WF-9"}
    blind = PumpControlDetector(network, {"WL-2": SENSORS["WL-2"]})
    assert blind.unmetered and "no control has a sensor on both" in blind.unmetered


def test_a_pump_that_runs_past_its_stop_level_raises_and_clears_when_it_stops() -> None:
    network = read_epanet(NET1)
    assert _replay(PumpControlDetector(network, SENSORS), _run(drop_closing=False)) == []  # a normal week: nothing

    failed = _run(drop_closing=True)
    detector = PumpControlDetector(network, SENSORS)
    changes = _replay(detector, failed)
    over = [k for k, (lvl, flo) in enumerate(failed) if lvl.value > 42.672 + 0.05 and flo.value > 1.0]
    assert over, "the failed controller should let the tank rise above its stop level with the pump running"
    assert [(c.event, c.ts) for c in changes] == [("raised", failed[over[1]][0].ts)]  # two judgements confirm
    raised = changes[0]
    assert raised.kind == KIND and raised.cause_key == cause_key("9") and raised.sensor_id == "WF-9"
    assert raised.grade == 3 and raised.threshold == pytest.approx(42.672)
    assert raised.detail is not None and raised.detail["rule"] == "9 closed if 2 level > 42.672 m"
    assert "仍运行" in raised.message and "running while 2 reads" in raised.message_en

    # An operator stops the pump by hand: the rule is seen kept, the alert clears.
    at = failed[-1][0].ts + timedelta(hours=1)
    stop = [Reading("WL-2", at, 43.5, 0), Reading("WF-9", at, 0.0, 0)]
    cleared = _replay(detector, [stop])
    assert [(c.event, c.cause_key) for c in cleared] == [("cleared", cause_key("9"))]


def test_state_survives_json_and_bad_or_suspect_readings_count_for_nothing() -> None:
    network = read_epanet(NET1)
    failed = _run(drop_closing=True)
    over = next(k for k, (lvl, flo) in enumerate(failed) if lvl.value > 42.722 and flo.value > 1.0)
    whole = PumpControlDetector(network, SENSORS)
    _replay(whole, failed[: over + 1])  # one broken judgement, not yet confirmed
    restored = PumpControlDetector(network, SENSORS)
    restored.load_state(json.loads(json.dumps(whole.dump_state())))
    assert _replay(restored, failed[over + 1 :]) == _replay(whole, failed[over + 1 :])

    fresh = PumpControlDetector(network, SENSORS)
    _replay(fresh, failed[:over])
    before = fresh.dump_state()
    batch = failed[over]
    result = fresh.evaluate(
        [Reading(r.sensor_id, r.ts, r.value, 2) for r in batch], now=batch[-1].ts, suspect=frozenset()
    )
    assert result.changes == [] and result.state.last == before["last"]
    suspect = frozenset((r.sensor_id, r.ts) for r in batch)
    assert fresh.evaluate(batch, now=batch[-1].ts, suspect=suspect).state.last == before["last"]


def test_the_registry_watches_controls_only_where_the_model_has_them() -> None:
    from .bench_modules import load_bench

    net1 = City(name="net1", crs="EPSG:4547", networks={Network.WATER: read_epanet(NET1)})
    built = [factory(SENSORS) for factory in learned_detectors(net1)]
    assert KIND in [d.name for d in built]
    demo_network, _sensors = load_bench("bench_water_leak").demo_network()
    demo = City(name="demo", crs="EPSG:4547", networks={Network.WATER: demo_network})
    assert rules_of(demo_network) == []
    assert KIND not in [factory({}).name for factory in learned_detectors(demo)]


def test_batadal_attacks_raise_live_on_the_links_the_rules_name() -> None:
    folder = _batadal_dir()
    if not (folder / "CTOWN.INP").exists():
        pytest.skip(f"BATADAL data not found in {folder} (set LIFELINE_SHARED_DIR)")
    network = read_epanet(folder / "CTOWN.INP")
    quantity = {"L_": Quantity.LEVEL, "F_": Quantity.FLOW, "P_": Quantity.PRESSURE}
    scale = {"L_": 1.0, "F_": 1.0, "P_": KPA_PER_M}  # pressures as the live sensors read them, kPa

    def stream(name: str) -> tuple[list[list[Reading]], pd.Series]:
        table = pd.read_csv(folder / name, skipinitialspace=True)
        table.columns = [c.strip() for c in table.columns]
        index = pd.to_datetime(table.pop("DATETIME"), format="%d/%m/%y %H").dt.tz_localize(UTC)
        truth = (table.pop("ATT_FLAG") == 1) if "ATT_FLAG" in table else pd.Series(False, index=table.index)
        columns = [c for c in table.columns if c[:2] in quantity]
        values = np.column_stack([table[c].to_numpy() * scale[c[:2]] for c in columns])
        return [
            [Reading(c, ts.to_pydatetime(), float(v), 0) for c, v in zip(columns, row, strict=True)]
            for ts, row in zip(index, values.tolist(), strict=True)
        ], pd.Series(truth.to_numpy(), index=index)

    sensors = {
        c: Sensor(c, Network.WATER, quantity[c[:2]], c, asset_id=f"water:{c[2:]}", interval_s=3600)
        for c in [f"L_T{k}" for k in range(1, 8)]
        + [f"F_PU{k}" for k in range(1, 12)]
        + ["F_V2", "P_J280", "P_J269", "P_J300", "P_J256", "P_J289", "P_J415", "P_J302", "P_J306", "P_J307"]
        + ["P_J317", "P_J14", "P_J422"]
    }
    normal, _ = stream("BATADAL_dataset03.csv")
    detector = PumpControlDetector(network, sensors)
    assert detector.unmetered is None and len(detector.rules) == 20
    assert _replay(detector, normal) == []  # the normal year: no alert
    attacked, truth = stream("BATADAL_dataset04.csv")
    detector = PumpControlDetector(network, sensors)
    raised = [c for c in _replay(detector, attacked) if c.event == "raised"]
    # The links the FAQ names for the labelled attacks (PU10/PU11, PU2, PU7, PU6/PU7), each raised in an attack.
    assert {c.detail["link"] for c in raised if c.detail} == {"PU2", "PU6", "PU7", "PU10", "PU11"}
    assert all(truth[pd.Timestamp(c.ts)] for c in raised), [(c.cause_key, c.ts) for c in raised]
