"""The terminal client for emergency staff: watch with filters, act, and resume after a disconnect."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from lifeline.cli import cli
from twin.alerts import AlertChange
from twin.store.alerts import apply_change
from twin.store.db import DictConnection
from viewer.app import create_app
from viewer.auth import Authenticator, Role, add_token

from .conftest import serve, wait_for

pytestmark = pytest.mark.integration

T0 = datetime(2026, 7, 1, 8, 0, tzinfo=UTC)


def _raise(db: DictConnection, schema: str, sensor: str, grade: int, at: datetime) -> int:
    change = AlertChange(
        event="raised",
        cause_key=f"threshold:{sensor}:high",
        kind="threshold",
        sensor_id=sensor,
        network="drainage",
        district="吉州区",
        grade=grade,
        ts=at,
        value=1.7,
        threshold=1.6,
        message=f"{sensor} 积水超限",
        message_en=f"{sensor} ponding",
    )
    with db.transaction():
        apply_change(db, change, schema=schema)
    row = db.execute("SELECT id FROM alerts WHERE cause_key = %s", (change.cause_key,)).fetchone()
    assert row is not None
    return int(row["id"])


def _watch(url: str, token: str, state: Path, *args: str) -> tuple[threading.Thread, list[Result]]:
    out: list[Result] = []

    def run() -> None:
        out.append(
            CliRunner().invoke(
                cli,
                ["alerts", "--url", url, "watch", "--state-file", str(state), *args],
                env={"LIFELINE_API_TOKEN": token},
            )
        )

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def test_watch_filters_acts_and_resumes(pg_url: str, schema: str, db: DictConnection, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.toml"
    token = add_token(tokens, name="应急-7", role=Role.EMERGENCY)
    state = tmp_path / "last-event"
    app = create_app(conninfo=pg_url, schema=schema, auth=Authenticator.from_file(tokens), escalation=None)
    with serve(app) as url:
        runner = CliRunner()
        refused = runner.invoke(cli, ["alerts", "--url", url, "ack", "1"], env={"LIFELINE_API_TOKEN": "wrong"})
        assert refused.exit_code != 0 and "HTTP 401" in refused.output

        thread, out = _watch(url, token, state, "--grade", "II", "--count", "1")
        wait_for(state.exists, what="the client connected and saved its position")
        _raise(db, schema, "D-L-001", 4, T0)  # below the filter
        red = _raise(db, schema, "D-L-002", 1, T0 + timedelta(seconds=1))
        thread.join(20)
        [watched] = out
        assert watched.exit_code == 0, watched.output
        assert "D-L-002" in watched.output and "D-L-001" not in watched.output and "Ⅰ级" in watched.output

        acked = runner.invoke(
            cli, ["alerts", "--url", url, "ack", str(red), "--note", "已到场"], env={"LIFELINE_API_TOKEN": token}
        )
        assert acked.exit_code == 0 and "已叫应" in acked.output
        not_allowed = runner.invoke(
            cli,
            ["alerts", "--url", url, "act", str(red), "dispatch", "--assignee", "x", "--task", "y"],
            env={"LIFELINE_API_TOKEN": token},
        )
        assert not_allowed.exit_code != 0 and "HTTP 403" in not_allowed.output

        # While no client is connected: two more events. The next watch shows them first, once each.
        _raise(db, schema, "D-L-003", 2, T0 + timedelta(seconds=2))
        thread, out = _watch(url, token, state, "--grade", "II", "--count", "2")
        thread.join(20)
        [resumed] = out
        lines = [ln for ln in resumed.output.splitlines() if "#" in ln]
        assert len(lines) == 2, resumed.output  # the acknowledgement and D-L-003, nothing of before
        assert "acknowledge" in lines[0] and "已到场" in lines[0] and "D-L-003" in lines[1]
        assert resumed.exit_code == 0


def test_watch_needs_a_token(tmp_path: Path) -> None:
    res: Any = CliRunner().invoke(cli, ["alerts", "watch"], env={"LIFELINE_API_TOKEN": ""})
    assert res.exit_code != 0 and "no token" in res.output
