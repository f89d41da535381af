"""Pump and valve control consistency, live: a pump that runs past its stop level raises an alert.

The streaming twin of :mod:`models.control_rules` (``lifeline detect --inp``), kind ``water_control``, network
``water``. The rules are the simple controls of the water network's own EPANET model (the twin keeps the imported
``.inp``; :func:`rules_of`): ``LINK PU2 CLOSED IF NODE T1 ABOVE 4.5`` says PU2 stands still while tank T1 is above
4.5 m. A rule is watched when the twin has a sensor on both ends of it: a level sensor on the tank (a pressure
sensor on a junction for a pressure rule; kPa, the threshold converted from m of head) and a flow sensor on the
link (open while its flow exceeds ``open_flow_l_s``, default 1 L/s — the live sensors have no status channel).

On each batch the newest trusted reading of each watched sensor is kept. A rule is judged when a reading of its
value or its flow arrives and the other's newest reading is at most ``max_skew_s`` away: **broken** when the
value is past the threshold by more than ``tolerance_m`` (0.05 m; 0.5 kPa for pressure) and the link's state is
not the rule's action, **kept** when it is. ``confirm`` (2) broken judgements in a row raise one alert per link
(``water_control:{link}``, grade III: a tank overflowing or running dry, a controller that does not act on what its
sensor reads — failure or tampering); it clears at the first kept judgement of any of the link's rules (the
controller seen obeying again), as the offline check's alarm does. Suspect and bad readings are ignored. The state
(newest readings, counts, active alerts) survives a restart as JSON.

Without controls in the model, or without sensors on both ends of any rule, the detector is idle (``unmetered``
says why) and the registry leaves it out; the demo city's pumps have no controls, so it does not run there.
"""

from __future__ import annotations

import copy
import logging
import math
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from models.control_rules import ControlRule, rules_from_inp
from models.streaming import StreamResult, Suspect
from twin.alerts import AlertChange
from twin.errors import LifelineError
from twin.model import LinkKind, PipeNetwork
from twin.readings import QUALITY_BAD, Reading
from twin.sensors import Grade, Network, Quantity, Sensor

log = logging.getLogger(__name__)

KIND = "water_control"
STATE_VERSION = 1
KPA_PER_M = 9.80665
"""Kilopascal per metre of water head (pressure sensors read kPa; EPANET's thresholds are heads in m)."""


def cause_key(link: str) -> str:
    """Return the cause key of a control alert for *link*."""
    return f"{KIND}:{link}"


def rules_of(network: PipeNetwork) -> list[ControlRule]:
    """The simple level/pressure controls of a water network imported from EPANET (none otherwise)."""
    if network.source_format != "epanet-inp" or "[CONTROLS]" not in network.source.upper():
        return []
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "network.inp"
        path.write_text(network.source)
        try:
            rules, _skipped = rules_from_inp(path)
        except LifelineError as exc:
            log.warning("%s: the controls could not be read: %s", network.name, exc)
            return []
    return rules


@dataclass(frozen=True, slots=True, kw_only=True)
class PumpControlSettings:
    """Parameters (see the module docstring)."""

    tolerance_m: float = 0.05
    tolerance_kpa: float = 0.5
    open_flow_l_s: float = 1.0
    max_skew_s: float = 300.0
    confirm: int = 2


@dataclass(slots=True)
class _State:
    last: dict[str, list[float]] = field(default_factory=dict)
    """sensor → [ts, value] of its newest trusted reading."""
    broken: dict[str, int] = field(default_factory=dict)
    """link → broken judgements in a row."""
    active: dict[str, float] = field(default_factory=dict)
    """link → when its alert was raised (POSIX s)."""
    judged: dict[str, float] = field(default_factory=dict)
    """link → the newest reading time of its last judgement: a pair of readings is counted once."""


class PumpControlDetector:
    """Watch a water network's pump and valve controls against its level, pressure and flow sensors.

    Args:
        network: the water network (its EPANET source gives the rules unless *rules* is given).
        sensors: sensors by id; level/pressure sensors on the rules' nodes and flow sensors on their links are used.
        rules: the rules to watch (default: :func:`rules_of` the network).
        settings: the parameters.
    """

    name = KIND

    def __init__(
        self,
        network: PipeNetwork,
        sensors: Mapping[str, Sensor],
        *,
        rules: Sequence[ControlRule] | None = None,
        settings: PumpControlSettings = PumpControlSettings(),
    ) -> None:
        self.network = network
        self.settings = settings
        self.rules = list(rules) if rules is not None else rules_of(network)
        self._state = _State()
        self._bind(sensors)

    # --- the StreamDetector protocol ---

    def evaluate(self, readings: Sequence[Reading], *, now: datetime, suspect: Suspect) -> StreamResult:
        """Keep the newest readings of the watched sensors and judge the rules they touch; change nothing."""
        st = _State(
            {k: list(v) for k, v in self._state.last.items()},
            dict(self._state.broken),
            dict(self._state.active),
            dict(self._state.judged),
        )
        watched = [
            r
            for r in readings
            if r.sensor_id in self._links_of
            and r.quality != QUALITY_BAD
            and not (suspect and (r.sensor_id, r.ts) in suspect)
        ]
        changes: list[AlertChange] = []
        # In time order, each reading judged as it came: a batch may hold hours of a backlog.
        for r in sorted(watched, key=lambda r: r.ts):
            value = float(r.value)
            ts = r.ts.timestamp()
            last = st.last.get(r.sensor_id)
            if not math.isfinite(value) or (last is not None and ts <= last[0]):
                continue
            st.last[r.sensor_id] = [ts, value]
            for link in sorted(self._links_of[r.sensor_id]):
                self._judge(st, link, changes)
        return StreamResult(changes, st)

    def commit(self, result: StreamResult) -> None:
        """Adopt the state of a result whose changes have been stored."""
        self._state = result.state

    def update_sensors(self, sensors: Mapping[str, Sensor]) -> None:
        """Use new sensor definitions; the state of links still watched is kept."""
        self._bind(sensors)
        st = self._state
        st.last = {sid: v for sid, v in st.last.items() if sid in self._links_of}
        st.broken = {link: n for link, n in st.broken.items() if link in self._watched}
        st.active = {link: t for link, t in st.active.items() if link in self._watched}
        st.judged = {link: t for link, t in st.judged.items() if link in self._watched}

    def dump_state(self) -> dict[str, Any]:
        """Return the committed state as JSON-ready data."""
        st = self._state
        return {
            "version": STATE_VERSION,
            "last": st.last,
            "broken": st.broken,
            "active": st.active,
            "judged": st.judged,
        }

    def load_state(self, data: Mapping[str, Any]) -> None:
        """Restore a state returned by :meth:`dump_state`; sensors and links no longer watched are dropped."""
        st = _State()
        st.last = {
            str(s): [float(v[0]), float(v[1])] for s, v in dict(data.get("last", {})).items() if s in self._links_of
        }
        st.broken = {str(k): int(n) for k, n in dict(data.get("broken", {})).items() if k in self._watched}
        st.active = {str(k): float(t) for k, t in dict(data.get("active", {})).items() if k in self._watched}
        st.judged = {str(k): float(t) for k, t in dict(data.get("judged", {})).items() if k in self._watched}
        self._state = st

    # --- internals ---

    def _bind(self, sensors: Mapping[str, Sensor]) -> None:
        """Find, for every rule, a sensor on its node (level or pressure) and one on its link (flow)."""
        on: dict[tuple[str, Quantity], str] = {}
        for sid in sorted(sensors):
            sensor = sensors[sid]
            if sensor.network is not Network.WATER or not sensor.asset_id:
                continue
            on.setdefault((sensor.asset_id.partition(":")[2], sensor.quantity), sid)
        watched: dict[str, list[tuple[ControlRule, str, str]]] = {}
        for rule in self.rules:
            value_sid = on.get((rule.node, Quantity.LEVEL if rule.quantity == "level" else Quantity.PRESSURE))
            flow_sid = on.get((rule.link, Quantity.FLOW))
            if value_sid is not None and flow_sid is not None:
                watched.setdefault(rule.link, []).append((rule, value_sid, flow_sid))
        self._watched = watched
        self._links_of: dict[str, set[str]] = {}
        for link, entries in watched.items():
            for _rule, value_sid, flow_sid in entries:
                self._links_of.setdefault(value_sid, set()).add(link)
                self._links_of.setdefault(flow_sid, set()).add(link)
        self.sensors = {sid: sensors[sid] for sid in self._links_of}
        if not self.rules:
            self.unmetered: str | None = f"{self.network.name}: the model has no level or pressure controls"
        elif not watched:
            self.unmetered = f"{self.network.name}: no control has a sensor on both its node and its link"
        else:
            self.unmetered = None

    def _judge(self, st: _State, link: str, changes: list[AlertChange]) -> None:
        cfg = self.settings
        broken = kept = False
        evidence: dict[str, Any] = {}
        newest = -math.inf
        for rule, value_sid, flow_sid in self._watched[link]:
            value, flow = st.last.get(value_sid), st.last.get(flow_sid)
            if value is None or flow is None or abs(value[0] - flow[0]) > cfg.max_skew_s:
                continue
            newest = max(newest, value[0], flow[0])
            if rule.quantity == "level":
                threshold, tolerance, unit = rule.threshold, cfg.tolerance_m, "m"
            else:
                threshold, tolerance, unit = rule.threshold * KPA_PER_M, cfg.tolerance_kpa, "kPa"
            past = value[1] < threshold - tolerance if rule.below else value[1] > threshold + tolerance
            if not past:
                continue
            running = abs(flow[1]) > cfg.open_flow_l_s
            if running == rule.opens:
                kept = True
            else:
                broken = True
                evidence = {
                    "rule": rule.describe(),
                    "node": rule.node,
                    "value": round(value[1], 3),
                    "unit": unit,
                    "threshold": round(threshold, 3),
                    "flow_l_s": round(flow[1], 3),
                    "value_sensor": value_sid,
                    "flow_sensor": flow_sid,
                    "running": running,
                }
        if newest <= st.judged.get(link, -math.inf):
            return  # the same readings judged already (the other end's reading came in later)
        if broken or kept:
            st.judged[link] = newest
        if broken:
            st.broken[link] = st.broken.get(link, 0) + 1
            if link not in st.active and st.broken[link] >= cfg.confirm:
                ts = max(st.last[evidence["value_sensor"]][0], st.last[evidence["flow_sensor"]][0])
                st.active[link] = ts
                changes.append(self._change("raised", link, ts, evidence))
        elif kept:
            st.broken[link] = 0
            if link in st.active:
                ts = max(st.last[sid][0] for _r, v, f in self._watched[link] for sid in (v, f) if sid in st.last)
                del st.active[link]
                changes.append(self._change("cleared", link, ts, {}))

    def _change(self, event: str, link: str, ts: float, evidence: Mapping[str, Any]) -> AlertChange:
        if event == "raised":
            pump = getattr(self.network.links.get(link), "kind", None) == LinkKind.PUMP
            if pump:
                state_zh, state_en = ("运行", "running") if evidence["running"] else ("停运", "stopped")
            else:  # a valve
                state_zh, state_en = ("开启", "open") if evidence["running"] else ("关闭", "closed")
            side_zh = "低于" if "<" in evidence["rule"] else "高于"
            side_en = "below" if "<" in evidence["rule"] else "above"
            zh = (
                f"泵阀控制异常：{link} 在 {evidence['node']} 为 {evidence['value']:g} {evidence['unit']}"
                f"（{side_zh}控制值 {evidence['threshold']:g} {evidence['unit']}）时仍{state_zh}，"
                "控制器未按其传感器读数动作（故障或被篡改）"
            )
            en = (
                f"Pump/valve control inconsistent: {link} {state_en} while {evidence['node']} reads"
                f" {evidence['value']:g} {evidence['unit']}, {side_en} its control value {evidence['threshold']:g}"
                f" {evidence['unit']} (controller failure or tampering)"
            )
        else:
            zh, en = f"泵阀控制恢复正常：{link}", f"Pump/valve control of {link} consistent again"
        return AlertChange(
            event=event,
            cause_key=cause_key(link),
            kind=KIND,
            sensor_id=evidence.get("flow_sensor"),
            network=Network.WATER.value,
            district="",
            grade=int(Grade.III),
            ts=datetime.fromtimestamp(ts, UTC),
            value=evidence.get("value"),
            threshold=evidence.get("threshold"),
            message=zh,
            message_en=en,
            detail={"link": link, **copy.deepcopy(dict(evidence))},
        )
