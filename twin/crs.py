"""Coordinate reference systems: the twin works in a projected CRS in metres; people and maps want lon/lat."""

from __future__ import annotations

from functools import lru_cache

from pyproj import CRS, Transformer
from pyproj.exceptions import CRSError

from twin.errors import ConfigError


@lru_cache(maxsize=16)
def _transformer(src: str, dst: str) -> Transformer:
    try:
        return Transformer.from_crs(CRS.from_user_input(src), CRS.from_user_input(dst), always_xy=True)
    except CRSError as exc:
        raise ConfigError(f"unknown CRS {src!r} or {dst!r}: {exc}") from exc


def to_lonlat(crs: str, x_m: float, y_m: float) -> tuple[float, float]:
    """Convert a point from *crs* (e.g. ``EPSG:4547``) to WGS 84 (lon, lat) in degrees.

    Example:
        >>> lon, lat = to_lonlat("EPSG:4547", 598_400.0, 3_000_600.0)
        >>> round(lon, 3), round(lat, 3)
        (114.992, 27.114)
    """
    lon, lat = _transformer(crs, "EPSG:4326").transform(x_m, y_m)
    return float(lon), float(lat)


def from_crs(src: str, dst: str, x: float, y: float) -> tuple[float, float]:
    """Convert a point from CRS *src* to CRS *dst* (axis order x/east, y/north; lon, lat for geographic)."""
    a, b = _transformer(src, dst).transform(x, y)
    return float(a), float(b)


def is_geographic(crs: str) -> bool:
    """Tell whether *crs* has degrees, not metres."""
    try:
        return bool(CRS.from_user_input(crs).is_geographic)
    except CRSError as exc:
        raise ConfigError(f"unknown CRS {crs!r}: {exc}") from exc
