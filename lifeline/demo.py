"""``lifeline demo``: the whole product on one machine, with embedded servers where none are configured."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import uvicorn

from ingest.service import IngestService
from lifeline.embedded import EmbeddedServer, start_broker, start_postgres
from lifeline.settings import Settings
from simulators.demo_stream import run_demo_stream
from twin.democity.city import build_demo_city
from twin.errors import ServiceError
from twin.scene import export_scene
from twin.store.assets import save_city
from twin.store.db import connect
from twin.store.schema import migrate
from twin.store.sensors import upsert_sensors
from viewer.app import create_app

log = logging.getLogger(__name__)

DEMO_START_TICK = 12
"""Start the demo storm a little before the rain crosses its first limit, so the first alert comes within seconds."""


def _interrupt(_sig: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _check_port_free(host: str, port: int) -> None:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError as exc:
            raise ServiceError(f"cannot serve on {host}:{port} ({exc.strerror}); choose another with --port") from exc


def demo_cache_dir() -> Path:
    """Where the demo keeps what it can reuse between runs (the what-if surrogate): ``$XDG_CACHE_HOME/lifeline``."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lifeline"


def _whatif_in_background(app: Any, city: Any, stop: threading.Event) -> None:
    """Give the viewer a what-if surrogate: from the cache, or trained now on one SWMM worker."""
    from viewer.whatif import DEMO_STORMS, WhatIf, demo_surrogate

    def progress(done: int, total: int) -> None:
        if done in (1, total) or done % 6 == 0:
            print(f"what-if surrogate: {done}/{total} storms run in SWMM", flush=True)

    try:
        cache = demo_cache_dir()
        if not any(cache.glob("surrogate-*/surrogate.json")):
            print(f"training the what-if surrogate in the background ({len(DEMO_STORMS)} SWMM runs) …", flush=True)
        folder = demo_surrogate(city, cache, stop=stop.is_set, progress=progress)
        if folder is None:
            return
        app.state.whatif = WhatIf.load(folder, city)
        print("what-ifs ready: the 3D page's 快速推演 panel (GET /api/risk/whatif)", flush=True)
    except Exception:  # the demo goes on without what-ifs
        log.exception("no what-ifs in this demo: the surrogate could not be trained or loaded")


def run_demo(settings: Settings, *, interval_s: float = 2.0, whatif: bool = True) -> None:
    """Start everything, print the page's URL, and run until Ctrl-C (or SIGTERM); then stop everything.

    Raises:
        ServiceError: a server could not be started or reached.
    """
    _check_port_free(settings.http_host, settings.http_port)
    # uvicorn handles SIGINT/SIGTERM while it runs and re-raises them afterwards: make SIGTERM unwind like Ctrl-C
    # so the clean-up below always runs.
    signal.signal(signal.SIGTERM, _interrupt)
    servers: list[EmbeddedServer] = []
    stop = threading.Event()
    ingest: IngestService | None = None
    stream: threading.Thread | None = None
    temp_dirs: list[Path] = []
    try:
        db_url = settings.database_url
        if not db_url:
            print("starting embedded PostgreSQL …", flush=True)
            pg = start_postgres()
            servers.append(pg)
            db_url = pg.url
        mqtt_url, protocol = settings.mqtt_url, settings.mqtt_protocol
        if not mqtt_url:
            print("starting embedded MQTT broker …", flush=True)
            broker, protocol = start_broker(kind=settings.embedded_broker)
            servers.append(broker)
            mqtt_url = broker.url
        schema = settings.db_schema
        print("building the demo city (吉安示范片区) …", flush=True)
        city = build_demo_city()
        scene_dir = Path(tempfile.mkdtemp(prefix="lifeline-scene-"))
        temp_dirs.append(scene_dir)
        export_scene(city, scene_dir)
        with connect(db_url, schema=schema, autocommit=True) as conn:
            mode = migrate(conn, schema=schema, mode=settings.storage_mode)
            save_city(conn, city)
            upsert_sensors(conn, city.sensors.values())
        mqtt_config = replace(settings.mqtt_config(mqtt_url), protocol=protocol, client_id="lifeline-demo-ingest")
        ingest = IngestService(
            conninfo=db_url,
            schema=schema,
            mqtt_config=mqtt_config,
            prefix=settings.topic_prefix,
            limits=settings.payload_limits(),
            batch_max=settings.ingest_batch_max,
            flush_interval_s=settings.ingest_flush_interval_s,
            db_writers=settings.ingest_db_writers,
            fold_interval_s=settings.ingest_fold_interval_s,
            batch_idle_s=settings.ingest_batch_idle_s,
            live_batch_messages=settings.ingest_live_batch_messages,
            settle_gc=True,
            raw_retention_days=settings.raw_retention_days,
        )
        ingest.start()
        if not ingest.wait_ready(15):
            raise ServiceError(f"ingest could not subscribe at {mqtt_config.url}")
        stream = threading.Thread(
            target=run_demo_stream,
            name="demo-stream",
            daemon=True,
            kwargs={
                "sensors": list(city.sensors.values()),
                "mqtt_config": mqtt_config,
                "prefix": settings.topic_prefix,
                "interval_s": interval_s,
                "start_tick": DEMO_START_TICK,
                "stop": stop,
            },
        )
        stream.start()
        drill_env = {
            "LIFELINE_MQTT_URL": mqtt_url,
            "LIFELINE_MQTT_PROTOCOL": protocol,
            "LIFELINE_TOPIC_PREFIX": settings.topic_prefix,
            "LIFELINE_DATABASE_URL": db_url,
            "LIFELINE_DB_SCHEMA": schema,
        }
        app = create_app(conninfo=db_url, schema=schema, drill=True, scene_dir=scene_dir, drill_env=drill_env)
        if whatif:
            threading.Thread(
                target=_whatif_in_background, args=(app, city, stop), name="demo-whatif", daemon=True
            ).start()
        server = uvicorn.Server(
            uvicorn.Config(
                app, host=settings.http_host, port=settings.http_port, log_level="warning", ws="websockets-sansio"
            )
        )
        url = f"http://{settings.http_host}:{settings.http_port}/"

        def announce() -> None:
            while not server.started and not server.should_exit:
                time.sleep(0.05)
            if server.started:
                print(
                    f"\nLifeline Twin demo ({mode.value}, broker {mqtt_config.url}) is running:\n\n"
                    f"    {url}          operations page\n    {url}scene     3D city\n\n"
                    f"{city.name}: {len(city.buildings)} buildings, {len(city.sensors)} sensors. "
                    "Press Ctrl-C to stop.\n",
                    flush=True,
                )

        threading.Thread(target=announce, daemon=True).start()
        server.run()
    finally:
        stop.set()
        if stream is not None:
            stream.join(10)
        if ingest is not None:
            ingest.stop()
        for srv in reversed(servers):
            srv.stop()
        for path in temp_dirs:
            shutil.rmtree(path, ignore_errors=True)
        print("demo stopped", flush=True)
