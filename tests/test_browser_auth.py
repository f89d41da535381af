"""Signing in on the operations page in a real headless Chromium (a server that requires tokens)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from viewer.app import create_app
from viewer.auth import Authenticator, Role, add_token

from .conftest import ARTIFACTS, serve
from .test_browser import browser  # noqa: F401 - the shared Chromium fixture

pytestmark = [pytest.mark.integration, pytest.mark.browser]


def test_sign_in_with_a_token_then_the_page_loads(
    browser: Any,  # noqa: F811
    pg_url: str,
    schema: str,
    tmp_path: Path,
) -> None:
    tokens = tmp_path / "tokens.toml"
    token = add_token(tokens, name="值班员-1", role=Role.OPERATOR)
    auth = Authenticator.from_file(tokens)
    with serve(create_app(conninfo=pg_url, schema=schema, auth=auth)) as url:
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(url)
        page.wait_for_selector("#signin:not([hidden])")
        assert page.locator("#signin h2").inner_text() == "登录"
        assert page.locator("#sensors tbody tr").count() == 0  # nothing is shown before signing in
        page.fill("#token", "not-the-token")
        page.click("#signin button[type=submit]")
        page.wait_for_selector("#signin-error:has-text('令牌无效')")
        page.screenshot(path=str(ARTIFACTS / "sign_in.png"))
        page.fill("#token", token)
        page.click("#signin button[type=submit]")
        page.wait_for_selector("#sensors tbody tr >> nth=20")
        assert page.locator("#signin").is_hidden()
        assert page.locator("#user-name").inner_text() == "值班员-1 · 值班员"
        page.wait_for_selector("#conn.on")  # the websocket carried the session cookie
        page.screenshot(path=str(ARTIFACTS / "signed_in.png"))
        page.click("#signout")
        page.wait_for_selector("#signin:not([hidden])")
        page.close()
        assert errors == []
