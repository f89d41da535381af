"""The twin's assets in the store, versioned per import.

Each *layer* — ``drainage``, ``water``, ``gas`` (nodes, links, valves), ``buildings``, ``spaces``, ``low_points``,
``terrain``, ``streets`` (street centrelines with their class, and the rivers) — is stored as a numbered version in
``twin_models``. Saving a layer whose content is unchanged (same checksum as the current version) writes nothing;
a changed one becomes the next version and the old versions stay, so a re-import never loses what was there. The
current version of a layer is its highest.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import orjson
import psycopg
from psycopg.rows import dict_row

from twin.model import (
    Building,
    BuildingUse,
    City,
    IsolationValve,
    Link,
    LinkKind,
    LowPoint,
    Node,
    NodeKind,
    PipeNetwork,
    SpaceKind,
    Terrain,
    UndergroundSpace,
)
from twin.sensors import Network

log = logging.getLogger(__name__)

NETWORK_LAYERS = ("drainage", "water", "gas")


def _checksum(parts: Iterable[bytes]) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part)
        h.update(b"\x1e")
    return h.hexdigest()


def _json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY).decode()


def _node_rows(nodes: Iterable[Node]) -> list[tuple[Any, ...]]:
    return [(n.node_id, n.kind.value, n.x_m, n.y_m, n.z_m, n.depth_m, n.ground_m, _json(dict(n.attrs))) for n in nodes]


def _link_rows(links: Iterable[Link]) -> list[tuple[Any, ...]]:
    return [
        (
            k.link_id,
            k.kind.value,
            k.from_id,
            k.to_id,
            k.diameter_m,
            k.length_m,
            k.roughness,
            _json([list(v) for v in k.vertices]),
            _json(dict(k.attrs)),
        )
        for k in links
    ]


class LayerWriter:
    """Write one layer as a new version unless it equals the current one."""

    def __init__(
        self,
        conn: psycopg.Connection[Any],
        *,
        layer: str,
        name: str,
        crs: str,
        source_format: str = "",
        source: str = "",
    ) -> None:
        self.conn = conn
        self.layer = layer
        self.name = name
        self.crs = crs
        self.source_format = source_format
        self.source = source

    def save(
        self,
        *,
        nodes: Sequence[tuple[Any, ...]] = (),
        links: Sequence[tuple[Any, ...]] = (),
        valves: Sequence[tuple[Any, ...]] = (),
        buildings: Sequence[tuple[Any, ...]] = (),
    ) -> int:
        """Store the rows as the layer's next version and return it, or return the current version if unchanged."""
        checksum = _checksum(
            [
                self.source.encode(),
                self.crs.encode(),
                *(_json(r).encode() for r in (*nodes, *links, *valves, *buildings)),
            ]
        )
        cur = self.conn.cursor(row_factory=dict_row)
        cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"lifeline-twin-layer:{self.layer}",))
        cur.execute(
            "SELECT model_id, version, checksum FROM twin_models WHERE layer = %s ORDER BY version DESC LIMIT 1",
            (self.layer,),
        )
        current = cur.fetchone()
        if current is not None and current["checksum"] == checksum:
            log.info("twin layer %s unchanged (version %d)", self.layer, current["version"])
            return int(current["version"])
        version = 1 if current is None else int(current["version"]) + 1
        counts = {"nodes": len(nodes), "links": len(links), "valves": len(valves), "buildings": len(buildings)}
        cur.execute(
            """INSERT INTO twin_models (layer, version, name, crs, source_format, source, checksum, counts)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s::jsonb) RETURNING model_id""",
            (self.layer, version, self.name, self.crs, self.source_format, self.source, checksum, _json(counts)),
        )
        row = cur.fetchone()
        assert row is not None
        model_id = row["model_id"]
        self._copy("twin_nodes", "node_id, kind, x_m, y_m, z_m, depth_m, ground_m, attrs", model_id, nodes)
        self._copy(
            "twin_links",
            "link_id, kind, from_id, to_id, diameter_m, length_m, roughness, vertices, attrs",
            model_id,
            links,
        )
        self._copy("twin_valves", "valve_id, link_id, near_node_id, x_m, y_m", model_id, valves)
        self._copy(
            "twin_buildings",
            "building_id, footprint, height_m, floors, ground_m, use, basement, occupants, name",
            model_id,
            buildings,
        )
        log.info("twin layer %s: stored version %d (%s)", self.layer, version, counts)
        return version

    def _copy(self, table: str, columns: str, model_id: int, rows: Sequence[tuple[Any, ...]]) -> None:
        if not rows:
            return
        with self.conn.cursor() as cur, cur.copy(f"COPY {table} (model_id, {columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row((model_id, *row))


def save_network(conn: psycopg.Connection[Any], network: PipeNetwork, *, crs: str) -> int:
    """Store *network* as its layer's next version (or keep the current one if unchanged); return the version."""
    writer = LayerWriter(
        conn,
        layer=network.kind.value,
        name=network.name,
        crs=crs,
        source_format=network.source_format,
        source=network.source,
    )
    valves = [(v.valve_id, v.link_id, v.near_node_id, v.x_m, v.y_m) for v in network.valves.values()]
    return writer.save(
        nodes=_node_rows(network.nodes.values()), links=_link_rows(network.links.values()), valves=valves
    )


def save_buildings(conn: psycopg.Connection[Any], buildings: Iterable[Building], *, name: str, crs: str) -> int:
    """Store the buildings as the ``buildings`` layer's next version (or keep the current); return the version."""
    rows = [
        (
            b.building_id,
            _json([list(p) for p in b.footprint]),
            b.height_m,
            b.floors,
            b.ground_m,
            b.use.value,
            b.basement,
            b.occupants,
            b.name,
        )
        for b in buildings
    ]
    return LayerWriter(conn, layer="buildings", name=name, crs=crs).save(buildings=rows)


def save_city(conn: psycopg.Connection[Any], city: City) -> dict[str, int]:
    """Store every layer of *city* in one transaction; return the current version of each layer."""
    versions: dict[str, int] = {}
    with conn.transaction():
        for network in city.networks.values():
            versions[network.kind.value] = save_network(conn, network, crs=city.crs)
        versions["buildings"] = save_buildings(conn, city.buildings.values(), name=city.name, crs=city.crs)
        spaces = [
            (
                s.space_id,
                s.kind.value,
                s.x_m,
                s.y_m,
                s.z_m,
                0.0,
                None,
                _json({"volume_m3": s.volume_m3, "near": list(s.near)}),
            )
            for s in city.spaces.values()
        ]
        versions["spaces"] = LayerWriter(conn, layer="spaces", name=city.name, crs=city.crs).save(nodes=spaces)
        lows = [
            (p.point_id, p.kind, p.x_m, p.y_m, p.ground_m, p.depth_capacity_m, p.ground_m, _json({"name": p.name}))
            for p in city.low_points.values()
        ]
        versions["low_points"] = LayerWriter(conn, layer="low_points", name=city.name, crs=city.crs).save(nodes=lows)
        if city.terrain is not None:
            t = city.terrain
            source = _json(
                {"x0_m": t.x0_m, "y0_m": t.y0_m, "cell_m": t.cell_m, "elevation_m": np.round(t.elevation_m, 3).tolist()}
            )
            versions["terrain"] = LayerWriter(
                conn, layer="terrain", name=city.name, crs=city.crs, source_format="grid-json", source=source
            ).save()
        if city.streets or city.rivers:
            source = _json(
                {
                    "streets": [[list(p) for p in street] for street in city.streets],
                    "kinds": list(city.street_kinds),
                    "rivers": [[list(p) for p in ring] for ring in city.rivers],
                }
            )
            versions["streets"] = LayerWriter(
                conn, layer="streets", name=city.name, crs=city.crs, source_format="lines-json", source=source
            ).save()
    return versions


def layer_versions(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    """Return every stored version of every layer (newest first per layer), without the sources."""
    cur = conn.cursor(row_factory=dict_row)
    cur.execute(
        "SELECT model_id, layer, version, name, crs, source_format, checksum, counts, imported_at"
        " FROM twin_models ORDER BY layer, version DESC"
    )
    return cur.fetchall()


def _current(conn: psycopg.Connection[Any]) -> dict[str, dict[str, Any]]:
    cur = conn.cursor(row_factory=dict_row)
    cur.execute(
        "SELECT DISTINCT ON (layer) model_id, layer, version, name, crs, source_format, source"
        " FROM twin_models ORDER BY layer, version DESC"
    )
    return {row["layer"]: row for row in cur.fetchall()}


def load_city(conn: psycopg.Connection[Any], *, name: str = "") -> City:
    """Rebuild the city from the current version of every stored layer (sensors are not included)."""
    current = _current(conn)
    crs = next((row["crs"] for row in current.values()), "")
    city = City(name=name or next((row["name"] for row in current.values()), ""), crs=crs)
    cur = conn.cursor(row_factory=dict_row)
    for layer in NETWORK_LAYERS:
        if layer not in current:
            continue
        meta = current[layer]
        net = PipeNetwork(
            kind=Network(layer), name=meta["name"], source=meta["source"], source_format=meta["source_format"]
        )
        cur.execute("SELECT * FROM twin_nodes WHERE model_id = %s ORDER BY node_id", (meta["model_id"],))
        for r in cur.fetchall():
            net.nodes[r["node_id"]] = Node(
                r["node_id"], NodeKind(r["kind"]), r["x_m"], r["y_m"], r["z_m"], r["depth_m"], r["ground_m"], r["attrs"]
            )
        cur.execute("SELECT * FROM twin_links WHERE model_id = %s ORDER BY link_id", (meta["model_id"],))
        for r in cur.fetchall():
            net.links[r["link_id"]] = Link(
                r["link_id"],
                LinkKind(r["kind"]),
                r["from_id"],
                r["to_id"],
                r["diameter_m"],
                r["length_m"],
                r["roughness"],
                tuple((float(p[0]), float(p[1])) for p in r["vertices"]),
                r["attrs"],
            )
        cur.execute("SELECT * FROM twin_valves WHERE model_id = %s ORDER BY valve_id", (meta["model_id"],))
        for r in cur.fetchall():
            net.valves[r["valve_id"]] = IsolationValve(
                r["valve_id"], r["link_id"], r["near_node_id"], r["x_m"], r["y_m"]
            )
        city.networks[net.kind] = net
    if "buildings" in current:
        cur.execute(
            "SELECT * FROM twin_buildings WHERE model_id = %s ORDER BY building_id", (current["buildings"]["model_id"],)
        )
        for r in cur.fetchall():
            city.buildings[r["building_id"]] = Building(
                r["building_id"],
                tuple((float(p[0]), float(p[1])) for p in r["footprint"]),
                r["height_m"],
                r["floors"],
                r["ground_m"],
                BuildingUse(r["use"]),
                r["basement"],
                r["occupants"],
                r["name"],
            )
    if "spaces" in current:
        cur.execute("SELECT * FROM twin_nodes WHERE model_id = %s ORDER BY node_id", (current["spaces"]["model_id"],))
        for r in cur.fetchall():
            city.spaces[r["node_id"]] = UndergroundSpace(
                r["node_id"],
                SpaceKind(r["kind"]),
                r["x_m"],
                r["y_m"],
                r["z_m"],
                r["attrs"]["volume_m3"],
                tuple(r["attrs"]["near"]),
            )
    if "low_points" in current:
        cur.execute(
            "SELECT * FROM twin_nodes WHERE model_id = %s ORDER BY node_id", (current["low_points"]["model_id"],)
        )
        for r in cur.fetchall():
            city.low_points[r["node_id"]] = LowPoint(
                r["node_id"], r["attrs"]["name"], r["x_m"], r["y_m"], r["z_m"], r["kind"], r["depth_m"]
            )
    if "terrain" in current:
        grid = orjson.loads(current["terrain"]["source"])
        city.terrain = Terrain(
            grid["x0_m"], grid["y0_m"], grid["cell_m"], np.asarray(grid["elevation_m"], dtype=np.float64)
        )
    if "streets" in current:
        lines = orjson.loads(current["streets"]["source"])
        city.streets = [tuple((float(x), float(y)) for x, y in street) for street in lines["streets"]]
        city.street_kinds = [str(k) for k in lines["kinds"]]
        city.rivers = [tuple((float(x), float(y)) for x, y in ring) for ring in lines["rivers"]]
    return city
