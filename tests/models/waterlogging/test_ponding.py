"""Fill-and-spill ponding on small synthetic terrains, and the disc fallback without terrain."""

from __future__ import annotations

import numpy as np
import pytest

from models.waterlogging.ponding import PondingModel
from twin.errors import ConfigError
from twin.model import Node, NodeKind, PipeNetwork, Terrain
from twin.sensors import Network


def _network(*points: tuple[str, float, float]) -> PipeNetwork:
    network = PipeNetwork(kind=Network.DRAINAGE, name="test")
    for node_id, x, y in points:
        network.nodes[node_id] = Node(node_id, NodeKind.JUNCTION, x, y, 40.0, 2.0, 42.0)
    return network


def _two_bowls() -> Terrain:
    """A 30 × 12 grid of 10 m cells sloping down to x = 0, with a deep bowl upstream and a shallow one below."""
    xs, ys = np.meshgrid(np.arange(30) * 10.0, np.arange(12) * 10.0)
    z = 50.0 + 0.02 * xs
    z -= 2.0 * np.exp(-((xs - 220.0) ** 2 + (ys - 60.0) ** 2) / (2 * 25.0**2))
    z -= 1.0 * np.exp(-((xs - 90.0) ** 2 + (ys - 60.0) ** 2) / (2 * 20.0**2))
    return Terrain(0.0, 0.0, 10.0, z)


def test_water_is_held_or_lost_never_made() -> None:
    model = PondingModel(_network(("A", 220.0, 60.0), ("B", 90.0, 60.0)), _two_bowls())
    ponds = model.fill({"A": 500.0, "B": 50.0})
    assert ponds.total_m3 == pytest.approx(550.0)
    assert float(ponds.volume_m3.sum()) + ponds.lost_m3 == pytest.approx(550.0)
    grid = model.depth_grid(ponds)
    assert float(grid.sum()) * 100.0 == pytest.approx(float(ponds.volume_m3.sum()), rel=1e-6)


def test_full_bowl_spills_into_the_next_one_downhill() -> None:
    model = PondingModel(_network(("A", 220.0, 60.0), ("B", 90.0, 60.0)), _two_bowls())
    upper = model.node_lake("A")
    lower = model.node_lake("B")
    assert model.lakes[upper].downstream == lower
    small = model.fill({"A": 10.0})
    assert small.volume_m3[lower] == 0.0
    capacity = model.lakes[upper].capacity_m3
    big = model.fill({"A": capacity + 100.0})
    assert big.volume_m3[upper] == pytest.approx(capacity)
    assert big.volume_m3[lower] + big.lost_m3 == pytest.approx(100.0)
    assert big.volume_m3[lower] > 0.0


def test_deeper_with_more_water() -> None:
    model = PondingModel(_network(("A", 220.0, 60.0)), _two_bowls())
    cell = model.cells_near(220.0, 60.0, 1.0)
    depths = [float(model.depth_at_cells(model.fill({"A": v}), cell).max()) for v in (10.0, 100.0, 1000.0)]
    assert 0.0 < depths[0] < depths[1] < depths[2]


def test_without_terrain_each_node_ponds_on_its_disc() -> None:
    model = PondingModel(_network(("A", 0.0, 0.0), ("B", 5.0, 0.0)), None)
    ponds = model.fill({"A": 250.0})
    depth = model.depth_at_cells(ponds, np.concatenate([model.node_cells("A"), model.node_cells("B")]))
    assert depth[0] == pytest.approx(0.5)  # 250 m³ over the default 500 m²
    assert depth[1] == 0.0


def test_wrong_number_of_volumes_is_refused() -> None:
    model = PondingModel(_network(("A", 0.0, 0.0)), None)
    with pytest.raises(ConfigError, match="node volumes"):
        model.fill(np.zeros(3))
