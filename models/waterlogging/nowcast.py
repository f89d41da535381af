"""Hydraulic nowcast: run the twin's SWMM model ahead of real time on observed and forecast rain.

A nowcast issued at ``now`` runs SWMM from a known state through the rain observed until ``now`` (the gauges)
and on through the rain expected after it (a forecast or a design storm) for ``horizon`` (6 h by default), and
says, per node, whether and when it will flood, how much and for how long.

- **State.** Either a warm-up: SWMM starts dry at the first observed rain value and runs through the observed
  rain to ``now``; or a hot start: SWMM starts from a :class:`HotStart` saved by an earlier nowcast (at its own
  ``now``) and runs only the rain observed since. Every nowcast saves the state at its ``now`` for the next one.
- **Correction.** Observed drainage levels (depth above the invert at a node, m) are compared with the model's
  at ``now``: :class:`LevelMisfit` (RMSE and bias over the sensors). When the RMSE exceeds the tolerance, the
  rain is taken to be mis-measured by a constant factor: the run is repeated with the observed and forecast rain
  scaled by each of :data:`RAIN_FACTORS`, and the factor whose levels at ``now`` fit the sensors best is kept.
- **Process.** SWMM allows one simulation per process: every run happens in a worker process
  (:class:`concurrent.futures.ProcessPoolExecutor` with the ``spawn`` context). Pass a long-lived executor
  (:func:`swmm_pool`) to reuse warm workers; the candidate runs of a correction go to the pool together.

The rain is written into the model as one ``TIMESERIES`` (format ``INTENSITY``, mm/h or in/h as the model's
units) for every rain gauge, with ``WET_STEP``/``DRY_STEP`` at the rain step so SWMM samples it fully.

Example:
    >>> with swmm_pool(2) as pool:                                                       # doctest: +SKIP
    ...     cast = nowcast(network, now=now, observed_rain_mm_h=gauge_rain, forecast_rain_mm_h=forecast,
    ...                    observed_depth_m={"MHX0203": 1.2}, executor=pool)
    >>> cast.flooded(min_volume_m3=10.0)[:3]                                              # doctest: +SKIP
    ('MHX0305-E2', 'MHX0203', 'MHX0204-E1')
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import re
import tempfile
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from twin.drainage import FLOW_M3_S, FT_M, IN_MM, SECTION_HEADER, SOURCE_FORMAT, US_FLOW_UNITS, open_failed, swmm_errors
from twin.errors import ConfigError, SimulationError
from twin.model import PipeNetwork
from twin.sensors import Network

log = logging.getLogger(__name__)

RAIN_SERIES = "LIFELINE-NOWCAST-RAIN"
"""Name of the time series the nowcast writes the rain into."""
DEFAULT_HORIZON = timedelta(hours=6)
DEFAULT_RAIN_STEP = timedelta(minutes=1)
RAIN_FACTORS = (0.5, 0.7, 0.85, 1.2, 1.45, 1.75, 2.1)
"""Rain factors tried when the model drifts from the sensors (a gauge under- or over-catching)."""
DRIFT_TOLERANCE_M = 0.10
"""Level RMSE at ``now`` above which the nowcast corrects the rain, m."""
_SWMM_EPOCH = datetime(1899, 12, 30)

FloatArray = npt.NDArray[np.float64]


def swmm_pool(workers: int = 2) -> ProcessPoolExecutor:
    """Return a process pool (``spawn`` context) for SWMM runs; use it as a context manager."""
    if workers < 1:
        raise ConfigError("a SWMM pool needs at least one worker")
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))


@dataclass(frozen=True, slots=True)
class HotStart:
    """SWMM's saved state of a network at ``ts`` (aware UTC): the bytes of a SWMM hot start file."""

    ts: datetime
    data: bytes


@dataclass(frozen=True, slots=True)
class LevelMisfit:
    """How far the model's levels at ``now`` are from the sensors'.

    Attributes:
        sensors: how many observed nodes were compared.
        rmse_m: root mean square of model − observed, m; ``bias_m`` the mean, m (negative: the model is low).
    """

    sensors: int
    rmse_m: float
    bias_m: float


@dataclass(frozen=True, slots=True)
class SwmmJob:
    """One SWMM run of a nowcast, sent to a worker process (plain data only).

    Attributes:
        source: the model's ``.inp`` text.
        start: when the run starts (aware UTC).
        rain_mm_h: the rain of each rain step from ``start``, mm/h; zero after its end.
        rain_step_s: the rain step, seconds.
        now_s: seconds from ``start`` to ``now`` (a whole number of record steps).
        end_s: seconds from ``start`` to the end of the run.
        record_step_s: how often node flooding is read, seconds.
        watch: node ids whose depth at ``now`` is returned.
        hotstart: state to start from, or None (start dry).
    """

    source: str
    start: datetime
    rain_mm_h: tuple[float, ...]
    rain_step_s: int
    now_s: int
    end_s: int
    record_step_s: int
    watch: tuple[str, ...] = ()
    hotstart: bytes | None = None


@dataclass(frozen=True, slots=True)
class SwmmRun:
    """What a worker returns: node results in SI units, node order ``node_ids``.

    Attributes:
        flood_rate_m3_s: flooding rate of each node at the end of each record step after ``now``,
            shape (steps after now, nodes).
        volume_before_m3: volume each node flooded before ``now``, m³; ``volume_m3``: over the whole run, m³.
        max_depth_m: largest depth above the invert over the whole run, m.
        depth_now_m: depth at ``now`` of each watched node, m.
        hotstart: the state at ``now`` (None when ``now`` is the start and no state was given).
        wall_s: time the run took, seconds.
    """

    node_ids: tuple[str, ...]
    flood_rate_m3_s: FloatArray
    volume_before_m3: FloatArray
    volume_m3: FloatArray
    max_depth_m: FloatArray
    depth_now_m: dict[str, float]
    hotstart: bytes | None
    wall_s: float


@dataclass(frozen=True, slots=True)
class Nowcast:
    """A nowcast: what SWMM expects at each node from ``issued`` to ``issued + horizon``.

    Attributes:
        issued: the nowcast's ``now`` (aware UTC).
        horizon: how far ahead it looks.
        node_ids: node order of the arrays.
        volume_m3: volume each node floods after ``issued``, m³.
        eta_s: seconds from ``issued`` to each node's first flooding (NaN: no flooding in the horizon).
        duration_s: seconds from first to last flooding of each node (0 where none).
        flooding_now: whether each node is flooding at ``issued`` already.
        max_depth_m: largest depth above the invert over the run, m.
        rain_factor: the factor the rain was scaled by after the level correction (1.0: none).
        misfit: sensors against the model at ``issued`` as first run; ``misfit_corrected`` after the correction
            (the same object when no correction was needed); None without observed levels.
        hotstart: the state at ``issued``, for the next nowcast (None for a cold start with no observed rain).
        runs: SWMM runs made; ``wall_s`` the nowcast's wall time, seconds.
        flooded_before_m3: volume each node flooded from the run's start (the hot start, or the first observed
            rain of a warm-up) to ``issued``, m³; add it up over a chain of nowcasts for the event so far.
    """

    issued: datetime
    horizon: timedelta
    node_ids: tuple[str, ...]
    volume_m3: FloatArray
    eta_s: FloatArray
    duration_s: FloatArray
    flooding_now: npt.NDArray[np.bool_]
    max_depth_m: FloatArray
    rain_factor: float
    misfit: LevelMisfit | None
    misfit_corrected: LevelMisfit | None
    hotstart: HotStart | None
    runs: int
    wall_s: float
    extra: Mapping[str, Any] = field(default_factory=dict)
    flooded_before_m3: FloatArray | None = None

    def volumes(self) -> dict[str, float]:
        """Return the forecast flood volume by node id, m³."""
        return {n: float(v) for n, v in zip(self.node_ids, self.volume_m3, strict=True)}

    def flooded(self, *, min_volume_m3: float = 1.0) -> tuple[str, ...]:
        """Return the nodes expected to flood at least *min_volume_m3* (m³), most first."""
        order = np.argsort(-self.volume_m3, kind="stable")
        return tuple(self.node_ids[i] for i in order if self.volume_m3[i] >= min_volume_m3)


def nowcast(
    network: PipeNetwork,
    *,
    now: datetime,
    observed_rain_mm_h: Sequence[float],
    forecast_rain_mm_h: Sequence[float],
    rain_step: timedelta = DEFAULT_RAIN_STEP,
    horizon: timedelta = DEFAULT_HORIZON,
    observed_depth_m: Mapping[str, float] | None = None,
    hotstart: HotStart | None = None,
    drift_tolerance_m: float = DRIFT_TOLERANCE_M,
    record_step: timedelta = timedelta(minutes=1),
    executor: Executor | None = None,
) -> Nowcast:
    """Run SWMM from the current state through the observed rain and ahead through the forecast.

    Args:
        network: the drainage network, made from a SWMM ``.inp`` (``network.source``).
        now: the nowcast's time (aware).
        observed_rain_mm_h: gauge rain of each rain step up to *now* (the last value ends at *now*), mm/h. With a
            hot start only the values after its time are used, so it must reach back to it.
        forecast_rain_mm_h: expected rain of each rain step from *now*, mm/h; no rain after its end.
        rain_step: the step of both rain series (a whole number of seconds).
        horizon: how far ahead to run (a whole number of record steps).
        observed_depth_m: observed depth above the invert at *now*, m, by node id (sensors bound to nodes).
        hotstart: a state saved by an earlier nowcast; None warms up from dry on the observed rain.
        drift_tolerance_m: level RMSE above which the rain is corrected, m.
        record_step: how often node flooding is read, seconds (sets the resolution of ``eta_s``).
        executor: a process pool for the SWMM runs (:func:`swmm_pool`); None starts one worker for this call.

    Returns:
        The :class:`Nowcast`.

    Raises:
        ConfigError: the network is not a SWMM model, a time is naive, a rain value is negative or not finite,
            the hot start is later than *now* or the observed rain does not reach back to it, or a step does not
            divide the spans.
        SimulationError: SWMM rejects the model or stops with an error.
    """
    started = time.perf_counter()
    if network.kind is not Network.DRAINAGE or network.source_format != SOURCE_FORMAT or not network.source:
        raise ConfigError(f"{network.name}: a nowcast needs a drainage network made from a SWMM .inp")
    if now.tzinfo is None:
        raise ConfigError("the nowcast's time must be timezone-aware")
    now = now.astimezone(UTC)
    rain_s = _whole_seconds(rain_step, "the rain step")
    record_s = _whole_seconds(record_step, "the record step")
    horizon_s = _whole_seconds(horizon, "the horizon")
    if horizon_s % record_s:
        raise ConfigError("the horizon must be a whole number of record steps")
    observed = _rain(observed_rain_mm_h, "observed")
    forecast = _rain(forecast_rain_mm_h, "forecast")
    state: bytes | None = None
    if hotstart is not None:
        if hotstart.ts.tzinfo is None or hotstart.ts.astimezone(UTC) > now:
            raise ConfigError("the hot start must be aware and not later than the nowcast")
        gap_s = round((now - hotstart.ts.astimezone(UTC)).total_seconds())
        if gap_s % rain_s or gap_s // rain_s > len(observed):
            raise ConfigError("the observed rain must reach back to the hot start, in whole rain steps")
        observed = observed[len(observed) - gap_s // rain_s :]
        state = hotstart.data
    warm_s = len(observed) * rain_s
    if warm_s % record_s:
        raise ConfigError("the observed rain must span a whole number of record steps")
    start = now - timedelta(seconds=warm_s)
    watch = tuple(sorted(n for n in (observed_depth_m or {}) if n in network.nodes))

    def job(factor: float) -> SwmmJob:
        rain = tuple(v * factor for v in (*observed, *forecast))
        return SwmmJob(network.source, start, rain, rain_s, warm_s, warm_s + horizon_s, record_s, watch, state)

    own = executor is None
    pool = swmm_pool(1) if executor is None else executor
    try:
        first = pool.submit(run_job, job(1.0)).result()
        runs = 1
        misfit = _misfit(first, observed_depth_m or {})
        best, factor, corrected = first, 1.0, misfit
        if misfit is not None and misfit.rmse_m > drift_tolerance_m and warm_s > 0:
            futures = {f: pool.submit(run_job, job(f)) for f in RAIN_FACTORS}
            for f, future in futures.items():
                candidate = future.result()
                runs += 1
                fit = _misfit(candidate, observed_depth_m or {})
                if fit is not None and corrected is not None and fit.rmse_m < corrected.rmse_m:
                    best, factor, corrected = candidate, f, fit
            log.info(
                "nowcast %s: levels off by %.2f m (RMSE); rain × %.2f brings them to %.2f m",
                now.isoformat(),
                misfit.rmse_m,
                factor,
                corrected.rmse_m if corrected else math.nan,
            )
    finally:
        if own:
            pool.shutdown()
    return _conclude(best, now, horizon, record_s, factor, misfit, corrected, runs, time.perf_counter() - started)


def _conclude(
    run: SwmmRun,
    now: datetime,
    horizon: timedelta,
    record_s: int,
    factor: float,
    misfit: LevelMisfit | None,
    corrected: LevelMisfit | None,
    runs: int,
    wall_s: float,
) -> Nowcast:
    rate = run.flood_rate_m3_s
    wet = rate > 1e-6
    any_wet = wet.any(axis=0)
    first = np.where(any_wet, wet.argmax(axis=0), -1)
    last = np.where(any_wet, wet.shape[0] - 1 - wet[::-1].argmax(axis=0), -1)
    eta = np.where(any_wet, first * record_s, np.nan).astype(float)
    duration = np.where(any_wet, (last - first + 1) * record_s, 0).astype(float)
    flooding_now = run.volume_before_m3 > 0
    if rate.shape[0]:
        flooding_now = flooding_now & wet[0]
    return Nowcast(
        issued=now,
        horizon=horizon,
        node_ids=run.node_ids,
        volume_m3=np.clip(run.volume_m3 - run.volume_before_m3, 0.0, None),
        eta_s=eta,
        duration_s=duration,
        flooding_now=flooding_now,
        max_depth_m=run.max_depth_m,
        rain_factor=factor,
        misfit=misfit,
        misfit_corrected=corrected,
        hotstart=HotStart(now, run.hotstart) if run.hotstart is not None else None,
        runs=runs,
        wall_s=wall_s,
        extra={"swmm_wall_s": run.wall_s},
        flooded_before_m3=run.volume_before_m3,
    )


def _misfit(run: SwmmRun, observed: Mapping[str, float]) -> LevelMisfit | None:
    pairs = [(run.depth_now_m[n], float(v)) for n, v in observed.items() if n in run.depth_now_m and math.isfinite(v)]
    if not pairs:
        return None
    diff = np.array([m - o for m, o in pairs])
    return LevelMisfit(len(pairs), float(np.sqrt(np.mean(diff**2))), float(np.mean(diff)))


def _rain(values: Sequence[float], what: str) -> tuple[float, ...]:
    out = tuple(float(v) for v in values)
    if any(not math.isfinite(v) or v < 0 for v in out):
        raise ConfigError(f"{what} rain intensities must be finite numbers ≥ 0 (mm/h)")
    return out


def _whole_seconds(span: timedelta, what: str) -> int:
    seconds = span.total_seconds()
    if seconds <= 0 or seconds != int(seconds):
        raise ConfigError(f"{what} must be a positive whole number of seconds, not {seconds}")
    return int(seconds)


# --------------------------------------------------------------------------------------------------------------
# In the worker process


def nowcast_inp(source: str, *, start: datetime, end: datetime, rain_mm_h: Sequence[float], rain_step_s: int) -> str:
    """Return *source* (SWMM ``.inp`` text) set to run from *start* to *end* on the given rain at every gauge.

    Forces the start, report start and end, ``WET_STEP``/``DRY_STEP`` to the rain step, ``IGNORE_RAINFALL NO``,
    ``IGNORE_ROUTING NO``, ``THREADS 1``; points every rain gauge at :data:`RAIN_SERIES` (``INTENSITY``, in the
    model's units: in/h for US flow units) and writes the rain into it, with a zero after its end.

    Raises:
        ConfigError: the model has no ``[RAINGAGES]`` section, or already has a series named :data:`RAIN_SERIES`.
    """
    first = start.astimezone(UTC).replace(tzinfo=None, microsecond=0)
    last = end.astimezone(UTC).replace(tzinfo=None, microsecond=0)
    clock = f"{rain_step_s // 3600:02d}:{rain_step_s % 3600 // 60:02d}:{rain_step_s % 60:02d}"
    blocks: list[tuple[str, list[str]]] = [("", [])]
    for line in source.splitlines():
        match = SECTION_HEADER.match(line)
        if match:
            blocks.append((match.group(1).strip().upper(), [line]))
        else:
            blocks[-1][1].append(line)
    names = [name for name, _ in blocks]
    if "RAINGAGES" not in names:
        raise ConfigError("the SWMM model has no [RAINGAGES] section: nothing to rain on")
    units = "CFS"
    for name, lines in blocks:
        if name == "OPTIONS":
            for line in lines[1:]:
                tokens = line.split(";", 1)[0].split()
                if len(tokens) >= 2 and tokens[0].upper() == "FLOW_UNITS":
                    units = tokens[1].upper()
    per_mm = 1.0 / IN_MM if units in US_FLOW_UNITS else 1.0
    options = {
        "START_DATE": first.strftime("%m/%d/%Y"),
        "START_TIME": first.strftime("%H:%M:%S"),
        "REPORT_START_DATE": first.strftime("%m/%d/%Y"),
        "REPORT_START_TIME": first.strftime("%H:%M:%S"),
        "END_DATE": last.strftime("%m/%d/%Y"),
        "END_TIME": last.strftime("%H:%M:%S"),
        "WET_STEP": clock,
        "DRY_STEP": clock,
        "IGNORE_RAINFALL": "NO",
        "IGNORE_ROUTING": "NO",
        "THREADS": "1",
    }
    series = [f"{RAIN_SERIES} {k * rain_step_s / 3600.0:.6f} {v * per_mm:.6g}" for k, v in enumerate(rain_mm_h)] + [
        f"{RAIN_SERIES} {len(rain_mm_h) * rain_step_s / 3600.0:.6f} 0"
    ]
    if "OPTIONS" not in names:
        blocks.insert(1, ("OPTIONS", ["[OPTIONS]"]))
    if "TIMESERIES" not in names:
        blocks.append(("TIMESERIES", ["[TIMESERIES]"]))
    out: list[str] = []
    for name, lines in blocks:
        if name == "OPTIONS":
            kept = [line for line in lines[1:] if (line.split(";", 1)[0].split() or [""])[0].upper() not in options]
            out += [lines[0], *(f"{k:<20} {v}" for k, v in options.items()), *kept]
        elif name == "RAINGAGES":
            out.append(lines[0])
            for line in lines[1:]:
                tokens = line.split(";", 1)[0].split()
                if len(tokens) < 2:
                    out.append(line)
                    continue
                catch = tokens[3] if len(tokens) > 3 else "1.0"
                out.append(f"{tokens[0]} INTENSITY {clock} {catch} TIMESERIES {RAIN_SERIES}")
        elif name == "TIMESERIES":
            if any((line.split(";", 1)[0].split() or [""])[0] == RAIN_SERIES for line in lines[1:]):
                raise ConfigError(f"the SWMM model already has a time series named {RAIN_SERIES}")
            out += [lines[0], *series, *lines[1:]]
        elif name == "FILES" and any(re.search(r"\bHOTSTART\b", line, re.I) for line in lines):
            out += [lines[0], *(line for line in lines[1:] if not re.search(r"\bHOTSTART\b", line, re.I))]
        else:
            out += lines
    return "\n".join(out) + "\n"


def run_job(job: SwmmJob) -> SwmmRun:
    """Run one nowcast SWMM job (in a worker process: SWMM allows one simulation per process).

    Raises:
        SimulationError: SWMM rejects the model or stops with an error.
    """
    from pyswmm import Simulation
    from swmm.toolkit import solver
    from swmm.toolkit.shared_enum import NodeResult, ObjectType

    started = time.perf_counter()
    end = job.start + timedelta(seconds=job.end_s)
    text = nowcast_inp(job.source, start=job.start, end=end, rain_mm_h=job.rain_mm_h, rain_step_s=job.rain_step_s)
    with tempfile.TemporaryDirectory(prefix="nowcast-") as tmp:
        inp, report, out = Path(tmp) / "nowcast.inp", Path(tmp) / "nowcast.rpt", Path(tmp) / "nowcast.out"
        inp.write_text(text, encoding="utf-8")
        saved = Path(tmp) / "now.hsf"
        try:
            sim = Simulation(str(inp), str(report), str(out))
        except Exception as exc:  # pyswmm raises a bare Exception for SWMM's input errors
            raise SimulationError(str(open_failed("nowcast", report, exc))) from exc
        try:
            with sim:
                units = str(sim.flow_units).upper()
                length = FT_M if units in US_FLOW_UNITS else 1.0
                volume = FT_M**3 if units in US_FLOW_UNITS else 1.0
                flow = FLOW_M3_S.get(units, 1.0)
                if job.hotstart is not None:
                    given = Path(tmp) / "given.hsf"
                    given.write_bytes(job.hotstart)
                    sim.use_hotstart(str(given))
                count = solver.project_get_count(ObjectType.NODE)
                node_ids = tuple(solver.project_get_id(ObjectType.NODE, i) for i in range(count))
                watch = [(n, solver.project_get_index(ObjectType.NODE, n)) for n in job.watch]
                steps_after = (job.end_s - job.now_s) // job.record_step_s
                rate = np.zeros((steps_after, count))
                before = np.zeros(count)
                depth_now: dict[str, float] = {}
                sim.step_advance(job.record_step_s)
                elapsed = 0
                for _ in sim:
                    elapsed += job.record_step_s
                    if elapsed == job.now_s:
                        _snapshot(solver, count, before, volume)
                        depth_now = {n: solver.node_get_result(i, NodeResult.DEPTH) * length for n, i in watch}
                        sim.save_hotstart(str(saved))
                    elif elapsed > job.now_s:
                        row = elapsed // job.record_step_s - job.now_s // job.record_step_s - 1
                        if row < steps_after:
                            for i in range(count):
                                rate[row, i] = solver.node_get_result(i, NodeResult.FLOOD) * flow
                    if elapsed >= job.end_s:
                        break
                total = np.zeros(count)
                _snapshot(solver, count, total, volume)
                max_depth = np.array([solver.node_get_stats(i).maxDepth * length for i in range(count)])
        except SimulationError:
            raise
        except Exception as exc:  # SWMM reports run-time errors as a bare Exception
            detail = "; ".join(m for m, _line in swmm_errors(report)) or str(exc).strip()
            raise SimulationError(f"nowcast: SWMM stopped: {detail}") from exc
        hot = saved.read_bytes() if saved.exists() else job.hotstart
    return SwmmRun(node_ids, rate, before, total, max_depth, depth_now, hot, time.perf_counter() - started)


def _snapshot(solver: Any, count: int, into: FloatArray, volume: float) -> None:
    for i in range(count):
        into[i] = solver.node_get_stats(i).volFlooded * volume
