"""Control-rule consistency: does the SCADA record obey the network's own pump and valve controls?

An EPANET model states how its pumps and valves are run: ``LINK PU1 OPEN IF NODE T1 BELOW 4`` opens pump PU1
when tank T1's level drops under 4 m, ``LINK PU1 CLOSED IF NODE T1 ABOVE 6.3`` closes it above 6.3 m. Between
the two thresholds the pump keeps the state it had (hysteresis), so nothing can be said there; outside them the
recorded status must match. A record in which T1 reads 6.8 m while PU1 runs, or 0.7 m while PU1 stands still,
says that a controller is not acting on what the level sensor reports: the reading, the command or the
controller has been tampered with or has failed. This is how the operators of the BATADAL benchmark found its
attacks ("pump control inconsistencies"), and it needs no learning: the rules come from the network model.

What is checked, for each simple control of the model whose condition is a tank's level or a junction's pressure
and whose action sets a link's status (:func:`rules_from_inp`; time-of-day controls and rule-based controls are
skipped and reported):

- at each sample, a rule whose condition holds by more than a tolerance (two recording steps of the value, at
  least :data:`MIN_TOLERANCE`) is **broken** when the link's recorded status differs from the rule's action, and
  **kept** when it matches; otherwise the sample says nothing about it;
- a link's alarm starts at a sample that breaks one of its rules and lasts until a sample keeps one of them
  (:func:`control_alarm`): the alarm clears when the controller is seen doing what its rules say again, not when
  the level happens to sit between the thresholds where no rule can be checked.

Column names follow the offline detector's convention: ``L_<tank>`` level in m, ``P_<junction>`` pressure in m,
``S_<link>`` status (0 closed, 1 open), else ``F_<link>`` flow (open when its magnitude exceeds
:data:`FLOW_OPEN_LPS`). A rule whose columns are absent is not used. Fitted on a normal period
(:func:`rules_that_hold`), a rule broken in more than :data:`MAX_NORMAL_BROKEN` of the samples it can be checked
in is dropped (the model does not describe how this network is run) and reported.

Example:
    >>> import numpy as np, pandas as pd
    >>> rule = ControlRule(link="PU1", node="T1", quantity="level", below=True, threshold=4.0, opens=True)
    >>> ts = pd.date_range("2024-01-01", periods=6, freq="h")
    >>> frame = pd.DataFrame({"L_T1": [5.0, 3.5, 3.2, 4.4, 4.8, 3.1], "S_PU1": [0, 1, 0, 0, 0, 1]}, index=ts)
    >>> control_alarm([rule], frame).tolist()
    [False, False, True, True, True, False]
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
import pandas as pd

from twin.errors import ModelImportError

logger = logging.getLogger(__name__)

BoolArray = npt.NDArray[np.bool_]

MIN_TOLERANCE: Final = 0.001
"""Smallest margin (m) by which a level or pressure must pass a threshold before a rule is judged."""

FLOW_OPEN_LPS: Final = 0.01
"""Without a status column, a link whose flow magnitude exceeds this (L/s) counts as open."""

MAX_NORMAL_BROKEN: Final = 0.001
"""A rule broken in more than this share of the normal samples it can be checked in is not used."""

_PREFIX: Final = {"level": "L_", "pressure": "P_"}


@dataclass(frozen=True, slots=True)
class ControlRule:
    """One simple control: set *link* open (``opens``) or closed when *node*'s *quantity* is below/above a value.

    Attributes:
        link: the pump or valve the control acts on.
        node: the tank (``quantity`` "level") or junction ("pressure") the condition reads.
        below: the condition is ``value < threshold`` (else ``value > threshold``).
        threshold: in m (tank level above its bottom, or pressure head).
        opens: the action opens the link (else closes it).
    """

    link: str
    node: str
    quantity: str
    below: bool
    threshold: float
    opens: bool

    @property
    def value_column(self) -> str:
        """The wide table's column holding the condition's value."""
        return _PREFIX[self.quantity] + self.node

    def describe(self) -> str:
        """E.g. ``PU1 open if T1 level < 4 m``."""
        action = "open" if self.opens else "closed"
        return f"{self.link} {action} if {self.node} {self.quantity} {'<' if self.below else '>'} {self.threshold:g} m"

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict (saved with a fitted model)."""
        return {
            "link": self.link,
            "node": self.node,
            "quantity": self.quantity,
            "below": self.below,
            "threshold": self.threshold,
            "opens": self.opens,
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> ControlRule:
        """Inverse of :meth:`to_json`; raises ValueError/KeyError/TypeError on a damaged entry."""
        quantity = str(data["quantity"])
        if quantity not in _PREFIX:
            raise ValueError(f"control rule quantity {quantity!r}")
        threshold = data["threshold"]
        if not isinstance(threshold, int | float):
            raise TypeError(f"control rule threshold {threshold!r}")
        return cls(
            link=str(data["link"]),
            node=str(data["node"]),
            quantity=quantity,
            below=bool(data["below"]),
            threshold=float(threshold),
            opens=bool(data["opens"]),
        )


def rules_from_inp(path: Path) -> tuple[list[ControlRule], list[str]]:
    """Read the simple controls of an EPANET ``.inp`` file (via WNTR, thresholds in SI units).

    Returns:
        The usable rules, and a description of each control that was skipped (time-based, rule-based, a
        condition on something other than a tank level or junction pressure, an action other than a status).

    Raises:
        ModelImportError: the file cannot be read as an EPANET model.
    """
    import wntr
    from wntr.network.controls import Control, ControlAction, ValueCondition
    from wntr.network.elements import Junction, Tank

    wntr_log = logging.getLogger("wntr.epanet.io")
    level = wntr_log.level
    try:
        # Unused curves and the like are logged and warned about by WNTR: not this reader's business.
        wntr_log.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            model = wntr.network.WaterNetworkModel(str(path))
    except FileNotFoundError as exc:
        raise ModelImportError(str(path), "no such file") from exc
    except Exception as exc:  # WNTR raises many types for a bad file; the message says what it found
        raise ModelImportError(str(path), f"cannot read as an EPANET model: {exc}") from exc
    finally:
        wntr_log.setLevel(level)
    rules: list[ControlRule] = []
    skipped: list[str] = []
    for name, control in model.controls():
        condition = getattr(control, "condition", None)
        actions = list(control.actions()) if isinstance(control, Control) else []
        source = getattr(condition, "_source_obj", None)
        attribute = getattr(condition, "_source_attr", None)
        relation = getattr(getattr(condition, "_relation", None), "name", None)
        usable = (
            isinstance(condition, ValueCondition)
            and len(actions) == 1
            and isinstance(actions[0], ControlAction)
            and relation in ("lt", "le", "gt", "ge")
            and (
                (isinstance(source, Tank) and attribute == "level")
                or (isinstance(source, Junction) and attribute == "pressure")
            )
        )
        if not usable:
            skipped.append(f"{name}: {control}")
            continue
        action = actions[0]
        target = action.target()
        value = getattr(action, "_value", None)
        if target[1] != "status" or value not in (0, 1):
            skipped.append(f"{name}: {control}")
            continue
        assert relation is not None and source is not None
        rules.append(
            ControlRule(
                link=str(target[0].name),
                node=str(source.name),
                quantity="level" if isinstance(source, Tank) else "pressure",
                below=relation in ("lt", "le"),
                threshold=float(getattr(condition, "_threshold", np.nan)),
                opens=bool(value == 1),
            )
        )
    return rules, skipped


def link_status(frame: pd.DataFrame, link: str) -> npt.NDArray[np.float64] | None:
    """The recorded status of *link* (1 open, 0 closed, NaN unknown), from ``S_<link>`` or ``F_<link>``; None if
    the table has neither."""
    if f"S_{link}" in frame.columns:
        status = pd.to_numeric(frame[f"S_{link}"], errors="coerce").to_numpy(dtype=np.float64)
        return np.where(np.isnan(status), np.nan, (status > 0.5).astype(np.float64))
    if f"F_{link}" in frame.columns:
        flow = pd.to_numeric(frame[f"F_{link}"], errors="coerce").to_numpy(dtype=np.float64)
        return np.where(np.isnan(flow), np.nan, (np.abs(flow) > FLOW_OPEN_LPS).astype(np.float64))
    return None


def usable_rules(rules: Iterable[ControlRule], columns: Iterable[str]) -> list[ControlRule]:
    """The rules whose value column and a status (or flow) column of whose link are among *columns*."""
    have = set(columns)
    return [r for r in rules if r.value_column in have and (f"S_{r.link}" in have or f"F_{r.link}" in have)]


def _recorded(values: npt.NDArray[np.float64]) -> tuple[npt.NDArray[np.float64], float]:
    """*values* rounded to the step they were recorded at (the fewest decimals that hold them all, up to 6; so a
    unit conversion's float noise does not move a value across a threshold), and the tolerance: two steps, at
    least MIN_TOLERANCE."""
    finite = values[np.isfinite(values)]
    for decimals in range(7):
        if finite.size == 0 or np.allclose(finite, np.round(finite, decimals), rtol=0, atol=1e-9):
            return np.round(values, decimals), max(2 * 10.0**-decimals, MIN_TOLERANCE)
    return values, MIN_TOLERANCE


@dataclass(frozen=True, slots=True)
class RuleCheck:
    """Per sample: where a rule could be judged (``checked``) and where the record broke it (``broken``)."""

    rule: ControlRule
    checked: BoolArray
    broken: BoolArray


def check_rules(rules: Sequence[ControlRule], frame: pd.DataFrame) -> list[RuleCheck]:
    """Judge every rule at every sample of *frame* (rules whose columns are absent are left out)."""
    checks: list[RuleCheck] = []
    for rule in usable_rules(rules, frame.columns):
        status = link_status(frame, rule.link)
        assert status is not None
        value, tolerance = _recorded(pd.to_numeric(frame[rule.value_column], errors="coerce").to_numpy(np.float64))
        with np.errstate(invalid="ignore"):
            holds = value < rule.threshold - tolerance if rule.below else value > rule.threshold + tolerance
        checked = holds & ~np.isnan(status)
        broken = checked & (status != (1.0 if rule.opens else 0.0))
        checks.append(RuleCheck(rule, checked, broken))
    return checks


def rules_that_hold(
    rules: Sequence[ControlRule], normal: pd.DataFrame
) -> tuple[list[ControlRule], list[tuple[ControlRule, str]]]:
    """Keep the rules the normal period obeys; return them and the dropped ones with the reason."""
    kept: list[ControlRule] = []
    dropped: list[tuple[ControlRule, str]] = []
    present = set(usable_rules(rules, normal.columns))
    for rule in rules:
        if rule not in present:
            dropped.append((rule, f"no {rule.value_column} or S_/F_{rule.link} column"))
    for check in check_rules(list(present), normal):
        n_checked = int(check.checked.sum())
        n_broken = int(check.broken.sum())
        if n_checked and n_broken / n_checked > MAX_NORMAL_BROKEN:
            dropped.append((check.rule, f"broken in {n_broken} of the {n_checked} normal samples it applies to"))
        else:
            kept.append(check.rule)
    holding = set(kept)
    kept = [r for r in rules if r in holding]  # in the model's order
    if dropped:
        # Every rule and why, at debug: a large model drops a hundred (the caller names the first few).
        logger.debug("control rules not used: %s", "; ".join(f"{r.describe()} ({why})" for r, why in dropped))
    return kept, dropped


def _latch(broken: BoolArray, kept: BoolArray) -> BoolArray:
    """On from a broken sample until the next kept one (a sample both broken and kept stays on)."""
    alarm = np.zeros(broken.shape, dtype=bool)
    on = False
    for i in range(broken.size):
        if broken[i]:
            on = True
        elif kept[i]:
            on = False
        alarm[i] = on
    return alarm


def link_alarms(rules: Sequence[ControlRule], frame: pd.DataFrame) -> dict[str, BoolArray]:
    """Per link: the latched alarm (see the module docstring), for links with at least one usable rule."""
    by_link: dict[str, tuple[BoolArray, BoolArray]] = {}
    n = len(frame)
    for check in check_rules(rules, frame):
        broken, kept = by_link.get(check.rule.link, (np.zeros(n, bool), np.zeros(n, bool)))
        by_link[check.rule.link] = (broken | check.broken, kept | (check.checked & ~check.broken))
    return {link: _latch(broken, kept) for link, (broken, kept) in by_link.items()}


def control_alarm(rules: Sequence[ControlRule], frame: pd.DataFrame) -> BoolArray:
    """Per sample: True where any link's control alarm is on; shape (len(frame),)."""
    alarm = np.zeros(len(frame), dtype=bool)
    for link_alarm in link_alarms(rules, frame).values():
        alarm |= link_alarm
    return alarm


def broken_summary(rules: Sequence[ControlRule], frame: pd.DataFrame) -> list[tuple[ControlRule, int, object]]:
    """Each broken rule with the number of samples that broke it and the first one's index label."""
    out: list[tuple[ControlRule, int, object]] = []
    for check in check_rules(rules, frame):
        hits = np.flatnonzero(check.broken)
        if hits.size:
            out.append((check.rule, int(hits.size), frame.index[hits[0]]))
    return out
