"""The life of an alert once people handle it: states, the actions that move it, who may act, and escalation.

States (``alerts.state``)::

    raised ──acknowledge──▶ acknowledged ──dispatch──▶ dispatched ──resolve──▶ resolved ──recheck──▶ rechecked
       │                         │                                     ▲           │ (复查 failed: reopen)     │
       └──────── dispatch ───────┘ (dispatching acknowledges)          └── resolve ┘                          close
                                                                                                              ▼
                                                                                                            closed

``reopen`` takes a resolved or rechecked alert back to ``dispatched`` (the re-check found the problem still there).
Whether the *cause* is still present is a separate matter, kept by the detectors in ``alerts.active``: an alert may
be acknowledged while its cause goes on, and its cause may clear before anyone looks.

Escalation (叫应): an alert still ``raised`` (nobody has acknowledged it) after the grade's deadline — counted from
when it was raised, or from when it reached the store if later — is escalated:
its ``escalation_level`` goes up by one and the next contact of the escalation chain is named in the event; again
after each further deadline, up to the end of the chain. Deadlines by grade: I 5 min, II 10 min, III 30 min, IV 2 h.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta


class State(enum.StrEnum):
    RAISED = "raised"
    ACKNOWLEDGED = "acknowledged"
    DISPATCHED = "dispatched"
    RESOLVED = "resolved"
    RECHECKED = "rechecked"
    CLOSED = "closed"


class Action(enum.StrEnum):
    ACKNOWLEDGE = "acknowledge"
    DISPATCH = "dispatch"
    RESOLVE = "resolve"
    RECHECK = "recheck"
    CLOSE = "close"
    REOPEN = "reopen"


TRANSITIONS: Mapping[Action, tuple[frozenset[State], State]] = {
    Action.ACKNOWLEDGE: (frozenset({State.RAISED}), State.ACKNOWLEDGED),
    Action.DISPATCH: (frozenset({State.RAISED, State.ACKNOWLEDGED, State.DISPATCHED}), State.DISPATCHED),
    Action.RESOLVE: (frozenset({State.ACKNOWLEDGED, State.DISPATCHED}), State.RESOLVED),
    Action.RECHECK: (frozenset({State.RESOLVED}), State.RECHECKED),
    Action.CLOSE: (frozenset({State.RECHECKED}), State.CLOSED),
    Action.REOPEN: (frozenset({State.RESOLVED, State.RECHECKED}), State.DISPATCHED),
}
"""For each action: the states it may be taken from, and the state it leads to."""

ROLES_FOR: Mapping[Action, frozenset[str]] = {
    Action.ACKNOWLEDGE: frozenset({"operator", "emergency", "admin"}),
    Action.DISPATCH: frozenset({"operator", "admin"}),
    Action.RESOLVE: frozenset({"operator", "emergency", "admin"}),
    Action.RECHECK: frozenset({"operator", "admin"}),
    Action.CLOSE: frozenset({"operator", "admin"}),
    Action.REOPEN: frozenset({"operator", "admin"}),
}
"""Who may take each action: emergency staff acknowledge and report the fix; the operations centre runs the rest."""

STATE_ZH: Mapping[State, str] = {
    State.RAISED: "待响应",
    State.ACKNOWLEDGED: "已叫应",
    State.DISPATCHED: "已派单",
    State.RESOLVED: "已处置",
    State.RECHECKED: "已复查",
    State.CLOSED: "已关闭",
}


class TransitionError(ValueError):
    """An action that cannot be taken from the alert's state, or a missing field."""


def next_state(current: State, action: Action) -> State:
    """Return the state *action* leads to from *current*.

    Raises:
        TransitionError: the action cannot be taken from *current*.
    """
    allowed, target = TRANSITIONS[action]
    if current not in allowed:
        froms = ", ".join(sorted(s.value for s in allowed))
        raise TransitionError(f"cannot {action.value} an alert that is {current.value} (only from: {froms})")
    return target


@dataclass(frozen=True, slots=True)
class EscalationPolicy:
    """When unacknowledged alerts escalate, and to whom.

    Attributes:
        deadlines: by grade (1–4), how long an alert may stay unacknowledged at each level.
        chain: the contacts in order; level 1 goes to ``chain[0]``.
    """

    deadlines: Mapping[int, timedelta] = field(
        default_factory=lambda: {
            1: timedelta(minutes=5),
            2: timedelta(minutes=10),
            3: timedelta(minutes=30),
            4: timedelta(hours=2),
        }
    )
    chain: Sequence[str] = (
        "值班长 duty chief",
        "区应急管理局 district emergency office",
        "市应急指挥中心 city command",
    )

    def due_level(self, grade: int, raised_at: datetime, now: datetime) -> int:
        """The escalation level an alert of *grade* raised at *raised_at* should have at *now* if unacknowledged."""
        deadline = self.deadlines.get(grade)
        if deadline is None or deadline.total_seconds() <= 0:
            return 0
        return min(int((now - raised_at) / deadline), len(self.chain))

    def contact(self, level: int) -> str:
        """Who is called at *level* (1-based)."""
        return self.chain[min(level, len(self.chain)) - 1] if level >= 1 and self.chain else ""
