"""Instant what-ifs for the viewer: the risk map a design storm would make, from the trained surrogate.

The surrogate (:mod:`models.waterlogging.surrogate`, ``lifeline risk train-surrogate``) turns a design storm's
parameters into every drainage node's flood volume and times in about a millisecond; the same ponding and risk
grading as the nowcast turn those into the map. A what-if runs no SWMM and is not stored: it is a question, not a
forecast (the authoritative map comes from the SWMM nowcast, ``GET /api/risk/map``). ``lifeline demo`` trains a
small surrogate on the panel's storms in the background (:func:`demo_surrogate`, cached between runs).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from models.waterlogging.ponding import PondingModel
from models.waterlogging.risk import RiskAssets, risk_geojson
from models.waterlogging.surrogate import FEATURES, RECORD_S, StormFeatures, Surrogate, features
from twin.errors import ConfigError
from twin.model import City
from twin.sensors import Network
from twin.storms import DEFAULT_FORMULA, FORMULAS


@dataclass(frozen=True, slots=True)
class WhatIf:
    """A loaded surrogate with the city's risk assets, ready to map a storm."""

    surrogate: Surrogate
    assets: RiskAssets
    crs: str
    folder: str

    @classmethod
    def load(cls, folder: Path, city: City) -> WhatIf:
        """Load the surrogate in *folder* for *city* (its drainage network, terrain, low points and assets).

        Raises:
            ConfigError: no readable surrogate there, the city has no drainage network, or the surrogate was
                trained on another network (none of its nodes is in the city's).
        """
        surrogate = Surrogate.load(folder)
        if Network.DRAINAGE not in city.networks:
            raise ConfigError("the twin has no drainage network: no what-ifs")
        network = city.networks[Network.DRAINAGE]
        if not set(surrogate.node_ids) & set(network.nodes):
            raise ConfigError(f"{folder}: the surrogate was trained on another drainage network")
        model = PondingModel(network, city.terrain, city.low_points.values())
        return cls(surrogate, RiskAssets.for_city(city, model), city.crs, str(folder))

    def geojson(self, storm: StormFeatures, *, issued: datetime) -> dict[str, Any]:
        """The risk map of *storm* beginning at *issued*, as GeoJSON in WGS 84, with what was asked and how
        far it lies from the storms the surrogate was trained on (``outside``: features beyond their range)."""
        started = time.perf_counter()
        risk = self.surrogate.risk_map(storm, self.assets, issued=issued)
        geo = risk_geojson(risk, self.crs)
        values = features(storm, self.surrogate.formula)
        ranges = self.surrogate.info.get("ranges", {})
        outside = [
            name
            for name, value in zip(FEATURES, values, strict=True)
            if name in ranges and not ranges[name][0] - 1e-9 <= float(value) <= ranges[name][1] + 1e-9
        ]
        geo["properties"] = {
            **(geo.get("properties") or {}),
            "source": "surrogate",
            "whatif": {
                "return_period_years": storm.return_period_years,
                "duration_min": storm.duration_min,
                "peak_ratio": storm.peak_ratio,
                "antecedent_mm": storm.antecedent_mm,
            },
            "outside_training": outside,
            "surrogate": {"folder": self.folder, "storms": self.surrogate.info.get("storms")},
            "compute_ms": round((time.perf_counter() - started) * 1000, 2),
        }
        return geo


DEMO_STORMS: tuple[StormFeatures, ...] = tuple(
    StormFeatures(rp, duration, 0.4, 10.0) for rp in (2, 5, 10, 20, 50, 100) for duration in (60, 120, 180)
)
"""What the demo trains its surrogate on: the what-if panel's choices (18 SWMM runs, about a minute on one core)."""


def demo_surrogate(
    city: City,
    cache: Path,
    *,
    storms: tuple[StormFeatures, ...] = DEMO_STORMS,
    stop: Callable[[], bool] = lambda: False,
    progress: Callable[[int, int], None] | None = None,
) -> Path | None:
    """Return a folder holding a surrogate of *city*'s drainage trained on *storms*: from *cache* if one was
    trained there for the same network and storms, else trained now (one SWMM run at a time, so *stop* is
    answered within one run) and saved there. None if *stop* said so before it was done.

    Raises:
        ConfigError: the city has no drainage network.
        SimulationError: SWMM rejects the model.
    """
    from models.waterlogging.nowcast import run_job, swmm_pool
    from models.waterlogging.surrogate import StormRun, flood_times, storm_job

    if Network.DRAINAGE not in city.networks:
        raise ConfigError("the twin has no drainage network: no what-ifs")
    network = city.networks[Network.DRAINAGE]
    key = hashlib.sha256((network.source + repr(storms)).encode("utf-8")).hexdigest()[:16]
    folder = cache / f"surrogate-{key}"
    if (folder / "surrogate.json").is_file():
        try:
            Surrogate.load(folder)
            return folder
        except ConfigError:
            shutil.rmtree(folder, ignore_errors=True)  # a damaged or older cache: train again
    runs = []
    formula = FORMULAS[DEFAULT_FORMULA]
    with swmm_pool(1) as pool:
        for k, storm in enumerate(storms):
            if stop():
                return None
            run = pool.submit(run_job, storm_job(network, storm, formula)).result()
            eta, duration = flood_times(run.flood_rate_m3_s, RECORD_S)
            volume = np.clip(run.volume_m3 - run.volume_before_m3, 0, None)
            runs.append(StormRun(storm, run.node_ids, volume, run.wall_s, eta, duration))
            if progress is not None:
                progress(k + 1, len(storms))
    surrogate = Surrogate.fit(runs, network_name=network.name)
    cache.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=".surrogate-", dir=cache))
    surrogate.save(partial)
    try:
        os.replace(partial, folder)  # whole or not at all
    except OSError:  # another demo saved the same one meanwhile
        shutil.rmtree(partial, ignore_errors=True)
    return folder
