// manta dashboard: one small script, no framework, no build step. Each
// page is a server-rendered shell (body[data-page]); this fills its tables
// from JSON and keeps them fresh from the server-sent event stream.
"use strict";
(() => {
  const $ = (s, r = document) => r.querySelector(s);
  const ESC = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
  const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ESC[c]);
  const page = document.body.dataset.page;
  const param = document.body.dataset.param;

  // ---- fetching ------------------------------------------------------------
  class HTTPError extends Error {
    constructor(status, msg) { super(msg); this.status = status; }
  }
  async function getJSON(url) {
    const r = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
    if (r.status === 401) {
      location.href = "/login?next=" + encodeURIComponent(location.pathname + location.search);
      throw new HTTPError(401, "logged out");
    }
    if (!r.ok) throw new HTTPError(r.status, (await r.text()) || r.statusText);
    return r.json();
  }
  // Ray's State API: {result, msg, data: {result: {result: [...], total, ...}}}.
  async function stateList(resource, params = {}) {
    const q = new URLSearchParams({ limit: "10000", timeout: "30", detail: "false", exclude_driver: "true" });
    for (const [k, v] of Object.entries(params)) {
      if (k === "filters") {
        for (const [fk, fv] of v) { q.append("filter_keys", fk); q.append("filter_predicates", "="); q.append("filter_values", fv); }
      } else q.set(k, v);
    }
    const body = await getJSON("/api/v0/" + resource + "?" + q);
    if (body.result === false) throw new HTTPError(500, body.msg || "the State API failed");
    const res = (body.data && body.data.result) || {};
    const rows = Array.isArray(res) ? res : (res.result || []);
    return {
      rows, total: res.total ?? rows.length, shown: res.num_after_truncation ?? rows.length,
      warning: res.partial_failure_warning || "",
    };
  }
  // The State API is served by another part of the head; say so plainly
  // when this head does not have it (yet).
  function stateNote(el, err) {
    if (err.status === 404) el.textContent = "This head does not serve the State API (/api/v0/…) yet; nothing to list.";
    else el.textContent = "Could not load: " + err.message;
  }

  // ---- formatting -----------------------------------------------------------
  const fmtTime = (ms) => (ms ? new Date(ms).toLocaleTimeString() : "–");
  const fmtDate = (ms) => (ms ? new Date(ms).toLocaleString() : "–");
  function fmtBytes(n) {
    if (!n) return "0 B";
    const u = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : n) + " " + u[i];
  }
  const shortID = (s) => (s && s.length > 14 ? s.slice(0, 12) + "…" : s || "–");
  const idCell = (s, href) => (s ? `<a class="mono" title="${esc(s)}" href="${esc(href)}">${esc(shortID(s))}</a>` : "–");
  function badge(state) {
    const s = String(state || "");
    let c = "";
    if (/^(ALIVE|FINISHED|SUCCEEDED|Leader|CREATED|RUNNING)$/.test(s)) c = "ok";
    if (/PENDING|RESTARTING|Candidate|SUBMITTED|RESCHEDULING/.test(s)) c = "warn";
    if (/^(DEAD|FAILED|STOPPED|Unreachable|REMOVED)$/.test(s)) c = "bad";
    if (s === "Leader") c = "lead";
    return `<span class="badge ${c}">${esc(s || "?")}</span>`;
  }
  function bar(used, total, label) {
    const pct = total > 0 ? Math.min(100, (100 * used) / total) : 0;
    return `<span class="bar" title="${esc(label)}"><span data-pct="${pct.toFixed(1)}"></span><em>${esc(label)}</em></span>`;
  }
  const num = (x) => (Number.isInteger(x) ? String(x) : Number(x).toFixed(2));
  function resources(m, skip) {
    return Object.keys(m || {}).filter((k) => !skip || !skip.includes(k)).sort()
      .map((k) => `${esc(k)}=${esc(num(m[k]))}`).join(" ") || "–";
  }
  function setRows(table, rows, cols, empty) {
    const tb = $(table + " tbody");
    if (!tb) return;
    tb.innerHTML = rows.length ? rows.join("") : `<tr><td colspan="${cols}" class="muted">${esc(empty)}</td></tr>`;
    // Widths through the CSSOM: the page's CSP allows no inline styles.
    for (const el of tb.querySelectorAll("[data-pct]")) el.style.width = el.dataset.pct + "%";
  }
  function cards(el, counts) {
    if (!el) return;
    el.innerHTML = Object.entries(counts).map(([k, v]) =>
      `<div class="card" data-key="${esc(k)}"><div class="n">${esc(v)}</div><div class="l">${esc(k)}</div></div>`).join("");
  }

  // ---- live updates -------------------------------------------------------------
  // refresher wraps a page's loader: at most one run at a time, no more
  // often than every gap ms, a trigger during a run queues one more.
  function refresher(fn, gap = 1000) {
    let running = false, again = false, last = 0, timer = 0;
    const run = async () => {
      if (running) { again = true; return; }
      const wait = last + gap - Date.now();
      if (wait > 0) { if (!timer) timer = setTimeout(() => { timer = 0; run(); }, wait); return; }
      running = true; last = Date.now();
      try { await fn(); } catch (e) { console.warn(e); }
      running = false;
      if (again) { again = false; run(); }
    };
    return run;
  }
  const onChange = []; // [kinds or null, fn]
  const onTick = [];
  function live() {
    const foot = $("#live");
    const es = new EventSource("/api/manta/events");
    es.onopen = () => { foot.className = "live up"; $("#live-state").textContent = "live"; };
    es.onerror = () => { foot.className = "live down"; $("#live-state").textContent = "reconnecting"; };
    es.addEventListener("change", (ev) => {
      const m = JSON.parse(ev.data);
      $("#live-index").textContent = m.index;
      $("#live-events").textContent = m.events;
      $("#live-updated").textContent = new Date().toLocaleTimeString();
      foot.classList.add("flash");
      setTimeout(() => foot.classList.remove("flash"), 400);
      for (const [kinds, fn] of onChange) {
        if (!kinds || m.reset || m.kinds.some((k) => kinds.includes(k))) fn();
      }
    });
    const showHead = (v) => {
      const self = v.heads.find((h) => h.self);
      $("#live-head").textContent = self ? `${self.id} (${self.role})` : "?";
    };
    es.addEventListener("heads", (ev) => {
      const v = JSON.parse(ev.data);
      showHead(v);
      for (const fn of onTick) fn(v);
    });
    getJSON("/api/manta/heads").then(showHead).catch(() => {});
  }

  // ---- pages ----------------------------------------------------------------------
  function renderHeads(v) {
    const rows = v.heads.map((h) => `<tr data-head="${esc(h.id)}" class="${h.self ? "self" : ""}">
      <td>${esc(h.id || "?")}${h.self ? ' <span class="badge">this page</span>' : ""}</td>
      <td class="mono">${esc(h.address)}</td><td>${badge(h.role)}</td><td>${esc(h.suffrage || "–")}</td>
      <td>${h.error ? "–" : esc(h.term)}</td><td>${h.error ? "–" : esc(h.commit_index)}</td>
      <td>${h.error ? "–" : esc(h.applied_index)}</td><td>${h.lag == null ? "–" : esc(h.lag)}</td>
      <td>${h.error || h.role === "Leader" ? "–" : esc(h.last_contact_ms) + " ms"}</td>
      <td class="muted">${esc(h.error || h.quorum_problem || "")}</td></tr>`);
    setRows("#heads", rows, 10, "no head answered");
  }
  function nodeRow(n, wide) {
    const cpuT = (n.resources_total || {}).CPU || 0;
    const avail = n.resources_available;
    const cpuU = avail && avail.CPU != null ? cpuT - avail.CPU : null;
    const cpu = cpuU == null ? `– / ${num(cpuT)}` : bar(cpuU, cpuT, `${num(cpuU)} / ${num(cpuT)}`);
    const store = n.object_store_capacity
      ? bar(n.object_store_allocated, n.object_store_capacity, `${fmtBytes(n.object_store_allocated)} / ${fmtBytes(n.object_store_capacity)}`)
      : (n.raylet_error ? `<span class="muted" title="${esc(n.raylet_error)}">raylet not answering</span>` : "–");
    const workers = n.state === "ALIVE" && !n.raylet_error ? `${n.leased_workers} / ${n.workers}` : "–";
    const other = resources(n.resources_total, ["CPU"]);
    if (!wide) {
      return `<tr data-node="${esc(n.node_id)}"><td>${esc(n.node_id)}</td><td>${badge(n.state)}</td><td>${cpu}</td><td class="mono">${other}</td><td>${store}</td><td>${workers}</td></tr>`;
    }
    return `<tr data-node="${esc(n.node_id)}"><td>${esc(n.node_id)}</td><td class="mono">${esc(n.address)}</td><td>${badge(n.state)}${n.death_reason ? `<div class="muted">${esc(n.death_reason)}</div>` : ""}</td>
      <td>${cpu}</td><td class="mono">${other}</td><td>${store}</td><td>${esc(n.objects)}</td><td>${fmtBytes(n.spilled_bytes)}</td>
      <td>${workers}</td><td>${n.state === "ALIVE" ? esc(n.queued_leases) : "–"}</td><td>${fmtTime(n.last_heartbeat_ms)}</td></tr>`;
  }
  async function loadNodes(wide) {
    const v = await getJSON("/api/manta/nodes");
    setRows("#nodes", v.nodes.map((n) => nodeRow(n, wide)), wide ? 11 : 6, "no nodes registered");
    const note = $("#nodes-note");
    if (note) note.textContent = v.stale ? "No leader answered: free resources and heartbeats are unknown (the leader keeps them)." : "";
    const alive = v.nodes.filter((n) => n.state === "ALIVE");
    let cpuT = 0, cpuU = 0, memT = 0, memU = 0;
    for (const n of alive) {
      const t = (n.resources_total || {}).CPU || 0;
      cpuT += t;
      if (n.resources_available && n.resources_available.CPU != null) cpuU += t - n.resources_available.CPU;
      memT += n.object_store_capacity || 0; memU += n.object_store_allocated || 0;
    }
    const sum = $("#node-summary");
    if (sum) cards(sum, { "nodes alive": alive.length, "nodes dead": v.nodes.length - alive.length,
      "CPUs used": `${num(cpuU)} / ${num(cpuT)}`, "object store": `${fmtBytes(memU)} / ${fmtBytes(memT)}` });
  }
  async function loadActors(withTable) {
    const actors = await getJSON("/api/manta/actors");
    const counts = {};
    for (const a of actors) counts[a.state] = (counts[a.state] || 0) + 1;
    counts.total = actors.length;
    cards($("#actor-counts"), counts);
    if (!withTable) return;
    setRows("#actors", actors.map((a) => `<tr data-actor="${esc(a.actor_id)}"><td class="mono" title="${esc(a.actor_id)}">${esc(shortID(a.actor_id))}</td>
      <td>${esc(a.class_name)}</td><td>${esc(a.name || "–")}</td><td>${badge(a.state)}</td><td>${esc(a.job_id)}</td>
      <td>${esc(a.node_id || "–")}</td><td>${esc(a.num_restarts)}${a.max_restarts ? " / " + (a.max_restarts < 0 ? "∞" : esc(a.max_restarts)) : ""}</td>
      <td class="mono">${resources(a.required_resources)}</td><td class="muted">${esc(a.death_cause || a.pending_reason || "")}</td></tr>`), 9, "no actors");
  }
  async function loadJobsOverview() {
    const [drivers, subs] = await Promise.all([getJSON("/api/manta/jobs"), getJSON("/api/jobs/").catch(() => [])]);
    const rows = [];
    for (const s of subs.slice(0, 10)) rows.push(`<tr><td>${idCell(s.submission_id, "/jobs/" + s.submission_id)}</td><td>submitted</td><td>${badge(s.status)}</td><td>${fmtDate(s.start_time)}</td></tr>`);
    for (const j of drivers.slice(0, 10)) rows.push(`<tr><td>${idCell(j.job_id, "/jobs/" + j.job_id)}</td><td>driver</td><td>${badge(j.status)}</td><td>${fmtDate(j.start_time_ms)}</td></tr>`);
    setRows("#jobs", rows, 4, "no jobs yet");
  }

  const pages = {};
  pages.overview = async () => {
    getJSON("/api/manta/heads").then(renderHeads).catch(() => {});
    const nodes = refresher(() => loadNodes(false), 2000);
    const actors = refresher(() => loadActors(false), 500);
    const jobs = refresher(loadJobsOverview, 1000);
    nodes(); actors(); jobs();
    onTick.push(renderHeads, nodes);
    onChange.push([["node"], nodes], [["actor"], actors], [["job", "submission"], jobs]);
  };
  async function loadAutoscaler() {
    const v = await getJSON("/api/manta/autoscaler");
    const note = $("#autoscaler-note");
    if (note) note.textContent = v.enabled ? (v.requested_resources.length ? "requested resources: " + v.requested_resources.join("; ") : "")
      : "not running on the leader (no --autoscale config)";
    setRows("#node-types", v.node_types.map((t) => `<tr><td>${esc(t.name)}</td><td>${esc(t.active)}</td><td>${esc(t.pending)}</td>
      <td>${esc(t.failed)}</td><td>${esc(t.min_count)}</td><td>${esc(t.max_count)}</td><td class="mono">{${esc(t.resources)}}</td>
      <td class="muted">${t.launch_errors ? esc(t.launch_errors + " in a row: " + t.last_error) : "–"}</td></tr>`), 8, "no node types");
    setRows("#demands", v.pending_demands.map((d) => `<tr><td>${esc(d.count)}</td><td class="mono">{${esc(d.shape)}}</td>
      <td>${esc(d.source)}${d.infeasible ? ' <span class="badge">infeasible</span>' : ""}</td></tr>`), 3, "none");
    setRows("#decisions", v.decisions.slice(0, 20).map((d) => `<tr><td>${fmtTime(d.time_ms)}</td><td>${esc(d.action)}</td>
      <td>${esc(d.node_type || "–")}</td><td class="mono">${esc(d.instance || "–")}</td><td class="muted">${esc(d.reason)}</td></tr>`), 5, "none yet");
  }
  pages.nodes = async () => {
    const nodes = refresher(() => loadNodes(true), 2000);
    const scaler = refresher(loadAutoscaler, 1000);
    nodes(); scaler();
    onTick.push(nodes, scaler);
    onChange.push([["node"], nodes]);
  };
  pages.actors = async () => {
    const actors = refresher(() => loadActors(true), 500);
    actors();
    onChange.push([["actor", "node"], actors]);
  };

  // Tasks: Ray's State API, filtered on the server, paged here.
  const PAGE = 500;
  pages.tasks = async () => {
    const form = $("#task-filter");
    const q = new URLSearchParams(location.search);
    for (const el of form.elements) if (el.name && q.get(el.name)) el.value = q.get(el.name);
    let all = [], at = 0, loadMs = 0;
    const draw = () => {
      const rows = all.slice(at, at + PAGE).map((t) => `<tr data-task="${esc(t.task_id)}">
        <td>${idCell(t.task_id, "/tasks/" + t.task_id)}</td><td>${esc(t.func_or_class_name || t.name)}</td>
        <td>${badge(t.state)}</td><td>${esc(t.attempt_number)}</td><td>${esc(t.type)}</td><td>${esc(t.job_id)}</td>
        <td>${esc(t.node_id ? shortID(t.node_id) : "–")}</td><td>${esc(t.worker_pid || "–")}</td><td class="muted">${esc(t.error_type || "")}</td></tr>`);
      setRows("#tasks", rows, 9, "no tasks match");
      $("#page-info").textContent = all.length ? `${at + 1}–${Math.min(at + PAGE, all.length)} of ${all.length}` : "";
    };
    $("#prev").onclick = () => { at = Math.max(0, at - PAGE); draw(); };
    $("#next").onclick = () => { if (at + PAGE < all.length) { at += PAGE; draw(); } };
    const load = async () => {
      const filters = [];
      for (const el of form.elements) if (el.name && el.value) filters.push([el.name, el.value]);
      const t0 = performance.now();
      try {
        const res = await stateList("tasks", { filters });
        all = res.rows;
        const counts = {};
        for (const t of all) counts[t.state] = (counts[t.state] || 0) + 1;
        counts.listed = all.length;
        cards($("#task-summary"), counts);
        $("#tasks-note").textContent = (res.total > res.shown ? `Showing ${res.shown} of ${res.total} tasks (the State API's limit). ` : "") + res.warning;
        if (at >= all.length) at = 0;
        draw();
      } catch (e) {
        stateNote($("#tasks-note"), e);
        setRows("#tasks", [], 9, "no task list");
      }
      loadMs = performance.now() - t0;
      document.body.dataset.tasksLoadedMs = loadMs.toFixed(0);
      document.body.dataset.tasksLoaded = String(all.length);
    };
    // A long list refreshes less often: a few times its own load time.
    let gapOK = 0;
    const refresh = refresher(load, 2000);
    form.onsubmit = (ev) => {
      ev.preventDefault();
      const p = new URLSearchParams();
      for (const el of form.elements) if (el.name && el.value) p.set(el.name, el.value);
      history.replaceState(null, "", "/tasks" + (p.toString() ? "?" + p : ""));
      at = 0; load();
    };
    await load();
    onTick.push(() => { if (Date.now() > gapOK) { gapOK = Date.now() + Math.max(3000, 5 * loadMs); refresh(); } });
  };

  pages.task = async () => {
    const load = async () => {
      try {
        const res = await stateList("tasks", { filters: [["task_id", param]], detail: "true" });
        const att = res.rows.sort((a, b) => (a.attempt_number || 0) - (b.attempt_number || 0));
        $("#attempts").innerHTML = att.length ? att.map((t) => `<h3>Attempt ${esc(t.attempt_number)} ${badge(t.state)}</h3>
          <dl class="kv"><dt>Function</dt><dd>${esc(t.func_or_class_name || t.name)}</dd><dt>Type</dt><dd>${esc(t.type)}</dd>
          <dt>Job</dt><dd>${esc(t.job_id)}</dd><dt>Actor</dt><dd class="mono">${esc(t.actor_id || "–")}</dd>
          <dt>Parent task</dt><dd>${idCell(t.parent_task_id, "/tasks/" + t.parent_task_id)}</dd>
          <dt>Node</dt><dd class="mono">${esc(t.node_id || "–")}</dd><dt>Worker</dt><dd class="mono">${esc(t.worker_id || "–")} pid ${esc(t.worker_pid || "–")}</dd>
          <dt>Resources</dt><dd class="mono">${resources(t.required_resources)}</dd>
          <dt>Created</dt><dd>${fmtDate(t.creation_time_ms)}</dd><dt>Started</dt><dd>${fmtDate(t.start_time_ms)}</dd><dt>Ended</dt><dd>${fmtDate(t.end_time_ms)}</dd>
          <dt>Error type</dt><dd>${esc(t.error_type || "–")}</dd></dl>
          ${t.error_message ? `<h3>Error and stack</h3><pre class="err" id="task-error">${esc(t.error_message)}</pre>` : ""}`).join("")
          : `<p class="muted">No task events for this task.</p>`;
      } catch (e) {
        $("#attempts").innerHTML = "";
        stateNote($("#task-note"), e);
      }
      try {
        const r = await getJSON("/api/manta/tasks/" + encodeURIComponent(param));
        $("#record").innerHTML = `<dl class="kv"><dt>Function</dt><dd>${esc(r.function)}</dd><dt>State</dt><dd>${badge(r.state)}</dd>
          <dt>Node</dt><dd>${esc(r.node_id || "–")}</dd><dt>Attempts</dt><dd>${esc(r.attempts)} (max retries ${esc(r.max_retries < 0 ? "∞" : r.max_retries)})</dd>
          <dt>Job</dt><dd>${esc(r.job_id)}</dd><dt>Owner</dt><dd class="mono">${esc(r.owner_address)}</dd>
          <dt>Submitted</dt><dd>${fmtDate(r.submitted_ms)}</dd><dt>Finished</dt><dd>${fmtDate(r.finished_ms)}</dd>
          <dt>Returns</dt><dd>${r.returns.map((o) => `<a class="mono" href="/lineage?object=${esc(o)}">${esc(shortID(o))}</a>`).join(" ") || "–"}</dd></dl>
          ${r.last_error ? `<pre class="err" id="record-error">${esc(r.last_error)}</pre>` : ""}`;
      } catch (e) {
        $("#record").innerHTML = `<p class="muted">${e.status === 404 ? "No lineage record (its outputs were inline, released, or never stored)." : esc(e.message)}</p>`;
      }
    };
    await load();
    const refresh = refresher(load, 3000);
    onTick.push(refresh);
  };

  async function simpleState(resource, table, note, cols, row, empty) {
    const load = async () => {
      try {
        const res = await stateList(resource);
        setRows(table, res.rows.map(row), cols, empty);
        $(note).textContent = (res.total > res.shown ? `Showing ${res.shown} of ${res.total}. ` : "") + res.warning;
      } catch (e) {
        stateNote($(note), e);
        setRows(table, [], cols, "nothing listed");
      }
    };
    await load();
    const refresh = refresher(load, 3000);
    onTick.push(refresh);
  }
  pages.objects = () => simpleState("objects", "#objects", "#objects-note", 8, (o) => `<tr data-object="${esc(o.object_id)}">
    <td class="mono" title="${esc(o.object_id)}">${esc(shortID(o.object_id))}</td><td>${fmtBytes(o.object_size)}</td>
    <td>${esc(o.reference_type)}</td><td>${esc(o.task_status)}</td><td>${esc(o.ip || o.node_id || "–")}</td><td>${esc(o.pid || "–")}</td>
    <td class="mono">${esc(o.call_site || "")}</td><td><a href="/lineage?object=${esc(o.object_id)}">lineage</a></td></tr>`, "no objects");
  pages.workers = () => simpleState("workers", "#workers", "#workers-note", 7, (w) => `<tr data-worker="${esc(w.worker_id)}">
    <td class="mono" title="${esc(w.worker_id)}">${esc(shortID(w.worker_id))}</td><td>${w.is_alive ? badge("ALIVE") : badge("DEAD")}</td>
    <td>${esc(w.worker_type)}</td><td class="mono">${esc(shortID(w.node_id))}</td><td>${esc(w.ip)}</td><td>${esc(w.pid)}</td>
    <td class="muted">${esc(w.exit_type || "")} ${esc(w.exit_detail || "")}</td></tr>`, "no workers");
  pages.placement_groups = () => simpleState("placement_groups", "#pgs", "#pgs-note", 6, (p) => `<tr>
    <td class="mono">${esc(shortID(p.placement_group_id))}</td><td>${esc(p.name || "–")}</td><td>${esc(p.creator_job_id)}</td>
    <td>${badge(p.state)}</td><td>${esc(p.strategy || "")}</td><td class="mono">${esc(JSON.stringify(p.bundles || []))}</td></tr>`, "no placement groups");

  pages.serve = async () => {
    const load = async () => {
      try {
        const v = await getJSON("/api/manta/serve");
        const deps = [], reps = [];
        for (const a of v.applications) {
          for (const d of a.deployments) {
            deps.push(`<tr><td>${esc(a.name)}</td><td class="mono">${esc(a.route_prefix)}</td><td>${esc(d.name)}</td>
              <td>${badge(d.status || "–")} <span class="muted">${esc(d.message || "")}</span></td><td>${esc(d.running_replicas)} / ${esc(d.target_replicas)}</td>
              <td class="mono">${esc(d.version)}</td></tr>`);
          }
          for (const r of a.replicas) {
            reps.push(`<tr><td class="mono">${esc(r.replica_id)}</td><td>${esc(a.name)}</td><td>${esc(r.deployment)}</td><td>${badge(r.state)}</td>
              <td>${badge(r.actor_state || "–")}</td><td class="mono">${esc(shortID(r.node_id || ""))}</td><td>${esc(r.ongoing)}</td><td class="mono">${esc(r.version)}</td></tr>`);
          }
        }
        setRows("#serve-deployments", deps, 6, "no applications");
        setRows("#serve-replicas", reps, 8, "no replicas");
        setRows("#serve-proxies", v.proxies.map((p) => `<tr><td class="mono">${esc(shortID(p.node_id))}</td><td class="mono">${esc(p.address || "–")}</td>
          <td class="mono">${esc(p.actor_id)}</td><td>${badge(p.actor_state || "–")}</td></tr>`), 4, "no proxies");
        $("#serve-note").textContent = "";
      } catch (e) {
        stateNote($("#serve-note"), e);
      }
    };
    await load();
    const refresh = refresher(load, 2000);
    onTick.push(refresh);
  };

  pages.jobs = async () => {
    const load = async () => {
      const [drivers, subs] = await Promise.all([getJSON("/api/manta/jobs"), getJSON("/api/jobs/").catch(() => [])]);
      setRows("#submissions", subs.map((s) => `<tr data-job="${esc(s.submission_id)}"><td><a href="/jobs/${esc(s.submission_id)}">${esc(s.submission_id)}</a></td>
        <td>${badge(s.status)}</td><td class="mono">${esc(s.entrypoint)}</td><td>${esc(s.job_id || "–")}</td><td>${esc(s.driver_node_id || "–")}</td>
        <td>${fmtDate(s.start_time)}</td><td>${fmtDate(s.end_time)}</td><td class="muted">${esc(s.message || "")}</td></tr>`), 8, "no submitted jobs");
      setRows("#drivers", drivers.map((j) => `<tr data-job="${esc(j.job_id)}"><td><a href="/jobs/${esc(j.job_id)}">${esc(j.job_id)}</a></td>
        <td>${badge(j.status)}</td><td class="mono">${esc(j.driver_address)}</td><td class="mono">${esc(j.entrypoint || "")}</td>
        <td>${fmtDate(j.start_time_ms)}</td><td>${fmtDate(j.end_time_ms)}</td></tr>`), 6, "no driver jobs");
    };
    const refresh = refresher(load, 1000);
    await load();
    onChange.push([["job", "submission"], refresh]);
  };

  pages.job = async () => {
    let running = true;
    const load = async () => {
      let sub = null;
      try { sub = await getJSON("/api/jobs/" + encodeURIComponent(param)); } catch (e) { if (e.status !== 404) throw e; }
      if (sub) {
        running = !["SUCCEEDED", "FAILED", "STOPPED"].includes(sub.status);
        $("#job-info").innerHTML = `<dl class="kv"><dt>Status</dt><dd>${badge(sub.status)} <span class="muted">${esc(sub.message || "")}</span></dd>
          <dt>Entrypoint</dt><dd class="mono">${esc(sub.entrypoint)}</dd><dt>Driver job</dt><dd>${esc(sub.job_id || "–")}</dd>
          <dt>Node</dt><dd>${esc(sub.driver_node_id || "–")}</dd><dt>Exit code</dt><dd>${esc(sub.driver_exit_code ?? "–")}</dd>
          <dt>Started</dt><dd>${fmtDate(sub.start_time)}</dd><dt>Ended</dt><dd>${fmtDate(sub.end_time)}</dd></dl>`;
        const logs = await getJSON("/api/jobs/" + encodeURIComponent(param) + "/logs");
        const pre = $("#job-logs");
        const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
        pre.textContent = logs.logs || "(no output yet)";
        if (atEnd) pre.scrollTop = pre.scrollHeight;
        $("#log-state").textContent = running ? "following while the job runs" : "the job ended";
        return;
      }
      const drivers = await getJSON("/api/manta/jobs");
      const j = drivers.find((d) => d.job_id === param);
      running = false;
      if (!j) { $("#job-info").innerHTML = `<p class="muted">No job ${esc(param)}.</p>`; return; }
      $("#job-info").innerHTML = `<dl class="kv"><dt>Status</dt><dd>${badge(j.status)}</dd><dt>Driver</dt><dd class="mono">${esc(j.driver_address)}</dd>
        <dt>Entrypoint</dt><dd class="mono">${esc(j.entrypoint || "–")}</dd><dt>Started</dt><dd>${fmtDate(j.start_time_ms)}</dd><dt>Ended</dt><dd>${fmtDate(j.end_time_ms)}</dd></dl>`;
      $("#job-logs").textContent = "A driver started by hand writes to its own terminal; its workers' output is under `manta logs --job " + param + "`.";
    };
    const refresh = refresher(load, 1000);
    await load();
    onChange.push([["job", "submission"], refresh]);
    onTick.push(() => { if (running) refresh(); });
  };

  pages.lineage = async () => {
    const obj = new URLSearchParams(location.search).get("object") || "";
    $("#lineage-object").value = obj;
    if (!obj) { $("#lineage-note").textContent = "Give an object ID (the Objects page links each object here)."; return; }
    const load = async () => {
      try {
        const v = await getJSON("/api/manta/lineage/" + encodeURIComponent(obj));
        // The SVG is built by the server with every text escaped.
        $("#graph").innerHTML = v.svg;
        $("#lineage-note").textContent = `${v.records.length} recorded tasks` +
          (v.evicted_task_ids.length ? `, ${v.evicted_task_ids.length} evicted` : "") +
          (v.missing_task_ids.length ? `, ${v.missing_task_ids.length} without a record` : "") + ". Click a task or an object.";
        setRows("#records", v.records.map((r) => `<tr><td>${idCell(r.task_id, "/tasks/" + r.task_id)}</td><td>${esc(r.function)}</td>
          <td>${badge(r.state)}</td><td>${esc(r.node_id || "–")}</td><td>${esc(r.attempts)}</td>
          <td>${r.arg_refs.map((o) => `<a class="mono" href="/lineage?object=${esc(o)}">${esc(shortID(o))}</a>`).join(" ")}${r.arg_values ? ` +${esc(r.arg_values)} values` : ""}</td>
          <td>${r.returns.map((o) => `<span class="mono">${esc(shortID(o))}</span>`).join(" ")}</td><td class="muted">${esc(r.last_error || "")}</td></tr>`), 8, "no records");
      } catch (e) {
        $("#graph").innerHTML = "";
        $("#lineage-note").textContent = e.message;
      }
    };
    await load();
    const refresh = refresher(load, 5000);
    onTick.push(refresh);
  };

  live();
  const fn = pages[page];
  if (fn) Promise.resolve(fn()).catch((e) => console.warn(e)).finally(() => { document.body.dataset.ready = "1"; });
})();
