"""The live 3D page under a reading stream: what it receives and how smoothly it runs, on the 10x demo city.

Builds the 10x demo city (``build_demo_city(scale=10)``: ~10,000 buildings, ~6,200 sensors), exports its scene,
loads its sensors into a fresh schema, and runs a private Mosquitto, ``lifeline ingest`` (detectors on) and
``lifeline serve --scene-dir`` as their own processes. A publisher process sends --rate one-reading messages per
second (QoS 1) round the city's sensors, near their normal values; every --alert-every seconds one drainage level
sensor goes above its grade II limit for twice that long, so alerts are raised and cleared during the run.

Headless Chromium (software WebGL, SwiftShader) opens ``/scene`` and measures, from inside the page:

- load time: the page's own figure (navigation start to the first frame drawn with the scene), once before the
  stream and once under it;
- frame intervals (requestAnimationFrame, median and p95) in three windows: before the stream with the camera
  orbiting (mouse drags: every frame is drawn; the baseline), and under the stream with the camera still (the page
  draws on change, and while the ring of a new grade I/II alert pulses, 10 s each) and orbiting;
- frames the page actually drew, live-state repaints and the main-thread time they and the sensor-list refreshes
  took (the page's own counters);
- what reaches the page: websocket messages and bytes per second, HTTP requests and bytes per second
  (Resource Timing), against readings published per second;
- main-thread long tasks (> 50 ms): count, total and longest.

    python bench/bench_scene_live.py                          # 10x city, 1,000 readings/s, 3 x 20 s windows
    python bench/bench_scene_live.py --scale 1 --window 10    # the demo city, quicker

Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson

from lifeline.embedded import start_broker
from lifeline.settings import mqtt_config_from_url
from simulators.publisher import Publisher
from twin.democity.city import build_demo_city
from twin.scene import export_scene
from twin.sensors import Direction, Grade, Sensor
from twin.store.db import connect
from twin.store.schema import drop_schema, migrate
from twin.store.sensors import upsert_sensors

PG_URL = os.environ.get("LIFELINE_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
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

# Counts, from inside the page, every websocket message and its bytes, and every main-thread long task.
INSTRUMENT = """
window.__bench = { ws: { messages: 0, bytes: 0 }, longTasks: [] };
const NativeWebSocket = window.WebSocket;
const utf8 = new TextEncoder();
window.WebSocket = class extends NativeWebSocket {
  constructor(...args) {
    super(...args);
    this.addEventListener("message", (ev) => {
      window.__bench.ws.messages += 1;
      window.__bench.ws.bytes += typeof ev.data === "string" ? utf8.encode(ev.data).length : (ev.data.size || 0);
    });
  }
};
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) window.__bench.longTasks.push([e.startTime, e.duration]);
}).observe({ type: "longtask", buffered: true });
"""

# Start a window: frame intervals from requestAnimationFrame, and the counters' starting values.
START_WINDOW = """() => {
  const b = window.__bench;
  const live = window.lifelineScene.live;
  b.window = { t0: performance.now(), ws0: { ...b.ws }, frames: [], last: null, running: true, live0: live };
  const w = b.window;
  const tick = (now) => {
    if (w.last !== null) w.frames.push(now - w.last);
    w.last = now;
    if (w.running) requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
}"""

END_WINDOW = """() => {
  const b = window.__bench, w = b.window;
  w.running = false;
  const t1 = performance.now();
  const resources = performance.getEntriesByType("resource").filter((e) => e.startTime >= w.t0 && e.startTime < t1);
  const byPath = {};
  for (const e of resources) {
    const path = new URL(e.name).pathname;
    byPath[path] = (byPath[path] || 0) + 1;
  }
  const tasks = b.longTasks.filter(([start]) => start >= w.t0 && start < t1);
  return {
    seconds: (t1 - w.t0) / 1000,
    frames: w.frames,
    wsMessages: b.ws.messages - w.ws0.messages,
    wsBytes: b.ws.bytes - w.ws0.bytes,
    requests: resources.length,
    requestBytes: resources.reduce((s, e) => s + (e.transferSize || e.encodedBodySize || 0), 0),
    byPath,
    longTasks: tasks.map(([, d]) => d),
    drawn: window.lifelineScene.live.frames - w.live0.frames,
    repaints: window.lifelineScene.live.repaints - w.live0.repaints,
    liveMs: window.lifelineScene.live.repaintMs - w.live0.repaintMs,
    renderMs: window.lifelineScene.live.renderMs - w.live0.renderMs,
    sensorLoads: window.lifelineScene.live.sensorLoads - w.live0.sensorLoads,
    alerts: window.lifelineScene.live.alerts,
  };
}"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _normal(sensor: Sensor) -> float:
    """A value well inside the sensor's limits (the middle of its valid range when it has none)."""
    high = [lim.threshold for lim in sensor.limits if lim.direction is Direction.HIGH]
    low = [lim.threshold for lim in sensor.limits if lim.direction is Direction.LOW]
    if high and low:
        return (min(high) + max(low)) / 2
    if high:
        return min(high) * 0.5
    if low:
        return max(low) * 1.3
    return (sensor.valid_min + sensor.valid_max) / 2 if sensor.valid_max < 1e6 else 1.0


def _stream(
    url: str,
    prefix: str,
    plan: list[tuple[str, str, str, float]],
    hot: list[tuple[str, float]],
    rate: float,
    seconds: float,
    alert_every: float,
    counter: Any,
) -> None:
    """Publish *rate* one-reading messages per second for *seconds*, round the sensors in *plan*; every
    *alert_every* seconds the next sensor of *hot* reads above its grade II limit for 2 x *alert_every* s."""
    rng = random.Random(7)
    sent = 0
    with Publisher(mqtt_config_from_url(url), client_id=f"bench-stream-{uuid.uuid4().hex[:6]}") as pub:
        t0 = time.perf_counter()
        while (elapsed := time.perf_counter() - t0) < seconds:
            period = int(elapsed / alert_every)
            hot_now = {hot[k % len(hot)][0]: hot[k % len(hot)][1] for k in (period, period - 1) if k >= 0}
            for sid, high in hot_now.items():  # the hot sensors report every 0.5 s or so
                if rng.random() < 0.02:
                    body = orjson.dumps({"ts": int(time.time() * 1000), "value": high, "unit": "m"})
                    pub.publish(f"{prefix}/drainage/{sid}", body)
                    sent += 1
            due = int(elapsed * rate)
            while sent < due:
                sid, network, unit, normal = plan[sent % len(plan)]
                if sid in hot_now:
                    sent += 1
                    continue
                value = normal * (1 + rng.uniform(-0.03, 0.03))
                body = orjson.dumps({"ts": int(time.time() * 1000), "value": value, "unit": unit})
                pub.publish(f"{prefix}/{network}/{sid}", body)
                sent += 1
            counter.value = sent
            time.sleep(0.005)


def _wait_http(url: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"the viewer at {url} did not answer within {timeout_s:.0f} s")


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _load(page: Any, url: str) -> float:
    page.goto(f"{url}/scene")
    page.wait_for_selector("#status[data-ready='1'], #status[data-error]", timeout=180_000)
    error = page.locator("#status").get_attribute("data-error")
    if error:
        raise RuntimeError(f"the scene did not load: {error}")
    page.wait_for_function(
        "() => lifelineScene.live && lifelineScene.live.enabled && lifelineScene.live.connected", timeout=60_000
    )
    return float(page.evaluate("() => lifelineScene.loadMs"))


def _orbit(page: Any, seconds: float) -> None:
    """Drag the camera round for *seconds*: left-button drags across the canvas, back and forth."""
    box = page.locator("#view canvas").bounding_box()
    cx, cy = box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.6
    t0 = time.perf_counter()
    direction = 1
    while time.perf_counter() - t0 < seconds:
        page.mouse.move(cx - 150 * direction, cy)
        page.mouse.down()
        for k in range(30):
            page.mouse.move(cx - 150 * direction + 10 * k * direction, cy + (k % 5))
            if time.perf_counter() - t0 >= seconds:
                break
        page.mouse.up()
        direction = -direction


def _row(name: str, w: dict[str, Any], readings_per_s: float) -> str:
    frames = w["frames"]
    median = statistics.median(frames) if frames else float("nan")
    tasks = w["longTasks"]
    s = w["seconds"]
    paths = ", ".join(f"{p} ×{n}" for p, n in sorted(w["byPath"].items(), key=lambda kv: -kv[1])[:3]) or "–"
    return (
        f"| {name} | {s:.0f} | {readings_per_s:,.0f} | {len(frames) / s:.1f} | {median:.1f} |"
        f" {_pct(frames, 0.95):.1f} |"
        f" {max(frames, default=float('nan')):.0f} | {w['wsMessages'] / s:.2f} | {w['wsBytes'] / s / 1024:.2f} |"
        f" {w['requests'] / s:.2f} | {w['requestBytes'] / s / 1024:.1f} | {len(tasks)} | {sum(tasks):.0f} |"
        f" {max(tasks, default=0):.0f} | {w['drawn'] / s:.1f} | {w['renderMs']:.0f} | {w['repaints']} |"
        f" {w['liveMs']:.0f} |"
        f" {w['sensorLoads']} | {paths} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=10, help="city area multiple")
    parser.add_argument("--rate", type=float, default=1000.0, help="readings (one-reading messages) per second")
    parser.add_argument("--window", type=float, default=20.0, help="seconds of each measurement window")
    parser.add_argument("--warmup", type=float, default=8.0, help="seconds of stream before measuring")
    parser.add_argument("--alert-every", type=float, default=5.0, help="seconds between new alerts")
    args = parser.parse_args()
    if not shutil.which(CHROMIUM):
        sys.exit(f"Chromium not found at {CHROMIUM}")
    from playwright.sync_api import sync_playwright

    started = time.perf_counter()
    city = build_demo_city(scale=args.scale)
    city_s = time.perf_counter() - started
    tmp = Path(tempfile.mkdtemp(prefix="bench-scene-live-"))
    started = time.perf_counter()
    export = export_scene(city, tmp / "scene")
    export_s = time.perf_counter() - started
    sensors = list(city.sensors.values())
    plan = [(s.sensor_id, s.network.value, s.unit, _normal(s)) for s in sensors]
    levels = [s for s in sensors if s.network.value == "drainage" and s.quantity.value == "level"]
    hot = [(s.sensor_id, 1.1 * lim.threshold) for s in levels for lim in s.limits if lim.grade is Grade.II][:50]
    print(
        f"… {city.name}: {len(city.buildings)} buildings, {len(sensors)} sensors, {export.triangles} triangles; "
        f"city {city_s:.1f} s, scene export {export_s:.1f} s",
        file=sys.stderr,
    )

    broker, _protocol = start_broker(kind="mosquitto")
    schema = "bench_" + uuid.uuid4().hex[:8]
    prefix = f"bench/{schema}/lifeline/v1"
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with connect(PG_URL, schema=schema, autocommit=True) as conn:
        migrate(conn, schema=schema, mode="postgresql")
        upsert_sensors(conn, sensors)
    env = {
        **os.environ,
        "LIFELINE_DATABASE_URL": PG_URL,
        "LIFELINE_MQTT_URL": broker.url,
        "LIFELINE_DB_SCHEMA": schema,
        "LIFELINE_TOPIC_PREFIX": prefix,
        "LIFELINE_MQTT_CLIENT_ID": f"ingest-{schema}",
        "LIFELINE_LOG_LEVEL": "WARNING",
        "LIFELINE_AUTH": "off",
        "LIFELINE_HTTP_PORT": str(port),
    }
    ingest = subprocess.Popen([sys.executable, "-m", "lifeline", "ingest"], env=env)
    viewer = subprocess.Popen(
        [sys.executable, "-m", "lifeline", "serve", "--scene-dir", str(tmp / "scene")],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    published = mp.Value("q", 0)
    stream = None
    try:
        _wait_http(url)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            context = browser.new_context(viewport={"width": 1440, "height": 900})
            context.add_init_script(INSTRUMENT)
            page = context.new_page()
            load_idle = _load(page, url)
            print(f"… page loaded in {load_idle:.0f} ms before the stream", file=sys.stderr)
            page.evaluate(START_WINDOW)
            _orbit(page, args.window)
            baseline = page.evaluate(END_WINDOW)
            page.evaluate("() => lifelineScene.resetView()")

            total = args.warmup + 2 * args.window + 60.0  # the second load and slack
            stream = mp.Process(
                target=_stream,
                args=(broker.url, prefix, plan, hot, args.rate, total, args.alert_every, published),
                daemon=True,
            )
            stream.start()
            time.sleep(args.warmup)
            load_busy = _load(page, url)
            print(f"… page loaded in {load_busy:.0f} ms under the stream", file=sys.stderr)
            time.sleep(2.0)

            n0 = published.value
            page.evaluate(START_WINDOW)
            time.sleep(args.window)
            still = page.evaluate(END_WINDOW)
            n1 = published.value
            page.evaluate(START_WINDOW)
            _orbit(page, args.window)
            orbit = page.evaluate(END_WINDOW)
            n2 = published.value
            browser.close()
        stream.terminate()
        stream.join(10)
        with connect(PG_URL, schema=schema, autocommit=True) as conn:
            stored = conn.execute("SELECT count(*) AS n FROM readings").fetchone()
            events = conn.execute("SELECT count(*) AS n FROM alert_events").fetchone()
    finally:
        if stream is not None and stream.is_alive():
            stream.terminate()
        for proc in (viewer, ingest):
            proc.terminate()
            proc.wait(20)
        with connect(PG_URL, schema=schema, autocommit=True) as conn:
            drop_schema(conn, schema=schema)
        broker.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    load = os.getloadavg()
    print(
        f"# live 3D page, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, {os.cpu_count()} cores, "
        f"load average {load[0]:.1f}; {city.name}: {len(city.buildings):,} buildings, {len(sensors):,} sensors, "
        f"{export.triangles:,} triangles; stream {args.rate:,.0f} readings/s asked"
    )
    print(
        f"page load: {load_idle:,.0f} ms before the stream, {load_busy:,.0f} ms under it; stored during the run "
        f"{stored['n'] if stored else 0:,} readings, {events['n'] if events else 0:,} alert events"
    )
    print(
        "| window | s | readings/s | frames/s | frame median ms | frame p95 ms | frame max ms | ws msg/s | ws KiB/s |"
        " HTTP req/s | HTTP KiB/s | long tasks | long task ms | longest ms | scene frames drawn/s | draw calls ms |"
        " repaints | live-state JS ms | sensor list loads | requests |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    print(_row("no stream, camera orbiting", baseline, 0.0))
    print(_row("camera still", still, (n1 - n0) / still["seconds"]))
    print(_row("camera orbiting", orbit, (n2 - n1) / orbit["seconds"]))


if __name__ == "__main__":
    main()
