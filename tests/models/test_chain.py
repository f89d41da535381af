"""The chain's construction: a network detector that cannot be built for the sensors is left out, not fatal."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import pytest

from models.chain import DetectorChain
from models.streaming import StreamDetector
from twin.demo import demo_sensors
from twin.errors import ConfigError
from twin.sensors import Sensor


def test_a_factory_that_cannot_build_is_logged_and_left_out(caplog: pytest.LogCaptureFixture) -> None:
    sensors = {s.sensor_id: s for s in demo_sensors()}

    def unmodellable(_sensors: Mapping[str, Sensor]) -> StreamDetector:
        raise ConfigError("the water network has no source flow meter")

    def broken(_sensors: Mapping[str, Sensor]) -> StreamDetector:
        raise RuntimeError("a bug, not a missing part of the twin")

    with caplog.at_level(logging.WARNING, logger="models.chain"):
        chain = DetectorChain.default(sensors, extra=[unmodellable])
    assert [d.name for d in chain.detectors] == ["sensor_health", "threshold", "anomaly"]
    assert "no source flow meter" in caplog.text
    with pytest.raises(RuntimeError):  # a programming error still stops the start, loudly
        DetectorChain.default(sensors, extra=[broken])
