// The experiments tab: the selected search's trials, charts, facts and importances, kept live by
// the experiment's SSE stream; stop, resume and promote. The list of searches is an htmx
// fragment of GET /api/v1/experiments; the form is experiments_form.js's.
//
// The page holds the search as GET /api/v1/experiments/{id} answered it and applies each live
// event to it at once (trial_started, epoch_end, trial_pruned, trial_completed, front_updated,
// complete, and the snapshot a stream starts with); a moment after the last event it reads the
// search again to settle what the events do not carry (a trial's run queued or started). A trial
// never goes back: an answer older than an event already shown (the read model a moment behind
// the stream) does not undo it.
(function () {
  "use strict";

  var BADGE = { completed: "ok", failed: "bad", running: "run", queued: "run", pruned: "" };
  var OVER = ["completed", "pruned", "failed"];
  var SETTLE_MS = 600;
  var LABELS = {
    val_accuracy: "validation accuracy", val_loss: "validation loss", latency_ms: "latency (ms)",
    params: "parameters", macro_f1: "macro F1", learning_rate: "learning rate", model: "model",
    batch_size: "batch size", weight_decay: "weight decay", image_size: "image size"
  };

  var root = null;
  var projectId = "";
  var editor = false;
  var current = null;  // { id, exp, trials: {n: trial}, stream, timer }

  function el(id) { return document.getElementById(id); }

  function make(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    return e;
  }

  function label(key) { return LABELS[key] || String(key).replace(/_/g, " "); }

  function fmt(key, v) {
    if (v === null || v === undefined) { return "—"; }
    if (typeof v !== "number") { return String(v); }
    if (key === "val_accuracy" || key === "macro_f1") { return (v * 100).toFixed(1) + " %"; }
    if (key === "params") { return Math.round(v).toLocaleString("en"); }
    if (key === "latency_ms") { return v.toFixed(2) + " ms"; }
    if (key === "learning_rate" || key === "weight_decay") { return v.toPrecision(2); }
    return Number.isInteger(v) ? String(v) : v.toFixed(4);
  }

  function badge(status) {
    var b = make("span", "badge " + (BADGE[status] || ""), status);
    b.setAttribute("data-status", status);
    return b;
  }

  function objectives() { return (current && current.exp.objectives) || []; }

  function trialList() {
    return Object.keys(current.trials).map(Number).sort(function (a, b) { return a - b; })
      .map(function (n) { return current.trials[n]; });
  }

  // The parameters the search varies: its space's names (the model always; the learning rate
  // when the space was left to the defaults), in that order.
  function spaceKeys() {
    var config = current.exp.search_config || {};
    var keys = ["model"].concat(Object.keys(config).filter(function (k) { return k !== "model"; }));
    if (!Object.keys(config).length) { keys.push("learning_rate"); }
    return keys;
  }

  // --- holding the search -------------------------------------------------------------------

  // How far a trial has gone: it never goes back (a replayed or older word about it is news
  // to nobody).
  function rank(state) { return OVER.indexOf(state) >= 0 ? 2 : state === "running" ? 1 : 0; }

  function mergeTrial(t) {
    var mine = current.trials[t.trial];
    var merged = Object.assign({}, mine || {}, t);
    if (mine && rank(mine.state) > rank(t.state)) { merged.state = mine.state; }
    if (mine && mine.promoted && !t.promoted) { merged.promoted = mine.promoted; }
    if (mine && (mine.epochs_done || 0) > (t.epochs_done || 0)) {
      merged.epochs_done = mine.epochs_done;
      merged.latest = mine.latest;
    }
    current.trials[t.trial] = merged;
  }

  // The search as an answer (or a stream's snapshot) gives it. A search whose end the stream
  // told is over until the person resumes it, whatever an answer a moment behind says.
  function take(detail) {
    var exp = Object.assign({}, current.exp || {}, detail);
    delete exp.trials;
    if (current.ended && exp.status === "running") { exp.status = "completed"; }
    current.exp = exp;
    (detail.trials || []).forEach(mergeTrial);
  }

  function trialOfRun(runId) {
    var found = null;
    Object.keys(current.trials).forEach(function (n) {
      if (current.trials[n].run_id === runId) { found = current.trials[n]; }
    });
    return found;
  }

  function onEvent(state, type, data) {
    if (state !== current || !data || typeof data !== "object") { return; }
    if (type === "snapshot") { take(data.experiment ? Object.assign({}, data.experiment, { trials: data.trials || [] }) : data); }
    else if (type === "trial_started") { mergeTrial({ trial: data.trial, run_id: data.run_id, params: data.params, state: "queued", epochs_done: 0 }); }
    else if (type === "trial_pruned") { mergeTrial({ trial: data.trial, state: "pruned", pruned_epoch: data.epoch, pruned_value: data.value }); }
    else if (type === "trial_completed") { mergeTrial({ trial: data.trial, state: "completed", values: data.values }); }
    else if (type === "trial_failed") { mergeTrial({ trial: data.trial, state: "failed", error: { code: data.code, message: data.message } }); }
    else if (type === "front_updated") { Object.assign(current.exp, { front: data.front, best: data.best, importances: data.importances }); }
    else if (type === "epoch_end") { onEpoch(data); }
    else if (type === "status") { onRunStatus(data); }
    else if (type === "trial_promoted") { mergeTrial({ trial: data.trial, promoted: { evaluation_id: data.evaluation_id, export_id: data.export_id } }); }
    else if (type === "experiment_stopped") { current.exp.status = "stopped"; }
    else if (type === "experiment_resumed") { state.ended = false; current.exp.status = "running"; current.exp.reason = null; }
    else if (type === "complete") { state.ended = true; current.exp.status = "completed"; current.exp.reason = data.reason; }
    draw();
    settleSoon(state);
    // The search's end ends its stream (the server's, too): nothing to reconnect to.
    if (type === "complete") { quiet(state); }
  }

  function onEpoch(data) {
    var t = (typeof data.trial === "number" && current.trials[data.trial]) || trialOfRun(data.run_id);
    if (!t) { return; }
    if (OVER.indexOf(t.state) < 0) { t.state = "running"; }
    if ((data.epoch || 0) < (t.epochs_done || 0)) { return; }
    t.epochs_done = data.epoch || 0;
    t.latest = data;
  }

  function onRunStatus(data) {
    var t = trialOfRun(data.run_id);
    if (t && OVER.indexOf(t.state) < 0 && (data.status === "running" || data.status === "queued")) { t.state = data.status; }
  }

  function settleSoon(state) {
    clearTimeout(state.timer);
    state.timer = setTimeout(function () { load(state); }, SETTLE_MS);
  }

  function load(state) {
    return Studio.api("GET", "/api/v1/experiments/" + encodeURIComponent(state.id)).then(function (detail) {
      if (state !== current) { return; }
      take(detail);
      draw();
    });
  }

  // --- drawing ------------------------------------------------------------------------------

  function draw() {
    var exp = current.exp;
    el("experiment-panel").classList.remove("hidden");
    el("experiment-name").textContent = exp.name || "";
    var status = el("experiment-status");
    status.textContent = exp.status || "";
    status.setAttribute("data-status", exp.status || "");
    status.className = "badge " + (BADGE[exp.status] || "");
    drawFacts();
    drawTable();
    drawCharts();
    drawImportances();
    enableActions();
  }

  function fact(list, term, value) {
    list.appendChild(make("dt", "", term));
    list.appendChild(make("dd", "", value));
  }

  function drawFacts() {
    var exp = current.exp;
    var list = el("experiment-facts");
    var budget = exp.budget || {};
    list.textContent = "";
    fact(list, "Models", exp.architecture_type);
    fact(list, "Trials", trialList().length + " started, " + trialList().filter(function (t) { return OVER.indexOf(t.state) >= 0; }).length + " finished, of " + exp.max_trials);
    fact(list, "Epochs per trial", budget.epochs_per_trial + (budget.max_concurrent_trials > 1 ? " · up to " + budget.max_concurrent_trials + " at once" : ""));
    fact(list, "Objectives", objectives().map(function (o) { return o.direction + " " + label(o.metric); }).join(", "));
    fact(list, "Pruning", (exp.pruning || {}).kind || "none");
    Object.keys(exp.best || {}).forEach(function (metric) {
      var t = current.trials[exp.best[metric]];
      var v = t && t.values ? t.values[metric] : undefined;
      fact(list, "Best " + label(metric), "trial " + exp.best[metric] + (v !== undefined ? " · " + fmt(metric, v) : ""));
    });
    if (exp.reason) { fact(list, "Ended", exp.reason.replace(/_/g, " ")); }
  }

  function headRow() {
    var tr = el("trials-head");
    tr.textContent = "";
    var cols = [["Trial", "num"], ["State", ""]];
    spaceKeys().forEach(function (k) { cols.push([label(k), ""]); });
    cols.push(["Epochs", "num"]);
    objectives().forEach(function (o) { cols.push([label(o.metric) + (o.direction === "maximize" ? " ↑" : " ↓"), "num"]); });
    cols.push(["Front", ""], ["Run", ""]);
    if (editor) { cols.push(["Promote", ""]); }
    cols.forEach(function (c) {
      var th = make("th", c[1], c[0]);
      th.scope = "col";
      tr.appendChild(th);
    });
  }

  function valueCell(t, o, first) {
    var td = make("td", "num");
    var v = t.values ? t.values[o.metric] : undefined;
    if (typeof v === "number") { td.textContent = fmt(o.metric, v); }
    else if (first && t.state === "failed" && t.error) { td.textContent = t.error.message || t.error.code; td.className = "error small"; }
    else if (first && t.state === "pruned") { td.textContent = fmt(o.metric, t.pruned_value) + " (epoch " + t.pruned_epoch + ")"; td.classList.add("muted"); }
    else if (t.latest && typeof t.latest[o.metric] === "number" && OVER.indexOf(t.state) < 0) {
      td.textContent = fmt(o.metric, t.latest[o.metric]) + " so far";
      td.classList.add("muted");
    } else { td.textContent = "—"; }
    return td;
  }

  function promoteCell(t) {
    var td = make("td");
    if (t.promoted) {
      var a = make("a", "", "Promoted: see the export");
      a.href = "/projects/" + encodeURIComponent(projectId) + "/export?export_id=" + encodeURIComponent(t.promoted.export_id || "");
      td.appendChild(a);
    } else if (t.state === "completed") {
      var b = make("button", "", "Promote");
      b.type = "button";
      b.setAttribute("data-promote", String(t.trial));
      b.setAttribute("aria-label", "Promote trial " + t.trial + " to an export");
      if (current.promoting && current.promoting[t.trial]) { b.disabled = true; b.textContent = "Promoting…"; }
      td.appendChild(b);
    }
    return td;
  }

  function trialRow(t, front) {
    var tr = make("tr");
    tr.setAttribute("data-trial", String(t.trial));
    tr.setAttribute("data-state", t.state);
    tr.appendChild(make("td", "num", t.trial));
    tr.appendChild(make("td")).appendChild(badge(t.state));
    spaceKeys().forEach(function (k) { tr.appendChild(make("td", "", fmt(k, (t.params || {})[k]))); });
    tr.appendChild(make("td", "num", (t.epochs_done || 0) + " / " + ((current.exp.budget || {}).epochs_per_trial || "—")));
    objectives().forEach(function (o, i) { tr.appendChild(valueCell(t, o, i === 0)); });
    var star = make("td", "front");
    if (front[t.trial]) {
      tr.classList.add("on-front");
      star.appendChild(make("span", "", "★")).setAttribute("aria-hidden", "true");
      star.appendChild(make("span", "vh", "on the front"));
    }
    tr.appendChild(star);
    var run = make("td");
    var link = make("a");
    link.href = "/projects/" + encodeURIComponent(projectId) + "/training?run=" + encodeURIComponent(t.run_id);
    link.appendChild(make("code", "", String(t.run_id || "").slice(0, 8)));
    link.appendChild(make("span", "vh", " (the curves of trial " + t.trial + ")"));
    run.appendChild(link);
    tr.appendChild(run);
    if (editor) { tr.appendChild(promoteCell(t)); }
    return tr;
  }

  function drawTable() {
    headRow();
    var body = el("trials-body");
    var focused = document.activeElement && body.contains(document.activeElement) ? document.activeElement.getAttribute("data-promote") : null;
    var front = {};
    (current.exp.front || []).forEach(function (n) { front[n] = true; });
    body.textContent = "";
    var trials = trialList();
    if (!trials.length) {
      var td = make("td", "muted", "No trial yet: the first one starts as soon as the search asks for it.");
      td.colSpan = el("trials-head").children.length;
      body.appendChild(make("tr")).appendChild(td);
    }
    trials.forEach(function (t) { body.appendChild(trialRow(t, front)); });
    el("trials-table").setAttribute("data-trials", String(trials.length));
    if (focused) { var again = body.querySelector("[data-promote='" + focused + "']"); if (again) { again.focus(); } }
  }

  // The axes the trade-off chart offers: the objectives, then the numbers the search varies.
  function axisChoices() {
    var keys = objectives().map(function (o) { return o.metric; });
    spaceKeys().forEach(function (k) {
      var numeric = trialList().some(function (t) { return typeof (t.params || {})[k] === "number"; });
      if (numeric && keys.indexOf(k) < 0) { keys.push(k); }
    });
    return keys;
  }

  function fillAxis(select, keys, fallback) {
    var was = select.value;
    var drawn = Array.prototype.map.call(select.options, function (o) { return o.value; }).join(",");
    if (drawn !== keys.join(",")) {
      select.textContent = "";
      keys.forEach(function (k) { var o = make("option", "", label(k)); o.value = k; select.appendChild(o); });
    }
    select.value = keys.indexOf(was) >= 0 ? was : fallback;
  }

  function drawCharts() {
    var objs = objectives();
    if (!objs.length) { return; }
    var first = objs[0];
    el("trials-caption").textContent = label(first.metric) + " over the trials (" + first.direction + ")";
    ExperimentCharts.drawTrials(trialList(), first, label(first.metric), fmt);
    var keys = axisChoices();
    fillAxis(el("front-y"), keys, first.metric);
    var across = keys.filter(function (k) { return k !== el("front-y").value; })[0] || first.metric;
    fillAxis(el("front-x"), keys, objs[1] ? objs[1].metric : across);
    ExperimentCharts.drawFront(trialList(), current.exp.front, el("front-x").value, el("front-y").value, label, fmt);
  }

  function drawImportances() {
    var box = el("importances");
    var imp = current.exp.importances || {};
    var names = Object.keys(imp).sort(function (a, b) { return imp[b] - imp[a]; });
    box.textContent = "";
    if (!names.length) {
      box.appendChild(make("p", "muted", "Known once two trials have completed: how much each parameter moved the first objective."));
      return;
    }
    var most = imp[names[0]] || 1;
    names.forEach(function (name) {
      var row = make("div", "bar");
      row.appendChild(make("span", "", label(name)));
      var track = row.appendChild(make("span", "track"));
      track.appendChild(make("span", "fill w-" + Math.max(0, Math.min(100, Math.round(imp[name] / most * 20) * 5))));
      row.appendChild(make("span", "num", (imp[name] * 100).toFixed(0) + " %"));
      box.appendChild(row);
    });
  }

  function enableActions() {
    if (!el("experiment-stop")) { return; }
    el("experiment-stop").disabled = current.exp.status !== "running";
    el("experiment-resume").disabled = current.exp.status !== "stopped";
  }

  // --- live -----------------------------------------------------------------------------------

  function follow(state) {
    if (state.stream) { state.stream.close(); }
    var url = "/api/v1/training/" + encodeURIComponent(projectId) + "/experiments/" + encodeURIComponent(state.id) + "/stream";
    state.stream = Studio.follow(url, {
      types: ["snapshot", "trial_started", "epoch_end", "trial_pruned", "trial_completed", "trial_failed", "front_updated", "trial_promoted", "experiment_stopped", "experiment_resumed", "status", "complete"],
      ends: [],
      unstored: ["snapshot"],
      onEvent: function (type, data) { onEvent(state, type, data); },
      onState: function (s) { onStreamState(state, s); }
    });
  }

  // A search that is over (or stopped) needs no stream: one that the server ended is closed
  // here rather than reopened for ever; Resume opens it again.
  function onStreamState(state, s) {
    if (state !== current) { return; }
    el("experiment-stream").textContent = s === "live" ? "Live" : "Reconnecting…";
    if (s !== "reconnecting") { return; }
    load(state).then(function () {
      if (state === current && state.exp.status !== "running") { quiet(state); }
    }).catch(function () { /* the studio is away: the stream keeps trying */ });
  }

  function quiet(state) {
    if (state.stream) { state.stream.close(); state.stream = null; }
    el("experiment-stream").textContent = "";
  }

  function select(id) {
    if (current && current.stream) { quiet(current); }
    var state = { id: id, exp: null, trials: {}, stream: null, timer: null, promoting: {}, ended: false };
    current = state;
    var url = new URL(window.location.href);
    url.searchParams.set("experiment", id);
    window.history.replaceState(null, "", url.toString());
    markRow();
    return Studio.api("GET", "/api/v1/experiments/" + encodeURIComponent(id)).then(function (detail) {
      if (state !== current) { return; }
      if (detail.project_id !== projectId) {
        Studio.flash("That search belongs to another project: open it from that project's page.");
        return;
      }
      take(detail);
      draw();
      follow(state);
    }).catch(function (err) { Studio.showError(err); });
  }

  function markRow() {
    document.querySelectorAll("#experiment-list [data-experiment-row]").forEach(function (tr) {
      var mine = current && tr.getAttribute("data-experiment-row") === current.id;
      tr.classList.toggle("selected", !!mine);
      var b = tr.querySelector("button[data-experiment]");
      if (b) { if (mine) { b.setAttribute("aria-current", "true"); } else { b.removeAttribute("aria-current"); } }
    });
  }

  // --- actions --------------------------------------------------------------------------------

  function act(path, said) {
    var state = current;
    el("experiment-stop").disabled = el("experiment-resume").disabled = true;
    if (path === "/resume") { state.ended = false; }
    Studio.api("POST", "/api/v1/experiments/" + encodeURIComponent(state.id) + path).then(function () {
      Studio.flash(said, "info");
      refreshList();
      return load(state).then(function () { if (state === current && state.exp.status === "running" && !state.stream) { follow(state); } });
    }).catch(function (err) { Studio.showError(err); if (state === current) { enableActions(); } });
  }

  function promote(button) {
    var state = current;
    var trial = Number(button.getAttribute("data-promote"));
    state.promoting[trial] = true;
    button.disabled = true;
    button.textContent = "Promoting…";
    Studio.api("POST", "/api/v1/experiments/" + encodeURIComponent(state.id) + "/trials/" + trial + "/promote", { format: "onnx" }).then(function (answer) {
      Studio.flash("Trial " + trial + " is promoted: its run is evaluated on the test subset and exported to ONNX.", "info");
      if (state !== current) { return; }
      // Accepted: the export exists from now on (its page follows it to the end).
      mergeTrial({ trial: trial, promoted: { evaluation_id: answer.evaluation_id, export_id: answer.export_id } });
      draw();
    }).catch(function (err) {
      delete state.promoting[trial];
      Studio.showError(err);
      if (state === current) { draw(); }
    });
  }

  function refreshList() {
    if (window.htmx && el("experiment-list")) { window.htmx.trigger(el("experiment-list"), "refresh"); }
  }

  function created(evt) {
    if (evt.detail.elt !== el("experiment-form") || !evt.detail.successful) { return; }
    var data = null;
    try { data = JSON.parse(evt.detail.xhr.responseText).data; } catch (e) { return; }
    var id = data.id || data.experiment_id;
    Studio.flash("Search " + (data.name || el("x-name").value) + " started: its trials queue one after another.", "info");
    refreshList();
    select(id).then(function () { el("experiment-panel").scrollIntoView({ block: "start" }); });
  }

  function onClick(evt) {
    var pick = evt.target.closest ? evt.target.closest("[data-experiment]") : null;
    if (pick && root.contains(pick)) { evt.preventDefault(); select(pick.getAttribute("data-experiment")); return; }
    var up = evt.target.closest ? evt.target.closest("[data-promote]") : null;
    if (up && root.contains(up) && !up.disabled) { promote(up); }
  }

  // The list reloads every few seconds: keep the selection marked, pick the newest search when
  // none is chosen yet, and keep messages the person has not read (no user action).
  function listed() {
    markRow();
    if (current) { return; }
    var first = document.querySelector("#experiment-list [data-experiment]");
    if (first) { select(first.getAttribute("data-experiment")); }
  }

  function wire() {
    root.addEventListener("click", onClick);
    document.body.addEventListener("htmx:afterRequest", created);
    el("experiment-list").addEventListener("htmx:afterSwap", listed);
    el("experiment-list").addEventListener("htmx:beforeRequest", function (evt) { evt.stopPropagation(); });
    ["front-x", "front-y"].forEach(function (id) {
      el(id).addEventListener("change", function () { if (current && current.exp) { drawCharts(); } });
    });
    if (el("experiment-stop")) {
      el("experiment-stop").addEventListener("click", function () { act("/stop", "Stopping the search: its running trial stops, the queued ones are dropped."); });
      el("experiment-resume").addEventListener("click", function () { act("/resume", "The search goes on where it stopped."); });
    }
  }

  function start() {
    root = el("experiments");
    if (!root || !window.Chart || !window.ExperimentCharts) { return; }
    projectId = root.getAttribute("data-project-id");
    editor = root.getAttribute("data-editor") === "true";
    ExperimentCharts.setup();
    wire();
    var chosen = root.getAttribute("data-selected");
    if (chosen) { select(chosen); }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
