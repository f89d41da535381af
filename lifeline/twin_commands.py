"""``lifeline twin …``: import models into the twin, show what it holds, export the 3D scene."""

from __future__ import annotations

import time
from pathlib import Path

import click
import orjson

from lifeline.settings import Settings
from twin.errors import LifelineError, ModelImportError


def detect_kind(path: Path) -> str:
    """Tell what a model file is: ``swmm``, ``epanet``, ``pandapipes`` or ``buildings``.

    Raises:
        ModelImportError: the file cannot be read or is none of these.
    """
    try:
        head = path.read_bytes()[:2_000_000]
    except OSError as exc:
        raise ModelImportError(str(path), f"cannot read: {exc.strerror}") from exc
    text = head.decode("utf-8", "replace").upper()
    if path.suffix.lower() == ".inp":
        if "[CONDUITS]" in text or "[SUBCATCHMENTS]" in text or "[OUTFALLS]" in text:
            return "swmm"
        if "[PIPES]" in text or "[RESERVOIRS]" in text:
            return "epanet"
        raise ModelImportError(str(path), "an .inp file with neither SWMM nor EPANET sections")
    if path.suffix.lower() in (".geojson", ".json"):
        if '"FEATURECOLLECTION"' in text.replace(" ", ""):
            return "buildings"
        if "PANDAPIPES" in text:
            return "pandapipes"
    raise ModelImportError(str(path), "unknown model file: expected SWMM/EPANET .inp, pandapipes .json or .geojson")


@click.group()
def twin() -> None:
    """The city twin: buildings and the drainage, water and gas networks."""


def _settings(ctx: click.Context) -> Settings:
    settings: Settings = ctx.obj
    if not settings.database_url:
        raise click.UsageError("set LIFELINE_DATABASE_URL")
    return settings


@twin.command("import")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--crs", default="EPSG:4547", show_default=True, help="The city's projected CRS (metres).")
@click.pass_context
def import_(ctx: click.Context, files: tuple[Path, ...], crs: str) -> None:
    """Import SWMM/EPANET .inp, pandapipes .json and buildings .geojson FILES; each import is a new version."""
    from twin.buildings import read_buildings_geojson
    from twin.drainage import read_swmm
    from twin.gas import read_pandapipes
    from twin.store.assets import load_city, save_buildings, save_network
    from twin.store.db import connect
    from twin.store.schema import migrate
    from twin.water import read_epanet

    s = _settings(ctx)
    assert s.database_url is not None
    with connect(s.database_url, schema=s.db_schema, autocommit=True) as conn:
        migrate(conn, schema=s.db_schema, mode=s.storage_mode)
        for path in files:
            started = time.perf_counter()
            try:
                kind = detect_kind(path)
                if kind == "buildings":
                    terrain = load_city(conn).terrain
                    buildings = read_buildings_geojson(path, crs=crs, terrain=terrain)
                    with conn.transaction():
                        version = save_buildings(conn, buildings, name=path.name, crs=crs)
                    summary = f"{len(buildings)} buildings"
                else:
                    reader = {"swmm": read_swmm, "epanet": read_epanet, "pandapipes": read_pandapipes}[kind]
                    network = reader(path)
                    with conn.transaction():
                        version = save_network(conn, network, crs=crs)
                    summary = (
                        f"{network.kind.value}: {len(network.nodes)} nodes, {len(network.links)} links, "
                        f"{len(network.valves)} valves"
                    )
                    if kind == "epanet":
                        from models.pump_control import rules_of

                        rules = rules_of(network)
                        if rules:
                            summary += (
                                f", {len(rules)} level/pressure controls (watched live where their node and link"
                                " have sensors; leak detection calibrates for 3 days after its first day, not 1)"
                            )
            except LifelineError as exc:
                raise click.ClickException(str(exc)) from exc
            click.echo(f"{path}: {summary} → version {version} ({time.perf_counter() - started:.1f} s)")


@twin.command("load-demo")
@click.option("--seed", type=int, default=2026, show_default=True)
@click.pass_context
def load_demo(ctx: click.Context, seed: int) -> None:
    """Generate the demo city (吉安示范片区) and store it with its sensors."""
    from twin.democity.city import build_demo_city
    from twin.store.assets import save_city
    from twin.store.db import connect
    from twin.store.schema import migrate
    from twin.store.sensors import upsert_sensors

    s = _settings(ctx)
    assert s.database_url is not None
    city = build_demo_city(seed)
    with connect(s.database_url, schema=s.db_schema, autocommit=True) as conn:
        migrate(conn, schema=s.db_schema, mode=s.storage_mode)
        versions = save_city(conn, city)
        upsert_sensors(conn, city.sensors.values())
    click.echo(f"{city.name}: {len(city.buildings)} buildings, {len(city.sensors)} sensors; layers {versions}")


@twin.command("info")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def info(ctx: click.Context, as_json: bool) -> None:
    """Show the twin's layers, their current versions and counts."""
    from twin.store.assets import layer_versions
    from twin.store.db import connect

    s = _settings(ctx)
    assert s.database_url is not None
    with connect(s.database_url, schema=s.db_schema, autocommit=True) as conn:
        rows = layer_versions(conn)
        sensors = conn.execute(
            "SELECT network, count(*) AS n FROM sensors GROUP BY network ORDER BY network"
        ).fetchall()
    current: dict[str, dict[str, object]] = {}
    for row in rows:
        current.setdefault(row["layer"], {**row, "versions": 0})
        current[row["layer"]]["versions"] = int(current[row["layer"]]["versions"]) + 1  # type: ignore[call-overload]
    if as_json:
        click.echo(
            orjson.dumps(
                {"layers": current, "sensors": {r["network"]: r["n"] for r in sensors}},
                default=str,
                option=orjson.OPT_INDENT_2,
            ).decode()
        )
        return
    if not current:
        click.echo("the twin is empty: run 'lifeline twin import FILE…' or 'lifeline twin load-demo'")
    for layer, row in sorted(current.items()):
        counts = ", ".join(f"{v} {k}" for k, v in row["counts"].items() if v)  # type: ignore[attr-defined]
        click.echo(
            f"{layer:<11} v{row['version']} of {row['versions']}  {row['name']}  [{row['crs']}]  {counts}"
            f"  imported {row['imported_at']:%Y-%m-%d %H:%M}"
        )
    click.echo("sensors: " + (", ".join(f"{r['n']} {r['network']}" for r in sensors) or "none"))


@twin.command("export-scene")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--demo", is_flag=True, help="Export the generated demo city instead of the stored twin.")
@click.pass_context
def export_scene_cmd(ctx: click.Context, out_dir: Path, demo: bool) -> None:
    """Write the 3D scene (glTF binary + metadata) that the viewer shows."""
    from twin.scene import export_scene

    started = time.perf_counter()
    if demo:
        from twin.democity.city import build_demo_city

        city = build_demo_city()
    else:
        from twin.store.assets import load_city
        from twin.store.db import connect
        from twin.store.sensors import load_registry

        s = _settings(ctx)
        assert s.database_url is not None
        with connect(s.database_url, schema=s.db_schema, autocommit=True) as conn:
            city = load_city(conn)
            city.sensors = dict(load_registry(conn).items())
    paths = export_scene(city, out_dir)
    click.echo(f"scene written to {out_dir} in {time.perf_counter() - started:.1f} s: {paths}")
