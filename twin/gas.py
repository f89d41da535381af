"""Gas networks: pandapipes nets as the twin's network, and steady-state pipe flows.

:func:`read_pandapipes` turns a pandapipes net (or its JSON file) into a :class:`~twin.model.PipeNetwork` (kind
``gas``), keeping the net's JSON as the network's source. :func:`run_gas` runs a steady-state pipe flow
(``pandapipes.pipeflow``) on a copy of a net and returns junction pressures and pipe velocities; the net it is
given is never changed.

pandapipes junctions become nodes: a junction with an external grid or a mass source is a ``SOURCE``, one with
sinks a ``SINK`` (``attrs["mdot_kg_s"]``), the others ``JUNCTION``s. Pipes, pressure regulators
(``press_control``), junction-to-junction valves, pumps, compressors and flow controllers become links; a valve
between a junction and a pipe end (``et = "pi"``) is an isolation valve on that pipe. Pressures are gauge, as in
pandapipes (bar, and kPa for people).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandapipes
import pandas as pd

from twin.errors import ModelImportError, SimulationError
from twin.model import IsolationValve, Link, LinkKind, Node, NodeKind, PipeNetwork
from twin.sensors import Network

log = logging.getLogger(__name__)

SOURCE_FORMAT = "pandapipes-json"
VALVE_OFFSET_M = 3.0  # an isolation valve is drawn this far along its pipe from the junction
KPA_PER_BAR = 100.0

# Branch tables other than pipes and valves: (table, link kind).
_BRANCH_TABLES = (
    ("press_control", LinkKind.REGULATOR),
    ("pump", LinkKind.PUMP),
    ("compressor", LinkKind.PUMP),
    ("flow_control", LinkKind.VALVE),
)
_KNOWN_TABLES = {
    "junction",
    "junction_geodata",
    "pipe",
    "pipe_geodata",
    "valve",
    "ext_grid",
    "sink",
    "source",
    *(table for table, _kind in _BRANCH_TABLES),
}


def read_pandapipes(path_or_net: Path | Any) -> PipeNetwork:
    """Import a pandapipes gas net, or its JSON file (``pandapipes.to_json``), as a gas network.

    Junctions keep their position (``junction_geodata``), height (``z_m`` = ``height_m``) and every other column in
    ``attrs`` (``pn_bar``, ``name``, …, plus ``index``). Pipes keep their inner diameter, length (km → m) and
    roughness (``k_mm``, mm). Sinks add ``mdot_kg_s`` (mean flow × scaling, summed, kg/s) and ``sinks`` to their
    junction's attrs; external grids ``p_bar``. Ids are the elements' names where a table's names are unique,
    otherwise ``{table}_{index}``.

    Args:
        path_or_net: a ``pandapipesNet``, or the path of its JSON file.

    Raises:
        ModelImportError: the file is missing or not pandapipes JSON, the net is not a gas net, or an element
            refers to a junction or pipe that does not exist (``field`` names the table and column).

    Example:
        >>> import pandapipes.networks
        >>> network = read_pandapipes(pandapipes.networks.gas_meshed_delta())
        >>> network.kind.value, network.source_format
        ('gas', 'pandapipes-json')
    """
    if isinstance(path_or_net, Path):
        label, net, name = str(path_or_net), _load_json(path_or_net), path_or_net.name
    else:
        net = path_or_net
        name = str(getattr(net, "name", "") or "pandapipes")
        label = name
    if not isinstance(net, pandapipes.pandapipesNet):
        raise ModelImportError(label, f"not a pandapipes net (a {type(net).__name__})")
    fluid = pandapipes.get_fluid(net) if "fluid" in net and net.fluid is not None else None
    if fluid is None or not fluid.is_gas:
        raise ModelImportError(label, f"not a gas net (fluid {getattr(fluid, 'name', None)!r})", field="fluid")
    _check_references(net, label)
    try:
        source = pandapipes.to_json(net)
    except Exception as exc:  # pandapower's serialiser raises whatever the failing column raises
        raise ModelImportError(label, f"cannot write the net as JSON: {exc}") from exc

    network = PipeNetwork(kind=Network.GAS, name=name, source=source, source_format=SOURCE_FORMAT)
    ids = junction_ids(net)
    for index, row in _rows(net, "junction"):
        x, y = _position(net, index)
        attrs = {"index": int(index), **_plain_row(row, exclude=("height_m",))}
        network.nodes[ids[index]] = Node(ids[index], NodeKind.JUNCTION, x, y, float(row["height_m"]), attrs=attrs)
    _mark_sources_and_sinks(net, network, ids)

    pipe_ids = _element_ids(net, "pipe", taken=set())
    for index, row in _rows(net, "pipe"):
        network.links[pipe_ids[index]] = Link(
            link_id=pipe_ids[index],
            kind=LinkKind.PIPE,
            from_id=ids[int(row["from_junction"])],
            to_id=ids[int(row["to_junction"])],
            diameter_m=_diameter_m(row),
            length_m=float(row["length_km"]) * 1000.0,
            roughness=float(row["k_mm"]),
            vertices=_vertices(net, index),
            attrs={
                "index": int(index),
                **_plain_row(row, exclude=("from_junction", "to_junction", "length_km", "inner_diameter_mm", "k_mm")),
            },
        )
    taken = set(network.links)
    valve_ids = _element_ids(net, "valve", taken=taken)
    for index, row in _rows(net, "valve"):
        vid = valve_ids[index]
        if str(row.get("et", "ju")) == "pi":
            pipe_id = pipe_ids[int(row["element"])]
            near = ids[int(row["junction"])]
            network.valves[vid] = IsolationValve(vid, pipe_id, near, *_along(network, network.links[pipe_id], near))
            continue
        a, b = _valve_ends(row)
        network.links[vid] = Link(
            link_id=vid,
            kind=LinkKind.VALVE,
            from_id=ids[a],
            to_id=ids[b],
            diameter_m=_diameter_m(row),
            length_m=0.0,
            attrs={
                "index": int(index),
                **_plain_row(row, exclude=("junction", "element", "from_junction", "to_junction")),
            },
        )
    for table, kind in _BRANCH_TABLES:
        element_ids = _element_ids(net, table, taken=set(network.links))
        for index, row in _rows(net, table):
            lid = element_ids[index]
            attrs = {"index": int(index), **_plain_row(row, exclude=("from_junction", "to_junction"))}
            if table == "press_control":
                attrs["controlled_junction"] = ids.get(int(row["controlled_junction"]))
                attrs["controlled_p_kpa"] = float(row["controlled_p_bar"]) * KPA_PER_BAR
            network.links[lid] = Link(
                link_id=lid,
                kind=kind,
                from_id=ids[int(row["from_junction"])],
                to_id=ids[int(row["to_junction"])],
                diameter_m=0.0,
                length_m=0.0,
                attrs=attrs,
            )
    for table in sorted(net.keys()):
        value = net[table]
        if (
            isinstance(value, pd.DataFrame)
            and len(value)
            and table not in _KNOWN_TABLES
            and not table.startswith(("res_", "_", "std_"))
        ):
            log.warning(
                "%s: table %r (%d rows) has no place in the twin's network; kept in the source only",
                label,
                table,
                len(value),
            )
    return network


def junction_ids(net: Any) -> dict[int, str]:
    """Return the twin's node id of every junction of *net*, by junction index."""
    return _element_ids(net, "junction", taken=set())


def _load_json(path: Path) -> Any:
    if not path.is_file():
        raise ModelImportError(str(path), "no such file")
    try:
        return pandapipes.from_json(str(path))
    except json.JSONDecodeError as exc:
        raise ModelImportError(str(path), f"not JSON: {exc.msg} (column {exc.colno})", line=exc.lineno) from exc
    except Exception as exc:  # pandapower's decoder raises UserWarning, KeyError, TypeError… for foreign JSON
        raise ModelImportError(str(path), f"not a pandapipes net: {type(exc).__name__}: {exc}") from exc


def _table(net: Any, table: str) -> pd.DataFrame | None:
    value = net.get(table)
    return value if isinstance(value, pd.DataFrame) and len(value) else None


def _rows(net: Any, table: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (index, row as a dict) for every element of *table*, in index order."""
    frame = _table(net, table)
    if frame is not None:
        for index, row in frame.sort_index().to_dict("index").items():
            yield int(index), row


def _check_references(net: Any, label: str) -> None:
    """Every element must name existing junctions (and pipes, for pipe valves)."""
    junction_table = _table(net, "junction")
    if junction_table is None:
        raise ModelImportError(label, "no junctions", field="junction")
    pipe_table = _table(net, "pipe")
    junctions = junction_table.index
    columns = {
        "pipe": ("from_junction", "to_junction"),
        "ext_grid": ("junction",),
        "sink": ("junction",),
        "source": ("junction",),
        "press_control": ("from_junction", "to_junction", "controlled_junction"),
        "pump": ("from_junction", "to_junction"),
        "compressor": ("from_junction", "to_junction"),
        "flow_control": ("from_junction", "to_junction"),
        "valve": ("junction", "from_junction", "to_junction"),
    }
    for table, names in columns.items():
        frame = _table(net, table)
        if frame is None:
            continue
        for column in names:
            if column in frame:
                _check_column(label, table, frame, column, junctions, "junction")
    valves = _table(net, "valve")
    if valves is not None and "element" in valves:
        on_pipe = valves["et"].astype(str) == "pi" if "et" in valves else valves["element"].isna()
        pipes = pipe_table.index if pipe_table is not None else junctions[:0]
        _check_column(label, "valve", valves[on_pipe], "element", pipes, "pipe")
        _check_column(label, "valve", valves[~on_pipe], "element", junctions, "junction")


def _check_column(label: str, table: str, frame: pd.DataFrame, column: str, known: pd.Index, what: str) -> None:
    missing = frame[~frame[column].isin(known)]
    if len(missing):
        index = missing.index[0]
        raise ModelImportError(
            label,
            f"{table} {index} refers to {what} {missing.at[index, column]}, which does not exist",
            field=f"{table}.{column}",
        )


def _element_ids(net: Any, table: str, *, taken: set[str]) -> dict[int, str]:
    """Ids for a table's elements: their names if unique and not taken, else ``{table}_{index}``."""
    frame = _table(net, table)
    if frame is None:
        return {}
    names = [n if isinstance(n, str) and n.strip() else None for n in frame["name"]] if "name" in frame else []
    usable = bool(names) and None not in names and len(set(names)) == len(names) and not (set(names) & taken)
    ids = {int(i): str(n) for i, n in zip(frame.index, names, strict=True)} if usable else {}
    for index in frame.index:
        ids.setdefault(int(index), f"{table}_{int(index)}")
    taken.update(ids.values())
    return ids


def _mark_sources_and_sinks(net: Any, network: PipeNetwork, ids: dict[int, str]) -> None:
    """Make junctions with an external grid or mass source ``SOURCE``s and those with sinks ``SINK``s."""
    sinks: dict[str, list[dict[str, Any]]] = {}
    for index, row in _rows(net, "sink"):
        scaling = float(row.get("scaling", 1.0))
        sinks.setdefault(ids[int(row["junction"])], []).append(
            {
                "index": index,
                "name": _plain(row.get("name")),
                "mdot_kg_s": float(row["mdot_kg_per_s"]),
                "scaling": scaling,
                "in_service": bool(row.get("in_service", True)),
            }
        )
    sources: dict[str, list[dict[str, Any]]] = {}
    for table in ("ext_grid", "source"):
        for index, row in _rows(net, table):
            entry = {"table": table, "index": index, "name": _plain(row.get("name"))}
            if table == "ext_grid":
                entry |= {"p_bar": float(row["p_bar"]), "t_k": _plain(row.get("t_k")), "type": _plain(row.get("type"))}
            else:
                entry |= {"mdot_kg_s": float(row["mdot_kg_per_s"]) * float(row.get("scaling", 1.0))}
            entry["in_service"] = bool(row.get("in_service", True))
            sources.setdefault(ids[int(row["junction"])], []).append(entry)
    for node_id, node in list(network.nodes.items()):
        attrs = dict(node.attrs)
        kind = NodeKind.JUNCTION
        if node_id in sinks:
            kind = NodeKind.SINK
            attrs["sinks"] = sinks[node_id]
            attrs["mdot_kg_s"] = sum(s["mdot_kg_s"] * s["scaling"] for s in sinks[node_id] if s["in_service"])
        if node_id in sources:
            kind = NodeKind.SOURCE
            attrs["sources"] = sources[node_id]
            grids = [s for s in sources[node_id] if s["table"] == "ext_grid"]
            if grids:
                attrs["p_bar"] = grids[0]["p_bar"]
        if kind is not NodeKind.JUNCTION:
            network.nodes[node_id] = Node(node_id, kind, node.x_m, node.y_m, node.z_m, attrs=attrs)


def _position(net: Any, index: int) -> tuple[float, float]:
    geo = _table(net, "junction_geodata")
    if geo is not None and index in geo.index:
        x, y = geo.at[index, "x"], geo.at[index, "y"]
        if _finite(x) and _finite(y):
            return float(x), float(y)
    return 0.0, 0.0


def _vertices(net: Any, index: int) -> tuple[tuple[float, float], ...]:
    geo = _table(net, "pipe_geodata")
    if geo is None or index not in geo.index or "coords" not in geo:
        return ()
    coords = geo.at[index, "coords"]
    points = [(float(x), float(y)) for x, y in coords] if isinstance(coords, list | tuple) else []
    return tuple(points[1:-1])


def _along(network: PipeNetwork, pipe: Link, near: str) -> tuple[float, float]:
    """The point ``VALVE_OFFSET_M`` along *pipe* from its end *near* (at most half way)."""
    a = network.nodes[near]
    b = network.nodes[pipe.to_id if near == pipe.from_id else pipe.from_id]
    length = math.hypot(b.x_m - a.x_m, b.y_m - a.y_m)
    t = min(VALVE_OFFSET_M / length, 0.5) if length > 0 else 0.0
    return round(a.x_m + t * (b.x_m - a.x_m), 2), round(a.y_m + t * (b.y_m - a.y_m), 2)


def _valve_ends(row: dict[str, Any]) -> tuple[int, int]:
    if _finite(row.get("from_junction")):
        return int(row["from_junction"]), int(row["to_junction"])
    return int(row["junction"]), int(row["element"])


def _diameter_m(row: dict[str, Any]) -> float:
    if _finite(row.get("inner_diameter_mm")):
        return float(row["inner_diameter_mm"]) / 1000.0
    if _finite(row.get("diameter_m")):  # nets from pandapipes before 0.11
        return float(row["diameter_m"])
    return 0.0


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _plain(value: Any) -> Any:
    """A JSON-ready copy of a table cell: None for missing, Python numbers and strings."""
    if value is None or isinstance(value, str | bool):
        return value
    if hasattr(value, "item") and not isinstance(value, list | tuple | dict):
        value = value.item()  # numpy scalars
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, bool | int | float | str):
        return value
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return str(value)


def _plain_row(row: dict[str, Any], *, exclude: tuple[str, ...]) -> dict[str, Any]:
    return {str(k): _plain(v) for k, v in row.items() if k not in exclude}


# --- running ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GasRunSummary:
    """What a steady-state pipe flow of a gas net gave.

    Attributes:
        converged: the Newton iteration converged; if not, the pressures and velocities are NaN.
        pressure_bar: Series (index = junction ids), gauge pressure, bar.
        pressure_kpa: the same in kPa.
        velocity_m_s: Series (index = pipe ids), mean gas velocity, m/s, positive from ``from_id`` to ``to_id``.
        iterations: Newton iterations used.
        wall_time_s: time the run took, s.
        message: why it did not converge, or "".
    """

    converged: bool
    pressure_bar: pd.Series
    pressure_kpa: pd.Series
    velocity_m_s: pd.Series
    iterations: int
    wall_time_s: float
    message: str = ""


def run_gas(net_or_network: Any, *, friction_model: str = "colebrook", max_iterations: int = 50) -> GasRunSummary:
    """Run a steady-state pipe flow (``pandapipes.pipeflow``) on a copy of a gas net and summarise it.

    Args:
        net_or_network: a ``pandapipesNet``, or a gas :class:`PipeNetwork` built from pandapipes JSON.
        friction_model: pandapipes' friction model (``colebrook``, ``nikuradse``, ``swamee-jain``).
        max_iterations: the most Newton iterations before giving up.

    Raises:
        ModelImportError: the network is not a pandapipes one, or pandapipes cannot set the flow problem up.

    Example:
        >>> import pandapipes.networks
        >>> summary = run_gas(pandapipes.networks.gas_meshed_delta())
        >>> summary.converged
        True
    """
    if isinstance(net_or_network, PipeNetwork):
        if net_or_network.source_format != SOURCE_FORMAT or not net_or_network.source:
            raise ModelImportError(
                net_or_network.name, f"not a pandapipes network (source format {net_or_network.source_format!r})"
            )
        label = net_or_network.name
        try:
            net = pandapipes.from_json_string(net_or_network.source)
        except Exception as exc:  # pandapower's decoder raises many kinds of error
            raise ModelImportError(label, f"cannot read the network's pandapipes JSON: {exc}") from exc
    elif isinstance(net_or_network, pandapipes.pandapipesNet):
        label = str(getattr(net_or_network, "name", "") or "pandapipes")
        net = copy.deepcopy(net_or_network)
    else:
        raise ModelImportError(str(net_or_network)[:60], "not a pandapipes net")
    ids = junction_ids(net)
    pipe_ids = _element_ids(net, "pipe", taken=set())
    started = time.perf_counter()
    message = ""
    try:
        pandapipes.pipeflow(net, friction_model=friction_model, max_iter_hyd=max_iterations)
        converged = bool(net.converged)
    except pandapipes.pf.pipeflow_setup.PipeflowNotConverged as exc:
        converged, message = False, str(exc) or "the pipe flow did not converge"
    except Exception as exc:  # pandapipes raises UserWarning, KeyError, IndexError… for nets it cannot set up
        raise SimulationError(f"{label}: pandapipes cannot run the net: {type(exc).__name__}: {exc}") from exc
    wall_time_s = time.perf_counter() - started
    if converged:
        pressure = net.res_junction["p_bar"].astype(float).rename(index=ids).sort_index()
        velocity = (
            net.res_pipe["v_mean_m_per_s"].astype(float).rename(index=pipe_ids).sort_index()
            if _table(net, "pipe") is not None
            else pd.Series(dtype=float)
        )
    else:
        pressure = pd.Series(math.nan, index=sorted(ids.values()), dtype=float)
        velocity = pd.Series(math.nan, index=sorted(pipe_ids.values()), dtype=float)
    pressure.index.name, velocity.index.name = "junction", "pipe"
    iterations = int(net.get("_internal_results", {}).get("iterations_hydraulics", 0))
    log.info("%s: pipe flow %s in %.2f s", label, "converged" if converged else "did not converge", wall_time_s)
    return GasRunSummary(
        converged=converged,
        pressure_bar=pressure,
        pressure_kpa=pressure * KPA_PER_BAR,
        velocity_m_s=velocity,
        iterations=iterations,
        wall_time_s=wall_time_s,
        message=message,
    )
