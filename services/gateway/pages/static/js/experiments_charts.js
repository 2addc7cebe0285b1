// The experiments tab's two charts (Chart.js): the first objective over the trials with the
// best so far, and two measures of the trials against each other with the Pareto front
// highlighted. Drawn from the experiment as experiments.js holds it (trials by number, their
// values and parameters); each canvas says what it shows in data- attributes (data-points,
// data-front) for people's tools and the tests. Exposes window.ExperimentCharts.
(function () {
  "use strict";

  var INK = "#1b1f24";
  var ACCENT = "#1d4ed8";
  var GREY = "#8b95a1";
  var PRUNED = "#8a5300";
  var FRONT = "#b42318";
  var LOG_PARAMS = ["learning_rate", "weight_decay"];
  var charts = {};

  function scatter(canvas, xTitle, yTitle) {
    return new window.Chart(canvas, {
      type: "scatter",
      data: { datasets: [] },
      options: {
        animation: false,
        responsive: true,
        maintainAspectRatio: false,
        scales: {
          x: { type: "linear", title: { display: true, text: xTitle } },
          y: { type: "linear", title: { display: true, text: yTitle } }
        },
        plugins: {
          legend: { position: "bottom" },
          tooltip: { callbacks: { label: function (ctx) { return ctx.raw.label || ""; } } }
        }
      }
    });
  }

  function setup() {
    window.Chart.defaults.color = INK;
    window.Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
    charts.trials = scatter(document.getElementById("chart-trials"), "trial", "");
    // Trials are whole numbers: the half-trial margins carry no tick label.
    charts.trials.options.scales.x.ticks = { stepSize: 1, callback: function (v) { return Number.isInteger(v) ? v : ""; } };
    charts.front = scatter(document.getElementById("chart-front"), "", "");
  }

  function dataset(label, points, color, extra) {
    return Object.assign({ label: label, data: points, borderColor: color, backgroundColor: color, pointRadius: 4 }, extra || {});
  }

  // The first objective per finished trial, pruned trials at their last value, and the best
  // value so far as a step line over the trials in order.
  function drawTrials(trials, objective, label, fmt) {
    var chart = charts.trials;
    var done = [];
    var pruned = [];
    var best = [];
    var bestSoFar = null;
    trials.forEach(function (t) {
      var v = t.values ? t.values[objective.metric] : undefined;
      if (t.state === "completed" && typeof v === "number") {
        done.push({ x: t.trial, y: v, label: "trial " + t.trial + ": " + fmt(objective.metric, v) });
        var better = bestSoFar === null || (objective.direction === "maximize" ? v > bestSoFar : v < bestSoFar);
        if (better) { bestSoFar = v; }
        best.push({ x: t.trial, y: bestSoFar, label: "best after trial " + t.trial + ": " + fmt(objective.metric, bestSoFar) });
      } else if (t.state === "pruned" && typeof t.pruned_value === "number") {
        pruned.push({ x: t.trial, y: t.pruned_value, label: "trial " + t.trial + " pruned at epoch " + t.pruned_epoch });
      }
    });
    chart.data.datasets = [
      dataset("trials", done, ACCENT),
      dataset("pruned (last epoch)", pruned, PRUNED, { pointStyle: "crossRot", pointRadius: 6 }),
      dataset("best so far", best, INK, { showLine: true, stepped: true, pointRadius: 0, borderWidth: 1.5 })
    ];
    chart.options.scales.y.title = { display: true, text: label };
    // Half a trial either side: the first and last points stay clear of the edges.
    var numbers = trials.map(function (t) { return t.trial; });
    chart.options.scales.x.min = numbers.length ? Math.min.apply(null, numbers) - 0.5 : undefined;
    chart.options.scales.x.max = numbers.length ? Math.max.apply(null, numbers) + 0.5 : undefined;
    chart.update("none");
    chart.canvas.setAttribute("data-points", String(done.length));
    chart.canvas.setAttribute("data-pruned", String(pruned.length));
  }

  function valueOf(trial, key) {
    if (trial.values && typeof trial.values[key] === "number") { return trial.values[key]; }
    var p = trial.params ? trial.params[key] : undefined;
    return typeof p === "number" ? p : undefined;
  }

  // Two measures of each completed trial; the front's trials in their own colour, joined in
  // the order of the across measure so the trade-off reads as a line.
  function drawFront(trials, front, xKey, yKey, labelOf, fmt) {
    var chart = charts.front;
    var onFront = {};
    (front || []).forEach(function (n) { onFront[n] = true; });
    var rest = [];
    var best = [];
    trials.forEach(function (t) {
      if (t.state !== "completed") { return; }
      var x = valueOf(t, xKey);
      var y = valueOf(t, yKey);
      if (x === undefined || y === undefined) { return; }
      var point = { x: x, y: y, label: "trial " + t.trial + ": " + fmt(xKey, x) + ", " + fmt(yKey, y) };
      (onFront[t.trial] ? best : rest).push(point);
    });
    best.sort(function (a, b) { return a.x - b.x; });
    chart.data.datasets = [
      dataset("Pareto front", best, FRONT, { showLine: best.length > 1, pointRadius: 7, pointStyle: "rectRot", borderWidth: 2 }),
      dataset("other trials", rest, GREY)
    ];
    chart.options.scales.x.type = LOG_PARAMS.indexOf(xKey) >= 0 ? "logarithmic" : "linear";
    chart.options.scales.y.type = LOG_PARAMS.indexOf(yKey) >= 0 ? "logarithmic" : "linear";
    chart.options.scales.x.title = { display: true, text: labelOf(xKey) };
    chart.options.scales.y.title = { display: true, text: labelOf(yKey) };
    chart.update("none");
    chart.canvas.setAttribute("data-points", String(rest.length + best.length));
    chart.canvas.setAttribute("data-front", String(best.length));
  }

  window.ExperimentCharts = { setup: setup, drawTrials: drawTrials, drawFront: drawFront };
})();
