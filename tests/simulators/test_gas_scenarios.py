"""Gas scenarios on the real pandapipes engine: the demo city's gas network, a leak beside a manhole, methane."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from shapely import LineString, Point

from simulators.gas_scenarios import ALARM_PCT_LEL, GasLeakEvent, GasScenario, MethaneReporting
from simulators.runner import run_scenario
from twin.democity.gas import build_gas
from twin.democity.layout import build_layout
from twin.democity.sensors import place_sensors
from twin.errors import ConfigError, UnknownAssetError
from twin.model import City, PipeNetwork, SpaceKind, UndergroundSpace
from twin.sensors import Network, Sensor

START = datetime(2025, 7, 1, 16, 0, tzinfo=UTC)  # local midnight in Ji'an (UTC+8)
LEAK_AT = START + timedelta(hours=8)
SNAPSHOTS = timedelta(minutes=30)  # the default is 10 min; 30 keeps the day's test quick
Values = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Demo:
    network: PipeNetwork
    spaces: list[UndergroundSpace]
    sensors: dict[str, Sensor]
    manhole: UndergroundSpace  # a watched manhole beside a low-pressure pipe
    pipe_id: str
    position: float  # the manhole's place along the pipe


@pytest.fixture(scope="module")
def demo() -> Demo:
    network, _net, spaces = build_gas(build_layout())
    city = City(name="demo", crs="EPSG:4547", networks={Network.GAS: network}, spaces={s.space_id: s for s in spaces})
    sensors = place_sensors(city)
    by_id = {s.space_id: s for s in spaces}
    watched = sorted(sid.removeprefix("GM-") for sid in sensors if sid.startswith("GM-MH"))
    manhole = by_id[watched[len(watched) // 2]]
    pipe_id = manhole.near[0].removeprefix("gas:")
    line = LineString(network.polyline(network.links[pipe_id]))
    position = float(line.project(Point(manhole.x_m, manhole.y_m), normalized=True))
    return Demo(network, spaces, sensors, manhole, pipe_id, position)


def _leak(demo: Demo, *, m3_h: float = 40.0, start: datetime = LEAK_AT) -> GasLeakEvent:
    return GasLeakEvent(pipe_id=demo.pipe_id, position=demo.position, volume_flow_m3_h=m3_h, start=start)


def _readings(scenario: GasScenario) -> tuple[list[str], Values]:
    """Sensor ids, and every reading as an array (steps, sensors)."""
    steps = list(scenario.steps())
    ids = [r.sensor_id for r in steps[0].readings]
    return ids, np.array([[r.value for r in step.readings] for step in steps])


@pytest.fixture(scope="module")
def leak_day(demo: Demo) -> GasScenario:
    scenario = GasScenario(
        demo.network, demo.spaces, demo.sensors, start=START, events=[_leak(demo)], seed=3, snapshot_step=SNAPSHOTS
    )
    scenario.ground_truth()
    return scenario


def _minute(t: datetime) -> int:
    return int((t - START).total_seconds()) // 60


def test_methane_in_the_nearest_space_crosses_20_pct_lel_after_the_leak_starts_and_not_before(
    demo: Demo, leak_day: GasScenario
) -> None:
    ids, values = _readings(leak_day)
    methane = values[:, ids.index(f"GM-{demo.manhole.space_id}")]
    at = _minute(LEAK_AT)
    assert methane[:at].max() < 5.0  # background and noise only, %LEL
    assert methane[at] < ALARM_PCT_LEL
    assert methane[at + 15 :].min() >= ALARM_PCT_LEL
    (event,) = leak_day.ground_truth().events
    nearest = event["spaces"][0]
    assert nearest["space_id"] == demo.manhole.space_id and nearest["distance_m"] < 5.0
    crossed = datetime.fromisoformat(nearest["crossed_20_pct_lel_at"])
    assert LEAK_AT < crossed <= LEAK_AT + timedelta(minutes=15)
    assert methane.max() <= 100.0  # a catalytic sensor's range


def test_spaces_further_from_the_leak_rise_less(demo: Demo, leak_day: GasScenario) -> None:
    (event,) = leak_day.ground_truth().events
    reached = event["spaces"]
    assert len(reached) >= 2
    assert [r["distance_m"] for r in reached] == sorted(r["distance_m"] for r in reached)
    assert all(r["peak_pct_lel"] < reached[0]["peak_pct_lel"] for r in reached[1:])
    assert all(r["crossed_20_pct_lel_at"] is None for r in reached[1:])
    ids, values = _readings(leak_day)
    far = [
        k
        for k, sid in enumerate(ids)
        if sid.startswith("GM-")
        and np.hypot(demo.sensors[sid].x_m - event["x_m"], demo.sensors[sid].y_m - event["y_m"]) > 100.0
    ]
    assert len(far) > 50
    assert values[:, far].max() < 5.0  # nothing but background beyond 100 m


def test_gas_pressure_near_the_leak_drops(demo: Demo, leak_day: GasScenario) -> None:
    quiet = GasScenario(demo.network, demo.spaces, demo.sensors, start=START, seed=3, snapshot_step=SNAPSHOTS)
    ids, normal = _readings(quiet)
    _ids, leaking = _readings(leak_day)
    (event,) = leak_day.ground_truth().events
    nearest = event["pressure_change"]
    assert [n["sensor_id"][:3] for n in nearest] == ["GP-"] * 3
    at = _minute(LEAK_AT)
    for record in nearest:
        k = ids.index(record["sensor_id"])
        assert record["mean_drop_kpa"] > 0.005, record
        assert (normal[at:, k] - leaking[at:, k]).mean() == pytest.approx(record["mean_drop_kpa"], rel=0.2)
        assert abs(normal[: at - 30, k] - leaking[: at - 30, k]).max() < 1e-9  # same demand and noise before
    low = [k for k, sid in enumerate(ids) if sid.startswith("GP-L")]
    assert normal[:, low].min() > 2.0 and normal[:, low].max() < 3.0  # kPa: low-pressure grid at ~2.8 kPa


def test_readings_cover_every_gas_sensor_and_repeat_for_a_seed(demo: Demo) -> None:
    def scenario(seed: int) -> GasScenario:
        return GasScenario(
            demo.network,
            demo.spaces,
            demo.sensors,
            start=START,
            duration=timedelta(hours=2),
            snapshot_step=timedelta(hours=1),
            events=[_leak(demo, start=START + timedelta(minutes=30))],
            seed=seed,
        )

    ids, first = _readings(scenario(11))
    assert ids == sorted(demo.sensors) and first.shape == (120, len(demo.sensors))
    _ids, again = _readings(scenario(11))
    _ids, other = _readings(scenario(12))
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_a_leak_on_a_pipe_is_shared_by_its_end_junctions_and_sized_either_way(demo: Demo) -> None:
    by_mass = GasLeakEvent(pipe_id=demo.pipe_id, position=0.25, mass_flow_kg_s=0.002, start=START)
    by_volume = GasLeakEvent(pipe_id=demo.pipe_id, position=0.25, volume_flow_m3_h=10.0, start=START)
    assert by_mass.m3_h == pytest.approx(10.0) and by_volume.kg_s == pytest.approx(0.002)
    scenario = GasScenario(
        demo.network, demo.spaces, demo.sensors, start=START, duration=timedelta(minutes=10), events=[by_mass]
    )
    (event,) = scenario.ground_truth().events
    link = demo.network.links[demo.pipe_id]
    assert {n["junction_id"]: n["share"] for n in event["nodes"]} == {link.from_id: 0.75, link.to_id: 0.25}
    assert event["volume_m3"] == pytest.approx(10.0 / 6.0, abs=0.01)  # 10 m³/h for 10 min


def test_leaks_and_sensors_that_do_not_fit_are_refused(demo: Demo) -> None:
    with pytest.raises(ConfigError, match="exactly one of mass"):
        GasLeakEvent(junction_id="L0305", mass_flow_kg_s=0.01, volume_flow_m3_h=5.0, start=LEAK_AT)
    with pytest.raises(ConfigError, match="positive"):
        GasLeakEvent(junction_id="L0305", mass_flow_kg_s=-0.01, start=LEAK_AT)
    regulator = next(lid for lid, link in demo.network.links.items() if link.kind.value == "regulator")
    for event, error in (
        (GasLeakEvent(junction_id="NOPE", mass_flow_kg_s=0.01, start=LEAK_AT), UnknownAssetError),
        (GasLeakEvent(pipe_id=regulator, mass_flow_kg_s=0.01, start=LEAK_AT), ConfigError),
    ):
        with pytest.raises(error):
            GasScenario(demo.network, demo.spaces, demo.sensors, start=START, events=[event])
    without_spaces = [s for s in demo.spaces if s.kind is not SpaceKind.MANHOLE]
    with pytest.raises(UnknownAssetError):
        GasScenario(demo.network, without_spaces, demo.sensors, start=START)


def test_run_scenario_writes_the_recording_and_the_ground_truth(tmp_path: Path, demo: Demo) -> None:
    scenario = GasScenario(
        demo.network,
        demo.spaces,
        demo.sensors,
        start=START,
        duration=timedelta(hours=1),
        snapshot_step=timedelta(minutes=30),
        events=[_leak(demo, start=START + timedelta(minutes=10))],
        seed=2,
    )
    run = run_scenario(scenario, sensors=demo.sensors, prefix="test/lifeline/v1", out_dir=tmp_path, publisher=None)
    truth = json.loads(run.ground_truth.read_text(encoding="utf-8"))
    assert run.messages == truth["summary"]["readings"] == 60 * len(demo.sensors)
    with run.recording.open(encoding="utf-8") as lines:
        records = [json.loads(line) for line in lines]
    assert len(records) == run.messages
    units = {json.loads(r["payload"])["unit"] for r in records}
    assert units == {"kPa", "%LEL"}
    assert all(r["topic"].startswith("test/lifeline/v1/gas/") for r in records)
    (event,) = truth["events"]
    assert event["kind"] == "gas_leak" and event["spaces"][0]["space_id"] == demo.manhole.space_id
    assert truth["summary"]["spaces_over_20_pct_lel"] >= 1


def test_methane_reported_on_change_adds_readings_between_steps_and_changes_neither_the_rest_nor_the_truth(
    demo: Demo,
) -> None:
    def scenario(reporting: MethaneReporting | None) -> GasScenario:
        return GasScenario(
            demo.network,
            demo.spaces,
            demo.sensors,
            start=START,
            duration=timedelta(hours=2),
            snapshot_step=timedelta(hours=1),
            events=[_leak(demo, start=START + timedelta(minutes=30))],
            seed=11,
            methane_reporting=reporting,
        )

    reporting = MethaneReporting(sample_s=5, change_pct_lel=2.0)
    plain, on_change = scenario(None), scenario(reporting)
    every = list(on_change.steps())
    at_minutes = [s for s in every if (s.ts - START) % timedelta(minutes=1) == timedelta(0)]
    between = [s for s in every if (s.ts - START) % timedelta(minutes=1) != timedelta(0)]
    # The regular reports are the very same; the ground truth's events too.
    assert [(s.ts, s.readings) for s in at_minutes] == [(s.ts, s.readings) for s in plain.steps()]
    assert on_change.ground_truth().events == plain.ground_truth().events
    truth = on_change.ground_truth()
    assert truth.scenario["methane_reporting"] == {"sample_s": 5, "change_pct_lel": 2.0, "alarm_pct_lel": 20.0}
    assert plain.ground_truth().scenario["methane_reporting"] is None
    extra = [r for s in between for r in s.readings]
    assert truth.summary["readings_on_change"] == len(extra) > 0
    assert truth.summary["readings"] == plain.ground_truth().summary["readings"] + len(extra)
    # Only methane sensors report between steps, at their sample times, in time order.
    assert all(r.sensor_id.startswith("GM-") for r in extra)
    assert all((s.ts - START) % timedelta(seconds=5) == timedelta(0) for s in between)
    assert [s.ts for s in every] == sorted({s.ts for s in every})
    # Beside the leak, a reading comes each time the value moved 2 %LEL from the one published before it (or
    # reached the alarm level): within the first minute of the rise, long before the next regular report.
    sid = f"GM-{demo.manhole.space_id}"
    mine = [(r.ts, r.value) for s in every for r in s.readings if r.sensor_id == sid]
    leak_at = START + timedelta(minutes=30)
    early = [ts for ts, _v in mine if leak_at < ts < leak_at + timedelta(minutes=1)]
    assert early, mine[25:40]
    for (_t0, before), (t1, value) in itertools.pairwise(mine):
        if (t1 - START) % timedelta(minutes=1) != timedelta(0):
            assert abs(value - before) >= 2.0 or before < ALARM_PCT_LEL <= value
    # Quiet sensors, far from the leak, hardly ever publish between their regular reports (noise alone).
    publishing = {r.sensor_id for r in extra}
    assert len(publishing) <= 10, sorted(publishing)


def test_a_sampling_period_that_does_not_divide_the_step_is_refused(demo: Demo) -> None:
    with pytest.raises(ConfigError, match="must divide"):
        GasScenario(
            demo.network, demo.spaces, demo.sensors, start=START, methane_reporting=MethaneReporting(sample_s=7)
        )
