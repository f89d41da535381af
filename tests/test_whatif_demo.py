"""The demo's what-if surrogate: trained once on the panel's storms, then taken from the cache."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from models.waterlogging.surrogate import StormFeatures, Surrogate
from twin.democity.city import build_demo_city
from twin.errors import ConfigError
from viewer.whatif import DEMO_STORMS, WhatIf, demo_surrogate

STORMS = tuple(StormFeatures(rp, 120, 0.4, 10.0) for rp in (2, 5, 20, 50, 100))
"""Five storms: the fewest a surrogate is fitted on (the demo uses :data:`DEMO_STORMS`)."""


def test_the_demo_surrogate_is_trained_once_then_cached_and_a_stop_leaves_nothing(tmp_path: Path) -> None:
    city = build_demo_city()
    assert len(DEMO_STORMS) == 18 and {s.return_period_years for s in DEMO_STORMS} == {2, 5, 10, 20, 50, 100}

    assert demo_surrogate(city, tmp_path, storms=STORMS, stop=lambda: True) is None
    assert not list(tmp_path.iterdir())  # stopped before the first run: nothing written

    runs: list[tuple[int, int]] = []
    folder = demo_surrogate(city, tmp_path, storms=STORMS, progress=lambda done, total: runs.append((done, total)))
    assert folder is not None and runs == [(k, 5) for k in range(1, 6)]
    assert Surrogate.load(folder).info["storms"] == 5
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]  # no partial folder left behind

    again: list[tuple[int, int]] = []
    assert demo_surrogate(city, tmp_path, storms=STORMS, progress=lambda d, t: again.append((d, t))) == folder
    assert again == []  # from the cache: no SWMM run

    # A damaged cache is trained again.
    (folder / "surrogate.json").write_text("{", encoding="utf-8")
    assert demo_surrogate(city, tmp_path, storms=STORMS) == folder
    assert Surrogate.load(folder).info["storms"] == 5

    whatif = WhatIf.load(folder, city)
    now = datetime.now(UTC)
    inside = whatif.geojson(StormFeatures(50, 120, 0.4, 10.0), issued=now)["properties"]
    assert inside["whatif"]["return_period_years"] == 50 and inside["outside_training"] == []
    outside = whatif.geojson(StormFeatures(50, 30, 0.4, 10.0), issued=now)["properties"]
    assert "duration_min" in outside["outside_training"]  # the page then says: indicative only

    # A surrogate of another network is refused with the reason.
    other = tmp_path / "other"
    shutil.copytree(folder, other)
    meta = json.loads((other / "surrogate.json").read_text(encoding="utf-8"))
    meta["node_ids"] = [f"X{k}" for k in range(len(meta["node_ids"]))]
    (other / "surrogate.json").write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(ConfigError, match="trained on another drainage network"):
        WhatIf.load(other, city)
    with pytest.raises(ConfigError, match="not a readable surrogate"):
        WhatIf.load(tmp_path / "missing", city)
