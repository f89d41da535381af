"""Run every benchmark in one go and write their figures, with the date and the machine, to one Markdown file.

Each benchmark is its own script in this folder and prints its own table; this runs them one after the other (so
they do not compete for the cores), with the settings below, and collects what they print. ``--quick`` uses short
settings for a smoke run; the default settings are the ones docs/performance.md records.

    python bench/run_all.py                      # everything, ~30 min on 2 cores; writes bench/results/<date>.md
    python bench/run_all.py --quick --only detect ingest
    python bench/run_all.py --list

A benchmark that fails is reported as failed in the file (with the end of its output) and the others still run.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True, slots=True)
class Bench:
    name: str
    script: str
    args: tuple[str, ...]
    quick: tuple[str, ...]
    what: str


BENCHES: tuple[Bench, ...] = (
    Bench("ingest", "bench_ingest.py", ("--seconds", "20"), ("--seconds", "5"), "end-to-end ingest, zero lost"),
    Bench("drain", "bench_ingest_drain.py", (), (), "ingest alone draining a queued session"),
    Bench(
        "peer",
        "bench_peer.py",
        ("--seconds", "20", "--systems", "lifeline", "lifeline-mqtt311", "node-red"),
        ("--seconds", "5"),
        "Node-RED side by side, a live stream at the issue's targets (20,000 msg/s; 300,000 readings/s in 50s)",
    ),
    Bench(
        "peer-drain",
        "bench_peer.py",
        ("--modes", "1", "50", "--drain", "60000", "--systems", "lifeline", "lifeline-mqtt311", "node-red"),
        ("--modes", "1", "50", "--drain", "10000"),
        "Node-RED side by side, draining the same queued backlog",
    ),
    Bench(
        "scale",
        "bench_peer.py",
        ("--seconds", "15", "--modes", "50", "--rate", "3000", "--systems", "lifeline", "--workers", "1", "2", "4"),
        ("--seconds", "5", "--modes", "50", "--rate", "3000", "--systems", "lifeline", "--workers", "1", "2"),
        "ingest workers on one shared subscription",
    ),
    Bench("queries", "bench_queries.py", (), ("--history", "3", "--runs", "5"), "series, latest values, alert list"),
    Bench(
        "latency",
        "bench_alert_latency.py",
        ("--seconds", "30", "--rates", "0", "1000", "10000", "20000", "--probe-interval", "0.1"),
        ("--seconds", "5", "--rates", "0", "1000"),
        "publish → websocket alert latency",
    ),
    Bench("retention", "bench_retention.py", (), ("--repeats", "1"), "deleting a day of raw readings (plain mode)"),
    Bench("detect", "bench_detect.py", (), ("--runs", "1"), "streaming detector chain"),
    Bench(
        "detect-twin",
        "bench_detect.py",
        ("--twin", "--batch-minutes", "1"),
        ("--twin", "--batch-minutes", "1", "--runs", "1"),
        "the demo city's whole chain on a water scenario",
    ),
    Bench("health", "bench_health.py", (), ("--runs", "1"), "sensor health detector: kernel vs reference"),
    Bench("baseline", "bench_baseline.py", (), ("--runs", "1"), "per-sensor baseline: kernel vs reference"),
    Bench("simulators", "bench_simulators.py", (), ("--runs", "1"), "simulators vs real time"),
    Bench("twin", "bench_twin.py", (), (), "twin queries"),
    Bench("scene", "scene.py", (), (), "3D scene export and page load"),
    Bench("nowcast", "bench_nowcast.py", ("--train", "60"), ("--quick",), "waterlogging nowcast and surrogate"),
    Bench("batadal", "bench_batadal.py", (), (), "offline detector on BATADAL"),
    Bench("water-leak", "bench_water_leak.py", (), (), "water leak detection and localisation"),
    Bench("gas-drainage", "bench_gas_drainage.py", (), (), "gas and drainage detectors"),
    Bench("transfer", "bench_transfer.py", (), (), "Net6 transfer"),
)


def machine() -> str:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{os.cpu_count()} cores ({cpu or platform.processor()}), Python {platform.python_version()}, load {load}"


def run(bench: Bench, *, quick: bool, timeout_s: float) -> tuple[bool, str, float]:
    args = bench.quick if quick else bench.args
    started = time.perf_counter()
    try:
        done = subprocess.run(
            [sys.executable, str(HERE / bench.script), *args],
            cwd=HERE,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or "") if isinstance(exc.stdout, str) else ""
        return False, out + f"\n(timed out after {timeout_s:.0f} s)", time.perf_counter() - started
    output = done.stdout.strip()
    if done.returncode != 0:
        output += "\n" + "\n".join(done.stderr.strip().splitlines()[-15:])
    return done.returncode == 0, output, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short settings (a smoke run)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these (see --list)")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--timeout", type=float, default=1800.0, help="per benchmark, seconds")
    parser.add_argument("--out", type=Path, default=None, help="default: bench/results/<UTC date-time>.md")
    args = parser.parse_args()
    if args.list:
        for b in BENCHES:
            print(f"{b.name:<14} {b.script:<26} {b.what}")
        return
    chosen = [b for b in BENCHES if not args.only or b.name in args.only]
    unknown = set(args.only or ()) - {b.name for b in BENCHES}
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))} (see --list)")
    stamp = datetime.now(UTC)
    out = args.out or HERE / "results" / f"{stamp:%Y-%m-%dT%H%M}Z.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        f"# Benchmarks, {stamp:%Y-%m-%d %H:%M} UTC{' (quick)' if args.quick else ''}",
        "",
        f"Machine: {machine()}.",
        "",
        "| benchmark | what | result | wall s |",
        "|---|---|---|---:|",
    ]
    sections = []
    for bench in chosen:
        print(f"== {bench.name}: {bench.what}", flush=True)
        ok, output, wall = run(bench, quick=args.quick, timeout_s=args.timeout)
        print(output, flush=True)
        lines.append(f"| {bench.name} | {bench.what} | {'ok' if ok else '**failed**'} | {wall:.0f} |")
        sections += [
            "",
            f"## {bench.name} — `python bench/{bench.script} {' '.join(bench.quick if args.quick else bench.args)}`",
            "",
            "```",
            output,
            "```",
        ]
    out.write_text("\n".join(lines + sections) + "\n", encoding="utf-8")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
