"""The demo city's whole detector chain judges a batch of columns exactly as it judges the same readings as rows.

Ingest hands the chain a :class:`~twin.readings.ReadingBatch`; the network detectors take their own sensors out
of it by column (:func:`models.streaming.of_sensors`) or read its columns directly (``water_leak``). Here the
same 56 hours — the bench's EPANET water scenario with a 10 L/s leak, drainage levels of which one rises over
its pipe crown, methane detectors of which one sees gas, a pressure spike that sensor health flags, a reading of
bad quality, a duplicate and a sensor nobody knows — go through two chains, once as columns and once as lists of
:class:`~twin.readings.Reading`: every alert change and every detector's stored state must be the same.
"""

from __future__ import annotations

import json
import math
from datetime import datetime

import numpy as np

from models.chain import DetectorChain
from models.drainage import geometry_of
from models.registry import learned_detectors
from twin.democity.city import build_demo_city
from twin.model import City
from twin.readings import QUALITY_BAD, Reading, ReadingBatch
from twin.sensors import Network, Quantity

from .bench_modules import load_bench

load_bench("bench_health")  # bench_detect imports it by name
bench = load_bench("bench_detect")


def _batches(city: City) -> list[tuple[datetime, list[Reading]]]:
    rng = np.random.default_rng(11)
    items = city.sensors.items()
    levels = sorted(s for s, x in items if x.network is Network.DRAINAGE and x.quantity is Quantity.LEVEL)[:12]
    methane = sorted(s for s, x in city.sensors.items() if x.quantity is Quantity.METHANE)[:12]
    crown = geometry_of(city, city.sensors[levels[0]]).crown_m
    out = []
    for k, (ts, readings) in enumerate(bench.twin_batches(city)):
        hours = k / 60.0
        extra = list(readings)
        for j, sid in enumerate(levels):
            base = crown - 0.6 + 0.02 * j
            if j == 0 and hours > 50.0:  # over the crown after 50 h
                base = crown - 0.6 + min(hours - 50.0, 1.0) * 1.0
            extra.append(Reading(sid, ts, base + float(rng.normal(0.0, 0.01)), 0))
        for j, sid in enumerate(methane):
            value = 0.5 + float(rng.normal(0.0, 0.1))
            if j == 0 and hours > 53.0:  # gas in the space after 53 h
                value += min((hours - 53.0) * 40.0, 40.0)
            extra.append(Reading(sid, ts, value, 0))
        if k == 40 * 60:
            spiked = extra[0]
            extra[0] = spiked._replace(value=spiked.value + 60.0)
        if k % 97 == 0:
            extra.append(extra[1])  # delivered twice
            extra.append(Reading("XX-NOBODY", ts, 1.0, 0))
            extra.append(extra[2]._replace(value=math.nan, quality=QUALITY_BAD))
        rng.shuffle(extra)  # type: ignore[arg-type]
        out.append((ts, extra))
    return out


def _run(city: City, batches: list[tuple[datetime, list[Reading]]], columns: bool) -> tuple[list[str], str]:
    chain = DetectorChain.default(dict(city.sensors), extra=learned_detectors(city))
    changes = []
    for now, readings in batches:
        batch = ReadingBatch.from_readings(readings) if columns else readings
        if columns:
            batch._rows = None  # as ingest gives it: columns only, rows made on demand
        result = chain.evaluate(batch, now=now)
        chain.commit(result)
        changes.extend(
            f"{c.event} {c.cause_key} {c.ts.isoformat()} {c.grade} {c.value!r} {json.dumps(c.detail, sort_keys=True)}"
            for c in result.changes
        )
    return changes, json.dumps(chain.dump_states(), sort_keys=True)


def test_columns_and_rows_give_the_same_alerts_and_state() -> None:
    city = build_demo_city()
    batches = _batches(city)
    by_rows, state_rows = _run(city, batches, columns=False)
    by_columns, state_columns = _run(city, batches, columns=True)
    kinds = {line.split()[1].split(":")[0] for line in by_rows}
    assert {"water_leak", "drainage", "gas_leak", "health"} <= kinds, kinds
    assert by_columns == by_rows
    assert state_columns == state_rows
