"""The compiled core of :class:`models.baseline.BaselineDetector`: a batch of readings through the sensors' baselines.

The rules are those of :mod:`models.baseline_reference` (the readable numpy version, which the tests hold this
kernel to: same changes in the same order, same state), applied to the detector's state as arrays, one row per
sensor (:class:`models.baseline._State`): ``loc``, ``spread`` and ``count`` of shape (sensors, 48 bins), and
``score``, ``run``, ``active``, ``since``, ``last_ts`` and ``seen`` by sensor.

:func:`run_batch` takes the batch as columns (sensor row, or -1 for a reading not to be used; time in seconds;
value), puts the readings in order of sensor row then time (stable, as ``np.lexsort((ts, row))``), and runs each
sensor's readings one after the other, updating the state arrays *in place* (the caller passes a copy). It returns
the readings that raise or clear an alert in the order the reference emits them: by the reading's rank within its
sensor in the batch, then by sensor row (the reference runs the k-th readings of all sensors together, rank by
rank; this kernel runs sensor by sensor, so it collects the changes and then orders them).

Floats are computed as numpy computes them in the reference (no ``fastmath``, so no reassociation or fused
multiply-add; ``np.maximum`` and ``np.sign`` keep their NaN and signed-zero rules), so results are bit-identical.
Division follows numpy's error model (a zero spread gives inf or NaN, as in numpy, instead of raising).

Compiled code is cached on disk (``cache=True``) in ``models/__pycache__`` (files ``baseline_kernel.*.nbi`` and
``.nbc``), like :mod:`models.sensor_health_kernel`. :func:`compile_kernels` compiles (or loads) the kernel for the
only argument types the detector uses; the detector calls it when it is made, so the cost is paid at start, not at
the first batch.

Where ``python -m models.kernel_aot`` (run by ``scripts/setup.sh``) built them from this very source on this
machine, the entry points come from that ahead-of-time build instead and numba is not imported at all
(:mod:`models.kernel_aot`: ~140 MB less resident memory in ingest); ``LIFELINE_KERNELS=jit`` forces the JIT.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import numpy as np
import numpy.typing as npt

from models import kernel_aot

_F = TypeVar("_F", bound=Callable[..., Any])

AOT = kernel_aot.load("baseline")
"""This kernel compiled ahead of time (:mod:`models.kernel_aot`), or None: numba compiles it at start."""

BINS = 48
_MAD_TO_SIGMA = 1.4826
_DAY_S = 86_400.0

# Rule parameters, as a float vector (counts included: comparing an int64 with a float64 is exact below 2**53).
P_UTC_OFFSET_S = 0
P_ALPHA = 1
P_RAISE_Z = 2
P_CLEAR_Z = 3
P_HOLD_READINGS = 4
P_READOPT_S = 5
P_MEDIAN_STEP = 6
P_SPREAD_WEIGHT = 7
N_P = 8

# Columns of the float result of run_batch: one row per change.
C_TS = 0
C_VALUE = 1
C_EXPECTED = 2
C_SCORE = 3
N_C = 4


if AOT is None:
    import numba

    def _njit(func: _F) -> _F:
        """Compile *func* with numba, cached on disk, without fastmath (results bit-identical to numpy's)."""
        return cast(_F, numba.njit(cache=True, nogil=True, error_model="numpy")(func))

    def _inline(func: _F) -> _F:
        """Compile *func* with numba into each caller."""
        return cast(_F, numba.njit(inline="always", error_model="numpy")(func))

else:

    def _njit(func: _F) -> _F:
        """Leave *func* as Python: the compiled module's entry point replaces it at the end of this module."""
        return func

    def _inline(func: _F) -> _F:
        """Leave *func* as Python (it is compiled into the entry points of the compiled module)."""
        return func


@_inline
def _maximum(a: float, b: float) -> float:
    """``np.maximum`` of two floats: NaN if either is NaN (the first one if both)."""
    return a if (a >= b or a != a) else b


@_inline
def _sign(a: float) -> float:
    """``np.sign`` of a float: 1, -1, 0 (for both zeros), or NaN."""
    if a > 0.0:
        return 1.0
    if a < 0.0:
        return -1.0
    if a == 0.0:
        return 0.0
    return a


@_njit
def run_batch(
    row: npt.NDArray[np.int64],
    ts: npt.NDArray[np.float64],
    val: npt.NDArray[np.float64],
    loc: npt.NDArray[np.float64],
    spread: npt.NDArray[np.float64],
    count: npt.NDArray[np.float64],
    score: npt.NDArray[np.float64],
    run: npt.NDArray[np.int64],
    active: npt.NDArray[np.bool_],
    since: npt.NDArray[np.float64],
    last_ts: npt.NDArray[np.float64],
    seen: npt.NDArray[np.bool_],
    warmup: npt.NDArray[np.float64],
    floor: npt.NDArray[np.float64],
    params: npt.NDArray[np.float64],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_], npt.NDArray[np.float64]]:
    """Run a batch through the baselines, updating the state arrays in place; return the alert changes.

    Args:
        row: each reading's sensor row, -1 for a reading not to be used (unknown sensor, bad quality, NaN, suspect).
        ts: each reading's time, seconds since the Unix epoch.
        val: each reading's value.
        loc, spread, count: the bins' location, spread and readings learned, shape (sensors, 48); updated.
        score, run, active, since, last_ts, seen: the sensors' score, run, alert, alert time, newest time and
            whether a reading was judged, shape (sensors,); updated.
        warmup: readings a bin needs before it judges, by sensor.
        floor: the smallest spread, by sensor.
        params: the rules (``P_*``).

    Returns:
        For each change, in the reference's order: the sensor row, whether it raises (else clears), and
        ``(time, value, expected, score)`` (columns ``C_*``).
    """
    n = row.shape[0]
    sensors = score.shape[0]
    off = params[P_UTC_OFFSET_S]
    alpha = params[P_ALPHA]
    raise_z = params[P_RAISE_Z]
    clear_z = params[P_CLEAR_Z]
    hold = params[P_HOLD_READINGS]
    readopt = params[P_READOPT_S]
    median_step = params[P_MEDIAN_STEP]
    spread_weight = params[P_SPREAD_WEIGHT]

    # Readings in order of sensor row (a stable counting sort), then of time within a sensor (a stable insertion
    # sort: a sensor's readings usually arrive in order, so it costs a comparison each).
    start = np.zeros(sensors + 1, dtype=np.int64)
    for p in range(n):
        r = row[p]
        if r >= 0:
            start[r + 1] += 1
    for r in range(sensors):
        start[r + 1] += start[r]
    used = start[sensors]
    order = np.empty(used, dtype=np.int64)
    fill = start[:sensors].copy()
    for p in range(n):
        r = row[p]
        if r >= 0:
            order[fill[r]] = p
            fill[r] += 1
    for r in range(sensors):
        for a in range(start[r] + 1, start[r + 1]):
            p = order[a]
            t = ts[p]
            c = a
            while c > start[r] and ts[order[c - 1]] > t:
                order[c] = order[c - 1]
                c -= 1
            order[c] = p

    # Changes found, sensor by sensor: row, rank in the batch, raising, (time, value, expected, score).
    cap = 16
    c_row = np.empty(cap, dtype=np.int64)
    c_rank = np.empty(cap, dtype=np.int64)
    c_raise = np.empty(cap, dtype=np.bool_)
    c_val = np.empty((cap, N_C), dtype=np.float64)
    m = 0

    for r in range(sensors):
        lo = start[r]
        hi = start[r + 1]
        if lo == hi:
            continue
        s_score = score[r]
        s_run = run[r]
        s_active = active[r]
        s_since = since[r]
        s_last = last_ts[r]
        s_seen = seen[r]
        s_warmup = warmup[r]
        s_floor = floor[r]
        for a in range(lo, hi):
            p = order[a]
            t = ts[p]
            if not t > s_last:
                continue
            x = val[p]
            s_last = t
            first = not s_seen
            s_seen = True
            local = t + off
            b = np.int64(np.floor((local % _DAY_S) / 3600.0))
            if (np.int64(np.floor(local / _DAY_S)) + 3) % 7 >= 5:  # 1970-01-01: Thursday
                b += 24
            # A weekend bin that has not warmed up yet borrows the weekday bin of the same hour.
            jb = b - 24 if (b >= 24 and count[r, b] < s_warmup) else b
            expected = loc[r, jb]
            sigma = _maximum(_MAD_TO_SIGMA * spread[r, jb], s_floor)
            warm = count[r, jb] >= s_warmup
            z = (x - expected) / sigma if warm else 0.0
            s_score = z if first else s_score + alpha * (z - s_score)
            beyond = abs(s_score) > (clear_z if s_active else raise_z)
            # While raised, run counts readings back within clear_z; otherwise readings beyond raise_z.
            counting = ((not beyond) if s_active else beyond) and warm
            s_run = s_run + 1 if counting else 0
            flip = s_run >= hold
            expired = s_active and (t - s_since > readopt)
            if flip or expired:
                raising = not s_active
                s_active = raising
                s_since = t if raising else np.nan
                s_run = 0
                if m == cap:
                    cap *= 2
                    c_row2 = np.empty(cap, dtype=np.int64)
                    c_rank2 = np.empty(cap, dtype=np.int64)
                    c_raise2 = np.empty(cap, dtype=np.bool_)
                    c_val2 = np.empty((cap, N_C), dtype=np.float64)
                    c_row2[:m] = c_row
                    c_rank2[:m] = c_rank
                    c_raise2[:m] = c_raise
                    c_val2[:m] = c_val
                    c_row, c_rank, c_raise, c_val = c_row2, c_rank2, c_raise2, c_val2
                c_row[m] = r
                c_rank[m] = a - lo
                c_raise[m] = raising
                c_val[m, C_TS] = t
                c_val[m, C_VALUE] = x
                c_val[m, C_EXPECTED] = expected
                c_val[m, C_SCORE] = s_score
                m += 1
            # Learn, except while the sensor's alert is raised.
            if not s_active:
                cnt = count[r, b]
                if cnt == 0:
                    cur_loc = x
                    cur_spread = s_floor
                else:
                    cur_loc = loc[r, b]
                    cur_spread = spread[r, b]
                step = median_step * _maximum(cur_spread, s_floor)
                loc[r, b] = cur_loc + step * _sign(x - cur_loc)
                spread[r, b] = cur_spread + spread_weight * (abs(x - cur_loc) - cur_spread)
                count[r, b] = cnt + 1
        score[r] = s_score
        run[r] = s_run
        active[r] = s_active
        since[r] = s_since
        last_ts[r] = s_last
        seen[r] = s_seen

    # The reference's order: by rank, then by sensor row. They were found by row then rank: a stable counting sort
    # by rank puts them in order.
    at = np.zeros(used + 1, dtype=np.int64)
    for q in range(m):
        at[c_rank[q] + 1] += 1
    for k in range(used):
        at[k + 1] += at[k]
    out_row = np.empty(m, dtype=np.int64)
    out_raise = np.empty(m, dtype=np.bool_)
    out_val = np.empty((m, N_C), dtype=np.float64)
    for q in range(m):
        k = c_rank[q]
        o = at[k]
        at[k] += 1
        out_row[o] = c_row[q]
        out_raise[o] = c_raise[q]
        for c in range(N_C):
            out_val[o, c] = c_val[q, c]
    return out_row, out_raise, out_val


def entry_points() -> dict[str, tuple[Any, ...]]:
    """The compiled entry points and the argument types :class:`~models.baseline.BaselineDetector` calls them
    with (the JIT and the ahead-of-time build compile exactly these)."""
    import numba

    f8, i8, b1 = numba.types.float64, numba.types.int64, numba.types.boolean
    return {
        "run_batch": (
            *(i8[::1], f8[::1], f8[::1], f8[:, ::1], f8[:, ::1], f8[:, ::1], f8[::1], i8[::1], b1[::1]),
            *(f8[::1], f8[::1], b1[::1], f8[::1], f8[::1], f8[::1]),
        ),
    }


def compile_kernels() -> float:
    """Compile :func:`run_batch` for the detector's argument types (or load it from the cache).

    Returns:
        The seconds it took; 0 when it was already compiled in this process, or compiled ahead of time.
    """
    return 0.0 if AOT is not None else kernel_aot.compile_jit(globals(), entry_points())


if AOT is not None:
    globals().update({name: getattr(AOT, name) for name in ("run_batch",)})
