"""Sensor faults, injected into a scenario's readings on their way to the wire, each with its own label.

Kinds: ``dropout`` (no data), ``stuck`` (frozen value), ``spike`` (a short excursion), ``drift`` (a growing
offset), ``noise`` (extra random noise), ``clock_skew`` (timestamps off by a fixed offset), ``duplicate`` (each
message sent twice), ``out_of_order`` (messages delivered late, after newer ones), ``malformed`` (payloads that
are not valid messages). A message whose content a fault changed carries that fault's label in the recording.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson

from simulators.scenario import SimReading, Step
from twin.errors import ConfigError
from twin.sensors import Sensor


class FaultKind(enum.StrEnum):
    """The kinds of sensor fault the simulators can inject."""

    DROPOUT = "dropout"
    STUCK = "stuck"
    SPIKE = "spike"
    DRIFT = "drift"
    NOISE = "noise"
    CLOCK_SKEW = "clock_skew"
    DUPLICATE = "duplicate"
    OUT_OF_ORDER = "out_of_order"
    MALFORMED = "malformed"


@dataclass(frozen=True, slots=True)
class Fault:
    """One fault on one sensor from ``start`` to ``end`` (simulated time).

    ``magnitude`` means, by kind: spike — added to the value (canonical unit); drift — added per hour; noise —
    standard deviation; clock_skew — seconds added to the timestamp; out_of_order — delivery delay in seconds.
    """

    kind: FaultKind
    sensor_id: str
    start: datetime
    end: datetime
    magnitude: float = 0.0

    def active(self, ts: datetime) -> bool:
        return self.start <= ts < self.end

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "sensor_id": self.sensor_id,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "magnitude": self.magnitude,
        }


@dataclass(frozen=True, slots=True)
class WireMessage:
    """A message as it goes on the wire at simulated time ``at``, with the label of the fault that shaped it."""

    at: datetime
    topic: str
    payload: bytes
    sensor_id: str
    label: str | None = None


@dataclass(slots=True)
class _State:
    seq: int = 0
    stuck_value: float | None = None
    delayed: list[tuple[datetime, WireMessage]] = field(default_factory=list)


def _encode(reading: SimReading, sensor: Sensor, seq: int, ts: datetime) -> bytes:
    return orjson.dumps(
        {"ts": ts.isoformat(timespec="milliseconds"), "value": round(reading.value, 5), "unit": sensor.unit, "seq": seq}
    )


_MALFORMED = (
    lambda body: body[: len(body) // 2],  # cut short
    lambda body: body.replace(b'"value":', b'"value":"', 1).replace(b',"unit"', b'","unit"', 1),  # a string
    lambda body: b"\xff\xfe" + body,  # not UTF-8
    lambda body: body.replace(b'"unit":"', b'"unit":"furlong-', 1),  # unknown unit
)


def inject(
    steps: Iterable[Step],
    *,
    sensors: Mapping[str, Sensor],
    prefix: str,
    faults: Sequence[Fault] = (),
    seed: int = 0,
) -> Iterator[WireMessage]:
    """Turn scenario steps into wire messages, applying *faults*; deterministic for a given *seed*.

    Raises:
        ConfigError: a fault names a sensor that is not in *sensors*.
    """
    for fault in faults:
        if fault.sensor_id not in sensors:
            raise ConfigError(f"fault {fault.kind.value} names unknown sensor {fault.sensor_id!r}")
    rng = random.Random(seed)
    by_sensor: dict[str, list[Fault]] = {}
    for fault in faults:
        by_sensor.setdefault(fault.sensor_id, []).append(fault)
    states: dict[str, _State] = {}
    pending: list[tuple[datetime, int, WireMessage]] = []
    order = 0
    for step in steps:
        # Deliver late messages whose time has come, before this step's.
        due = sorted((p for p in pending if p[0] <= step.ts), key=lambda p: (p[0], p[1]))
        pending = [p for p in pending if p[0] > step.ts]
        yield from (p[2] for p in due)
        for reading in step.readings:
            sensor = sensors.get(reading.sensor_id)
            if sensor is None:
                continue
            state = states.setdefault(reading.sensor_id, _State())
            active = [f for f in by_sensor.get(reading.sensor_id, ()) if f.active(reading.ts)]
            value, ts, label = reading.value, reading.ts, None
            if any(f.kind is FaultKind.DROPOUT for f in active):
                continue
            for fault in active:
                if fault.kind is FaultKind.STUCK:
                    if state.stuck_value is None:
                        state.stuck_value = value
                    value = state.stuck_value
                elif fault.kind is FaultKind.SPIKE:
                    value += fault.magnitude
                elif fault.kind is FaultKind.DRIFT:
                    value += fault.magnitude * (reading.ts - fault.start) / timedelta(hours=1)
                elif fault.kind is FaultKind.NOISE:
                    value += rng.gauss(0.0, fault.magnitude)
                elif fault.kind is FaultKind.CLOCK_SKEW:
                    ts = ts + timedelta(seconds=fault.magnitude)
                label = fault.kind.value if label is None else f"{label}+{fault.kind.value}"
            if not any(f.kind is FaultKind.STUCK for f in active):
                state.stuck_value = None
            state.seq += 1
            body = _encode(SimReading(reading.sensor_id, ts, value), sensor, state.seq, ts)
            if any(f.kind is FaultKind.MALFORMED for f in active):
                body = _MALFORMED[rng.randrange(len(_MALFORMED))](body)
            message = WireMessage(
                reading.ts, f"{prefix}/{sensor.network.value}/{sensor.sensor_id}", body, sensor.sensor_id, label
            )
            late = next((f for f in active if f.kind is FaultKind.OUT_OF_ORDER), None)
            if late is not None:
                order += 1
                at = reading.ts + timedelta(seconds=late.magnitude)
                pending.append((at, order, WireMessage(at, message.topic, body, sensor.sensor_id, label)))
                continue
            yield message
            if any(f.kind is FaultKind.DUPLICATE for f in active):
                yield message
    for _at, _order, message in sorted(pending, key=lambda p: (p[0], p[1])):
        yield message
