// spinlab runs: the catalog, a run's summary and figures, comparisons. Read-only; every value
// is set as text (never as HTML): tags, notes and configs are whatever a user typed.
"use strict";

const $ = (id) => document.getElementById(id);
let shown = [];

function fmt(value) {
  if (value === null || value === undefined) return "-";
  if (typeof value === "number") return Number.isInteger(value) ? String(value) : value.toPrecision(6).replace(/\.?0+(e|$)/, "$1");
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

function when(iso) {
  if (!iso) return "-";
  const t = new Date(iso);
  return isNaN(t) ? String(iso) : t.toLocaleString();
}

function cell(row, text, tag = "td") {
  const c = document.createElement(tag);
  c.textContent = text;
  row.appendChild(c);
  return c;
}

function kv(table, entries) {
  table.replaceChildren();
  for (const [k, v] of entries) {
    const row = table.insertRow();
    cell(row, k, "th");
    cell(row, fmt(v));
  }
}

function flat(values, prefix = "", out = []) {
  for (const [k, v] of Object.entries(values || {})) {
    if (v && typeof v === "object" && !Array.isArray(v)) flat(v, prefix + k + ".", out);
    else out.push([prefix + k, v]);
  }
  return out;
}

async function getJSON(url) {
  const response = await fetch(url, { headers: { Accept: "application/json" } });
  const body = await response.json().catch(() => ({ error: response.statusText }));
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function showError(err) {
  $("error").hidden = !err;
  $("error").textContent = err ? String(err.message || err) : "";
}

async function list() {
  const form = new FormData($("filters"));
  const query = new URLSearchParams();
  for (const [k, v] of form) {
    if (!v) continue;
    if (k === "where" || k === "tag") for (const part of v.split(/[\s,]+/)) { if (part) query.append(k, part); }
    else query.append(k, v);
  }
  history.replaceState(null, "", "/runs" + (query.toString() ? "?" + query : "") + location.hash);
  try {
    const body = await getJSON("/api/runs?" + query);
    showError(null);
    render(body);
  } catch (err) {
    showError(err);
  }
}

function render(body) {
  shown = body.runs;
  $("count").textContent = `(${body.count}${body.count >= body.limit ? "+, newest" : ""})`;
  const table = $("runs");
  table.replaceChildren();
  const head = table.createTHead().insertRow();
  for (const h of ["", "id", "plan", "status", "started", "device", "tags", ...body.results_shown]) cell(head, h, "th");
  const rows = table.createTBody();
  for (const run of body.runs) {
    const row = rows.insertRow();
    row.dataset.run = run.id;
    const box = document.createElement("input");
    box.type = "checkbox";
    box.value = run.id;
    box.addEventListener("change", selectionChanged);
    row.insertCell().appendChild(box);
    const link = document.createElement("a");
    link.href = "#run=" + encodeURIComponent(run.id);
    link.textContent = run.id;
    row.insertCell().appendChild(link);
    cell(row, run.plan || "");
    const status = cell(row, run.status || "");
    status.className = "status";
    status.dataset.status = run.status || "";
    cell(row, when(run.started));
    cell(row, run.address || "");
    cell(row, (run.tags || []).join(", "));
    for (const key of body.results_shown) cell(row, fmt((run.results || {})[key]));
  }
  selectionChanged();
}

function selected() {
  return [...document.querySelectorAll("#runs input[type=checkbox]:checked")].map((b) => b.value);
}

function selectionChanged() {
  $("compare-button").disabled = selected().length < 2;
}

async function compare(ids) {
  const query = new URLSearchParams(ids.map((id) => ["run", id]));
  try {
    const body = await getJSON("/api/compare?" + query);
    showError(null);
    $("compare-section").hidden = false;
    const n = Object.keys(body.differs).length;
    $("compare-summary").textContent = `config: ${n} key(s) differ, ${body.same} the same`;
    const table = $("compare");
    table.replaceChildren();
    const head = table.createTHead().insertRow();
    cell(head, "", "th");
    for (const id of body.runs) cell(head, id, "th");
    const rows = table.createTBody();
    const add = (label, values, cls) => {
      const row = rows.insertRow();
      if (cls) row.className = cls;
      cell(row, label, "th");
      for (const v of values) cell(row, fmt(v));
    };
    for (const [k, values] of Object.entries(body.differs)) add(k, values, "differs");
    const results = rows.insertRow();
    results.className = "section";
    cell(results, "results", "th").colSpan = body.runs.length + 1;
    for (const [k, values] of Object.entries(body.results)) add(k, values, "result");
  } catch (err) {
    showError(err);
  }
}

async function open(id) {
  try {
    const body = await getJSON("/api/runs/" + encodeURIComponent(id));
    showError(null);
    const run = body.run;
    $("run-section").hidden = false;
    $("run-title").textContent = run.id;
    kv($("run-facts"), [
      ["plan", run.plan], ["status", run.status + (run.reason ? ` (${run.reason})` : "")],
      ["started", when(run.started)], ["finished", when(run.finished)], ["device", run.address],
      ["station", run.station], ["seed", run.seed], ["by", `${run.user || "?"}@${run.host || "?"}`],
      ["spinlab", run.version], ["path", run.path], ["stage of", run.parent],
      ["tags", (run.tags || []).join(", ")],
      ...(run.notes || []).map((n) => ["note", `${when(n.time)} ${n.user || ""}: ${n.text}`]),
      ...(body.missing ? [["missing", body.missing]] : []),
    ]);
    kv($("run-config"), flat(run.config));
    kv($("run-results"), flat(run.results));
    const streams = $("run-streams");
    streams.replaceChildren();
    for (const [name, info] of Object.entries(body.streams)) {
      const p = document.createElement("p");
      const vars = Object.entries(info.variables).map(([v, u]) => (u ? `${v} [${u}]` : v)).join(", ");
      p.textContent = `stream ${name}: ${info.rows} rows; ${vars}`;
      streams.appendChild(p);
    }
    for (const stage of body.stages) {
      const p = document.createElement("p");
      const a = document.createElement("a");
      a.href = "#run=" + encodeURIComponent(stage.id);
      a.textContent = stage.id;
      p.append("stage ", a, ` ${stage.plan} ${stage.status}`);
      streams.appendChild(p);
    }
    const figures = $("run-figures");
    figures.replaceChildren();
    for (const name of body.figures) {
      const figure = document.createElement("figure");
      const img = document.createElement("img");
      img.src = `/api/runs/${encodeURIComponent(run.id)}/figures/${encodeURIComponent(name)}`;
      img.alt = name;
      const caption = document.createElement("figcaption");
      caption.textContent = name;
      figure.append(img, caption);
      figures.appendChild(figure);
    }
  } catch (err) {
    showError(err);
  }
}

function route() {
  const hash = new URLSearchParams(location.hash.slice(1));
  if (hash.get("run")) open(hash.get("run"));
  if (hash.get("compare")) compare(hash.get("compare").split(","));
}

$("filters").addEventListener("submit", (event) => { event.preventDefault(); list(); });
$("compare-button").addEventListener("click", () => {
  const ids = selected();
  history.replaceState(null, "", location.pathname + location.search + "#compare=" + ids.map(encodeURIComponent).join(","));
  compare(ids);
});
window.addEventListener("hashchange", route);

// the filters of the address (a bookmarked search), then the list and any run or comparison
for (const [k, v] of new URLSearchParams(location.search)) {
  const input = $("filters").elements.namedItem(k);
  if (input) input.value = input.value ? input.value + " " + v : v;
}
list();
route();
