"""The sensors file of `lifeline detect`: columns named otherwise get their quantity, unit and network element."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from models.sensor_map import apply_sensor_map, read_sensor_map
from twin.errors import ModelImportError


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sensors.csv"
    path.write_text(text)
    return path


def test_columns_are_renamed_converted_and_dropped(tmp_path: Path) -> None:
    entries = read_sensor_map(
        _write(
            tmp_path,
            "column,quantity,unit,element\n"
            "Tank level (cm),level,cm,T1\n"
            "Inflow,flow,m3/h,PU1\n"
            "North,pressure,kPa,\n"
            "Pump 1 on,Status,,PU1\n"
            "\n"
            "Spare,ignore,,\n",
        )
    )
    frame = pd.DataFrame(
        {"Tank level (cm)": [250.0], "Inflow": [36.0], "North": [98.0665], "Pump 1 on": [1], "Spare": [7], "P_J9": [3]}
    )
    mapped, absent = apply_sensor_map(frame, entries)
    assert absent == []
    assert list(mapped.columns) == ["L_T1", "F_PU1", "P_North", "S_PU1", "P_J9"]  # undescribed columns stay
    assert mapped.iloc[0].tolist() == pytest.approx([2.5, 10.0, 10.0, 1, 3])
    assert apply_sensor_map(frame.drop(columns=["Spare"]), entries)[1] == ["Spare"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "sensors.csv:1: empty"),
        ("name,kind\nA,flow\n", "sensors.csv:1: header lacks column, quantity"),
        ("column,quantity\nA,speed\n", "sensors.csv:2 field 'quantity': quantity 'speed': expected pressure, flow"),
        ("column,quantity,unit\nA,level,inch\n", "sensors.csv:2 field 'unit': unit 'inch' for level: expected m, cm"),
        ("column,quantity,unit\nA,status,%\n", "sensors.csv:2 field 'unit': unit '%' for status: expected none"),
        ("column,quantity\nA,flow\nA,level\n", "sensors.csv:3 field 'column': column 'A' described twice"),
        ("column,quantity,unit,element\nA,flow,,PU1\nB,flow,,PU1\n", "column 'B' maps to F_PU1, as line 2 does"),
        ("column,quantity\n,flow\n", "sensors.csv:2 field 'column': empty column name"),
    ],
)
def test_a_bad_sensors_file_is_refused_with_its_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ModelImportError) as caught:
        read_sensor_map(_write(tmp_path, text))
    assert message in str(caught.value)


def test_a_name_that_clashes_with_an_undescribed_column_is_refused(tmp_path: Path) -> None:
    entries = read_sensor_map(_write(tmp_path, "column,quantity,unit,element\nA,level,,T1\n"))
    with pytest.raises(ModelImportError, match="maps columns to L_T1, which the table already has"):
        apply_sensor_map(pd.DataFrame({"A": [1.0], "L_T1": [2.0]}), entries)
