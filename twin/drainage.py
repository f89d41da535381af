"""SWMM 5 drainage models: import any ``.inp`` into the twin's asset model, run it, write one.

:func:`read_swmm_model` reads a SWMM 5 input file with ``swmm_api``'s reader and returns the pipe network
(:class:`~twin.model.PipeNetwork`, kind drainage), the subcatchments and the rain gauges; :func:`read_swmm` returns
the network alone. :func:`run_swmm` runs a model in the SWMM engine (``pyswmm``) to the end and returns a
:class:`SwmmSummary`; :func:`check_swmm` only lets SWMM parse and validate it. :func:`write_swmm` turns a network,
its subcatchments and rain gauges back into ``.inp`` text with ``swmm_api``'s writer.

Units: the twin's values are SI whatever the file uses. Files in US flow units (CFS, GPM, MGD) are converted on
import: elevations, depths, lengths and geom1 from feet to metres, areas from acres to hectares and from ft² to m²,
and map coordinates from feet to metres where ``[MAP]`` says ``Units Feet``. Values kept only as engine detail in
``attrs`` (``geom``, storage curves and coefficients, infiltration parameters) stay as written in the file;
``attrs["length_unit"]`` says which unit that is.

SWMM runs one simulation per process at a time: :func:`run_swmm` and :func:`check_swmm` hold a process-wide lock,
so calls from several threads run one after another. Run models in parallel in separate processes.

Example:
    >>> from pathlib import Path
    >>> import pystorms
    >>> inp = Path(pystorms.__file__).parent / "networks" / "theta.inp"
    >>> network = read_swmm(inp)
    >>> sorted(network.nodes)[:3]
    ['O', 'P1', 'P1J']
    >>> summary = run_swmm(inp)
    >>> abs(summary.flow_routing_continuity_error_pct) < 1.0
    True
"""

from __future__ import annotations

import inspect
import logging
import math
import re
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyswmm import Links, Nodes, Simulation, Subcatchments
from swmm.toolkit import solver
from swmm_api import SwmmInput
from swmm_api.input_file.section_types import SECTION_TYPES
from swmm_api.input_file.sections import (
    Conduit,
    Coordinate,
    CrossSection,
    Curve,
    InfiltrationCurveNumber,
    InfiltrationGreenAmpt,
    InfiltrationHorton,
    Junction,
    Orifice,
    Outfall,
    Polygon,
    Pump,
    RainGage,
    Storage,
    SubArea,
    SubCatchment,
    Symbol,
    TimeseriesData,
    Vertices,
)
from swmm_api.input_file.sections.generic_section import MapSection, OptionSection, ReportSection, TitleSection

from twin.errors import ModelImportError, SimulationError
from twin.model import Link, LinkKind, Node, NodeKind, PipeNetwork
from twin.sensors import Network

logger = logging.getLogger(__name__)

SOURCE_FORMAT = "swmm-inp"

FT_M = 0.3048
ACRE_HA = 0.40468564224
IN_MM = 25.4
# Flow units to m³/s.
FLOW_M3_S = {
    "CMS": 1.0,
    "LPS": 0.001,
    "MLD": 1000.0 / 86400.0,
    "CFS": FT_M**3,
    "GPM": 3.785411784e-3 / 60.0,
    "MGD": 3785.411784 / 86400.0,
}
US_FLOW_UNITS = frozenset({"CFS", "GPM", "MGD"})

_NODE_SECTIONS = {
    "JUNCTIONS": NodeKind.JUNCTION,
    "OUTFALLS": NodeKind.OUTFALL,
    "STORAGE": NodeKind.STORAGE,
    "DIVIDERS": NodeKind.DIVIDER,
}
_LINK_SECTIONS = {
    "CONDUITS": LinkKind.CONDUIT,
    "PUMPS": LinkKind.PUMP,
    "ORIFICES": LinkKind.ORIFICE,
    "WEIRS": LinkKind.WEIR,
    "OUTLETS": LinkKind.OUTLET,
}
# SWMM's own section names plus the map sections the SWMM GUI writes.
_KNOWN_SECTIONS = frozenset(SECTION_TYPES) | {"PROFILES", "EVENTS"}
# Sections whose objects span several lines: each line holds ``name x y``.
_POINT_LIST_SECTIONS = frozenset({"VERTICES", "POLYGONS"})
SECTION_HEADER = re.compile(r"^\s*\[([^\]]*)\]\s*(;.*)?$")
INP_TOKEN = re.compile(r'(?:"[^"]*"|\S)+')
_BAD_NUMBER = re.compile(
    r"could not convert string to float: '([^']*)'" r"|invalid literal for int\(\) with base 10: '([^']*)'"
)
_MISSING_ARG = re.compile(r"missing \d+ required positional arguments?: '(\w+)'")
_SWMM_ERROR = re.compile(r"ERROR (\d+):(.*?)(?: at line (\d+) of \[(\w+)\] section)?:?\s*$")

SWMM_LOCK = threading.Lock()


@dataclass(frozen=True, slots=True)
class Subcatchment:
    """A SWMM subcatchment: a piece of land whose rain runs off to one node (or another subcatchment).

    Attributes:
        subcatchment_id: id, unique within its model.
        rain_gauge: id of the rain gauge that rains on it.
        outlet: id of the node (or subcatchment) its runoff goes to.
        area_ha: area, hectares.
        imperv_pct: impervious share of the area, percent.
        width_m: characteristic width of the overland flow path, metres.
        slope_pct: average surface slope, percent.
        curb_length_m: total curb length, metres (0 where unused).
        polygon: outline, points in the city CRS, metres (empty where the file has none).
        attrs: engine detail, JSON-ready: ``subarea`` (Manning's n and depression storage of the impervious and
            pervious parts, ``pct_zero``, ``route_to``, ``pct_routed``) and ``infiltration`` (the parameters of
            the model's infiltration method, as written in the file).
    """

    subcatchment_id: str
    rain_gauge: str
    outlet: str
    area_ha: float
    imperv_pct: float
    width_m: float
    slope_pct: float
    curb_length_m: float = 0.0
    polygon: tuple[tuple[float, float], ...] = ()
    attrs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RainGauge:
    """A SWMM rain gauge: where a subcatchment's rain comes from.

    Attributes:
        gauge_id: id, unique within its model.
        x_m, y_m: position on the map, metres (0, 0 where the file has no ``[SYMBOLS]`` entry).
        rain_format: ``INTENSITY`` (mm/h or in/h), ``VOLUME`` (mm or in per interval) or ``CUMULATIVE``.
        interval_min: recording interval, minutes.
        source: ``TIMESERIES`` or ``FILE``.
        series: the time series' name (``TIMESERIES``) or the rain file's name (``FILE``).
        station: the station id inside a rain file ("" for a time series).
        rain_units: the rain file's depth units, ``MM`` or ``IN`` ("" for a time series, which uses the model's).
        snow_catch_factor: SWMM's snow catch deficiency correction (1.0 = none).
    """

    gauge_id: str
    x_m: float
    y_m: float
    rain_format: str
    interval_min: float
    source: str
    series: str
    station: str = ""
    rain_units: str = ""
    snow_catch_factor: float = 1.0


@dataclass(frozen=True, slots=True)
class SwmmModel:
    """A SWMM model as the twin holds it.

    Attributes:
        network: nodes and links (``source`` is the original ``.inp`` text, ``source_format`` ``swmm-inp``).
        subcatchments: by id.
        rain_gauges: by id.
        flow_units: the file's ``FLOW_UNITS`` (``CMS``, ``LPS``, ``MLD``, ``CFS``, ``GPM`` or ``MGD``).
    """

    network: PipeNetwork
    subcatchments: dict[str, Subcatchment]
    rain_gauges: dict[str, RainGauge]
    flow_units: str


@dataclass(frozen=True, slots=True)
class SwmmSummary:
    """The outcome of one SWMM run, in SI units whatever the model's flow units.

    Attributes:
        name: the input file's name.
        flow_units: the model's ``FLOW_UNITS``.
        runoff_continuity_error_pct: SWMM's runoff quantity continuity error, percent.
        flow_routing_continuity_error_pct: SWMM's flow routing continuity error, percent.
        rainfall_mm: total rain depth per rain gauge, mm, for the gauges that rain on at least one subcatchment.
        max_depth_m: by node id, the highest water depth above the invert, m.
        flood_volume_m3: by node id, the volume that left the system at the node (or ponded over it), m³.
        flooded_nodes: the nodes with a flood volume above zero, most flooded first.
        peak_flow_m3_s: by conduit id, the largest flow, m³/s (negative where it ran backwards).
        steps: routing steps taken.
        wall_time_s: time the run took, seconds.
    """

    name: str
    flow_units: str
    runoff_continuity_error_pct: float
    flow_routing_continuity_error_pct: float
    rainfall_mm: Mapping[str, float]
    max_depth_m: Mapping[str, float]
    flood_volume_m3: Mapping[str, float]
    flooded_nodes: tuple[str, ...]
    peak_flow_m3_s: Mapping[str, float]
    steps: int
    wall_time_s: float

    @property
    def total_flood_volume_m3(self) -> float:
        """Flood volume of all nodes together, m³."""
        return float(sum(self.flood_volume_m3.values()))


# --------------------------------------------------------------------------------------------------------------
# Reading


@dataclass(slots=True)
class _Line:
    number: int  # 1-based line number in the file
    tokens: list[str]


@dataclass(slots=True)
class _SourceIndex:
    """Where each section and each object of an ``.inp`` text is: line numbers for error messages."""

    path: str
    headers: dict[str, int] = field(default_factory=dict)
    lines: dict[str, list[_Line]] = field(default_factory=dict)
    first_line: dict[tuple[str, str], int] = field(default_factory=dict)

    @classmethod
    def build(cls, path: str, text: str) -> _SourceIndex:
        index = cls(path)
        section: str | None = None
        for number, raw in enumerate(text.splitlines(), start=1):
            stripped = raw.strip()
            if stripped.startswith("["):
                match = SECTION_HEADER.match(raw)
                name = match.group(1).strip().upper() if match else ""
                if not match or name not in _KNOWN_SECTIONS:
                    detail = f"broken section header {stripped!r}" if not match else f"unknown section [{name}]"
                    raise ModelImportError(path, detail, line=number, field="section")
                section = name
                index.headers.setdefault(name, number)
                index.lines.setdefault(name, [])
                continue
            data = stripped.split(";", 1)[0].strip()
            if not data or section is None:
                continue
            tokens = [t.strip('"') for t in INP_TOKEN.findall(data)]
            index.lines[section].append(_Line(number, tokens))
            index.first_line.setdefault((section, tokens[0]), number)
        return index

    def line_of(self, section: str, name: str) -> int | None:
        return self.first_line.get((section, name))

    def error(self, section: str, name: str, detail: str, field_name: str | None = None) -> ModelImportError:
        return ModelImportError(
            self.path, f"[{section}] {name}: {detail}", line=self.line_of(section, name), field=field_name
        )


def _decode(raw: bytes) -> str:
    """Decode an ``.inp`` file: UTF-8, else GB 18030 (Chinese SWMM files), else Latin-1."""
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    return raw.decode("latin-1")


def _parameter_names(cls: Any) -> list[str]:
    """The positional parameters of a ``swmm_api`` object's constructor, in file column order."""
    names = []
    for parameter in list(inspect.signature(cls.__init__).parameters.values())[1:]:
        if parameter.kind is not inspect.Parameter.POSITIONAL_OR_KEYWORD:
            break
        names.append(parameter.name)
    return names


def _diagnose_line(cls: Any, line: _Line, section: str) -> tuple[str, str | None] | None:
    """Return (detail, field) if ``swmm_api`` cannot read *line* of *section*, else None."""
    if section in _POINT_LIST_SECTIONS:
        if len(line.tokens) < 3:
            return "expected name, x and y", "y" if len(line.tokens) == 2 else "x"
        for position, name in ((1, "x"), (2, "y")):
            try:
                float(line.tokens[position])
            except ValueError:
                return f"not a number: {line.tokens[position]!r}", name
        return None
    try:
        cls.from_inp_line(*line.tokens)
    except Exception as exc:  # swmm_api raises TypeError, ValueError and others for a bad line
        message = str(exc).split("\n", 1)[0]
        names = _parameter_names(cls)
        bad = _BAD_NUMBER.search(message)
        if bad:
            token = bad.group(1) if bad.group(1) is not None else bad.group(2)
            position = line.tokens.index(token) if token in line.tokens else -1
            field_name = (
                names[position] if 0 <= position < len(names) else (f"column {position + 1}" if position >= 0 else None)
            )
            return f"not a number: {token!r}", field_name
        missing = _MISSING_ARG.search(message)
        if missing:
            return "missing value", missing.group(1)
        return message.split(" | ", 1)[0], None
    return None


def _section(inp: Any, index: _SourceIndex, label: str) -> Any:
    """Return *label*'s section converted by ``swmm_api``; an empty dict if the file lacks it.

    Raises:
        ModelImportError: a line of the section cannot be read (names the line and, where known, the field).
    """
    if label not in inp:
        return {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return inp[label]
    except Exception as exc:  # locate the line: swmm_api's message has no line number
        cls = inp._converter.get(label)
        for line in index.lines.get(label, []):
            found = _diagnose_line(cls, line, label) if isinstance(cls, type) else None
            if found is not None:
                detail, field_name = found
                raise ModelImportError(
                    index.path, f"[{label}] {line.tokens[0]}: {detail}", line=line.number, field=field_name
                ) from exc
        raise ModelImportError(
            index.path, f"[{label}]: {str(exc).splitlines()[0]}", line=index.headers.get(label)
        ) from exc


def _num(value: Any, default: float = 0.0) -> float:
    """A float from a ``swmm_api`` value; *default* for unset values (NaN, ``*``, empty)."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return default if math.isnan(value) else float(value)
    try:
        result = float(value)
    except (TypeError, ValueError):
        return default
    return default if math.isnan(result) else result


def _text(value: Any) -> str:
    """A string from a ``swmm_api`` value; "" for unset values."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def _json_ready(value: Any) -> Any:
    """*value* with NaN as None and tuples as lists, so ``attrs`` survive a JSON round trip."""
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, bool | int | str) or value is None:
        return value
    return str(value)


def read_swmm(path: Path) -> PipeNetwork:
    """Import the pipe network of a SWMM 5 ``.inp`` file; see :func:`read_swmm_model` for the details.

    Args:
        path: the ``.inp`` file.

    Raises:
        ModelImportError: the file is missing or cannot be read; names the file, the line and the field.

    Example:
        >>> network = read_swmm(Path("city.inp"))  # doctest: +SKIP
        >>> network.nodes["J1"].z_m  # doctest: +SKIP
        39.4
    """
    return read_swmm_model(path).network


def read_subcatchments(path: Path) -> list[Subcatchment]:
    """Return the subcatchments of a SWMM 5 ``.inp`` file, in file order (see :func:`read_swmm_model`)."""
    return list(read_swmm_model(path).subcatchments.values())


def read_swmm_model(path: Path) -> SwmmModel:
    """Import a SWMM 5 ``.inp`` file: network, subcatchments and rain gauges.

    Nodes: junctions (:attr:`NodeKind.JUNCTION`), outfalls, storage units and flow dividers, with ``x_m``/``y_m``
    from ``[COORDINATES]``, ``z_m`` the invert, ``depth_m`` the maximum depth and ``ground_m`` = invert + maximum
    depth. Where the file gives a maximum depth of 0, SWMM uses the top of the highest connecting link; so does
    this (``attrs["depth_from_links"]``). A node missing from ``[COORDINATES]`` (or a file without coordinates)
    is placed at (0, 0) with ``attrs["no_coordinates"] = True``; nothing is laid out.

    Links: conduits (``diameter_m`` = geom1, the full height; length; Manning's n; offsets in ``attrs`` as depths
    above the node inverts, m), pumps, orifices, weirs and outlets, with interior points from ``[VERTICES]``.
    Sections this import does not map (controls, pollutants, LIDs, inflows…) stay in ``network.source``, the
    original text, so the model can be run again exactly as imported.

    Args:
        path: the ``.inp`` file.

    Raises:
        ModelImportError: the file is missing; a section header is broken or unknown; a line has a value that is
            not a number or lacks one; a link names a node, a subcatchment a rain gauge or an outlet, or a
            cross-section a link that does not exist; an id is used twice. The error names the file and, where
            it can be found, the line and the field.
    """
    path = Path(path)
    name = str(path)
    try:
        text = _decode(path.read_bytes())
    except OSError as exc:
        raise ModelImportError(name, f"cannot read the file: {exc.strerror or exc}") from exc
    index = _SourceIndex.build(name, text)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            inp = SwmmInput.read_text(text, custom_converter=_CONVERTERS)
    except Exception as exc:  # swmm_api's reader fails in its own ways; sections are read one by one below
        raise ModelImportError(name, f"cannot split the file into sections: {exc}") from exc
    return _Reader(inp, index, text, path.stem).model()


def _options(section_text: str) -> dict[str, str]:
    """``[OPTIONS]`` as keyword → value text.

    ``swmm_api`` types every option and rejects some values SWMM accepts (``END_TIME 24:00:00``); the import only
    needs a few keywords, as text.
    """
    options: dict[str, str] = {}
    for raw in section_text.splitlines():
        data = raw.split(";", 1)[0].split()
        if data:
            options[data[0].upper()] = " ".join(data[1:])
    return options


_CONVERTERS: dict[str, Callable[[str], dict[str, str]]] = {"OPTIONS": _options}


class _Reader:
    """Turns ``swmm_api`` sections into the twin's values (one use)."""

    def __init__(self, inp: Any, index: _SourceIndex, text: str, name: str) -> None:
        self.inp = inp
        self.index = index
        self.text = text
        self.name = name
        options = _section(inp, index, "OPTIONS")
        self.flow_units = str(options.get("FLOW_UNITS", "CFS")).upper() if options else "CFS"
        if self.flow_units not in FLOW_M3_S:
            raise ModelImportError(
                index.path,
                f"unknown FLOW_UNITS {self.flow_units!r}",
                line=index.headers.get("OPTIONS"),
                field="FLOW_UNITS",
            )
        self.offsets_are_elevations = bool(options) and str(options.get("LINK_OFFSETS", "DEPTH")).upper() == "ELEVATION"
        us = self.flow_units in US_FLOW_UNITS
        self.length = FT_M if us else 1.0
        self.area_ha = ACRE_HA if us else 1.0
        map_section = _section(inp, index, "MAP")
        map_units = str(map_section.get("UNITS", "")).upper() if map_section else ""
        self.map_length = FT_M if map_units == "FEET" else 1.0
        self.length_unit = "ft" if us else "m"

    def model(self) -> SwmmModel:
        coordinates = {c.node: (c.x * self.map_length, c.y * self.map_length) for c in self._objects("COORDINATES")}
        xsections = self._xsections()
        raw_nodes = self._raw_nodes()
        links = self._links(raw_nodes, xsections)
        nodes = self._nodes(raw_nodes, links, coordinates)
        network = PipeNetwork(
            kind=Network.DRAINAGE,
            name=self.name,
            nodes=nodes,
            links=links,
            source=self.text,
            source_format=SOURCE_FORMAT,
        )
        gauges = self._rain_gauges()
        subcatchments = self._subcatchments(nodes, gauges)
        return SwmmModel(network=network, subcatchments=subcatchments, rain_gauges=gauges, flow_units=self.flow_units)

    def _objects(self, label: str) -> list[Any]:
        section = _section(self.inp, self.index, label)
        return list(section.values()) if section else []

    def _raw_nodes(self) -> dict[str, tuple[NodeKind, Any]]:
        raw: dict[str, tuple[NodeKind, Any]] = {}
        for label, kind in _NODE_SECTIONS.items():
            seen: set[str] = set()
            for line in self.index.lines.get(label, []):
                node_id = line.tokens[0]
                if node_id in seen or node_id in raw:
                    raise ModelImportError(
                        self.index.path, f"[{label}] node id {node_id!r} is used twice", line=line.number, field="name"
                    )
                seen.add(node_id)
            for obj in self._objects(label):
                raw[obj.name] = (kind, obj)
        return raw

    def _xsections(self) -> dict[str, Any]:
        return {x.link: x for x in self._objects("XSECTIONS")}

    def _links(self, raw_nodes: Mapping[str, tuple[NodeKind, Any]], xsections: Mapping[str, Any]) -> dict[str, Link]:
        vertices = {v.link: v.vertices for v in self._objects("VERTICES")}
        links: dict[str, Link] = {}
        sections: dict[str, str] = {}
        for label, kind in _LINK_SECTIONS.items():
            for line in self.index.lines.get(label, []):
                if line.tokens[0] in sections:
                    raise ModelImportError(
                        self.index.path,
                        f"[{label}] link id {line.tokens[0]!r} is used twice",
                        line=line.number,
                        field="name",
                    )
                sections[line.tokens[0]] = label
            for obj in self._objects(label):
                for end in ("from_node", "to_node"):
                    node_id = getattr(obj, end)
                    if node_id not in raw_nodes:
                        raise self.index.error(label, obj.name, f"node {node_id!r} does not exist", end)
                links[obj.name] = self._link(kind, obj, raw_nodes, xsections.get(obj.name), vertices.get(obj.name, []))
        for line in self.index.lines.get("XSECTIONS", []):
            if line.tokens[0] not in links:
                raise ModelImportError(
                    self.index.path,
                    f"[XSECTIONS] {line.tokens[0]}: link {line.tokens[0]!r} does not exist",
                    line=line.number,
                    field="link",
                )
        return links

    def _offset(self, value: Any, node: tuple[NodeKind, Any] | None) -> float:
        """An offset as a depth above the node invert, m.

        With ``LINK_OFFSETS ELEVATION`` the file gives elevations; like SWMM, one below the node's invert (or
        ``*``) counts as 0.
        """
        offset = _num(value)
        if self.offsets_are_elevations and node is not None:
            offset = max(0.0, offset - float(node[1].elevation)) if isinstance(value, int | float) else 0.0
        return offset * self.length

    def _link(
        self,
        kind: LinkKind,
        obj: Any,
        raw_nodes: Mapping[str, tuple[NodeKind, Any]],
        xsection: Any,
        vertices: Sequence[tuple[float, float]],
    ) -> Link:
        attrs: dict[str, Any] = {"length_unit": self.length_unit}
        height_m = 0.0
        if xsection is not None:
            height_m = _num(xsection.height) * self.length
            attrs["shape"] = str(xsection.shape)
            attrs["geom"] = _json_ready(
                [
                    _num(xsection.height),
                    _num(xsection.parameter_2),
                    _num(xsection.parameter_3),
                    _num(xsection.parameter_4),
                ]
            )
            attrs["barrels"] = int(xsection.n_barrels)
            for key, value in (("transect", xsection.transect), ("shape_curve", xsection.curve_name)):
                if _text(value):
                    attrs[key] = _text(value)
        length_m = 0.0
        roughness = 0.0
        source, target = raw_nodes.get(obj.from_node), raw_nodes.get(obj.to_node)
        if kind is LinkKind.CONDUIT:
            length_m = _num(obj.length) * self.length
            roughness = _num(obj.roughness)
            attrs["in_offset_m"] = self._offset(obj.offset_upstream, source)
            attrs["out_offset_m"] = self._offset(obj.offset_downstream, target)
            if not math.isnan(_num(obj.flow_max, math.nan)):
                attrs["max_flow"] = _num(obj.flow_max)
        elif kind is LinkKind.PUMP:
            attrs.update(
                curve=_text(obj.curve_name),
                status=_text(obj.status),
                startup_depth_m=_num(obj.depth_on) * self.length,
                shutoff_depth_m=_num(obj.depth_off) * self.length,
            )
        elif kind is LinkKind.ORIFICE:
            attrs.update(
                orientation=_text(obj.orientation),
                in_offset_m=self._offset(obj.offset, source),
                discharge_coefficient=_num(obj.discharge_coefficient),
                flap_gate=bool(obj.has_flap_gate),
            )
        elif kind is LinkKind.WEIR:
            attrs.update(
                weir_type=_text(obj.form),
                in_offset_m=self._offset(obj.height_crest, source),
                discharge_coefficient=_num(obj.discharge_coefficient),
                flap_gate=bool(obj.has_flap_gate),
            )
        elif kind is LinkKind.OUTLET:
            attrs.update(
                in_offset_m=self._offset(obj.offset, source),
                rating=_text(obj.curve_type),
                rating_curve=_json_ready(obj.curve_description),
                flap_gate=bool(obj.has_flap_gate),
            )
        return Link(
            link_id=obj.name,
            kind=kind,
            from_id=obj.from_node,
            to_id=obj.to_node,
            diameter_m=height_m,
            length_m=length_m,
            roughness=roughness,
            vertices=tuple((float(x) * self.map_length, float(y) * self.map_length) for x, y in vertices),
            attrs=attrs,
        )

    def _nodes(
        self,
        raw_nodes: Mapping[str, tuple[NodeKind, Any]],
        links: Mapping[str, Link],
        coordinates: Mapping[str, tuple[float, float]],
    ) -> dict[str, Node]:
        # Top of the highest connecting link above each node's invert, m: SWMM's depth for nodes given depth 0.
        link_top: dict[str, float] = {}
        for link in links.values():
            if link.kind is LinkKind.PUMP or link.kind is LinkKind.OUTLET:
                continue
            for node_id, offset_key in ((link.from_id, "in_offset_m"), (link.to_id, "out_offset_m")):
                top = float(link.attrs.get(offset_key, 0.0)) + link.diameter_m
                link_top[node_id] = max(link_top.get(node_id, 0.0), top)
        nodes: dict[str, Node] = {}
        for node_id, (kind, obj) in raw_nodes.items():
            attrs: dict[str, Any] = {}
            depth_m = _num(getattr(obj, "depth_max", 0.0)) * self.length
            if kind is NodeKind.JUNCTION:
                attrs.update(
                    surcharge_depth_m=_num(obj.depth_surcharge) * self.length,
                    ponded_area_m2=_num(obj.area_ponded) * self.length**2,
                    initial_depth_m=_num(obj.depth_init) * self.length,
                )
            elif kind is NodeKind.OUTFALL:
                attrs.update(outfall_type=_text(obj.kind), flap_gate=bool(obj.has_flap_gate))
                if str(obj.kind).upper() == "FIXED":
                    attrs["stage_m"] = _num(obj.data) * self.length
                elif _text(obj.data):
                    attrs["stage_series"] = _text(obj.data)
                if _text(obj.route_to):
                    attrs["route_to"] = _text(obj.route_to)
            elif kind is NodeKind.STORAGE:
                attrs.update(
                    storage_shape=_text(obj.kind),
                    storage_data=_json_ready(obj.data),
                    initial_depth_m=_num(obj.depth_init) * self.length,
                    surcharge_depth_m=_num(obj.depth_surcharge) * self.length,
                    length_unit=self.length_unit,
                )
            elif kind is NodeKind.DIVIDER:
                attrs.update(
                    divider_type=_text(obj.kind),
                    diverted_link=_text(obj.link),
                    divider_data=_json_ready(obj.data),
                    surcharge_depth_m=_num(obj.depth_surcharge) * self.length,
                    ponded_area_m2=_num(obj.area_ponded) * self.length**2,
                )
            if depth_m <= 0.0 and kind is not NodeKind.STORAGE:
                depth_m = link_top.get(node_id, 0.0)
                attrs["depth_from_links"] = True
            if node_id in coordinates:
                x_m, y_m = coordinates[node_id]
            else:
                x_m, y_m = 0.0, 0.0
                attrs["no_coordinates"] = True
            z_m = float(obj.elevation) * self.length
            nodes[node_id] = Node(
                node_id=node_id,
                kind=kind,
                x_m=x_m,
                y_m=y_m,
                z_m=z_m,
                depth_m=depth_m,
                ground_m=z_m + depth_m,
                attrs=attrs,
            )
        return nodes

    def _rain_gauges(self) -> dict[str, RainGauge]:
        symbols = {s.gage: (s.x * self.map_length, s.y * self.map_length) for s in self._objects("SYMBOLS")}
        gauges: dict[str, RainGauge] = {}
        for gauge in self._objects("RAINGAGES"):
            source = _text(gauge.source).upper()
            x_m, y_m = symbols.get(gauge.name, (0.0, 0.0))
            gauges[gauge.name] = RainGauge(
                gauge_id=gauge.name,
                x_m=x_m,
                y_m=y_m,
                rain_format=_text(gauge.form).upper(),
                interval_min=_interval_min(gauge.interval),
                source=source,
                series=_text(gauge.timeseries if source == "TIMESERIES" else gauge.filename),
                station=_text(gauge.station),
                rain_units=_text(gauge.units).upper(),
                snow_catch_factor=_num(gauge.SCF, 1.0),
            )
        return gauges

    def _polygons(self) -> dict[str, tuple[tuple[float, float], ...]]:
        """Subcatchment outlines, read from the indexed lines: ``swmm_api`` keeps polygon points as 32-bit floats,
        which loses decimetres on projected coordinates."""
        points: dict[str, list[tuple[float, float]]] = {}
        for line in self.index.lines.get("POLYGONS", []):
            values = []
            for position, name in ((1, "x"), (2, "y")):
                try:
                    values.append(float(line.tokens[position]) * self.map_length)
                except (IndexError, ValueError) as exc:
                    shown = line.tokens[position] if position < len(line.tokens) else "nothing"
                    raise ModelImportError(
                        self.index.path,
                        f"[POLYGONS] {line.tokens[0]}: not a number: {shown!r}",
                        line=line.number,
                        field=name,
                    ) from exc
            points.setdefault(line.tokens[0], []).append((values[0], values[1]))
        return {name: tuple(ring) for name, ring in points.items()}

    def _subcatchments(self, nodes: Mapping[str, Node], gauges: Mapping[str, RainGauge]) -> dict[str, Subcatchment]:
        polygons = self._polygons()
        subareas = {s.subcatchment: s for s in self._objects("SUBAREAS")}
        infiltration = {i.subcatchment: i for i in self._objects("INFILTRATION")}
        objects = self._objects("SUBCATCHMENTS")
        ids = {s.name for s in objects}
        result: dict[str, Subcatchment] = {}
        for sc in objects:
            if sc.rain_gage not in gauges:
                raise self.index.error(
                    "SUBCATCHMENTS", sc.name, f"rain gauge {sc.rain_gage!r} does not exist", "rain_gage"
                )
            if sc.outlet not in nodes and sc.outlet not in ids:
                raise self.index.error("SUBCATCHMENTS", sc.name, f"outlet {sc.outlet!r} does not exist", "outlet")
            attrs: dict[str, Any] = {}
            if sc.name in subareas:
                attrs["subarea"] = _json_ready(
                    {k: v for k, v in subareas[sc.name].to_dict_().items() if k != "subcatchment"}
                )
            if sc.name in infiltration:
                attrs["infiltration"] = _json_ready(
                    {k: v for k, v in infiltration[sc.name].to_dict_().items() if k not in ("subcatchment", "kind")}
                )
            result[sc.name] = Subcatchment(
                subcatchment_id=sc.name,
                rain_gauge=sc.rain_gage,
                outlet=sc.outlet,
                area_ha=_num(sc.area) * self.area_ha,
                imperv_pct=_num(sc.imperviousness),
                width_m=_num(sc.width) * self.length,
                slope_pct=_num(sc.slope),
                curb_length_m=_num(sc.curb_length) * self.length,
                polygon=polygons.get(sc.name, ()),
                attrs=attrs,
            )
        return result


def _interval_min(value: Any) -> float:
    """A rain gauge interval (``h:mm``, ``h:mm:ss`` or decimal hours) in minutes."""
    if hasattr(value, "total_seconds"):
        return float(value.total_seconds()) / 60.0
    text = str(value)
    if ":" in text:
        parts = [float(p) for p in text.split(":")]
        return parts[0] * 60.0 + parts[1] + (parts[2] / 60.0 if len(parts) > 2 else 0.0)
    return float(text) * 60.0


# --------------------------------------------------------------------------------------------------------------
# Running


def swmm_errors(report: Path) -> list[tuple[str, int | None]]:
    """SWMM's error messages in a report file, with the file line each names (if any)."""
    if not report.exists():
        return []
    errors: list[tuple[str, int | None]] = []
    lines = report.read_text(encoding="utf-8", errors="replace").splitlines()
    for position, raw in enumerate(lines):
        match = _SWMM_ERROR.search(raw.strip())
        if not match:
            continue
        message = f"ERROR {match.group(1)}:{match.group(2)}".strip()
        line = int(match.group(3)) if match.group(3) else None
        if line is not None and position + 1 < len(lines) and lines[position + 1].strip():
            message += f" ({lines[position + 1].strip()})"
        errors.append((message, line))
    return errors


def _input_file(inp: Path | str, base_dir: Path | None, workdir: Path) -> tuple[Path, str]:
    """The file SWMM should open, and the name to show: *inp* itself, or a temporary file holding the text."""
    if isinstance(inp, Path):
        if not inp.is_file():
            raise ModelImportError(str(inp), "no such file")
        return inp, str(inp)
    folder = base_dir if base_dir is not None else workdir
    with tempfile.NamedTemporaryFile("w", suffix=".inp", dir=folder, delete=False, encoding="utf-8") as handle:
        handle.write(inp)
    return Path(handle.name), "<inp text>"


def open_failed(shown: str, report: Path, exc: Exception) -> ModelImportError:
    """The error for a model SWMM would not open; closes the engine first, which flushes SWMM's report."""
    try:
        solver.swmm_close()
    except Exception:  # the engine may already be closed; the report is all that matters here
        logger.debug("swmm_close after a failed open", exc_info=True)
    errors = swmm_errors(report)
    if not errors:
        return ModelImportError(shown, f"SWMM rejects the model: {str(exc).strip()}")
    message, line = errors[0]
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return ModelImportError(shown, f"SWMM rejects the model: {message}{more}", line=line)


def check_swmm(inp: Path | str, *, base_dir: Path | None = None) -> None:
    """Let SWMM parse and validate a model without running it.

    Args:
        inp: a ``.inp`` file (:class:`~pathlib.Path`) or ``.inp`` text (:class:`str`).
        base_dir: for text, the folder relative file names in it (rain files, time series files) refer to.

    Raises:
        ModelImportError: the file is missing or SWMM rejects the model; names SWMM's first error and the line.
    """
    with SWMM_LOCK, tempfile.TemporaryDirectory(prefix="swmm-") as tmp:
        workdir = Path(tmp)
        path, shown = _input_file(inp, base_dir, workdir)
        report = workdir / "check.rpt"
        try:
            try:
                sim = Simulation(str(path), str(report), str(workdir / "check.out"))
            except Exception as exc:  # pyswmm raises a bare Exception for SWMM's input errors
                raise open_failed(shown, report, exc) from exc
            with sim:
                pass  # opening parses and validates; leaving closes the engine
        finally:
            if path.parent != workdir and not isinstance(inp, Path):
                path.unlink(missing_ok=True)


def run_swmm(inp: Path | str, *, base_dir: Path | None = None, report_path: Path | None = None) -> SwmmSummary:
    """Run a SWMM model to the end and summarise it.

    A :class:`~pathlib.Path` is run where it lies, so rain files, time series files and hot-start files named
    relative to it are found (SWMM resolves them against the input file's folder); SWMM's report and binary
    output go to a temporary folder. A :class:`str` is ``.inp`` text: it is written to a temporary file in
    *base_dir* (if given, so its relative file names resolve) or in a temporary folder, and removed afterwards.

    SWMM runs one simulation per process at a time: calls from several threads wait for each other (a lock).

    Args:
        inp: the model, a file or its text.
        base_dir: for text, the folder its relative file names refer to.
        report_path: where to keep SWMM's text report (``.rpt``); None discards it.

    Returns:
        The continuity errors, rain per gauge, per-node maximum depth and flood volume, per-conduit peak flow,
        in SI units (m, m³, mm, m³/s) whatever the model's flow units.

    Raises:
        ModelImportError: the file is missing or SWMM rejects the model.
        SimulationError: SWMM stops with an error during the run.

    Example:
        >>> summary = run_swmm(Path("city.inp"))  # doctest: +SKIP
        >>> summary.flooded_nodes[:2], round(summary.flow_routing_continuity_error_pct, 2)  # doctest: +SKIP
        (('MHX0203', 'MHX0305-E2'), 0.03)
    """
    with SWMM_LOCK, tempfile.TemporaryDirectory(prefix="swmm-") as tmp:
        workdir = Path(tmp)
        path, shown = _input_file(inp, base_dir, workdir)
        report = workdir / "run.rpt"
        try:
            return _run(path, shown, report, workdir / "run.out")
        finally:
            if report_path is not None and report.exists():
                report_path.parent.mkdir(parents=True, exist_ok=True)
                report_path.write_bytes(report.read_bytes())
            if path.parent != workdir and not isinstance(inp, Path):
                path.unlink(missing_ok=True)


def _run(path: Path, shown: str, report: Path, output: Path) -> SwmmSummary:
    started = time.perf_counter()
    try:
        sim = Simulation(str(path), str(report), str(output))
    except Exception as exc:  # pyswmm raises a bare Exception for SWMM's input errors
        raise open_failed(shown, report, exc) from exc
    collected: dict[str, Any] = {}
    steps = 0
    try:
        with sim:  # leaving ends the run and closes the engine, also after an error
            flow_units = str(sim.flow_units).upper()
            sim.add_before_end(_collector(sim, collected))
            sim.add_after_end(lambda: collected.update(errors=(sim.runoff_error, sim.flow_routing_error)))
            for _ in sim:
                steps += 1
    except Exception as exc:  # SWMM reports run-time errors as a bare Exception too
        detail = "; ".join(message for message, _line in swmm_errors(report)) or str(exc).strip()
        raise SimulationError(f"{shown}: SWMM stopped: {detail}") from exc
    wall = time.perf_counter() - started
    us = flow_units in US_FLOW_UNITS
    length = FT_M if us else 1.0
    volume = FT_M**3 if us else 1.0
    rain = IN_MM if us else 1.0
    flow = FLOW_M3_S.get(flow_units, 1.0)
    flood = {k: v * volume for k, v in collected["flood"].items()}
    runoff_error, routing_error = collected["errors"]
    return SwmmSummary(
        name=path.name if shown != "<inp text>" else shown,
        flow_units=flow_units,
        runoff_continuity_error_pct=float(runoff_error),
        flow_routing_continuity_error_pct=float(routing_error),
        rainfall_mm={k: v * rain for k, v in _gauge_rain(path, collected["precipitation"]).items()},
        max_depth_m={k: v * length for k, v in collected["depth"].items()},
        flood_volume_m3=flood,
        flooded_nodes=tuple(sorted((k for k, v in flood.items() if v > 0.0), key=lambda k: -flood[k])),
        peak_flow_m3_s={k: v * flow for k, v in collected["flow"].items()},
        steps=steps,
        wall_time_s=wall,
    )


def _collector(sim: Any, into: dict[str, Any]) -> Callable[[], None]:
    """A hook that copies SWMM's statistics before the engine frees them at the end of the run."""

    def collect() -> None:
        depth: dict[str, float] = {}
        flood: dict[str, float] = {}
        for node in Nodes(sim):
            stats = node.statistics
            depth[node.nodeid] = float(stats["max_depth"])
            flood[node.nodeid] = float(stats["flooding_volume"])
        precipitation = {s.subcatchmentid: float(s.statistics["precipitation"]) for s in Subcatchments(sim)}
        flow: dict[str, float] = {}
        for link in Links(sim):
            if link.is_conduit():
                flow[link.linkid] = float(link.conduit_statistics["peak_flow"])
        into.update(depth=depth, flood=flood, precipitation=precipitation, flow=flow)

    return collect


def _gauge_rain(path: Path, precipitation: Mapping[str, float]) -> dict[str, float]:
    """Rain depth per gauge, from the depth that fell on the subcatchments each gauge rains on (model units).

    SWMM reports rain per subcatchment, not per gauge; every subcatchment of a gauge gets the gauge's rain.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            text = _decode(path.read_bytes())
            section = SwmmInput.read_text(text, custom_converter=_CONVERTERS)["SUBCATCHMENTS"]
        gauge_of = {sc.name: str(sc.rain_gage) for sc in section.values()}
    except Exception:  # SWMM ran the file; a reader quirk only costs the per-gauge rain
        logger.warning("cannot map subcatchments to rain gauges in %s; rain per gauge left out", path, exc_info=True)
        return {}
    rain: dict[str, float] = {}
    for subcatchment_id, depth in precipitation.items():
        if subcatchment_id in gauge_of:
            rain.setdefault(gauge_of[subcatchment_id], depth)
    return rain


# --------------------------------------------------------------------------------------------------------------
# Writing


def write_swmm(
    network: PipeNetwork,
    subcatchments: Iterable[Subcatchment],
    rain_gauges: Iterable[RainGauge],
    *,
    options: Mapping[str, str | int | float],
    timeseries: Mapping[str, Sequence[tuple[float, float]]],
    curves: Mapping[str, tuple[str, Sequence[tuple[float, float]]]] | None = None,
    title: str = "",
) -> str:
    """Write a drainage network, its subcatchments and rain gauges as SWMM 5 ``.inp`` text.

    Every value is taken as SI: write with an SI ``FLOW_UNITS`` (``CMS``, ``LPS`` or ``MLD``). Node ``attrs``
    read: junctions ``surcharge_depth_m``, ``ponded_area_m2``; outfalls ``outfall_type`` (default ``FREE``),
    ``stage_m``, ``flap_gate``; storage units ``storage_shape`` (``FUNCTIONAL`` or ``TABULAR``) and
    ``storage_data`` ([A1, A2, A0] or a curve name). Link ``attrs`` read: conduits ``shape`` (default
    ``CIRCULAR``), ``geom`` (geom1–geom4; geom1 is replaced by ``diameter_m``), ``in_offset_m``,
    ``out_offset_m``; orifices ``orientation``, ``in_offset_m``, ``discharge_coefficient``, ``flap_gate``,
    ``shape``, ``geom``; pumps ``curve``, ``status``, ``startup_depth_m``, ``shutoff_depth_m``. Subcatchment
    ``attrs["subarea"]`` and ``attrs["infiltration"]`` hold the keyword arguments of ``swmm_api``'s ``SubArea``
    and infiltration objects (the method comes from ``options["INFILTRATION"]``).

    Args:
        network: the nodes and links (junctions, outfalls, storage units; conduits, orifices and pumps).
        subcatchments: their ``outlet`` must be a node of *network* or another subcatchment.
        rain_gauges: each ``TIMESERIES`` gauge's ``series`` must be a key of *timeseries*.
        options: ``[OPTIONS]`` keywords and values, e.g. ``{"FLOW_UNITS": "CMS", "ROUTING_STEP": 5}``.
        timeseries: by name, (hours from the simulation start, value) pairs.
        curves: by name, (SWMM curve type, (x, y) points), e.g. ``("PUMP4", [(0.0, 0.2), (2.0, 0.5)])``.
        title: text of the ``[TITLE]`` section.

    Raises:
        ValueError: US flow units, or an element this writer does not handle (weirs, outlets, dividers, links with
            US-unit geometry).
    """
    units = str(options.get("FLOW_UNITS", "CFS")).upper()
    if units not in ("CMS", "LPS", "MLD"):
        raise ValueError(f"write_swmm writes SI models only; FLOW_UNITS {units!r} is not one")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # swmm_api warns about time series given in hours, which SWMM accepts
        return _inp_text(network, subcatchments, rain_gauges, options, timeseries, curves or {}, title)


def _inp_text(
    network: PipeNetwork,
    subcatchments: Iterable[Subcatchment],
    rain_gauges: Iterable[RainGauge],
    options: Mapping[str, str | int | float],
    timeseries: Mapping[str, Sequence[tuple[float, float]]],
    curves: Mapping[str, tuple[str, Sequence[tuple[float, float]]]],
    title: str,
) -> str:
    inp = SwmmInput()
    inp["TITLE"] = TitleSection(title)
    opts = OptionSection()
    for key, value in options.items():
        opts[key.upper()] = value
    inp["OPTIONS"] = opts
    report = ReportSection()
    report.update({"INPUT": "NO", "CONTROLS": "NO", "SUBCATCHMENTS": "ALL", "NODES": "ALL", "LINKS": "ALL"})
    inp["REPORT"] = report
    for gauge in rain_gauges:
        interval = f"{int(gauge.interval_min // 60)}:{round(gauge.interval_min % 60):02d}"
        if gauge.source == "TIMESERIES":
            inp.add_obj(
                RainGage(
                    gauge.gauge_id, gauge.rain_format, interval, gauge.snow_catch_factor, "TIMESERIES", gauge.series
                )
            )
        else:
            inp.add_obj(
                RainGage(
                    gauge.gauge_id,
                    gauge.rain_format,
                    interval,
                    gauge.snow_catch_factor,
                    "FILE",
                    gauge.series,
                    gauge.station,
                    gauge.rain_units or "MM",
                )
            )
        inp.add_obj(Symbol(gauge.gauge_id, gauge.x_m, gauge.y_m))
    infiltration_cls = {
        "HORTON": InfiltrationHorton,
        "MODIFIED_HORTON": InfiltrationHorton,
        "GREEN_AMPT": InfiltrationGreenAmpt,
        "MODIFIED_GREEN_AMPT": InfiltrationGreenAmpt,
        "CURVE_NUMBER": InfiltrationCurveNumber,
    }[str(options.get("INFILTRATION", "HORTON")).upper()]
    for sc in subcatchments:
        inp.add_obj(
            SubCatchment(
                sc.subcatchment_id,
                sc.rain_gauge,
                sc.outlet,
                sc.area_ha,
                sc.imperv_pct,
                sc.width_m,
                sc.slope_pct,
                sc.curb_length_m,
            )
        )
        inp.add_obj(SubArea(sc.subcatchment_id, **dict(sc.attrs.get("subarea", {}))))
        if "infiltration" in sc.attrs:
            inp.add_obj(infiltration_cls(sc.subcatchment_id, **dict(sc.attrs["infiltration"])))
        if sc.polygon:
            inp.add_obj(Polygon(sc.subcatchment_id, list(sc.polygon)))
    for node in network.nodes.values():
        _write_node(inp, node)
        inp.add_obj(Coordinate(node.node_id, node.x_m, node.y_m))
    for link in network.links.values():
        _write_link(inp, link)
    for name, points in timeseries.items():
        inp.add_obj(TimeseriesData(name, [(round(float(t), 6), round(float(v), 4)) for t, v in points]))
    for name, (kind, points) in curves.items():
        inp.add_obj(Curve(name, kind, [[float(x), float(y)] for x, y in points]))
    xs = [n.x_m for n in network.nodes.values()] or [0.0]
    ys = [n.y_m for n in network.nodes.values()] or [0.0]
    map_section = MapSection()
    map_section.update({"DIMENSIONS": [min(xs), min(ys), max(xs), max(ys)], "UNITS": "Meters"})
    inp["MAP"] = map_section
    return str(inp.to_string())


def _write_node(inp: Any, node: Node) -> None:
    attrs = node.attrs
    if node.kind is NodeKind.JUNCTION:
        inp.add_obj(
            Junction(
                node.node_id,
                node.z_m,
                node.depth_m,
                0.0,
                float(attrs.get("surcharge_depth_m", 0.0)),
                float(attrs.get("ponded_area_m2", 0.0)),
            )
        )
    elif node.kind is NodeKind.OUTFALL:
        kind = str(attrs.get("outfall_type", "FREE")).upper()
        gate = "YES" if attrs.get("flap_gate") else "NO"
        if kind == "FIXED":
            inp.add_obj(Outfall(node.node_id, node.z_m, kind, float(attrs["stage_m"]), gate))
        else:
            inp.add_obj(Outfall(node.node_id, node.z_m, kind, gate))
    elif node.kind is NodeKind.STORAGE:
        shape = str(attrs.get("storage_shape", "FUNCTIONAL")).upper()
        data = attrs.get("storage_data", [0.0, 0.0, 0.0])
        args = [data] if isinstance(data, str) else [float(v) for v in data]
        inp.add_obj(
            Storage(
                node.node_id,
                node.z_m,
                node.depth_m,
                float(attrs.get("initial_depth_m", 0.0)),
                shape,
                *args,
                float(attrs.get("surcharge_depth_m", 0.0)),
            )
        )
    else:
        raise ValueError(f"write_swmm does not write {node.kind} nodes ({node.node_id})")


def _write_link(inp: Any, link: Link) -> None:
    attrs = link.attrs
    if attrs.get("length_unit", "m") != "m":
        raise ValueError(f"link {link.link_id} has geometry in {attrs['length_unit']}; write_swmm writes SI only")
    if link.kind is LinkKind.CONDUIT:
        inp.add_obj(
            Conduit(
                link.link_id,
                link.from_id,
                link.to_id,
                link.length_m,
                link.roughness,
                float(attrs.get("in_offset_m", 0.0)),
                float(attrs.get("out_offset_m", 0.0)),
            )
        )
        geom = [float(g or 0.0) for g in attrs.get("geom", [link.diameter_m, 0.0, 0.0, 0.0])]
        inp.add_obj(
            CrossSection(
                link.link_id,
                str(attrs.get("shape", "CIRCULAR")),
                link.diameter_m,
                geom[1],
                geom[2],
                geom[3],
                int(attrs.get("barrels", 1)),
            )
        )
    elif link.kind is LinkKind.ORIFICE:
        inp.add_obj(
            Orifice(
                link.link_id,
                link.from_id,
                link.to_id,
                str(attrs.get("orientation", "SIDE")),
                float(attrs.get("in_offset_m", 0.0)),
                float(attrs.get("discharge_coefficient", 0.65)),
                "YES" if attrs.get("flap_gate") else "NO",
            )
        )
        geom = [float(g or 0.0) for g in attrs.get("geom", [link.diameter_m, 0.0, 0.0, 0.0])]
        inp.add_obj(CrossSection(link.link_id, str(attrs.get("shape", "CIRCULAR")), link.diameter_m, geom[1]))
    elif link.kind is LinkKind.PUMP:
        inp.add_obj(
            Pump(
                link.link_id,
                link.from_id,
                link.to_id,
                str(attrs.get("curve", "*")),
                str(attrs.get("status", "ON")),
                float(attrs.get("startup_depth_m", 0.0)),
                float(attrs.get("shutoff_depth_m", 0.0)),
            )
        )
    else:
        raise ValueError(f"write_swmm does not write {link.kind} links ({link.link_id})")
    if link.vertices:
        inp.add_obj(Vertices(link.link_id, list(link.vertices)))
