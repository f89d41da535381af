"""Score detectors on a simulator run: replay its recording through them and compare with its ground truth.

The replay is the ingest path without the broker and the database: each recorded message goes through the real
:class:`~ingest.protocol.PayloadDecoder` (its clock set to the message's time), readings are gathered into batches
of ``batch_s`` simulated seconds and given to a :class:`~models.chain.DetectorChain` as ingest would.

Matching (:func:`score_run`):

- **Events** come from ``ground_truth.json``: ``leak``/``burst`` and valve/pump events (water), ``gas_leak`` (gas),
  ``flood`` (drainage). A rainstorm scenario is itself an event of the drainage and rain networks over its span,
  so the surcharge and level warnings a storm causes are expected, not false.
- An event is **detected** by the first lifeline warning (any kind but ``sensor_health``) of its network raised
  from its start (for floods: from the scenario's start, so a warning before the water comes counts, with a
  negative delay, i.e. lead time) to its end plus ``grace_s``. Its **delay** is the warning's time minus the
  event's start. "Detected within W" means a delay of at most W.
- A lifeline warning raised when no event of its network is under way is a **false alarm**; the rate is per day of
  the run and per 100 sensors of the networks the run covers.
- **Localisation**: the candidates (``detail["candidates"]``) of the detecting alert, as last updated before
  ``start + within_s``; the error is the network distance along pipes (m) from the first candidate to the nearest
  true location (the leak's junction, or its pipe's ends).
- **Sensor faults** (the recording's labels) are detected by a ``sensor_health`` alert of that sensor during the
  fault (plus ``grace_s``); other health alerts are counted as false maintenance alerts.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import networkx as nx

from ingest.protocol import PayloadDecoder, PayloadLimits
from models.chain import DetectorChain
from simulators.faults import WireMessage
from twin.alerts import AlertChange
from twin.model import PipeNetwork
from twin.readings import Reading
from twin.sensors import Network, Sensor

HEALTH_KIND = "sensor_health"
EVENT_NETWORK: Mapping[str, str] = {
    "leak": "water",
    "burst": "water",
    "valve": "water",
    "pump": "water",
    "gas_leak": "gas",
    "flood": "drainage",
}
"""The network each ground-truth event kind happens on."""


@dataclass(slots=True)
class Replay:
    """What the detectors said over a replayed recording."""

    changes: list[AlertChange]
    messages: int
    readings: int
    rejected: int
    first: datetime | None
    last: datetime | None
    detector_s: dict[str, float]
    wall_s: float


def replay(
    messages: Iterable[WireMessage],
    *,
    sensors: Mapping[str, Sensor],
    chain: DetectorChain,
    prefix: str | None = None,
    batch_s: float = 60.0,
    limits: PayloadLimits | None = None,
) -> Replay:
    """Decode *messages* (in time order) and run *chain* on batches of *batch_s* simulated seconds.

    Args:
        messages: the recording (see :func:`simulators.recording.read_recording`).
        sensors: the sensors the decoder accepts.
        chain: the detectors (their state moves on; build a fresh chain per run).
        prefix: the topic prefix; None takes it from the first message (everything before ``/{network}/{id}``).
        batch_s: simulated seconds per batch (ingest writes a batch every few tens of milliseconds at real speed;
            at the simulator's one-minute steps one batch per step is what ingest sees).
        limits: payload limits (defaults).
    """
    started = time.perf_counter()
    now: list[datetime] = []
    decoder: PayloadDecoder | None = None
    changes: list[AlertChange] = []
    batch: list[Reading] = []
    batch_end: datetime | None = None
    counts = {"messages": 0, "readings": 0, "rejected": 0}
    first: datetime | None = None
    last: datetime | None = None
    step = timedelta(seconds=batch_s)

    def flush(at: datetime) -> None:
        result = chain.evaluate(batch, now=at)
        chain.commit(result)
        changes.extend(result.changes)
        batch.clear()

    for message in messages:
        if decoder is None:
            if prefix is None:
                prefix = message.topic.rsplit("/", 2)[0]
            decoder = PayloadDecoder(sensors=sensors, prefix=prefix, limits=limits or PayloadLimits(), clock=now.pop)
        if batch_end is None:
            batch_end = message.at + step
            first = message.at
        while message.at >= batch_end:
            flush(batch_end)
            batch_end += step
        now.append(message.at)
        decoded = decoder.decode(message.topic, message.payload)
        now.clear()
        counts["messages"] += 1
        counts["readings"] += len(decoded.readings)
        counts["rejected"] += len(decoded.rejected)
        batch.extend(decoded.readings)
        last = message.at
    if batch_end is not None:
        flush(batch_end)
    return Replay(
        changes=changes,
        messages=counts["messages"],
        readings=counts["readings"],
        rejected=counts["rejected"],
        first=first,
        last=last,
        detector_s=dict(chain.seconds),
        wall_s=time.perf_counter() - started,
    )


@dataclass(slots=True)
class EventOutcome:
    """How one ground-truth event was seen."""

    event: dict[str, Any]
    network: str
    start: datetime
    detected_at: datetime | None = None
    alert_kind: str | None = None
    cause_key: str | None = None
    candidates: list[str] = field(default_factory=list)
    localisation_error_m: float | None = None

    @property
    def delay_s(self) -> float | None:
        """Seconds from the event's start to its first warning (negative: a warning ahead of it), or None."""
        return None if self.detected_at is None else (self.detected_at - self.start).total_seconds()

    def detected_within(self, seconds: float) -> bool:
        """Whether the event was detected at most *seconds* after it started."""
        delay = self.delay_s
        return delay is not None and delay <= seconds


@dataclass(slots=True)
class FaultOutcome:
    """How one injected sensor fault was seen."""

    fault: dict[str, Any]
    detected_at: datetime | None


@dataclass(slots=True)
class RunScore:
    """The score of one run."""

    events: list[EventOutcome]
    false_alarms: list[AlertChange]
    faults: list[FaultOutcome]
    false_health: list[AlertChange]
    days: float
    sensors: int

    @property
    def false_alarms_per_day_per_100(self) -> float:
        """False lifeline warnings per day of the run per 100 sensors of the networks it covers."""
        if self.days <= 0 or self.sensors <= 0:
            return 0.0
        return len(self.false_alarms) / self.days / (self.sensors / 100.0)

    def as_dict(self, *, within_s: float = 7200.0) -> dict[str, Any]:
        """Return the score as JSON-ready values (detection judged within *within_s*)."""
        detected = [e for e in self.events if e.detected_within(within_s)]
        delays = sorted(e.delay_s for e in detected if e.delay_s is not None)
        errors = sorted(e.localisation_error_m for e in self.events if e.localisation_error_m is not None)
        return {
            "events": len(self.events),
            "detected": len(detected),
            "recall": round(len(detected) / len(self.events), 4) if self.events else None,
            "median_delay_min": round(_median(delays) / 60.0, 1) if delays else None,
            "false_alarms": len(self.false_alarms),
            "false_alarms_per_day_per_100_sensors": round(self.false_alarms_per_day_per_100, 3),
            "median_localisation_error_m": round(_median(errors), 1) if errors else None,
            "faults": len(self.faults),
            "faults_detected": sum(f.detected_at is not None for f in self.faults),
            "false_health_alerts": len(self.false_health),
            "days": round(self.days, 3),
            "sensors": self.sensors,
            "per_event": [
                {
                    "kind": e.event.get("kind"),
                    "where": _where(e.event),
                    "size": e.event.get("flow_l_s", e.event.get("volume_flow_m3_h", e.event.get("volume_m3"))),
                    "start": e.start.isoformat(),
                    "delay_min": None if e.delay_s is None else round(e.delay_s / 60.0, 1),
                    "alert": e.cause_key,
                    "candidates": e.candidates[:3],
                    "localisation_error_m": e.localisation_error_m,
                }
                for e in self.events
            ],
        }


def score_run(
    truth: Mapping[str, Any],
    changes: Sequence[AlertChange],
    *,
    sensors: Mapping[str, Sensor],
    networks: Mapping[Network, PipeNetwork] | None = None,
    within_s: float = 7200.0,
    grace_s: float = 3600.0,
) -> RunScore:
    """Compare the alert changes of a replay with the run's ground truth (see the module docstring)."""
    scenario = dict(truth.get("scenario", {}))
    run_start = _time(scenario.get("start"))
    run_end = run_start + timedelta(seconds=float(scenario.get("duration", 0))) if run_start else None
    raised = sorted((c for c in changes if c.event == "raised"), key=lambda c: c.ts)
    warnings = [c for c in raised if c.kind != HEALTH_KIND]
    outcomes: list[EventOutcome] = []
    spans: list[tuple[str, datetime, datetime]] = []
    for event in truth.get("events", []):
        kind = str(event.get("kind"))
        network = EVENT_NETWORK.get(kind)
        start = _time(event.get("start"))
        if network is None or start is None:
            continue
        end = _time(event.get("end")) or run_end or start
        open_from = run_start if kind == "flood" and run_start else start
        spans.append((network, open_from, end + timedelta(seconds=grace_s)))
        outcomes.append(EventOutcome(event=dict(event), network=network, start=start))
    for part in _parts(scenario):
        if part.get("kind") == "rainstorm" and run_start and run_end:
            p_start = _time(part.get("start")) or run_start
            p_end = p_start + timedelta(seconds=float(part.get("duration", 0)))
            for network in ("drainage", "rain"):
                spans.append((network, p_start, p_end + timedelta(seconds=grace_s)))
    for outcome in outcomes:
        open_from = run_start if outcome.event.get("kind") == "flood" and run_start else outcome.start
        end = (_time(outcome.event.get("end")) or run_end or outcome.start) + timedelta(seconds=grace_s)
        for change in warnings:
            if change.network == outcome.network and open_from <= change.ts <= end:
                outcome.detected_at, outcome.alert_kind, outcome.cause_key = change.ts, change.kind, change.cause_key
                break
        _localise(outcome, changes, networks or {}, within_s)
    false_alarms = [c for c in warnings if not any(n == c.network and a <= c.ts <= b for n, a, b in spans)]
    faults, false_health = _faults(truth.get("faults", []), raised, grace_s)
    covered = {n for n, _a, _b in spans} | {str(s.network) for s in sensors.values()}
    judged = [s for s in sensors.values() if str(s.network) in covered]
    listed = scenario.get("sensors")
    count = len(listed) if isinstance(listed, list) and listed else len(judged)
    days = (run_end - run_start).total_seconds() / 86_400.0 if run_start and run_end else 0.0
    return RunScore(outcomes, false_alarms, faults, false_health, days, count)


def network_distance_m(network: PipeNetwork, a: str, b: str) -> float:
    """Shortest path length along the network's links between nodes *a* and *b*, metres (inf if unconnected)."""
    graph = _graph(network)
    try:
        return float(nx.shortest_path_length(graph, a, b, weight="length"))
    except (nx.NetworkXNoPath, nx.NodeNotFound):
        return math.inf


_GRAPHS: dict[int, tuple[PipeNetwork, nx.Graph]] = {}


def _graph(network: PipeNetwork) -> nx.Graph:
    cached = _GRAPHS.get(id(network))
    if cached is not None and cached[0] is network:
        return cached[1]
    graph = nx.Graph()
    for link in network.links.values():
        length = link.length_m if link.length_m and link.length_m > 0 else 1.0
        if graph.has_edge(link.from_id, link.to_id):
            length = min(length, graph[link.from_id][link.to_id]["length"])
        graph.add_edge(link.from_id, link.to_id, length=length)
    _GRAPHS[id(network)] = (network, graph)
    return graph


def _localise(
    outcome: EventOutcome,
    changes: Sequence[AlertChange],
    networks: Mapping[Network, PipeNetwork],
    within_s: float,
) -> None:
    if outcome.cause_key is None:
        return
    until = outcome.start + timedelta(seconds=within_s)
    detail: Mapping[str, Any] | None = None
    for change in changes:
        if (
            change.cause_key == outcome.cause_key
            and (outcome.detected_at or outcome.start) <= change.ts <= until
            and change.detail
            and "candidates" in change.detail
        ):
            detail = change.detail
    if not detail:
        return
    assets = [str(c.get("asset", "")) for c in detail.get("candidates", []) if isinstance(c, Mapping)]
    outcome.candidates = assets
    network = networks.get(Network(outcome.network))
    truth_nodes = _true_nodes(outcome.event, network)
    if network is None or not assets or not truth_nodes:
        return
    nodes = _asset_nodes(assets[0], network)
    if not nodes:
        return
    outcome.localisation_error_m = round(min(network_distance_m(network, a, b) for a in nodes for b in truth_nodes), 1)


def in_top(outcome: EventOutcome, k: int, network: PipeNetwork | None) -> bool:
    """Whether one of the first *k* candidates is (or touches) a true location of the event."""
    truth_nodes = _true_nodes(outcome.event, network)
    if not truth_nodes or network is None:
        return False
    return any(set(_asset_nodes(asset, network)) & truth_nodes for asset in outcome.candidates[:k])


def _true_nodes(event: Mapping[str, Any], network: PipeNetwork | None) -> set[str]:
    nodes = {str(n["junction_id"]) for n in event.get("nodes", []) if isinstance(n, Mapping) and n.get("share", 1)}
    if event.get("junction_id"):
        nodes.add(str(event["junction_id"]))
    for key in ("link_id", "pipe_id"):
        link_id = event.get(key)
        if link_id and network is not None and link_id in network.links:
            link = network.links[link_id]
            nodes |= {link.from_id, link.to_id}
    return nodes


def _asset_nodes(asset: str, network: PipeNetwork) -> list[str]:
    """The node ids an asset reference (``water:node:J1`` / ``gas:link:P3``) stands for in *network*."""
    parts = asset.split(":")
    kind, ident = (parts[-2], parts[-1]) if len(parts) >= 2 else ("node", asset)
    if kind == "link" and ident in network.links:
        link = network.links[ident]
        return [link.from_id, link.to_id]
    return [ident] if ident in network.nodes else []


def _faults(
    faults: Iterable[Mapping[str, Any]], raised: Sequence[AlertChange], grace_s: float
) -> tuple[list[FaultOutcome], list[AlertChange]]:
    health = [c for c in raised if c.kind == HEALTH_KIND]
    used: set[int] = set()
    outcomes = []
    for fault in faults:
        start, end = _time(fault.get("start")), _time(fault.get("end"))
        sensor = fault.get("sensor_id")
        if start is None:
            continue
        stop = (end or start) + timedelta(seconds=grace_s)
        hit = next((i for i, c in enumerate(health) if c.sensor_id == sensor and start <= c.ts <= stop), None)
        if hit is not None:
            used.add(hit)
        outcomes.append(FaultOutcome(dict(fault), None if hit is None else health[hit].ts))
    spans = [
        (
            f.fault.get("sensor_id"),
            _time(f.fault.get("start")),
            _time(f.fault.get("end")) or _time(f.fault.get("start")),
        )
        for f in outcomes
    ]
    false_health = [
        c
        for i, c in enumerate(health)
        if i not in used
        and not any(
            s == c.sensor_id and a is not None and b is not None and a <= c.ts <= b + timedelta(seconds=grace_s)
            for s, a, b in spans
        )
    ]
    return outcomes, false_health


def _parts(scenario: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    parts = scenario.get("parts")
    if isinstance(parts, list):
        return [p for p in parts if isinstance(p, Mapping)]
    return [scenario]


def _time(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    return None


def _where(event: Mapping[str, Any]) -> str | None:
    for key in ("junction_id", "link_id", "pipe_id", "node_id"):
        if event.get(key):
            return str(event[key])
    return None


def _median(values: Sequence[float]) -> float:
    n = len(values)
    mid = n // 2
    return float(values[mid]) if n % 2 else (values[mid - 1] + values[mid]) / 2.0
