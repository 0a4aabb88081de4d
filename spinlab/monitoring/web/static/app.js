// spinlab web monitor: folds the bridge's JSON frames into a page (no build step, no framework).
// Frames and message format: spinlab/monitoring/web/server.py. Every value from the stream is
// inserted with textContent, never as HTML.
"use strict";

const MAX_LOG = 200;
const SI = [[1e9, "G"], [1e6, "M"], [1e3, "k"], [1, ""], [1e-3, "m"], [1e-6, "µ"], [1e-9, "n"], [1e-12, "p"]];
const UNIT_SUFFIX = /_(A|V|s|T|Hz|W)$/;
const $ = (id) => document.getElementById(id);

let S = freshState(null);
let dirty = new Set();
let frameRequested = false;
let socket = null;
let retryMs = 500;
let pinger = null;
let linkStats = {};
let controlEnabled = false;

function freshState(run) {
  return {
    run, kind: "", config: {}, path: "", device: "", status: run ? "running" : "waiting", progress: null,
    eta: null, waveforms: new Map(), loss: new Map(), nrmse: new Map(), results: {},
    instruments: new Map(), log: [], publisher: {}, messages: 0,
  };
}

// --- folding messages ----------------------------------------------------------------------
function fold(msg) {
  if (msg.run !== S.run) {
    S = freshState(msg.run);
    clearPlots();
    dirty = new Set(["run", "progress", "waveforms", "twin", "results", "instruments", "log"]);
  }
  S.messages += 1;
  const p = msg.payload || {};
  switch (msg.topic) {
    case "opening":  // the run exists; its device is being opened (seconds on a bench)
      S.kind = String(p.plan ?? "");
      S.config = isMap(p.config) ? p.config : {};
      S.path = String(p.path ?? "");
      S.device = String(p.address ?? S.config.device ?? "");
      if (S.status === "running") S.status = "opening";
      mark("run");
      break;
    case "start":
      S.kind = String(p.plan ?? p.kind ?? "");
      S.config = isMap(p.config) ? p.config : {};
      S.path = String(p.path ?? "");
      S.device = String(p.address ?? S.config.device ?? "");
      S.status = "running";
      mark("run");
      break;
    case "stop":
      S.status = String(p.status ?? "stopped");
      if (isMap(p.results)) Object.assign(S.results, p.results);
      if ("monitor_dropped" in p) S.publisher.dropped = p.monitor_dropped;
      if (p.error) addLog("error", `${p.error}: ${p.reason ?? ""}`, msg.t);
      mark("run", "results", "progress");
      break;
    case "progress":
      S.progress = p;
      S.eta = typeof msg.eta_s === "number" ? msg.eta_s : null;
      mark("progress");
      break;
    case "preview":
      addWaveform(String(p.name ?? "preview"), msg.arrays.samples, p.unit);
      break;
    case "twin.loss":
      addPoint(S.loss, p.step, p.loss);
      break;
    case "twin.nrmse":
      addPoint(S.nrmse, p.step, p.nrmse);
      break;
    case "result":
      if (isMap(p.values)) Object.assign(S.results, p.values);
      mark("results");
      break;
    case "instrument.status":
      S.instruments.set(String(p.name ?? "?"), p);
      mark("instruments");
      break;
    case "log":
      addLog(String(p.level ?? ""), `${p.logger ?? ""}: ${p.message ?? ""}`, msg.t);
      break;
    case "error":
      addLog("error", `${p.type ?? "error"}: ${p.message ?? ""}`, msg.t);
      break;
    case "control":
      if (p.state) S.status = String(p.state);
      addLog("control", `${p.command ?? "control"} by ${p.client ?? "?"}: ${p.state ?? ""}`, msg.t);
      mark("run");
      break;
    case "monitor.stats":
      Object.assign(S.publisher, p);
      break;
    default:  // a protocol's own topic: plot its arrays
      for (const [name, arr] of Object.entries(msg.arrays || {})) addWaveform(`${msg.topic}:${name}`, arr, "");
  }
  mark("stats");
}

function isMap(v) { return v !== null && typeof v === "object" && !Array.isArray(v); }

function mark(...parts) {
  for (const part of parts) dirty.add(part);
  if (!frameRequested) {
    frameRequested = true;
    requestAnimationFrame(render);
  }
}

function addWaveform(name, arr, unit) {
  if (!arr || !Array.isArray(arr.data) || arr.data.length === 0) return;
  const dt = arr.dt_s || 1, t0 = arr.t0_s || 0, seconds = arr.x_unit === "s";
  const x = arr.data.map((_, i) => (t0 + i * dt) * (seconds ? 1e6 : 1));
  S.waveforms.set(name, { x, y: arr.data, unit: String(unit ?? ""), xLabel: seconds ? "time (µs)" : "sample" });
  mark("waveforms");
}

function addPoint(series, step, value) {
  if (typeof value !== "number" || !(value > 0)) return;  // log axis
  series.set(typeof step === "number" ? step : series.size, value);
  mark("twin");
}

function addLog(level, text, t) {
  S.log.unshift({ level: level.toLowerCase(), text, t });
  if (S.log.length > MAX_LOG) S.log.length = MAX_LOG;
  mark("log");
}

// --- rendering (once per animation frame, only what changed) --------------------------------
function render() {
  frameRequested = false;
  const parts = dirty;
  dirty = new Set();
  if (parts.has("run")) renderRun();
  if (parts.has("progress")) renderProgress();
  if (parts.has("waveforms")) renderWaveforms();
  if (parts.has("twin")) renderTwin();
  if (parts.has("results")) renderTable($("results"), Object.entries(S.results));
  if (parts.has("instruments")) renderInstruments();
  if (parts.has("log")) renderLog();
  if (parts.has("stats")) renderStats();
}

function renderRun() {
  const status = $("status");
  status.textContent = S.status;
  status.dataset.status = S.status;
  $("run-id").textContent = S.run || "(waiting for a run)";
  $("run-kind").textContent = S.kind;
  $("run-device").textContent = S.device;
  $("run-path").textContent = S.path;
  renderTable($("config"), Object.entries(S.config));
  document.title = S.run ? `${S.status} · ${S.kind} · spinlab` : "spinlab monitor";
}

function renderProgress() {
  const p = S.progress;
  const bar = $("progress-bar");
  if (!p || typeof p.done !== "number" || typeof p.total !== "number" || p.total <= 0) {
    bar.removeAttribute("value");
    $("progress-text").textContent = "";
    $("eta").textContent = "";
    $("progress-fields").textContent = "";
    return;
  }
  bar.max = p.total;
  bar.value = Math.min(p.done, p.total);
  $("progress-text").textContent = `${p.done} / ${p.total} (${Math.floor(100 * p.done / p.total)} %)`;
  $("eta").textContent = S.status === "running" && S.eta !== null ? `ETA ${duration(S.eta)}` : "";
  const fields = Object.entries(p).filter(([k]) => k !== "done" && k !== "total");
  $("progress-fields").textContent = fields.map(([k, v]) => `${k} ${fmt(k, v)}`).join(" · ");
}

const plots = new Map();
let twinPlot = null;

function clearPlots() {
  for (const { plot, box } of plots.values()) { plot.destroy(); box.remove(); }
  plots.clear();
  if (twinPlot) { twinPlot.destroy(); twinPlot = null; }
}

function plotWidth(el) { return Math.max(240, el.clientWidth || 600); }

function renderWaveforms() {
  $("no-waveforms").hidden = S.waveforms.size > 0;
  if (typeof uPlot === "undefined") return;
  for (const [name, w] of S.waveforms) {
    let entry = plots.get(name);
    if (!entry) {
      const box = document.createElement("figure");
      const caption = document.createElement("figcaption");
      caption.textContent = name;
      box.append(caption);
      $("waveforms").append(box);
      const plot = new uPlot({
        width: plotWidth($("waveforms")), height: 200, legend: { show: false },
        scales: { x: { time: false } },
        axes: [{ label: w.xLabel }, { label: w.unit || "value" }],
        series: [{}, { label: name, stroke: "#1f6fb2", width: 1 }],
      }, [w.x, w.y], box);
      entry = { plot, box };
      plots.set(name, entry);
    }
    entry.plot.setData([w.x, w.y]);
  }
}

function renderTwin() {
  if (S.loss.size === 0 && S.nrmse.size === 0) return;
  $("twin-section").hidden = false;
  if (typeof uPlot === "undefined") return;
  const columns = (m) => [[...m.keys()], [...m.values()]];
  const data = uPlot.join([columns(S.loss), columns(S.nrmse)]);
  if (!twinPlot) {
    twinPlot = new uPlot({
      width: plotWidth($("twin-plot")), height: 220,
      scales: { x: { time: false }, y: { distr: 3 } },
      axes: [{ label: "step" }, { label: "loss / NRMSE" }],
      series: [{}, { label: "loss", stroke: "#b2451f", spanGaps: true },
               { label: "NRMSE", stroke: "#1f8f4e", spanGaps: true }],
    }, data, $("twin-plot"));
  } else {
    twinPlot.setData(data);
  }
}

function renderTable(table, entries) {
  const rows = entries.map(([key, value]) => {
    const tr = document.createElement("tr");
    tr.dataset.key = key;
    const th = document.createElement("th");
    th.textContent = key;
    const td = document.createElement("td");
    td.textContent = fmt(key, value);
    td.dataset.value = typeof value === "number" ? String(value) : JSON.stringify(value) ?? "";
    tr.append(th, td);
    return tr;
  });
  table.replaceChildren(...rows);
}

function renderInstruments() {
  $("instruments-section").hidden = S.instruments.size === 0;
  renderTable($("instruments"), [...S.instruments].map(([name, st]) => [name,
    Object.entries(st).filter(([k]) => k !== "name").map(([k, v]) => `${k}=${fmt(k, v)}`).join("  ")]));
}

function renderLog() {
  $("log").replaceChildren(...S.log.map(({ level, text, t }) => {
    const li = document.createElement("li");
    li.className = `level-${level.replace(/[^a-z]/g, "")}`;
    const time = document.createElement("time");
    time.textContent = typeof t === "number" ? new Date(t * 1000).toLocaleTimeString() : "";
    li.append(time, ` ${level} ${text}`);
    return li;
  }));
}

function renderStats() {
  const stream = linkStats.stream || {};
  $("stat-dropped").textContent = S.publisher.dropped ?? 0;
  $("stat-missed").textContent = stream.missed ?? 0;
  $("stat-resyncs").textContent = stream.resyncs ?? 0;
  $("stat-rejected").textContent = stream.rejected ?? 0;
  $("stat-lost").textContent = (linkStats.client || {}).lost ?? 0;
  $("stat-messages").textContent = S.messages;
}

// --- formatting -----------------------------------------------------------------------------
function fmt(key, value) {
  if (typeof value === "number") {
    const unit = (UNIT_SUFFIX.exec(key) || [])[1];
    if (unit && value !== 0 && Number.isFinite(value)) {
      const [scale, prefix] = SI.find(([s]) => Math.abs(value) >= s) || SI[SI.length - 1];
      return `${+(value / scale).toPrecision(5)} ${prefix}${unit}`;
    }
    return Number.isInteger(value) ? String(value) : String(+value.toPrecision(5));
  }
  if (value === null || value === undefined) return "–";
  const text = typeof value === "string" ? value : JSON.stringify(value);
  return text.length > 200 ? `${text.slice(0, 197)}...` : text;
}

function duration(seconds) {
  if (seconds < 60) return `${Math.ceil(seconds)} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(seconds / 3600)} h ${Math.round((seconds % 3600) / 60)} min`;
}

// --- the connection: reconnects by itself -----------------------------------------------------
function connect() {
  const url = `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}/ws`;
  setConn("connecting", "connecting");
  socket = new WebSocket(url);
  socket.onopen = () => {
    retryMs = 500;
    setConn("live", "live");
    pinger = setInterval(() => socket.readyState === WebSocket.OPEN && socket.send('{"type":"ping"}'), 20000);
  };
  socket.onmessage = (event) => {
    let frame;
    try { frame = JSON.parse(event.data); } catch { return; }
    if (frame.type === "snapshot") {
      S = freshState(null);
      clearPlots();
      setControl(Boolean(frame.control));
      mark("run", "progress", "waveforms", "twin", "results", "instruments", "log");
    }
    if (frame.type === "snapshot" || frame.type === "batch") {
      for (const msg of frame.messages || []) fold(msg);
      linkStats = frame.stats || linkStats;
      mark("stats");
    }
  };
  socket.onclose = () => {
    clearInterval(pinger);
    const wait = retryMs;
    retryMs = Math.min(retryMs * 2, 10000);
    setConn("reconnecting", `reconnecting in ${Math.round(wait / 100) / 10} s`);
    setTimeout(connect, wait);
  };
}

function setConn(state, text) {
  const conn = $("conn");
  conn.dataset.state = state;
  conn.textContent = text;
}

// --- control (only when the server was started with --web-control) ---------------------------
function setControl(enabled) {
  controlEnabled = enabled;
  $("control-section").hidden = !enabled;
}

function token() { return $("token").value.trim(); }

async function sendControl(command) {
  const reply = $("control-reply");
  if (!controlEnabled) return;
  reply.textContent = `${command}: sending...`;
  try {
    const response = await fetch(`/api/control/${command}`, {
      method: "POST", headers: { Authorization: `Bearer ${token()}` }, cache: "no-store",
    });
    const body = await response.json().catch(() => ({}));
    reply.textContent = response.ok ? `${command}: ok, run is ${body.state}`
      : `${command} refused (${response.status}): ${body.error || response.statusText}`;
    reply.dataset.ok = String(response.ok);
  } catch (error) {
    reply.textContent = `${command} failed: ${error}`;
    reply.dataset.ok = "false";
  }
}

function tokenFromLink() {
  const fromLink = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (fromLink) {  // keep it for this tab only, out of the address bar and the history
    sessionStorage.setItem("spinlab-token", decodeURIComponent(fromLink[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
  $("token").value = sessionStorage.getItem("spinlab-token") || "";
}

function setupControl() {
  tokenFromLink();
  window.addEventListener("hashchange", tokenFromLink);
  $("token").addEventListener("change", () => sessionStorage.setItem("spinlab-token", token()));
  $("pause").addEventListener("click", () => sendControl("pause"));
  $("resume").addEventListener("click", () => sendControl("resume"));
  let armed = null;  // abort takes two clicks within 5 s
  $("abort").addEventListener("click", () => {
    const button = $("abort");
    if (armed) {
      clearTimeout(armed);
      armed = null;
      button.textContent = "Abort";
      sendControl("abort");
      return;
    }
    button.textContent = "Click again to abort";
    armed = setTimeout(() => { armed = null; button.textContent = "Abort"; }, 5000);
  });
}

window.addEventListener("resize", () => {
  for (const { plot } of plots.values()) plot.setSize({ width: plotWidth($("waveforms")), height: 200 });
  if (twinPlot) twinPlot.setSize({ width: plotWidth($("twin-plot")), height: 220 });
});

setupControl();
connect();
