// The split page: the ratios' sum as one types, the new split shown once made, the chosen
// split's class counts as a grouped bar chart (from the same JSON the table is drawn from),
// and deleting a split behind a confirmation dialog (Escape or Cancel keeps it).
(function () {
  "use strict";

  var SUBSETS = ["train", "val", "test"];
  var COLOURS = { train: "#1d4ed8", val: "#b45309", test: "#047857" };
  var chart = null;

  function $(id) { return document.getElementById(id); }

  function showSum() {
    var box = $("ratio-sum");
    if (!box) { return; }
    var sum = SUBSETS.reduce(function (acc, s) { return acc + (Number($("ratio-" + s).value) || 0); }, 0);
    var off = Math.abs(sum - 1) > 1e-6;
    box.textContent = "Sum: " + sum.toFixed(2) + (off ? " — the ratios must add up to 1" : "");
    box.classList.toggle("warn", off);
  }

  function show(splitId) {
    window.htmx.ajax("GET", "/api/v1/splits/" + encodeURIComponent(splitId), { target: "#split-detail", swap: "innerHTML" });
  }

  function clearShown() {
    $("split-detail").innerHTML = "";
    var p = document.createElement("p");
    p.className = "muted";
    p.textContent = "Choose a split to see how many images of each class each subset holds.";
    $("split-detail").appendChild(p);
    $("split-chart-box").classList.add("hidden");
    if ($("split-actions")) { $("split-actions").classList.add("hidden"); }
    if (chart) { chart.destroy(); chart = null; }
  }

  function labelsOf(counts) {
    var labels = [];
    SUBSETS.forEach(function (s) {
      Object.keys(counts[s] || {}).forEach(function (l) { if (labels.indexOf(l) < 0) { labels.push(l); } });
    });
    return labels.sort();
  }

  function draw(split) {
    var labels = labelsOf(split.counts || {});
    var datasets = SUBSETS.map(function (s) {
      return {
        label: s,
        backgroundColor: COLOURS[s],
        data: labels.map(function (l) { return ((split.counts || {})[s] || {})[l] || 0; })
      };
    });
    if (chart) { chart.destroy(); }
    $("split-chart-box").classList.remove("hidden");
    chart = new window.Chart($("split-chart"), {
      type: "bar",
      data: { labels: labels, datasets: datasets },
      options: {
        animation: false, responsive: true, maintainAspectRatio: false,
        scales: { x: { title: { display: true, text: "class" } }, y: { beginAtZero: true, title: { display: true, text: "images" }, ticks: { precision: 0 } } }
      }
    });
  }

  function shownId() {
    var shown = $("split-shown");
    return shown ? shown.getAttribute("data-split-id") : null;
  }

  function afterDetail() {
    var id = shownId();
    if (!id) { return; }
    if ($("split-actions")) { $("split-actions").classList.remove("hidden"); }
    window.Studio.api("GET", "/api/v1/splits/" + encodeURIComponent(id)).then(draw, function (err) { window.Studio.showError(err); });
  }

  function afterList() {
    var rows = document.querySelectorAll("#split-table tbody tr");
    var id = shownId();
    var present = Array.prototype.some.call(rows, function (r) { return r.getAttribute("data-split-id") === id; });
    if (id && !present) { clearShown(); id = null; }
    if (!id && rows.length) { show(rows[rows.length - 1].getAttribute("data-split-id")); }
  }

  function afterCreate() {
    var made = $("split-made");
    if (!made) { return; }
    $("split-status").textContent = "";
    show(made.getAttribute("data-split-id"));
    window.htmx.trigger("#split-list", "refresh");
  }

  function confirmDelete() {
    var shown = $("split-shown");
    if (!shown) { return; }
    $("split-confirm-name").textContent = shown.getAttribute("data-split-name");
    $("split-confirm").showModal();
  }

  function doDelete() {
    var id = shownId();
    var name = $("split-confirm-name").textContent;
    $("split-confirm").close();
    window.Studio.api("DELETE", "/api/v1/splits/" + encodeURIComponent(id)).then(function () {
      clearShown();
      // Not in #flash: the list's refresh (an htmx request) clears that.
      $("split-status").textContent = "Split " + name + " deleted.";
      window.htmx.trigger("#split-list", "refresh");
    }, function (err) { window.Studio.showError(err); });
  }

  function wireDelete() {
    if (!$("split-delete")) { return; }
    $("split-delete").addEventListener("click", confirmDelete);
    $("split-confirm-yes").addEventListener("click", doDelete);
    $("split-confirm-no").addEventListener("click", function () { $("split-confirm").close(); });
  }

  function init() {
    if (!$("split-page")) { return; }
    var form = $("split-form");
    if (form) {
      form.addEventListener("input", showSum);
      showSum();
    }
    document.body.addEventListener("htmx:afterSwap", function (evt) {
      var target = evt.detail.target;
      if (!target) { return; }
      if (target.id === "split-list") { afterList(); }
      if (target.id === "split-detail") { afterDetail(); }
      if (target.id === "split-created") { afterCreate(); }
    });
    wireDelete();
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
