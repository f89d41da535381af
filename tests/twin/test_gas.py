"""Gas: pandapipes import and round trip, broken files, pipe flows, and the demo city's gas network and spaces."""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandapipes
import pandapipes.networks
import pytest
from shapely import LineString, Point, Polygon

from twin.democity.gas import build_gas
from twin.democity.layout import build_layout
from twin.errors import ModelImportError
from twin.gas import GasRunSummary, read_pandapipes, run_gas
from twin.model import Link, LinkKind, Node, NodeKind, PipeNetwork, SpaceKind, UndergroundSpace
from twin.sensors import Network

EXAMPLES: dict[str, Callable[[], Any]] = {
    "gas_versatility": pandapipes.networks.gas_versatility,  # sinks, sources, two grids, valves, a pump
    "gas_meshed_two_valves": pandapipes.networks.gas_meshed_two_valves,
    "schutterwald_gas": pandapipes.networks.schutterwald_gas,  # 2 500 pipes, 1 500 sinks
}


@pytest.fixture(params=sorted(EXAMPLES))
def example(request: pytest.FixtureRequest) -> Any:
    return EXAMPLES[request.param]()


def _same_numbers(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def _same_node(a: Node, b: Node) -> bool:
    return (a.node_id, a.kind) == (b.node_id, b.kind) and all(
        _same_numbers(x, y) for x, y in ((a.x_m, b.x_m), (a.y_m, b.y_m), (a.z_m, b.z_m))
    )


def _same_link(a: Link, b: Link) -> bool:
    return (a.link_id, a.kind, a.from_id, a.to_id) == (b.link_id, b.kind, b.from_id, b.to_id) and all(
        _same_numbers(x, y)
        for x, y in ((a.diameter_m, b.diameter_m), (a.length_m, b.length_m), (a.roughness, b.roughness))
    )


def test_example_net_becomes_a_gas_network_with_every_element(example: Any) -> None:
    network = read_pandapipes(example)
    assert network.kind is Network.GAS and network.source_format == "pandapipes-json"
    assert len(network.nodes) == len(example.junction)
    names = {int(node.attrs["index"]): node_id for node_id, node in network.nodes.items()}
    sources = {names[j] for j in example.ext_grid.junction} | {names[j] for j in example.source.junction}
    sinks = {names[j] for j in example.sink.junction} - sources
    assert {n for n, node in network.nodes.items() if node.kind is NodeKind.SOURCE} == sources
    assert {n for n, node in network.nodes.items() if node.kind is NodeKind.SINK} == sinks
    flows = (example.sink.mdot_kg_per_s * example.sink.scaling).groupby(example.sink.junction).sum()
    for node_id in sinks:
        assert network.nodes[node_id].attrs["mdot_kg_s"] == pytest.approx(flows[network.nodes[node_id].attrs["index"]])
    pipes = [link for link in network.links.values() if link.kind is LinkKind.PIPE]
    assert len(pipes) == len(example.pipe)
    first = example.pipe.iloc[0]
    pipe = next(link for link in pipes if link.attrs["index"] == int(example.pipe.index[0]))
    assert pipe.length_m == pytest.approx(first.length_km * 1000.0)
    assert pipe.diameter_m == pytest.approx(first.inner_diameter_mm / 1000.0)
    assert pipe.roughness == pytest.approx(first.k_mm)
    assert (network.nodes[pipe.from_id].attrs["index"], network.nodes[pipe.to_id].attrs["index"]) == (
        first.from_junction,
        first.to_junction,
    )
    kinds = [link.kind for link in network.links.values()]
    assert kinds.count(LinkKind.VALVE) == len(example.valve)
    assert kinds.count(LinkKind.PUMP) == len(example.pump)
    json.dumps([dict(n.attrs) for n in network.nodes.values()] + [dict(k.attrs) for k in network.links.values()])


def test_example_net_round_trips_through_its_json(example: Any, tmp_path: Path) -> None:
    network = read_pandapipes(example)
    path = tmp_path / "net.json"
    path.write_text(network.source, encoding="utf-8")
    again = read_pandapipes(path)
    assert again.name == "net.json"
    assert again.nodes.keys() == network.nodes.keys() and again.links.keys() == network.links.keys()
    assert all(_same_node(again.nodes[k], network.nodes[k]) for k in network.nodes)
    assert all(_same_link(again.links[k], network.links[k]) for k in network.links)
    direct, reloaded = run_gas(example), run_gas(again)
    assert direct.converged and reloaded.converged
    assert reloaded.pressure_bar.to_numpy() == pytest.approx(direct.pressure_bar.to_numpy(), rel=1e-6)


def test_run_gas_reports_pressures_and_velocities_and_leaves_the_net_alone(example: Any) -> None:
    before = copy.deepcopy(example.junction)
    summary = run_gas(example)
    assert isinstance(summary, GasRunSummary)
    assert summary.converged and summary.iterations > 0 and summary.wall_time_s > 0
    network = read_pandapipes(example)
    assert sorted(summary.pressure_bar.index) == sorted(network.nodes)
    assert summary.pressure_kpa.to_numpy() == pytest.approx(summary.pressure_bar.to_numpy() * 100.0)
    pipes = sorted(k for k, link in network.links.items() if link.kind is LinkKind.PIPE)
    assert sorted(summary.velocity_m_s.index) == pipes
    assert len(example.get("res_junction", ())) == 0  # the flow ran on a copy
    assert example.junction.equals(before)


def test_a_net_that_cannot_converge_says_so() -> None:
    net = pandapipes.networks.gas_meshed_delta()
    net.sink["mdot_kg_per_s"] *= 1e4  # far more than the pipes can carry
    summary = run_gas(net, max_iterations=5)
    assert not summary.converged
    assert summary.pressure_bar.isna().all()


def test_a_missing_or_foreign_file_is_an_import_error(tmp_path: Path) -> None:
    with pytest.raises(ModelImportError, match="no such file"):
        read_pandapipes(tmp_path / "absent.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{\n  "junction": [1, 2,\n  }\n')
    with pytest.raises(ModelImportError) as caught:
        read_pandapipes(bad)
    assert caught.value.line == 3 and str(bad) in str(caught.value)
    foreign = tmp_path / "foreign.json"
    foreign.write_text('{"type": "FeatureCollection", "features": []}')
    with pytest.raises(ModelImportError, match="not a pandapipes net"):
        read_pandapipes(foreign)


def test_a_pipe_to_a_missing_junction_names_the_field(tmp_path: Path) -> None:
    net = pandapipes.networks.gas_meshed_two_valves()
    net.pipe.loc[net.pipe.index[1], "to_junction"] = 999
    path = tmp_path / "broken.json"
    pandapipes.to_json(net, str(path))
    with pytest.raises(ModelImportError) as caught:
        read_pandapipes(path)
    assert caught.value.field == "pipe.to_junction"
    assert "999" in str(caught.value) and str(path) in str(caught.value)


def test_a_water_net_is_not_a_gas_network() -> None:
    with pytest.raises(ModelImportError) as caught:
        read_pandapipes(pandapipes.networks.water_meshed_delta())
    assert caught.value.field == "fluid"


# --- the demo city ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo() -> tuple[PipeNetwork, Any, list[UndergroundSpace]]:
    return build_gas(build_layout())


@pytest.fixture(scope="module")
def demo_run(demo: tuple[PipeNetwork, Any, list[UndergroundSpace]]) -> GasRunSummary:
    return run_gas(demo[1])


def _medium(node: Node) -> bool:
    return float(node.attrs["pn_bar"]) > 0.5


def test_demo_network_has_a_gate_a_ring_regulators_and_low_pressure_grids(
    demo: tuple[PipeNetwork, Any, list[UndergroundSpace]],
) -> None:
    network, net, _spaces = demo
    assert len(net.junction) >= 150 and len(network.nodes) == len(net.junction)
    assert [n for n, node in network.nodes.items() if node.kind is NodeKind.SOURCE] == ["GATE"]
    assert 0.2 <= net.ext_grid.p_bar.iloc[0] / 10 <= 0.4  # MPa gauge
    regulators = [link for link in network.links.values() if link.kind is LinkKind.REGULATOR]
    assert 2 <= len(regulators) <= 4 and len(net.press_control) == len(regulators)
    for link in regulators:
        assert _medium(network.nodes[link.from_id]) and not _medium(network.nodes[link.to_id])
    assert len(net.sink) >= len(build_layout().buildings) * 0.95
    assert net.fluid.name in ("hgas", "lgas")
    mp = [
        link for link in network.links.values() if link.kind is LinkKind.PIPE and link.attrs["pressure_level"] == "MP"
    ]
    for link in mp:
        assert _medium(network.nodes[link.from_id]) and _medium(network.nodes[link.to_id])


def test_demo_flow_converges_with_plausible_pressures(
    demo: tuple[PipeNetwork, Any, list[UndergroundSpace]], demo_run: GasRunSummary
) -> None:
    network, _net, _spaces = demo
    assert demo_run.converged
    sinks = [n for n, node in network.nodes.items() if node.kind is NodeKind.SINK]
    assert len(sinks) > 100
    low = demo_run.pressure_kpa[sinks]
    assert low.min() >= 1.5 and low.max() <= 3.0
    medium = demo_run.pressure_kpa[[n for n, node in network.nodes.items() if _medium(node)]]
    assert medium.min() >= 200.0 and medium.max() <= 400.0
    assert demo_run.velocity_m_s.abs().max() < 20.0
    assert demo_run.wall_time_s < 5.0


def test_demo_medium_pressure_pipes_have_valves_at_their_intersection_ends(
    demo: tuple[PipeNetwork, Any, list[UndergroundSpace]],
) -> None:
    network, net, _spaces = demo
    ends = {(v.link_id, v.near_node_id) for v in network.valves.values()}
    assert len(network.valves) == len(net.valve[net.valve.et == "pi"]) > 0
    for link_id, link in network.links.items():
        if link.kind is not LinkKind.PIPE:
            continue
        for end in (link.from_id, link.to_id):
            at_intersection = re.fullmatch(r"M\d{4}", end) is not None
            assert ((link_id, end) in ends) == (link.attrs["pressure_level"] == "MP" and at_intersection)


def test_closing_a_pipes_valves_stops_its_flow(demo: tuple[PipeNetwork, Any, list[UndergroundSpace]]) -> None:
    network, net, _spaces = demo
    shut = copy.deepcopy(net)
    index = int(network.links["MP010"].attrs["index"])
    shut.valve.loc[shut.valve.element == index, "opened"] = False
    summary = run_gas(shut)
    assert summary.converged
    assert not abs(summary.velocity_m_s["MP010"]) > 1e-6  # NaN or zero: no gas moves in it
    assert abs(run_gas(net).velocity_m_s["MP010"]) > 0.1


def test_demo_has_underground_spaces_next_to_gas_pipes(
    demo: tuple[PipeNetwork, Any, list[UndergroundSpace]],
) -> None:
    network, _net, spaces = demo
    assert len(spaces) >= 40
    assert len({s.space_id for s in spaces}) == len(spaces)
    assert {s.kind for s in spaces} >= {
        SpaceKind.UTILITY_VAULT,
        SpaceKind.UTILITY_TUNNEL,
        SpaceKind.MANHOLE,
        SpaceKind.BASEMENT,
    }
    layout = build_layout()
    for space in spaces:
        assert space.volume_m3 > 0
        pipes = [r.removeprefix("gas:") for r in space.near if network.links.get(r.removeprefix("gas:"))]
        assert pipes and all(network.links[p].kind in (LinkKind.PIPE, LinkKind.REGULATOR) for p in pipes), space
        assert all(r.startswith("gas:") and r.removeprefix("gas:") in network.links for r in space.near)
        nearest = LineString(network.polyline(network.links[pipes[0]]))
        if space.kind is SpaceKind.BASEMENT:
            building = layout.buildings[space.space_id.removeprefix("BS-")]
            assert building.basement
            assert Polygon(building.footprint).distance(nearest) <= 30.0 + 1e-6
        else:
            assert Point(space.x_m, space.y_m).distance(nearest) <= 15.0 + 1e-6
        assert space.z_m < layout.ground(space.x_m, space.y_m)


def test_demo_is_the_same_for_the_same_layout(demo: tuple[PipeNetwork, Any, list[UndergroundSpace]]) -> None:
    network, _net, spaces = demo
    again, _again_net, again_spaces = build_gas(build_layout())
    assert again.source == network.source
    assert again_spaces == spaces
