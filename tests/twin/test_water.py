"""Water supply: EPANET import (Net3, C-Town), broken files, EPANET runs, leaks, and the demo city's network."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
import wntr

from twin.democity.layout import build_layout
from twin.democity.water import build_water
from twin.errors import ModelImportError, UnknownAssetError
from twin.model import LinkKind, NodeKind, PipeNetwork
from twin.sensors import Network
from twin.water import Leak, WaterRunSummary, emitter_coefficient, read_epanet, run_epanet

NET3 = Path(wntr.__file__).parent / "library" / "networks" / "Net3.inp"
US_FLOW_UNITS = {"CFS", "GPM", "MGD", "IMGD", "AFD"}
FT_M, IN_M = 0.3048, 0.0254


def _shared_dir() -> Path:
    configured = os.environ.get("LIFELINE_SHARED_DIR")
    return Path(configured) if configured else Path(__file__).resolve().parents[2].parent / "shared"


def _ctown() -> Path:
    path = _shared_dir() / "data" / "batadal" / "CTOWN.INP"
    if not path.is_file():
        pytest.skip(f"C-Town not found at {path} (set LIFELINE_SHARED_DIR to the folder holding data/batadal)")
    return path


@pytest.fixture(params=["Net3", "C-Town"])
def inp(request: pytest.FixtureRequest) -> Path:
    return NET3 if request.param == "Net3" else _ctown()


def _sections(text: str) -> dict[str, list[tuple[int, list[str]]]]:
    """Data lines of an .inp file by section: (line number, values before any comment)."""
    out: dict[str, list[tuple[int, list[str]]]] = {}
    section = ""
    for number, raw in enumerate(text.splitlines(), start=1):
        values = raw.split(";", 1)[0].split()
        if not values:
            continue
        if values[0].startswith("["):
            section = values[0].upper()
            continue
        out.setdefault(section, []).append((number, values))
    return out


def _kinds(network: PipeNetwork, kind: NodeKind | LinkKind) -> list[str]:
    items = network.nodes if isinstance(kind, NodeKind) else network.links
    return [k for k, v in items.items() if v.kind is kind]


def test_import_counts_match_the_files_sections(inp: Path) -> None:
    sections = _sections(inp.read_text())
    network = read_epanet(inp)
    assert network.kind is Network.WATER
    expected_kinds: list[tuple[str, NodeKind | LinkKind]] = [
        ("[JUNCTIONS]", NodeKind.JUNCTION),
        ("[TANKS]", NodeKind.TANK),
        ("[RESERVOIRS]", NodeKind.RESERVOIR),
        ("[PIPES]", LinkKind.PIPE),
        ("[PUMPS]", LinkKind.PUMP),
        ("[VALVES]", LinkKind.VALVE),
    ]
    for section, kind in expected_kinds:
        expected = sorted(values[0] for _n, values in sections.get(section, []))
        assert sorted(_kinds(network, kind)) == expected, section
    assert len(_kinds(network, LinkKind.PUMP)) > 0


def test_import_keeps_elevations_sizes_and_levels_from_the_file(inp: Path) -> None:
    text = inp.read_text()
    sections = _sections(text)
    units = next(values[1] for _n, values in sections["[OPTIONS]"] if values[0].upper() == "UNITS").upper()
    length_m, diameter_m = (FT_M, IN_M) if units in US_FLOW_UNITS else (1.0, 0.001)
    network = read_epanet(inp)

    junction = sections["[JUNCTIONS]"][len(sections["[JUNCTIONS]"]) // 2][1]
    assert network.nodes[junction[0]].z_m == pytest.approx(float(junction[1]) * length_m)
    pipe = sections["[PIPES]"][-1][1]
    link = network.links[pipe[0]]
    assert (link.from_id, link.to_id) == (pipe[1], pipe[2])
    assert link.length_m == pytest.approx(float(pipe[3]) * length_m)
    assert link.diameter_m == pytest.approx(float(pipe[4]) * diameter_m)
    assert link.roughness == pytest.approx(float(pipe[5]))
    tank = sections["[TANKS]"][0][1]
    assert network.nodes[tank[0]].z_m == pytest.approx(float(tank[1]) * length_m)
    assert network.nodes[tank[0]].depth_m == pytest.approx(float(tank[4]) * length_m)
    x, y = next(values[1:3] for _n, values in sections["[COORDINATES]"] if values[0] == junction[0])
    assert (network.nodes[junction[0]].x_m, network.nodes[junction[0]].y_m) == (float(x), float(y))


def test_imported_network_keeps_its_text_and_has_no_isolation_valves(inp: Path) -> None:
    network = read_epanet(inp)
    assert network.source == inp.read_bytes().decode("utf-8")  # as it is, line endings included
    assert network.source_format == "epanet-inp"
    assert network.name == inp.name
    assert network.valves == {}


def test_imported_networks_run_24_h_in_epanet(inp: Path) -> None:
    network = read_epanet(inp)
    summary = run_epanet(network, duration_h=24)
    assert isinstance(summary, WaterRunSummary)
    assert summary.converged
    assert summary.pressure_m.index[0] == 0 and summary.pressure_m.index[-1] == 24 * 3600
    assert sorted(summary.pressure_m.columns) == sorted(_kinds(network, NodeKind.JUNCTION))
    assert sorted(summary.flow_l_s.columns) == sorted(network.links)
    assert summary.min_pressure_m == pytest.approx(float(summary.pressure_m.to_numpy().min()))
    assert np.isfinite(summary.pressure_m.to_numpy()).all()
    assert summary.wall_time_s < 5.0


# --- broken files -------------------------------------------------------------------------------------------------


def _broken_copy(tmp_path: Path, replace: tuple[str, str] | None = None, *, line_of: str) -> tuple[Path, int]:
    """Copy C-Town with one change; return the copy and the number of the line holding *line_of* in it."""
    text = _ctown().read_text()
    if replace is not None:
        assert replace[0] in text
        text = text.replace(replace[0], replace[1], 1)
    path = tmp_path / "CTOWN-broken.inp"
    path.write_text(text)
    number = next(n for n, raw in enumerate(text.splitlines(), start=1) if line_of in raw)
    return path, number


def _import_error(path: Path) -> ModelImportError:
    with pytest.raises(ModelImportError) as caught:
        read_epanet(path)
    assert str(path) in str(caught.value)
    return caught.value


def test_a_bad_number_names_the_line_and_field(tmp_path: Path) -> None:
    path, line = _broken_copy(tmp_path, (" J511            \t105.08", " J511            \t1o5.08"), line_of="1o5.08")
    error = _import_error(path)
    assert (error.line, error.field) == (line, "elevation")
    assert "1o5.08" in str(error) and f":{line}" in str(error)


def test_a_pipe_to_a_missing_node_names_the_line_and_field(tmp_path: Path) -> None:
    original = re.search(r"\n( P1 +\t)(J\d+)", _ctown().read_text())
    assert original is not None
    path, line = _broken_copy(tmp_path, (original.group(0), "\n" + original.group(1) + "NOWHERE"), line_of="NOWHERE")
    error = _import_error(path)
    assert (error.line, error.field) == (line, "node1")
    assert "NOWHERE" in str(error)


def test_a_pipe_line_with_too_few_values_names_the_missing_field(tmp_path: Path) -> None:
    text = _ctown().read_text()
    full = next(raw for raw in text.splitlines() if raw.split()[:1] == ["P10"])
    short = " ".join(full.split()[:3])
    path, line = _broken_copy(tmp_path, (full, short), line_of=short)
    error = _import_error(path)
    assert (error.line, error.field) == (line, "length")


def test_an_unknown_section_names_its_line(tmp_path: Path) -> None:
    path, line = _broken_copy(tmp_path, ("[PUMPS]", "[PUMPZ]"), line_of="[PUMPZ]")
    assert _import_error(path).line == line


def test_an_unknown_option_value_names_the_option(tmp_path: Path) -> None:
    path, line = _broken_copy(tmp_path, ("LPS", "LITRES"), line_of="LITRES")
    error = _import_error(path)
    assert (error.line, error.field) == (line, "Units")


def test_a_junction_without_pipes_is_refused_at_its_definition(tmp_path: Path) -> None:
    path, line = _broken_copy(tmp_path, ("[RESERVOIRS]", " JLONE 10 0\n[RESERVOIRS]"), line_of="JLONE")
    error = _import_error(path)
    assert (error.line, error.field) == (line, "id")


def test_a_duplicate_id_is_refused(tmp_path: Path) -> None:
    path, line = _broken_copy(tmp_path, ("[RESERVOIRS]", " J511 10 0\n[RESERVOIRS]"), line_of=" J511 10 0")
    error = _import_error(path)
    assert (error.line, error.field) == (line, "id")


def test_text_that_is_not_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.inp"
    path.write_bytes(_ctown().read_bytes().replace(b"[TITLE]", b"[TITLE]\nCaf\xe9 \xe9t\xe9", 1))
    assert _import_error(path).line == 2


def test_a_missing_file_is_an_import_error(tmp_path: Path) -> None:
    error = _import_error(tmp_path / "absent.inp")
    assert "no such file" in str(error)
    assert isinstance(error, ValueError)


# --- leaks and the demo city --------------------------------------------------------------------------------------


def test_emitter_coefficient_gives_the_leak_flow_at_the_reference_pressure() -> None:
    c = emitter_coefficient(5.0, pressure_m=25.0)
    assert c * 25.0**0.5 * 1000.0 == pytest.approx(5.0)
    with pytest.raises(ValueError):
        Leak("J1", flow_l_s=0.0)


@pytest.fixture(scope="module")
def demo() -> tuple[PipeNetwork, str]:
    return build_water(build_layout())


@pytest.fixture(scope="module")
def demo_run(demo: tuple[PipeNetwork, str]) -> WaterRunSummary:
    return run_epanet(demo[0], duration_h=24)


def test_demo_network_has_a_plant_a_tank_and_a_junction_at_every_intersection(
    demo: tuple[PipeNetwork, str], tmp_path: Path
) -> None:
    network, inp = demo
    layout = build_layout()
    junctions = _kinds(network, NodeKind.JUNCTION)
    assert len(junctions) >= 200
    assert len(_kinds(network, NodeKind.TANK)) == 1 and len(_kinds(network, NodeKind.RESERVOIR)) == 1
    assert len(_kinds(network, LinkKind.PUMP)) >= 1
    assert {f"J{d['i']:02d}{d['j']:02d}" for _n, d in layout.street_graph.nodes(data=True)} <= set(junctions)
    diameters = {round(link.diameter_m * 1000) for link in network.links.values() if link.kind is LinkKind.PIPE}
    assert min(diameters) >= 100 and max(diameters) <= 600 and len(diameters) >= 4
    assert all(100 <= link.roughness <= 130 for link in network.links.values() if link.kind is LinkKind.PIPE)
    for jid in junctions:
        node = network.nodes[jid]
        assert node.ground_m == pytest.approx(layout.ground(node.x_m, node.y_m), abs=0.02)
    assert sum(network.nodes[j].attrs["base_demand_l_s"] for j in junctions) > 100.0
    (tmp_path / "demo.inp").write_text(inp, encoding="utf-8")
    assert read_epanet(tmp_path / "demo.inp").links == network.links


def test_demo_network_is_the_same_for_the_same_layout(demo: tuple[PipeNetwork, str]) -> None:
    again, inp = build_water(build_layout())
    assert inp == demo[1]
    assert again.nodes == demo[0].nodes and again.valves == demo[0].valves


def test_demo_pipes_have_isolation_valves_at_their_intersection_ends(demo: tuple[PipeNetwork, str]) -> None:
    network, _inp = demo
    intersections = {j for j in _kinds(network, NodeKind.JUNCTION) if re.fullmatch(r"J\d{4}", j)}
    ends = {(v.link_id, v.near_node_id) for v in network.valves.values()}
    assert len(ends) == len(network.valves)
    for link in network.links.values():
        if link.kind is not LinkKind.PIPE:
            continue
        for end in (link.from_id, link.to_id):
            assert ((link.link_id, end) in ends) == (end in intersections), (link.link_id, end)
    for valve in network.valves.values():
        node = network.nodes[valve.near_node_id]
        assert 0 < np.hypot(valve.x_m - node.x_m, valve.y_m - node.y_m) <= 3.01


def test_demo_pressures_stay_between_20_and_60_m_all_day(demo_run: WaterRunSummary) -> None:
    assert demo_run.converged
    assert demo_run.pressure_m.index[-1] == 24 * 3600
    assert demo_run.negative_pressure_junctions == ()
    assert demo_run.min_pressure_m >= 20.0
    assert demo_run.max_pressure_m <= 60.0
    assert demo_run.wall_time_s < 2.0


def test_a_leak_lowers_pressure_around_it_and_leaves_the_network_as_it_was(
    demo: tuple[PipeNetwork, str], demo_run: WaterRunSummary
) -> None:
    network, inp = demo
    leaky = run_epanet(network, duration_h=24, leaks=[Leak("J0707", flow_l_s=40.0, reference_pressure_m=30.0)])
    drop = demo_run.pressure_m - leaky.pressure_m
    assert (drop["J0707"] > 0.5).all()
    neighbours = {
        link.to_id if link.from_id == "J0707" else link.from_id
        for link in network.links.values()
        if "J0707" in (link.from_id, link.to_id)
    }
    assert all((drop[n] > 0.3).all() for n in neighbours)
    assert drop["J0707"].mean() > drop.drop(columns=["J0707"]).mean(axis=1).mean()
    assert network.source == inp


def test_a_leak_at_an_unknown_junction_is_refused(demo: tuple[PipeNetwork, str]) -> None:
    with pytest.raises(UnknownAssetError):
        run_epanet(demo[0], duration_h=1, leaks=[Leak("NOWHERE", flow_l_s=1.0)])
