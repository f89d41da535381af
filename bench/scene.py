"""3D scene benchmark: build + export time and GLB size, and the page's load time in headless Chromium.

Cities: the demo city (``build_demo_city()``: ~820 buildings, its SWMM, EPANET and pandapipes networks and
sensors) and the same generator at ten times the area (``build_demo_city(scale=10)``: ~10,000 buildings, ~13,000
links). The page is served by uvicorn with the scene router and loaded in Chromium with software WebGL
(SwiftShader); its load time is what the page reports: from navigation start to the first frame drawn with the
scene.

    python bench/scene.py                 # medians of 3 runs, demo and 10x city
    python bench/scene.py --runs 5 --scales 10 --no-browser

Prints a table of medians.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from twin.democity.city import build_demo_city
from twin.model import City
from twin.scene import build_scene, export_scene
from viewer.app import STATIC_DIR
from viewer.routes import scene as scene_routes

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--use-gl=angle",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
]


@dataclass(slots=True)
class Row:
    """Medians for one city: seconds, megabytes, milliseconds."""

    city: str
    buildings: int
    links: int
    triangles: int
    city_s: float
    build_s: float
    export_s: float
    glb_mb: float
    meta_mb: float
    gz_mb: float
    load_ms: float | None = None
    first_frame_ms: float | None = None


def measure_export(city: City, runs: int, out: Path) -> tuple[float, float, int, float, float, float]:
    """Return median build seconds, median export seconds, triangles, GLB MB, metadata MB and both gzipped, MB."""
    builds, exports = [], []
    triangles = 0
    for _ in range(runs):
        started = time.perf_counter()
        scene = build_scene(city)
        builds.append(time.perf_counter() - started)
        started = time.perf_counter()
        paths = export_scene(scene, out)
        exports.append(time.perf_counter() - started)
        triangles = paths.triangles
    return (
        statistics.median(builds),
        statistics.median(exports),
        triangles,
        (out / "scene.glb").stat().st_size / 1e6,
        (out / "scene-meta.json").stat().st_size / 1e6,
        sum(p.stat().st_size for p in out.glob("*.gz")) / 1e6,
    )


@contextmanager
def serve(scene_dir: Path) -> Iterator[str]:
    """Serve the scene page and API for *scene_dir* on a free port; yield the base URL."""
    app = FastAPI()
    app.include_router(scene_routes.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.state.scene_dir = scene_dir
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def measure_page(url: str, runs: int) -> tuple[float, float]:
    """Return the median load time and time to the first frame, ms since navigation, over fresh browser contexts."""
    from playwright.sync_api import sync_playwright

    loads, frames = [], []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        for _ in range(runs):
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            page.goto(f"{url}/scene")
            page.wait_for_selector("#status[data-ready='1'], #status[data-error]", timeout=120_000)
            result: dict[str, Any] = page.evaluate("() => window.lifelineScene.ready")
            loads.append(float(result["loadMs"]))
            frames.append(float(result["timings"]["firstFrame"]))
            print(f"    page load {result['loadMs']} ms: {result['timings']}", file=sys.stderr)
            page.close()
        browser.close()
    return statistics.median(loads), statistics.median(frames)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="runs per measurement; medians are reported")
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 10], help="city area multiples")
    parser.add_argument("--no-browser", action="store_true", help="skip the page load measurement")
    args = parser.parse_args()
    browser = not args.no_browser and shutil.which(CHROMIUM) is not None

    rows: list[Row] = []
    for scale in args.scales:
        started = time.perf_counter()
        city = build_demo_city(scale=scale)
        city_s = time.perf_counter() - started
        with tempfile.TemporaryDirectory(prefix="scene-bench-") as tmp:
            out = Path(tmp)
            build_s, export_s, triangles, glb_mb, meta_mb, gz_mb = measure_export(city, args.runs, out)
            row = Row(
                city="demo" if scale == 1 else f"demo x{scale}",
                buildings=len(city.buildings),
                links=sum(len(n.links) for n in city.networks.values()),
                triangles=triangles,
                city_s=city_s,
                build_s=build_s,
                export_s=export_s,
                glb_mb=glb_mb,
                meta_mb=meta_mb,
                gz_mb=gz_mb,
            )
            if browser:
                with serve(out) as url:
                    row.load_ms, row.first_frame_ms = measure_page(url, args.runs)
        rows.append(row)
        print(f"… {city.name}: done", file=sys.stderr)

    header = (
        f"{'city':<10} {'buildings':>9} {'links':>6} {'triangles':>9} {'city s':>7} {'build s':>8} {'export s':>8} "
        f"{'total s':>8} {'GLB MB':>7} {'meta MB':>7} {'gzip MB':>7} {'page load ms':>12} {'1st frame ms':>12}"
    )
    print(
        f"median of {args.runs} runs; export = GLB + metadata (+ gzip copies, what a browser downloads) encoded and "
        "written; page times from navigation start"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        load = f"{r.load_ms:>12.0f}" if r.load_ms is not None else f"{'–':>12}"
        frame = f"{r.first_frame_ms:>12.0f}" if r.first_frame_ms is not None else f"{'–':>12}"
        print(
            f"{r.city:<10} {r.buildings:>9} {r.links:>6} {r.triangles:>9} {r.city_s:>7.2f} {r.build_s:>8.2f} "
            f"{r.export_s:>8.2f} {r.build_s + r.export_s:>8.2f} {r.glb_mb:>7.1f} {r.meta_mb:>7.1f} {r.gz_mb:>7.1f} "
            f"{load} {frame}"
        )


if __name__ == "__main__":
    main()
