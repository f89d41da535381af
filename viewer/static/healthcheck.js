"use strict";
// The health check page (城市体检): index, indicators with bands, charts, district map, problems and the ledger.
// The same figures as `lifeline report`, from /api/healthcheck. Chinese first, English on the switch.

const I18N = {
  zh: {
    title: "城市生命线体检", subtitle: "指标 · 健康指数 · 诊断 · 治理台账 · 复查", year: "年度",
    backToMonitor: "监测总览", loading: "正在计算体检指标…", indexByDistrict: "健康指数（本期 / 上期）",
    districtMap: "分区健康指数", indicators: "指标一览", cityScores: "全市指标得分", monthly: "健康指数月度趋势",
    problems: "诊断问题与治理台账", diagnose: "问题入台账", city: "全市", index: "健康指数", vsPrev: "较上期",
    noPrev: "上期无数据", colIndicator: "指标", colUnit: "单位", colTarget: "目标", colPrev: "上期全市",
    colWeight: "权重", colSource: "数据来源", green: "达标", yellow: "关注", orange: "预警", red: "超标",
    none: "无数据", thisPeriod: "本期", prevPeriod: "上期", noProblems: "本期无超出达标色带的指标。",
    sensors: "传感器", alerts: "报警", first: "首次", notInLedger: "未入台账", addTask: "派治理任务",
    recheck: "复查", askTitle: "治理任务内容", askOwner: "责任单位", askDeadline: "完成期限（YYYY-MM-DD）",
    askFrom: "复查起始日（YYYY-MM-DD）", askTo: "复查截止日（YYYY-MM-DD）", failed: "操作失败",
    st_open: "待治理", st_treating: "治理中", st_closed: "已销号", st_reopened: "复查未通过",
    ts_planned: "计划", ts_in_progress: "进行中", ts_done: "完成", recheckResult: "复查",
    signIn: "请先在监测总览页登录。", lang: "EN", drainage: "排水", water: "供水", gas: "燃气", rain: "雨量",
    rawThis: "本期", rawPrev: "上期",
    rawNote: "{periods}的部分原始读数已按保留期删除（{date} 之前）：超限时长、溢流次数、退水时间只计入保留下来的读数；其他指标取自小时汇总，不受影响。",
    note: "健康指数 0–100：各指标按色带评分（达标 100，关注 75，预警 50，超标 0，之间线性），按指标表中的权重加权平均；无数据的指标不参与计算。漏损率为估算值（水量平衡）。",
  },
  en: {
    title: "City lifeline health check", subtitle: "Indicators · health index · diagnosis · treatment ledger · re-check",
    year: "Year", backToMonitor: "Monitor", loading: "Computing the indicators…",
    indexByDistrict: "Health index (this period / the one before)", districtMap: "Health index by district",
    indicators: "Indicators", cityScores: "City scores by indicator", monthly: "Health index month by month",
    problems: "Problems and the treatment ledger", diagnose: "Record problems in the ledger", city: "City",
    index: "Health index", vsPrev: "vs before", noPrev: "no earlier data", colIndicator: "Indicator",
    colUnit: "Unit", colTarget: "Target", colPrev: "City before", colWeight: "Weight", colSource: "Source",
    green: "on target", yellow: "watch", orange: "warning", red: "off target", none: "no data",
    thisPeriod: "this period", prevPeriod: "before", noProblems: "No indicator outside its green band.",
    sensors: "sensors", alerts: "alerts", first: "first", notInLedger: "not in the ledger", addTask: "Add task",
    recheck: "Re-check", askTitle: "Treatment task", askOwner: "Responsible unit", askDeadline: "Deadline (YYYY-MM-DD)",
    askFrom: "Re-check from (YYYY-MM-DD)", askTo: "Re-check to (YYYY-MM-DD)", failed: "Failed",
    st_open: "open", st_treating: "treating", st_closed: "closed", st_reopened: "reopened",
    ts_planned: "planned", ts_in_progress: "in progress", ts_done: "done", recheckResult: "re-check",
    signIn: "Sign in on the monitor page first.", lang: "中文", drainage: "Drainage", water: "Water", gas: "Gas",
    rain: "Rain",
    rawThis: "this period", rawPrev: "the period before",
    rawNote: "Raw readings before {date} were deleted by the retention period ({periods}): hours over limits, overflow events and drain times count only the readings kept; the other indicators come from the hourly rollups and are complete.",
    note: "Health index 0–100: each indicator scored from its bands (100 on target, 75 watch, 50 warning, 0 off target, linear between) and weighted as the indicator table says; indicators without a value are left out. The leakage rate is an estimate (water balance).",
  },
};
const BAND_COLOUR = { green: "#2e9d57", yellow: "#e3b505", orange: "#ee7d22", red: "#d6333a", null: "#6b7785" };
const NET_COLOUR = { drainage: "#26c6da", water: "#42a5f5", gas: "#ffb300", rain: "#9ccc65" };
const LEDGER_ROLES = ["operator", "admin"];

const state = { lang: localStorage.getItem("lifeline.lang") || "zh", data: null, trend: null, ledger: [],
  sensors: [], user: null, year: null };
const t = (k) => (I18N[state.lang] && I18N[state.lang][k]) || I18N.zh[k] || k;
const $ = (s) => document.querySelector(s);
const esc = (text) => String(text).replace(/[&<>"']/g, (c) =>
  ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
const districtName = (d) => (d === "" ? t("city") : d);
const nameOf = (ind) => (state.lang === "zh" ? ind.name_zh : ind.name_en);
const indexBand = (v) => (v === null || v === undefined ? null : v >= 90 ? "green" : v >= 75 ? "yellow" : v >= 60 ? "orange" : "red");

function fmt(v, unit) {
  if (v === null || v === undefined) return "—";
  const digits = Math.abs(v) >= 100 || Number.isInteger(v) ? 0 : Math.abs(v) >= 10 ? 1 : 2;
  return v.toFixed(digits) + (unit ? " " + unit : "");
}

async function getJSON(url) {
  const res = await fetch(url);
  if (!res.ok) {
    let detail = res.statusText;
    try { detail = (await res.json()).detail; } catch (e) { /* not JSON */ }
    const err = new Error(`${url}: ${detail}`); err.status = res.status; throw err;
  }
  return res.json();
}

async function send(method, url, body) {
  const res = await fetch(url, { method, headers: { "Content-Type": "application/json" },
    body: body ? JSON.stringify(body) : undefined });
  if (!res.ok) {
    let detail = res.statusText;
    try { detail = JSON.stringify((await res.json()).detail); } catch (e) { /* not JSON */ }
    alert(`${t("failed")}: ${detail}`);
    return null;
  }
  return res.json();
}

function applyLang() {
  document.documentElement.lang = state.lang === "zh" ? "zh-CN" : "en";
  document.querySelectorAll("[data-i18n]").forEach((el) => { el.textContent = t(el.dataset.i18n); });
  $("#lang").textContent = t("lang");
  render();
}

function render() {
  if (!state.data) return;
  renderRawNote(); renderCards(); renderBars(); renderMap(); renderTable(); renderScores(); renderTrend(); renderProblems();
}

function renderRawNote() {
  // Raw readings deleted by retention within this period or the one before: say which figures that touches.
  const d = state.data, el = $("#hc-raw-note");
  const which = [];
  if (d.period.raw_incomplete) which.push(t("rawThis"));
  if (d.previous_period.raw_incomplete) which.push(t("rawPrev"));
  el.hidden = !which.length;
  if (!which.length) return;
  const when = new Date(d.raw_readings_deleted_before).toLocaleDateString(state.lang === "zh" ? "zh-CN" : "en-GB");
  el.textContent = t("rawNote").replace("{periods}", which.join(state.lang === "zh" ? "、" : ", ")).replace("{date}", when);
}

function renderCards() {
  const d = state.data;
  $("#hc-cards").innerHTML = d.districts.map((k) => {
    const i = d.index[k];
    const delta = i.value !== null && i.previous !== null
      ? `${t("vsPrev")} ${(i.value - i.previous >= 0 ? "+" : "")}${(i.value - i.previous).toFixed(1)}` : t("noPrev");
    const colour = BAND_COLOUR[indexBand(i.value)];
    return `<div class="hc-card" data-district="${esc(k)}" style="border-left-color:${colour}">
      <div>${esc(districtName(k))} · ${t("index")}</div>
      <div class="big" style="color:${colour}">${fmt(i.value)}</div><div class="delta">${esc(delta)}</div></div>`;
  }).join("");
}

function renderBars() {
  const d = state.data, W = 460, H = 260, L = 40, B = 34, T = 30, plotH = H - B - T;
  const slot = (W - L - 10) / Math.max(d.districts.length, 1);
  let s = "";
  for (const tick of [0, 25, 50, 75, 100]) {
    const y = T + plotH * (1 - tick / 100);
    s += `<line x1="${L}" x2="${W - 10}" y1="${y}" y2="${y}" stroke="#16304d"/>
      <text x="${L - 6}" y="${y + 4}" fill="#8aa3bd" font-size="12" text-anchor="end">${tick}</text>`;
  }
  d.districts.forEach((k, n) => {
    const i = d.index[k], x0 = L + n * slot + slot * 0.18, bw = slot * 0.3;
    [[i.value, BAND_COLOUR[indexBand(i.value)]], [i.previous, "#5a6b7d"]].forEach(([v, fill], j) => {
      if (v === null || v === undefined) return;
      const h = plotH * v / 100, x = x0 + j * (bw + 4);
      s += `<rect x="${x}" y="${T + plotH - h}" width="${bw}" height="${h}" fill="${fill}"/>
        <text x="${x + bw / 2}" y="${T + plotH - h - 4}" fill="#dce8f5" font-size="12" text-anchor="middle">${v.toFixed(0)}</text>`;
    });
    s += `<text x="${x0 + bw + 2}" y="${H - 12}" fill="#dce8f5" font-size="13" text-anchor="middle">${esc(districtName(k))}</text>`;
  });
  s += `<rect x="${L}" y="8" width="10" height="10" fill="#2e9d57"/><text x="${L + 14}" y="17" fill="#dce8f5" font-size="12">${t("thisPeriod")}</text>
    <rect x="${L + 90}" y="8" width="10" height="10" fill="#5a6b7d"/><text x="${L + 104}" y="17" fill="#dce8f5" font-size="12">${t("prevPeriod")}</text>`;
  $("#hc-bars").innerHTML = s;
}

function hull(points) {
  const pts = [...new Map(points.map((p) => [p.join(","), p])).values()].sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  if (pts.length < 3) return pts;
  const cross = (o, a, b) => (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0]);
  const lower = [], upper = [];
  for (const p of pts) { while (lower.length >= 2 && cross(lower[lower.length - 2], lower[lower.length - 1], p) <= 0) lower.pop(); lower.push(p); }
  for (const p of pts.slice().reverse()) { while (upper.length >= 2 && cross(upper[upper.length - 2], upper[upper.length - 1], p) <= 0) upper.pop(); upper.push(p); }
  return lower.slice(0, -1).concat(upper.slice(0, -1));
}

function renderMap() {
  const W = 520, H = 300, P = 24;
  const placed = state.sensors.filter((s) => s.x_m || s.y_m);
  if (!placed.length) { $("#hc-map").innerHTML = `<text x="260" y="150" fill="#8aa3bd" text-anchor="middle">${t("none")}</text>`; return; }
  const xs = placed.map((s) => s.x_m), ys = placed.map((s) => s.y_m);
  const minX = Math.min(...xs), minY = Math.min(...ys);
  const k = Math.min((W - 2 * P) / Math.max(Math.max(...xs) - minX, 1), (H - 2 * P - 20) / Math.max(Math.max(...ys) - minY, 1));
  const at = (x, y) => [P + (x - minX) * k, H - P - 14 - (y - minY) * k];
  let s = "";
  const districts = [...new Set(placed.map((x) => x.district).filter(Boolean))].sort();
  const labels = [];
  for (const d of districts) {
    const h = hull(placed.filter((x) => x.district === d).map((x) => at(x.x_m, x.y_m)));
    const v = state.data.index[d] ? state.data.index[d].value : null;
    if (h.length >= 3) {
      s += `<polygon points="${h.map((p) => p.join(",")).join(" ")}" fill="${BAND_COLOUR[indexBand(v)]}" fill-opacity="0.3"
        stroke="${BAND_COLOUR[indexBand(v)]}" stroke-width="2" data-district="${esc(d)}"/>`;
    }
    // The label sits at the district's sensors' mean, moved down while it would cover another district's.
    const own = placed.filter((x) => x.district === d).map((x) => at(x.x_m, x.y_m));
    const cx = own.reduce((a, p) => a + p[0], 0) / own.length;
    let cy = own.reduce((a, p) => a + p[1], 0) / own.length;
    while (labels.some((l) => Math.abs(l.x - cx) < 130 && Math.abs(l.y - cy) < 24)) cy += 26;
    labels.push({ x: cx, y: cy, html: `<text x="${cx}" y="${cy}" fill="#fff" font-size="16" font-weight="bold"
      text-anchor="middle" stroke="#0d1d30" stroke-width="3" paint-order="stroke">${esc(d)} ${fmt(v)}</text>` });
  }
  const r = placed.length > 100 ? 1.6 : 3.5;
  for (const x of placed) {
    const [px, py] = at(x.x_m, x.y_m);
    s += `<circle cx="${px.toFixed(1)}" cy="${py.toFixed(1)}" r="${r}" fill="${NET_COLOUR[x.network] || "#999"}"/>`;
  }
  let lx = P;
  for (const net of ["drainage", "water", "gas", "rain"]) {
    s += `<circle cx="${lx}" cy="${H - 10}" r="4" fill="${NET_COLOUR[net]}"/><text x="${lx + 8}" y="${H - 6}" fill="#dce8f5" font-size="12">${t(net)}</text>`;
    lx += state.lang === "zh" ? 56 : 80;
  }
  $("#hc-map").innerHTML = s + labels.map((l) => l.html).join("");
}

function renderTable() {
  const d = state.data;
  const head = `<thead><tr><th>${t("colIndicator")}</th><th>${t("colUnit")}</th><th>${t("colTarget")}</th>`
    + d.districts.map((k) => `<th>${esc(districtName(k))}</th>`).join("")
    + `<th>${t("colPrev")}</th><th>${t("colWeight")}</th><th>${t("colSource")}</th></tr></thead>`;
  const rows = d.indicators.map((ind) => {
    const cells = d.districts.map((k) => {
      const v = ind.values[k];
      const band = v ? v.band : null;
      return `<td class="num" data-band="${band}"><span class="chip-band" style="background:${BAND_COLOUR[band]}"></span>${fmt(v ? v.value : null)}</td>`;
    }).join("");
    const prev = ind.values[""] ? ind.values[""].previous : null;
    const other = state.lang === "zh" ? ind.name_en : ind.name_zh;
    return `<tr data-indicator="${esc(ind.id)}"><td>${esc(nameOf(ind))}<span class="en">${esc(other)}</span></td>
      <td>${esc(ind.unit)}</td><td class="num">${ind.direction === "lower" ? "≤" : "≥"} ${fmt(ind.target)}</td>${cells}
      <td class="num">${fmt(prev)}</td><td class="num">${(ind.weight * 100).toFixed(0)}%</td>
      <td class="src">${esc(ind.source)}</td></tr>`;
  }).join("");
  $("#hc-table").innerHTML = head + `<tbody>${rows}</tbody>`;
  $("#hc-legend").innerHTML = ["green", "yellow", "orange", "red", null].map((b) =>
    `<span><span class="chip-band" style="background:${BAND_COLOUR[b]}"></span>${t(b || "none")}</span>`).join("");
}

function renderScores() {
  const parts = state.data.indicators.filter((i) => i.weight > 0);
  const row = 22, labelW = 230, barW = 230, H = row * parts.length + 12;
  let s = "";
  parts.forEach((ind, n) => {
    const v = ind.values[""], y = 6 + n * row, sc = v ? v.score : null;
    s += `<text x="${labelW - 6}" y="${y + 14}" fill="#dce8f5" font-size="12" text-anchor="end">${esc(nameOf(ind).slice(0, 24))}</text>
      <rect x="${labelW}" y="${y + 3}" width="${barW}" height="14" fill="#16304d"/>`;
    if (sc !== null) s += `<rect x="${labelW}" y="${y + 3}" width="${barW * sc / 100}" height="14" fill="${BAND_COLOUR[v.band]}"/>`;
    s += `<text x="${labelW + barW + 6}" y="${y + 14}" fill="#dce8f5" font-size="12">${fmt(sc)}</text>`;
  });
  const svg = $("#hc-scores");
  svg.setAttribute("viewBox", `0 0 520 ${H}`);
  svg.innerHTML = s;
}

function renderTrend() {
  const W = 460, H = 260, L = 36, B = 30, T = 24, plotW = W - L - 14, plotH = H - B - T;
  let s = "";
  for (const tick of [0, 25, 50, 75, 100]) {
    const y = T + plotH * (1 - tick / 100);
    s += `<line x1="${L}" x2="${W - 14}" y1="${y}" y2="${y}" stroke="#16304d"/>
      <text x="${L - 5}" y="${y + 4}" fill="#8aa3bd" font-size="11" text-anchor="end">${tick}</text>`;
  }
  if (!state.trend) { $("#hc-trend").innerHTML = s + `<text x="${W / 2}" y="${H / 2}" fill="#8aa3bd" text-anchor="middle">${t("loading")}</text>`; return; }
  const step = plotW / 11;
  state.trend.months.forEach((m, n) => {
    s += `<text x="${L + n * step}" y="${H - 10}" fill="#8aa3bd" font-size="11" text-anchor="middle">${state.lang === "zh" ? m.month + "月" : m.month}</text>`;
  });
  const lines = [["", "#42a5f5"], ...state.data.districts.filter((d) => d).map((d, n) => [d, ["#ab47bc", "#26a69a", "#ffa726"][n % 3]])];
  lines.forEach(([d, colour], n) => {
    const pts = state.trend.months.map((m, k) => [L + k * step, m.index[d]]).filter((p) => p[1] !== null && p[1] !== undefined)
      .map(([x, v]) => [x, T + plotH * (1 - v / 100)]);
    if (pts.length > 1) s += `<polyline points="${pts.map((p) => p.join(",")).join(" ")}" fill="none" stroke="${colour}" stroke-width="${d ? 1.5 : 2.5}"/>`;
    s += pts.map(([x, y]) => `<circle cx="${x}" cy="${y}" r="${d ? 2 : 3}" fill="${colour}"/>`).join("");
    s += `<rect x="${L + 8 + n * 90}" y="6" width="10" height="3" fill="${colour}"/><text x="${L + 22 + n * 90}" y="12" fill="#dce8f5" font-size="11">${esc(districtName(d))}</text>`;
  });
  $("#hc-trend").innerHTML = s;
}

function evidenceText(ev) {
  const parts = [];
  if (ev.sensors.length) parts.push(`${t("sensors")} ${ev.sensors.slice(0, 6).join(", ")}${ev.sensors.length > 6 ? ` … (${ev.sensors.length})` : ""}`);
  if (ev.alerts.length) parts.push(`${t("alerts")} ${ev.alerts.length} (#${ev.alerts.slice(0, 3).join(", #")}${ev.alerts.length > 3 ? " …" : ""})`);
  if (ev.periods.length) parts.push(`${t("first")} ${new Date(ev.periods[0][0]).toLocaleString(state.lang === "zh" ? "zh-CN" : "en-GB", { hour12: false })}`);
  return parts.join(" · ");
}

function renderProblems() {
  const d = state.data, byId = new Map(d.indicators.map((i) => [i.id, i]));
  const mayWrite = state.user && LEDGER_ROLES.includes(state.user.role);
  const entries = new Map(state.ledger.map((e) => [`${e.indicator_id}|${e.district}`, e]));
  $("#hc-diagnose").hidden = !mayWrite || !d.problems.length || d.problems.every((p) => entries.has(`${p.indicator_id}|${p.district}`));
  if (!d.problems.length) { $("#hc-problems").innerHTML = `<p>${t("noProblems")}</p>`; return; }
  $("#hc-problems").innerHTML = d.problems.map((p) => {
    const ind = byId.get(p.indicator_id), entry = entries.get(`${p.indicator_id}|${p.district}`);
    let ledgerHtml = `<div class="ledger">${t("notInLedger")}</div>`;
    if (entry) {
      const tasks = entry.tasks.map((task) => `<div class="task" data-task="${task.id}"><span>${esc(task.title)}</span>
        <span>· ${esc(task.owner)} · ${esc(task.deadline)}</span>
        ${mayWrite ? `<select data-task-status="${task.id}">${["planned", "in_progress", "done"].map((st) =>
          `<option value="${st}" ${st === task.status ? "selected" : ""}>${t("ts_" + st)}</option>`).join("")}</select>`
          : `<span class="hc-status">${t("ts_" + task.status)}</span>`}</div>`).join("");
      const last = entry.rechecks.length ? entry.rechecks[entry.rechecks.length - 1] : null;
      ledgerHtml = `<div class="ledger"><span class="hc-status st-${entry.status}">${t("st_" + entry.status)}</span>
        ${last ? ` ${t("recheckResult")} ${fmt(last.after_value, ind.unit)} → ${t("st_" + last.outcome)}` : ""}
        ${mayWrite ? ` <button type="button" data-add-task="${entry.id}">${t("addTask")}</button>
          <button type="button" data-recheck="${entry.id}">${t("recheck")}</button>` : ""}</div>${tasks}`;
    }
    return `<div class="hc-problem" data-problem="${esc(p.indicator_id)}|${esc(p.district)}" style="border-left-color:${BAND_COLOUR[p.band]}">
      <div class="head"><b>${esc(nameOf(ind))}</b><span>${esc(districtName(p.district))}</span>
      <span style="color:${BAND_COLOUR[p.band]}">${fmt(p.value, ind.unit)}</span>
      <span>${t("colTarget")} ${ind.direction === "lower" ? "≤" : "≥"} ${fmt(p.target, ind.unit)}</span></div>
      <div class="evidence">${esc(evidenceText(p.evidence))}</div>${ledgerHtml}</div>`;
  }).join("");
  document.querySelectorAll("[data-add-task]").forEach((b) => b.addEventListener("click", () => addTask(+b.dataset.addTask)));
  document.querySelectorAll("[data-recheck]").forEach((b) => b.addEventListener("click", () => recheck(+b.dataset.recheck)));
  document.querySelectorAll("[data-task-status]").forEach((s) => s.addEventListener("change", async () => {
    await send("PATCH", `/api/healthcheck/tasks/${s.dataset.taskStatus}`, { status: s.value });
    await loadLedger();
  }));
}

async function addTask(problemId) {
  const title = (prompt(t("askTitle")) || "").trim(); if (!title) return;
  const owner = (prompt(t("askOwner")) || "").trim(); if (!owner) return;
  const deadline = (prompt(t("askDeadline"), `${state.year + 1}-06-30`) || "").trim(); if (!deadline) return;
  if (await send("POST", `/api/healthcheck/problems/${problemId}/tasks`, { title, owner, deadline })) await loadLedger();
}

async function recheck(problemId) {
  const from = (prompt(t("askFrom"), `${state.year + 1}-01-01`) || "").trim(); if (!from) return;
  const to = (prompt(t("askTo"), `${state.year + 1}-03-31`) || "").trim(); if (!to) return;
  if (await send("POST", `/api/healthcheck/problems/${problemId}/recheck`, { from, to })) await loadLedger();
}

async function loadLedger() {
  state.ledger = await getJSON(`/api/healthcheck/ledger?year=${state.year}`);
  renderProblems();
}

async function load(year) {
  state.year = year; state.data = null; state.trend = null;
  $("#hc-loading").hidden = false; $("#hc-error").hidden = true;
  try {
    const [data, sensors] = await Promise.all([getJSON(`/api/healthcheck?year=${year}`), getJSON("/api/sensors")]);
    state.data = data; state.sensors = sensors;
    state.ledger = await getJSON(`/api/healthcheck/ledger?year=${year}`);
    $("#hc-loading").hidden = true;
    render();
    state.trend = await getJSON(`/api/healthcheck/trend?year=${year}`);
    renderTrend();
  } catch (err) {
    $("#hc-loading").hidden = true;
    $("#hc-error").hidden = false;
    $("#hc-error").textContent = err.status === 401 ? t("signIn") : String(err.message);
  }
}

async function main() {
  const now = new Date().getFullYear();
  const asked = +(new URLSearchParams(location.search).get("year") || now);
  const years = [...new Set([now, now - 1, now - 2, asked])].sort((a, b) => b - a);
  $("#year").innerHTML = years.map((y) => `<option value="${y}" ${y === asked ? "selected" : ""}>${y}</option>`).join("");
  $("#year").addEventListener("change", () => load(+$("#year").value));
  $("#lang").addEventListener("click", () => {
    state.lang = state.lang === "zh" ? "en" : "zh"; localStorage.setItem("lifeline.lang", state.lang); applyLang();
  });
  $("#hc-diagnose").addEventListener("click", async () => {
    if (await send("POST", `/api/healthcheck/diagnose?year=${state.year}`)) await loadLedger();
  });
  applyLang();
  const who = await fetch("/api/session");
  if (who.ok) {
    state.user = await who.json();
    if (state.user.auth_required) { $("#user").hidden = false; $("#user").textContent = `${state.user.name} · ${state.user.role}`; }
  }
  await load(asked);
}

main().catch((err) => console.error(err));
