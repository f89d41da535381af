"""The city health check (城市体检): indicators, index, problems with evidence, the treatment ledger (台账).

Every role reads. The ledger — recording the diagnosis, giving a problem treatment tasks, moving a task's
status, re-checking a problem — is for the operations centre (``operator``, ``admin``), as the alert work orders
are; each change is in the audit log. The indicator table is the file ``models/healthcheck/definitions.toml``
(read here at every request, so an edit shows at once); the API shows it and does not edit it.

Computing a year of indicators reads every hourly rollup of the year (tens of seconds for the 638 sensors of the
demo city), so results are kept per period for :data:`CACHE_TTL_S`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Query, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from models.healthcheck.index import BANDS, score
from models.healthcheck.indicators import (
    CITY,
    DEFINITIONS_PATH,
    DefinitionError,
    Definitions,
    compute_indicator,
    load_definitions,
)
from models.healthcheck.ledger import (
    TASK_STATUSES,
    LedgerError,
    UnknownProblemError,
    add_task,
    ledger,
    open_problems,
    recheck,
    set_task_status,
)
from models.healthcheck.report import PeriodResult, evaluate, year_bounds
from twin.store.retention import raw_deleted_before
from viewer.auth import Principal, Role
from viewer.deps import DbDep, Reader, audit

router = APIRouter(tags=["health check"])
PAGE = Path(__file__).parents[1] / "static" / "healthcheck.html"

log = logging.getLogger(__name__)

LEDGER_ROLES = frozenset({Role.OPERATOR, Role.ADMIN})
"""Who may change the ledger: the operations centre, as with alert work orders."""
CACHE_TTL_S = 600.0


@dataclass(frozen=True, slots=True)
class Period:
    """A report period: aware UTC bounds (end excluded) and its name."""

    start: datetime
    end: datetime
    label: str


class _Cache:
    """Evaluated periods, kept for CACHE_TTL_S; one computation of a period at a time.

    A period over a whole city takes tens of seconds to evaluate (34–52 s for a year of the demo city). Once a
    period has been computed, a request that finds it older than CACHE_TTL_S gets the kept result at once, and a
    thread computes it again on its own connection (stale while revalidating); only the first request for a
    period, or one that asks for a fresh result (a diagnosis or a re-check, which write to the ledger), waits.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.items: dict[Any, tuple[float, PeriodResult]] = {}
        self.refreshing: set[Any] = set()
        self.key_locks: dict[Any, threading.Lock] = {}

    def get(
        self,
        key: Any,
        compute: Callable[[], PeriodResult],
        *,
        background: Callable[[], PeriodResult] | None = None,
    ) -> PeriodResult:
        """Return the result for *key*: kept if fresh; kept and refreshed by *background* in a thread if stale and
        *background* is given; else computed now with *compute*."""
        with self.lock:
            found = self.items.get(key)
            if found is not None and time.monotonic() - found[0] < CACHE_TTL_S:
                return found[1]
            if found is not None and background is not None:
                if key not in self.refreshing:
                    self.refreshing.add(key)
                    threading.Thread(
                        target=self._refresh, args=(key, background), name="healthcheck-refresh", daemon=True
                    ).start()
                return found[1]
            key_lock = self.key_locks.setdefault(key, threading.Lock())
        with key_lock:
            with self.lock:
                found = self.items.get(key)  # another request may have computed it while this one waited
                if found is not None and time.monotonic() - found[0] < CACHE_TTL_S:
                    return found[1]
            result = compute()
            with self.lock:
                self.items[key] = (time.monotonic(), result)
            return result

    def _refresh(self, key: Any, compute: Callable[[], PeriodResult]) -> None:
        try:
            result = compute()
        except Exception:  # a failed refresh keeps the old result; the next stale request tries again
            log.exception("health check: refreshing a period failed")
        else:
            with self.lock:
                self.items[key] = (time.monotonic(), result)
        finally:
            with self.lock:
                self.refreshing.discard(key)


_CACHE_LOCK = threading.Lock()


def _cache(request: Request) -> _Cache:
    with _CACHE_LOCK:
        cache: _Cache | None = getattr(request.app.state, "healthcheck_cache", None)
        if cache is None:
            cache = _Cache()
            request.app.state.healthcheck_cache = cache
        return cache


def _definitions() -> Definitions:
    try:
        return load_definitions()
    except DefinitionError as exc:
        raise HTTPException(500, f"the indicator table cannot be used: {exc}") from exc


def _local_day(text: str, name: str, offset: timedelta) -> datetime:
    try:
        day = date.fromisoformat(text)
    except ValueError as exc:
        raise HTTPException(422, f"'{name}' must be a date YYYY-MM-DD, not {text[:40]!r}") from exc
    if not 2000 <= day.year <= 2100:
        raise HTTPException(422, f"'{name}' must be a day of the years 2000 to 2100")
    return datetime(day.year, day.month, day.day, tzinfo=UTC) - offset


def _period(definitions: Definitions, year: int | None, date_from: str | None, date_to: str | None) -> Period:
    """The period a request names: ``year``, or ``from`` and ``to`` (local days, both included)."""
    offset_h = definitions.water_balance.utc_offset_h
    offset = timedelta(hours=offset_h)
    if year is not None and (date_from or date_to):
        raise HTTPException(422, "give 'year' or 'from' and 'to', not both")
    if year is not None:
        start, end = year_bounds(year, offset_h)
        return Period(start, end, f"{year} 年度")
    if date_from and date_to:
        start = _local_day(date_from, "from", offset)
        end = _local_day(date_to, "to", offset) + timedelta(days=1)
        if end <= start:
            raise HTTPException(422, "'to' must not be before 'from'")
        if end - start > timedelta(days=732):
            raise HTTPException(422, "a period of at most two years")
        return Period(start, end, f"{date_from} 至 {date_to}")
    raise HTTPException(422, "give 'year', or 'from' and 'to' (local days YYYY-MM-DD)")


def _evaluated(
    request: Request,
    db: DbDep,
    definitions: Definitions,
    start: datetime,
    end: datetime,
    *,
    fresh: bool = False,
) -> PeriodResult:
    """The period's result from the cache (see :class:`_Cache`); *fresh*: never older than CACHE_TTL_S."""
    key = (start, end, DEFINITIONS_PATH.stat().st_mtime)
    pool = request.app.state.pool

    def in_background() -> PeriodResult:
        with pool.connection() as conn:
            return evaluate(conn, definitions, start=start, end=end, label="")

    return _cache(request).get(
        key,
        lambda: evaluate(db, definitions, start=start, end=end, label=""),
        background=None if fresh else in_background,
    )


def _index_band(value: float | None) -> str | None:
    if value is None:
        return None
    return "green" if value >= 90 else "yellow" if value >= 75 else "orange" if value >= 60 else "red"


def _definition_json(definitions: Definitions, indicator_id: str) -> dict[str, Any]:
    d = definitions[indicator_id]
    return {
        "id": d.id,
        "name_zh": d.name_zh,
        "name_en": d.name_en,
        "unit": d.unit,
        "direction": d.direction,
        "target": d.target,
        "bands": list(d.bands),
        "weight": d.weight,
        "method": d.method,
        "params": dict(d.params),
        "source": d.source,
        "scope": d.scope,
    }


YearQ = Annotated[int | None, Query(ge=2000, le=2100, description="local calendar year")]
FromQ = Annotated[str | None, Query(alias="from", description="first local day, YYYY-MM-DD")]
ToQ = Annotated[str | None, Query(alias="to", description="last local day, YYYY-MM-DD (included)")]


@router.get(
    "/api/healthcheck/definitions", summary="The indicator table: definitions, units, targets, bands, weights, sources"
)
def definitions(_who: Reader) -> dict[str, Any]:
    table = _definitions()
    return {
        "file": str(DEFINITIONS_PATH),
        "editable": "file",
        "indicators": [_definition_json(table, d.id) for d in table.indicators],
        "district_area_km2": dict(table.district_area_km2),
        "bands": list(BANDS),
    }


@router.get(
    "/api/healthcheck",
    summary="Indicators, health index and problems of a period, with the period before for comparison",
)
def health_check(
    request: Request,
    _who: Reader,
    db: DbDep,
    year: YearQ = None,
    date_from: FromQ = None,
    date_to: ToQ = None,
    district: Annotated[str | None, Query(max_length=100, description="one district ('' or none: all)")] = None,
) -> dict[str, Any]:
    table = _definitions()
    period = _period(table, year, date_from, date_to)
    current = _evaluated(request, db, table, period.start, period.end)
    previous = _evaluated(request, db, table, period.start - (period.end - period.start), period.start)
    districts = [d for d in current.indices if not district or d in (CITY, district)]
    if district and district not in current.indices:
        raise HTTPException(404, f"no district {district!r} (known: {sorted(d for d in current.indices if d)})")
    before = {(v.indicator_id, v.district): v for v in previous.values}
    # Raw readings deleted by retention: the indicators counted from them (hours over limits, overflow events,
    # drain times) cover only what is left of a period that starts before this.
    deleted_before = raw_deleted_before(db, schema=request.app.state.schema)

    def raw_incomplete(start: datetime) -> bool:
        return deleted_before is not None and start < deleted_before

    indicators = []
    for definition in table.indicators:
        per_district: dict[str, Any] = {}
        for d in districts:
            v = next((x for x in current.values if x.indicator_id == definition.id and x.district == d), None)
            if v is None:
                continue
            part = next(p for p in current.indices[d].parts if p.indicator_id == definition.id)
            was = before.get((definition.id, d))
            per_district[d] = {
                "value": v.value,
                "band": part.band,
                "score": score(definition, v.value) if v.value is not None else None,
                "previous": was.value if was else None,
                "evidence": v.evidence.as_json(),
                "detail": dict(v.detail),
            }
        indicators.append({**_definition_json(table, definition.id), "values": per_district})
    return {
        "period": {
            "start": period.start,
            "end": period.end,
            "label": period.label,
            "raw_incomplete": raw_incomplete(period.start),
        },
        "previous_period": {
            "start": previous.start,
            "end": previous.end,
            "raw_incomplete": raw_incomplete(previous.start),
        },
        "raw_readings_deleted_before": deleted_before,
        "districts": districts,
        "index": {
            d: {
                "value": current.indices[d].value,
                "band": _index_band(current.indices[d].value),
                "previous": previous.indices[d].value if d in previous.indices else None,
            }
            for d in districts
        },
        "indicators": indicators,
        "problems": [
            {
                "indicator_id": p.indicator_id,
                "district": p.district,
                "value": p.value,
                "target": p.target,
                "band": p.band,
                "evidence": p.evidence.as_json(),
                "detail": p.detail,
            }
            for p in current.problems
            if p.district in districts
        ],
    }


@router.get("/api/healthcheck/trend", summary="The health index month by month over a year, per district and city-wide")
def trend(request: Request, _who: Reader, db: DbDep, year: Annotated[int, Query(ge=2000, le=2100)]) -> dict[str, Any]:
    table = _definitions()
    offset = timedelta(hours=table.water_balance.utc_offset_h)
    months = []
    for month in range(1, 13):
        start = datetime(year, month, 1, tzinfo=UTC) - offset
        end = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=UTC) - offset
        result = _evaluated(request, db, table, start, end)
        months.append({"month": month, "index": {d: i.value for d, i in result.indices.items()}})
    return {"year": year, "months": months}


@router.get(
    "/api/healthcheck/ledger",
    summary="The treatment ledger (台账): recorded problems of a period with tasks and re-checks",
)
def get_ledger(
    _who: Reader, db: DbDep, year: YearQ = None, date_from: FromQ = None, date_to: ToQ = None
) -> list[dict[str, Any]]:
    period = _period(_definitions(), year, date_from, date_to)
    return ledger(db, start=period.start, end=period.end)


def _ledger_writer(request: Request, who: Principal, action: str, target: str = "") -> None:
    if who.role not in LEDGER_ROLES:
        audit(request, who, action, "denied", target)
        allowed = ", ".join(sorted(r.value for r in LEDGER_ROLES))
        raise HTTPException(403, f"role {who.role.value!r} may not change the ledger (only: {allowed})")


@router.post(
    "/api/healthcheck/diagnose", status_code=201, summary="Record the period's problems in the ledger (operator, admin)"
)
def diagnose_period(
    request: Request, who: Reader, db: DbDep, year: YearQ = None, date_from: FromQ = None, date_to: ToQ = None
) -> dict[str, Any]:
    _ledger_writer(request, who, "healthcheck_diagnose")
    table = _definitions()
    period = _period(table, year, date_from, date_to)
    current = _evaluated(request, db, table, period.start, period.end, fresh=True)
    with db.transaction():
        ids = open_problems(db, current.problems, start=period.start, end=period.end)
    audit(request, who, "healthcheck_diagnose", "ok", period.label, problems=len(ids))
    return {"problems": ids}


class TaskCreate(BaseModel):
    title: str = Field(min_length=1, max_length=500, description="what is to be done")
    owner: str = Field(min_length=1, max_length=200, description="who is responsible (unit or person)")
    deadline: date = Field(description="by when, local date")


class TaskUpdate(BaseModel):
    status: str = Field(description=f"one of {', '.join(TASK_STATUSES)}")


class RecheckIn(BaseModel):
    date_from: date = Field(alias="from", description="first local day of the re-check period")
    date_to: date = Field(alias="to", description="last local day of the re-check period (included)")


@router.post("/api/healthcheck/problems/{problem_id}/tasks", status_code=201, summary="Give a problem a treatment task")
def create_task(
    request: Request, who: Reader, db: DbDep, problem_id: int, body: Annotated[TaskCreate, Body()]
) -> dict[str, Any]:
    _ledger_writer(request, who, "healthcheck_task_create", str(problem_id))
    try:
        with db.transaction():
            task_id = add_task(db, problem_id, title=body.title, owner=body.owner, deadline=body.deadline)
    except UnknownProblemError as exc:
        raise HTTPException(404, f"no problem {problem_id}") from exc
    audit(request, who, "healthcheck_task_create", "ok", str(problem_id), task=task_id, owner=body.owner)
    return {"task_id": task_id, "problem_id": problem_id}


@router.patch("/api/healthcheck/tasks/{task_id}", summary="Move a treatment task on: planned, in_progress, done")
def update_task(
    request: Request, who: Reader, db: DbDep, task_id: int, body: Annotated[TaskUpdate, Body()]
) -> dict[str, Any]:
    _ledger_writer(request, who, "healthcheck_task_status", str(task_id))
    try:
        set_task_status(db, task_id, body.status)
    except LedgerError as exc:
        raise HTTPException(422, str(exc)) from exc
    except UnknownProblemError as exc:
        raise HTTPException(404, f"no task {task_id}") from exc
    audit(request, who, "healthcheck_task_status", "ok", str(task_id), status=body.status)
    return {"task_id": task_id, "status": body.status}


@router.post(
    "/api/healthcheck/problems/{problem_id}/recheck", summary="Re-check a problem's indicator over a later period"
)
def recheck_problem(
    request: Request, who: Reader, db: DbDep, problem_id: int, body: Annotated[RecheckIn, Body()]
) -> dict[str, Any]:
    _ledger_writer(request, who, "healthcheck_recheck", str(problem_id))
    table = _definitions()
    row = db.execute("SELECT indicator_id, district FROM hc_problems WHERE id = %s", (problem_id,)).fetchone()
    if row is None:
        raise HTTPException(404, f"no problem {problem_id}")
    if row["indicator_id"] not in table:
        raise HTTPException(409, f"indicator {row['indicator_id']!r} is no longer in the table")
    period = _period(table, None, body.date_from.isoformat(), body.date_to.isoformat())
    after = compute_indicator(
        db, table[row["indicator_id"]], definitions=table, start=period.start, end=period.end, district=row["district"]
    )
    try:
        with db.transaction():
            outcome = recheck(db, problem_id, after, definitions=table)
    except LedgerError as exc:
        audit(request, who, "healthcheck_recheck", "refused", str(problem_id), reason=str(exc)[:200])
        raise HTTPException(422, str(exc)) from exc
    audit(request, who, "healthcheck_recheck", "ok", str(problem_id), result=outcome, value=after.value)
    return {"problem_id": problem_id, "outcome": outcome, "value": after.value, "period": period.label}


@router.get("/healthcheck", include_in_schema=False)
def page() -> FileResponse:
    return FileResponse(PAGE, headers={"Cache-Control": "no-cache"})
