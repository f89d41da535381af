"""SWMM drainage: importing real models (pystorms), broken files, running SWMM, and the demo city's drainage."""

from __future__ import annotations

import math
import threading
from pathlib import Path

import networkx as nx
import pystorms
import pytest

from twin.democity.drainage import (
    MAX_DEPTH_M,
    RIVER_LEVEL_M,
    build_drainage,
    chicago_storm_mm_h,
    storm_intensity_l_s_ha,
)
from twin.democity.layout import Layout, build_layout
from twin.drainage import (
    Subcatchment,
    SwmmModel,
    SwmmSummary,
    check_swmm,
    read_swmm,
    read_swmm_model,
    run_swmm,
    write_swmm,
)
from twin.errors import ModelImportError, SimulationError
from twin.model import LinkKind, NodeKind, PipeNetwork
from twin.sensors import Network
from twin.storms import DEFAULT_FORMULA, FORMULAS

PYSTORMS = Path(pystorms.__file__).parent / "networks"
NETWORKS = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "theta")
US_UNITS = {"CFS", "GPM", "MGD"}
Demo = tuple[PipeNetwork, list[Subcatchment], str]

NODE_SECTIONS = {
    "JUNCTIONS": NodeKind.JUNCTION,
    "OUTFALLS": NodeKind.OUTFALL,
    "STORAGE": NodeKind.STORAGE,
    "DIVIDERS": NodeKind.DIVIDER,
}
LINK_SECTIONS = {
    "CONDUITS": LinkKind.CONDUIT,
    "PUMPS": LinkKind.PUMP,
    "ORIFICES": LinkKind.ORIFICE,
    "WEIRS": LinkKind.WEIR,
    "OUTLETS": LinkKind.OUTLET,
}


def section_lines(text: str) -> dict[str, list[tuple[int, list[str]]]]:
    """Data lines of every section, counted the plain way: (1-based line number, whitespace-split fields)."""
    sections: dict[str, list[tuple[int, list[str]]]] = {}
    current = ""
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split(";", 1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            current = line.strip("[]").upper()
            sections.setdefault(current, [])
        else:
            sections.setdefault(current, []).append((number, line.split()))
    return sections


def length_factor(text: str) -> float:
    options = {fields[0].upper(): fields[1].upper() for _n, fields in section_lines(text).get("OPTIONS", [])}
    return 0.3048 if options.get("FLOW_UNITS", "CFS") in US_UNITS else 1.0


@pytest.fixture(params=NETWORKS)
def accepted_network(request: pytest.FixtureRequest) -> Path:
    """A pystorms network that SWMM itself accepts; one SWMM rejects is skipped with SWMM's reason."""
    path = PYSTORMS / f"{request.param}.inp"
    try:
        check_swmm(path)
    except ModelImportError as exc:
        pytest.skip(f"SWMM rejects {path.name}: {exc}")
    return path


def test_pystorms_network_imports_with_the_counts_of_its_file(accepted_network: Path) -> None:
    text = accepted_network.read_text()
    sections = section_lines(text)
    model = read_swmm_model(accepted_network)
    network = model.network

    for section, node_kind in NODE_SECTIONS.items():
        expected = len(sections.get(section, []))
        assert sum(n.kind is node_kind for n in network.nodes.values()) == expected, section
    for section, link_kind in LINK_SECTIONS.items():
        expected = len(sections.get(section, []))
        assert sum(link.kind is link_kind for link in network.links.values()) == expected, section
    assert len(model.subcatchments) == len(sections.get("SUBCATCHMENTS", []))
    assert len(model.rain_gauges) == len(sections.get("RAINGAGES", []))
    assert network.kind is Network.DRAINAGE
    assert network.source == accepted_network.read_bytes().decode("utf-8")  # byte for byte, line ends too
    assert network.source_format == "swmm-inp"


def test_pystorms_network_keeps_inverts_lengths_and_sizes_of_its_file(accepted_network: Path) -> None:
    text = accepted_network.read_text()
    sections = section_lines(text)
    factor = length_factor(text)
    network = read_swmm(accepted_network)

    _line, junction = sections["JUNCTIONS"][0]
    assert network.nodes[junction[0]].z_m == pytest.approx(float(junction[1]) * factor)
    _line, conduit = sections["CONDUITS"][0]
    link = network.links[conduit[0]]
    assert link.length_m == pytest.approx(float(conduit[3]) * factor)
    assert link.roughness == pytest.approx(float(conduit[4]))
    xsection = next(fields for _n, fields in sections["XSECTIONS"] if fields[0] == conduit[0])
    assert link.attrs["shape"] == xsection[1].upper()
    assert link.diameter_m == pytest.approx(float(xsection[2]) * factor)
    for _line, fields in sections["JUNCTIONS"]:
        if len(fields) > 2 and float(fields[2]) > 0:
            node = network.nodes[fields[0]]
            assert node.depth_m == pytest.approx(float(fields[2]) * factor)
            assert node.ground_m == pytest.approx(node.z_m + node.depth_m)


def test_junction_without_a_depth_takes_the_top_of_its_highest_link() -> None:
    network = read_swmm(PYSTORMS / "alpha.inp")  # J1 has MaxDepth 0; conduit C1a leaves it 6 ft up, 3 ft high
    node = network.nodes["J1"]
    assert node.attrs["depth_from_links"] is True
    assert node.depth_m == pytest.approx((6 + 3) * 0.3048)


def test_network_without_coordinates_imports_at_the_origin(tmp_path: Path) -> None:
    text = (PYSTORMS / "theta.inp").read_text()
    start = text.index("[COORDINATES]")
    stripped = text[:start] + text[text.index("[VERTICES]") :]
    path = tmp_path / "theta-no-map.inp"
    path.write_text(stripped)

    network = read_swmm(path)

    assert len(network.nodes) == 6
    assert all((n.x_m, n.y_m) == (0.0, 0.0) and n.attrs["no_coordinates"] for n in network.nodes.values())
    check_swmm(path)  # SWMM needs no map either


# --------------------------------------------------------------------------------------------------------------
# Broken files


def break_field(text: str, section: str, name: str, column: int, value: str | None) -> tuple[str, int]:
    """Return *text* with field *column* of *section*'s line for *name* set to *value* (None: cut the line there),
    and that line's number."""
    lines = text.splitlines(keepends=True)
    number, fields = next((n, f) for n, f in section_lines(text)[section] if f[0] == name)
    fields = fields[:column] if value is None else [*fields[:column], value, *fields[column + 1 :]]
    lines[number - 1] = "  ".join(fields) + "\n"
    return "".join(lines), number


BROKEN = [
    # (section, object, column, new value, field the error must name)
    ("JUNCTIONS", "J2", 1, "49x9", "elevation"),
    ("JUNCTIONS", "J2", 2, "4,2", "depth_max"),
    ("CONDUITS", "C2", 2, "NOWHERE", "to_node"),
    ("CONDUITS", "C2", 1, "NOWHERE", "from_node"),
    ("CONDUITS", "C2", 3, "long", "length"),
    ("CONDUITS", "C2", 4, None, "roughness"),
    ("XSECTIONS", "C2", 2, "wide", "height"),
    ("VERTICES", "C2", 2, "north", "y"),
    ("SUBCATCHMENTS", "S2", 1, "NoSuchGauge", "rain_gage"),
    ("SUBCATCHMENTS", "S2", 2, "NoSuchNode", "outlet"),
    ("SUBAREAS", "S2", 1, "n?", "n_imperv"),
    ("POLYGONS", "S1", 1, "west", "x"),
]


@pytest.mark.parametrize(("section", "name", "column", "value", "field"), BROKEN)
def test_broken_file_error_names_file_line_and_field(
    tmp_path: Path, section: str, name: str, column: int, value: str | None, field: str
) -> None:
    broken, line = break_field((PYSTORMS / "alpha.inp").read_text(), section, name, column, value)
    path = tmp_path / "alpha-broken.inp"
    path.write_text(broken)

    with pytest.raises(ModelImportError) as caught:
        read_swmm(path)

    assert (caught.value.path, caught.value.line, caught.value.field) == (str(path), line, field)
    assert f"{path}:{line}" in str(caught.value)


def test_broken_section_header_is_named_with_its_line(tmp_path: Path) -> None:
    text = (PYSTORMS / "alpha.inp").read_text()
    line = text[: text.index("[JUNCTIONS]")].count("\n") + 1
    path = tmp_path / "alpha-header.inp"
    path.write_text(text.replace("[JUNCTIONS]", "[JUNCTIONS", 1))

    with pytest.raises(ModelImportError) as caught:
        read_swmm(path)

    assert (caught.value.line, caught.value.field) == (line, "section")


def test_unknown_section_is_refused(tmp_path: Path) -> None:
    text = (PYSTORMS / "alpha.inp").read_text()
    path = tmp_path / "alpha-typo.inp"
    path.write_text(text.replace("[JUNCTIONS]", "[JUNCTONS]", 1))

    with pytest.raises(ModelImportError, match="unknown section"):
        read_swmm(path)


def test_node_id_used_twice_is_refused_at_its_second_line(tmp_path: Path) -> None:
    text = (PYSTORMS / "alpha.inp").read_text()
    broken, _line = break_field(text, "JUNCTIONS", "J2", 0, "J3")
    path = tmp_path / "alpha-twice.inp"
    path.write_text(broken)
    second = [n for n, f in section_lines(broken)["JUNCTIONS"] if f[0] == "J3"][1]

    with pytest.raises(ModelImportError) as caught:
        read_swmm(path)

    assert (caught.value.line, caught.value.field) == (second, "name")


def test_missing_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.inp"
    with pytest.raises(ModelImportError, match=r"nowhere\.inp") as caught:
        read_swmm(path)
    assert caught.value.line is None
    with pytest.raises(ModelImportError, match=r"nowhere\.inp"):
        run_swmm(path)


def test_model_swmm_rejects_reports_swmms_error_and_line() -> None:
    path = PYSTORMS / "delta.inp"  # Green-Ampt initial deficits above 1 in [INFILTRATION]
    lines = section_lines(path.read_text())["INFILTRATION"]
    with pytest.raises(ModelImportError, match="ERROR 235") as caught:
        run_swmm(path)
    assert caught.value.line in {n for n, _fields in lines}


# --------------------------------------------------------------------------------------------------------------
# Running SWMM


def test_run_reports_continuity_and_the_rain_of_each_gauge() -> None:
    path = PYSTORMS / "theta.inp"  # gauge "1": hourly intensities of series T
    series = [float(f[2]) for _n, f in section_lines(path.read_text())["TIMESERIES"] if f[0] == "T"]

    summary = run_swmm(path)

    assert summary.rainfall_mm == {"1": pytest.approx(sum(series) * 1.0, rel=1e-6)}  # mm/h over 1 h steps
    assert abs(summary.runoff_continuity_error_pct) < 1.0
    assert abs(summary.flow_routing_continuity_error_pct) < 1.0
    assert set(summary.max_depth_m) == set(read_swmm(path).nodes)
    assert summary.steps > 0 and summary.flooded_nodes == ()


def test_run_converts_us_units_to_si() -> None:
    path = PYSTORMS / "alpha.inp"  # CFS: depths in ft, rain in inches
    summary = run_swmm(path)
    network = read_swmm(path)
    assert summary.flow_units == "CFS"
    for node_id, depth in summary.max_depth_m.items():
        node = network.nodes[node_id]
        if node.kind is NodeKind.JUNCTION:
            assert depth <= node.depth_m + 0.01  # a flooded junction is full to its rim, no higher
    assert 20.0 < summary.rainfall_mm["RainGage"] < 30.0  # the 2-year storm: about an inch


def test_run_finds_files_named_next_to_the_model(tmp_path: Path) -> None:
    text = (PYSTORMS / "theta.inp").read_text()
    text = text.replace("TIMESERIES T", 'FILE "rain.dat" STA1 MM', 1)
    values = [0.0, 1.2, 2.3, 3.2, 3.1, 3.1, 2.1, 1.1, 0.1, 0.0]
    rain = "".join(f"STA1 2018 2 25 {hour} 0 {value}\n" for hour, value in enumerate(values))
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "rain.dat").write_text(rain)
    (folder / "theta-file.inp").write_text(text)

    from_file = run_swmm(folder / "theta-file.inp")
    from_text = run_swmm(text, base_dir=folder)

    assert from_file.rainfall_mm["1"] == pytest.approx(sum(values))
    assert from_text.rainfall_mm == from_file.rainfall_mm
    assert sorted(p.name for p in folder.iterdir()) == ["rain.dat", "theta-file.inp"]  # nothing left behind


def test_run_that_swmm_cannot_finish_raises_and_leaves_the_engine_usable(tmp_path: Path) -> None:
    text = (PYSTORMS / "theta.inp").read_text().replace("TIMESERIES T", 'FILE "missing.dat" STA1 MM', 1)
    path = tmp_path / "theta-no-rain-file.inp"
    path.write_text(text)
    check_swmm(path)  # the input itself is valid

    with pytest.raises(SimulationError, match="ERROR 317"):
        run_swmm(path)

    assert run_swmm(PYSTORMS / "theta.inp").steps > 0


def test_runs_from_several_threads_wait_for_each_other() -> None:
    path = PYSTORMS / "theta.inp"
    results: list[SwmmSummary] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(run_swmm(path))
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == [] and len(results) == 3
    assert len({r.max_depth_m["O"] for r in results}) == 1


def test_report_is_kept_where_asked(tmp_path: Path) -> None:
    report = tmp_path / "out" / "theta.rpt"
    run_swmm(PYSTORMS / "theta.inp", report_path=report)
    assert "Flow Routing Continuity" in report.read_text()


def test_writer_refuses_us_units() -> None:
    network = PipeNetwork(kind=Network.DRAINAGE, name="empty")
    with pytest.raises(ValueError, match="SI"):
        write_swmm(network, [], [], options={"FLOW_UNITS": "CFS"}, timeseries={})


# --------------------------------------------------------------------------------------------------------------
# The demo city's drainage


@pytest.fixture(scope="module")
def layout() -> Layout:
    return build_layout()


@pytest.fixture(scope="module")
def demo(layout: Layout) -> Demo:
    return build_drainage(layout)


@pytest.fixture(scope="module")
def demo_read_back(demo: Demo, tmp_path_factory: pytest.TempPathFactory) -> SwmmModel:
    """The demo's ``.inp`` text read back: what SWMM is given."""
    path = tmp_path_factory.mktemp("demo") / "democity-drainage.inp"
    path.write_text(demo[2], encoding="utf-8")
    return read_swmm_model(path)


@pytest.fixture(scope="module")
def heavy_storm_run(demo: Demo) -> SwmmSummary:
    return run_swmm(demo[2])


def test_demo_has_manholes_along_every_street(demo: Demo, layout: Layout) -> None:
    network = demo[0]
    assert len(network.nodes) >= 300
    for a, b in layout.street_graph.edges:
        assert f"MH{a}" in network.nodes and f"MH{b}" in network.nodes
    manholes = [n for n in network.nodes.values() if n.node_id.startswith("MH") and n.kind is NodeKind.JUNCTION]
    for node in manholes:
        assert node.ground_m == pytest.approx(layout.ground(node.x_m, node.y_m), abs=0.01)
    along_streets = [
        link.length_m
        for link in network.links.values()
        if link.kind is LinkKind.CONDUIT and network.nodes[link.to_id].kind is not NodeKind.OUTFALL
    ]
    assert min(along_streets) >= 38.0 and max(along_streets) <= 64.0  # every 40–60 m, streets are not straight


def test_demo_read_back_is_the_network_built(
    demo: Demo,
    demo_read_back: SwmmModel,
) -> None:
    built, read = demo[0], demo_read_back.network
    assert set(read.nodes) == set(built.nodes) and set(read.links) == set(built.links)
    for node_id, node in built.nodes.items():
        assert read.nodes[node_id].z_m == pytest.approx(node.z_m, abs=1e-3)
        assert read.nodes[node_id].kind is node.kind
    for link_id, link in built.links.items():
        assert read.links[link_id].diameter_m == pytest.approx(link.diameter_m)
    assert len(demo_read_back.subcatchments) == len(demo[1])


def test_demo_conduits_fall_towards_the_outfalls(demo_read_back: SwmmModel) -> None:
    network = demo_read_back.network
    for link in network.links.values():
        if link.kind is not LinkKind.CONDUIT:
            continue
        up, down = network.endpoints(link)
        invert_up = up.z_m + link.attrs["in_offset_m"]
        invert_down = down.z_m + link.attrs["out_offset_m"]
        assert invert_down < invert_up, link.link_id
        assert link.roughness == 0.013


def test_demo_pipes_never_shrink_downstream(demo_read_back: SwmmModel) -> None:
    network = demo_read_back.network
    leaving: dict[str, list[float]] = {}
    for link in network.links.values():
        if link.kind is LinkKind.CONDUIT:
            leaving.setdefault(link.from_id, []).append(link.diameter_m)
    for link in network.links.values():
        if link.kind is LinkKind.CONDUIT:
            assert all(d >= link.diameter_m for d in leaving.get(link.to_id, [])), link.link_id


def test_demo_every_node_reaches_an_outfall_above_the_river(demo: Demo) -> None:
    network = demo[0]
    graph = nx.DiGraph([(link.from_id, link.to_id) for link in network.links.values()])
    outfalls = {n.node_id for n in network.nodes.values() if n.kind is NodeKind.OUTFALL}
    assert len(outfalls) >= 3
    for node_id in network.nodes:
        assert node_id in outfalls or nx.descendants(graph, node_id) & outfalls, node_id
    assert all(network.nodes[o].z_m > RIVER_LEVEL_M for o in outfalls)
    assert max(n.depth_m for n in network.nodes.values()) <= MAX_DEPTH_M


def test_demo_subcatchments_cover_the_blocks(demo: Demo, layout: Layout) -> None:
    network, subcatchments, _text = demo
    blocks = [s for s in subcatchments if len(s.subcatchment_id) == 5]  # S{i:02d}{j:02d}
    streets = layout.street_graph.nodes(data=True)
    n_i = 1 + max(d["i"] for _n, d in streets)
    assert len(blocks) == (n_i - 1) ** 2
    assert all(55.0 <= s.imperv_pct <= 90.0 for s in blocks)
    assert all(s.outlet in network.nodes and s.polygon for s in subcatchments)
    width = max(d["x"] for _n, d in streets) - min(d["x"] for _n, d in streets)
    height = max(d["y"] for _n, d in streets) - min(d["y"] for _n, d in streets)
    assert sum(s.area_ha for s in subcatchments) == pytest.approx(width * height / 1e4, rel=0.05)


def test_demo_is_the_same_for_the_same_layout(demo: Demo) -> None:
    assert build_drainage(build_layout())[2] == demo[2]


def test_demo_runs_in_swmm_with_small_continuity_errors(heavy_storm_run: SwmmSummary, demo: Demo) -> None:
    storm = chicago_storm_mm_h()
    assert abs(heavy_storm_run.runoff_continuity_error_pct) < 5.0
    assert abs(heavy_storm_run.flow_routing_continuity_error_pct) < 5.0
    assert heavy_storm_run.rainfall_mm == {
        "RG-N": pytest.approx(sum(storm) / 60.0, rel=1e-3),
        "RG-S": pytest.approx(sum(storm) / 60.0, rel=1e-3),
    }
    assert set(heavy_storm_run.max_depth_m) == set(demo[0].nodes)


def test_heavy_storm_floods_low_points_and_spares_most_of_the_network(
    heavy_storm_run: SwmmSummary,
    demo: Demo,
    layout: Layout,
) -> None:
    network = demo[0]
    at_low_point = {n.attrs["low_point"]: n.node_id for n in network.nodes.values() if "low_point" in n.attrs}
    assert set(at_low_point) == set(layout.low_points)
    flooded_low_points = [lp for lp, node_id in at_low_point.items() if heavy_storm_run.flood_volume_m3[node_id] > 0]
    assert flooded_low_points
    # A 50-year storm on a 5-year network: the low points flood, and at most a quarter of the manholes.
    assert len(heavy_storm_run.flooded_nodes) < 0.25 * len(network.nodes)


def test_a_storm_lighter_than_the_design_storm_barely_surcharges(demo: Demo, heavy_storm_run: SwmmSummary) -> None:
    # A 2-year storm in one-minute steps peaks above the 5-year design intensity for a few minutes; gullies may
    # surcharge a little then, but the network carries it: a few m³ in all, against hundreds in the 50-year storm.
    _network, _subcatchments, text = build_drainage(build_layout(), storm_mm_h=chicago_storm_mm_h(return_period_yr=2))
    summary = run_swmm(text)
    assert summary.total_flood_volume_m3 < 5.0
    assert summary.total_flood_volume_m3 < 0.01 * heavy_storm_run.total_flood_volume_m3


# --------------------------------------------------------------------------------------------------------------
# The design storm


def test_chicago_storm_holds_the_formulas_depth_and_peaks_at_the_ratio() -> None:
    storm = chicago_storm_mm_h(return_period_yr=50, duration_min=120, peak_ratio=0.4)
    assert len(storm) == 120
    depth_mm = storm_intensity_l_s_ha(50, 120) / (1e4 / 60.0) * 120
    assert sum(storm) / 60.0 == pytest.approx(depth_mm, rel=1e-9)
    assert abs(storm.index(max(storm)) - 48) <= 1
    heaviest_10_min = max(sum(storm[k : k + 10]) / 60.0 for k in range(len(storm) - 9))
    assert heaviest_10_min == pytest.approx(storm_intensity_l_s_ha(50, 10) / (1e4 / 60.0) * 10, rel=0.02)


def test_rarer_storms_rain_harder() -> None:
    assert storm_intensity_l_s_ha(2, 30.0) < storm_intensity_l_s_ha(3, 30.0) < storm_intensity_l_s_ha(50, 30.0)
    assert math.isclose(storm_intensity_l_s_ha(1, 30.0), FORMULAS[DEFAULT_FORMULA].intensity_mm_min(1, 30.0) * 1e4 / 60)
