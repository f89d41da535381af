// Lifeline Twin 3D scene: the city's buildings above ground and its pipe networks below, from /api/scene.glb and
// /api/scene/meta.json (written by twin.scene.export_scene). Chinese first, English on request.
import * as THREE from "three";
import { OrbitControls } from "three/addons/controls/OrbitControls.js";
import { GLTFLoader } from "three/addons/loaders/GLTFLoader.js";
import { mergeGeometries } from "three/addons/utils/BufferGeometryUtils.js";

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
    alerts: "实时预警", noAlerts: "暂无预警", connOn: "实时连接", connOff: "未连接", nowhere: "无法定位",
    sensorStates: "监测点状态", st_g1: "Ⅰ级 红色", st_g2: "Ⅱ级 橙色", st_g3: "Ⅲ级 黄色", st_g4: "Ⅳ级 蓝色",
    st_normal: "正常", st_offline: "离线", normalLegend: "正常（管网色）",
    alertState: { raised: "待响应", acknowledged: "已叫应", dispatched: "已派单", resolved: "已处置",
      rechecked: "已复查", closed: "已关闭" },
    cleared: "已解除", escalated: "已升级", latest: "最新值", noData: "无数据", activeAlerts: "活动预警",
    range: { "1h": "1小时", "6h": "6小时", "24h": "24小时", "7d": "7天" },
    chartNote: (s) => s.step ? `${s.source} · 每 ${s.step} 均值（阴影为最小–最大） · ${s.n} 点` : `原始读数 · ${s.n} 点`,
    summary: (c) => `监测点 ${c.sensors} · 离线 ${c.offline} · 预警点位 ${c.alarmed}`,
    soundOff: "开启声音", soundOn: "声音已开", soundPending: "点击启用声音", drillTag: "演练 DRILL",
    drillBanner: (nets) => "演练 DRILL" + (nets.length ? " · " + nets.map((n) => I18N.zh[n] || n).join("、") : ""),
    act: { acknowledge: "叫应", dispatch: "派单", resolve: "处置完成", recheck: "复查通过", reopen: "复查未通过",
      close: "关闭" },
    assignee: "派往（队伍或人员）", task: "任务内容", note: "备注（可空）", submit: "提交", cancel: "取消",
    actFailed: "操作失败", riskLayer: "内涝风险", riskLegend: "内涝风险图", pond: "积水区（深度）",
    riskNote: (p) => p.whatif
      ? `快速推演（假设）· ${p.whatif.return_period_years} 年一遇、${p.whatif.duration_min} 分钟暴雨 · ` +
        `风险对象 ${p.graded} 个 · 积水区 ${p.ponds} 处`
      : `${p.source === "nowcast" ? "临近预报" : p.source === "surrogate" ? "快速推演" : p.source} · ` +
        `发布 ${p.issued} · 风险对象 ${p.graded} 个 · 积水区 ${p.ponds} 处`,
    whatifTitle: "快速推演 · 假设暴雨", whatifRp: "重现期（年）", whatifDuration: "历时（分钟）", whatifRun: "推演",
    whatifLive: "返回实况", whatifHint: "由代理模型即时计算，不运行 SWMM，不保存", whatifBusy: "计算中…",
    whatifFailed: "推演失败",
    whatifNote: (p) => `假设 ${p.whatif.return_period_years} 年一遇、${p.whatif.duration_min} 分钟暴雨：` +
      `风险对象 ${p.graded} 个，积水区 ${p.ponds} 处，计算 ${p.compute_ms} ms（代理模型，${p.surrogate.storms} 场训练暴雨）` +
      (p.outside_training.length ? `；超出训练范围（${p.outside_training.join("、")}），结果仅供参考` : ""),
    riskGrade: { 1: "Ⅰ级 极高", 2: "Ⅱ级 高", 3: "Ⅲ级 中", 4: "Ⅳ级 低" },
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
    alerts: "Live alerts", noAlerts: "No alerts", connOn: "live", connOff: "offline", nowhere: "no location",
    sensorStates: "Sensor state",
    st_g1: "Grade I red", st_g2: "Grade II orange", st_g3: "Grade III yellow", st_g4: "Grade IV blue",
    st_normal: "Normal", st_offline: "Offline", normalLegend: "Normal (network colour)",
    alertState: { raised: "new", acknowledged: "acknowledged", dispatched: "dispatched", resolved: "resolved",
      rechecked: "re-checked", closed: "closed" },
    cleared: "cleared", escalated: "escalated", latest: "Latest", noData: "no data", activeAlerts: "Active alerts",
    range: { "1h": "1 h", "6h": "6 h", "24h": "24 h", "7d": "7 d" },
    chartNote: (s) => s.step ? `${s.source} · ${s.step} means (band: min–max) · ${s.n} points`
      : `raw readings · ${s.n} points`,
    summary: (c) => `${c.sensors} sensors · ${c.offline} offline · places in alarm: ${c.alarmed}`,
    soundOff: "Turn sound on", soundOn: "Sound on", soundPending: "Click to allow sound", drillTag: "演练 DRILL",
    drillBanner: (nets) => "演练 DRILL" + (nets.length ? " · " + nets.map((n) => I18N.en[n] || n).join(", ") : ""),
    act: { acknowledge: "Acknowledge", dispatch: "Dispatch", resolve: "Resolved", recheck: "Re-check OK",
      reopen: "Re-check failed", close: "Close" },
    assignee: "Dispatch to (team or person)", task: "Task", note: "Note (optional)", submit: "Submit",
    cancel: "Cancel", actFailed: "Action failed", riskLayer: "Flood risk", riskLegend: "Waterlogging risk",
    pond: "Ponding (depth)",
    riskNote: (p) => p.whatif
      ? `what-if · a ${p.whatif.return_period_years}-year, ${p.whatif.duration_min}-min storm · ` +
        `${p.graded} places at risk · ${p.ponds} ponds`
      : `${p.source} · issued ${p.issued} · ${p.graded} places at risk · ${p.ponds} ponds`,
    whatifTitle: "What-if storm", whatifRp: "Return period (years)", whatifDuration: "Duration (min)",
    whatifRun: "Show", whatifLive: "Back to live", whatifHint: "Computed at once by the surrogate: no SWMM run, not stored",
    whatifBusy: "Computing…", whatifFailed: "What-if failed",
    whatifNote: (p) => `A ${p.whatif.return_period_years}-year, ${p.whatif.duration_min}-min storm: ` +
      `${p.graded} places at risk, ${p.ponds} ponds, computed in ${p.compute_ms} ms (surrogate, ` +
      `${p.surrogate.storms} training storms)` +
      (p.outside_training.length ? `; outside its training range (${p.outside_training.join(", ")}): indicative only` : ""),
    riskGrade: { 1: "Grade I very high", 2: "Grade II high", 3: "Grade III medium", 4: "Grade IV low" },
  },
};
const LAYERS = ["buildings", "drainage", "water", "gas", "sensors", "streets", "risk"];
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
  idIndex: null,        // asset id -> [object, index in its mesh], built on first use
};

// Live state (/api/sensors, /api/alerts, /ws/alerts): markers take the colour of their worst active alert.
const GRADE_CSS = { 1: "#e53935", 2: "#fb8c00", 3: "#fdd835", 4: "#1e88e5" };
const OFFLINE_CSS = "#5f6f80";
const STATE_CSS = { g1: GRADE_CSS[1], g2: GRADE_CSS[2], g3: GRADE_CSS[3], g4: GRADE_CSS[4], normal: "#26c6da",
  offline: OFFLINE_CSS };
const GRADE_ROMAN = { 1: "Ⅰ", 2: "Ⅱ", 3: "Ⅲ", 4: "Ⅳ" };
// Time-series ranges: raw readings for the last hour, the 1-minute and 1-hour rollups for longer ones.
const RANGES = { "1h": [3600, null], "6h": [6 * 3600, "1m"], "24h": [24 * 3600, "10m"], "7d": [7 * 86400, "1h"] };
const FLASH_MS = 10000;
const live = {
  enabled: false,         // false when the server has no live API (a scene served from files)
  connected: false,
  sensors: new Map(),     // sensor id -> its /api/sensors record
  alerts: new Map(),      // alert id -> alert as last seen
  lastEventId: null,
  painted: new Map(),     // sensor id -> css colour its marker has
  baseColour: new Map(),  // sensor id -> css colour of its marker in the scene file
  extra: null,            // InstancedMesh: sensors the scene file does not hold, placed by x_m / y_m
  extraIds: [],           // instance -> sensor id
  extraIndex: new Map(),  // sensor id -> instance
  beacons: null,          // InstancedMesh: a pin over each place with an active alert
  flashes: new Map(),     // asset id -> { ring, until }: a ring pulsing round a new grade I / II alert
  repaintTimer: null,
  repaints: 0,            // how many times the live state was redrawn (bursts of events are one)
  repaintMs: 0,           // main-thread time spent on the live state (repaints, sensor list), ms
  sensorLoads: 0,         // how many times the sensor list was fetched
  frames: 0,              // frames drawn
  renderMs: 0,            // main-thread time spent issuing those frames to WebGL, ms
  flashIds: new Map(),    // alert id -> until when its list item flashes (performance.now() ms)
  chart: { sensorId: null, range: "1h", series: null },
};

// Sound for new grade I / II alerts (see setupSound), drills, the waterlogging risk map (see drawRiskMap).
const sound = { wanted: localStorage.getItem("lifeline.sound") === "on", ctx: null, state: "off", beeps: 0,
  pendingGrade: null, quietUntil: 0 };
const drillState = { on: false, networks: [] };
const POND_CSS = [[0.05, "#81d4fa"], [0.15, "#29b6f6"], [0.3, "#1e88e5"], [0.5, "#283593"]];
const RISK_LIFT_M = 0.6;
const risk = { props: null, group: null, features: 0, ponds: 0, graded: 0, field: undefined };
const whatif = { on: false, props: null, wired: false };

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
  sizeBeacons();
  drawFrame();
}

function drawFrame() {
  const started = performance.now();
  renderer.render(scene, camera);
  live.frames += 1;
  live.renderMs += performance.now() - started;
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
  if (live.extra && live.extra.visible) targets.push(live.extra);
  const hit = raycaster.intersectObjects(targets, false)[0];
  if (!hit) return null;
  if (hit.object === live.extra) return { id: "sensor:" + live.extraIds[hit.instanceId], extra: true };
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
  // An asset of the scene file, or a live marker of a sensor the file does not hold.
  if (!state.idIndex) {
    state.idIndex = new Map();
    for (const o of state.objects) {
      if (!o || !PICKABLE.has(o.entry.kind)) continue;
      o.entry.ids.forEach((assetId, k) => state.idIndex.set(assetId, [o, k]));
    }
  }
  const at = state.idIndex.get(id);
  if (at) return { id, entry: at[0].entry, index: at[1], mesh: at[0].mesh };
  const k = id && id.startsWith("sensor:") ? live.extraIndex.get(id.slice(7)) : undefined;
  return k === undefined ? null : { id, extra: true, index: k };
}

function select(id) {
  clearHighlight();
  state.selected = id;
  const found = id && locate(id);
  if (!found) {
    $("#inspect").hidden = true;
    live.chart.sensorId = null;
    requestRender();
    return null;
  }
  if (found.extra) {
    state.highlight = extraHighlight(found.index);
    scene.add(state.highlight);
    renderInspect(id);
    requestRender();
    return id;
  }
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

function assetBox({ mesh, entry, index, extra }) {
  if (extra) return extraBox(index);
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
  if (found.entry && found.entry.kind === "building") point.y = box.max.y;
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
  const asset = (state.meta && state.meta.assets[id]) || liveAsset(id);
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
  showSensorLive(asset.type === "sensor" ? asset.id : null);
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
  parts.push(`<div class="group">${esc(t("sensorStates"))}</div>`);
  for (const [key, colour] of Object.entries(STATE_CSS)) {
    const name = t(key === "normal" ? "normalLegend" : "st_" + key);
    parts.push(`<span><i class="dot" style="background:${colour}"></i>${esc(name)}</span>`);
  }
  if (risk.props) {
    parts.push(`<div class="group">${esc(t("riskLegend"))}</div>`);
    for (const g of [1, 2, 3, 4]) {
      parts.push(`<span data-risk-grade="${g}"><i style="background:${GRADE_CSS[g]};opacity:0.75"></i>` +
        `${esc(tr().riskGrade[g])}</span>`);
    }
    parts.push(`<div class="group">${esc(t("pond"))}</div>`);
    for (const [depth, css] of POND_CSS) parts.push(`<span data-pond="${depth}"><i style="background:${css}"></i>≥ ${depth} m</span>`);
    parts.push(`<div class="note" id="risk-note" style="grid-column: 1 / span 2">${esc(tr().riskNote(risk.props))}</div>`);
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
  renderAlertList();
  setConn(live.connected);
  renderSound();
  renderDrill();
  renderWhatIfNote();
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
  // Upload only this marker's vertices: the sensor mesh of a big city holds hundreds of thousands.
  colours.addUpdateRange(v0 * colours.itemSize, (v1 - v0) * colours.itemSize);
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

// --- live state: sensors coloured by their worst active alert, alerts placed where they are ---------------------
async function followLiveState() {
  try {
    await loadSensors();
  } catch (err) {
    console.warn("no live state:", err.message);  // a scene served without the live API stays static
    return;
  }
  live.enabled = true;
  $("#alerts-panel").hidden = false;
  try { live.user = await fetchOk("/api/session", "json"); } catch (err) { live.user = null; }
  setupSound();
  refreshDrill();
  setInterval(refreshDrill, 10000);
  loadRiskMap();
  setInterval(loadRiskMap, 60000);
  setupWhatIf();
  connectAlerts();  // first, so nothing raised while the list loads is missed
  try {
    // Every active alert (they colour the markers) and the latest cleared ones (for the list).
    const [active, recent] = await Promise.all([fetchOk("/api/alerts?active=true&limit=1000", "json"),
      fetchOk("/api/alerts?limit=100", "json")]);
    // Alerts already received over the websocket are newer than this snapshot: keep them.
    for (const a of [...active, ...recent]) if (!live.alerts.has(a.id)) live.alerts.set(a.id, a);
  } catch (err) { console.error(err); }
  scheduleRepaint();
  // Latest values only decide "offline" here: a slow refresh, never one per reading.
  setInterval(() => loadSensors().then(scheduleRepaint, () => {}), 30000);
}

async function loadSensors() {
  const rows = await fetchOk("/api/sensors", "json");
  const started = performance.now();
  live.sensors = new Map(rows.map((r) => [r.sensor_id, r]));
  placeExtraSensors();
  live.sensorLoads += 1;
  live.repaintMs += performance.now() - started;
}

function connectAlerts() {
  const proto = location.protocol === "https:" ? "wss" : "ws";
  const query = live.lastEventId !== null ? `?after=${live.lastEventId}` : "";
  const ws = new WebSocket(`${proto}://${location.host}/ws/alerts${query}`);
  ws.onopen = () => setConn(true);
  ws.onmessage = (ev) => {
    const msg = JSON.parse(ev.data);
    if (msg.type === "hello") {
      if (live.lastEventId === null) live.lastEventId = msg.last_event_id;
      return;
    }
    if (msg.type !== "alert") return;
    live.lastEventId = Math.max(live.lastEventId || 0, msg.event_id);
    const a = msg.alert;
    live.alerts.set(a.id, a);
    const loud = msg.event === "raised" || msg.event === "escalated" ||
      (msg.event === "updated" && a.active && a.state === "raised");
    if (loud && a.active && a.grade <= 2) {
      live.flashIds.set(a.id, performance.now() + FLASH_MS);
      setTimeout(scheduleRepaint, FLASH_MS + 50);  // to stop the flashing
      queueBeep(a.grade);
    }
    if (live.form && live.form.alertId === a.id && msg.event === live.form.action) live.form = null;  // done
    noteAlertReading(msg);
    scheduleRepaint();
  };
  ws.onclose = () => { setConn(false); setTimeout(connectAlerts, 3000); };
}

function setConn(on) {
  live.connected = on;
  const el = $("#conn");
  el.textContent = t(on ? "connOn" : "connOff");
  el.className = "conn " + (on ? "on" : "off");
}

function scheduleRepaint() {
  // A burst of alert events (a storm raising dozens) becomes one repaint.
  if (live.repaintTimer) return;
  live.repaintTimer = setTimeout(repaint, 150);
}

function noteAlertReading(msg) {
  // A detector's event carries the reading that caused it: the sensor's latest value, without fetching the whole
  // sensor list (thousands of sensors in a big city; the list is refreshed every 30 s for the offline state).
  const a = msg.alert;
  const s = a.sensor_id && live.sensors.get(a.sensor_id);
  if (!s || a.value === null || !["raised", "updated", "cleared"].includes(msg.event)) return;
  if (!s.latest_ts || new Date(msg.event_ts) >= new Date(s.latest_ts)) {
    s.latest_value = a.value;
    s.latest_ts = msg.event_ts;
  }
}

function worstBySensor() {
  const worst = new Map();
  for (const a of live.alerts.values()) {
    if (!a.active || !a.sensor_id) continue;
    if (!worst.has(a.sensor_id) || a.grade < worst.get(a.sensor_id)) worst.set(a.sensor_id, a.grade);
  }
  return worst;
}

function sensorState(sensorId, worst) {
  const grade = worst.get(sensorId);
  if (grade) return "g" + grade;
  const s = live.sensors.get(sensorId);
  if (!s) return "normal";  // in the scene file but unknown to the store: nothing to say about it
  if (!s.latest_ts) return "offline";
  const ageS = (Date.now() - new Date(s.latest_ts).getTime()) / 1000;
  return ageS > Math.max(3 * s.interval_s, 180) ? "offline" : "normal";
}

function repaint() {
  const started = performance.now();
  try { repaintNow(); } finally { live.repaintMs += performance.now() - started; }
}

function repaintNow() {
  live.repaintTimer = null;
  live.repaints += 1;
  forgetOldAlerts();
  const worst = worstBySensor();
  const ids = new Set([...live.sensors.keys(), ...live.painted.keys(), ...worst.keys()]);
  for (const id of ids) {
    const st = sensorState(id, worst);
    const css = st === "normal" ? baseColourOf(id) : st === "offline" ? OFFLINE_CSS : GRADE_CSS[st.slice(1)];
    if (css && live.painted.get(id) !== css && paintMarker(id, css)) live.painted.set(id, css);
  }
  placeBeacons();
  startFlashes();
  renderAlertList();
  if (live.chart.sensorId) renderSensorNow(live.chart.sensorId);
  requestRender();
}

function forgetOldAlerts() {
  // Every active alert stays, and the latest cleared ones: a page left open for weeks stays small.
  if (live.alerts.size <= 300) return;
  const cleared = [...live.alerts.values()].filter((a) => !a.active)
    .sort((a, b) => new Date(b.updated_at) - new Date(a.updated_at));
  for (const a of cleared.slice(200)) live.alerts.delete(a.id);
}

function baseColourOf(sensorId) {
  if (live.baseColour.has(sensorId)) return live.baseColour.get(sensorId);
  const s = live.sensors.get(sensorId);
  const net = s ? s.network : null;
  return (state.meta && state.meta.legend.network[net]) || "#b0bec5";
}

function paintMarker(sensorId, css) {
  const found = locate("sensor:" + sensorId);
  if (!found) return false;
  if (found.extra) {
    live.extra.setColorAt(found.index, new THREE.Color(css));
    live.extra.instanceColor.needsUpdate = true;
    return true;
  }
  if (!live.baseColour.has(sensorId)) live.baseColour.set(sensorId, "#" + sensorColour(sensorId));
  return setSensorColour(sensorId, css);
}

function sensorColour(sensorId) {
  const found = locate("sensor:" + sensorId);
  if (!found) return null;
  const c = new THREE.Color();
  if (found.extra) {
    live.extra.getColorAt(found.index, c);
    return c.getHexString();
  }
  const colours = found.mesh.geometry.getAttribute("color");
  const v0 = found.entry.vertex_offsets[found.index];
  return c.setRGB(colours.getX(v0), colours.getY(v0), colours.getZ(v0)).getHexString();
}

// --- sensors the scene file does not hold: markers placed from x_m / y_m through the scene's origin ---------------
const EXTRA_GEOMETRY = new THREE.OctahedronGeometry(1, 0);

function markerSize() {
  return (state.meta && state.meta.options.sensor_size_m) || 6;
}

function groundAt(x, z) {
  // Elevation of the terrain (scene metres) under a point, or the origin's when there is no terrain there.
  const terrain = (state.byLayer.get("ground") || []).filter((m) => m.geometry);
  raycaster.set(new THREE.Vector3(x, 1e4, z), new THREE.Vector3(0, -1, 0));
  const hit = raycaster.intersectObjects(terrain, false)[0];
  return hit ? hit.point.y : 0;
}

function placeExtraSensors() {
  if (!state.meta) return;
  const missing = [...live.sensors.values()].filter((s) => (s.x_m || s.y_m) && !locate("sensor:" + s.sensor_id));
  if (!missing.length) return;
  const old = live.extra;
  const kept = live.extraIds.length;
  const ids = [...live.extraIds, ...missing.map((s) => s.sensor_id)];
  const mesh = new THREE.InstancedMesh(EXTRA_GEOMETRY, new THREE.MeshLambertMaterial({ color: 0xffffff }), ids.length);
  const [ox, oy] = state.meta.origin_m;
  const size = markerSize();
  const m = new THREE.Matrix4();
  const c = new THREE.Color();
  ids.forEach((id, k) => {
    if (k < kept) {
      old.getMatrixAt(k, m);
      old.getColorAt(k, c);
    } else {
      // glTF axes: X = east - origin_x, Y = elevation - origin_z, Z = -(north - origin_y); a tall diamond standing
      // on the ground, as the scene file draws its sensors.
      const s = live.sensors.get(id);
      const x = s.x_m - ox, z = -(s.y_m - oy);
      m.compose(new THREE.Vector3(x, groundAt(x, z) + size, z), new THREE.Quaternion(),
        new THREE.Vector3(size / 2, size, size / 2));
      c.set(baseColourOf(id));
    }
    mesh.setMatrixAt(k, m);
    mesh.setColorAt(k, c);
  });
  mesh.visible = $("input[data-layer='sensors']").checked;
  const layer = (state.byLayer.get("sensors") || []).filter((x) => x !== old);
  if (old) {
    scene.remove(old);
    old.dispose();
    old.material.dispose();
  }
  live.extra = mesh;
  live.extraIds = ids;
  live.extraIndex = new Map(ids.map((id, k) => [id, k]));
  scene.add(mesh);
  state.byLayer.set("sensors", [...layer, mesh]);
  requestRender();
}

function extraBox(k) {
  const m = new THREE.Matrix4();
  live.extra.getMatrixAt(k, m);
  const size = markerSize();
  const centre = new THREE.Vector3().setFromMatrixPosition(m);
  return new THREE.Box3().setFromCenterAndSize(centre, new THREE.Vector3(size, 2 * size, size));
}

function extraHighlight(k) {
  const m = new THREE.Matrix4();
  live.extra.getMatrixAt(k, m);
  const mesh = new THREE.Mesh(EXTRA_GEOMETRY.clone(), new THREE.MeshBasicMaterial({ color: 0xffeb3b,
    transparent: true, opacity: 0.6, depthTest: false }));
  mesh.applyMatrix4(m);
  mesh.scale.multiplyScalar(1.3);
  mesh.renderOrder = 10;
  return mesh;
}

function liveAsset(id) {
  // The inspect panel's fields of a sensor known to the store but not to the scene file.
  const s = id && id.startsWith("sensor:") && live.sensors.get(id.slice(7));
  if (!s) return null;
  return { type: "sensor", id: s.sensor_id, name: s.name, network: s.network, quantity: s.quantity, unit: s.unit,
    asset_id: s.asset_id, district: s.district, x_m: s.x_m, y_m: s.y_m };
}

// --- alerts placed where they are ---------------------------------------------------------------------------------
function alertPlace(a) {
  // The alert's sensor, else its first localisation candidate the scene holds ("water:node:J0505" is the scene's
  // "water:J0505").
  if (a.sensor_id && locate("sensor:" + a.sensor_id)) return "sensor:" + a.sensor_id;
  for (const c of (a.detail && a.detail.candidates) || []) {
    const asset = typeof c === "string" ? c : c && c.asset;
    if (!asset) continue;
    const parts = asset.split(":");
    for (const id of [asset, parts.length === 3 ? `${parts[0]}:${parts[2]}` : null]) {
      if (id && locate(id)) return id;
    }
  }
  return null;
}

const BEACON_GEOMETRY = new THREE.CylinderGeometry(1, 1, 1, 10, 1, true).translate(0, 0.5, 0);
const BEACON_HEIGHT_M = 70;

function placeBeacons() {
  const worst = new Map();  // place -> worst grade of its active alerts
  for (const a of live.alerts.values()) {
    if (!a.active) continue;
    const place = alertPlace(a);
    if (place && (!worst.has(place) || a.grade < worst.get(place))) worst.set(place, a.grade);
  }
  if (live.beacons) {
    scene.remove(live.beacons);
    live.beacons.dispose();
    live.beacons.material.dispose();
    live.beacons = null;
  }
  if (!worst.size) return;
  const mesh = new THREE.InstancedMesh(BEACON_GEOMETRY, new THREE.MeshBasicMaterial({ color: 0xffffff,
    transparent: true, opacity: 0.75, depthWrite: false }), worst.size);
  mesh.userData.bases = [];
  for (const [place, grade] of worst) {
    const box = assetBox(locate(place));
    const base = box.getCenter(new THREE.Vector3());
    base.y = box.max.y;
    mesh.setColorAt(mesh.userData.bases.length, new THREE.Color(GRADE_CSS[grade]));
    mesh.userData.bases.push(base);
  }
  mesh.renderOrder = 5;
  mesh.frustumCulled = false;  // its bounding sphere is that of one unit cylinder
  live.beacons = mesh;
  scene.add(mesh);
  sizeBeacons();
}

function sizeBeacons() {
  // Beacons keep about the same width on screen: slim close up, still visible over the whole city.
  const mesh = live.beacons;
  if (!mesh) return;
  const distance = camera.position.distanceTo(controls.target);
  const width = THREE.MathUtils.clamp(distance / 300, 1.5, 14);
  if (mesh.userData.width && Math.abs(width / mesh.userData.width - 1) < 0.1) return;
  mesh.userData.width = width;
  const height = BEACON_HEIGHT_M * THREE.MathUtils.clamp(distance / 600, 1, 3);
  const m = new THREE.Matrix4();
  const quaternion = new THREE.Quaternion();
  const scale = new THREE.Vector3(width, height, width);
  mesh.userData.bases.forEach((base, k) => mesh.setMatrixAt(k, m.compose(base, quaternion, scale)));
  mesh.instanceMatrix.needsUpdate = true;
}

const RING_GEOMETRY = new THREE.RingGeometry(0.82, 1, 48).rotateX(-Math.PI / 2);

function startFlashes() {
  // New grade I and II alerts: a ring pulses around the place for a while.
  const now = performance.now();
  for (const [id, until] of live.flashIds) {
    if (until < now) continue;
    const a = live.alerts.get(id);
    const place = a && alertPlace(a);
    if (!place) continue;
    const old = live.flashes.get(place);
    if (old) { old.until = Math.max(old.until, until); continue; }
    const box = assetBox(locate(place));
    const ring = new THREE.Mesh(RING_GEOMETRY, new THREE.MeshBasicMaterial({ color: GRADE_CSS[a.grade],
      transparent: true, depthTest: false, side: THREE.DoubleSide }));
    ring.position.copy(box.getCenter(new THREE.Vector3()));
    ring.renderOrder = 11;
    scene.add(ring);
    live.flashes.set(place, { ring, until });
  }
  if (live.flashes.size) animate();
}

function updateFlashes(now) {
  for (const [place, f] of live.flashes) {
    if (now > f.until) {
      scene.remove(f.ring);
      f.ring.material.dispose();
      live.flashes.delete(place);
      continue;
    }
    const phase = (now % 1200) / 1200;
    const reach = THREE.MathUtils.clamp(camera.position.distanceTo(controls.target) / 20, 40, 160);
    f.ring.scale.setScalar(8 + (reach - 8) * phase);
    f.ring.material.opacity = 1 - phase;
  }
  if (live.beacons) live.beacons.material.opacity = live.flashes.size ? 0.55 + 0.4 * Math.sin(now / 150) ** 2 : 0.75;
  return live.flashes.size > 0;
}

// --- flying -------------------------------------------------------------------------------------------------------
let flight = null;
let animating = false;

function flyTo(id, distance = 170, elevationDeg = 38) {
  // Fly the camera in about a second to look at *id* from *distance* metres, keeping the current heading.
  const found = locate(id);
  if (!found) return false;
  const target = assetBox(found).getCenter(new THREE.Vector3());
  const heading = camera.position.clone().sub(controls.target);
  heading.y = 0;
  if (heading.lengthSq() < 1e-6) heading.set(0, 0, 1);
  heading.normalize();
  const up = THREE.MathUtils.degToRad(elevationDeg);
  const offset = heading.multiplyScalar(Math.cos(up) * distance);
  offset.y = Math.sin(up) * distance;
  flight = { fromPos: camera.position.clone(), fromTarget: controls.target.clone(),
    toPos: target.clone().add(offset), toTarget: target, start: performance.now(), ms: 1000 };
  document.body.dataset.flying = id;
  animate();
  return true;
}

function animate() {
  if (!animating) { animating = true; requestAnimationFrame(step); }
}

function step(now) {
  let more = false;
  if (flight) {
    const k = Math.min((now - flight.start) / flight.ms, 1);
    const e = k < 0.5 ? 2 * k * k : 1 - (-2 * k + 2) ** 2 / 2;
    camera.position.lerpVectors(flight.fromPos, flight.toPos, e);
    controls.target.lerpVectors(flight.fromTarget, flight.toTarget, e);
    controls.update();
    if (k >= 1) {
      flight = null;
      delete document.body.dataset.flying;
    } else {
      more = true;
    }
  }
  more = updateFlashes(now) || more;
  sizeBeacons();
  drawFrame();
  if (more) requestAnimationFrame(step); else animating = false;
}

function showAlert(alertId) {
  const a = live.alerts.get(alertId);
  const place = a && alertPlace(a);
  live.flashIds.delete(alertId);  // seen: the list item stops flashing, the ring on the scene runs its time
  document.querySelectorAll("#alert-list li.picked").forEach((li) => li.classList.remove("picked"));
  const li = document.querySelector(`#alert-list li[data-alert-id="${alertId}"]`);
  if (li) { li.classList.add("picked"); li.classList.remove("flash"); }
  if (!place) return null;
  select(place);
  flyTo(place);
  return place;
}

// --- the alert list -----------------------------------------------------------------------------------------------
function fmtTime(iso) {
  return iso ? new Date(iso).toLocaleString(state.lang === "zh" ? "zh-CN" : "en-GB", { hour12: false,
    month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit" }) : "–";
}

function renderAlertList() {
  const ul = $("#alert-list");
  if (!ul || !live.enabled) return;
  const list = [...live.alerts.values()].sort((a, b) => (b.active - a.active) ||
    (a.active ? a.grade - b.grade : 0) || (new Date(b.updated_at) - new Date(a.updated_at)));
  const now = performance.now();
  for (const [id, until] of live.flashIds) if (until < now) live.flashIds.delete(id);
  const picked = document.querySelector("#alert-list li.picked");
  const pickedId = picked ? picked.dataset.alertId : null;
  const active = document.activeElement;
  const focused = active && active.closest && active.closest("#alert-list form") ? active.name : null;
  ul.replaceChildren(...list.slice(0, 100).map((a) => {
    const li = document.createElement("li");
    const place = alertPlace(a);
    li.className = `g${a.grade}` + (a.active ? "" : " cleared") + (live.flashIds.has(a.id) ? " flash" : "") +
      (place ? "" : " nowhere") + (String(a.id) === pickedId ? " picked" : "");
    li.dataset.alertId = a.id;
    if (place) li.dataset.place = place;
    const where = a.sensor_id || (place ? place : t("nowhere"));
    const escalated = a.escalation_level > 0 && a.state === "raised"
      ? `<span class="esc">${esc(t("escalated"))} ${a.escalation_level}</span>` : "";
    const drill = a.drill_id !== null && a.drill_id !== undefined;
    if (drill) { li.classList.add("drill"); li.dataset.drill = a.drill_id; }
    const stateText = (tr().alertState[a.state] || a.state) + (a.active ? "" : " · " + t("cleared"));
    li.innerHTML = `<div class="msg"><span class="chip g${a.grade}">${GRADE_ROMAN[a.grade]}</span>` +
      (drill ? `<span class="drill-tag">${esc(t("drillTag"))}</span> ` : "") +
      `${esc(state.lang === "zh" ? a.message : a.message_en)}</div>` +
      `<div class="meta"><span>${esc(t(a.network))}</span><span>${esc(where)}</span>` +
      `<span>${esc(fmtTime(a.updated_at))}</span>` +
      `<span class="state" data-state="${esc(a.state)}">${esc(stateText)}</span>` +
      (a.assignee ? `<span class="assignee">→ ${esc(a.assignee)}</span>` : "") +
      `${escalated}</div>` + actionsHtml(a);
    li.addEventListener("click", (ev) => {
      if (ev.target.closest(".actions, form")) return;  // acting on the alert, not flying to it
      showAlert(a.id);
    });
    wireActions(li, a);
    return li;
  }));
  restoreFormFocus(focused);
  $("#alerts-panel").classList.toggle("alarm", [...live.flashIds.keys()].some((id) => {
    const a = live.alerts.get(id);
    return a && a.active && a.grade <= 2;
  }));
  $("#alert-count").textContent = list.filter((a) => a.active).length;
  $("#no-alerts").hidden = list.length > 0;
  const worst = worstBySensor();
  const offline = [...live.sensors.keys()].filter((id) => sensorState(id, worst) === "offline").length;
  $("#live-summary").textContent = tr().summary({ sensors: live.sensors.size, offline,
    alarmed: live.beacons ? live.beacons.count : 0 });
}

// --- one sensor: its latest value and a time-series chart ---------------------------------------------------------
function showSensorLive(sensorId) {
  const box = $("#sensor-live");
  const known = sensorId && live.sensors.has(sensorId);
  box.hidden = !known;
  if (!known) { live.chart.sensorId = null; return; }
  renderSensorNow(sensorId);
  document.querySelectorAll("[data-range]").forEach((b) => {
    b.textContent = tr().range[b.dataset.range];
    b.classList.toggle("on", b.dataset.range === live.chart.range);
  });
  if (live.chart.sensorId === sensorId && live.chart.series) {
    drawChart(live.chart.series, live.sensors.get(sensorId));
  } else {
    live.chart.sensorId = sensorId;
    loadChart();
  }
}

function renderSensorNow(sensorId) {
  const s = live.sensors.get(sensorId);
  if (!s) return;
  const worst = worstBySensor();
  const st = sensorState(sensorId, worst);
  const value = s.latest_value === null ? t("noData") : `${s.latest_value.toFixed(2)} ${s.unit}`;
  const active = [...live.alerts.values()].filter((a) => a.active && a.sensor_id === sensorId).length;
  $("#live-now").innerHTML = `<span class="state-dot" style="background:${STATE_CSS[st]}"></span>` +
    `<b>${esc(t("st_" + st))}</b><span>${esc(t("latest"))} ${esc(value)}</span>` +
    `<span>${esc(fmtTime(s.latest_ts))}</span>` + (active ? `<span>${esc(t("activeAlerts"))} ${active}</span>` : "");
  $("#sensor-live").dataset.state = st;
}

async function loadChart() {
  const sensorId = live.chart.sensorId;
  const range = live.chart.range;
  const [seconds, stepText] = RANGES[range];
  const to = new Date(), from = new Date(to.getTime() - seconds * 1000);
  const query = new URLSearchParams({ from: from.toISOString(), to: to.toISOString() });
  if (stepText) query.set("step", stepText);
  $("#chart").dataset.loading = "1";
  try {
    const series = await fetchOk(`/api/sensors/${encodeURIComponent(sensorId)}/readings?${query}`, "json");
    if (live.chart.sensorId !== sensorId || live.chart.range !== range) return;  // another one was asked for
    series.from = from.getTime();
    series.to = to.getTime();
    series.stepText = stepText;
    live.chart.series = series;
    drawChart(series, live.sensors.get(sensorId));
  } catch (err) {
    $("#chart").innerHTML = `<text x="150" y="80" class="empty">${esc(err.message)}</text>`;
  } finally {
    delete $("#chart").dataset.loading;
  }
}

function drawChart(series, s) {
  const svg = $("#chart");
  const W = 300, H = 150, L = 40, R = 8, T = 8, B = 20;
  const points = series.points;
  $("#chart-note").textContent = tr().chartNote({ source: series.source, step: series.stepText, n: points.length });
  svg.dataset.points = points.length;
  if (!points.length) {
    svg.innerHTML = `<text x="${W / 2}" y="${H / 2}" class="empty">${esc(t("noData"))}</text>`;
    return;
  }
  const banded = series.step_s !== null;
  const ts = points.map((p) => new Date(p.ts).getTime());
  const values = points.flatMap((p) => (banded ? [p.min, p.max] : [p.value]));
  let lo = Math.min(...values), hi = Math.max(...values);
  // Alarm limits near the data are drawn too; far-off ones would flatten the curve.
  const span = Math.max(hi - lo, Math.abs(hi) * 0.1, 0.1);
  const limits = (s.limits || []).filter((l) => l.threshold > lo - span && l.threshold < hi + span);
  for (const l of limits) { lo = Math.min(lo, l.threshold); hi = Math.max(hi, l.threshold); }
  if (hi === lo) { hi += 1; lo -= 1; }
  const pad = (hi - lo) * 0.08;
  lo -= pad; hi += pad;
  const t0 = series.from, t1 = series.to;
  const x = (v) => L + ((v - t0) / (t1 - t0)) * (W - L - R);
  const y = (v) => T + (1 - (v - lo) / (hi - lo)) * (H - T - B);
  const colour = (state.meta && state.meta.legend.network[s.network]) || "#26c6da";
  let html = "";
  for (let i = 0; i <= 3; i++) {
    const v = lo + ((hi - lo) * i) / 3;
    html += `<line x1="${L}" x2="${W - R}" y1="${y(v).toFixed(1)}" y2="${y(v).toFixed(1)}" class="grid"/>` +
      `<text x="${L - 4}" y="${(y(v) + 3).toFixed(1)}" class="tick" text-anchor="end">${fmtNumber(v)}</text>`;
  }
  for (const l of limits) {
    const g = { I: 1, II: 2, III: 3, IV: 4 }[l.grade];
    html += `<line x1="${L}" x2="${W - R}" y1="${y(l.threshold).toFixed(1)}" y2="${y(l.threshold).toFixed(1)}"` +
      ` stroke="${GRADE_CSS[g]}" stroke-dasharray="4 3" class="limit"/>`;
  }
  if (banded) {
    const upper = points.map((p, i) => `${x(ts[i]).toFixed(1)},${y(p.max).toFixed(1)}`);
    const lower = points.map((p, i) => `${x(ts[i]).toFixed(1)},${y(p.min).toFixed(1)}`).reverse();
    html += `<polygon points="${upper.concat(lower).join(" ")}" fill="${colour}" opacity="0.25" class="band"/>`;
  }
  const path = points.map((p, i) => `${i ? "L" : "M"}${x(ts[i]).toFixed(1)},${y(p.value).toFixed(1)}`).join(" ");
  html += `<path d="${path}" fill="none" stroke="${colour}" stroke-width="1.6" class="series"/>`;
  const last = points[points.length - 1];
  html += `<circle cx="${x(ts[ts.length - 1]).toFixed(1)}" cy="${y(last.value).toFixed(1)}" r="2.5" fill="${colour}"/>`;
  const timeLabel = (ms) => new Date(ms).toLocaleString(state.lang === "zh" ? "zh-CN" : "en-GB",
    t1 - t0 >= 86400 * 1000 ? { month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", hour12: false }
      : { hour: "2-digit", minute: "2-digit", hour12: false });
  html += `<text x="${L}" y="${H - 5}" class="tick">${esc(timeLabel(t0))}</text>` +
    `<text x="${(L + W - R) / 2}" y="${H - 5}" class="tick" text-anchor="middle">${esc(s.unit)}</text>` +
    `<text x="${W - R}" y="${H - 5}" class="tick" text-anchor="end">${esc(timeLabel(t1))}</text>`;
  svg.innerHTML = html;
}

function fmtNumber(v) {
  const a = Math.abs(v);
  return a >= 100 ? v.toFixed(0) : a >= 10 ? v.toFixed(1) : v.toFixed(2);
}

document.querySelectorAll("[data-range]").forEach((b) => b.addEventListener("click", () => {
  live.chart.range = b.dataset.range;
  live.chart.series = null;
  document.querySelectorAll("[data-range]").forEach((x) => x.classList.toggle("on", x === b));
  loadChart();
}));


// --- acting on an alert from the list (POST /api/alerts/{id}/actions; the new state comes over the websocket) -------
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

function allowedActions(a) {
  const role = live.user ? live.user.role : null;
  return (NEXT_ACTIONS[a.state] || []).filter((act) => role && ACTION_ROLES[act].includes(role));
}

function actionsHtml(a) {
  const acts = allowedActions(a);
  if (!acts.length) return "";
  const buttons = acts.map((act) =>
    `<button type="button" class="act" data-action="${act}">${esc(tr().act[act])}</button>`).join("");
  const form = live.form && live.form.alertId === a.id && acts.includes(live.form.action) ? formHtml(live.form) : "";
  return `<div class="actions">${buttons}</div>${form}`;
}

function formHtml(f) {
  // Dispatch needs who and what; the other steps take an optional note. Acknowledging needs nothing.
  const input = (name, required) => `<input name="${name}" placeholder="${esc(t(name))}"` +
    ` value="${esc(f[name] || "")}"${required ? " required" : ""} maxlength="${name === "assignee" ? 200 : 2000}">`;
  const fields = f.action === "dispatch" ? input("assignee", true) + input("task", true) : input("note", false);
  return `<form class="act-form" data-action="${f.action}">${fields}<div class="row">` +
    `<button type="submit" class="on">${esc(tr().act[f.action])} · ${esc(t("submit"))}</button>` +
    `<button type="button" class="cancel">${esc(t("cancel"))}</button></div>` +
    (f.error ? `<div class="act-error">${esc(t("actFailed"))}: ${esc(f.error)}</div>` : "") + "</form>";
}

function wireActions(li, a) {
  li.querySelectorAll("button.act").forEach((b) => b.addEventListener("click", () => {
    const action = b.dataset.action;
    if (action === "acknowledge") {
      act(a.id, { action });
      return;
    }
    live.form = { alertId: a.id, action };
    renderAlertList();
    const first = document.querySelector(`#alert-list li[data-alert-id="${a.id}"] form input`);
    if (first) first.focus();
  }));
  const form = li.querySelector("form.act-form");
  if (!form) return;
  form.addEventListener("input", (ev) => { if (live.form) live.form[ev.target.name] = ev.target.value; });
  form.querySelector("button.cancel").addEventListener("click", () => { live.form = null; renderAlertList(); });
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const f = live.form;
    const body = { action: f.action, note: (f.note || "").trim() };
    if (f.action === "dispatch") {
      body.assignee = (f.assignee || "").trim();
      body.task = (f.task || "").trim();
    }
    act(a.id, body);
  });
}

function restoreFormFocus(name) {
  // The list is redrawn as alerts change: keep the cursor where someone is typing.
  if (!name || !live.form) return;
  const input = document.querySelector(`#alert-list li[data-alert-id="${live.form.alertId}"] input[name="${name}"]`);
  if (input) { input.focus(); input.setSelectionRange(input.value.length, input.value.length); }
}

async function act(alertId, body) {
  const res = await fetch(`/api/alerts/${alertId}/actions`, { method: "POST",
    headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  if (res.ok) {
    const done = await res.json();
    const a = live.alerts.get(alertId);
    if (a && done.state) live.alerts.set(alertId, { ...a, state: done.state });  // the websocket confirms it
    if (live.form && live.form.alertId === alertId) live.form = null;
  } else {
    let detail = res.statusText;
    try { detail = (await res.json()).detail; } catch (e) { /* not JSON */ }
    live.form = { ...(live.form && live.form.alertId === alertId ? live.form : { alertId, action: body.action }),
      error: `HTTP ${res.status} ${detail}` };
  }
  scheduleRepaint();
}

// --- sound for new grade I / II alerts ----------------------------------------------------------------------------
// Browsers play sound only after the page has been clicked: sound is off until someone turns it on here. The choice
// is remembered; on the next visit the first click anywhere allows it again.

function setupSound() {
  $("#sound").hidden = false;
  $("#sound").addEventListener("click", () => {
    sound.wanted = sound.state !== "on";
    localStorage.setItem("lifeline.sound", sound.wanted ? "on" : "off");
    if (sound.wanted) unlockSound(); else { sound.state = "off"; renderSound(); }
  });
  if (sound.wanted) {
    unlockSound();
    document.addEventListener("pointerdown", () => { if (sound.wanted) unlockSound(); }, { once: true });
  }
  renderSound();
}

function unlockSound() {
  try {
    sound.ctx = sound.ctx || new (window.AudioContext || window.webkitAudioContext)();
    sound.ctx.resume().then(() => { sound.state = sound.ctx.state === "running" ? "on" : "pending"; renderSound(); },
      () => {});
    sound.state = sound.ctx.state === "running" ? "on" : "pending";
  } catch (e) {
    sound.state = "off";  // no audio in this browser
  }
  renderSound();
}

function renderSound() {
  const b = $("#sound");
  if (!b) return;
  b.textContent = t(sound.state === "on" ? "soundOn" : sound.state === "pending" ? "soundPending" : "soundOff");
  b.setAttribute("aria-pressed", sound.state === "on" ? "true" : "false");
  b.classList.toggle("pending", sound.state === "pending");
  b.dataset.state = sound.state;
}

function queueBeep(grade) {
  // A storm raising dozens of alerts at once sounds once (its worst grade), not dozens of times.
  sound.pendingGrade = Math.min(sound.pendingGrade || 9, grade);
  const wait = sound.quietUntil - performance.now();
  if (wait > 0) { setTimeout(playPending, wait + 5); return; }
  playPending();
}

function playPending() {
  const grade = sound.pendingGrade;
  if (grade === null || performance.now() < sound.quietUntil) return;
  sound.pendingGrade = null;
  sound.quietUntil = performance.now() + 1500;
  if (sound.state !== "on" || !sound.ctx) return;
  // Grade I: three high beeps; grade II: two lower ones.
  const ctx = sound.ctx;
  const [count, hz] = grade === 1 ? [3, 880] : [2, 660];
  for (let k = 0; k < count; k++) {
    const at = ctx.currentTime + k * 0.3;
    const osc = ctx.createOscillator();
    const gain = ctx.createGain();
    osc.frequency.value = hz;
    gain.gain.setValueAtTime(0.0001, at);
    gain.gain.exponentialRampToValueAtTime(0.3, at + 0.02);
    gain.gain.exponentialRampToValueAtTime(0.0001, at + 0.22);
    osc.connect(gain).connect(ctx.destination);
    osc.start(at);
    osc.stop(at + 0.25);
  }
  sound.beeps += 1;
  document.body.dataset.beeped = String(grade);
}

// --- drills: marked wherever they show ------------------------------------------------------------------------------

async function refreshDrill() {
  try {
    const info = await fetchOk("/api/info", "json");
    drillState.on = Boolean(info.drill);
    drillState.networks = info.drill_networks || [];
    offerWhatIf(info);
  } catch (err) { return; }
  renderDrill();
}

function renderDrill() {
  const el = $("#drill-banner");
  if (!el) return;
  el.hidden = !drillState.on;
  el.textContent = tr().drillBanner(drillState.networks);
}

// --- the waterlogging risk map (GET /api/risk/map?frame=scene): graded places and ponds on the ground --------------

async function loadRiskMap() {
  if (whatif.on) return null;  // a what-if is shown: the live map comes back with "back to live"
  let res;
  try {
    res = await fetch("/api/risk/map?frame=scene");
  } catch (err) { return null; }
  if (res.status === 404) { clearRiskMap(); return null; }
  if (!res.ok) return null;
  const map = await res.json();
  if (risk.props && risk.props.id === map.properties.id && risk.group) return risk.props.id;
  drawRiskMap(map);
  return map.properties.id;
}

// --- what-ifs (GET /api/risk/whatif?frame=scene): the map a design storm would make, from the surrogate at once -------

async function setupWhatIf() {
  try { offerWhatIf(await fetchOk("/api/info", "json")); } catch (err) { /* no live API: no what-ifs */ }
}

function offerWhatIf(info) {
  // Shown once the server has a surrogate (the demo trains one in the background: /api/info is polled).
  if (!info.whatif || whatif.wired) return;
  whatif.wired = true;
  $("#whatif-panel").hidden = false;
  $("#whatif-run").addEventListener("click", runWhatIf);
  $("#whatif-live").addEventListener("click", backToLive);
}

async function runWhatIf() {
  const rp = $("#whatif-rp").value, duration = $("#whatif-duration").value;
  const note = $("#whatif-note");
  note.removeAttribute("data-i18n");
  note.textContent = tr().whatifBusy;
  let res;
  try {
    res = await fetch(`/api/risk/whatif?frame=scene&return_period=${encodeURIComponent(rp)}` +
      `&duration_min=${encodeURIComponent(duration)}`);
  } catch (err) { note.textContent = `${tr().whatifFailed}: ${err.message}`; return; }
  if (!res.ok) {
    let detail = res.statusText;
    try { detail = (await res.json()).detail || detail; } catch (err) { /* not JSON */ }
    note.textContent = `${tr().whatifFailed}: ${detail}`;
    return;
  }
  const map = await res.json();
  whatif.on = true;
  drawRiskMap(map);
  whatif.props = risk.props;
  $("#whatif-live").hidden = false;
  $("input[data-layer='risk']").checked = true;
  risk.group.visible = true;
  renderWhatIfNote();
  document.body.dataset.whatif = `${rp}/${duration}`;
  requestRender();
}

function renderWhatIfNote() {
  if (whatif.on && whatif.props) $("#whatif-note").textContent = tr().whatifNote(whatif.props);
}

async function backToLive() {
  whatif.on = false;
  whatif.props = null;
  delete document.body.dataset.whatif;
  $("#whatif-live").hidden = true;
  const note = $("#whatif-note");
  note.dataset.i18n = "whatifHint";
  note.textContent = tr().whatifHint;
  clearRiskMap();
  await loadRiskMap();
}

function clearRiskMap() {
  if (!risk.group) return;
  scene.remove(risk.group);
  risk.group.traverse((o) => { if (o.geometry) o.geometry.dispose(); if (o.material) o.material.dispose(); });
  risk.group = null;
  risk.props = null;
  state.byLayer.delete("risk");
  renderLegend();
  requestRender();
}

function pondColour(depth) {
  let css = POND_CSS[0][1];
  for (const [d, c] of POND_CSS) if (depth >= d) css = c;
  return css;
}

function drawRiskMap(map) {
  clearRiskMap();
  const field = groundField();
  const buckets = new Map();  // colour key -> { geometries, outline points, material options }
  let ponds = 0, graded = 0;
  for (const f of map.features) {
    const p = f.properties || {};
    const isPond = p.kind === "pond";
    if (!isPond && !p.grade) continue;
    const polygons = f.geometry.type === "Polygon" ? [f.geometry.coordinates]
      : f.geometry.type === "MultiPolygon" ? f.geometry.coordinates : [];
    if (!polygons.length) continue;
    if (isPond) ponds += 1; else graded += 1;
    const key = isPond ? "pond:" + pondColour(p.depth_m || 0) : "grade:" + p.grade;
    if (!buckets.has(key)) buckets.set(key, { geometries: [], lines: [], pond: isPond,
      css: isPond ? pondColour(p.depth_m || 0) : GRADE_CSS[p.grade], order: isPond ? 3 : 4 + (4 - p.grade) });
    const bucket = buckets.get(key);
    for (const rings of polygons) {
      const outer = rings[0];
      if (!outer || outer.length < 4) continue;
      // A pond is a water surface: level at the mean ground height of its shore. A place at risk lies on its
      // highest ground, so no part of it sinks under the terrain.
      const heights = outer.map(([x, y]) => groundHeight(field, x, -y));
      const level = (isPond ? heights.reduce((s, h) => s + h, 0) / heights.length : Math.max(...heights)) +
        RISK_LIFT_M;
      const shape = new THREE.Shape(outer.map(([x, y]) => new THREE.Vector2(x, y)));
      for (const hole of rings.slice(1)) shape.holes.push(new THREE.Path(hole.map(([x, y]) => new THREE.Vector2(x, y))));
      const geometry = new THREE.ShapeGeometry(shape).rotateX(-Math.PI / 2).translate(0, level, 0);
      geometry.deleteAttribute("uv");
      geometry.deleteAttribute("normal");
      bucket.geometries.push(geometry);
      for (let i = 0; i + 1 < outer.length; i++) {
        bucket.lines.push(outer[i][0], level + 0.2, -outer[i][1], outer[i + 1][0], level + 0.2, -outer[i + 1][1]);
      }
    }
  }
  const group = new THREE.Group();
  group.name = "risk";
  for (const bucket of buckets.values()) {
    if (!bucket.geometries.length) continue;
    const merged = mergeGeometries(bucket.geometries, false);
    bucket.geometries.forEach((g) => g.dispose());
    const mesh = new THREE.Mesh(merged, new THREE.MeshBasicMaterial({ color: bucket.css, transparent: true,
      opacity: bucket.pond ? 0.62 : 0.5, depthWrite: false, side: THREE.DoubleSide, polygonOffset: true,
      polygonOffsetFactor: -2, polygonOffsetUnits: -2 }));
    mesh.renderOrder = bucket.order;
    mesh.userData.risk = bucket.pond ? "pond" : "grade";
    group.add(mesh);
    const outline = new THREE.BufferGeometry();
    outline.setAttribute("position", new THREE.Float32BufferAttribute(bucket.lines, 3));
    const lines = new THREE.LineSegments(outline, new THREE.LineBasicMaterial({ color: bucket.css, transparent: true,
      opacity: 0.95, depthWrite: false }));
    lines.renderOrder = bucket.order;
    group.add(lines);
  }
  group.visible = $("input[data-layer='risk']").checked;
  scene.add(group);
  risk.group = group;
  risk.features = map.features.length;
  risk.ponds = ponds;
  risk.graded = graded;
  risk.props = { ...map.properties, graded, ponds, issued: fmtTime(map.properties.issued) };
  state.byLayer.set("risk", [group]);
  renderLegend();
  requestRender();
}

function frameRisk() {
  // Look down on the places at risk and the ponds (the whole map) from above.
  if (!risk.group || !risk.group.children.length) return false;
  const box = new THREE.Box3().setFromObject(risk.group);
  const centre = box.getCenter(new THREE.Vector3());
  const span = Math.max(box.getSize(new THREE.Vector3()).x, box.getSize(new THREE.Vector3()).z, 100);
  controls.target.copy(centre);
  camera.position.copy(centre.clone().add(new THREE.Vector3(0.1 * span, 0.95 * span, 0.45 * span)));
  controls.update();
  requestRender();
  return true;
}

function groundField() {
  // A height lookup over the terrain mesh's vertices (the mesh is a regular grid): the highest vertex per cell of
  // a coarse grid. One pass over the vertices instead of a ray per point.
  if (risk.field !== undefined) return risk.field;
  const meshes = (state.byLayer.get("ground") || []).filter((m) => m.geometry && m.geometry.getAttribute("position"));
  const xs = [], ys = [], zs = [];
  const p = new THREE.Vector3();
  for (const mesh of meshes) {
    mesh.updateMatrixWorld();
    const pos = mesh.geometry.getAttribute("position");
    for (let i = 0; i < pos.count; i++) {
      p.fromBufferAttribute(pos, i).applyMatrix4(mesh.matrixWorld);
      xs.push(p.x); ys.push(p.y); zs.push(p.z);
    }
  }
  if (!xs.length) { risk.field = null; return null; }
  let x0 = Infinity, x1 = -Infinity, z0 = Infinity, z1 = -Infinity;
  for (let i = 0; i < xs.length; i++) {
    x0 = Math.min(x0, xs[i]); x1 = Math.max(x1, xs[i]); z0 = Math.min(z0, zs[i]); z1 = Math.max(z1, zs[i]);
  }
  const cell = Math.max(Math.sqrt(((x1 - x0) * (z1 - z0)) / xs.length) * 1.5, 1);
  const cols = Math.ceil((x1 - x0) / cell) + 1, rows = Math.ceil((z1 - z0) / cell) + 1;
  const h = new Float32Array(cols * rows).fill(NaN);
  for (let i = 0; i < xs.length; i++) {
    const k = Math.floor((zs[i] - z0) / cell) * cols + Math.floor((xs[i] - x0) / cell);
    if (!(h[k] >= ys[i])) h[k] = ys[i];
  }
  risk.field = { x0, z0, cell, cols, rows, h };
  return risk.field;
}

function groundHeight(field, x, z) {
  if (!field) return 0;
  const c = Math.floor((x - field.x0) / field.cell), r = Math.floor((z - field.z0) / field.cell);
  for (let reach = 0; reach <= 2; reach++) {
    let best = -Infinity;
    for (let dr = -reach; dr <= reach; dr++) {
      for (let dc = -reach; dc <= reach; dc++) {
        const rr = r + dr, cc = c + dc;
        if (rr < 0 || cc < 0 || rr >= field.rows || cc >= field.cols) continue;
        const v = field.h[rr * field.cols + cc];
        if (v > best) best = v;
      }
    }
    if (best > -Infinity) return best;
  }
  return 0;  // off the terrain: the origin's elevation
}

ready.then(followLiveState);
Object.assign(window.lifelineScene, { sensorColour, flyTo, showAlert, alertPlace, loadRiskMap, frameRisk, runWhatIf,
  backToLive });
Object.defineProperty(window.lifelineScene, "live", {
  get: () => ({ enabled: live.enabled, connected: live.connected, sensors: live.sensors.size,
    extraSensors: live.extraIds.length, alerts: live.alerts.size, flashing: [...live.flashes.keys()],
    beacons: live.beacons ? live.beacons.count : 0, flying: flight !== null, repaints: live.repaints,
    repaintMs: Math.round(live.repaintMs), sensorLoads: live.sensorLoads, frames: live.frames,
    renderMs: Math.round(live.renderMs),
    role: live.user ? live.user.role : null, sound: sound.state, beeps: sound.beeps }),
});
Object.defineProperty(window.lifelineScene, "risk", {
  get: () => ({ id: risk.props ? risk.props.id : null, features: risk.features, ponds: risk.ponds,
    graded: risk.graded, visible: risk.group ? risk.group.visible : false, whatif: whatif.on }),
});
