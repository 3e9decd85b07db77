// The shardvault console: reads /api/overview every few seconds and draws it. Read-only.
"use strict";

const REFRESH_MS = 5000;
let latest = null;
// Per cluster: the JSON last drawn, its card, and its chart (kept, so a refresh redraws in place).
const drawn = new Map();

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

function seconds(s) {
  if (s === null || s === undefined) return "";
  return s < 120 ? `${s.toFixed(1)} s` : `${(s / 60).toFixed(1)} min`;
}

function when(t) {
  return t ? t.replace("T", " ").replace(/\.\d+/, "").replace("Z", " UTC") : "";
}

function badge(text, cls) {
  return el("span", { class: `badge ${cls}` }, text);
}

// A running object's progress: a bar and its sentence; nothing once it is done.
function progress(p) {
  if (!p) return null;
  return el("span", { class: "progress" },
    el("progress", { max: "100", value: String(p.percent) }), ` ${p.text}`);
}

function archiveLag(a) {
  if (!a) return el("td", { class: "archive-lag" }, "unknown");
  const lag = a.pendingSegments === 0 ? "up to date"
    : `${a.pendingSegments} segments (${bytes(a.pendingBytes)}) waiting`;
  const last = a.lastArchivedWal ? `; last ${a.lastArchivedWal} at ${a.lastArchivedTime}` : "";
  return el("td", { class: "archive-lag", "data-pending": String(a.pendingSegments) },
    a.failing ? badge("failing", "bad") : null, ` ${lag}${last}`);
}

function membersTable(c) {
  return el("table", { class: "members" },
    el("tr", {}, el("th", {}, "member"), el("th", {}, "servers"), el("th", {}, "WAL archive lag")),
    c.members.map(m => el("tr", {},
      el("td", {}, m.name),
      el("td", {}, m.instances.map(i => `${i.name} (${i.role}, ${i.state})`).join(", ")),
      archiveLag(m.archiving))));
}

function timeline(c) {
  const svgNs = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(svgNs, "svg");
  svg.setAttribute("class", "timeline");
  svg.setAttribute("viewBox", "0 0 1000 48");
  svg.setAttribute("preserveAspectRatio", "none");
  const spans = c.backups.filter(b => b.start).map(b => {
    const start = Date.parse(b.start);
    const end = b.end ? Date.parse(b.end) : Date.now();
    return { b, start, end };
  });
  if (spans.length === 0) return svg;
  const from = Math.min(...spans.map(s => s.start));
  const to = Math.max(...spans.map(s => s.end));
  const width = Math.max(to - from, 1);
  for (const s of spans) {
    const r = document.createElementNS(svgNs, "rect");
    r.setAttribute("class", s.b.phase);
    r.setAttribute("data-backup", s.b.name);
    r.setAttribute("x", String(((s.start - from) / width) * 990));
    r.setAttribute("width", String(Math.max(((s.end - s.start) / width) * 990, 4)));
    r.setAttribute("y", "10");
    r.setAttribute("height", "28");
    const title = document.createElementNS(svgNs, "title");
    title.textContent = `${s.b.name}: ${s.b.phase}, ${seconds(s.b.durationSeconds)}`;
    r.append(title);
    svg.append(r);
  }
  return svg;
}

function growthData(c) {
  const mib = n => n / (1024 * 1024);
  return {
    labels: c.growth.map(p => when(p.time).slice(5, 16)),
    series: [
      { name: "stored", data: c.growth.map(p => mib(p.storedBytes)) },
      { name: "wal", data: c.growth.map(p => mib(p.walBytes)) },
    ],
  };
}

function growthChart(c, holder) {
  return new Chartist.LineChart(holder, growthData(c), {
    height: "220px",
    showArea: true,
    fullWidth: true,
    axisY: { onlyInteger: true, offset: 50 },
    chartPadding: { right: 70, left: 10 },
  });
}

function backupsTable(c) {
  return el("table", { class: "backups" },
    el("tr", {}, ["backup", "status", "started", "took", "stored", "original", "restore point"]
      .map(h => el("th", {}, h))),
    c.backups.map(b => el("tr", {
      class: "backup", "data-backup": b.name,
      onclick: () => { location.hash = `#backup/${c.namespace}/${b.name}`; },
    },
      el("td", {}, b.name),
      el("td", {}, badge(b.phase, b.phase), progress(b.progress)),
      el("td", {}, when(b.start)),
      el("td", {}, seconds(b.durationSeconds)),
      el("td", {}, bytes(b.storedBytes)),
      el("td", {}, bytes(b.originalBytes)),
      el("td", {}, b.restorePoint ? `${b.restorePoint.name} at ${when(b.restorePoint.time)}` : ""))));
}

function clusterCard(c) {
  const chart = el("div", { class: "chart", "data-cluster": c.name });
  const card = el("article", { class: "cluster", "data-cluster": c.name },
    el("h2", {}, `${c.namespace}/${c.name} `, badge(c.ready ? "Ready" : "Not ready", c.ready ? "ok" : "bad"),
      " ", el("small", {}, c.sharding)),
    c.readyMessage ? el("p", {}, c.readyMessage) : null,
    c.archivingProblem ? el("p", { class: "problem archiving" }, c.archivingProblem) : null,
    c.restoreProgress ? el("p", { class: "restoring" }, "Restoring: ", progress(c.restoreProgress)) : null,
    el("div", { class: "panes" },
      el("div", {}, el("h3", {}, "Members"), membersTable(c)),
      el("div", {}, el("h3", {}, "Backup size and WAL written between backups (MiB)"),
        el("p", { class: "legend" }, el("span", { class: "a" }, "■ stored"), " ",
          el("span", { class: "b" }, "■ WAL since the backup before")),
        chart)),
    el("h3", {}, "Backups"),
    timeline(c),
    backupsTable(c));
  return { card, chart };
}

function detail(o) {
  const pane = document.getElementById("detail");
  const m = location.hash.match(/^#backup\/([^/]+)\/(.+)$/);
  const c = m && o.clusters.find(c => c.namespace === m[1] && c.backups.some(b => b.name === m[2]));
  if (!c) { pane.hidden = true; pane.replaceChildren(); return; }
  const b = c.backups.find(b => b.name === m[2]);
  pane.hidden = false;
  pane.replaceChildren(
    el("h2", {}, `Backup ${b.name} `, badge(b.phase, b.phase), " ",
      el("a", { href: "#", onclick: () => { location.hash = ""; } }, "close")),
    b.failure ? el("p", { class: "problem" }, b.failure) : null,
    el("p", {}, `Cluster ${c.namespace}/${c.name}; started ${when(b.start)}, took ${seconds(b.durationSeconds)}; `
      + `${bytes(b.storedBytes)} stored of ${bytes(b.originalBytes)}.`),
    b.restorePoint ? el("p", {}, `Restore point ${b.restorePoint.name} at ${when(b.restorePoint.time)}, `
      + `writes paused ${b.restorePoint.writePauseMs.toFixed(1)} ms.`) : null,
    el("table", { class: "sgbackups" },
      el("tr", {}, ["SGBackup", "status", "stored", "original", "LSN start", "LSN end", "timeline"]
        .map(h => el("th", {}, h))),
      b.members.map(s => el("tr", { "data-sgbackup": s.name },
        el("td", {}, s.name), el("td", {}, badge(s.phase, s.phase), progress(s.progress)),
        el("td", {}, bytes(s.storedBytes)), el("td", {}, bytes(s.originalBytes)),
        el("td", {}, s.lsnStart || ""), el("td", {}, s.lsnEnd || ""), el("td", {}, s.timeline ?? "")))));
}

// Draws a cluster's card, or returns the one already drawn when nothing changed; the chart
// element and its Chartist instance move to the new card, so the chart never goes blank.
function cardFor(c) {
  const key = `${c.namespace}/${c.name}`;
  const json = JSON.stringify(c);
  const had = drawn.get(key);
  if (had && had.json === json) return had;
  const { card, chart } = clusterCard(c);
  let instance;
  if (had) {
    chart.replaceWith(had.chart);
    had.instance.update(growthData(c));
    instance = had.instance;
  }
  const entry = { json, card, chart: had ? had.chart : chart, instance, fresh: !had };
  drawn.set(key, entry);
  return entry;
}

function render(o) {
  latest = o;
  document.getElementById("updated").textContent = `as of ${when(o.generatedAt)}`;
  const holder = document.getElementById("clusters");
  if (o.clusters.length === 0) {
    drawn.clear();
    holder.replaceChildren(el("p", {}, "No sharded clusters yet: apply an SGShardedCluster."));
  } else {
    const entries = o.clusters.map(cardFor);
    const keep = new Set(o.clusters.map(c => `${c.namespace}/${c.name}`));
    for (const k of [...drawn.keys()]) if (!keep.has(k)) drawn.delete(k);
    holder.replaceChildren(...entries.map(e => e.card));
    entries.forEach((e, i) => {
      if (e.fresh) { e.instance = growthChart(o.clusters[i], e.chart); e.fresh = false; }
    });
  }
  detail(o);
}

async function refresh() {
  try {
    const r = await fetch("/api/overview", { credentials: "same-origin" });
    if (!r.ok) throw new Error(`${r.status}: ${await r.text()}`);
    render(await r.json());
  } catch (e) {
    document.getElementById("updated").textContent = `cannot read the daemon: ${e.message}`;
  }
}

window.addEventListener("hashchange", () => latest && detail(latest));
refresh();
setInterval(refresh, REFRESH_MS);
