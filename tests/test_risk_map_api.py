"""The waterlogging risk map over the API: stored, the newest served, in lon/lat or in the 3D scene's frame."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import shapely.geometry

from twin.crs import to_lonlat
from twin.scene import META_NAME
from twin.store.db import DictConnection
from twin.store.risk_maps import save_risk_map
from viewer.app import create_app
from viewer.auth import Authenticator, Role, add_token

from .conftest import serve

pytestmark = pytest.mark.integration

CRS = "EPSG:4547"
ORIGIN = (598_400.0, 3_000_600.0, 60.0)


def _map(issued: datetime, *, source: str = "nowcast") -> dict[str, Any]:
    """A small map: an underpass 100 m east and 50 m north of the origin, a street and a pond."""

    def ll(dx: float, dy: float) -> list[float]:
        return list(to_lonlat(CRS, ORIGIN[0] + dx, ORIGIN[1] + dy))

    square = [ll(-20, -20), ll(20, -20), ll(20, 20), ll(-20, 20), ll(-20, -20)]
    return {
        "type": "FeatureCollection",
        "properties": {"issued": issued.isoformat(), "source": source, "horizon_s": 21600},
        "features": [
            {
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": ll(100, 50)},
                "properties": {"ref": "low_point:LP1", "kind": "underpass", "grade": 1, "depth_m": 0.6},
            },
            {
                "type": "Feature",
                "geometry": {"type": "LineString", "coordinates": [ll(-100, 0), ll(0, 0)]},
                "properties": {"ref": "road:1", "kind": "road", "grade": 3, "depth_m": 0.2},
            },
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": [square]},
                "properties": {"kind": "pond", "lake": 0, "depth_m": 0.4, "volume_m3": 300.0},
            },
        ],
    }


@pytest.fixture
def scene_meta_dir(tmp_path: Path) -> Path:
    (tmp_path / META_NAME).write_bytes(orjson.dumps({"crs": CRS, "origin_m": list(ORIGIN)}))
    return tmp_path


def test_newest_map_is_served_in_lonlat_and_in_the_scene_frame(
    pg_url: str, schema: str, db: DictConnection, scene_meta_dir: Path
) -> None:
    t0 = datetime(2026, 7, 1, 8, 0, tzinfo=UTC)
    with serve(create_app(conninfo=pg_url, schema=schema, scene_dir=scene_meta_dir)) as url:
        assert httpx.get(f"{url}/api/risk/map").status_code == 404
        first = httpx.post(f"{url}/api/risk/map", json=_map(t0))
        assert first.status_code == 201 and first.json()["features"] == 3
        save_risk_map(db, _map(t0 - timedelta(hours=1), source="old"))  # stored later, issued earlier
        got = httpx.get(f"{url}/api/risk/map")
        assert got.status_code == 200 and got.headers["content-type"] == "application/geo+json"
        body = got.json()
        assert body["properties"]["id"] == first.json()["id"] and body["properties"]["source"] == "nowcast"
        assert body["features"] == _map(t0)["features"]

        scene = httpx.get(f"{url}/api/risk/map", params={"frame": "scene"}).json()
        assert scene["properties"]["frame"] == "scene" and scene["properties"]["origin_m"] == list(ORIGIN)
        shapes = {f["properties"].get("ref", "pond"): shapely.geometry.shape(f["geometry"]) for f in scene["features"]}
        # The underpass: a disc round (100, 50) m; the street: a band along y = 0; the pond: the 40 m square.
        assert shapes["low_point:LP1"].geom_type == "Polygon"
        assert shapes["low_point:LP1"].centroid.distance(shapely.Point(100, 50)) < 0.5
        assert 15 < shapes["low_point:LP1"].bounds[2] - 100 < 19
        assert shapes["road:1"].contains(shapely.Point(-50, 0)) and not shapes["road:1"].contains(shapely.Point(-50, 9))
        assert abs(shapes["pond"].area - 1600) < 20

        # Unchanged since the client's copy: 304; a new map: a new ETag.
        etag = got.headers["etag"]
        assert httpx.get(f"{url}/api/risk/map", headers={"If-None-Match": etag}).status_code == 304
        httpx.post(f"{url}/api/risk/map", json=_map(t0 + timedelta(minutes=10)))
        assert httpx.get(f"{url}/api/risk/map", headers={"If-None-Match": etag}).status_code == 200

        bad = httpx.post(f"{url}/api/risk/map", json={"type": "Feature"})
        assert bad.status_code == 422 and "FeatureCollection" in bad.json()["detail"]
        naive = _map(t0)
        naive["properties"]["issued"] = "2026-07-01T08:00:00"
        assert httpx.post(f"{url}/api/risk/map", json=naive).status_code == 422


def test_scene_frame_needs_a_scene_and_storing_needs_a_role(pg_url: str, schema: str, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.toml"
    viewer = add_token(tokens, name="查看-1", role=Role.VIEWER)
    operator = add_token(tokens, name="值班员-1", role=Role.OPERATOR)
    app = create_app(conninfo=pg_url, schema=schema, auth=Authenticator.from_file(tokens))
    with serve(app) as url:
        issued = datetime(2026, 7, 1, tzinfo=UTC)
        as_viewer = {"Authorization": f"Bearer {viewer}"}
        assert httpx.post(f"{url}/api/risk/map", json=_map(issued), headers=as_viewer).status_code == 403
        stored = httpx.post(f"{url}/api/risk/map", json=_map(issued), headers={"Authorization": f"Bearer {operator}"})
        assert stored.status_code == 201
        assert httpx.get(f"{url}/api/risk/map").status_code == 401
        assert httpx.get(f"{url}/api/risk/map", headers=as_viewer).status_code == 200
        no_scene = httpx.get(f"{url}/api/risk/map", params={"frame": "scene"}, headers=as_viewer)
        assert no_scene.status_code == 404 and "no 3D scene" in no_scene.json()["detail"]
