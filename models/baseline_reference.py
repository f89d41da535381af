"""The per-sensor baseline detector as numpy rounds over a batch: the readable reference.

:class:`models.baseline.BaselineDetector` runs a batch through a compiled kernel (:mod:`models.baseline_kernel`),
sensor by sensor, and is what ingest uses. This module keeps the rules as they were first written with numpy: a
batch is processed in *rounds*, the k-th reading of every sensor in the batch together, each round a few
vectorised operations across sensors. It is kept so that the rules can be read and so that the kernel can be
tested against it: ``tests/models/test_baseline_kernel.py`` asserts that both give the same changes (in the same
order: by the reading's rank within its sensor in the batch, then by sensor row) and the same state, batch after
batch. A change to a rule is made here first and then in the kernel. The rules are described in
:mod:`models.baseline`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import numpy as np

from models.baseline import _DAY_S, _MAD_TO_SIGMA, BaselineDetector
from models.streaming import StreamResult, Suspect
from twin.alerts import AlertChange
from twin.readings import Reading


class ReferenceBaselineDetector(BaselineDetector):
    """The baseline detector with the batch processed in numpy rounds (the reference; see the module docstring).

    Everything but :meth:`evaluate` (sensors, state, JSON, alert changes) is that of
    :class:`~models.baseline.BaselineDetector`.
    """

    def evaluate(self, readings: Sequence[Reading], *, now: datetime, suspect: Suspect) -> StreamResult:
        """Judge a batch; return the alert changes and the next state (the detector itself is unchanged)."""
        rules = self.rules
        columns = self._columns(readings, suspect)
        if columns is None:
            return StreamResult([], self._state)
        row, ts, val, usable = columns
        if not usable.all():
            row, ts, val = row[usable], ts[usable], val[usable]
        if not len(row):
            return StreamResult([], self._state)
        st = self._state.copy()
        order = np.lexsort((ts, row))
        row, ts, val = row[order], ts[order], val[order]
        starts = np.flatnonzero(np.r_[True, row[1:] != row[:-1]])
        rank = np.arange(len(row)) - np.repeat(starts, np.diff(np.r_[starts, len(row)]))
        local = ts + rules.utc_offset_h * 3600.0
        hour = np.floor((local % _DAY_S) / 3600.0).astype(np.int64)
        weekend = ((np.floor(local / _DAY_S).astype(np.int64) + 3) % 7 >= 5).astype(np.int64)  # 1970-01-01: Thursday
        bins = hour + 24 * weekend
        changes: list[AlertChange] = []
        alpha = 1.0 / rules.score_readings
        for k in range(int(rank.max()) + 1):
            sel = rank == k
            i, t, x, b = row[sel], ts[sel], val[sel], bins[sel]
            newer = t > st.last_ts[i]
            i, t, x, b = i[newer], t[newer], x[newer], b[newer]
            if not len(i):
                continue
            st.last_ts[i] = t
            first = ~st.seen[i]
            st.seen[i] = True
            # A weekend bin that has not warmed up yet borrows the weekday bin of the same hour.
            judge_b = np.where((b >= 24) & (st.count[i, b] < self._warmup[i]), b - 24, b)
            loc = st.loc[i, judge_b]
            sigma = np.maximum(_MAD_TO_SIGMA * st.spread[i, judge_b], self._floor[i])
            warm = st.count[i, judge_b] >= self._warmup[i]
            z = np.where(warm, (x - loc) / sigma, 0.0)
            st.score[i] = np.where(first, z, st.score[i] + alpha * (z - st.score[i]))
            beyond = np.abs(st.score[i]) > np.where(st.active[i], rules.clear_z, rules.raise_z)
            # While raised, run counts readings back within clear_z; otherwise readings beyond raise_z.
            counting = np.where(st.active[i], ~beyond, beyond) & warm
            st.run[i] = np.where(counting, st.run[i] + 1, 0)
            flip = st.run[i] >= rules.hold_readings
            expired = st.active[i] & (t - st.since[i] > rules.readopt_h * 3600.0)
            for j in np.flatnonzero(flip | expired):
                sid_row = int(i[j])
                raising = not st.active[sid_row]
                st.active[sid_row] = raising
                st.since[sid_row] = float(t[j]) if raising else np.nan
                st.run[sid_row] = 0
                changes.append(
                    self._change(sid_row, raising, float(t[j]), float(x[j]), float(loc[j]), float(st.score[sid_row]))
                )
            # Learn, except for sensors whose alert is raised.
            learn = ~st.active[i]
            li, lb, lx = i[learn], b[learn], x[learn]
            if len(li):
                n = st.count[li, lb]
                fresh = n == 0
                cur_loc = np.where(fresh, lx, st.loc[li, lb])
                cur_spread = np.where(fresh, self._floor[li], st.spread[li, lb])
                step = rules.median_step * np.maximum(cur_spread, self._floor[li])
                new_loc = cur_loc + step * np.sign(lx - cur_loc)
                new_spread = cur_spread + rules.spread_weight * (np.abs(lx - cur_loc) - cur_spread)
                st.loc[li, lb] = new_loc
                st.spread[li, lb] = new_spread
                st.count[li, lb] = n + 1
        return StreamResult(changes, st)
