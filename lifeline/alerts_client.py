"""``lifeline alerts``: the terminal client for emergency staff — watch alerts as they come, and act on them.

It talks to a running viewer (``--url``, default ``http://127.0.0.1:8080``) with the caller's token, read from
``LIFELINE_API_TOKEN`` or ``--token-file`` (never from the command line, where other users could see it).
``watch`` remembers the last event it printed in a small state file, so after a dropped connection or a restart
it resumes from there: what was missed is shown, nothing twice.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import click

GRADES = {"I": 1, "II": 2, "III": 3, "IV": 4, "1": 1, "2": 2, "3": 3, "4": 4}
ROMAN = {1: "Ⅰ", 2: "Ⅱ", 3: "Ⅲ", 4: "Ⅳ"}
COLOUR = {1: "red", 2: "bright_yellow", 3: "yellow", 4: "blue"}
STATE_ZH = {
    "raised": "待响应",
    "acknowledged": "已叫应",
    "dispatched": "已派单",
    "resolved": "已处置",
    "rechecked": "已复查",
    "closed": "已关闭",
}


def _token(token_file: Path | None) -> str:
    if token_file is not None:
        try:
            token = token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise click.ClickException(f"cannot read the token file {token_file}: {exc.strerror or exc}") from exc
    else:
        token = os.environ.get("LIFELINE_API_TOKEN", "").strip()
    if not token:
        raise click.ClickException("no token: set LIFELINE_API_TOKEN or give --token-file (ask an administrator)")
    return token


def _grade(text: str) -> int:
    try:
        return GRADES[text.strip().upper()]
    except KeyError:
        raise click.BadParameter("I, II, III or IV (or 1–4)") from None


def _default_state_file() -> Path:
    base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return base / "lifeline" / "alerts-last-event"


@click.group("alerts")
@click.option("--url", default="http://127.0.0.1:8080", show_default=True, help="The viewer.")
@click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path), help="File holding your token.")
@click.pass_context
def alerts(ctx: click.Context, url: str, token_file: Path | None) -> None:
    """Alerts in the terminal: watch them live and act on them (token: LIFELINE_API_TOKEN or --token-file)."""
    ctx.meta["lifeline.alerts"] = (url.rstrip("/"), token_file)


def _conn(ctx: click.Context) -> tuple[str, dict[str, str]]:
    url, token_file = ctx.meta["lifeline.alerts"]
    return url, {"Authorization": f"Bearer {_token(token_file)}"}


@alerts.command("watch")
@click.option("--grade", "grade_text", default="IV", show_default=True, help="Show this grade and worse.")
@click.option("--district", default=None, help="Only this district.")
@click.option("--network", type=click.Choice(["drainage", "water", "gas", "rain"]), default=None)
@click.option("--count", type=int, default=0, help="Stop after this many events (0: run until Ctrl-C).")
@click.option(
    "--state-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where the last event id is kept (default: ~/.local/state/lifeline/alerts-last-event).",
)
@click.option("--from-now", is_flag=True, help="Ignore the state file and start with new events only.")
@click.pass_context
def watch(
    ctx: click.Context,
    grade_text: str,
    district: str | None,
    network: str | None,
    count: int,
    state_file: Path | None,
    from_now: bool,
) -> None:
    """Print alert events as they come; after a disconnect or restart, first what was missed."""
    from websockets.exceptions import ConnectionClosed, InvalidStatus
    from websockets.sync.client import connect

    url, headers = _conn(ctx)
    grade = _grade(grade_text)
    path = state_file or _default_state_file()
    last = None if from_now else _read_last(path)
    shown = 0
    delay = 1.0
    while True:
        query = {"min_grade": str(grade)}
        if district:
            query["district"] = district
        if network:
            query["network"] = network
        if last is not None:
            query["after"] = str(last)
        ws_url = url.replace("http", "ws", 1) + "/ws/alerts?" + "&".join(f"{k}={_q(v)}" for k, v in query.items())
        try:
            with connect(ws_url, additional_headers=headers, open_timeout=10) as ws:
                delay = 1.0
                for raw in ws:
                    msg = json.loads(raw)
                    if msg.get("type") == "hello":
                        if last is None:
                            last = int(msg["last_event_id"])
                            _write_last(path, last)
                        click.echo(click.style("● 已连接 connected", fg="green"), err=True)
                        continue
                    if msg.get("type") != "alert":
                        continue
                    click.echo(_line(msg))
                    last = int(msg["event_id"])
                    _write_last(path, last)
                    shown += 1
                    if count and shown >= count:
                        return
        except InvalidStatus as exc:
            if exc.response.status_code in (401, 403):
                raise click.ClickException("the viewer refused the token (401/403)") from exc
            problem = f"HTTP {exc.response.status_code}"
        except (ConnectionClosed, OSError, TimeoutError) as exc:
            problem = type(exc).__name__
        click.echo(click.style(f"○ 连接中断 disconnected ({problem}); retrying in {delay:.0f} s", fg="red"), err=True)
        time.sleep(delay)
        delay = min(delay * 2, 30.0)


def _q(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="")


def _line(msg: dict[str, Any]) -> str:
    alert = msg["alert"]
    grade = int(alert["grade"])
    ts = str(msg["event_ts"])[:19].replace("T", " ")
    head = click.style(f"{ROMAN[grade]}级", fg=COLOUR[grade], bold=grade <= 2)
    state = STATE_ZH.get(alert["state"], alert["state"])
    who = f" by {msg['actor']}" if msg.get("actor") not in (None, "system") else ""
    note = f" — {msg['note']}" if msg.get("note") else ""
    # Raised during a drill: say so first, so nobody acts on it as on a real event.
    drill = click.style("[演练 DRILL] ", fg="magenta", bold=True) if alert.get("drill_id") is not None else ""
    return (
        f"{drill}{ts}  {head}  #{alert['id']:<6} {msg['event']:<12} [{state}] {alert['network']}/{alert['district']}  "
        f"{alert['message']}{who}{note}"
    )


def _read_last(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _write_last(path: Path, event_id: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(str(event_id))
    tmp.replace(path)


@alerts.command("act")
@click.argument("alert_id", type=int)
@click.argument("action", type=click.Choice(["acknowledge", "dispatch", "resolve", "recheck", "close", "reopen"]))
@click.option("--note", default="", help="What you saw or did.")
@click.option("--assignee", default=None, help="dispatch: who goes.")
@click.option("--task", default=None, help="dispatch: what to do.")
@click.pass_context
def act(ctx: click.Context, alert_id: int, action: str, note: str, assignee: str | None, task: str | None) -> None:
    """Act on an alert (acknowledge = 叫应)."""
    import httpx

    url, headers = _conn(ctx)
    body: dict[str, Any] = {"action": action, "note": note}
    if assignee:
        body["assignee"] = assignee
    if task:
        body["task"] = task
    try:
        res = httpx.post(f"{url}/api/alerts/{alert_id}/actions", headers=headers, json=body, timeout=15)
    except httpx.HTTPError as exc:
        raise click.ClickException(f"cannot reach the viewer at {url}: {exc}") from exc
    if res.status_code != 200:
        is_json = res.headers.get("content-type", "").startswith("application/json")
        detail = res.json().get("detail", res.text) if is_json else res.text
        raise click.ClickException(f"{action} refused (HTTP {res.status_code}): {detail}")
    click.echo(f"alert {alert_id}: {STATE_ZH.get(res.json()['state'], res.json()['state'])} ({res.json()['state']})")


@alerts.command("ack")
@click.argument("alert_id", type=int)
@click.option("--note", default="", help="What you saw or will do.")
@click.pass_context
def ack(ctx: click.Context, alert_id: int, note: str) -> None:
    """Acknowledge (叫应) an alert: the same as 'act ALERT_ID acknowledge'."""
    ctx.invoke(act, alert_id=alert_id, action="acknowledge", note=note, assignee=None, task=None)
