"""``lifeline risk`` commands on the demo city, with the real SWMM engine."""

from __future__ import annotations

import json
import re
from pathlib import Path

from click.testing import CliRunner

from lifeline.risk_commands import risk
from lifeline.settings import Settings


def test_nowcast_command_writes_a_risk_map_and_warns_of_the_underpasses(tmp_path: Path) -> None:
    out = tmp_path / "map.geojson"
    result = CliRunner().invoke(
        risk, ["nowcast", "--demo", "--return-period", "30", "--horizon", "3", "--out", str(out)], obj=Settings()
    )
    assert result.exit_code == 0, result.output
    assert "waterlogging:LP003" in result.output
    geo = json.loads(out.read_text(encoding="utf-8"))
    assert geo["type"] == "FeatureCollection" and geo["features"]


def test_whatif_without_a_trained_surrogate_says_how_to_train_one(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        risk, ["whatif", "--return-period", "20", "--surrogate", str(tmp_path / "none"), "--demo"], obj=Settings()
    )
    assert result.exit_code != 0
    assert "train-surrogate" in result.output


def test_bad_horizon_is_refused() -> None:
    result = CliRunner().invoke(risk, ["nowcast", "--demo", "--horizon", "0"], obj=Settings())
    assert result.exit_code != 0
    assert "--horizon" in result.output


def test_nowcast_command_with_rain_futures_warns_by_probability(tmp_path: Path) -> None:
    out = tmp_path / "map.geojson"
    args = ["nowcast", "--demo", "--return-period", "100", "--horizon", "3", "--members", "3"]
    result = CliRunner().invoke(risk, [*args, "--forecast-sigma", "0.1", "--out", str(out)], obj=Settings())
    assert result.exit_code == 0, result.output
    named = re.search(r"named by the warning rule \(p ≥ [0-9.]+\): (\d+)", result.output)
    assert named and int(named.group(1)) > 0, result.output
    assert "(3 SWMM run(s))" in result.output
    geo = json.loads(out.read_text(encoding="utf-8"))
    assert any(f["properties"].get("kind") == "pond" for f in geo["features"])
