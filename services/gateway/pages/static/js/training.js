// The training page: the project's runs, the selected run's live curves over its SSE stream,
// stop and resume, and runs compared side by side. The form posts through htmx (studio.js's
// JSON forms); the queue is an htmx fragment of GET /api/v1/training/queue.
//
// The curves hold exactly one point per epoch: points are kept by epoch number (a replayed or
// re-trained epoch replaces its point) and events by id (Studio.follow, and this file across
// the streams it opens), so a reconnect that replays from the start or after Last-Event-ID adds
// nothing twice. Each chart's canvas carries data-points: how many epochs it shows.
(function () {
  "use strict";

  var BADGE = { completed: "ok", failed: "bad", running: "run", queued: "run", stopping: "run" };
  var STOPPABLE = ["queued", "running"];
  var RESUMABLE = ["stopped", "interrupted", "failed", "completed"];
  var OVER = ["completed", "failed"];
  var COLORS = ["#1d4ed8", "#b42318", "#146c2e", "#8a5300", "#6d28d9", "#0e7490", "#be185d", "#374151"];
  var POLL_MS = 3000;

  var root = null;
  var projectId = "";
  var charts = {};
  var current = null;   // the selected run: see select()
  var runs = [];        // the project's runs as the list last showed them
  var runsDrawn = "";   // ... and as JSON, to redraw the list only when it changed
  var ticked = {};      // run id -> true: the runs to compare
  var comparing = null; // the last comparison's data

  function el(id) { return document.getElementById(id); }

  function make(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    return e;
  }

  function short(id) { return String(id || "").slice(0, 8); }

  function fixed(value, digits) {
    return value === null || value === undefined ? "—" : Number(value).toFixed(digits);
  }

  function pct(value) {
    return value === null || value === undefined ? "—" : (Number(value) * 100).toFixed(1) + " %";
  }

  function duration(seconds) {
    var s = Math.max(0, Math.round(Number(seconds) || 0));
    if (s < 60) { return s + " s"; }
    var m = Math.floor(s / 60);
    return m < 60 ? m + " min " + (s % 60) + " s" : Math.floor(m / 60) + " h " + (m % 60) + " min";
  }

  function stamp(iso) {
    var d = new Date(iso);
    if (isNaN(d.getTime())) { return "—"; }
    function two(n) { return (n < 10 ? "0" : "") + n; }
    return d.getFullYear() + "-" + two(d.getMonth() + 1) + "-" + two(d.getDate()) + " " + two(d.getHours()) + ":" + two(d.getMinutes());
  }

  function badge(status) {
    var b = make("span", "badge " + (BADGE[status] || ""), status);
    b.setAttribute("data-status", status);
    return b;
  }

  // --- charts -------------------------------------------------------------------------------

  function lineChart(canvas, series, yTitle, linearX) {
    var datasets = series.map(function (label, i) {
      return { label: label, data: [], borderColor: COLORS[i % COLORS.length], backgroundColor: COLORS[i % COLORS.length], pointRadius: 3, spanGaps: true, tension: 0.15 };
    });
    var x = { title: { display: true, text: "epoch" }, ticks: { precision: 0 } };
    if (linearX) { x.type = "linear"; }
    return new window.Chart(canvas, {
      type: "line",
      data: { labels: [], datasets: datasets },
      options: {
        animation: false,
        responsive: true,
        maintainAspectRatio: false,
        interaction: { mode: "index", intersect: false },
        scales: { x: x, y: { title: { display: true, text: yTitle } } },
        plugins: { legend: { position: "bottom" } }
      }
    });
  }

  function setupCharts() {
    window.Chart.defaults.color = "#1b1f24";
    window.Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
    charts.loss = lineChart(el("chart-loss"), ["training loss", "validation loss"], "loss");
    charts.accuracy = lineChart(el("chart-accuracy"), ["validation accuracy", "validation mAP@[.5:.95]", "validation mAP@.5"], "accuracy / mAP");
    charts.losses = lineChart(el("chart-losses"), [], "loss");
    charts.accuracy.options.scales.y.min = 0;  // accuracy reads against its whole range
    charts.accuracy.options.scales.y.max = 1;
    charts.lr = lineChart(el("chart-lr"), ["learning rate"], "learning rate");
    charts.compare = lineChart(el("chart-compare"), [], "", true);
  }

  function fill(chart, labels, columns) {
    chart.data.labels = labels;
    columns.forEach(function (column, i) { chart.data.datasets[i].data = column; });
    chart.update("none");
    chart.canvas.setAttribute("data-points", String(labels.length));
  }

  function drawCurves() {
    var epochs = Array.from(current.points.keys()).sort(function (a, b) { return a - b; });
    var rows = epochs.map(function (e) { return current.points.get(e); });
    function column(key) { return rows.map(function (r) { return r[key]; }); }
    fill(charts.loss, epochs, [column("train_loss"), column("val_loss")]);
    var detection = rows.some(isDetection);
    el("chart-accuracy-caption").textContent = detection ? "Validation mAP" : "Validation accuracy";
    el("epochs-score").textContent = detection ? "Validation mAP (@.5)" : "Validation accuracy";
    if (detection) {
      fill(charts.accuracy, epochs, [[], column("val_map"), column("val_map50")]);
    } else {
      fill(charts.accuracy, epochs, [column("val_accuracy"), [], []]);
    }
    drawLossComponents(epochs, rows, detection);
    fill(charts.lr, epochs, [column("learning_rate")]);
    drawEpochTable(rows);
  }

  function drawEpochTable(rows) {
    var body = el("epochs-body");
    body.textContent = "";
    rows.forEach(function (r) {
      var tr = make("tr");
      [r.epoch, fixed(r.train_loss, 4), fixed(r.val_loss, 4), score(r), Number(r.learning_rate).toExponential(2), fixed(r.seconds, 1)]
        .forEach(function (v) { tr.appendChild(make("td", "num", v)); });
      body.appendChild(tr);
    });
  }

  // A detector's epoch reports its mAP (its accuracy is 0); a classifier's has none.
  function isDetection(r) { return r.val_map !== null && r.val_map !== undefined; }

  function score(r) {
    return isDetection(r) ? fixed(r.val_map, 3) + " (" + fixed(r.val_map50, 3) + ")" : pct(r.val_accuracy);
  }

  // One line per loss component of the detector (loss_classifier, loss_box_reg, ...).
  function drawLossComponents(epochs, rows, detection) {
    el("chart-losses-figure").classList.toggle("hidden", !detection);
    var names = [];
    rows.forEach(function (r) { Object.keys(r.losses || {}).forEach(function (k) { if (names.indexOf(k) < 0) { names.push(k); } }); });
    names.sort();
    charts.losses.data.datasets = names.map(function (name, i) {
      return { label: name, data: [], borderColor: COLORS[i % COLORS.length], backgroundColor: COLORS[i % COLORS.length], pointRadius: 3, spanGaps: true, tension: 0.15 };
    });
    fill(charts.losses, epochs, names.map(function (name) {
      return rows.map(function (r) { return (r.losses || {})[name]; });
    }));
  }

  // One point per epoch: a later event of the same epoch (a resumed run training it again)
  // replaces the earlier one.
  function addEpoch(row) {
    if (typeof row.epoch !== "number") { return; }
    current.points.set(row.epoch, row);
  }

  // --- the selected run ---------------------------------------------------------------------

  function setStatus(status) {
    if (!status || !current) { return; }
    current.status = status;
    var b = el("run-status");
    b.className = "badge " + (BADGE[status] || "");
    b.setAttribute("data-status", status);
    b.textContent = status;
    if (status !== "running") { el("batch").classList.add("hidden"); }
    enableActions();
    markRow();
  }

  function enableActions() {
    var stop = el("stop-button");
    var resume = el("resume-button");
    if (!stop || !resume || !current) { return; }
    stop.disabled = STOPPABLE.indexOf(current.status) < 0;
    var wanted = Number(el("resume-epochs").value || current.epochs);
    var more = current.status !== "completed" || wanted > current.epochs;
    resume.disabled = RESUMABLE.indexOf(current.status) < 0 || !more;
  }

  function fact(list, term, value) {
    list.appendChild(make("dt", "", term));
    list.appendChild(make("dd", "", value));
  }

  function drawFacts() {
    var r = current.run;
    var h = r.hyperparameters || {};
    var list = el("run-facts");
    list.textContent = "";
    fact(list, "Model", h.model + " · " + h.image_size + " px · batch " + h.batch_size);
    fact(list, "Optimiser", h.optimizer + " · learning rate " + h.learning_rate + " · " + h.schedule);
    fact(list, "Epochs", current.points.size + " of " + current.epochs);
    fact(list, "Images", r.train_images + " training · " + r.val_images + " validation · " + (r.classes || []).length + " classes");
    fact(list, "Device", current.device || "—");
    var best = bestPoint();
    var bestTerm = best && isDetection(best) ? "Best validation mAP (@.5)" : "Best validation accuracy";
    fact(list, bestTerm, best ? score(best) + " (epoch " + best.epoch + ")" : "—");
    var kept = Object.keys(current.checkpoints).sort().map(function (k) { return k + ": epoch " + current.checkpoints[k]; });
    fact(list, "Checkpoints", kept.length ? kept.join(" · ") : "none yet");
  }

  function bestPoint() {
    var best = null;
    function of(p) { return isDetection(p) ? p.val_map : p.val_accuracy; }
    current.points.forEach(function (p) { if (!best || of(p) > of(best)) { best = p; } });
    return best;
  }

  function message(text, kind) {
    var box = el("run-message");
    box.className = "run-message " + (kind || "muted");
    box.textContent = text || "";
  }

  function drawProgress(p) {
    if (current.status !== "running" && current.status !== "stopping") { return; }
    el("batch").classList.remove("hidden");
    var bar = el("batch-progress");
    bar.max = Math.max(1, p.batches || 1);
    bar.value = Math.min(p.batch || 0, bar.max);
    el("batch-text").textContent = "Epoch " + p.epoch + " of " + p.epochs + " · batch " + p.batch + " of " + p.batches;
    el("batch-loss").textContent = "running loss " + fixed(p.running_loss, 4);
    el("batch-eta").textContent = "about " + duration(p.eta_s) + " left";
  }

  function onStatus(data) {
    if (data.device) { current.device = data.device + (data.instance ? " (" + data.instance + ")" : ""); }
    if (typeof data.epochs === "number" && data.type === "training.run_resumed.v1") { current.epochs = data.epochs; }
    setStatus(data.status);
    if (data.status === "stopped") { message("Stopped after epoch " + data.epoch + ": resume continues from there.", "muted"); }
    else if (data.status === "interrupted") { message("Interrupted: " + (data.reason || "its trainer stopped") + ".", "warn"); }
    else if (data.status === "queued" || data.status === "running") { message(""); }
  }

  function onEvent(state, type, data, id) {
    if (state !== current) { return; }
    // Progress is live only: it has no id of its own (it shows the last stored event's).
    if (type === "progress") { drawProgress(data); return; }
    if (id) {
      if (state.seen[id]) { return; }
      state.seen[id] = true;
      state.lastId = id;
    }
    if (type === "status") { onStatus(data); }
    else if (type === "epoch_end") { addEpoch(data); drawCurves(); }
    else if (type === "checkpoint") { current.checkpoints[data.kind] = data.epoch; }
    else if (type === "complete") { setStatus("completed"); message("Completed " + data.epochs + " epochs.", "ok"); }
    else if (type === "error") { setStatus("failed"); message((data.code ? data.code + ": " : "") + data.message, "error"); }
    drawFacts();
    if (type === "complete" || type === "error") { ended(state); }
  }

  // The stream ended (complete or error): the run's stored detail settles what the stream may
  // not have said (a run resumed after an earlier end goes on: follow it again).
  function ended(state) {
    state.live = false;
    el("stream-state").textContent = "";
    loadRuns();
    Studio.api("GET", "/api/v1/training/runs/" + encodeURIComponent(state.id)).then(function (run) {
      if (state !== current) { return; }
      settle(run);
      if (OVER.indexOf(run.status) < 0) { follow(state); }
    }).catch(function () { /* the list and the next selection show it */ });
  }

  function settle(run) {
    current.run = run;
    current.epochs = run.epochs;
    (run.history || []).forEach(addEpoch);
    (run.checkpoints || []).forEach(function (k) { current.checkpoints[k.kind] = k.epoch; });
    setStatus(run.status);
    if (run.message && run.status === "failed") { message(run.message, "error"); }
    drawCurves();
    drawFacts();
  }

  function follow(state) {
    var url = "/api/v1/training/runs/" + encodeURIComponent(state.id) + "/stream";
    if (state.lastId) { url += "?last_event_id=" + encodeURIComponent(state.lastId); }
    state.live = true;
    state.stream = Studio.follow(url, {
      types: ["status", "progress", "epoch_end", "checkpoint"],
      ends: ["complete", "error"],
      unstored: ["progress"],
      onEvent: function (type, data, id) { onEvent(state, type, data, id); },
      onState: function (s) { onStreamState(state, s); }
    });
  }

  // A stream that keeps failing to reconnect for a run that is over (the server answers 204
  // once the client has its end) is closed here rather than retried for ever.
  function onStreamState(state, s) {
    if (state !== current) { return; }
    el("stream-state").textContent = s === "live" ? "Live" : "Reconnecting…";
    if (s !== "reconnecting") { return; }
    Studio.api("GET", "/api/v1/training/runs/" + encodeURIComponent(state.id)).then(function (run) {
      if (state !== current || OVER.indexOf(run.status) < 0) { return; }
      state.stream.close();
      state.live = false;
      el("stream-state").textContent = "";
      settle(run);
    }).catch(function () { /* the studio is away: the stream keeps trying */ });
  }

  function select(runId) {
    if (current && current.stream) { current.stream.close(); }
    var state = { id: runId, run: null, status: "", epochs: 0, device: "", points: new Map(), checkpoints: {}, seen: {}, lastId: null, live: false, stream: null };
    current = state;
    el("run-panel").classList.remove("hidden");
    el("run-id").textContent = short(runId);
    el("batch").classList.add("hidden");
    message("");
    drawCurves();
    var url = new URL(window.location.href);
    url.searchParams.set("run", runId);
    window.history.replaceState(null, "", url.toString());
    markRow();
    return Studio.api("GET", "/api/v1/training/runs/" + encodeURIComponent(runId)).then(function (run) {
      if (state !== current) { return; }
      if (run.project_id !== projectId) {
        Studio.flash("Run " + short(runId) + " is a run of another project: open it from that project's page.");
        return;
      }
      settle(run);
      if (el("resume-epochs")) { el("resume-epochs").value = String(run.epochs); }
      enableActions();
      follow(state);
    }).catch(function (err) { Studio.showError(err); });
  }

  // --- stop and resume ----------------------------------------------------------------------

  function stop() {
    var state = current;
    el("stop-button").disabled = true;
    // The badge follows the stream, whose events come in order; the answer may already be
    // newer than the stream's last event (stopped before the epoch that ended on the way).
    Studio.api("POST", "/api/v1/training/runs/" + encodeURIComponent(state.id) + "/stop").then(function () {
      if (state === current) { message("Stopping at the next batch; the last checkpoint is kept.", "muted"); }
      loadRuns();
      refreshQueue();
    }).catch(function (err) { Studio.showError(err); enableActions(); });
  }

  function resume(evt) {
    evt.preventDefault();
    var state = current;
    var form = el("resume-form");
    form.querySelectorAll(".field-error").forEach(function (e) { e.textContent = ""; });
    Studio.flash("");
    el("resume-button").disabled = true;
    Studio.api("POST", "/api/v1/training/runs/" + encodeURIComponent(state.id) + "/resume", Studio.formJson(form)).then(function (run) {
      if (state !== current) { return; }
      current.epochs = run.epochs;
      message("");
      Studio.flash("Run " + short(run.id) + " resumed: it trains up to " + run.epochs + " epochs.", "info");
      drawFacts();
      if (!state.live) { follow(state); }
      loadRuns();
      refreshQueue();
    }).catch(function (err) { Studio.showError(err, form); enableActions(); });
  }

  // --- the project's runs -------------------------------------------------------------------

  // The queue answers for the whole studio: redraw it now that this page changed it.
  function refreshQueue() {
    if (window.htmx && el("queue")) { window.htmx.trigger(el("queue"), "refresh"); }
  }

  function loadRuns() {
    return Studio.api("GET", "/api/v1/training/runs?project_id=" + encodeURIComponent(projectId) + "&limit=100")
      .then(function (data) {
        var items = data.items || [];
        var drawn = JSON.stringify(items);
        if (drawn === runsDrawn) { return; }  // unchanged: keep the rows (and the focus) as they are
        runsDrawn = drawn;
        runs = items;
        drawRuns();
      })
      .catch(function () { /* shown again at the next poll */ });
  }

  function runRow(run) {
    var tr = make("tr");
    tr.setAttribute("data-run-row", run.id);
    var pick = make("td", "pick");
    var box = make("input");
    box.type = "checkbox";
    box.id = "pick-" + run.id;
    box.setAttribute("data-pick", run.id);
    box.setAttribute("aria-label", "Compare run " + short(run.id));
    box.checked = !!ticked[run.id];
    pick.appendChild(box);
    tr.appendChild(pick);
    var name = make("td");
    var button = make("button", "link");
    button.type = "button";
    button.setAttribute("data-run", run.id);
    button.appendChild(make("code", "", short(run.id)));
    name.appendChild(button);
    name.appendChild(make("span", "model small muted", (run.hyperparameters || {}).model));
    tr.appendChild(name);
    var status = make("td");
    status.appendChild(badge(run.status));
    tr.appendChild(status);
    tr.appendChild(make("td", "num", run.epochs_done + " / " + run.epochs));
    var mapped = run.best_val_map !== null && run.best_val_map !== undefined;
    tr.appendChild(make("td", "num", mapped ? "mAP " + fixed(run.best_val_map, 3) : pct(run.best_val_accuracy)));
    tr.appendChild(make("td", "", stamp(run.created_at)));
    return tr;
  }

  function drawRuns() {
    var body = el("runs-body");
    body.textContent = "";
    if (!runs.length) {
      var td = make("td", "muted", "No run yet: start one with the form.");
      td.colSpan = 6;
      body.appendChild(make("tr")).appendChild(td);
    }
    runs.forEach(function (run) { body.appendChild(runRow(run)); });
    markRow();
    updateCompareButton();
  }

  function markRow() {
    document.querySelectorAll("#runs-body tr").forEach(function (tr) {
      var mine = current && tr.getAttribute("data-run-row") === current.id;
      tr.classList.toggle("selected", !!mine);
      var b = tr.querySelector("button[data-run]");
      if (b) { if (mine) { b.setAttribute("aria-current", "true"); } else { b.removeAttribute("aria-current"); } }
    });
  }

  // --- comparison ---------------------------------------------------------------------------

  function tickedIds() {
    return runs.map(function (r) { return r.id; }).filter(function (id) { return ticked[id]; });
  }

  function updateCompareButton() {
    var n = tickedIds().length;
    var b = el("compare-button");
    b.disabled = n < 2;
    b.textContent = n >= 2 ? "Compare " + n + " runs" : "Compare the runs ticked";
  }

  function compare() {
    var ids = tickedIds();
    if (ids.length < 2) { return; }
    var url = "/api/v1/training/compare?run_ids=" + ids.map(encodeURIComponent).join(",");
    Studio.api("GET", url).then(function (data) {
      comparing = data;
      el("compare-panel").classList.remove("hidden");
      drawCompare();
      window.htmx.ajax("GET", url, { target: "#compare-table", swap: "innerHTML" });
      el("compare-title").scrollIntoView({ block: "start" });
    }).catch(function (err) { Studio.showError(err); });
  }

  function drawCompare() {
    var key = el("compare-metric").value;
    var chart = charts.compare;
    chart.data.labels = [];
    chart.data.datasets = comparing.runs.map(function (run, i) {
      var color = COLORS[i % COLORS.length];
      var data = (run.history || []).map(function (e) { return { x: e.epoch, y: e[key] }; });
      return { label: short(run.id) + " · " + run.hyperparameters.model, data: data, borderColor: color, backgroundColor: color, pointRadius: 3, tension: 0.15 };
    });
    chart.options.scales.y.title = { display: true, text: el("compare-metric").selectedOptions[0].textContent };
    chart.update("none");
    chart.canvas.setAttribute("data-runs", String(chart.data.datasets.length));
  }

  // --- the form and the splits --------------------------------------------------------------

  function loadSplits() {
    var select = el("f-split_id");
    if (!select) { return; }
    Studio.api("GET", "/api/v1/splits?project_id=" + encodeURIComponent(projectId)).then(function (data) {
      var items = data.items || [];
      select.textContent = "";
      if (!items.length) { select.appendChild(make("option", "", "No split yet: make one first")).value = ""; }
      items.forEach(function (s) {
        var t = s.totals || {};
        var text = s.name + " · " + (t.train || 0) + " train / " + (t.val || 0) + " val / " + (t.test || 0) + " test";
        var option = make("option", "", text);
        option.value = s.id;
        select.appendChild(option);
      });
      if (items.length) {
        var newest = select.options[select.options.length - 1];
        newest.selected = newest.defaultSelected = true;  // "Back to the defaults" keeps it
      }
    }).catch(function (err) { Studio.showError(err); });
  }

  function submitted(evt) {
    if (evt.detail.elt !== el("run-form") || !evt.detail.successful) { return; }
    var run = null;
    try { run = JSON.parse(evt.detail.xhr.responseText).data; } catch (e) { return; }
    var where = run.status === "queued" && run.position ? " (place " + run.position + " in the queue)" : "";
    Studio.flash("Run " + short(run.id) + " is " + run.status + where + ".", "info");
    select(run.id);
    el("run-panel").scrollIntoView({ block: "start" });
    loadRuns();
    refreshQueue();
  }

  // A number field holding what is no number reads as empty to the form, which would send the
  // API's default in its place: say so by the field and send nothing instead.
  function checkNumbers(evt) {
    if (evt.detail.elt !== el("run-form")) { return; }
    var bad = Array.prototype.filter.call(evt.detail.elt.querySelectorAll("input[type='number']"), function (input) {
      return input.validity && input.validity.badInput;
    });
    if (!bad.length) { return; }
    // Not sent: studio.js (which clears the last errors before a request) is not told either.
    evt.preventDefault();
    evt.stopPropagation();
    Studio.flash("");
    evt.detail.elt.querySelectorAll(".field-error").forEach(function (e) { e.textContent = ""; });
    bad.forEach(function (input) {
      var box = document.getElementById("error-" + input.name.replace(/[^A-Za-z0-9_-]/g, "-"));
      if (box) { box.textContent = "Enter a number."; }
    });
    bad[0].focus();
  }

  // --- wiring -------------------------------------------------------------------------------

  function onClick(evt) {
    var target = evt.target.closest ? evt.target.closest("[data-run]") : null;
    if (target && root.contains(target)) {
      evt.preventDefault();
      select(target.getAttribute("data-run"));
    }
  }

  function onChange(evt) {
    var id = evt.target.getAttribute && evt.target.getAttribute("data-pick");
    if (id) {
      if (evt.target.checked) { ticked[id] = true; } else { delete ticked[id]; }
      updateCompareButton();
    }
  }

  function wire() {
    root.addEventListener("click", onClick);
    root.addEventListener("change", onChange);
    el("compare-button").addEventListener("click", compare);
    el("compare-metric").addEventListener("change", function () { if (comparing) { drawCompare(); } });
    if (el("stop-button")) {
      el("stop-button").addEventListener("click", stop);
      el("resume-form").addEventListener("submit", resume);
      el("resume-epochs").addEventListener("input", enableActions);
    }
    document.body.addEventListener("htmx:afterRequest", submitted);
    if (el("run-form")) { el("run-form").addEventListener("htmx:beforeRequest", checkNumbers); }
    // The queue's refreshes are no user action: they must not wipe the messages the user has
    // not read yet (studio.js clears them before each request that reaches the body).
    el("queue").addEventListener("htmx:beforeRequest", function (evt) { evt.stopPropagation(); });
  }

  function start() {
    root = el("training");
    if (!root || !window.Chart) { return; }
    projectId = root.getAttribute("data-project-id");
    setupCharts();
    wire();
    loadSplits();
    var chosen = root.getAttribute("data-selected");
    loadRuns().then(function () {
      if (!current && (chosen || runs.length)) { select(chosen || runs[0].id); }
    });
    setInterval(function () { if (!document.hidden) { loadRuns(); } }, POLL_MS);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
