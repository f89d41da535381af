"""The health check report: one self-contained HTML page (Chinese first), charts and map as inline SVG.

No JavaScript and nothing fetched: the page prints and converts to PDF as it is (:func:`write_pdf`, through
headless Chromium when Playwright and a Chromium are installed).
"""

from __future__ import annotations

import html
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from models.healthcheck.index import BANDS, HealthIndex, Problem, diagnose, health_index
from models.healthcheck.indicators import CITY, Definitions, IndicatorValue, compute_all
from models.healthcheck.ledger import ledger
from twin.store.retention import raw_deleted_before

log = logging.getLogger(__name__)

BAND_COLOURS = {"green": "#2e9d57", "yellow": "#e3b505", "orange": "#ee7d22", "red": "#d6333a", None: "#b8bec6"}
BAND_ZH = {"green": "达标", "yellow": "关注", "orange": "预警", "red": "超标", None: "无数据"}
DISTRICT_COLOURS = ("#3b6fb6", "#8e5bb5", "#2f9c95", "#b5773b")
PROBLEM_ZH = {"open": "待治理", "treating": "治理中", "closed": "已销号", "reopened": "复查未通过"}
TASK_ZH = {"planned": "计划", "in_progress": "进行中", "done": "已完成"}


@dataclass(frozen=True, slots=True)
class PeriodResult:
    """Indicators, indices and problems of one period."""

    label: str
    start: datetime
    end: datetime
    values: tuple[IndicatorValue, ...]
    indices: Mapping[str, HealthIndex]
    problems: tuple[Problem, ...]


def evaluate(
    conn: psycopg.Connection[Any], definitions: Definitions, *, start: datetime, end: datetime, label: str
) -> PeriodResult:
    """Compute every indicator, index and problem of ``start`` … ``end``."""
    values = tuple(compute_all(conn, definitions, start=start, end=end))
    districts = sorted({v.district for v in values})
    indices = {d: health_index(definitions, values, d) for d in districts}
    return PeriodResult(label, start, end, values, indices, tuple(diagnose(definitions, values)))


def year_bounds(year: int, utc_offset_h: float = 8.0) -> tuple[datetime, datetime]:
    """Return the local calendar year *year* as aware UTC bounds."""
    offset = timedelta(hours=utc_offset_h)
    return datetime(year, 1, 1, tzinfo=UTC) - offset, datetime(year + 1, 1, 1, tzinfo=UTC) - offset


def build_report(
    conn: psycopg.Connection[Any],
    definitions: Definitions,
    *,
    start: datetime,
    end: datetime,
    title: str,
    months: bool = True,
) -> str:
    """Return the report of ``start`` … ``end`` as HTML, with the same-length period before it for comparison.

    Args:
        conn: a connection to the store's schema (with the health check tables).
        definitions: the indicator table.
        start, end: the period (aware; end excluded).
        title: the period's name in the heading, e.g. ``2026 年度``.
        months: add the city index month by month (for a period of a year or so).

    Example:
        >>> start, end = year_bounds(2026)
        >>> page = build_report(conn, load_definitions(), start=start, end=end, title="2026 年度")  # doctest: +SKIP
    """
    current = evaluate(conn, definitions, start=start, end=end, label=title)
    previous = evaluate(conn, definitions, start=start - (end - start), end=start, label="上一期")
    trend: list[tuple[str, float | None]] = []
    if months:
        offset = timedelta(hours=definitions.water_balance.utc_offset_h)
        local = start + offset
        cursor = datetime(local.year, local.month, 1, tzinfo=UTC) - offset
        while cursor < end:
            nxt_local = cursor + offset + timedelta(days=32)
            nxt = datetime(nxt_local.year, nxt_local.month, 1, tzinfo=UTC) - offset
            month = evaluate(conn, definitions, start=max(cursor, start), end=min(nxt, end), label="")
            trend.append((f"{(cursor + offset).month}月", month.indices[CITY].value))
            cursor = nxt
    cur = conn.cursor(row_factory=dict_row)
    cur.execute("SELECT sensor_id, network, district, x_m, y_m FROM sensors ORDER BY sensor_id")
    sensors = cur.fetchall()
    tasks = ledger(conn, start=start, end=end)
    deleted_before = raw_deleted_before(conn)
    touched = [
        name
        for name, begins in (("本期", start), ("上一期", previous.start))
        if deleted_before and begins < deleted_before
    ]
    raw_note = None
    if deleted_before is not None and touched:
        since = (deleted_before + timedelta(hours=definitions.water_balance.utc_offset_h)).date().isoformat()
        raw_note = (
            f"{'、'.join(touched)}的部分原始读数已按保留期删除（{since} 之前）："
            "越限时长、溢流次数、退水时间只计入保留下来的读数；其他指标取自小时汇总，不受影响。"
            f"<span class='en'>Raw readings before {since} were deleted by the retention period: hours over limits,"
            " overflow events and drain times count only the readings kept.</span>"
        )
    return _page(definitions, current, previous, trend, sensors, tasks, raw_note)


# --- page -----------------------------------------------------------------------------------------------------------

_CSS = """
body { font-family: "Noto Sans CJK SC", "Source Han Sans SC", "Microsoft YaHei", sans-serif; color: #1d2733;
       margin: 0 auto; max-width: 1040px; padding: 24px 32px; font-size: 14px; line-height: 1.5; }
h1 { font-size: 26px; margin: 0; } h2 { font-size: 19px; margin: 28px 0 8px; border-bottom: 2px solid #1d2733; }
.en { color: #6b7785; font-size: 0.85em; font-weight: normal; }
.cards { display: flex; gap: 12px; margin: 16px 0; }
.card { flex: 1; border: 1px solid #d5dbe1; border-radius: 6px; padding: 10px 14px; }
.card .big { font-size: 32px; font-weight: bold; }
.row { display: flex; gap: 16px; align-items: flex-start; }
table { border-collapse: collapse; width: 100%; font-size: 12.5px; }
th, td { border-bottom: 1px solid #e1e5ea; padding: 4px 6px; text-align: left; vertical-align: top; }
th { background: #f2f4f7; }
td.num { text-align: right; white-space: nowrap; }
td.nowrap { white-space: nowrap; }
.chip { display: inline-block; min-width: 10px; height: 10px; border-radius: 2px; margin-right: 4px; }
.note { color: #4a5562; font-size: 12.5px; }
.warn { background: #fff4d6; border-left: 4px solid #e3b505; padding: 6px 10px; font-size: 12.5px; }
section { break-inside: avoid; }
@page { size: A4; margin: 14mm; }
"""


def _e(text: object) -> str:
    return html.escape(str(text))


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "—"
    digits = 0 if abs(value) >= 100 or float(value).is_integer() else (1 if abs(value) >= 10 else 2)
    return f"{value:.{digits}f}{(' ' + unit) if unit else ''}"


def _index_band(value: float | None) -> str | None:
    if value is None:
        return None
    return "green" if value >= 90 else "yellow" if value >= 75 else "orange" if value >= 60 else "red"


def _district_name(district: str) -> str:
    return "全市" if district == CITY else district


def _page(
    definitions: Definitions,
    current: PeriodResult,
    previous: PeriodResult,
    trend: Sequence[tuple[str, float | None]],
    sensors: Sequence[Mapping[str, Any]],
    tasks: Sequence[Mapping[str, Any]],
    raw_note: str | None = None,
) -> str:
    districts = list(current.indices)
    cards = []
    for d in districts:
        now, before = current.indices[d].value, previous.indices.get(d)
        was = before.value if before else None
        delta = f"较上期 {now - was:+.1f}" if now is not None and was is not None else "上期无数据"
        colour = BAND_COLOURS[_index_band(now)]
        cards.append(
            f'<div class="card"><div>{_e(_district_name(d))} <span class="en">health index</span></div>'
            f'<div class="big" style="color:{colour}">{_fmt(now)}</div><div class="note">{_e(delta)}</div></div>'
        )
    index_chart = _bars_svg(
        [
            (_district_name(d), current.indices[d].value, previous.indices[d].value if d in previous.indices else None)
            for d in districts
        ],
        (current.label, previous.label),
    )
    map_svg = _map_svg(sensors, current.indices)
    by_key = {(v.indicator_id, v.district): v for v in current.values}
    before_key = {(v.indicator_id, v.district): v for v in previous.values}
    head = "".join(f"<th>{_e(_district_name(d))}</th>" for d in districts)
    rows = []
    for definition in definitions.indicators:
        cells = []
        for d in districts:
            v = by_key.get((definition.id, d))
            part = next(p for p in current.indices[d].parts if p.indicator_id == definition.id)
            colour = BAND_COLOURS[part.band]
            cells.append(
                f'<td class="num"><span class="chip" style="background:{colour}"></span>'
                f"{_fmt(v.value if v else None)}</td>"
            )
        last = before_key.get((definition.id, CITY))
        rows.append(
            f"<tr><td>{_e(definition.name_zh)}<br><span class='en'>{_e(definition.name_en)}</span></td>"
            f"<td>{_e(definition.unit)}</td><td class='num'>{'≤' if definition.direction == 'lower' else '≥'}"
            f" {_fmt(definition.target)}</td>{''.join(cells)}<td class='num'>{_fmt(last.value if last else None)}</td>"
            f"<td class='num'>{_fmt(round(definition.weight * 100, 2))}%</td>"
            f"<td class='note'>{_e(definition.source)}</td></tr>"
        )
    table = (
        "<table><tr><th>指标 <span class='en'>indicator</span></th><th>单位</th><th>目标</th>"
        f"{head}<th>上期全市</th><th>权重</th><th>数据来源 <span class='en'>source</span></th></tr>"
        + "".join(rows)
        + "</table>"
    )
    city_parts = [
        (definitions[p.indicator_id].name_zh, p.score, p.band) for p in current.indices[CITY].parts if p.weight > 0
    ]
    score_chart = _scores_svg(city_parts)
    trend_chart = _trend_svg(trend) if trend else ""
    problems = _problems_html(definitions, current.problems, tasks)
    legend = " ".join(
        f'<span class="chip" style="background:{BAND_COLOURS[b]}"></span>{BAND_ZH[b]}' for b in (*BANDS, None)
    )
    offset = timedelta(hours=definitions.water_balance.utc_offset_h)
    first_day, last_day = (current.start + offset).date(), (current.end + offset - timedelta(seconds=1)).date()
    period = f"{first_day} 至 {last_day}"
    generated = f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    return f"""<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8"><title>城市生命线体检报告 {_e(current.label)}</title>
<style>{_CSS}</style></head><body>
<h1>城市生命线体检报告 · {_e(current.label)}</h1>
<div class="en">Lifeline health check report · {_e(period)} (local time) · generated {generated}</div>
{f'<p class="warn">{raw_note}</p>' if raw_note else ""}
<div class="cards">{"".join(cards)}</div>
<section><h2>一、健康指数 <span class="en">Health index by district, this period and the one before</span></h2>
<div class="row"><div>{index_chart}</div><div>{map_svg}</div></div>
<p class="note">健康指数 0–100：各指标按色带评分（达标 100，关注 75，预警 50，超标 0，之间线性），
按指标表中的权重加权平均；无数据的指标不参与计算。
<span class="en">Index: indicators scored from their bands, weighted as the table says;
indicators without a value are left out and the weights renormalised.</span></p></section>
<section><h2>二、指标一览 <span class="en">Indicators</span></h2><p class="note">{legend}</p>{table}</section>
<section><h2>三、全市指标得分与月度趋势 <span class="en">City scores and the index month by month</span></h2>
<div class="row"><div>{score_chart}</div><div>{trend_chart}</div></div></section>
<section><h2>四、诊断问题与治理台账 <span class="en">Problems found and the treatment ledger</span></h2>
{problems}</section>
<section><h2>五、方法说明 <span class="en">What is measured and what is estimated</span></h2><ul class="note">
<li>漏损率（水量平衡）为估算：供水量取水厂出厂流量计小时均值（扣除进入水池的流量），售水量取自营业收费数据；差值含真实漏失与表观漏损。
<span class="en">Leakage from the water balance is an estimate: metered input less billed use;
it includes apparent losses.</span></li>
<li>夜间最小流量法为校核值，依赖指标表中设定的合法夜间用水量与昼夜系数。
<span class="en">The minimum-night-flow rate is a cross-check resting on two assumed figures in the table.</span></li>
<li>积水点、报警、越限时长与响应时间按监测数据和报警记录统计，覆盖范围以已布设传感器为限。
<span class="en">Counts and durations cover only what the sensors and detectors see.</span></li>
</ul></section>
</body></html>
"""


def _problems_html(definitions: Definitions, problems: Sequence[Problem], tasks: Sequence[Mapping[str, Any]]) -> str:
    if not problems:
        return "<p>本期无超出达标色带的指标。 <span class='en'>No indicator outside its green band.</span></p>"
    ledger_by_key = {(t["indicator_id"], t["district"]): t for t in tasks}
    rows = []
    for p in problems:
        definition = definitions[p.indicator_id]
        ev = p.evidence
        evidence = []
        if ev.sensors:
            shown = ", ".join(ev.sensors[:6]) + (f" 等 {len(ev.sensors)} 个" if len(ev.sensors) > 6 else "")
            evidence.append(f"传感器 {shown}")
        if ev.alerts:
            evidence.append(f"报警 {len(ev.alerts)} 条（#{ev.alerts[0]}…）")
        if ev.periods:
            first = ev.periods[0][0] + timedelta(hours=definitions.water_balance.utc_offset_h)
            evidence.append(f"首次 {first:%m-%d %H:%M}")
        entry = ledger_by_key.get((p.indicator_id, p.district))
        treatment = "未建台账"
        if entry is not None:
            task_text = "; ".join(
                f"{t['title']}（{t['owner']}，{t['deadline']}，{TASK_ZH.get(t['status'], t['status'])}）"
                for t in entry["tasks"]
            )
            treatment = f"{PROBLEM_ZH.get(entry['status'], entry['status'])}：{task_text or '待派任务'}"
            if entry["rechecks"]:
                last = entry["rechecks"][-1]
                treatment += f"；复查 {_fmt(last['after_value'])} → {PROBLEM_ZH.get(last['outcome'], last['outcome'])}"
        rows.append(
            f"<tr><td><span class='chip' style='background:{BAND_COLOURS[p.band]}'></span>{_e(definition.name_zh)}</td>"
            f"<td class='nowrap'>{_e(_district_name(p.district))}</td>"
            f"<td class='num'>{_fmt(p.value, definition.unit)}</td>"
            f"<td class='num'>{_fmt(p.target, definition.unit)}</td><td class='note'>{_e('；'.join(evidence))}</td>"
            f"<td class='note'>{_e(treatment)}</td></tr>"
        )
    return (
        "<table><tr><th>问题指标</th><th>区域</th><th>数值</th><th>目标</th><th>证据 <span class='en'>evidence</span>"
        "</th><th>治理与复查 <span class='en'>treatment, re-check</span></th></tr>" + "".join(rows) + "</table>"
    )


# --- charts ---------------------------------------------------------------------------------------------------------


def _bars_svg(groups: Sequence[tuple[str, float | None, float | None]], labels: tuple[str, str]) -> str:
    """Grouped vertical bars 0–100: each group this period (solid) and the one before (pale)."""
    w, h, left, bottom, top = 420, 260, 36, 36, 24
    plot_h = h - bottom - top
    slot = (w - left - 10) / max(len(groups), 1)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-size="12">']
    for tick in (0, 25, 50, 75, 100):
        y = top + plot_h * (1 - tick / 100)
        parts.append(f'<line x1="{left}" x2="{w - 10}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e1e5ea"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#6b7785">{tick}</text>')
    for k, (name, now, before) in enumerate(groups):
        x0 = left + k * slot + slot * 0.15
        bw = slot * 0.32
        for j, (value, fill) in enumerate(((now, BAND_COLOURS[_index_band(now)]), (before, "#c9d1da"))):
            if value is None:
                continue
            bh = plot_h * value / 100
            x = x0 + j * (bw + 4)
            parts.append(
                f'<rect x="{x:.1f}" y="{top + plot_h - bh:.1f}" width="{bw:.1f}" height="{bh:.1f}" fill="{fill}"/>'
            )
            parts.append(
                f'<text x="{x + bw / 2:.1f}" y="{top + plot_h - bh - 4:.1f}" text-anchor="middle">{value:.0f}</text>'
            )
        parts.append(f'<text x="{x0 + bw + 2:.1f}" y="{h - bottom + 16}" text-anchor="middle">{_e(name)}</text>')
    parts.append(
        f'<text x="{left}" y="14" fill="#1d2733">■ {_e(labels[0])}</text>'
        f'<text x="{left + 150}" y="14" fill="#8d99a6">■ {_e(labels[1])}</text></svg>'
    )
    return "".join(parts)


def _scores_svg(parts: Sequence[tuple[str, float | None, str | None]]) -> str:
    """Horizontal bars: each indicator's city score 0–100, coloured by band."""
    row, label_w, bar_w = 22, 190, 220
    h = row * len(parts) + 10
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + bar_w + 40}" height="{h}" font-size="12">']
    for k, (name, value, colour_band) in enumerate(parts):
        y = 4 + k * row
        out.append(f'<text x="{label_w - 6}" y="{y + 14}" text-anchor="end">{_e(name)}</text>')
        out.append(f'<rect x="{label_w}" y="{y + 3}" width="{bar_w}" height="14" fill="#eef1f4"/>')
        if value is not None:
            out.append(
                f'<rect x="{label_w}" y="{y + 3}" width="{bar_w * value / 100:.1f}" height="14" '
                f'fill="{BAND_COLOURS[colour_band]}"/>'
            )
        out.append(f'<text x="{label_w + bar_w + 6}" y="{y + 14}">{_fmt(value)}</text>')
    out.append("</svg>")
    return "".join(out)


def _trend_svg(points: Sequence[tuple[str, float | None]]) -> str:
    """The city index month by month: a line 0–100 with a dot per month that has a value."""
    w, h, left, bottom, top = 360, 220, 32, 28, 16
    plot_w, plot_h = w - left - 10, h - bottom - top
    step = plot_w / max(len(points) - 1, 1)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-size="11">']
    for tick in (0, 50, 100):
        y = top + plot_h * (1 - tick / 100)
        out.append(f'<line x1="{left}" x2="{w - 10}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e1e5ea"/>')
        out.append(f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end" fill="#6b7785">{tick}</text>')
    coords = []
    for k, (label, value) in enumerate(points):
        x = left + k * step
        out.append(f'<text x="{x:.1f}" y="{h - 8}" text-anchor="middle" fill="#6b7785">{_e(label)}</text>')
        if value is not None:
            y = top + plot_h * (1 - value / 100)
            coords.append(f"{x:.1f},{y:.1f}")
            out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{BAND_COLOURS[_index_band(value)]}"/>')
    if len(coords) > 1:
        out.insert(1, f'<polyline points="{" ".join(coords)}" fill="none" stroke="#3b6fb6" stroke-width="2"/>')
    out.append("</svg>")
    return "".join(out)


def _hull(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Convex hull (monotone chain), counter-clockwise."""
    pts = sorted(set(points))
    if len(pts) < 3:
        return pts

    def cross(o: tuple[float, float], a: tuple[float, float], b: tuple[float, float]) -> float:
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower: list[tuple[float, float]] = []
    upper: list[tuple[float, float]] = []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    return lower[:-1] + upper[:-1]


def _map_svg(sensors: Sequence[Mapping[str, Any]], indices: Mapping[str, HealthIndex]) -> str:
    """The districts (hull of their sensors, filled by the district's index band) and every sensor as a dot."""
    w, h, pad = 480, 300, 24
    placed = [s for s in sensors if s["x_m"] or s["y_m"]]
    if not placed:
        return "<p class='note'>无传感器坐标，无法绘制分区图。</p>"
    xs = [float(s["x_m"]) for s in placed]
    ys = [float(s["y_m"]) for s in placed]
    span = max(max(xs) - min(xs), max(ys) - min(ys), 1.0)
    scale = min((w - 2 * pad) / max(max(xs) - min(xs), 1.0), (h - 2 * pad - 20) / max(max(ys) - min(ys), 1.0))

    def at(x: float, y: float) -> tuple[float, float]:
        return pad + (x - min(xs)) * scale, h - pad - (y - min(ys)) * scale

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-size="12">']
    out.append(f'<rect width="{w}" height="{h}" fill="#f7f9fb" stroke="#d5dbe1"/>')
    districts = sorted({str(s["district"]) for s in placed if s["district"]})
    labels: list[tuple[float, float]] = []
    texts: list[str] = []
    for k, d in enumerate(districts):
        hull = _hull([at(float(s["x_m"]), float(s["y_m"])) for s in placed if s["district"] == d])
        value = indices[d].value if d in indices else None
        fill = BAND_COLOURS[_index_band(value)]
        if len(hull) >= 3:
            pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in hull)
            out.append(
                f'<polygon points="{pts}" fill="{fill}" fill-opacity="0.22" stroke="{DISTRICT_COLOURS[k % 4]}" '
                f'stroke-width="2" stroke-linejoin="round"/>'
            )
        # The label sits at the district's sensors' mean, moved down while it would cover another district's.
        own = [at(float(s["x_m"]), float(s["y_m"])) for s in placed if s["district"] == d]
        cx = sum(x for x, _ in own) / len(own)
        cy = sum(y for _, y in own) / len(own)
        while any(abs(lx - cx) < 110 and abs(ly - cy) < 40 for lx, ly in labels):
            cy += 42
        labels.append((cx, cy))
        halo = 'stroke="#fff" stroke-width="3" paint-order="stroke"'
        texts.append(
            f'<text x="{cx:.1f}" y="{cy:.1f}" text-anchor="middle" font-size="15" font-weight="bold" {halo}>{_e(d)}'
            f'</text><text x="{cx:.1f}" y="{cy + 18:.1f}" text-anchor="middle" {halo}>指数 {_fmt(value)}</text>'
        )
    marks = {"drainage": "#3b6fb6", "water": "#2f9c95", "gas": "#d6333a", "rain": "#8d99a6"}
    for s in placed:
        x, y = at(float(s["x_m"]), float(s["y_m"]))
        out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{marks.get(str(s["network"]), "#555")}"/>')
    out.extend(texts)  # over the sensors' dots
    legend_x = pad
    for name, zh in (("drainage", "排水"), ("water", "供水"), ("gas", "燃气"), ("rain", "雨量")):
        out.append(f'<circle cx="{legend_x}" cy="{h - 10}" r="4" fill="{marks[name]}"/>')
        out.append(f'<text x="{legend_x + 8}" y="{h - 6}">{zh}</text>')
        legend_x += 52
    bar_m = 10 ** len(str(int(span / 4))) / 10 if span > 10 else 1.0
    bar_px = bar_m * scale
    out.append(
        f'<line x1="{w - pad - bar_px:.1f}" x2="{w - pad}" y1="{h - 10}" y2="{h - 10}" stroke="#1d2733" '
        'stroke-width="2"/>'
        f'<text x="{w - pad}" y="{h - 14}" text-anchor="end">{_fmt(bar_m)} m</text></svg>'
    )
    return "".join(out)


# --- PDF ------------------------------------------------------------------------------------------------------------


def write_pdf(html_path: Path, pdf_path: Path, *, chromium: str = "/usr/bin/chromium", browser: Any = None) -> bool:
    """Print *html_path* to *pdf_path* with headless Chromium; return False when Playwright or Chromium is missing.

    Args:
        html_path: the report page.
        pdf_path: where the A4 PDF goes.
        chromium: the Chromium executable to launch.
        browser: a Playwright browser already running (its own is launched otherwise).
    """
    return _with_browser(lambda b: _print(b, html_path, pdf_path), chromium=chromium, browser=browser)


def write_pngs(
    html_path: Path,
    *,
    chromium: str = "/usr/bin/chromium",
    browser: Any = None,
    width_px: int = 1100,
    page_height_px: int = 1400,
) -> list[Path]:
    """Render *html_path* as PNG page images beside it (``<stem>_p1.png`` …); return them ([] without Chromium).

    Args:
        html_path: the report page.
        chromium: the Chromium executable to launch.
        browser: a Playwright browser already running (its own is launched otherwise).
        width_px, page_height_px: the size of each image, pixels (the last one is as tall as what is left).
    """
    shots: list[Path] = []

    def render(b: Any) -> None:
        page = b.new_page(viewport={"width": width_px, "height": page_height_px})
        try:
            page.goto(html_path.resolve().as_uri())
            height = int(page.evaluate("document.documentElement.scrollHeight"))
            for k, top in enumerate(range(0, height, page_height_px)):
                path = html_path.with_name(f"{html_path.stem}_p{k + 1}.png")
                clip = {"x": 0, "y": top, "width": width_px, "height": min(page_height_px, height - top)}
                page.screenshot(path=str(path), clip=clip, full_page=True)
                shots.append(path)
        finally:
            page.close()

    return shots if _with_browser(render, chromium=chromium, browser=browser) else []


def _with_browser(work: Any, *, chromium: str, browser: Any) -> bool:
    """Run *work(browser)* on *browser*, or on a headless Chromium launched for it; False when there is none."""
    if browser is not None:
        work(browser)
        return True
    try:
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import sync_playwright
    except ImportError:
        log.warning("no PDF or images: Playwright is not installed")
        return False
    if not Path(chromium).exists():
        log.warning("no PDF or images: no Chromium at %s", chromium)
        return False
    try:
        with sync_playwright() as pw:
            launched = pw.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
            try:
                work(launched)
            finally:
                launched.close()
    except PlaywrightError as exc:
        log.warning("no PDF or images: Chromium failed: %s", exc)
        return False
    return True


def _print(browser: Any, html_path: Path, pdf_path: Path) -> None:
    page = browser.new_page()
    try:
        page.goto(html_path.resolve().as_uri())
        page.pdf(path=str(pdf_path), format="A4", print_background=True)
    finally:
        page.close()
