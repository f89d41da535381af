"""`lifeline twin …` as an operator uses it: import real models, see what the twin holds, export the scene."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pystorms
import pytest
import wntr

from twin.store.db import DictConnection

pytestmark = pytest.mark.integration
NET3 = Path(wntr.__file__).parent / "library" / "networks" / "Net3.inp"
THETA = Path(pystorms.__file__).parent / "networks" / "theta.inp"


def _lifeline(pg_url: str, schema: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LIFELINE_DATABASE_URL": pg_url, "LIFELINE_DB_SCHEMA": schema}
    return subprocess.run(
        [sys.executable, "-m", "lifeline", *args], env=env, capture_output=True, text=True, timeout=300, check=False
    )


def test_import_info_reimport_and_export_scene(pg_url: str, schema: str, db: DictConnection, tmp_path: Path) -> None:
    geojson = tmp_path / "blocks.geojson"
    ring = [[114.99, 27.11], [114.9905, 27.11], [114.9905, 27.1104], [114.99, 27.1104], [114.99, 27.11]]
    geojson.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "id": "H1",
                        "properties": {"height": 30, "building": "hospital"},
                        "geometry": {"type": "Polygon", "coordinates": [ring]},
                    }
                ],
            }
        )
    )
    result = _lifeline(pg_url, schema, "twin", "import", str(THETA), str(NET3), str(geojson))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "drainage:" in lines[0] and "→ version 1" in lines[0]
    assert "water: 97 nodes" in lines[1] and "→ version 1" in lines[1]  # Net3: 92 junctions, 2 reservoirs, 3 tanks
    assert "4 level/pressure controls (watched live" in lines[1]  # pipes 330 and 335 on tank 1's level
    assert "1 buildings → version 1" in lines[2]

    again = _lifeline(pg_url, schema, "twin", "import", str(NET3))
    assert "→ version 1" in again.stdout  # unchanged: no new version

    info = _lifeline(pg_url, schema, "twin", "info", "--json")
    layers = json.loads(info.stdout)["layers"]
    assert layers["water"]["counts"]["links"] == 119 and layers["drainage"]["version"] == 1
    assert layers["buildings"]["counts"]["buildings"] == 1

    scene = _lifeline(pg_url, schema, "twin", "export-scene", "--out", str(tmp_path / "scene"))
    assert scene.returncode == 0, scene.stderr
    assert (tmp_path / "scene" / "scene.glb").read_bytes()[:4] == b"glTF"


def test_import_of_a_broken_file_names_file_line_and_field(pg_url: str, schema: str, tmp_path: Path) -> None:
    broken = tmp_path / "broken.inp"
    text = NET3.read_text()
    broken.write_text(text.replace(" 10              \t147 ", " 10              \tabc ", 1))
    result = _lifeline(pg_url, schema, "twin", "import", str(broken))
    assert result.returncode == 1
    assert "broken.inp:" in result.stderr and "field 'elevation'" in result.stderr, result.stderr
    assert _lifeline(pg_url, schema, "twin", "import", str(tmp_path / "nope.txt")).returncode == 2
