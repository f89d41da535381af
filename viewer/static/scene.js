// Lifeline Twin 3D scene: the city's buildings above ground and its pipe networks below, from /api/scene.glb and
// /api/scene/meta.json (written by twin.scene.export_scene). Chinese first, English on request.
import * as THREE from "three";
import { OrbitControls } from "three/addons/controls/OrbitControls.js";
import { GLTFLoader } from "three/addons/loaders/GLTFLoader.js";

const I18N = {
  zh: {
    title: "城市生命线三维场景", subtitle: "地上建筑 · 地下管网 · 监测点位", backToMonitor: "监测总览",
    resetView: "视角复位", lang: "EN", layers: "图层", ground: "地表", groundTranslucent: "半透明",
    groundHidden: "隐藏", groundOpaque: "不透明", buildings: "建筑", drainage: "排水", water: "供水", gas: "燃气",
    rain: "雨量", sensors: "监测点", streets: "道路", legend: "图例", networks: "管网", uses: "建筑用途",
    loading: "正在加载三维场景…", failed: "三维场景加载失败：",
    ready: (s) => `场景就绪 · 加载 ${s.loadMs} ms · 建筑 ${s.buildings} 栋 · 管段 ${s.links} 条 · ` +
      `节点 ${s.nodes} 个 · 监测点 ${s.sensors} 个 · 三角面 ${(s.triangles / 1e4).toFixed(1)} 万`,
    scaleNote: (k) => `管径放大 ${k} 倍显示；检查井、节点与监测点亦放大显示。管线按实际埋深绘制。`,
    hint: "左键旋转 · 右键平移 · 滚轮缩放 · 单击查看资产",
    type: { building: "建筑", link: "管段", node: "节点", sensor: "监测点" },
    use: { residential: "住宅", commercial: "商业", office: "办公", industrial: "工业", school: "学校",
      hospital: "医院", elderly_care: "养老机构", public: "公共建筑" },
    kind: { junction: "检查井/节点", outfall: "排放口", storage: "调蓄池", divider: "分流井", tank: "水池",
      reservoir: "水源", source: "气源", sink: "用气点", conduit: "管渠", pump: "水泵", orifice: "孔口",
      weir: "堰", outlet: "出流口", pipe: "管道", valve: "阀门", regulator: "调压器" },
    quantity: { level: "液位", flow: "流量", rain_rate: "雨强", pressure: "压力", methane: "甲烷浓度" },
    field: { id: "编号", name: "名称", use: "用途", height_m: "高度 (m)", floors: "层数",
      ground_m: "地面高程 (m)", basement: "地下空间", occupants: "白天人数", network: "所属管网", kind: "类型",
      from: "起点", to: "终点", diameter_m: "管径 (m)", length_m: "长度 (m)", roughness: "粗糙系数",
      centre_from_m: "起点管中高程 (m)", centre_to_m: "终点管中高程 (m)", cover_mid_m: "中点覆土 (m)",
      x_m: "X (m)", y_m: "Y (m)", z_m: "底/管中高程 (m)", depth_m: "井深 (m)", quantity: "监测量",
      unit: "单位", asset_id: "关联资产", district: "区域" },
    yes: "有", no: "无",
  },
  en: {
    title: "City Lifeline 3D Scene", subtitle: "Buildings above · pipes below · sensors", backToMonitor: "Monitor",
    resetView: "Reset view", lang: "中文", layers: "Layers", ground: "Ground", groundTranslucent: "Translucent",
    groundHidden: "Hidden", groundOpaque: "Opaque", buildings: "Buildings", drainage: "Drainage", water: "Water",
    gas: "Gas", rain: "Rain", sensors: "Sensors", streets: "Streets", legend: "Legend", networks: "Networks",
    uses: "Building use", loading: "Loading the 3D scene…", failed: "The 3D scene failed to load: ",
    ready: (s) => `Scene ready · loaded in ${s.loadMs} ms · ${s.buildings} buildings · ${s.links} pipes · ` +
      `${s.nodes} nodes · ${s.sensors} sensors · ${(s.triangles / 1e6).toFixed(2)} M triangles`,
    scaleNote: (k) => `Pipe diameters drawn ${k}× larger; manholes, nodes and sensors enlarged too. ` +
      "Pipes are drawn at their true depth.",
    hint: "Left drag: rotate · right drag: pan · wheel: zoom · click: inspect",
    type: { building: "Building", link: "Pipe", node: "Node", sensor: "Sensor" },
    use: { residential: "Residential", commercial: "Commercial", office: "Office", industrial: "Industrial",
      school: "School", hospital: "Hospital", elderly_care: "Elderly care", public: "Public" },
    kind: { junction: "Manhole / junction", outfall: "Outfall", storage: "Storage", divider: "Divider",
      tank: "Tank", reservoir: "Reservoir", source: "Gas source", sink: "Consumer", conduit: "Conduit",
      pump: "Pump", orifice: "Orifice", weir: "Weir", outlet: "Outlet", pipe: "Pipe", valve: "Valve",
      regulator: "Regulator" },
    quantity: { level: "Level", flow: "Flow", rain_rate: "Rain rate", pressure: "Pressure", methane: "Methane" },
    field: { id: "ID", name: "Name", use: "Use", height_m: "Height (m)", floors: "Floors",
      ground_m: "Ground elevation (m)", basement: "Basement", occupants: "Occupants by day", network: "Network",
      kind: "Kind", from: "From", to: "To", diameter_m: "Diameter (m)", length_m: "Length (m)",
      roughness: "Roughness", centre_from_m: "Centre elevation, start (m)", centre_to_m: "Centre elevation, end (m)",
      cover_mid_m: "Cover at midpoint (m)", x_m: "X (m)", y_m: "Y (m)", z_m: "Invert / centre elevation (m)",
      depth_m: "Depth (m)", quantity: "Quantity", unit: "Unit", asset_id: "Asset", district: "District" },
    yes: "yes", no: "no",
  },
};
const LAYERS = ["buildings", "drainage", "water", "gas", "sensors", "streets"];
const PICKABLE = new Set(["building", "link", "node", "sensor"]);
const BACKGROUND = 0x0b1624;
const STREET_OPACITY = 0.3;

const state = {
  lang: localStorage.getItem("lifeline.lang") || "zh",
  meta: null,
  objects: [],          // { mesh, entry } per glTF mesh, in meta order
  byLayer: new Map(),   // layer -> [mesh]
  ground: "translucent",
  selected: null,       // asset id
  highlight: null,
  home: null,           // { position, target }
  stats: null,
  timings: null,        // ms since navigation: module start, data fetched, glTF parsed, first frame, ready
};

const $ = (sel) => document.querySelector(sel);
const tr = () => I18N[state.lang] || I18N.zh;
const t = (key) => tr()[key] ?? I18N.zh[key] ?? key;

const moduleStart = Math.round(performance.now());
// Start the downloads first (the page preloads them too): creating a WebGL context can take a while.
const downloads = Promise.all([fetchOk("/api/scene/meta.json", "json"), fetchOk("/api/scene.glb", "buffer")]);
downloads.catch(() => {});  // reported by loadScene

// --- three.js -----------------------------------------------------------------------------------------------------
const container = $("#view");
const renderer = new THREE.WebGLRenderer({ antialias: true });
renderer.setPixelRatio(Math.min(window.devicePixelRatio, 2));
renderer.setClearColor(BACKGROUND);
container.appendChild(renderer.domElement);
const scene = new THREE.Scene();
const camera = new THREE.PerspectiveCamera(45, 1, 1, 100000);
const controls = new OrbitControls(camera, renderer.domElement);
controls.maxPolarAngle = Math.PI * 0.95;  // allow a look from just below the ground at the pipes
controls.addEventListener("change", () => requestRender());
scene.add(new THREE.HemisphereLight(0xe8f1ff, 0x3a4350, 1.7));
const sun = new THREE.DirectionalLight(0xffffff, 1.8);
sun.position.set(-0.5, 1.0, 0.35);
scene.add(sun);

let renderQueued = false;
function render() {
  renderQueued = false;
  renderer.render(scene, camera);
}
function requestRender() {
  if (!renderQueued) { renderQueued = true; requestAnimationFrame(render); }
}
function resize() {
  const { clientWidth: w, clientHeight: h } = container;
  renderer.setSize(w, h, false);
  camera.aspect = w / Math.max(h, 1);
  camera.updateProjectionMatrix();
  requestRender();
}
new ResizeObserver(resize).observe(container);

// --- loading ------------------------------------------------------------------------------------------------------
async function fetchOk(url, as) {
  const res = await fetch(url);
  if (res.status === 401) {
    location.href = "/";  // not signed in: the operations page asks for the token, then links back here
    throw new Error("sign in first");
  }
  if (!res.ok) {
    let detail = "";
    try { detail = (await res.json()).detail; } catch (e) { detail = res.statusText; }
    throw new Error(`${url} → HTTP ${res.status} ${detail}`);
  }
  return as === "json" ? res.json() : res.arrayBuffer();
}

async function loadScene() {
  const timings = { module: moduleStart, start: Math.round(performance.now()) };
  const [meta, glb] = await downloads;
  timings.fetched = Math.round(performance.now());
  const gltf = await new GLTFLoader().parseAsync(glb, "");
  timings.parsed = Math.round(performance.now());
  state.meta = meta;
  gltf.scene.traverse((obj) => {
    if (!obj.isMesh || obj.userData.meta_index === undefined) return;
    const entry = meta.meshes[obj.userData.meta_index];
    obj.material = lambert(obj.material, entry);
    obj.matrixAutoUpdate = false;
    obj.updateMatrix();
    if (entry.kind === "terrain") obj.renderOrder = 1;
    if (entry.kind === "streets") obj.renderOrder = 2;
    state.objects[obj.userData.meta_index] = { mesh: obj, entry };
    const layer = entry.layer;
    if (!state.byLayer.has(layer)) state.byLayer.set(layer, []);
    state.byLayer.get(layer).push(obj);
  });
  scene.add(gltf.scene);
  state.stats = {
    buildings: meta.counts.buildings,
    links: Object.values(meta.counts.links).reduce((a, b) => a + b, 0),
    nodes: Object.values(meta.counts.nodes).reduce((a, b) => a + b, 0),
    sensors: meta.counts.sensors,
    triangles: meta.counts.triangles,
  };
  $("#city-name").textContent = meta.city;
  frame();
  setGround(state.ground);
  renderLegend();
  render();
  timings.firstFrame = Math.round(performance.now());
  // The scene is ready once a frame with it has been drawn.
  await new Promise((resolve) => requestAnimationFrame(() => { render(); resolve(); }));
  state.stats.loadMs = Math.round(performance.now());
  timings.ready = state.stats.loadMs;
  state.timings = timings;
  showStatus();
  return { loadMs: state.stats.loadMs, counts: meta.counts, timings };
}

function lambert(material, entry) {
  // Lambert shading is plenty for flat-coloured city blocks and much cheaper than PBR in software WebGL.
  const m = new THREE.MeshLambertMaterial({
    color: material.color, vertexColors: material.vertexColors, side: material.side,
    transparent: material.transparent, opacity: material.opacity, depthWrite: !material.transparent,
  });
  // Pipes, nodes and sensors glow a little so they read through the translucent ground.
  if (entry.kind === "link" || entry.kind === "node") { m.emissive = m.color.clone(); m.emissiveIntensity = 0.45; }
  if (entry.kind === "sensor") { m.emissive = new THREE.Color(0xffffff); m.emissiveIntensity = 0.25; }
  material.dispose();
  return m;
}

function frame() {
  const box = new THREE.Box3();
  for (const { mesh, entry } of state.objects.filter(Boolean)) {
    if (entry.kind !== "terrain") box.expandByObject(mesh);
  }
  if (box.isEmpty()) for (const { mesh } of state.objects.filter(Boolean)) box.expandByObject(mesh);
  const centre = box.getCenter(new THREE.Vector3());
  const size = box.getSize(new THREE.Vector3());
  const span = Math.max(size.x, size.z, 50);
  // From the south-east, looking down at about 40°: buildings stand up and the pipes show through the ground.
  const position = centre.clone().add(new THREE.Vector3(0.18 * span, 0.62 * span, 0.78 * span));
  state.home = { position, target: centre.clone().setY(centre.y - 0.02 * span) };
  camera.near = Math.max(span / 2000, 0.5);
  camera.far = span * 20;
  resetView();
}

function resetView() {
  if (!state.home) return;
  camera.position.copy(state.home.position);
  controls.target.copy(state.home.target);
  camera.updateProjectionMatrix();
  controls.update();
  requestRender();
}

// --- layers -------------------------------------------------------------------------------------------------------
function setLayer(layer, on) {
  for (const mesh of state.byLayer.get(layer) || []) mesh.visible = on;
  const box = document.querySelector(`input[data-layer="${layer}"]`);
  if (box) box.checked = on;
  requestRender();
}

function setGround(mode) {
  state.ground = mode;
  const see = mode === "translucent";
  for (const mesh of state.byLayer.get("ground") || []) {
    const entry = state.objects[mesh.userData.meta_index].entry;
    mesh.visible = mode !== "hidden";
    setOpacity(mesh.material, see ? entry.opacity : 1);
  }
  // Streets lie on the ground: faint unless the ground is opaque, so the pipes beneath them show.
  for (const mesh of state.byLayer.get("streets") || []) {
    setOpacity(mesh.material, mode === "opaque" ? 1 : STREET_OPACITY);
  }
  document.querySelectorAll("[data-ground]").forEach((b) => b.classList.toggle("on", b.dataset.ground === mode));
  requestRender();
}

function setOpacity(material, opacity) {
  material.transparent = opacity < 1;
  material.opacity = opacity;
  material.depthWrite = opacity >= 1;
  material.needsUpdate = true;
}

// --- picking ------------------------------------------------------------------------------------------------------
const raycaster = new THREE.Raycaster();

function assetAt(clientX, clientY) {
  const rect = renderer.domElement.getBoundingClientRect();
  const ndc = new THREE.Vector2(((clientX - rect.left) / rect.width) * 2 - 1,
    -((clientY - rect.top) / rect.height) * 2 + 1);
  raycaster.setFromCamera(ndc, camera);
  // Opaque ground hides what is under it; translucent ground lets clicks through to the pipes.
  const targets = state.objects.filter((o) => o && o.mesh.visible &&
    (PICKABLE.has(o.entry.kind) || (o.entry.kind === "terrain" && state.ground === "opaque"))).map((o) => o.mesh);
  const hit = raycaster.intersectObjects(targets, false)[0];
  if (!hit) return null;
  const entry = state.objects[hit.object.userData.meta_index].entry;
  if (!PICKABLE.has(entry.kind)) return null;
  const k = upperBound(entry.tri_offsets, hit.faceIndex) - 1;
  return { id: entry.ids[k], entry, index: k };
}

function upperBound(offsets, value) {
  let lo = 0, hi = offsets.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (offsets[mid] <= value) lo = mid + 1; else hi = mid;
  }
  return lo;
}

function locate(id) {
  for (const o of state.objects) {
    if (!o || !PICKABLE.has(o.entry.kind)) continue;
    const k = o.entry.ids.indexOf(id);
    if (k >= 0) return { id, entry: o.entry, index: k, mesh: o.mesh };
  }
  return null;
}

function select(id) {
  clearHighlight();
  state.selected = id;
  const found = id && locate(id);
  if (!found) { $("#inspect").hidden = true; requestRender(); return null; }
  const { mesh, entry, index } = found;
  const source = mesh.geometry;
  const t0 = entry.tri_offsets[index], t1 = entry.tri_offsets[index + 1];
  const geometry = new THREE.BufferGeometry();
  geometry.setAttribute("position", source.getAttribute("position"));
  geometry.setIndex(new THREE.BufferAttribute(source.index.array.slice(3 * t0, 3 * t1), 1));
  const material = new THREE.MeshBasicMaterial({ color: 0xffeb3b, transparent: true, opacity: 0.6,
    depthTest: false });
  state.highlight = new THREE.Mesh(geometry, material);
  state.highlight.renderOrder = 10;
  mesh.add(state.highlight);
  renderInspect(id);
  requestRender();
  return id;
}

function clearHighlight() {
  if (!state.highlight) return;
  state.highlight.parent.remove(state.highlight);
  state.highlight.geometry.dispose();
  state.highlight.material.dispose();
  state.highlight = null;
}

function focus(id, distance, elevationDeg, azimuthDeg) {
  // Look at the asset from *distance* metres; from *elevationDeg* above the horizon and *azimuthDeg* clockwise
  // from north where given, else along the current viewing direction.
  const found = locate(id);
  if (!found) return false;
  const box = assetBox(found);
  const target = box.getCenter(new THREE.Vector3());
  const direction = camera.position.clone().sub(controls.target).normalize();
  if (elevationDeg !== undefined) {
    const up = THREE.MathUtils.degToRad(elevationDeg);
    const azimuth = THREE.MathUtils.degToRad(azimuthDeg ?? 160);
    // glTF axes: x east, y up, z south.
    direction.set(Math.cos(up) * Math.sin(azimuth), Math.sin(up), -Math.cos(up) * Math.cos(azimuth));
  }
  const reach = distance || Math.max(box.getSize(new THREE.Vector3()).length() * 4, 120);
  controls.target.copy(target);
  camera.position.copy(target.clone().add(direction.multiplyScalar(reach)));
  controls.update();
  requestRender();
  return true;
}

function assetBox({ mesh, entry, index }) {
  const position = mesh.geometry.getAttribute("position");
  const v0 = entry.vertex_offsets[index], v1 = entry.vertex_offsets[index + 1];
  const box = new THREE.Box3();
  const p = new THREE.Vector3();
  for (let i = v0; i < v1; i++) box.expandByPoint(p.fromBufferAttribute(position, i));
  return box.applyMatrix4(mesh.matrixWorld);
}

function screenOf(id) {
  const found = locate(id);
  if (!found) return null;
  const box = assetBox(found);
  // The top of a building (its roof), the centre of anything else.
  const point = box.getCenter(new THREE.Vector3());
  if (found.entry.kind === "building") point.y = box.max.y;
  point.project(camera);
  const rect = renderer.domElement.getBoundingClientRect();
  return { x: rect.left + (point.x + 1) / 2 * rect.width, y: rect.top + (1 - point.y) / 2 * rect.height };
}

// --- panels -------------------------------------------------------------------------------------------------------
function label(group, value) {
  return (tr()[group] && tr()[group][value]) || value;
}

function formatValue(key, value) {
  if (value === null || value === undefined || value === "") return "–";
  if (typeof value === "boolean") return value ? t("yes") : t("no");
  if (key === "use") return label("use", value);
  if (key === "kind") return label("kind", value);
  if (key === "network") return t(value);
  if (key === "quantity") return label("quantity", value);
  if (typeof value === "number") return Number.isInteger(value) ? String(value) : value.toFixed(2);
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

function renderInspect(id) {
  const asset = state.meta && state.meta.assets[id];
  if (!asset) { $("#inspect").hidden = true; return; }
  $("#inspect").hidden = false;
  $("#inspect").dataset.asset = id;
  $("#inspect-title").textContent = `${label("type", asset.type)} ${asset.id}`;
  const rows = [];
  const fields = tr().field;
  for (const [key, value] of Object.entries(asset)) {
    if (key === "type" || key === "attrs") continue;
    rows.push([fields[key] || key, formatValue(key, value), key]);
  }
  for (const [key, value] of Object.entries(asset.attrs || {})) rows.push([key, formatValue(key, value), key]);
  const tbody = $("#inspect-table tbody");
  tbody.replaceChildren(...rows.map(([name, value, key]) => {
    const row = document.createElement("tr");
    row.dataset.field = key;
    const th = document.createElement("th");
    th.textContent = name;
    const td = document.createElement("td");
    td.textContent = value;
    row.append(th, td);
    return row;
  }));
}

function renderLegend() {
  const meta = state.meta;
  if (!meta) return;
  const present = new Set(meta.meshes.map((m) => m.use).filter(Boolean));
  const networks = new Set(meta.meshes.map((m) => m.network).filter(Boolean));
  const parts = [`<div class="group">${esc(t("networks"))}</div>`];
  for (const [net, colour] of Object.entries(meta.legend.network)) {
    if (networks.has(net)) parts.push(`<span><i class="pipe" style="background:${colour}"></i>${esc(t(net))}</span>`);
  }
  parts.push(`<div class="group">${esc(t("uses"))}</div>`);
  for (const [use, colour] of Object.entries(meta.legend.use)) {
    if (present.has(use)) parts.push(`<span><i style="background:${colour}"></i>${esc(label("use", use))}</span>`);
  }
  $("#legend").innerHTML = parts.join("");
  $("#scale-note").textContent = tr().scaleNote(meta.options.pipe_radius_scale);
}

function showStatus() {
  const el = $("#status");
  if (!state.stats || state.stats.loadMs === undefined) return;
  el.textContent = tr().ready(state.stats);
  el.dataset.loadMs = state.stats.loadMs;
  el.dataset.ready = "1";
}

function applyLang() {
  document.documentElement.lang = state.lang === "zh" ? "zh-CN" : "en";
  document.querySelectorAll("[data-i18n]").forEach((el) => {
    const text = t(el.dataset.i18n);
    if (typeof text === "string") el.textContent = text;
  });
  document.title = t("title") + " · Lifeline Twin";
  $("#lang").textContent = t("lang");
  renderLegend();
  showStatus();
  if (state.selected) renderInspect(state.selected);
}

function esc(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

// --- sampling, for tests and health checks ----------------------------------------------------------------------
function coverage(onlyLayers) {
  // Fraction of pixels that are not background, drawing only *onlyLayers* (all visible layers if omitted).
  const saved = [];
  if (onlyLayers) {
    for (const [layer, meshes] of state.byLayer) {
      for (const mesh of meshes) { saved.push([mesh, mesh.visible]); mesh.visible = onlyLayers.includes(layer); }
    }
  }
  renderer.render(scene, camera);
  const gl = renderer.getContext();
  const w = gl.drawingBufferWidth, h = gl.drawingBufferHeight;
  const pixels = new Uint8Array(w * h * 4);
  gl.readPixels(0, 0, w, h, gl.RGBA, gl.UNSIGNED_BYTE, pixels);
  for (const [mesh, visible] of saved) mesh.visible = visible;
  requestRender();
  const [r0, g0, b0] = [(BACKGROUND >> 16) & 255, (BACKGROUND >> 8) & 255, BACKGROUND & 255];
  let drawn = 0, total = 0;
  for (let i = 0; i < pixels.length; i += 16) {
    total += 1;
    if (Math.abs(pixels[i] - r0) + Math.abs(pixels[i + 1] - g0) + Math.abs(pixels[i + 2] - b0) > 24) drawn += 1;
  }
  return drawn / total;
}

function setSensorColour(sensorId, css) {
  // Live state hook: recolour one sensor marker (e.g. by warning grade).
  const id = sensorId.startsWith("sensor:") ? sensorId : "sensor:" + sensorId;
  const found = locate(id);
  if (!found) return false;
  const colours = found.mesh.geometry.getAttribute("color");
  const colour = new THREE.Color(css);
  const v0 = found.entry.vertex_offsets[found.index], v1 = found.entry.vertex_offsets[found.index + 1];
  for (let i = v0; i < v1; i++) colours.setXYZ(i, colour.r, colour.g, colour.b);
  colours.needsUpdate = true;
  requestRender();
  return true;
}

// --- wiring -------------------------------------------------------------------------------------------------------
let down = null;
renderer.domElement.addEventListener("pointerdown", (ev) => { down = [ev.clientX, ev.clientY]; });
renderer.domElement.addEventListener("pointerup", (ev) => {
  if (!down || Math.hypot(ev.clientX - down[0], ev.clientY - down[1]) > 4) return;  // a drag, not a click
  const hit = assetAt(ev.clientX, ev.clientY);
  select(hit ? hit.id : null);
});
document.querySelectorAll("input[data-layer]").forEach((box) =>
  box.addEventListener("change", () => setLayer(box.dataset.layer, box.checked)));
document.querySelectorAll("[data-ground]").forEach((b) =>
  b.addEventListener("click", () => setGround(b.dataset.ground)));
$("#inspect-close").addEventListener("click", () => select(null));
$("#reset-view").addEventListener("click", resetView);
$("#lang").addEventListener("click", () => {
  state.lang = state.lang === "zh" ? "en" : "zh";
  localStorage.setItem("lifeline.lang", state.lang);
  applyLang();
});
applyLang();
resize();

const ready = loadScene();
window.lifelineScene = {
  ready,
  get loadMs() { return state.stats ? state.stats.loadMs : null; },
  get timings() { return state.timings; },
  get meta() { return state.meta; },
  get ground() { return state.ground; },
  pick(clientX, clientY) { const hit = assetAt(clientX, clientY); return select(hit ? hit.id : null); },
  select, screenOf, focus, setLayer, setGround, setSensorColour, coverage, resetView,
  layers: LAYERS,
};
ready.catch((err) => {
  console.error(err);
  const el = $("#status");
  el.textContent = t("failed") + err.message;
  el.classList.add("error");
  el.dataset.error = err.message;
});

// --- live state: sensor markers take the colour of their worst active warning --------------------------------------
const GRADE_CSS = { 1: "#e53935", 2: "#fb8c00", 3: "#fdd835", 4: "#1e88e5" };
const liveGrades = new Map();  // sensor id -> {cause_key -> grade}
const baseColour = new Map();  // sensor id -> its marker colour before any warning

function paintSensor(sensorId) {
  const found = locate("sensor:" + sensorId);
  if (!found) return;
  if (!baseColour.has(sensorId)) {
    const colours = found.mesh.geometry.getAttribute("color");
    const v0 = found.entry.vertex_offsets[found.index];
    baseColour.set(sensorId, new THREE.Color(colours.getX(v0), colours.getY(v0), colours.getZ(v0)).getStyle());
  }
  const causes = liveGrades.get(sensorId);
  const worst = causes && causes.size ? Math.min(...causes.values()) : null;
  setSensorColour(sensorId, worst !== null ? GRADE_CSS[worst] : baseColour.get(sensorId));
}

function applyAlert(alert) {
  if (!alert.sensor_id) return;
  const causes = liveGrades.get(alert.sensor_id) || new Map();
  if (alert.active) causes.set(alert.cause_key, alert.grade); else causes.delete(alert.cause_key);
  liveGrades.set(alert.sensor_id, causes);
  paintSensor(alert.sensor_id);
}

async function followLiveState() {
  try {
    const res = await fetch("/api/alerts?active=true&limit=1000");
    if (res.ok) for (const alert of await res.json()) applyAlert(alert);
  } catch (err) { return; }  // a scene served without the live API (file export) simply stays static
  const proto = location.protocol === "https:" ? "wss" : "ws";
  const connect = () => {
    const ws = new WebSocket(`${proto}://${location.host}/ws/alerts`);
    ws.onmessage = (ev) => { const msg = JSON.parse(ev.data); if (msg.type === "alert") applyAlert(msg.alert); };
    ws.onclose = () => setTimeout(connect, 3000);
  };
  connect();
}
function sensorColour(sensorId) {
  const found = locate("sensor:" + sensorId);
  if (!found) return null;
  const colours = found.mesh.geometry.getAttribute("color");
  const v0 = found.entry.vertex_offsets[found.index];
  return new THREE.Color(colours.getX(v0), colours.getY(v0), colours.getZ(v0)).getHexString();
}

ready.then(followLiveState);
Object.assign(window.lifelineScene, { sensorColour });
