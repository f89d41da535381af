"""Water supply scenarios on the real EPANET engine: the demo city and C-Town, with leaks, bursts, valves, pumps."""

from __future__ import annotations

import itertools
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from simulators.runner import run_scenario
from simulators.water_scenarios import (
    LeakEvent,
    PumpEvent,
    ValveEvent,
    WaterScenario,
    WaterSensorNoise,
)
from twin.democity.layout import build_layout
from twin.democity.sensors import place_sensors
from twin.democity.water import build_water
from twin.errors import ConfigError, UnknownAssetError
from twin.model import City, PipeNetwork
from twin.sensors import Network, Quantity, Sensor
from twin.water import read_epanet

START = datetime(2025, 7, 1, 16, 0, tzinfo=UTC)  # local midnight in Ji'an (UTC+8)
LEAK_AT = START + timedelta(hours=8)
LEAK_JUNCTION = "J0505"
MINUTE = 60
Values = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Demo:
    network: PipeNetwork
    sensors: dict[str, Sensor]


@pytest.fixture(scope="module")
def demo() -> Demo:
    layout = build_layout()
    network, _inp = build_water(layout)
    city = City(name="demo", crs="EPSG:4547", terrain=layout.terrain, networks={Network.WATER: network})
    return Demo(network, place_sensors(city))


def _readings(scenario: WaterScenario) -> tuple[list[str], Values]:
    """Sensor ids, and every reading as an array (steps, sensors)."""
    steps = list(scenario.steps())
    ids = [r.sensor_id for r in steps[0].readings]
    return ids, np.array([[r.value for r in step.readings] for step in steps])


@pytest.fixture(scope="module")
def quiet_day(demo: Demo) -> tuple[list[str], Values]:
    return _readings(WaterScenario(demo.network, demo.sensors, start=START, seed=5))


@pytest.fixture(scope="module")
def leak_day(demo: Demo) -> WaterScenario:
    leak = LeakEvent(junction_id=LEAK_JUNCTION, flow_l_s=10.0, start=LEAK_AT)
    scenario = WaterScenario(demo.network, demo.sensors, start=START, events=[leak], seed=5)
    scenario.ground_truth()
    return scenario


def _index(t: datetime) -> int:
    return int((t - START).total_seconds()) // MINUTE


def test_a_leak_lowers_pressure_at_the_nearest_sensors_after_it_starts(
    leak_day: WaterScenario, quiet_day: tuple[list[str], Values]
) -> None:
    ids, quiet = quiet_day
    leak_ids, leaking = _readings(leak_day)
    assert leak_ids == ids
    event = leak_day.ground_truth().events[0]
    assert event["kind"] == "leak" and event["junction_id"] == LEAK_JUNCTION
    node = leak_day.network.nodes[LEAK_JUNCTION]
    assert (event["x_m"], event["y_m"]) == (round(node.x_m, 2), round(node.y_m, 2))
    assert event["flow_at_full_l_s"] == pytest.approx(10.0, rel=0.05)  # a little less: the leak lowers its pressure
    nearest = event["pressure_change"]
    assert len(nearest) == 3 and all(n["sensor_id"].startswith("WP-") for n in nearest)
    assert [n["distance_m"] for n in nearest] == sorted(n["distance_m"] for n in nearest)
    at = _index(LEAK_AT)
    for record in nearest:
        k = ids.index(record["sensor_id"])
        before = np.abs(leaking[: at - 5, k] - quiet[: at - 5, k]).max()
        after = (quiet[at : at + 120, k] - leaking[at : at + 120, k]).mean()
        assert before < 0.05, record  # the same demand and noise before the leak
        assert after > 1.0, record  # kPa: twice the sensor noise
        assert record["mean_drop_kpa"] > 1.0
    first = ids.index(nearest[0]["sensor_id"])
    assert quiet[at - 1, first] - leaking[at - 1, first] < 0.5  # the minute before: no drop yet
    assert quiet[at, first] - leaking[at, first] > 2.0  # a sudden leak is a step, not a ramp


def test_every_water_sensor_reports_at_every_step(demo: Demo, leak_day: WaterScenario) -> None:
    water = sorted(sid for sid, s in demo.sensors.items() if s.network is Network.WATER)
    assert len(water) < len(demo.sensors)  # the rain gauges are not the water scenario's
    steps = list(leak_day.steps())
    assert len(steps) == 24 * 60
    assert all(len(step.readings) == len(water) for step in steps)
    assert [r.sensor_id for r in steps[0].readings] == water
    assert steps[1].ts - steps[0].ts == timedelta(minutes=1)
    assert all(r.ts == step.ts for step in steps[::97] for r in step.readings)
    truth = leak_day.ground_truth()
    assert truth.summary["readings"] == len(water) * len(steps)
    values = np.array([[r.value for r in step.readings] for step in steps])
    pressure = [k for k, sid in enumerate(water) if demo.sensors[sid].quantity is Quantity.PRESSURE]
    assert values[:, pressure].min() > 150.0 and values[:, pressure].max() < 700.0  # kPa, a city grid
    tank = water.index("WL-TANK")
    assert values[:, tank].min() >= 0.5 and values[:, tank].max() <= 8.5  # within the tank's levels, m


def test_the_same_seed_gives_the_same_readings_and_another_seed_other_ones(
    demo: Demo, quiet_day: tuple[list[str], Values]
) -> None:
    _ids, again = _readings(WaterScenario(demo.network, demo.sensors, start=START, seed=5))
    assert np.array_equal(again, quiet_day[1])
    _ids, other = _readings(WaterScenario(demo.network, demo.sensors, start=START, seed=6))
    assert not np.array_equal(other, quiet_day[1])


def test_a_burst_lowers_pressure_more_than_a_small_leak(demo: Demo) -> None:
    drops = {}
    for flow in (5.0, 40.0):
        leak = LeakEvent(junction_id=LEAK_JUNCTION, flow_l_s=flow, start=LEAK_AT)
        scenario = WaterScenario(demo.network, demo.sensors, start=START, events=[leak], seed=2)
        event = scenario.ground_truth().events[0]
        assert event["kind"] == ("burst" if flow >= 20 else "leak")
        drops[flow] = event["pressure_change"][0]["mean_drop_kpa"]
    assert drops[40.0] > 4 * drops[5.0] > 0


def test_an_incipient_leak_grows_over_its_ramp(demo: Demo, quiet_day: tuple[list[str], Values]) -> None:
    leak = LeakEvent(junction_id=LEAK_JUNCTION, flow_l_s=10.0, start=LEAK_AT, growth="incipient", ramp_h=6.0)
    scenario = WaterScenario(demo.network, demo.sensors, start=START, events=[leak], seed=5)
    ids, leaking = _readings(scenario)
    event = scenario.ground_truth().events[0]
    assert event["growth"] == "incipient" and event["full_at"] == (LEAK_AT + timedelta(hours=6)).isoformat()
    k = ids.index(event["pressure_change"][0]["sensor_id"])
    drop = quiet_day[1][:, k] - leaking[:, k]
    at = _index(LEAK_AT)
    hourly = [drop[at + 60 * h : at + 60 * (h + 1)].mean() for h in range(6)]
    assert all(b > a for a, b in itertools.pairwise(hourly)), hourly
    assert hourly[0] < 0.25 * hourly[-1]
    assert abs(drop[at - 60 : at]).max() < 0.05


def test_a_leak_on_a_pipe_is_shared_by_its_end_junctions(demo: Demo) -> None:
    pipe = next(link for link in demo.network.links.values() if LEAK_JUNCTION in (link.from_id, link.to_id))
    leak = LeakEvent(link_id=pipe.link_id, position=0.25, flow_l_s=8.0, start=START + timedelta(hours=1))
    scenario = WaterScenario(demo.network, demo.sensors, start=START, duration=timedelta(hours=3), events=[leak])
    event = scenario.ground_truth().events[0]
    assert {n["junction_id"]: n["share"] for n in event["nodes"]} == {pipe.from_id: 0.75, pipe.to_id: 0.25}
    a, b = demo.network.endpoints(pipe)
    assert event["x_m"] == pytest.approx(a.x_m + 0.25 * (b.x_m - a.x_m), abs=0.01)
    assert event["flow_at_full_l_s"] == pytest.approx(8.0, rel=0.05)


def test_a_day_after_day_run_differs_from_day_to_day(demo: Demo) -> None:
    noiseless = WaterSensorNoise(pressure_kpa=0.0, flow_fraction=0.0, flow_min_l_s=0.0, level_m=0.0)
    scenario = WaterScenario(demo.network, demo.sensors, start=START, duration=timedelta(days=2), noise=noiseless)
    ids, values = _readings(scenario)
    assert len(values) == 2 * 24 * 60
    flow = values[:, ids.index("WF-PMAIN")]
    first, second = flow[: 24 * 60], flow[24 * 60 :]
    assert np.corrcoef(first, second)[0, 1] > 0.8  # the same daily pattern …
    assert np.abs(first - second).mean() > 1.0  # … but not the same day (L/s)


def test_a_closed_pipe_carries_nothing_and_a_pump_outage_stops_its_flow(demo: Demo) -> None:
    pipe = "P0001"
    assert f"WF-{pipe}" in demo.sensors
    close = ValveEvent(link_id=pipe, start=START + timedelta(hours=2), end=START + timedelta(hours=4))
    pump_off = PumpEvent(pump_id="PU1", start=START + timedelta(hours=5), end=START + timedelta(hours=6))
    scenario = WaterScenario(
        demo.network, demo.sensors, start=START, duration=timedelta(hours=8), events=[close, pump_off], seed=3
    )
    ids, values = _readings(scenario)
    flow = values[:, ids.index(f"WF-{pipe}")]
    assert np.abs(flow[120:240]).max() < 0.1  # noise only (L/s)
    assert np.abs(flow[60:119]).min() > 1.0 and np.abs(flow[241:300]).min() > 1.0
    pumped = values[:, ids.index("WF-PMAIN")]
    assert pumped[300:360].mean() < 0.7 * pumped[240:299].mean()  # one of two duty pumps stopped
    assert pumped[361:420].mean() > 0.9 * pumped[240:299].mean()
    kinds = [e["kind"] for e in scenario.ground_truth().events]
    assert kinds == ["valve_closed", "pump_off"]


def test_events_that_do_not_fit_the_network_are_refused(demo: Demo) -> None:
    def scenario(*events: LeakEvent | ValveEvent | PumpEvent) -> WaterScenario:
        return WaterScenario(demo.network, demo.sensors, start=START, events=events)

    with pytest.raises(UnknownAssetError):
        scenario(LeakEvent(junction_id="NOPE", flow_l_s=1.0, start=LEAK_AT))
    with pytest.raises(ConfigError, match="not a junction"):
        scenario(LeakEvent(junction_id="TANK", flow_l_s=1.0, start=LEAK_AT))
    with pytest.raises(ConfigError, match="use PumpEvent"):
        scenario(ValveEvent(link_id="PU1", start=LEAK_AT))
    with pytest.raises(ConfigError, match="after the scenario ends"):
        scenario(LeakEvent(junction_id=LEAK_JUNCTION, flow_l_s=1.0, start=START + timedelta(days=2)))
    with pytest.raises(ConfigError, match="ramp"):
        LeakEvent(junction_id=LEAK_JUNCTION, flow_l_s=1.0, start=LEAK_AT, growth="incipient")
    with pytest.raises(ConfigError, match="timezone-aware"):
        LeakEvent(junction_id=LEAK_JUNCTION, flow_l_s=1.0, start=datetime(2025, 7, 1))
    with pytest.raises(ConfigError, match="exactly one"):
        LeakEvent(junction_id=LEAK_JUNCTION, link_id="P0001", flow_l_s=1.0, start=LEAK_AT)
    stray = Sensor("WP-X", Network.WATER, Quantity.PRESSURE, "x", asset_id="water:NOPE")
    with pytest.raises(UnknownAssetError):
        WaterScenario(demo.network, [stray], start=START)


def test_run_scenario_writes_the_recording_and_the_ground_truth(
    tmp_path: Path, demo: Demo, leak_day: WaterScenario
) -> None:
    run = run_scenario(leak_day, sensors=demo.sensors, prefix="test/lifeline/v1", out_dir=tmp_path, publisher=None)
    truth = json.loads(run.ground_truth.read_text(encoding="utf-8"))
    assert run.messages == truth["summary"]["readings"] == truth["summary"]["messages"]
    with run.recording.open(encoding="utf-8") as lines:
        first = json.loads(next(lines))
        assert sum(1 for _ in lines) + 1 == run.messages
    assert first["topic"].startswith("test/lifeline/v1/water/")
    payload = json.loads(first["payload"])
    assert payload["unit"] in ("kPa", "L/s", "m") and payload["ts"].startswith("2025-07-01T16:00:00")
    (event,) = truth["events"]
    assert event["kind"] == "leak" and event["start"] == LEAK_AT.isoformat()
    assert truth["scenario"]["kind"] == "water_supply" and truth["scenario"]["seed"] == 5


# --- C-Town (BATADAL) -----------------------------------------------------------------------------------------------


def _ctown() -> Path:
    configured = os.environ.get("LIFELINE_SHARED_DIR")
    shared = Path(configured) if configured else Path(__file__).resolve().parents[2].parent / "shared"
    path = shared / "data" / "batadal" / "CTOWN.INP"
    if not path.is_file():
        pytest.skip(f"C-Town not found at {path} (set LIFELINE_SHARED_DIR to the folder holding data/batadal)")
    return path


def _pressure_sensor(network: PipeNetwork, junction: str) -> Sensor:
    node = network.nodes[junction]
    return Sensor(
        f"WP-{junction}",
        Network.WATER,
        Quantity.PRESSURE,
        f"C-Town {junction}",
        asset_id=f"water:{junction}",
        x_m=node.x_m,
        y_m=node.y_m,
    )


def test_c_town_leak_lowers_the_pressure_nearby_and_a_pump_outage_outlasts_its_level_control() -> None:
    network = read_epanet(_ctown())
    leak_at = "J302"  # a junction of the district pumped by PU8/PU9
    near = sorted(
        (n for n in network.nodes.values() if n.kind.value == "junction" and n.node_id != leak_at),
        key=lambda n: (n.x_m - network.nodes[leak_at].x_m) ** 2 + (n.y_m - network.nodes[leak_at].y_m) ** 2,
    )
    sensors = [_pressure_sensor(network, n.node_id) for n in near[:4]]
    sensors += [
        Sensor("WF-PU1", Network.WATER, Quantity.FLOW, "PU1", asset_id="water:PU1"),
        Sensor("WL-T1", Network.WATER, Quantity.LEVEL, "T1", asset_id="water:T1"),
    ]
    leak = LeakEvent(junction_id=leak_at, flow_l_s=8.0, start=START + timedelta(hours=8))
    outage = PumpEvent(pump_id="PU1", start=START + timedelta(hours=6), end=START + timedelta(hours=12))
    scenario = WaterScenario(network, sensors, start=START, events=[leak, outage], seed=4)
    ids, values = _readings(scenario)
    assert values.shape == (24 * 60, len(sensors))
    truth = scenario.ground_truth()
    leak_truth, outage_truth = truth.events
    assert leak_truth["pressure_change"][0]["mean_drop_kpa"] > 1.0
    assert all(r["mean_drop_kpa"] > 0 for r in leak_truth["pressure_change"])
    # PU1's control switches it on when T1 falls below 4 m; the outage holds it off regardless.
    off = slice(6 * 60 + 1, 12 * 60)
    assert np.abs(values[off, ids.index("WF-PU1")]).max() < 2.0
    assert values[off, ids.index("WL-T1")].min() < 4.0 - 0.5
    assert outage_truth["kind"] == "pump_off"
    quiet = WaterScenario(network, sensors, start=START, seed=4)
    _ids, normal = _readings(quiet)
    assert normal[off, ids.index("WF-PU1")].mean() > 50.0  # L/s: without the outage PU1 runs
