"use strict";
// Lifeline Twin operations page: sensors, live alerts over /ws/alerts, a chart per sensor. Chinese first.

const I18N = {
  zh: {
    title: "吉安市城市生命线安全监测", subtitle: "一网统管 · 排水 · 供水 · 燃气", drill: "演练",
    online: "传感器在线", rainNow: "当前雨强 mm/h", map: "监测点位", alerts: "实时预警", noAlerts: "暂无预警",
    sensors: "传感器", chart: "曲线", colNetwork: "网络", colId: "编号", colName: "名称", colValue: "最新值",
    colTime: "时间", colState: "状态", offline: "未连接", onlineConn: "实时连接",
    g1: "Ⅰ级 红色", g2: "Ⅱ级 橙色", g3: "Ⅲ级 黄色", g4: "Ⅳ级 蓝色",
    drainage: "排水", water: "供水", gas: "燃气", rain: "雨量",
    raised: "新预警", updated: "更新", cleared: "已解除", ok: "正常", stale: "离线", bad: "数据异常",
    alarm: "预警", noData: "无数据", lang: "EN", scene3d: "三维场景",
    drillStart: "开始暴雨演练", drillStop: "停止演练",
    signInTitle: "登录", signInHint: "请输入管理员发放的访问令牌", token: "访问令牌", signIn: "登录",
    signOut: "退出", badToken: "令牌无效，请重试", tooMany: "尝试过于频繁，请稍后再试",
    role_viewer: "查看", role_operator: "值班员", role_emergency: "应急人员", role_admin: "管理员",
    st_raised: "待响应", st_acknowledged: "已叫应", st_dispatched: "已派单", st_resolved: "已处置",
    st_rechecked: "已复查", st_closed: "已关闭", escalated: "已升级",
    act_acknowledge: "叫应", act_dispatch: "派单", act_resolve: "处置完成", act_recheck: "复查通过",
    act_reopen: "复查未通过", act_close: "关闭", askAssignee: "派往（队伍或人员）", askTask: "任务内容",
    askNote: "备注（可空）", history: "记录", actFailed: "操作失败",
    activeDrainage: "排水 活动预警", activeWater: "供水 活动预警", activeGas: "燃气 活动预警",
    awaiting: "待叫应（已升级）", rainRecent: "近1 / 3小时降雨 mm", ackTime: "叫应 / 处置 中位用时 min",
    healthcheck: "城市体检", hcTitle: "城市体检 健康指数", hcProblems: "项指标未达标",
  },
  en: {
    title: "Ji'an City Lifeline Safety Monitor", subtitle: "One network runs the city · drainage · water · gas",
    drill: "DRILL", online: "Sensors online", rainNow: "Rain now mm/h", map: "Sensor map", alerts: "Live alerts",
    noAlerts: "No alerts", sensors: "Sensors", chart: "Chart", colNetwork: "Network", colId: "ID",
    colName: "Name", colValue: "Latest", colTime: "Time", colState: "State", offline: "offline",
    onlineConn: "live", g1: "Grade I red", g2: "Grade II orange", g3: "Grade III yellow", g4: "Grade IV blue",
    drainage: "Drainage", water: "Water", gas: "Gas", rain: "Rain", raised: "raised", updated: "updated",
    cleared: "cleared", ok: "normal", stale: "offline", bad: "bad data", alarm: "alarm", noData: "no data",
    lang: "中文", scene3d: "3D scene",
    drillStart: "Start storm drill", drillStop: "Stop drill",
    signInTitle: "Sign in", signInHint: "Enter the access token your administrator gave you", token: "Access token",
    signIn: "Sign in", signOut: "Sign out", badToken: "Unknown token, try again", tooMany: "Too many attempts, wait a little",
    role_viewer: "viewer", role_operator: "operator", role_emergency: "emergency", role_admin: "admin",
    st_raised: "new", st_acknowledged: "acknowledged", st_dispatched: "dispatched", st_resolved: "resolved",
    st_rechecked: "re-checked", st_closed: "closed", escalated: "escalated",
    act_acknowledge: "Acknowledge", act_dispatch: "Dispatch", act_resolve: "Resolved", act_recheck: "Re-check OK",
    act_reopen: "Re-check failed", act_close: "Close", askAssignee: "Dispatch to (team or person)",
    askTask: "Task", askNote: "Note (optional)", history: "History", actFailed: "Action failed",
    activeDrainage: "Drainage active alerts", activeWater: "Water active alerts", activeGas: "Gas active alerts",
    awaiting: "Awaiting response (escalated)", rainRecent: "Rain last 1 / 3 h mm",
    ackTime: "Median minutes to acknowledge / resolve",
    healthcheck: "Health check", hcTitle: "City health check index", hcProblems: "indicators off target",
  },
};
const GRADE_ROMAN = { 1: "Ⅰ", 2: "Ⅱ", 3: "Ⅲ", 4: "Ⅳ" };
// The lifecycle (twin/lifecycle.py): the actions each state allows, and the roles that may take each.
const NEXT_ACTIONS = {
  raised: ["acknowledge", "dispatch"], acknowledged: ["dispatch", "resolve"], dispatched: ["resolve"],
  resolved: ["recheck", "reopen"], rechecked: ["close", "reopen"], closed: [],
};
const ACTION_ROLES = {
  acknowledge: ["operator", "emergency", "admin"], dispatch: ["operator", "admin"],
  resolve: ["operator", "emergency", "admin"], recheck: ["operator", "admin"], close: ["operator", "admin"],
  reopen: ["operator", "admin"],
};
const NET_COLOUR = { drainage: "#26c6da", water: "#42a5f5", gas: "#ffb300", rain: "#9ccc65" };
const GRADE_COLOUR = { 1: "#e53935", 2: "#fb8c00", 3: "#fdd835", 4: "#1e88e5" };

const state = {
  lang: localStorage.getItem("lifeline.lang") || "zh",
  sensors: new Map(),
  alerts: new Map(),   // alert id -> alert
  lastEventId: null,
  ws: null,
  chartSensor: null,
};

const t = (key) => (I18N[state.lang] && I18N[state.lang][key]) || I18N.zh[key] || key;
const $ = (sel) => document.querySelector(sel);
const fmtTime = (iso) => iso ? new Date(iso).toLocaleString(state.lang === "zh" ? "zh-CN" : "en-GB",
  { hour12: false, month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit" }) : "–";

function applyLang() {
  document.documentElement.lang = state.lang === "zh" ? "zh-CN" : "en";
  document.querySelectorAll("[data-i18n]").forEach((el) => { el.textContent = t(el.dataset.i18n); });
  $("#lang").textContent = t("lang");
  setConn(state.ws && state.ws.readyState === WebSocket.OPEN);
  renderSensors(); renderAlerts(); renderLegend(); renderHealthSummary();
}

function setConn(on) {
  const el = $("#conn");
  el.textContent = on ? t("onlineConn") : t("offline");
  el.className = "conn " + (on ? "on" : "off");
}

async function getJSON(url) {
  const res = await fetch(url);
  if (!res.ok) throw new Error(url + " → HTTP " + res.status);
  return res.json();
}

async function loadSensors() {
  const rows = await getJSON("/api/sensors");
  state.sensors = new Map(rows.map((s) => [s.sensor_id, s]));
  renderSensors(); renderMap(); renderCards();
}

async function loadAlerts() {
  const rows = await getJSON("/api/alerts?limit=200");
  // Alerts already received over the websocket are newer than this snapshot: keep them.
  for (const a of rows) if (!state.alerts.has(a.id)) state.alerts.set(a.id, a);
  renderAlerts(); renderCards(); renderMap();
}

function activeGradeOf(sensorId) {
  let worst = null;
  for (const a of state.alerts.values()) {
    if (a.active && a.sensor_id === sensorId && (worst === null || a.grade < worst)) worst = a.grade;
  }
  return worst;
}

function sensorState(s) {
  if (!s.latest_ts) return "stale";
  const ageS = (Date.now() - new Date(s.latest_ts).getTime()) / 1000;
  if (ageS > Math.max(3 * s.interval_s, 180)) return "stale";
  if (s.latest_quality === 2) return "bad";
  return activeGradeOf(s.sensor_id) ? "alarm" : "ok";
}

function renderCards() {
  const counts = { 1: 0, 2: 0, 3: 0, 4: 0 };
  for (const a of state.alerts.values()) if (a.active && a.drill_id == null) counts[a.grade] += 1;  // drills apart
  for (const g of [1, 2, 3, 4]) $("#n-g" + g).textContent = counts[g];
  const sensors = [...state.sensors.values()];
  const online = sensors.filter((s) => sensorState(s) !== "stale").length;
  $("#n-online").textContent = online + "/" + sensors.length;
  const rain = sensors.filter((s) => s.network === "rain" && s.latest_value !== null);
  $("#n-rain").textContent = rain.length ? Math.max(...rain.map((s) => s.latest_value)).toFixed(1) : "–";
}

function renderSensors() {
  const tbody = $("#sensors tbody");
  tbody.replaceChildren();
  // Sensors in alarm first (worst grade first), then by network and id.
  const rank = (s) => activeGradeOf(s.sensor_id) || 9;
  const ordered = [...state.sensors.values()].sort((a, b) => rank(a) - rank(b));
  for (const s of ordered) {
    const tr = document.createElement("tr");
    tr.dataset.sensor = s.sensor_id;
    const st = sensorState(s);
    const grade = activeGradeOf(s.sensor_id);
    const value = s.latest_value === null ? t("noData") : s.latest_value.toFixed(2) + " " + s.unit;
    const stateText = st === "alarm" ? GRADE_ROMAN[grade] + " " + t("alarm") : t(st);
    tr.innerHTML = `<td><span class="net" style="background:${NET_COLOUR[s.network]}"></span>${t(s.network)}</td>
      <td>${esc(s.sensor_id)}</td><td>${esc(s.name)}</td><td>${esc(value)}</td><td>${fmtTime(s.latest_ts)}</td>
      <td class="state-${st === "alarm" ? "bad" : st}">${esc(stateText)}</td>`;
    tr.addEventListener("click", () => openChart(s.sensor_id));
    tbody.appendChild(tr);
  }
}

function renderLegend() {
  $("#legend").innerHTML = Object.entries(NET_COLOUR)
    .map(([k, c]) => `<span><i style="background:${c}"></i>${t(k)}</span>`).join("");
}

function renderMap() {
  const svg = $("#map");
  const sensors = [...state.sensors.values()];
  if (!sensors.length) return;
  const xs = sensors.map((s) => s.x_m), ys = sensors.map((s) => s.y_m);
  const minX = Math.min(...xs), maxX = Math.max(...xs), minY = Math.min(...ys), maxY = Math.max(...ys);
  const sx = (x) => 60 + ((x - minX) / Math.max(maxX - minX, 1)) * 880;
  const sy = (y) => 740 - ((y - minY) / Math.max(maxY - minY, 1)) * 680;
  let html = '<rect x="0" y="0" width="1000" height="800" fill="#0d1d30"/>';
  for (let i = 1; i < 10; i++) html += `<line x1="${i * 100}" y1="0" x2="${i * 100}" y2="800" stroke="#16304d"/>`;
  for (let i = 1; i < 8; i++) html += `<line x1="0" y1="${i * 100}" x2="1000" y2="${i * 100}" stroke="#16304d"/>`;
  for (const s of sensors) {
    const g = activeGradeOf(s.sensor_id);
    const x = sx(s.x_m).toFixed(1), y = sy(s.y_m).toFixed(1);
    if (g) html += `<circle cx="${x}" cy="${y}" r="22" fill="none" stroke="${GRADE_COLOUR[g]}" stroke-width="4">
      <animate attributeName="r" values="16;26;16" dur="1.5s" repeatCount="indefinite"/></circle>`;
    const r = sensors.length > 60 ? 6 : 9;
    html += `<circle cx="${x}" cy="${y}" r="${r}" fill="${NET_COLOUR[s.network]}" stroke="#0b1624" stroke-width="1.5"
      data-sensor="${esc(s.sensor_id)}"><title>${esc(s.name)} (${esc(s.sensor_id)})</title></circle>`;
    if (sensors.length <= 60 || g) {
      html += `<text x="${x}" y="${(+y + 26).toFixed(1)}" fill="#8aa3bd" font-size="16" text-anchor="middle">${esc(s.sensor_id)}</text>`;
    }
  }
  svg.innerHTML = html;
  svg.querySelectorAll("circle[data-sensor]").forEach((c) =>
    c.addEventListener("click", () => openChart(c.dataset.sensor)));
}

function renderAlerts(flashId) {
  const ul = $("#alerts");
  const list = [...state.alerts.values()].sort((a, b) =>
    (b.active - a.active) || (a.active ? a.grade - b.grade : 0) || (new Date(b.updated_at) - new Date(a.updated_at)));
  ul.replaceChildren();
  for (const a of list.slice(0, 100)) {
    const li = document.createElement("li");
    li.className = "g" + a.grade + (a.active ? "" : " cleared") + (a.id === flashId ? " flash" : "")
      + (a.escalation_level > 0 && a.state === "raised" ? " escalated" : "");
    li.dataset.alertId = a.id;
    const msg = state.lang === "zh" ? a.message : a.message_en;
    const role = state.user ? state.user.role : "viewer";
    const buttons = (NEXT_ACTIONS[a.state] || []).filter((act) => ACTION_ROLES[act].includes(role))
      .map((act) => `<button type="button" class="act" data-action="${act}">${t("act_" + act)}</button>`).join("");
    const escalated = a.escalation_level > 0 && a.state === "raised"
      ? `<span class="esc">${t("escalated")} ${a.escalation_level}</span>` : "";
    // Raised during a drill (演练): marked, so nobody takes it for a real event.
    const drillTag = a.drill_id !== null && a.drill_id !== undefined ? '<span class="drill">演练 DRILL</span> ' : "";
    if (drillTag) li.dataset.drill = a.drill_id;
    li.innerHTML = `<div><span class="chip g${a.grade}">${GRADE_ROMAN[a.grade]}</span> ${drillTag}${esc(msg)}</div>
      <div class="meta"><span>${t(a.network)}</span><span>${esc(a.district)}</span>
      <span>${fmtTime(a.updated_at)}</span><span>${a.active ? "" : t("cleared")}</span>
      <span class="state st-${a.state}">${t("st_" + a.state)}</span>${escalated}
      ${a.assignee ? `<span>→ ${esc(a.assignee)}</span>` : ""}</div>
      <div class="actions">${buttons}</div>`;
    li.querySelectorAll("button.act").forEach((b) => b.addEventListener("click", () => act(a.id, b.dataset.action)));
    ul.appendChild(li);
  }
  const active = list.filter((a) => a.active).length;
  $("#alert-count").textContent = active;
  $("#no-alerts").hidden = list.length > 0;
}

async function act(alertId, action) {
  const body = { action };
  if (action === "dispatch") {
    body.assignee = (prompt(t("askAssignee")) || "").trim();
    body.task = (prompt(t("askTask")) || "").trim();
    if (!body.assignee || !body.task) return;
  } else if (action !== "acknowledge") {
    body.note = (prompt(t("askNote")) || "").trim();
  }
  const res = await fetch(`/api/alerts/${alertId}/actions`, { method: "POST",
    headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  if (!res.ok) {
    let detail = "";
    try { detail = (await res.json()).detail; } catch (e) { detail = res.statusText; }
    alert(`${t("actFailed")}: ${detail}`);
  }
  // The new state arrives over the websocket like every other alert event.
}

async function loadDashboard() {
  const d = await getJSON("/api/dashboard");
  const sum = (net) => Object.values(d.active[net] || {}).reduce((a, b) => a + b, 0);
  // Real alerts; those raised in a drill are counted apart.
  const drills = (net) => Object.values((d.drill && d.drill.active[net]) || {}).reduce((a, b) => a + b, 0);
  const shown = (net) => sum(net) + (drills(net) ? ` (+${drills(net)} 演练 DRILL)` : "");
  $("#d-drainage").textContent = shown("drainage");
  $("#d-water").textContent = shown("water");
  $("#d-gas").textContent = shown("gas");
  $("#d-await").textContent = `${d.awaiting_response} (${d.escalated})`;
  $("#d-await-card").classList.toggle("alarm", d.escalated > 0);
  const mm = (v) => (v === null || v === undefined ? "–" : v.toFixed(1));
  $("#d-rain").textContent = `${mm(d.rain.last_1h_mm)} / ${mm(d.rain.last_3h_mm)}`;
  $("#d-ack").textContent = `${mm(d.response.median_ack_min)} / ${mm(d.response.median_resolve_min)}`;
}

// The city health check summary (城市体检, /healthcheck): this year's index per district and open problems.
async function loadHealthSummary() {
  state.health = await getJSON(`/api/healthcheck?year=${new Date().getFullYear()}`);
  renderHealthSummary();
}

// At start: a failed load (the server busy or restarting) is tried again after 5, 10, 20… s (at most 5 min apart),
// rather than leaving the card empty until the next 10-minute refresh.
async function loadHealthSummaryRetrying(wait = 5000) {
  try {
    await loadHealthSummary();
  } catch (e) {
    console.error(e);
    if (!state.health) $("#hc-detail").textContent = "–";
    setTimeout(() => loadHealthSummaryRetrying(Math.min(wait * 2, 300000)), wait);
  }
}

function renderHealthSummary() {
  const d = state.health;
  if (!d) return;
  const city = d.index[""] || { value: null };
  const v = city.value;
  const colour = v === null ? "" : v >= 90 ? "#2e9d57" : v >= 75 ? "#e3b505" : v >= 60 ? "#ee7d22" : "#d6333a";
  $("#hc-index").textContent = v === null ? "–" : v.toFixed(0);
  $("#hc-index").style.color = colour;
  $("#hc-summary").style.borderLeftColor = colour;
  const parts = d.districts.filter((k) => k).map((k) => `${k} ${d.index[k].value === null ? "–" : d.index[k].value.toFixed(0)}`);
  const off = d.problems.filter((p) => p.district === "").length;
  const period = state.lang === "zh" ? d.period.label : d.period.label.replace(" 年度", "");
  $("#hc-detail").textContent = `${period} · ${parts.join(" · ")} · ${off} ${t("hcProblems")}`;
}

let dashboardReload = null;
function scheduleDashboard() {
  if (dashboardReload) return;
  dashboardReload = setTimeout(() => { dashboardReload = null; loadDashboard().catch(() => {}); }, 500);
}

async function refreshDrill() {
  const info = await getJSON("/api/info");
  $("#drill").hidden = !info.drill;
  $("#drill-controls").hidden = !info.drills_enabled;
  if (info.drills_enabled) {
    const running = (await getJSON("/api/drills")).some((d) => d.status === "running");
    $("#drill-start").hidden = running;
    $("#drill-stop").hidden = !running;
  }
}

let sensorReload = null;
function scheduleSensorReload() {
  // Coalesce bursts of alerts into one refresh of the latest values.
  if (sensorReload) return;
  sensorReload = setTimeout(() => { sensorReload = null; loadSensors().catch(() => {}); }, 300);
}

function beep(grade) {
  try {
    const ctx = new (window.AudioContext || window.webkitAudioContext)();
    const osc = ctx.createOscillator();
    osc.frequency.value = grade === 1 ? 880 : 660;
    osc.connect(ctx.destination); osc.start(); osc.stop(ctx.currentTime + 0.4);
  } catch (e) { /* sound is optional */ }
}

function connectAlerts() {
  const proto = location.protocol === "https:" ? "wss" : "ws";
  const query = state.lastEventId !== null ? "?after=" + state.lastEventId : "";
  const ws = new WebSocket(`${proto}://${location.host}/ws/alerts${query}`);
  state.ws = ws;
  ws.onopen = () => setConn(true);
  ws.onmessage = (ev) => {
    const msg = JSON.parse(ev.data);
    if (msg.type === "hello") {
      if (state.lastEventId === null) state.lastEventId = msg.last_event_id;
      return;
    }
    if (msg.type !== "alert") return;
    state.lastEventId = Math.max(state.lastEventId || 0, msg.event_id);
    state.alerts.set(msg.alert.id, msg.alert);
    scheduleSensorReload();
    scheduleDashboard();
    const loud = msg.event === "raised" || msg.event === "escalated" || (msg.event === "updated" && msg.alert.state === "raised");
    renderAlerts(loud ? msg.alert.id : null);
    renderCards(); renderMap(); renderSensors();
    if (loud && msg.alert.grade <= 2) beep(msg.alert.grade);
    if (state.chartSensor === msg.alert.sensor_id) openChart(state.chartSensor);
  };
  ws.onclose = () => { setConn(false); setTimeout(connectAlerts, 2000); };
}

async function openChart(sensorId) {
  const s = state.sensors.get(sensorId);
  if (!s) return;
  state.chartSensor = sensorId;
  $("#chart-panel").hidden = false;
  $("#chart-title").textContent = `${s.name} (${sensorId}) · ${s.unit}`;
  const to = new Date(), from = new Date(to.getTime() - 3600 * 1000);
  const series = await getJSON(`/api/sensors/${encodeURIComponent(sensorId)}/readings?from=${from.toISOString()}&to=${to.toISOString()}`);
  drawChart(series.points, s);
}

function drawChart(points, s) {
  const svg = $("#chart");
  const W = 900, H = 260, L = 60, R = 20, T = 15, B = 30;
  if (!points.length) { svg.innerHTML = `<text x="450" y="130" fill="#8aa3bd" text-anchor="middle">${t("noData")}</text>`; return; }
  const ts = points.map((p) => new Date(p.ts).getTime());
  const limits = s.limits.map((l) => l.threshold);
  const vs = points.map((p) => p.value).concat(limits);
  let lo = Math.min(...vs), hi = Math.max(...vs);
  if (hi === lo) { hi += 1; lo -= 1; }
  const pad = (hi - lo) * 0.08; lo -= pad; hi += pad;
  const t0 = Math.min(...ts), t1 = Math.max(...ts, t0 + 1);
  const x = (v) => L + ((v - t0) / (t1 - t0)) * (W - L - R);
  const y = (v) => T + (1 - (v - lo) / (hi - lo)) * (H - T - B);
  let html = "";
  for (let i = 0; i <= 4; i++) {
    const v = lo + ((hi - lo) * i) / 4;
    html += `<line x1="${L}" x2="${W - R}" y1="${y(v)}" y2="${y(v)}" stroke="#16304d"/>
      <text x="${L - 6}" y="${y(v) + 4}" fill="#8aa3bd" font-size="11" text-anchor="end">${v.toFixed(2)}</text>`;
  }
  for (const l of s.limits) {
    const g = { I: 1, II: 2, III: 3, IV: 4 }[l.grade];
    html += `<line x1="${L}" x2="${W - R}" y1="${y(l.threshold)}" y2="${y(l.threshold)}" stroke="${GRADE_COLOUR[g]}"
      stroke-dasharray="6 4" opacity="0.8"/>`;
  }
  const path = points.map((p, i) => (i ? "L" : "M") + x(ts[i]).toFixed(1) + "," + y(p.value).toFixed(1)).join(" ");
  html += `<path d="${path}" fill="none" stroke="${NET_COLOUR[s.network]}" stroke-width="2"/>`;
  if (points.length <= 200) {
    html += points.map((p, i) => `<circle class="pt" cx="${x(ts[i]).toFixed(1)}" cy="${y(p.value).toFixed(1)}" r="3"
      fill="${NET_COLOUR[s.network]}"><title>${fmtTime(p.ts)} ${p.value.toFixed(3)} ${esc(s.unit)}</title></circle>`).join("");
  }
  html += `<text x="${L}" y="${H - 8}" fill="#8aa3bd" font-size="11">${fmtTime(new Date(t0).toISOString())}</text>
    <text x="${W - R}" y="${H - 8}" fill="#8aa3bd" font-size="11" text-anchor="end">${fmtTime(new Date(t1).toISOString())}</text>`;
  svg.innerHTML = html;
}

function esc(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

function tick() { $("#clock").textContent = new Date().toLocaleTimeString(state.lang === "zh" ? "zh-CN" : "en-GB", { hour12: false }); }

// Signing in: the token goes to POST /api/session once and lives on in an HttpOnly cookie, which the browser
// also sends on the websocket. With authentication off (the demo) /api/session answers at once.
async function signIn() {
  const res = await fetch("/api/session");
  if (res.ok) return res.json();
  const form = $("#signin");
  form.hidden = false;
  $("#token").focus();
  return new Promise((resolve) => {
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const r = await fetch("/api/session", { method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ token: $("#token").value.trim() }) });
      if (r.status === 204) {
        $("#token").value = "";
        form.hidden = true;
        resolve((await fetch("/api/session")).json());
      } else {
        $("#signin-error").textContent = t(r.status === 429 ? "tooMany" : "badToken");
      }
    });
  });
}

function showUser(who) {
  state.user = who;
  const el = $("#user");
  if (!who || !who.auth_required) { el.hidden = true; return; }
  el.hidden = false;
  $("#user-name").textContent = `${who.name} · ${t("role_" + who.role)}`;
}

async function main() {
  $("#lang").addEventListener("click", () => {
    state.lang = state.lang === "zh" ? "en" : "zh";
    localStorage.setItem("lifeline.lang", state.lang);
    applyLang();
  });
  $("#chart-close").addEventListener("click", () => { $("#chart-panel").hidden = true; state.chartSensor = null; });
  applyLang();
  $("#signout").addEventListener("click", async () => {
    await fetch("/api/session", { method: "DELETE" });
    location.reload();
  });
  showUser(await signIn());
  await refreshDrill();
  $("#drill-start").addEventListener("click", async () => {
    // A 50-year, 2-hour design storm through the drainage model, ten simulated minutes a second.
    await fetch("/api/drills", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ kind: "rainstorm", speed: "600", params: { return_period: 50, duration_min: 120 } }) });
    refreshDrill();
  });
  $("#drill-stop").addEventListener("click", async () => {
    const drills = await getJSON("/api/drills");
    await Promise.all(drills.filter((d) => d.status === "running")
      .map((d) => fetch(`/api/drills/${d.id}`, { method: "DELETE" })));
    refreshDrill();
  });
  setInterval(() => refreshDrill().catch(() => {}), 5000);
  await loadSensors();
  connectAlerts();  // first, so nothing raised while the list loads is missed
  await loadAlerts();
  setInterval(tick, 1000); tick();
  setInterval(() => loadSensors().catch(() => {}), 5000);
  await loadDashboard().catch((e) => console.error(e));
  setInterval(() => loadDashboard().catch(() => {}), 10000);
  loadHealthSummaryRetrying();
  setInterval(() => loadHealthSummary().catch(() => {}), 600000);
}

main().catch((err) => { console.error(err); setConn(false); });
