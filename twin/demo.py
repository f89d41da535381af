"""The small built-in sensor set of the demo area (吉安示范片区).

Positions are in CGCS2000 / 3-degree Gauss-Kruger CM 114E (EPSG:4547), metres, around central Ji'an.
"""

from __future__ import annotations

from twin.sensors import AlarmLimit, Direction, Grade, Network, Quantity, Sensor

DEMO_CRS = "EPSG:4547"
_ORIGIN_X_M = 598_000.0
_ORIGIN_Y_M = 3_000_500.0


def _high(iv: float, iii: float, ii: float, i: float) -> tuple[AlarmLimit, ...]:
    return tuple(
        AlarmLimit(grade, Direction.HIGH, value)
        for grade, value in ((Grade.IV, iv), (Grade.III, iii), (Grade.II, ii), (Grade.I, i))
    )


def _low(iv: float, iii: float, ii: float, i: float) -> tuple[AlarmLimit, ...]:
    return tuple(
        AlarmLimit(grade, Direction.LOW, value)
        for grade, value in ((Grade.IV, iv), (Grade.III, iii), (Grade.II, ii), (Grade.I, i))
    )


_DRAINAGE_SITES = [
    ("D-L-001", "井陂路下穿通道积水", "吉州区", 420.0, 880.0),
    ("D-L-002", "阳明路检查井 YM-12", "吉州区", 760.0, 1130.0),
    ("D-L-003", "永叔路检查井 YS-07", "吉州区", 1210.0, 640.0),
    ("D-L-004", "庐陵大道雨水井 LL-03", "青原区", 1650.0, 1420.0),
    ("D-L-005", "吉安大道泵站前池", "青原区", 1880.0, 300.0),
    ("D-L-006", "沿江路排口", "吉州区", 150.0, 1700.0),
]
_WATER_SITES = [
    ("W-P-001", "水厂出厂压力", "吉州区", 100.0, 200.0),
    ("W-P-002", "中山路管网压力", "吉州区", 640.0, 760.0),
    ("W-P-003", "文山路管网压力", "吉州区", 1020.0, 1320.0),
    ("W-P-004", "青原区末梢压力", "青原区", 1760.0, 1620.0),
    ("W-P-005", "城南加压站出口", "青原区", 1420.0, 240.0),
]
_WATER_FLOW_SITES = [
    ("W-F-001", "DMA-01 入口流量", "吉州区", 520.0, 560.0),
    ("W-F-002", "DMA-02 入口流量", "青原区", 1380.0, 1180.0),
]
_GAS_PRESSURE_SITES = [
    ("G-P-001", "中压调压站 A 出口", "吉州区", 300.0, 1000.0),
    ("G-P-002", "低压管网末端 B", "青原区", 1540.0, 860.0),
]
_GAS_METHANE_SITES = [
    ("G-M-001", "人民广场综合管廊", "吉州区", 880.0, 980.0),
    ("G-M-002", "韶山路燃气阀门井", "吉州区", 1100.0, 420.0),
    ("G-M-003", "青原商业街地下车库", "青原区", 1700.0, 1000.0),
    ("G-M-004", "沿江路电力井", "吉州区", 260.0, 1520.0),
]
_RAIN_SITES = [
    ("R-001", "吉州区气象站雨量计", "吉州区", 600.0, 1000.0),
    ("R-002", "青原区雨量计", "青原区", 1650.0, 800.0),
]


def demo_sensors() -> list[Sensor]:
    """Return the demo area's sensors: drainage levels, water pressure and flow, gas pressure and methane, rain."""
    sensors: list[Sensor] = []

    def add(
        sid: str, net: Network, qty: Quantity, name: str, district: str, dx: float, dy: float, **kw: object
    ) -> None:
        sensors.append(
            Sensor(
                sensor_id=sid,
                network=net,
                quantity=qty,
                name=name,
                asset_id=kw.pop("asset_id", None),  # type: ignore[arg-type]
                district=district,
                x_m=_ORIGIN_X_M + dx,
                y_m=_ORIGIN_Y_M + dy,
                **kw,  # type: ignore[arg-type]
            )
        )

    for sid, name, district, dx, dy in _DRAINAGE_SITES:
        add(
            sid,
            Network.DRAINAGE,
            Quantity.LEVEL,
            name,
            district,
            dx,
            dy,
            valid_min=0.0,
            valid_max=8.0,
            interval_s=60.0,
            limits=_high(0.8, 1.2, 1.6, 2.0),
        )
    for sid, name, district, dx, dy in _WATER_SITES:
        add(
            sid,
            Network.WATER,
            Quantity.PRESSURE,
            name,
            district,
            dx,
            dy,
            valid_min=0.0,
            valid_max=1000.0,
            interval_s=60.0,
            limits=_low(220.0, 180.0, 140.0, 100.0),
        )
    for sid, name, district, dx, dy in _WATER_FLOW_SITES:
        add(
            sid,
            Network.WATER,
            Quantity.FLOW,
            name,
            district,
            dx,
            dy,
            valid_min=0.0,
            valid_max=2000.0,
            interval_s=60.0,
            limits=_high(120.0, 150.0, 200.0, 300.0),
        )
    for sid, name, district, dx, dy in _GAS_PRESSURE_SITES:
        add(
            sid,
            Network.GAS,
            Quantity.PRESSURE,
            name,
            district,
            dx,
            dy,
            valid_min=0.0,
            valid_max=800.0,
            interval_s=60.0,
            limits=_low(2.6, 2.4, 2.2, 2.0),
        )
    for sid, name, district, dx, dy in _GAS_METHANE_SITES:
        add(
            sid,
            Network.GAS,
            Quantity.METHANE,
            name,
            district,
            dx,
            dy,
            valid_min=0.0,
            valid_max=100.0,
            interval_s=30.0,
            limits=_high(20.0, 35.0, 50.0, 75.0),
        )
    for sid, name, district, dx, dy in _RAIN_SITES:
        add(
            sid,
            Network.RAIN,
            Quantity.RAIN_RATE,
            name,
            district,
            dx,
            dy,
            valid_min=0.0,
            valid_max=300.0,
            interval_s=60.0,
            limits=_high(16.0, 30.0, 50.0, 70.0),
        )
    return sensors
