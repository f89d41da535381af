"""ReadingBatch: readings as columns, and back to the same Reading objects."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from twin.readings import Reading, ReadingBatch, ts_to_us, us_to_ts

_times = st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC))
_readings = st.lists(
    st.builds(
        Reading,
        st.sampled_from(["P1", "L-2", "井3"]),
        _times,
        st.floats(allow_nan=False, allow_infinity=False),
        st.sampled_from([0, 1, 2]),
        st.one_of(st.none(), st.integers(0, 2**63 - 1)),
    ),
    max_size=30,
)


@given(_times)
def test_microseconds_are_exact(ts: datetime) -> None:
    assert us_to_ts(ts_to_us(ts)) == ts


@given(_readings)
def test_columns_give_back_the_same_readings(readings: list[Reading]) -> None:
    batch = ReadingBatch.from_readings(readings)
    rebuilt = ReadingBatch(batch.sensor_ids, batch.ts_us, batch.values, batch.quality, batch.seqs)
    assert rebuilt.rows() == readings
    assert list(rebuilt) == readings
    assert len(rebuilt) == len(readings)
    if readings:
        assert rebuilt[-1] == readings[-1]
        assert rebuilt[1:] == readings[1:]


@given(_readings, st.data())
def test_rows_at_makes_the_readings_at_an_index(readings: list[Reading], data: st.DataObject) -> None:
    index = np.array(data.draw(st.lists(st.integers(0, max(len(readings) - 1, 0)), max_size=len(readings))), np.intp)
    batch = ReadingBatch.from_readings(readings)
    fresh = ReadingBatch(batch.sensor_ids, batch.ts_us, batch.values, batch.quality, batch.seqs)
    expected = [readings[i] for i in index.tolist()]
    assert fresh.rows_at(index) == expected  # made from the columns
    assert batch.rows_at(index) == expected  # taken from the rows already made


@given(_readings, _readings)
def test_concat_keeps_order_and_sequence_numbers(first: list[Reading], second: list[Reading]) -> None:
    joined = ReadingBatch.concat([ReadingBatch.from_readings(first), ReadingBatch.from_readings(second)])
    plain = ReadingBatch(joined.sensor_ids, joined.ts_us, joined.values, joined.quality, joined.seqs)
    assert plain.rows() == first + second


def test_columns_of_unequal_length_are_refused() -> None:
    with pytest.raises(ValueError, match="same length"):
        ReadingBatch(["P1"], np.zeros(2, np.int64), np.zeros(1), np.zeros(1, np.int16))


def test_a_batch_made_from_a_batch_is_itself() -> None:
    batch = ReadingBatch.from_readings([Reading("P1", datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=1), 2.0, 0)])
    assert ReadingBatch.from_readings(batch) is batch
    assert ReadingBatch.concat([]).rows() == []
