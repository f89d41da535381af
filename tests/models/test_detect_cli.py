"""`lifeline detect` on BATADAL, as any public dataset is scored: fit on the normal year, flag the attacked one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from models.evaluation import batadal_score

from .test_offline import _batadal_dir


def _lifeline(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIFELINE_")}
    return subprocess.run(
        [sys.executable, "-m", "lifeline", *args], env=env, capture_output=True, text=True, timeout=300, check=False
    )


def test_detect_fits_scores_saves_and_reloads(tmp_path: Path) -> None:
    folder = _batadal_dir()
    normal, attacked = folder / "BATADAL_dataset03.csv", folder / "BATADAL_dataset04.csv"
    if not attacked.exists():
        pytest.skip(f"BATADAL data not found in {folder} (set LIFELINE_SHARED_DIR)")
    out, model = tmp_path / "flags.csv", tmp_path / "model.bin"
    fitted = _lifeline("detect", "--fit", str(normal), "--csv", str(attacked), "--out", str(out), "--model", str(model))
    assert fitted.returncode == 0, fitted.stderr
    assert "28 sensors of BATADAL_dataset03.csv rounded to the steps BATADAL_dataset04.csv is recorded at" in (
        fitted.stdout
    )
    result = pd.read_csv(out, dtype={"timestamp": str})
    source = pd.read_csv(attacked, skipinitialspace=True)
    assert list(result.columns) == ["timestamp", "flag", "score"]
    assert result["timestamp"].tolist() == source["DATETIME"].tolist()  # the input's own timestamps
    assert set(result["flag"].unique()) <= {0, 1}
    score = batadal_score((source["ATT_FLAG"] == 1).astype(int), result["flag"])
    assert score.s >= 0.85  # 0.872: settings chosen on dataset03 alone, fitted at dataset04's resolution

    again = tmp_path / "again.csv"
    loaded = _lifeline("detect", "--model", str(model), "--csv", str(attacked), "--out", str(again))
    assert loaded.returncode == 0, loaded.stderr
    assert again.read_bytes() == out.read_bytes()


def test_detect_explains_bad_input(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("when,P_J1\nyesterday,3\n")
    result = _lifeline("detect", "--fit", str(bad), "--csv", str(bad), "--out", str(tmp_path / "o.csv"))
    assert result.returncode == 1 and "bad.csv" in result.stderr and "not timestamps" in result.stderr
    assert _lifeline("detect", "--csv", str(bad), "--out", str(tmp_path / "o.csv")).returncode == 2


def test_detect_fits_at_the_resolution_of_the_file_it_scores(tmp_path: Path) -> None:
    from .test_offline import _rounding_prone

    fine, coarse = tmp_path / "normal.csv", tmp_path / "export.csv"
    _rounding_prone(24 * 60, seed=1).rename_axis("timestamp").to_csv(fine, date_format="%Y-%m-%dT%H:%M:%SZ")
    _rounding_prone(24 * 20, seed=2).round(2).rename_axis("timestamp").to_csv(coarse, date_format="%Y-%m-%dT%H:%M:%SZ")

    out, model = tmp_path / "flags.csv", tmp_path / "model.npz"
    fitted = _lifeline("detect", "--fit", str(fine), "--csv", str(coarse), "--out", str(out))
    assert fitted.returncode == 0, fitted.stderr
    assert "4 sensors of normal.csv rounded to the steps export.csv is recorded at" in fitted.stdout
    assert pd.read_csv(out)["flag"].mean() < 0.02

    # A model fitted at full precision and then given the coarser export says so, and why it matters.
    saved = _lifeline("detect", "--fit", str(fine), "--csv", str(fine), "--out", str(out), "--model", str(model))
    assert saved.returncode == 0, saved.stderr
    assert "rounded" not in saved.stdout
    loaded = _lifeline("detect", "--model", str(model), "--csv", str(coarse), "--out", str(out))
    assert loaded.returncode == 0, loaded.stderr
    assert "4 sensors of export.csv are recorded more coarsely than the model was fitted at" in loaded.stderr
    assert "P_J2 (0.01 against 0)" in loaded.stderr
    assert pd.read_csv(out)["flag"].mean() > 0.5


def test_detect_checks_the_network_models_control_rules(tmp_path: Path) -> None:
    folder = _batadal_dir()
    normal, attacked, inp = folder / "BATADAL_dataset03.csv", folder / "BATADAL_dataset04.csv", folder / "CTOWN.INP"
    if not inp.exists():
        pytest.skip(f"BATADAL data not found in {folder} (set LIFELINE_SHARED_DIR)")
    out, model = tmp_path / "flags.csv", tmp_path / "model.npz"
    args = ("detect", "--fit", str(normal), "--csv", str(attacked), "--out", str(out), "--model", str(model))
    why = tmp_path / "why.csv"
    fitted = _lifeline(*args, "--inp", str(inp), "--explain", str(why))
    assert fitted.returncode == 0, fitted.stderr
    assert "20 control rules read from CTOWN.INP" in fitted.stdout
    assert "20 control rules hold on BATADAL_dataset03.csv and are checked" in fitted.stdout
    assert "control rule broken: PU2 closed if T1 level > 4.5 m at 22 samples, first 2016-10-09 09:00" in (
        fitted.stdout
    )
    assert "Curve was not used" not in fitted.stderr  # WNTR's chatter about the model is not the user's business
    source = pd.read_csv(attacked, skipinitialspace=True)
    result = pd.read_csv(out)
    assert list(result.columns) == ["timestamp", "flag", "score"]
    assert batadal_score((source["ATT_FLAG"] == 1).astype(int), result["flag"]).s >= 0.95  # 0.963
    reasons = pd.read_csv(why, dtype=str, keep_default_na=False).set_index("timestamp")
    assert list(reasons.index) == result.loc[result["flag"] == 1, "timestamp"].tolist()  # one row per flagged row
    assert set(reasons["cause"]) == {"score", "control", "both"}
    assert reasons.loc["09/10/16 09", "cause"] == "control" and reasons.loc["09/10/16 09", "links"] == "PU2"
    assert all(len(s.split("; ")) == 3 for s in reasons["sensors"])
    # The runs of flagged rows, longest first, with what carries them: the 9 October attack whole, on PU2's rules.
    runs = [line for line in fitted.stdout.splitlines() if line.startswith("flagged ")]
    assert 1 <= len(runs) <= 10 and "(84 rows;" in runs[0]
    assert any(line.startswith("flagged 09/10/16 09 – 11/10/16 20 (60 rows") and "on PU2" in line for line in runs)

    again = tmp_path / "again.csv"
    loaded = _lifeline("detect", "--model", str(model), "--csv", str(attacked), "--out", str(again))
    assert loaded.returncode == 0 and again.read_bytes() == out.read_bytes()  # the rules are saved with the model

    alone = _lifeline("detect", "--model", str(model), "--csv", str(attacked), "--out", str(again), "--inp", str(inp))
    assert alone.returncode == 2 and "--inp is read when fitting" in alone.stderr
    broken = tmp_path / "broken.inp"
    broken.write_text("[PIPES]\nP1 J1\n")
    bad = _lifeline(*args, "--inp", str(broken))
    assert bad.returncode == 1 and "broken.inp: cannot read as an EPANET model" in bad.stderr


def test_a_sensors_file_describes_columns_named_otherwise(tmp_path: Path) -> None:
    folder = _batadal_dir()
    normal, attacked, inp = folder / "BATADAL_dataset03.csv", folder / "BATADAL_dataset04.csv", folder / "CTOWN.INP"
    if not inp.exists():
        pytest.skip(f"BATADAL data not found in {folder} (set LIFELINE_SHARED_DIR)")
    quantity = {"P": "pressure", "F": "flow", "L": "level", "S": "status"}
    rows = ["column,quantity,unit,element", "spare,ignore,,"]
    renamed = {}
    for path in (normal, attacked):
        table = pd.read_csv(path, skipinitialspace=True)
        table.columns = [c.strip() for c in table.columns]
        names = {}
        for k, column in enumerate(c for c in table.columns if c[:2] in ("P_", "F_", "L_", "S_")):
            names[column] = f"channel {k:02d}"
            if column.startswith("L_"):  # levels in centimetres
                table[column] = (table[column] * 100).round(6)
            if path == normal:
                unit = "cm" if column.startswith("L_") else ""
                rows.append(f"channel {k:02d},{quantity[column[0]]},{unit},{column[2:]}")
        table["spare"] = 1.0
        renamed[path] = tmp_path / path.name
        table.rename(columns=names).to_csv(renamed[path], index=False)
    sensors = tmp_path / "sensors.csv"
    sensors.write_text("\n".join(rows) + "\n")

    plain, mapped = tmp_path / "plain.csv", tmp_path / "mapped.csv"
    first = _lifeline("detect", "--fit", str(normal), "--csv", str(attacked), "--out", str(plain), "--inp", str(inp))
    assert first.returncode == 0, first.stderr
    renamed_args = ("detect", "--fit", str(renamed[normal]), "--csv", str(renamed[attacked]), "--out", str(mapped))
    second = _lifeline(*renamed_args, "--inp", str(inp), "--sensors", str(sensors))
    assert second.returncode == 0, second.stderr
    assert "44 columns of BATADAL_dataset04.csv described by sensors.csv" in second.stdout
    assert "20 control rules hold" in second.stdout  # the elements found the rules' tanks and pumps
    assert mapped.read_bytes() == plain.read_bytes()  # the same flags and scores as with BATADAL's own names

    without = _lifeline(*renamed_args, "--inp", str(inp))
    assert without.returncode == 0 and "0 control rules hold" in without.stdout  # nothing to check them on

    bad = tmp_path / "bad.csv"
    bad.write_text("column,quantity,unit\nchannel 00,pressure,furlongs\n")
    refused = _lifeline(*renamed_args, "--sensors", str(bad))
    assert refused.returncode == 1
    assert "bad.csv:2 field 'unit': unit 'furlongs' for pressure: expected m, mh2o, kpa" in refused.stderr
