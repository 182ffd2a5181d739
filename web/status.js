// The status page's live part: it follows /events from where the page's history ends, redraws
// the server-rendered parts when something changes, names the block under the pointer on the
// memory map, and draws two charts as plain SVG (no library: two small charts are less code
// than any library's glue, and nothing is fetched from elsewhere).
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);
  let data = JSON.parse($("page-data").textContent);
  const SVGNS = "http://www.w3.org/2000/svg";

  // --- the memory map: name the block under the pointer -------------------------------------
  function blockAt(svg, ev) {
    const cols = +svg.dataset.columns, rows = +svg.dataset.rows;
    const r = svg.getBoundingClientRect();
    const col = Math.floor((ev.clientX - r.left) / r.width * cols);
    const row = Math.floor((ev.clientY - r.top) / r.height * rows);
    if (col < 0 || col >= cols || row < 0 || row >= rows) return -1;
    return row * cols + col;
  }
  function nameBlock(n) {
    for (const r of data.blocks || []) {
      if (n >= r.f && n <= r.l) {
        const start = r.a + (n - r.f) * r.z;
        return "memory" + n + ": " + r.s + ", 0x" + start.toString(16) + "-0x" + (start + r.z - 1).toString(16);
      }
    }
    return "block " + n + ": no memory block here";
  }
  $("memory").addEventListener("mousemove", (ev) => {
    const svg = ev.target.closest && ev.target.closest("#memmap");
    if (!svg) return;
    const n = blockAt(svg, ev);
    if (n >= 0) $("map-hover").textContent = nameBlock(n);
  });

  // --- redraw the server-rendered parts -----------------------------------------------------
  let refreshTimer = 0;
  async function refresh() {
    refreshTimer = 0;
    try {
      const r = await fetch("./", { cache: "no-store" });
      const doc = new DOMParser().parseFromString(await r.text(), "text/html");
      for (const id of ["summary", "memory", "cpus", "registrations"]) {
        const now = doc.getElementById(id);
        if (now) $(id).innerHTML = now.innerHTML;
      }
      const d = doc.getElementById("page-data");
      if (d) data.blocks = JSON.parse(d.textContent).blocks;
    } catch (e) {
      // The next change or poll tries again.
    }
  }
  function scheduleRefresh() {
    if (!refreshTimer) refreshTimer = setTimeout(refresh, 300);
  }

  // --- notifications: live after the page's history ----------------------------------------
  const status = $("stream");
  const rows = document.querySelector("#notifications tbody");
  let lastID = $("notifications").dataset.lastId;
  let reopenTimer = 0;
  function follow() {
    const es = new EventSource("events?last_event_id=" + encodeURIComponent(lastID));
    es.onopen = () => { status.textContent = "(live)"; };
    es.onerror = () => {
      status.textContent = "(reconnecting)";
      // EventSource reconnects by itself after a network error, but gives up for good on an
      // answer that is not a stream: the agent's 503 at its subscriber or connection limit
      // (Retry-After: 5), a proxy's 502 while the agent restarts. Try again as it asks, from the
      // last notification shown.
      if (es.readyState === EventSource.CLOSED && !reopenTimer) {
        reopenTimer = setTimeout(() => { reopenTimer = 0; follow(); }, 5000);
      }
    };
    es.addEventListener("resync", (m) => {
      if (m.lastEventId) lastID = m.lastEventId;
      scheduleRefresh();
    });
    es.onmessage = onNotification;
  }
  function onNotification(m) {
    if (m.lastEventId) lastID = m.lastEventId;
    const n = JSON.parse(m.data);
    const tr = document.createElement("tr");
    tr.className = n.event;
    const t = n.read_at ? new Date(n.read_at) : new Date();
    let detail = n.cpu !== undefined ? "cpu " + n.cpu : "block " + n.memory_block;
    if (n.node !== undefined && n.node >= 0) detail += ", node " + n.node;
    // The time of day in the agent's time zone, as on the rows the page came with (and in its
    // log), not the browser's: read_at carries its offset ("2026-11-21T23:40:01.123+01:00").
    const clock = /T(\d\d:\d\d:\d\d)/.exec(n.read_at || "");
    const time = clock ? clock[1] : t.toLocaleTimeString([], { hour12: false });
    const cells = [[time, ""], [n.event, ""], [n.interface_class, ""],
      [n.symbolic_link, "code"], [detail, "hide-narrow"], [n.seqnum, "hide-narrow"], [n.cause, "hide-narrow"]];
    for (const [v, kind] of cells) {
      const td = document.createElement("td");
      if (kind === "code") {
        const c = document.createElement("code");
        c.textContent = String(v);
        td.appendChild(c);
      } else {
        td.textContent = String(v);
        if (kind) td.className = kind;
      }
      tr.appendChild(td);
    }
    rows.insertBefore(tr, rows.firstChild);
    while (rows.children.length > 200) rows.removeChild(rows.lastChild);
    const cpu = document.querySelector('li.cpu[data-link="' + CSS.escape(n.symbolic_link) + '"]');
    if (cpu) {
      const state = n.event === "arrival" ? "online" : "offline";
      cpu.className = "cpu " + state;
      cpu.querySelector(".state").textContent = state;
    }
    countNote(n, t);
    scheduleRefresh();
  }
  follow();

  // --- charts -------------------------------------------------------------------------------
  const palette = ["#2e7d32", "#c62828", "#0b66b0", "#b35c00", "#6a1b9a", "#00796b", "#5d4037", "#37474f"];
  function el(name, attrs, text) {
    const e = document.createElementNS(SVGNS, name);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function legend(id, names) {
    const ul = $(id);
    ul.innerHTML = "";
    names.forEach((name, i) => {
      const li = document.createElement("li");
      const sw = document.createElement("span");
      sw.className = "sw";
      sw.style.background = palette[i % palette.length];
      li.appendChild(sw);
      li.appendChild(document.createTextNode(name));
      ul.appendChild(li);
    });
  }
  const W = 400, H = 160, L = 34, B = 18, T = 6;

  // Notifications per minute: stacked bars, one stack a minute.
  const chart = data.chart;
  const noteKeys = Object.keys(chart.Counts).sort();
  const skew = Date.now() - chart.Now; // how far this browser's clock is ahead of the agent's
  // advance moves the hour on to end at the minute of ms (the agent's clock), if it is later;
  // each series stays 60 minutes long however far it moves. It says whether it moved.
  function advance(ms) {
    const shift = Math.floor((ms - chart.Start) / chart.Step) - 59;
    if (shift <= 0) return false;
    for (const s of Object.values(chart.Counts)) {
      s.splice(0, shift);
      while (s.length < 60) s.push(0);
    }
    chart.Start += shift * chart.Step;
    return true;
  }
  function countNote(n, t) {
    const key = n.interface_class + " " + n.event;
    if (!chart.Counts[key]) { chart.Counts[key] = new Array(60).fill(0); noteKeys.push(key); }
    advance(t.getTime());
    const i = Math.floor((t.getTime() - chart.Start) / chart.Step);
    if (i >= 0 && i < 60) chart.Counts[key][i]++;
    drawNotes();
  }
  function drawNotes() {
    const svg = $("chart-notes");
    svg.innerHTML = "";
    let max = 1;
    for (let i = 0; i < 60; i++) {
      let sum = 0;
      for (const k of noteKeys) sum += chart.Counts[k][i];
      max = Math.max(max, sum);
    }
    const bw = (W - L) / 60, y = (v) => H - B - v / max * (H - B - T);
    svg.appendChild(el("line", { class: "axis", x1: L, y1: H - B, x2: W, y2: H - B }));
    svg.appendChild(el("line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B }));
    svg.appendChild(el("text", { x: 2, y: T + 8 }, String(max)));
    svg.appendChild(el("text", { x: 2, y: H - B }, "0"));
    svg.appendChild(el("text", { x: L, y: H - 4 }, "-60 min"));
    svg.appendChild(el("text", { x: W - 24, y: H - 4 }, "now"));
    let points = 0;
    for (let i = 0; i < 60; i++) {
      let base = 0;
      noteKeys.forEach((k, ki) => {
        const v = chart.Counts[k][i];
        if (!v) return;
        const r = el("rect", { class: "bar", x: L + i * bw + 0.5, y: y(base + v), width: Math.max(bw - 1, 1), height: y(base) - y(base + v), fill: palette[ki % palette.length] });
        r.appendChild(el("title", {}, k + ": " + v + " at " + new Date(chart.Start + i * chart.Step).toLocaleTimeString([], { hour12: false })));
        svg.appendChild(r);
        base += v;
        points++;
      });
    }
    svg.dataset.points = points;
    legend("chart-notes-legend", noteKeys);
  }
  drawNotes();

  // Dispatch latency: p50 and p99 per callback over time, from the histogram's growth between
  // polls of /metrics (the first point is the whole history's).
  const lat = {}; // callback -> [{t, p50, p99}]
  for (const [cb, q] of Object.entries(chart.Latency || {})) lat[cb] = [{ t: Date.now(), p50: q[0], p99: q[2] }];
  let lastHist = null;
  function parseHist(text) {
    const h = {};
    const re = /^hotplug_agent_dispatch_latency_seconds_bucket\{([^}]*)\} (\S+)/;
    for (const line of text.split("\n")) {
      const m = re.exec(line);
      if (!m) continue;
      const cb = /callback="((?:[^"\\]|\\.)*)"/.exec(m[1]), le = /le="([^"]*)"/.exec(m[1]);
      if (!cb || !le) continue;
      (h[cb[1]] = h[cb[1]] || []).push([le[1] === "+Inf" ? Infinity : +le[1], +m[2]]);
    }
    return h;
  }
  function quantile(q, buckets) {
    const total = buckets[buckets.length - 1][1];
    const rank = q * total;
    let lower = 0, below = 0;
    for (const [upper, count] of buckets) {
      if (count >= rank && upper !== Infinity) {
        return count === below ? upper : lower + (upper - lower) * (rank - below) / (count - below);
      }
      lower = upper; below = count;
    }
    return lower;
  }
  async function pollLatency() {
    try {
      const r = await fetch("metrics", { cache: "no-store" });
      const h = parseHist(await r.text());
      if (lastHist) {
        for (const [cb, buckets] of Object.entries(h)) {
          const prev = lastHist[cb];
          const d = buckets.map(([le, c], i) => [le, c - (prev && prev[i] ? prev[i][1] : 0)]);
          if (d[d.length - 1][1] <= 0) continue;
          (lat[cb] = lat[cb] || []).push({ t: Date.now(), p50: quantile(0.5, d), p99: quantile(0.99, d) });
          if (lat[cb].length > 360) lat[cb].shift();
        }
      }
      lastHist = h;
      drawLatency();
    } catch (e) {
      // The next poll tries again.
    }
  }
  function fmt(s) { return s < 1e-3 ? (s * 1e3).toFixed(2) + "ms" : s < 1 ? (s * 1e3).toFixed(0) + "ms" : s.toFixed(1) + "s"; }
  function drawLatency() {
    const svg = $("chart-latency");
    svg.innerHTML = "";
    const cbs = Object.keys(lat).sort();
    let tmin = Infinity, tmax = -Infinity, vmin = Infinity, vmax = -Infinity;
    for (const cb of cbs) for (const p of lat[cb]) {
      tmin = Math.min(tmin, p.t); tmax = Math.max(tmax, p.t);
      vmin = Math.min(vmin, p.p50); vmax = Math.max(vmax, p.p99);
    }
    svg.appendChild(el("line", { class: "axis", x1: L, y1: H - B, x2: W, y2: H - B }));
    svg.appendChild(el("line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B }));
    if (!cbs.length) {
      svg.appendChild(el("text", { x: L + 8, y: H / 2 }, "no callback has run yet"));
      svg.dataset.points = 0;
      legend("chart-latency-legend", []);
      return;
    }
    // A log scale: latencies span microseconds to seconds.
    const lo = Math.log10(Math.max(vmin, 1e-6)) - 0.2, hi = Math.log10(Math.max(vmax, 1e-6)) + 0.2;
    const x = (t) => tmax === tmin ? (L + W) / 2 : L + 4 + (t - tmin) / (tmax - tmin) * (W - L - 8);
    const y = (v) => H - B - (Math.log10(Math.max(v, 1e-6)) - lo) / (hi - lo) * (H - B - T);
    svg.appendChild(el("text", { x: 2, y: T + 8 }, fmt(Math.pow(10, hi))));
    svg.appendChild(el("text", { x: 2, y: H - B }, fmt(Math.pow(10, lo))));
    svg.appendChild(el("text", { x: W - 24, y: H - 4 }, "now"));
    let points = 0;
    const names = [];
    cbs.forEach((cb, i) => {
      const c = palette[i % palette.length];
      for (const [q, dash] of [["p50", ""], ["p99", "3,2"]]) {
        const pts = lat[cb].map((p) => x(p.t).toFixed(1) + "," + y(p[q]).toFixed(1));
        if (pts.length > 1) svg.appendChild(el("polyline", { points: pts.join(" "), fill: "none", stroke: c, "stroke-width": 1.5, "stroke-dasharray": dash }));
        for (const p of lat[cb]) {
          const dot = el("circle", { class: "pt", cx: x(p.t), cy: y(p[q]), r: 2, fill: c });
          dot.appendChild(el("title", {}, cb + " " + q + ": " + fmt(p[q])));
          svg.appendChild(dot);
          points++;
        }
      }
      names.push(cb + " (solid p50, dashed p99)");
    });
    svg.dataset.points = points;
    legend("chart-latency-legend", names);
  }
  drawLatency();
  pollLatency();
  // Every 10 s: the latency chart, the rest redrawn (the errors of the last hour, the headroom
  // and a two-phase add in progress change without a notification), and the notifications
  // chart moved on with the clock.
  setInterval(() => { pollLatency(); scheduleRefresh(); if (advance(Date.now() - skew)) drawNotes(); }, 10000);
})();
