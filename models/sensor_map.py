"""A sensors file for wide tables whose column names do not carry the quantity (``lifeline detect --sensors``).

The offline detector and the control-rule check read a column's quantity from its name (``P_`` pressure in m,
``F_`` flow in L/s, ``L_`` level in m, ``S_`` status 0/1, as in BATADAL) and, for the control rules, the
network element from the rest of the name (``L_T1`` is tank T1's level). A dataset named otherwise is described by
a CSV with one row per column:

.. code-block:: text

    column,quantity,unit,element
    Tank 1 level (cm),level,cm,T1
    Pump 1 flow,flow,m3/h,PU1
    Pump 1 running,status,,PU1
    North pressure,pressure,kPa,J280
    Spare channel,ignore,,

``quantity``: ``pressure``, ``flow``, ``level``, ``status`` or ``ignore`` (the column is left out). ``unit``
(optional; the convention's unit when empty): pressure m, kPa, MPa, bar, Pa, mH2O, psi; flow L/s, m3/s, m3/h,
L/min, gpm; level m, cm, mm, ft; status none. ``element`` (optional): the EPANET id of the tank, junction, pump or
valve the column measures, so that ``--inp`` rules can find it; without it the column keeps its own name after the
prefix. :func:`apply_sensor_map` renames each described column to ``<prefix><element or column>`` and converts
its values to the convention's unit; columns the file does not describe keep their names (and are typed by prefix
as before).
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pandas as pd

from twin.errors import ModelImportError

_PREFIX: Final[Mapping[str, str]] = {"pressure": "P_", "flow": "F_", "level": "L_", "status": "S_"}
_G: Final = 9.80665

UNITS: Final[Mapping[str, Mapping[str, float]]] = {
    "pressure": {
        "m": 1.0,
        "mh2o": 1.0,
        "kpa": 1 / _G,
        "mpa": 1000 / _G,
        "bar": 100 / _G,
        "pa": 0.001 / _G,
        "psi": 6.894757 / _G,
    },
    "flow": {
        "l/s": 1.0,
        "lps": 1.0,
        "m3/s": 1000.0,
        "m³/s": 1000.0,
        "m3/h": 1 / 3.6,
        "m³/h": 1 / 3.6,
        "l/min": 1 / 60,
        "gpm": 0.0630902,
    },
    "level": {"m": 1.0, "cm": 0.01, "mm": 0.001, "ft": 0.3048},
    "status": {"": 1.0},
}
"""Per quantity: accepted unit spellings (lower case, no spaces) and the factor to the convention's unit."""

REQUIRED: Final = ("column", "quantity")


@dataclass(frozen=True, slots=True)
class SensorEntry:
    """One described column: its quantity, the factor to the convention's unit, and the element it measures."""

    column: str
    quantity: str
    factor: float
    element: str | None

    @property
    def name(self) -> str | None:
        """The column's name after mapping (``P_J280``), or None if it is ignored."""
        if self.quantity == "ignore":
            return None
        return _PREFIX[self.quantity] + (self.element or self.column)


def read_sensor_map(path: Path) -> dict[str, SensorEntry]:
    """Read a sensors file (see the module docstring); column name → entry.

    Raises:
        ModelImportError: the file cannot be read, lacks a ``column`` or ``quantity`` header, or a row names an
            unknown quantity or unit, repeats a column, or maps two columns to the same name (file and line given).
    """
    where = str(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelImportError(where, f"cannot read: {exc}") from exc
    rows = list(csv.reader(text.splitlines()))
    if not rows:
        raise ModelImportError(where, "empty: needs a header 'column,quantity[,unit][,element]'", line=1)
    header = [h.strip().lower() for h in rows[0]]
    missing = [h for h in REQUIRED if h not in header]
    if missing:
        raise ModelImportError(
            where, f"header lacks {', '.join(missing)} (needs column,quantity[,unit][,element])", line=1
        )
    entries: dict[str, SensorEntry] = {}
    names: dict[str, int] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        cells = {h: (row[i].strip() if i < len(row) else "") for i, h in enumerate(header)}
        column = cells["column"]
        quantity = cells["quantity"].lower()
        if not column:
            raise ModelImportError(where, "empty column name", line=line, field="column")
        if column in entries:
            raise ModelImportError(where, f"column {column!r} described twice", line=line, field="column")
        if quantity != "ignore" and quantity not in UNITS:
            raise ModelImportError(
                where,
                f"quantity {cells['quantity']!r}: expected pressure, flow, level, status or ignore",
                line=line,
                field="quantity",
            )
        factor = 1.0
        if quantity in UNITS:
            unit = cells.get("unit", "").replace(" ", "").lower()
            if unit or quantity == "status":
                if unit not in UNITS[quantity]:
                    accepted = ", ".join(u for u in UNITS[quantity] if u) or "none"
                    raise ModelImportError(
                        where,
                        f"unit {cells.get('unit')!r} for {quantity}: expected {accepted}",
                        line=line,
                        field="unit",
                    )
                factor = UNITS[quantity][unit]
        entry = SensorEntry(column, quantity, factor, cells.get("element") or None)
        if entry.name is not None:
            if entry.name in names:
                raise ModelImportError(
                    where,
                    f"column {column!r} maps to {entry.name}, as line {names[entry.name]} does",
                    line=line,
                    field="element",
                )
            names[entry.name] = line
        entries[column] = entry
    return entries


def apply_sensor_map(frame: pd.DataFrame, entries: Mapping[str, SensorEntry]) -> tuple[pd.DataFrame, list[str]]:
    """Rename and convert the described columns of *frame*; return the new table and the described columns absent
    from it.

    Raises:
        ModelImportError: a mapped name clashes with a column the file does not describe.
    """
    out = frame.copy()
    absent = [c for c in entries if c not in frame.columns]
    renames: dict[str, str] = {}
    for column, entry in entries.items():
        if column not in frame.columns:
            continue
        if entry.name is None:
            out = out.drop(columns=[column])
            continue
        if entry.factor != 1.0:
            out[column] = pd.to_numeric(out[column], errors="coerce") * entry.factor
        renames[column] = entry.name
    kept = set(out.columns) - set(renames)
    clashes = sorted(set(renames.values()) & kept)
    if clashes:
        raise ModelImportError(
            "sensors file", f"maps columns to {', '.join(clashes)}, which the table already has under that name"
        )
    return out.rename(columns=renames), absent
