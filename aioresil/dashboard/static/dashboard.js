// aioresil dashboard: polls the JSON API every second and renders it with DOM APIs only.
//
// Everything shown here (breaker names, task types, error messages, payloads) is untrusted
// input, so it is only ever assigned through textContent or attributes set by DOM calls;
// no HTML string is ever parsed. The server's Content-Security-Policy forbids inline scripts.
"use strict";

(function () {
  const BASE = document.body.dataset.base || "";
  const TOKEN_KEY = "aioresil.dashboard.token";
  const POLL_MS = 1000;
  const HISTORY_MS = 5 * 60 * 1000;
  const MIN_SPAN_MS = 10 * 1000;
  const PAGE_SIZE = 25;
  const SVG = "http://www.w3.org/2000/svg";
  const STATE_COLOURS = {
    closed: "#2f855a",
    half_open: "#b7791f",
    open: "#c53030",
    forced_open: "#742a2a",
    disabled: "#718096",
  };

  const state = {
    config: null,
    history: new Map(), // breaker name -> [{t, state, value}]
    cursors: [null], // cursor of each page shown so far; the last is the current page
    lastDlqMark: null,
    entryId: null,
  };

  const $ = (id) => document.getElementById(id);

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    if (props) {
      for (const [key, value] of Object.entries(props)) {
        if (key === "class") node.className = value;
        else if (key === "dataset") Object.assign(node.dataset, value);
        else if (key === "text") node.textContent = value;
        else node.setAttribute(key, value);
      }
    }
    for (const child of children) {
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function token() {
    return sessionStorage.getItem(TOKEN_KEY) || "";
  }

  function adminVisible() {
    return Boolean(state.config && state.config.admin && token());
  }

  function showResult(message, ok) {
    const box = $("result");
    box.textContent = message;
    box.className = ok ? "result ok" : "result error";
    box.hidden = false;
  }

  async function api(path, options) {
    const init = Object.assign({ headers: {} }, options || {});
    if (init.admin) {
      init.headers.Authorization = "Bearer " + token();
      delete init.admin;
    }
    const response = await fetch(BASE + path, init);
    let body = null;
    try {
      body = await response.json();
    } catch (err) {
      body = null;
    }
    if (!response.ok) {
      const message = body && body.error ? body.error : "HTTP " + response.status;
      const error = new Error(message);
      error.status = response.status;
      throw error;
    }
    return body;
  }

  // ------------------------------------------------------------------ formatting

  function seconds(value) {
    if (value === null || value === undefined) return "–";
    if (value < 1) return value.toFixed(2) + " s";
    if (value < 90) return value.toFixed(1) + " s";
    if (value < 5400) return (value / 60).toFixed(1) + " min";
    if (value < 172800) return (value / 3600).toFixed(1) + " h";
    return (value / 86400).toFixed(1) + " d";
  }

  function when(iso) {
    if (!iso) return "–";
    const date = new Date(iso);
    return isNaN(date) ? iso : date.toLocaleString();
  }

  function failureText(b) {
    const cfg = b.config || {};
    const parts = [];
    if (cfg.failure_rate_threshold !== null && cfg.failure_rate_threshold !== undefined) {
      const rate = b.failure_rate === null ? "–" : (b.failure_rate * 100).toFixed(0) + "%";
      parts.push(rate + " / " + (cfg.failure_rate_threshold * 100).toFixed(0) + "% rate");
    }
    if (b.failure_threshold !== null && b.failure_threshold !== undefined) {
      parts.push(b.consecutive_failures + " / " + b.failure_threshold + " in a row");
    }
    parts.push(b.failure_count + " failed");
    return parts.join(" · ");
  }

  function failureValue(b) {
    // How close the breaker is to opening, 0..1 (1 while open), for the sparkline.
    if (b.state === "open" || b.state === "forced_open") return 1;
    if (b.failure_rate !== null && b.failure_rate !== undefined) return b.failure_rate;
    if (b.failure_threshold) return Math.min(1, b.consecutive_failures / b.failure_threshold);
    return 0;
  }

  // ------------------------------------------------------------------ breakers

  function remember(breakers, now) {
    const seen = new Set();
    for (const b of breakers) {
      seen.add(b.name);
      let points = state.history.get(b.name);
      if (!points) {
        points = [];
        state.history.set(b.name, points);
      }
      points.push({ t: now, state: b.state, value: failureValue(b) });
      while (points.length && points[0].t < now - HISTORY_MS) points.shift();
    }
    for (const name of Array.from(state.history.keys())) {
      if (!seen.has(name)) state.history.delete(name);
    }
  }

  function timeline(name, now) {
    const width = 180;
    const height = 28;
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", "0 0 " + width + " " + height);
    svg.setAttribute("width", String(width));
    svg.setAttribute("height", String(height));
    svg.setAttribute("class", "timeline");
    const points = state.history.get(name) || [];
    // The strip spans what this page has seen (10 s at least, 5 min at most), so it is filled
    // from the first poll on instead of being a sliver at the right for five minutes.
    const span = points.length
      ? Math.min(HISTORY_MS, Math.max(MIN_SPAN_MS, now - points[0].t))
      : HISTORY_MS;
    const x = (t) => ((t - (now - span)) / span) * width;
    for (let i = 0; i < points.length; i++) {
      const start = x(points[i].t);
      const end = i + 1 < points.length ? x(points[i + 1].t) : width;
      const rect = document.createElementNS(SVG, "rect");
      rect.setAttribute("x", start.toFixed(1));
      rect.setAttribute("y", String(height - 6));
      rect.setAttribute("width", Math.max(end - start, 0.5).toFixed(1));
      rect.setAttribute("height", "6");
      rect.setAttribute("fill", STATE_COLOURS[points[i].state] || "#718096");
      svg.append(rect);
    }
    if (points.length > 1) {
      const line = document.createElementNS(SVG, "polyline");
      const coords = points.map(
        (p) => x(p.t).toFixed(1) + "," + (height - 8 - p.value * (height - 10)).toFixed(1)
      );
      line.setAttribute("points", coords.join(" "));
      line.setAttribute("fill", "none");
      line.setAttribute("stroke", "#4a5568");
      line.setAttribute("stroke-width", "1.2");
      svg.append(line);
    }
    const title = document.createElementNS(SVG, "title");
    title.textContent = "state (bar) and failures against the threshold (line), up to 5 minutes";
    svg.append(title);
    return svg;
  }

  async function breakerAction(name, action) {
    const verb = action === "reset" ? "Reset" : "Force open";
    if (!window.confirm(verb + " breaker " + JSON.stringify(name) + "?")) return;
    try {
      const body = await api(
        "/api/breakers/" + encodeURIComponent(name) + "/" + action,
        { method: "POST", admin: true }
      );
      showResult(verb + " " + name + ": now " + body.breaker.state, true);
    } catch (err) {
      showResult(verb + " " + name + " failed: " + err.message, false);
    }
    await refreshBreakers();
  }

  function renderBreakers(breakers, now) {
    const rows = $("breaker-rows");
    const admin = adminVisible();
    const fresh = [];
    let open = 0;
    for (const b of breakers) {
      if (b.state !== "closed") open += 1;
      const badge = el("span", { class: "badge state-" + b.state, text: b.state.replace("_", " ") });
      let next = "–";
      if (b.state === "open" && b.retry_after !== null) next = "in " + seconds(b.retry_after);
      else if (b.state === "forced_open") next = "after a reset";
      const cells = [
        el("td", { class: "name", text: b.name }),
        el("td", null, badge),
        el("td", { text: failureText(b) }),
        el("td", { text: String(b.total_calls) }),
        el("td", { text: String(b.rejected_calls) }),
        el("td", { class: "next-trial", text: next }),
        el("td", null, timeline(b.name, now)),
      ];
      if (admin) {
        const reset = el("button", { type: "button", class: "reset", text: "Reset" });
        reset.addEventListener("click", () => breakerAction(b.name, "reset"));
        const force = el("button", { type: "button", class: "force-open danger", text: "Force open" });
        force.addEventListener("click", () => breakerAction(b.name, "force_open"));
        cells.push(el("td", { class: "actions" }, reset, force));
      }
      fresh.push(el("tr", { dataset: { breaker: b.name, state: b.state } }, ...cells));
    }
    rows.replaceChildren(...fresh);
    $("no-breakers").hidden = breakers.length > 0;
    $("breaker-summary").textContent =
      breakers.length + (breakers.length === 1 ? " breaker, " : " breakers, ") + open + " not closed";
  }

  async function refreshBreakers() {
    const breakers = await api("/api/breakers");
    const now = Date.now();
    remember(breakers, now);
    renderBreakers(breakers, now);
  }

  // ------------------------------------------------------------------ dead letters

  function renderDlqStats(stats) {
    $("dlq-total").textContent = String(stats.total_failed_tasks);
    $("dlq-recent").textContent = String(stats.recent_failures_24h);
    $("dlq-oldest").textContent = seconds(stats.oldest_age_seconds);
    $("dlq-inflight").textContent = String(stats.in_flight);
    const redrive = stats.redrive;  // null unless the queue is on Redis
    $("dlq-redrive-card").hidden = !redrive;
    $("dlq-parked-card").hidden = !redrive;
    if (redrive) {
      $("dlq-redrive-scheduled").textContent = String(redrive.scheduled);
      $("dlq-redrive-parked").textContent = String(redrive.parked);
    }
    const types = Object.entries(stats.failures_by_task_type || {});
    const items = types.map(([type, count]) => {
      const button = el("button", { type: "button", class: "link", text: type });
      button.addEventListener("click", () => setFilter(type));
      return el("li", { dataset: { type: type } }, button, el("span", { class: "count", text: String(count) }));
    });
    if (!items.length) items.push(el("li", { class: "muted", text: "none" }));
    $("dlq-types").replaceChildren(...items);
    const select = $("dlq-filter");
    const current = select.value;
    const names = types.map(([type]) => type);
    if (current && !names.includes(current)) names.push(current);
    const options = [el("option", { value: "", text: "all types" })];
    for (const name of names.sort()) options.push(el("option", { value: name, text: name }));
    const same =
      select.options.length === options.length &&
      options.every((o, i) => select.options[i].value === o.value);
    if (!same) {
      select.replaceChildren(...options);
      select.value = current;
    }
  }

  function setFilter(type) {
    $("dlq-filter").value = type;
    state.cursors = [null];
    loadEntries();
  }

  async function loadEntries() {
    const cursor = state.cursors[state.cursors.length - 1];
    const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
    const type = $("dlq-filter").value;
    if (type) params.set("type", type);
    if (cursor) params.set("cursor", cursor);
    $("purge-type-label").textContent = type ? "of type " + type : "of every type";
    let page;
    try {
      page = await api("/api/dlq/entries?" + params.toString());
    } catch (err) {
      showResult("Could not list dead letters: " + err.message, false);
      return;
    }
    const rows = page.entries.map((e) => {
      const error = (e.error_type ? e.error_type + ": " : "") + e.error_message;
      const row = el(
        "tr",
        { class: "entry-row", tabindex: "0", dataset: { id: e.id } },
        el("td", { text: when(e.failed_at) }),
        el("td", { class: "type", text: e.task_type }),
        el("td", { class: "error", text: error }),
        el("td", { text: String(e.attempts) }),
        el("td", { class: "id", text: e.id })
      );
      row.addEventListener("click", () => showEntry(e.id));
      row.addEventListener("keydown", (event) => {
        if (event.key === "Enter") showEntry(e.id);
      });
      return row;
    });
    $("dlq-rows").replaceChildren(...rows);
    $("no-entries").hidden = rows.length > 0;
    $("dlq-prev").disabled = state.cursors.length < 2;
    $("dlq-next").disabled = !page.next_cursor;
    $("dlq-next").dataset.cursor = page.next_cursor || "";
    $("dlq-page").textContent = "page " + state.cursors.length;
  }

  async function showEntry(id) {
    let entry;
    try {
      entry = await api("/api/dlq/entries/" + encodeURIComponent(id));
    } catch (err) {
      showResult("Could not load dead letter " + id + ": " + err.message, false);
      return;
    }
    state.entryId = id;
    $("entry-id").textContent = entry.id;
    const fields = [
      ["Type", entry.task_type],
      ["Task id", entry.task_id || "–"],
      ["Attempts", String(entry.attempts)],
      ["First failed", when(entry.first_failed_at)],
      ["Last failed", when(entry.failed_at)],
      ["Idempotency key", entry.idempotency_key],
    ];
    const nodes = [];
    for (const [label, value] of fields) nodes.push(el("dt", { text: label }), el("dd", { text: value }));
    $("entry-fields").replaceChildren(...nodes);
    $("entry-error").textContent = (entry.error_type ? entry.error_type + ": " : "") + entry.error_message;
    $("entry-traceback").textContent = entry.traceback || "(none)";
    $("entry-payload").textContent = JSON.stringify(entry.payload, null, 2);
    $("entry-metadata").textContent = JSON.stringify(entry.metadata, null, 2);
    $("entry").hidden = false;
    applyAdmin();
  }

  async function entryAction(kind) {
    const id = state.entryId;
    if (!id) return;
    const question = kind === "retry" ? "Retry dead letter " + id + " now?" : "Remove dead letter " + id + "? This cannot be undone.";
    if (!window.confirm(question)) return;
    try {
      if (kind === "retry") {
        const body = await api("/api/dlq/entries/" + encodeURIComponent(id) + "/retry", { method: "POST", admin: true });
        if (body.succeeded) {
          showResult("Retried " + id + ": succeeded, entry removed", true);
          $("entry").hidden = true;
        } else {
          showResult("Retried " + id + ": failed again (" + (body.error || "error") + ")", false);
          await showEntry(id);
        }
      } else {
        await api("/api/dlq/entries/" + encodeURIComponent(id), { method: "DELETE", admin: true });
        showResult("Removed " + id, true);
        $("entry").hidden = true;
      }
    } catch (err) {
      showResult((kind === "retry" ? "Retry" : "Remove") + " of " + id + " failed: " + err.message, false);
    }
    await refreshDlq(true);
  }

  async function purge(event) {
    event.preventDefault();
    const amount = Number($("purge-age").value);
    const unit = Number($("purge-unit").value);
    if (!Number.isFinite(amount) || amount < 0) {
      showResult("Purge: enter an age of 0 or more", false);
      return;
    }
    const type = $("dlq-filter").value;
    const age = amount * unit;
    const what = type ? "dead letters of type " + JSON.stringify(type) : "dead letters of every type";
    if (!window.confirm("Purge " + what + " older than " + seconds(age) + "?")) return;
    const body = { older_than_seconds: age };
    if (type) body.task_type = type;
    try {
      const result = await api("/api/dlq/purge", {
        method: "POST",
        admin: true,
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
      showResult("Purged " + result.purged + " " + what, true);
    } catch (err) {
      showResult("Purge failed: " + err.message, false);
    }
    state.cursors = [null];
    await refreshDlq(true);
  }

  async function refreshDlq(force) {
    const stats = await api("/api/dlq/stats");
    renderDlqStats(stats);
    const mark = [stats.total_failed_tasks, stats.newest_failure, stats.oldest_failure].join("|");
    // Reload the table when the queue changed, but only on the first page: the user paging
    // back through history should not be yanked to the top.
    if (force || (mark !== state.lastDlqMark && state.cursors.length === 1)) {
      state.lastDlqMark = mark;
      await loadEntries();
    }
  }

  // ------------------------------------------------------------------ admin

  function applyAdmin() {
    const cfg = state.config;
    const form = $("admin-form");
    form.hidden = !(cfg && cfg.admin);
    const has = Boolean(token());
    $("admin-forget").hidden = !has;
    $("admin-use").textContent = has ? "Change token" : "Use token";
    const visible = adminVisible();
    for (const node of document.querySelectorAll(".admin-only")) node.hidden = !visible;
    $("entry-retry").hidden = !(visible && cfg.retry);
  }

  function redrawActions() {
    // Breaker rows carry their action buttons: redraw them now rather than at the next poll.
    if (state.config.breakers) refreshBreakers().catch(() => {});
  }

  function setupAdmin() {
    $("admin-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const value = $("admin-token").value.trim();
      if (value) sessionStorage.setItem(TOKEN_KEY, value);
      $("admin-token").value = "";
      applyAdmin();
      redrawActions();
    });
    $("admin-forget").addEventListener("click", () => {
      sessionStorage.removeItem(TOKEN_KEY);
      applyAdmin();
      redrawActions();
    });
  }

  // ------------------------------------------------------------------ main loop

  async function tick() {
    const cfg = state.config;
    const jobs = [];
    if (cfg.breakers) jobs.push(refreshBreakers());
    if (cfg.dlq) jobs.push(refreshDlq(false));
    const results = await Promise.allSettled(jobs);
    const failed = results.find((r) => r.status === "rejected");
    const live = $("live");
    if (failed) {
      live.textContent = "update failed: " + failed.reason.message;
      live.className = "live stale";
    } else {
      live.textContent = "live · " + new Date().toLocaleTimeString();
      live.className = "live";
    }
  }

  function loop() {
    // A background tab does not poll; it catches up on the first tick once shown again.
    const work = document.hidden ? Promise.resolve() : tick();
    work
      .catch(() => {})
      .finally(() => window.setTimeout(loop, POLL_MS));
  }

  async function start() {
    try {
      state.config = await api("/api/config");
    } catch (err) {
      $("live").textContent = "cannot reach the dashboard API: " + err.message;
      $("live").className = "live stale";
      window.setTimeout(start, 2000);
      return;
    }
    $("breakers-section").hidden = !state.config.breakers;
    $("dlq-section").hidden = !state.config.dlq;
    setupAdmin();
    applyAdmin();
    $("dlq-filter").addEventListener("change", () => setFilter($("dlq-filter").value));
    $("dlq-refresh").addEventListener("click", () => refreshDlq(true));
    $("dlq-next").addEventListener("click", () => {
      const cursor = $("dlq-next").dataset.cursor;
      if (cursor) {
        state.cursors.push(cursor);
        loadEntries();
      }
    });
    $("dlq-prev").addEventListener("click", () => {
      if (state.cursors.length > 1) {
        state.cursors.pop();
        loadEntries();
      }
    });
    $("entry-close").addEventListener("click", () => {
      $("entry").hidden = true;
      state.entryId = null;
    });
    $("entry-retry").addEventListener("click", () => entryAction("retry"));
    $("entry-remove").addEventListener("click", () => entryAction("remove"));
    $("purge-form").addEventListener("submit", purge);
    loop();
  }

  start();
})();
