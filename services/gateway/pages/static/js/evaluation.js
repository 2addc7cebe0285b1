// The evaluation page: the project's completed runs to choose from, an evaluation followed
// until it ends, its result drawn by the API's fragment, and the reliability diagram drawn
// from the same evaluation's JSON. ?evaluation=<id> in the address reopens one.
(function () {
  "use strict";

  var POLL_MS = 800;
  var page = null;
  var chart = null;

  function $(id) { return document.getElementById(id); }
  function projectId() { return page.getAttribute("data-project-id"); }
  function pct(x) { return (x * 100).toFixed(1) + " %"; }

  function runLabel(run) {
    var hp = run.hyperparameters || {};
    var parts = [run.id.slice(0, 8), hp.model || "model", run.epochs_done + " epoch" + (run.epochs_done === 1 ? "" : "s")];
    // A detector's run is told by its validation mAP (its accuracy is 0 by definition).
    if (run.best_val_map !== null && run.best_val_map !== undefined) { parts.push("val mAP " + pct(run.best_val_map)); }
    else if (run.best_val_accuracy !== null && run.best_val_accuracy !== undefined) { parts.push("val " + pct(run.best_val_accuracy)); }
    return parts.join(" · ");
  }

  function fillRuns(runs) {
    var select = $("eval-run");
    if (!select) { return; }
    select.textContent = "";
    runs.forEach(function (run) {
      var o = document.createElement("option");
      o.value = run.id;
      o.textContent = runLabel(run);
      select.appendChild(o);
    });
    if (!runs.length) {
      var none = document.createElement("option");
      none.value = "";
      none.textContent = "No completed run yet: train one first";
      select.appendChild(none);
    }
    $("eval-start").disabled = !runs.length;
  }

  function historySection(run) {
    var section = document.createElement("section");
    section.className = "eval-run";
    section.setAttribute("aria-labelledby", "eval-run-" + run.id);
    var h = document.createElement("h3");
    h.id = "eval-run-" + run.id;
    h.textContent = "Run " + runLabel(run);
    var list = document.createElement("div");
    list.id = "eval-list-" + run.id;
    list.setAttribute("hx-get", "/api/v1/evaluation?run_id=" + encodeURIComponent(run.id) + "&project_id=" + encodeURIComponent(projectId()));
    list.setAttribute("hx-trigger", "load, refresh");
    list.setAttribute("hx-swap", "innerHTML");
    section.appendChild(h);
    section.appendChild(list);
    return section;
  }

  function fillHistory(runs) {
    var box = $("eval-history");
    box.textContent = "";
    if (!runs.length) {
      var p = document.createElement("p");
      p.className = "muted";
      p.textContent = "No completed run in this project yet: evaluations appear here once a run is evaluated.";
      box.appendChild(p);
      return;
    }
    runs.forEach(function (run) { box.appendChild(historySection(run)); });
    window.htmx.process(box);
  }

  function loadRuns() {
    var url = "/api/v1/training/runs?status=completed&project_id=" + encodeURIComponent(projectId());
    return window.Studio.api("GET", url).then(function (data) {
      fillRuns(data.items);
      fillHistory(data.items);
    }, function (err) { window.Studio.showError(err); });
  }

  function open(evaluationId) {
    var url = "/api/v1/evaluation/" + encodeURIComponent(evaluationId) + "?project_id=" + encodeURIComponent(projectId());
    return window.htmx.ajax("GET", url, { target: "#eval-result", swap: "innerHTML" });
  }

  function poll(evaluationId, runId) {
    window.Studio.api("GET", "/api/v1/evaluation/" + encodeURIComponent(evaluationId)).then(function (e) {
      if (e.status === "running") { setTimeout(function () { poll(evaluationId, runId); }, POLL_MS); return; }
      var done = $("eval-running");
      if (done) { done.textContent = e.status === "completed" ? "The evaluation is complete: its result is below." : "The evaluation failed: its reason is below."; }
      open(evaluationId);
      var list = $("eval-list-" + runId);
      if (list) { window.htmx.trigger(list, "refresh"); }
    }, function (err) {
      window.Studio.showError(err);
      // The studio being away for a moment is worth waiting for; a refusal is not.
      if (err.status && err.status < 500) { return; }
      setTimeout(function () { poll(evaluationId, runId); }, POLL_MS * 4);
    });
  }

  function afterStart() {
    var running = $("eval-running");
    if (!running) { return; }
    poll(running.getAttribute("data-evaluation-id"), running.getAttribute("data-run-id"));
  }

  function drawReliability(e) {
    var bins = ((e.metrics || {}).calibration || []).filter(function (b) { return b.count > 0; });
    if (chart) { chart.destroy(); chart = null; }
    var canvas = $("eval-reliability");
    if (!canvas) { return; }
    chart = new window.Chart(canvas, {
      type: "scatter",
      data: { datasets: [
        { label: "accuracy per bin", showLine: true, borderColor: "#1d4ed8", backgroundColor: "#1d4ed8", pointRadius: 4,
          data: bins.map(function (b) { return { x: b.confidence, y: b.accuracy }; }) },
        { label: "perfect calibration", showLine: true, borderColor: "#545d68", borderDash: [6, 4], pointRadius: 0,
          data: [{ x: 0, y: 0 }, { x: 1, y: 1 }] }
      ] },
      options: {
        animation: false, responsive: true, maintainAspectRatio: false,
        scales: {
          x: { min: 0, max: 1, title: { display: true, text: "mean confidence" } },
          y: { min: 0, max: 1, title: { display: true, text: "accuracy" } }
        }
      }
    });
  }

  function afterResult() {
    var shown = $("eval-shown");
    if (!shown) { return; }
    var id = shown.getAttribute("data-evaluation-id");
    var url = new URL(window.location.href);
    url.searchParams.set("evaluation", id);
    window.history.replaceState(null, "", url.pathname + url.search);
    if (shown.getAttribute("data-status") !== "completed") { return; }
    window.Studio.api("GET", "/api/v1/evaluation/" + encodeURIComponent(id)).then(drawReliability, function (err) { window.Studio.showError(err); });
  }

  function onSwap(evt) {
    var target = evt.detail.target;
    if (!target) { return; }
    if (target.id === "eval-started") { afterStart(); }
    if (target.id === "eval-result") { afterResult(); }
  }

  function onClick(evt) {
    // Opening an evaluation from the list: take the reader to it.
    if (evt.target.closest && evt.target.closest(".eval-open")) {
      document.body.addEventListener("htmx:afterSettle", function focus() {
        document.body.removeEventListener("htmx:afterSettle", focus);
        var title = $("eval-shown-title");
        if (title) { title.focus(); }
      });
    }
  }

  function init() {
    page = $("eval-page");
    if (!page) { return; }
    document.body.addEventListener("htmx:afterSwap", onSwap);
    page.addEventListener("click", onClick);
    loadRuns();
    var asked = new URLSearchParams(window.location.search).get("evaluation");
    if (asked) { open(asked); }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
