"""Tables of the city health check (城市体检): billed water, and the treatment ledger (台账).

``hc_billed_water`` holds the water utility's billed (authorised) consumption per period, the figure the water
balance subtracts from the measured system input. The ledger keeps what the diagnosis found (``hc_problems``),
the treatment tasks each problem gets (``hc_tasks``) and every re-check of a problem's indicator
(``hc_rechecks``). :func:`create_tables` is called by a schema migration.
"""

from __future__ import annotations

from typing import Any

import psycopg


def create_tables(conn: psycopg.Connection[Any]) -> None:
    """Create the health check's tables in the connection's current schema. The caller owns the transaction."""
    conn.execute(
        """
        CREATE TABLE hc_billed_water (
            id            bigserial PRIMARY KEY,
            district      text NOT NULL DEFAULT '',
            period_start  timestamptz NOT NULL,
            period_end    timestamptz NOT NULL,
            billed_m3     double precision NOT NULL CHECK (billed_m3 >= 0),
            source        text NOT NULL DEFAULT '',
            CHECK (period_end > period_start)
        )"""
    )
    conn.execute("CREATE INDEX hc_billed_water_period ON hc_billed_water (period_start, period_end)")
    conn.execute(
        """
        CREATE TABLE hc_problems (
            id            bigserial PRIMARY KEY,
            indicator_id  text NOT NULL,
            district      text NOT NULL DEFAULT '',
            period_start  timestamptz NOT NULL,
            period_end    timestamptz NOT NULL,
            value         double precision,
            target        double precision,
            band          text NOT NULL,
            status        text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'treating', 'closed', 'reopened')),
            evidence      jsonb NOT NULL DEFAULT '{}',
            opened_at     timestamptz NOT NULL DEFAULT now(),
            closed_at     timestamptz
        )"""
    )
    # One problem per indicator, district and period: diagnosing the same period again finds it instead.
    conn.execute(
        "CREATE UNIQUE INDEX hc_problems_once ON hc_problems (indicator_id, district, period_start, period_end)"
    )
    conn.execute(
        """
        CREATE TABLE hc_tasks (
            id            bigserial PRIMARY KEY,
            problem_id    bigint NOT NULL REFERENCES hc_problems (id) ON DELETE CASCADE,
            title         text NOT NULL,
            owner         text NOT NULL,
            deadline      date NOT NULL,
            status        text NOT NULL DEFAULT 'planned' CHECK (status IN ('planned', 'in_progress', 'done')),
            created_at    timestamptz NOT NULL DEFAULT now(),
            updated_at    timestamptz NOT NULL DEFAULT now()
        )"""
    )
    conn.execute("CREATE INDEX hc_tasks_problem ON hc_tasks (problem_id)")
    conn.execute(
        """
        CREATE TABLE hc_rechecks (
            id            bigserial PRIMARY KEY,
            problem_id    bigint NOT NULL REFERENCES hc_problems (id) ON DELETE CASCADE,
            period_start  timestamptz NOT NULL,
            period_end    timestamptz NOT NULL,
            before_value  double precision,
            after_value   double precision,
            band          text NOT NULL,
            outcome       text NOT NULL CHECK (outcome IN ('closed', 'reopened')),
            checked_at    timestamptz NOT NULL DEFAULT now(),
            evidence      jsonb NOT NULL DEFAULT '{}'
        )"""
    )
    conn.execute("CREATE INDEX hc_rechecks_problem ON hc_rechecks (problem_id)")
