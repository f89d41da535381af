"""Methane gathering in underground spaces near a gas leak: a documented well-mixed box model.

Gas leaking from a buried pipe migrates through the soil; a share of it reaches each nearby underground space
(manhole, valve well, utility tunnel, basement) and mixes with the air there, which is exchanged with the outside
at the space's ventilation rate. For one space of volume V (m³) with air changes per hour λ (1/h), receiving a
methane flow q(t) (m³/h at ambient conditions), the methane volume fraction c(t) obeys

    dc/dt = q(t) / V − λ·c

(a first-order box model, as used for confined-space gas build-up). The share of the leak that reaches a space
falls off with its distance d from the leak as exp(−d / L), with L the soil migration length (default 8 m, loose
backfill along a utility trench; dense clay is shorter), and is capped by ``capture``. Concentrations are reported
in %LEL: methane's lower explosive limit is 5 %vol, so %LEL = 20 × %vol.

It is a simple model on purpose: it gives the right order of rise times and ranking of spaces for testing the
detectors; it is not a CFD or soil-transport model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

METHANE_LEL_VOL = 0.05
"""Lower explosive limit of methane, volume fraction."""


@dataclass(frozen=True, slots=True)
class SpaceExposure:
    """One underground space as the dispersion model sees it.

    Attributes:
        space_id: the space's id.
        volume_m3: its air volume, m³.
        distance_m: its distance from the leak, m.
        air_changes_per_h: ventilation, air changes per hour (a closed manhole ~0.5; a ventilated tunnel ~3–6).
    """

    space_id: str
    volume_m3: float
    distance_m: float
    air_changes_per_h: float = 0.5


def share_reaching(distance_m: float, *, migration_length_m: float = 8.0, capture: float = 0.3) -> float:
    """Return the share of the leak's flow that reaches a space *distance_m* away (0 … *capture*)."""
    return capture * math.exp(-max(distance_m, 0.0) / migration_length_m)


def step_concentration(
    c_vol: float, *, inflow_m3_h: float, volume_m3: float, air_changes_per_h: float, dt_h: float
) -> float:
    """Advance the box model by *dt_h* hours from volume fraction *c_vol* with constant inflow (exact solution).

    Returns:
        The new methane volume fraction (0 … 1).
    """
    if volume_m3 <= 0:
        raise ValueError("volume must be positive")
    if air_changes_per_h <= 0:
        return min(1.0, c_vol + inflow_m3_h / volume_m3 * dt_h)
    steady = inflow_m3_h / (volume_m3 * air_changes_per_h)
    return min(1.0, steady + (c_vol - steady) * math.exp(-air_changes_per_h * dt_h))


def to_pct_lel(c_vol: float) -> float:
    """Convert a methane volume fraction to %LEL."""
    return 100.0 * c_vol / METHANE_LEL_VOL


def leak_flow_m3_h(mass_flow_kg_s: float, *, density_kg_m3: float = 0.72) -> float:
    """Convert a leak's mass flow (kg/s, as pandapipes gives) to volume flow at ambient conditions, m³/h."""
    return mass_flow_kg_s / density_kg_m3 * 3600.0


def time_to_reach(pct_lel: float, *, inflow_m3_h: float, space: SpaceExposure) -> float | None:
    """Return the hours until a clean space reaches *pct_lel* under constant inflow, or None if it never does."""
    target = pct_lel / 100.0 * METHANE_LEL_VOL
    if inflow_m3_h <= 0:
        return None
    lam = space.air_changes_per_h
    if lam <= 0:
        return target * space.volume_m3 / inflow_m3_h
    steady = inflow_m3_h / (space.volume_m3 * lam)
    if steady <= target:
        return None
    return -math.log(1 - target / steady) / lam
