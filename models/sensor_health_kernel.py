"""The compiled core of :class:`models.sensor_health.SensorHealthDetector`: the health rules over a batch of arrays.

The rules are those of :mod:`models.sensor_health_reference` (the readable Python version, which the tests hold
this kernel to: same changes in the same order, same suspect readings, same state), applied to a batch of
readings given as columns and to the detector's state kept as arrays:

* the state is struct-of-arrays: one row per sensor, one column per :class:`~models.sensor_health.HealthState`
  field, grouped by type in three Fortran-ordered tables so that every field is one contiguous array: floats
  (``F_*`` columns), integers and times (``I_*``; times are int64 microseconds since the Unix epoch, ``NONE`` for
  None; ``I_ACTIVE`` is a bit mask of :data:`~models.sensor_health.FAULTS`) and the excursion's reading times
  (one row per sensor, ``I_EXC_LEN`` of them in use);
* each sensor's constants (EWMA weights, floors, valid range, flags) are two more tables, ``C_*`` and ``K_*``;
* the rules' parameters are two vectors, ``R_*`` (floats, counts included: comparing an int64 with a float64 is
  exact below 2**53) and ``T_*`` (durations in microseconds).

:func:`run_batch` gathers the rows of the batch's sensors into copies, runs the readings sorted by sensor (in the
order of the sensor ids as strings) then time, and returns the new rows with event codes and suspect readings,
which :class:`~models.sensor_health.SensorHealthDetector` turns into alert changes. It changes none of its inputs;
:func:`scatter` writes the new rows back when the detector commits.

Floats are computed as Python computes them (no ``fastmath``, so no reassociation or fused multiply-add), and
times as integer microseconds: ``timedelta.total_seconds()`` is ``µs / 1e6`` exactly while ``|µs| < 2**53`` (285
years), so results are bit-identical to the reference.

Compiled code is cached on disk (``cache=True``) in ``models/__pycache__`` (files ``sensor_health_kernel.*.nbi``
and ``.nbc``); where that directory is read-only numba falls back to a user-wide cache (``~/.cache/numba`` or
``$XDG_CACHE_HOME/numba``), and ``NUMBA_CACHE_DIR`` puts it anywhere. A cold compile takes 8–15 s on two busy
cores, loading it from the cache about 0.5 s (most of it numba's own start). :func:`compile_kernels` compiles (or
loads) the kernels for the only argument types the detector uses, and the detector calls it when it is made, so
the cost is paid at start, not at the first batch.

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

AOT = kernel_aot.load("sensor_health")
"""These kernels compiled ahead of time (:mod:`models.kernel_aot`), or None: numba compiles them at start."""


if AOT is None:
    import numba

    def _njit(func: _F) -> _F:
        """Compile *func* with numba, cached on disk, without fastmath (results bit-identical to Python's)."""
        return cast(_F, numba.njit(cache=True, nogil=True)(func))

    def _inline(func: _F) -> _F:
        """Compile *func* with numba into each caller (one compilation, whatever constants it is called with)."""
        return cast(_F, numba.njit(inline="always")(func))

else:

    def _njit(func: _F) -> _F:
        """Leave *func* as Python: the compiled module's entry point replaces it at the end of this module."""
        return func

    def _inline(func: _F) -> _F:
        """Leave *func* as Python (it is compiled into the entry points of the compiled module)."""
        return func


NONE = np.iinfo(np.int64).min
"""A time that is None."""

# Faults as bits of I_ACTIVE, in the order of models.sensor_health.FAULTS.
OUT_OF_RANGE, STUCK, SPIKE, DRIFT, DROPOUT, CLOCK_SKEW = 0, 1, 2, 3, 4, 5
B_OUT_OF_RANGE, B_STUCK, B_SPIKE, B_DRIFT, B_DROPOUT, B_CLOCK_SKEW = 1, 2, 4, 8, 16, 32

# Float state columns.
F_LAST_VALUE = 0
F_SPREAD = 1
F_MOVE_RATE = 2
F_FLAT_MOVE_RATE = 3
F_EXC_BASE = 4
F_EXC_JUMP = 5
F_FAST = 6
F_SLOW = 7
F_DRIFT_SCALE = 8
F_DELAY_MEAN = 9
F_DELAY_DEV = 10
N_F = 11

# Integer and time state columns.
I_LAST_TS = 0
I_ARRIVED = 1
I_SPIKE_TS = 2
I_FED_TS = 3
I_DRIFT_TS = 4
I_TRUSTED = 5
I_FLAT_RUN = 6
I_EXCURSION = 7
I_EXC_LEN = 8
I_DRIFT_RUN = 9
I_AHEAD_RUN = 10
I_IN_TIME_RUN = 11
I_DELAYS = 12
I_ACTIVE = 13
N_I = 14

# Per-sensor float constants.
C_W_SPREAD = 0
C_W_MOVE = 1
C_W_FAST = 2
C_W_SLOW = 3
C_W_SCALE = 4
C_SPREAD_FLOOR = 5
C_DRIFT_FLOOR = 6
C_VALID_MIN = 7
C_VALID_MAX = 8
N_C = 9

# Per-sensor integer constants.
K_WARMUP_DRIFT = 0
K_DROPOUT_US = 1
K_SPIKES = 2
K_DRIFTS = 3
K_KNOWN = 4
N_K = 5

# Rule parameters, floats.
R_STUCK_READINGS = 0
R_STUCK_TOLERANCE = 1
R_STUCK_MIN_MOVE_RATE = 2
R_SPIKE_K = 3
R_SPIKE_MAX_READINGS = 4
R_DRIFT_K = 5
R_DRIFT_CLEAR_K = 6
R_DRIFT_READINGS = 7
R_CLOCK_AHEAD_S = 8
R_CLOCK_BEHIND_S = 9
R_CLOCK_STEADY_FRACTION = 10
R_CLOCK_TAU_READINGS = 11
R_CLOCK_READINGS = 12
R_WARMUP_READINGS = 13
N_R = 14

# Rule durations, microseconds.
T_SPIKE_HOLD = 0
T_REFEED = 1
T_READOPT = 2
N_T = 3

# Event columns: the reading (index in the batch, -1 for an event at ``now``), the local row, the fault, 1 raised
# or 0 cleared, 1 if the event has a measure (in the float array beside).
E_READING = 0
E_ROW = 1
E_FAULT = 2
E_RAISED = 3
E_HAS_MEASURE = 4
N_E = 5

EVENTS_PER_READING = 7
"""At most: dropout cleared, clock, out of range cleared, spike cleared, spike raised, stuck, drift."""


@_inline
def _event(
    ev: npt.NDArray[np.int64],
    evm: npt.NDArray[np.float64],
    cnt: npt.NDArray[np.int64],
    k: int,
    j: int,
    fault: int,
    raised: int,
    has_measure: int,
    measure: float,
) -> None:
    """Append one event."""
    e = cnt[0]
    ev[e, E_READING] = k
    ev[e, E_ROW] = j
    ev[e, E_FAULT] = fault
    ev[e, E_RAISED] = raised
    ev[e, E_HAS_MEASURE] = has_measure
    evm[e] = measure
    cnt[0] = e + 1


@_inline
def _suspect(sus: npt.NDArray[np.int64], cnt: npt.NDArray[np.int64], j: int, ts: int) -> None:
    """Append one suspect reading (local row, time)."""
    s = cnt[1]
    sus[s, 0] = j
    sus[s, 1] = ts
    cnt[1] = s + 1


@_njit
def _merge_sort(idx: npt.NDArray[np.int64], keys: npt.NDArray[np.int64]) -> None:
    """Sort the indices *idx* in place by ``keys[idx]``, stably (bottom-up merge sort)."""
    n = idx.shape[0]
    src = idx.copy()
    dst = np.empty(n, np.int64)
    width = 1
    while width < n:
        for lo in range(0, n, 2 * width):
            mid = min(lo + width, n)
            hi = min(lo + 2 * width, n)
            a, b, out = lo, mid, lo
            while a < mid and b < hi:
                if keys[src[b]] < keys[src[a]]:
                    dst[out] = src[b]
                    b += 1
                else:
                    dst[out] = src[a]
                    a += 1
                out += 1
            while a < mid:
                dst[out] = src[a]
                a += 1
                out += 1
            while b < hi:
                dst[out] = src[b]
                b += 1
                out += 1
        src, dst = dst, src
        width *= 2
    idx[:] = src


@_njit
def run_batch(
    rows: npt.NDArray[np.int64],
    ts: npt.NDArray[np.int64],
    values: npt.NDArray[np.float64],
    quality: npt.NDArray[np.int16],
    now: int,
    rank: npt.NDArray[np.int64],
    seq: npt.NDArray[np.int64],
    fv_all: npt.NDArray[np.float64],
    iv_all: npt.NDArray[np.int64],
    xt_all: npt.NDArray[np.int64],
    cf: npt.NDArray[np.float64],
    ci: npt.NDArray[np.int64],
    rf: npt.NDArray[np.float64],
    rt: npt.NDArray[np.int64],
) -> tuple[
    npt.NDArray[np.int64],
    npt.NDArray[np.float64],
    npt.NDArray[np.int64],
    npt.NDArray[np.int64],
    npt.NDArray[np.int64],
    npt.NDArray[np.float64],
    npt.NDArray[np.int64],
    bool,
]:
    """Run the health rules over one batch received at *now*; change none of the inputs.

    Args:
        rows: each reading's row in the state tables, -1 to skip it (an unknown sensor, as is a row whose
            ``K_KNOWN`` is 0).
        ts: each reading's time, µs since the epoch.
        values: each reading's value.
        quality: each reading's quality code (2 bad).
        now: the time the batch was received, µs since the epoch.
        rank: each row's place in the order of sensor ids (as strings).
        seq: each row's place in the committed state, -1 for a sensor without state yet.
        fv_all: float state, a row per sensor.
        iv_all: integer and time state.
        xt_all: excursion times.
        cf: per-sensor float constants.
        ci: per-sensor integer constants.
        rf: rule parameters (floats).
        rt: rule durations (µs).

    Returns:
        The rows of the batch's sensors in sensor id order; their new float, integer and excursion-time state (one
        row each, in that order); the events (``E_*`` columns; the rows in them are indices into the first array)
        and their measures, reading events in the reference's order, then the spike holds that ran out at *now*
        for sensors that had state; the suspect readings (row index, time µs); and False if the excursion table
        was too narrow (widen it and run again).
    """
    n = rows.shape[0]
    n_rows = fv_all.shape[0]
    # The batch's sensors (known ones only), in id order, and each reading's local row (-1: skipped).
    local = np.full(n_rows, -1, np.int64)
    loc = np.full(n, -1, np.int64)
    found = np.empty(n, np.int64)
    m = 0
    for k in range(n):
        g = rows[k]
        if g >= 0 and ci[g, K_KNOWN] != 0:
            if local[g] < 0:
                local[g] = m
                found[m] = g
                m += 1
            loc[k] = g
    # Ranks are distinct and below n_rows: place the rows by rank, then read them in order.
    by_rank = np.full(n_rows, -1, np.int64)
    for j in range(m):
        by_rank[rank[found[j]]] = found[j]
    u = np.empty(m, np.int64)
    j = 0
    for r in range(n_rows):
        if by_rank[r] >= 0:
            u[j] = by_rank[r]
            local[u[j]] = j
            j += 1
    # Counting sort by local row (stable), then each sensor's readings by time (stable).
    starts = np.zeros(m + 1, np.int64)
    for k in range(n):
        g = loc[k]
        if g >= 0:
            loc[k] = local[g]
            starts[loc[k] + 1] += 1
    for j in range(m):
        starts[j + 1] += starts[j]
    total = starts[m]
    order = np.empty(total, np.int64)
    fill = starts[:m].copy()
    for k in range(n):
        j = loc[k]
        if j >= 0:
            order[fill[j]] = k
            fill[j] += 1
    for j in range(m):
        a, b = starts[j], starts[j + 1]
        ordered = True
        for p in range(a + 1, b):
            if ts[order[p]] < ts[order[p - 1]]:
                ordered = False
                break
        if not ordered:
            _merge_sort(order[a:b], ts)

    # Each sensor's readings in turn, its row held in local variables: copies of the committed row, written to
    # the returned rows at the end.
    fv = np.empty((m, fv_all.shape[1]), np.float64)
    iv = np.empty((m, iv_all.shape[1]), np.int64)
    xt = np.empty((m, xt_all.shape[1]), np.int64)
    width = xt.shape[1]
    ev = np.empty((EVENTS_PER_READING * total + m, N_E), np.int64)
    evm = np.empty(EVENTS_PER_READING * total + m, np.float64)
    sus = np.empty(((width + 2) * total, 2), np.int64)
    cnt = np.zeros(2, np.int64)

    stuck_readings = rf[R_STUCK_READINGS]
    tolerance = rf[R_STUCK_TOLERANCE]
    min_move_rate = rf[R_STUCK_MIN_MOVE_RATE]
    spike_k = rf[R_SPIKE_K]
    spike_max = rf[R_SPIKE_MAX_READINGS]
    drift_k = rf[R_DRIFT_K]
    drift_clear_k = rf[R_DRIFT_CLEAR_K]
    drift_readings = rf[R_DRIFT_READINGS]
    clock_ahead = rf[R_CLOCK_AHEAD_S]
    clock_behind = rf[R_CLOCK_BEHIND_S]
    steady = rf[R_CLOCK_STEADY_FRACTION]
    tau = rf[R_CLOCK_TAU_READINGS]
    clock_readings = rf[R_CLOCK_READINGS]
    warmup = rf[R_WARMUP_READINGS]
    spike_hold = rt[T_SPIKE_HOLD]
    refeed = rt[T_REFEED]
    readopt = rt[T_READOPT]

    # Gather column by column (each column of a table is contiguous), then work row by row on the copies.
    for c in range(fv.shape[1]):
        for j in range(m):
            fv[j, c] = fv_all[u[j], c]
    for c in range(iv.shape[1]):
        for j in range(m):
            iv[j, c] = iv_all[u[j], c]

    for j in range(m):
        g = u[j]
        last_value = fv[j, F_LAST_VALUE]
        spread_st = fv[j, F_SPREAD]
        move_rate = fv[j, F_MOVE_RATE]
        flat_move_rate = fv[j, F_FLAT_MOVE_RATE]
        exc_base = fv[j, F_EXC_BASE]
        exc_jump = fv[j, F_EXC_JUMP]
        fast = fv[j, F_FAST]
        slow = fv[j, F_SLOW]
        drift_scale = fv[j, F_DRIFT_SCALE]
        delay_mean = fv[j, F_DELAY_MEAN]
        delay_dev = fv[j, F_DELAY_DEV]
        last_ts = iv[j, I_LAST_TS]
        arrived = iv[j, I_ARRIVED]
        spike_ts = iv[j, I_SPIKE_TS]
        fed_ts = iv[j, I_FED_TS]
        drift_ts = iv[j, I_DRIFT_TS]
        trusted = iv[j, I_TRUSTED]
        flat_run = iv[j, I_FLAT_RUN]
        excursion = iv[j, I_EXCURSION]
        exc_len = iv[j, I_EXC_LEN]
        drift_run = iv[j, I_DRIFT_RUN]
        ahead_run = iv[j, I_AHEAD_RUN]
        in_time_run = iv[j, I_IN_TIME_RUN]
        delays = iv[j, I_DELAYS]
        active = iv[j, I_ACTIVE]
        for c in range(exc_len):
            xt[j, c] = xt_all[g, c]
        valid_min = cf[g, C_VALID_MIN]
        valid_max = cf[g, C_VALID_MAX]
        spread_floor = cf[g, C_SPREAD_FLOOR]
        drift_floor = cf[g, C_DRIFT_FLOOR]
        w_spread = cf[g, C_W_SPREAD]
        w_move = cf[g, C_W_MOVE]
        w_fast = cf[g, C_W_FAST]
        w_slow = cf[g, C_W_SLOW]
        w_scale = cf[g, C_W_SCALE]
        warmup_drift = ci[g, K_WARMUP_DRIFT]
        spikes = ci[g, K_SPIKES] != 0
        drifts = ci[g, K_DRIFTS] != 0

        for p in range(starts[j], starts[j + 1]):
            k = order[p]
            t = ts[k]
            value = values[k]
            if p == starts[j] and active & B_DROPOUT:
                active &= ~B_DROPOUT
                _event(ev, evm, cnt, k, j, DROPOUT, 0, 0, 0.0)
            arrived = now

            # Clock: stamped with now, since the reading's own time is the thing in doubt.
            delay = (now - t) / 1e6
            if -delay > clock_ahead:
                ahead_run += 1
                in_time_run = 0
            else:
                ahead_run = 0
                in_time_run += 1
            if delays < tau:
                delays += 1
                a = 1.0 / delays
            else:
                a = 1.0 / tau
            delay_dev = delay_dev + a * (abs(delay - delay_mean) - delay_dev)
            delay_mean = delay_mean + a * (delay - delay_mean)
            if not active & B_CLOCK_SKEW:
                if ahead_run >= clock_readings or (
                    delays >= tau and delay_mean > clock_behind and delay_dev < steady * delay_mean
                ):
                    active |= B_CLOCK_SKEW
                    _event(ev, evm, cnt, k, j, CLOCK_SKEW, 1, 1, -delay)
                    _suspect(sus, cnt, j, t)
                elif ahead_run > 0:
                    _suspect(sus, cnt, j, t)
            elif in_time_run >= clock_readings and delay_mean < 0.5 * clock_behind:
                active &= ~B_CLOCK_SKEW
                _event(ev, evm, cnt, k, j, CLOCK_SKEW, 0, 1, -delay)
            else:
                _suspect(sus, cnt, j, t)

            # Range; then only newer readings of good or uncertain quality go on.
            if not (valid_min <= value and value <= valid_max):
                _suspect(sus, cnt, j, t)
                if not active & B_OUT_OF_RANGE:
                    active |= B_OUT_OF_RANGE
                    _event(ev, evm, cnt, k, j, OUT_OF_RANGE, 1, 0, 0.0)
                if last_ts == NONE or t > last_ts:
                    last_ts = t
                continue
            if active & B_OUT_OF_RANGE:
                active &= ~B_OUT_OF_RANGE
                _event(ev, evm, cnt, k, j, OUT_OF_RANGE, 0, 0, 0.0)
            if (last_ts != NONE and t <= last_ts) or quality[k] == 2:
                continue
            last_ts = t

            last = last_value
            if last != last:  # NaN: the first trusted reading
                last_value = value
                fast = value
                slow = value
                fed_ts = t
                trusted = 1
                continue
            if active & B_SPIKE and spike_ts != NONE and t - spike_ts > spike_hold:
                active &= ~B_SPIKE
                _event(ev, evm, cnt, k, j, SPIKE, 0, 0, 0.0)
            warm = trusted >= warmup
            spread = spread_st if spread_st > spread_floor else spread_floor

            # Spike: a jump held aside until it comes back (a spike) or stays (a level change).
            if excursion != 0:
                if abs(value - exc_base) <= 0.5 * abs(exc_jump):
                    for q in range(exc_len):
                        _suspect(sus, cnt, j, xt[j, q])
                    excursion = 0
                    exc_len = 0
                    spike_ts = t
                    if not active & B_SPIKE:
                        active |= B_SPIKE
                        _event(ev, evm, cnt, k, j, SPIKE, 1, 1, exc_jump)
                    last = exc_base
                    last_value = exc_base
                elif excursion < spike_max:
                    if exc_len >= width:
                        return u, fv, iv, xt, ev[:0].copy(), evm[:0].copy(), sus[:0].copy(), False
                    excursion += 1
                    xt[j, exc_len] = t
                    exc_len += 1
                    continue
                else:
                    excursion = 0
                    exc_len = 0
                    last = value
                    last_value = value
            step = value - last
            size = abs(step)
            # After a frozen stretch, the first change is the sensor coming back, not a spike.
            if spikes and warm and size > spike_k * spread and flat_run < stuck_readings:
                excursion = 1
                exc_base = last
                exc_jump = step
                xt[j, 0] = t
                exc_len = 1
                continue

            # Stuck: many readings in a row without change, from a sensor that usually changes.
            if size <= tolerance + 1e-9 * abs(value):
                if flat_run == 0:
                    flat_move_rate = move_rate
                flat_run += 1
                at_bound = value <= valid_min + tolerance or value >= valid_max - tolerance
                if warm and flat_run >= stuck_readings and flat_move_rate >= min_move_rate and not at_bound:
                    _suspect(sus, cnt, j, t)
                    if not active & B_STUCK:
                        active |= B_STUCK
                        _event(ev, evm, cnt, k, j, STUCK, 1, 0, 0.0)
                    continue
            else:
                if active & B_STUCK:
                    active &= ~B_STUCK
                    _event(ev, evm, cnt, k, j, STUCK, 0, 0, 0.0)
                flat_run = 0
            move_rate = move_rate + w_move * ((1.0 if flat_run == 0 else 0.0) - move_rate)
            if warm:
                cap = 5.0 * spread
                spread_st = spread_st + w_spread * ((cap if cap < size else size) - spread_st)
            else:
                spread_st = spread_st + (size - spread_st) / trusted
            last_value = value
            if trusted < 1_000_000_000:
                trusted += 1

            # Drift: the fast mean leaving the slow baseline by more than it usually does; after a stretch that
            # fed nothing the means start again from the value.
            if fed_ts != NONE and t - fed_ts > refeed:
                fast = value
                slow = value
                drift_run = 0
            fed_ts = t
            fast = fast + w_fast * (value - fast)
            if not drifts:
                continue
            drifting = active & B_DRIFT
            if not drifting:
                slow = slow + w_slow * (value - slow)
            d = abs(fast - slow)
            if trusted <= warmup_drift:
                drift_scale = drift_scale + (d - drift_scale) / trusted
                continue
            scale = drift_scale if drift_scale > drift_floor else drift_floor
            if not drifting:
                limit = drift_k * scale
                drift_scale = drift_scale + w_scale * ((limit if limit < d else d) - drift_scale)
                drift_run = drift_run + 1 if d > limit else 0
                if drift_run >= drift_readings:
                    drift_run = 0
                    drift_ts = t
                    active |= B_DRIFT
                    _event(ev, evm, cnt, k, j, DRIFT, 1, 1, fast - slow)
                    _suspect(sus, cnt, j, t)
                continue
            _suspect(sus, cnt, j, t)
            if drift_ts != NONE and t - drift_ts > readopt:
                slow = fast
                drift_ts = t
                d = 0.0
            drift_run = drift_run + 1 if d < drift_clear_k * scale else 0
            if drift_run >= drift_readings:
                drift_run = 0
                active &= ~B_DRIFT
                _event(ev, evm, cnt, k, j, DRIFT, 0, 1, fast - slow)
                slow = fast

        # Spike holds that ran out by now, for sensors that had state (the caller judges the others).
        if seq[g] >= 0 and active & B_SPIKE and spike_ts != NONE and now - spike_ts > spike_hold:
            active &= ~B_SPIKE
            _event(ev, evm, cnt, -1, j, SPIKE, 0, 0, 0.0)

        fv[j, F_LAST_VALUE] = last_value
        fv[j, F_SPREAD] = spread_st
        fv[j, F_MOVE_RATE] = move_rate
        fv[j, F_FLAT_MOVE_RATE] = flat_move_rate
        fv[j, F_EXC_BASE] = exc_base
        fv[j, F_EXC_JUMP] = exc_jump
        fv[j, F_FAST] = fast
        fv[j, F_SLOW] = slow
        fv[j, F_DRIFT_SCALE] = drift_scale
        fv[j, F_DELAY_MEAN] = delay_mean
        fv[j, F_DELAY_DEV] = delay_dev
        iv[j, I_LAST_TS] = last_ts
        iv[j, I_ARRIVED] = arrived
        iv[j, I_SPIKE_TS] = spike_ts
        iv[j, I_FED_TS] = fed_ts
        iv[j, I_DRIFT_TS] = drift_ts
        iv[j, I_TRUSTED] = trusted
        iv[j, I_FLAT_RUN] = flat_run
        iv[j, I_EXCURSION] = excursion
        iv[j, I_EXC_LEN] = exc_len
        iv[j, I_DRIFT_RUN] = drift_run
        iv[j, I_AHEAD_RUN] = ahead_run
        iv[j, I_IN_TIME_RUN] = in_time_run
        iv[j, I_DELAYS] = delays
        iv[j, I_ACTIVE] = active
    return u, fv, iv, xt, ev[: cnt[0]].copy(), evm[: cnt[0]].copy(), sus[: cnt[1]].copy(), True


@_njit
def scatter(
    rows: npt.NDArray[np.int64],
    fv: npt.NDArray[np.float64],
    iv: npt.NDArray[np.int64],
    xt: npt.NDArray[np.int64],
    fv_all: npt.NDArray[np.float64],
    iv_all: npt.NDArray[np.int64],
    xt_all: npt.NDArray[np.int64],
) -> None:
    """Write the rows :func:`run_batch` returned into the state tables (the excursion times in use only)."""
    m = rows.shape[0]
    # Column by column: each column of a table is contiguous.
    for c in range(fv.shape[1]):
        for j in range(m):
            fv_all[rows[j], c] = fv[j, c]
    for c in range(iv.shape[1]):
        for j in range(m):
            iv_all[rows[j], c] = iv[j, c]
    for j in range(m):
        for c in range(iv[j, I_EXC_LEN]):
            xt_all[rows[j], c] = xt[j, c]


def entry_points() -> dict[str, tuple[Any, ...]]:
    """The compiled entry points and the argument types :class:`~models.sensor_health.SensorHealthDetector` calls
    them with (the JIT and the ahead-of-time build compile exactly these)."""
    import numba

    i8, f8 = numba.types.int64, numba.types.float64
    f8_f, i8_f = numba.types.Array(f8, 2, "F"), numba.types.Array(i8, 2, "F")
    return {
        "run_batch": (
            *(i8[::1], i8[::1], f8[::1], numba.types.int16[::1], i8, i8[::1], i8[::1]),
            *(f8_f, i8_f, i8_f, f8_f, i8_f, f8[::1], i8[::1]),
        ),
        "scatter": (i8[::1], f8[:, ::1], i8[:, ::1], i8[:, ::1], f8_f, i8_f, i8_f),
    }


def compile_kernels() -> float:
    """Compile :func:`run_batch` and :func:`scatter` for the detector's argument types (or load them from the cache).

    Returns:
        The seconds it took; 0 when they were already compiled in this process, or compiled ahead of time.
    """
    return 0.0 if AOT is not None else kernel_aot.compile_jit(globals(), entry_points())


if AOT is not None:
    globals().update({name: getattr(AOT, name) for name in ("run_batch", "scatter")})
