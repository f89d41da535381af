"""The demo city's sensors, each bound to an asset of the twin, with alarm limits per grade.

Placement follows what a city would instrument first: every outfall, low point and underpass; trunk sewers and a
share of manholes; water pressure across the grid and flow at the plant and tank; gas pressure at the regulators
and across the network; methane in every underground space next to gas; rain gauges across the area.

Road ponding limits follow common urban waterlogging practice (15 / 27 / 40 / 50 cm of water on the road);
methane alarms start at 20 %LEL (GB 50838 practice) and are graded above.
"""

from __future__ import annotations

from collections.abc import Iterable

from twin.model import City, LinkKind, NodeKind, PipeNetwork, asset_ref
from twin.sensors import AlarmLimit, Direction, Grade, Network, Quantity, Sensor

WEST_DISTRICT = "吉州区"
EAST_DISTRICT = "青原区"


def _limits(direction: Direction, iv: float, iii: float, ii: float, i: float) -> tuple[AlarmLimit, ...]:
    return tuple(
        AlarmLimit(g, direction, round(v, 3))
        for g, v in ((Grade.IV, iv), (Grade.III, iii), (Grade.II, ii), (Grade.I, i))
    )


def _district(city: City, x_m: float) -> str:
    if city.terrain is None:
        return WEST_DISTRICT
    xmin, _ymin, xmax, _ymax = city.terrain.bounds
    return WEST_DISTRICT if x_m < (xmin + xmax) / 2 else EAST_DISTRICT


def _every(items: Iterable[str], step: int) -> list[str]:
    return [item for k, item in enumerate(sorted(items)) if k % step == 0]


def _drainage(city: City, net: PipeNetwork) -> list[Sensor]:
    out: list[Sensor] = []
    out_diam: dict[str, float] = {}
    for link in net.links.values():
        if link.diameter_m > 0:  # weirs and orifices have no diameter: they do not set a crown
            out_diam[link.from_id] = max(out_diam.get(link.from_id, 0.0), link.diameter_m)
    # A low point's level sensor sits on the node where its water gathers: the node tagged with the low point
    # (a gully or an underpass wet well), else the nearest node.
    low_nodes: dict[str, str] = {}
    tagged = {str(n.attrs["low_point"]): n.node_id for n in net.nodes.values() if n.attrs.get("low_point")}
    for lp in city.low_points.values():
        node_id = (
            tagged.get(lp.point_id)
            or min(net.nodes.values(), key=lambda n: (n.x_m - lp.x_m) ** 2 + (n.y_m - lp.y_m) ** 2).node_id
        )
        low_nodes[node_id] = lp.name
    junctions = [n for n in net.nodes.values() if n.kind is NodeKind.JUNCTION]
    trunk = set(_every((lid for lid, link in net.links.items() if link.diameter_m >= 1.2), 4))
    watched = set(low_nodes) | set(_every((n.node_id for n in junctions if out_diam.get(n.node_id, 0) >= 1.2), 2))
    watched |= set(_every((n.node_id for n in junctions), 5))
    for nid in sorted(watched):
        node = net.nodes[nid]
        depth = max(node.depth_m, 1.0)
        crown = min(out_diam.get(nid, 0.3), depth * 0.6)
        name = low_nodes.get(nid, f"检查井 {nid}")
        out.append(
            Sensor(
                sensor_id=f"DL-{nid}",
                network=Network.DRAINAGE,
                quantity=Quantity.LEVEL,
                name=f"{name} 液位",
                asset_id=asset_ref(Network.DRAINAGE, nid),
                district=_district(city, node.x_m),
                x_m=node.x_m,
                y_m=node.y_m,
                valid_min=0.0,
                valid_max=depth + 2.0,
                interval_s=60.0,
                limits=_limits(Direction.HIGH, crown, crown + 0.5 * (depth - crown), 0.85 * depth, depth),
            )
        )
    flow_links = sorted(
        trunk | {lid for lid, link in net.links.items() if net.nodes[link.to_id].kind is NodeKind.OUTFALL}
    )
    for lid in flow_links:
        link = net.links[lid]
        a, b = net.endpoints(link)
        out.append(
            Sensor(
                sensor_id=f"DF-{lid}",
                network=Network.DRAINAGE,
                quantity=Quantity.FLOW,
                name=f"管道 {lid} 流量",
                asset_id=asset_ref(Network.DRAINAGE, lid),
                district=_district(city, a.x_m),
                x_m=(a.x_m + b.x_m) / 2,
                y_m=(a.y_m + b.y_m) / 2,
                valid_min=-50.0,
                valid_max=50_000.0,
                interval_s=60.0,
            )
        )
    return out


def _water(city: City, net: PipeNetwork) -> list[Sensor]:
    out: list[Sensor] = []
    junctions = sorted(n.node_id for n in net.nodes.values() if n.kind is NodeKind.JUNCTION)
    for nid in _every(junctions, 2):
        node = net.nodes[nid]
        out.append(
            Sensor(
                sensor_id=f"WP-{nid}",
                network=Network.WATER,
                quantity=Quantity.PRESSURE,
                name=f"供水节点 {nid} 压力",
                asset_id=asset_ref(Network.WATER, nid),
                district=_district(city, node.x_m),
                x_m=node.x_m,
                y_m=node.y_m,
                valid_min=-50.0,
                valid_max=1600.0,
                interval_s=60.0,
                limits=_limits(Direction.LOW, 200.0, 160.0, 120.0, 80.0),
            )
        )
    for node in net.nodes.values():
        if node.kind is NodeKind.TANK:
            out.append(
                Sensor(
                    sensor_id=f"WL-{node.node_id}",
                    network=Network.WATER,
                    quantity=Quantity.LEVEL,
                    name=f"高位水池 {node.node_id} 水位",
                    asset_id=asset_ref(Network.WATER, node.node_id),
                    district=_district(city, node.x_m),
                    x_m=node.x_m,
                    y_m=node.y_m,
                    valid_min=0.0,
                    valid_max=max(node.depth_m, 1.0) + 1.0,
                    interval_s=60.0,
                    limits=_limits(Direction.LOW, 0.3 * node.depth_m, 0.2 * node.depth_m, 0.1 * node.depth_m, 0.02),
                )
            )
    big = sorted(
        (link for link in net.links.values() if link.kind in (LinkKind.PIPE, LinkKind.PUMP)),
        key=lambda link: (-link.diameter_m, link.link_id),
    )
    sources = {n.node_id for n in net.nodes.values() if n.kind in (NodeKind.RESERVOIR, NodeKind.TANK)}
    chosen = [link for link in big if link.from_id in sources or link.to_id in sources] + big[:20]
    seen: set[str] = set()
    for link in chosen:
        if link.link_id in seen:
            continue
        seen.add(link.link_id)
        a, b = net.endpoints(link)
        out.append(
            Sensor(
                sensor_id=f"WF-{link.link_id}",
                network=Network.WATER,
                quantity=Quantity.FLOW,
                name=f"供水管 {link.link_id} 流量",
                asset_id=asset_ref(Network.WATER, link.link_id),
                district=_district(city, a.x_m),
                x_m=(a.x_m + b.x_m) / 2,
                y_m=(a.y_m + b.y_m) / 2,
                valid_min=-5000.0,
                valid_max=5000.0,
                interval_s=60.0,
            )
        )
    return out


def _gas(city: City, net: PipeNetwork) -> list[Sensor]:
    out: list[Sensor] = []
    regulated = {link.to_id for link in net.links.values() if link.kind is LinkKind.REGULATOR}
    junctions = sorted(n.node_id for n in net.nodes.values() if n.kind is NodeKind.JUNCTION)
    for nid in sorted(regulated | set(_every(junctions, 3))):
        node = net.nodes[nid]
        medium = float(node.attrs.get("pn_bar", 0.0)) > 0.5
        limits = (
            _limits(Direction.LOW, 150.0, 120.0, 100.0, 80.0) if medium else _limits(Direction.LOW, 1.8, 1.5, 1.2, 0.9)
        )
        out.append(
            Sensor(
                sensor_id=f"GP-{nid}",
                network=Network.GAS,
                quantity=Quantity.PRESSURE,
                name=f"{'中压' if medium else '低压'}燃气节点 {nid} 压力",
                asset_id=asset_ref(Network.GAS, nid),
                district=_district(city, node.x_m),
                x_m=node.x_m,
                y_m=node.y_m,
                valid_min=-5.0,
                valid_max=1000.0,
                interval_s=60.0,
                limits=limits,
            )
        )
    kinds_zh = {
        "manhole": "检查井",
        "utility_vault": "阀门井",
        "utility_tunnel": "综合管廊",
        "basement": "地下室",
        "underpass": "下穿通道",
    }
    # Every valve well and tunnel compartment; a share of basements and manholes.
    share = {"utility_vault": 1, "utility_tunnel": 1, "basement": 4, "manhole": 3, "underpass": 1}
    by_kind: dict[str, list[str]] = {}
    for sid, space in sorted(city.spaces.items()):
        by_kind.setdefault(space.kind.value, []).append(sid)
    watched = [sid for kind, ids in by_kind.items() for sid in _every(ids, share.get(kind, 1))]
    for sid in sorted(watched):
        space = city.spaces[sid]
        out.append(
            Sensor(
                sensor_id=f"GM-{sid}",
                network=Network.GAS,
                quantity=Quantity.METHANE,
                name=f"{kinds_zh.get(space.kind.value, space.kind.value)} {sid} 甲烷",
                asset_id=f"space:{sid}",
                district=_district(city, space.x_m),
                x_m=space.x_m,
                y_m=space.y_m,
                valid_min=0.0,
                valid_max=100.0,
                interval_s=30.0,
                limits=_limits(Direction.HIGH, 20.0, 35.0, 50.0, 75.0),
            )
        )
    return out


def _rain(city: City) -> list[Sensor]:
    if city.terrain is None:
        return []
    xmin, ymin, xmax, ymax = city.terrain.bounds
    out = []
    for k, (fx, fy) in enumerate(((0.25, 0.3), (0.75, 0.3), (0.25, 0.75), (0.75, 0.75)), start=1):
        x, y = xmin + fx * (xmax - xmin), ymin + fy * (ymax - ymin)
        out.append(
            Sensor(
                sensor_id=f"RG-{k:02d}",
                network=Network.RAIN,
                quantity=Quantity.RAIN_RATE,
                name=f"雨量站 {k:02d}",
                asset_id=None,
                district=_district(city, x),
                x_m=x,
                y_m=y,
                valid_min=0.0,
                valid_max=300.0,
                interval_s=60.0,
                limits=_limits(Direction.HIGH, 16.0, 30.0, 50.0, 70.0),
            )
        )
    return out


def place_sensors(city: City) -> dict[str, Sensor]:
    """Return the demo city's sensors by id, bound to the city's networks, spaces and low points."""
    sensors: list[Sensor] = []
    if Network.DRAINAGE in city.networks:
        sensors += _drainage(city, city.networks[Network.DRAINAGE])
    if Network.WATER in city.networks:
        sensors += _water(city, city.networks[Network.WATER])
    if Network.GAS in city.networks:
        sensors += _gas(city, city.networks[Network.GAS])
    sensors += _rain(city)
    return {s.sensor_id: s for s in sensors}
