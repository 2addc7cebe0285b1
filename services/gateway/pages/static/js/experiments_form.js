// The experiments tab's form: a search over models and learning rates posted through htmx
// (studio.js's JSON forms). The objectives and the search space are no plain fields: each
// objective is a select per metric (not an objective / maximise / minimise) and the space is
// model check boxes and a learning-rate range; this file keeps two hidden JSON fields
// (name="objectives", name="search_config", data-type="json") equal to what they say, so the
// body the API gets is exactly what the form shows. Models outside the chosen family are
// hidden and unticked: the API would refuse them. No model ticked means every model of the
// family (the API's default), no range means the API's default range.
(function () {
  "use strict";

  var form = null;

  function el(id) { return document.getElementById(id); }

  function family() { return el("x-architecture_type").value; }

  function inFamily(box) {
    var f = family();
    return f === "any" || (box.getAttribute("data-family") || "").split(" ").indexOf(f) >= 0;
  }

  // Models of another family are hidden (and never sent); the note says what none ticked means.
  function showFamily() {
    form.querySelectorAll("input[data-model]").forEach(function (box) {
      var shown = inFamily(box);
      box.closest(".model-choice").classList.toggle("hidden", !shown);
      if (!shown) { box.checked = false; }
    });
    var f = family();
    el("models-note").textContent = f === "any"
      ? "None ticked: every model, the small ones first."
      : "None ticked: every " + f + " model.";
  }

  function objectives() {
    var list = [];
    form.querySelectorAll("select[data-objective]").forEach(function (select) {
      if (select.value) { list.push({ metric: select.getAttribute("data-objective"), direction: select.value }); }
    });
    return list;
  }

  function learningRate() {
    var low = el("x-lr-low").value.trim();
    var high = el("x-lr-high").value.trim();
    if (!low && !high) { return null; }
    var range = { type: "float", low: Number(low || high), high: Number(high || low), log: el("x-lr-log").checked };
    if (!isFinite(range.low) || !isFinite(range.high)) { return "bad"; }
    return range;
  }

  function space() {
    var config = {};
    var models = [];
    form.querySelectorAll("input[data-model]:checked").forEach(function (box) {
      models.push(box.getAttribute("data-model"));
    });
    if (models.length) { config.model = { type: "categorical", choices: models }; }
    var rate = learningRate();
    if (rate && rate !== "bad") { config.learning_rate = rate; }
    return config;
  }

  // Several objectives cannot be pruned (Optuna prunes one): the form offers "none" only.
  function pruneOnlyOne(n) {
    var select = el("x-pruning");
    Array.prototype.forEach.call(select.options, function (o) { o.disabled = n > 1 && o.value !== "none"; });
    if (n > 1) { select.value = "none"; }
  }

  // The hidden JSON fields, brought up to the visible ones after every change.
  function sync() {
    // Nothing chosen: the field is left out (empty), and the API's default applies.
    var chosen = objectives();
    var config = space();
    el("x-objectives").value = chosen.length ? JSON.stringify(chosen) : "";
    el("x-search_config").value = Object.keys(config).length ? JSON.stringify(config) : "";
    var n = objectives().length;
    pruneOnlyOne(n);
    el("objectives-note").textContent = n === 0
      ? "No objective chosen: the search maximises validation accuracy."
      : n === 1 ? "One objective: the best trial wins." : n + " objectives: the trials on the Pareto front are the best trade-offs.";
  }

  // What the browser cannot read as a number is said by its field, not sent as nothing.
  function check(evt) {
    sync();
    var bad = Array.prototype.filter.call(form.querySelectorAll("input[type='number']"), function (input) {
      return input.validity && input.validity.badInput;
    });
    if (learningRate() === "bad") { bad.push(el("x-lr-low")); }
    if (!bad.length) { return; }
    evt.preventDefault();
    evt.stopPropagation();
    Studio.flash("");
    form.querySelectorAll(".field-error").forEach(function (e) { e.textContent = ""; });
    bad.forEach(function (input) {
      var box = el(input.getAttribute("data-error") || ("error-" + input.name.replace(/[^A-Za-z0-9_-]/g, "-")));
      if (box) { box.textContent = "Enter a number."; }
    });
    bad[0].focus();
  }

  // An error answer names the field it is about, however deep in the body
  // ("search_config.learning_rate.low"); its message goes to the nearest box the form has
  // ("error-search_config-learning_rate"), and is only in the message area when none is near.
  // (A box the page lacks would make htmx log an error for the out-of-band swap.)
  function nearestBoxes(evt) {
    if (evt.detail.elt !== form || !evt.detail.isError || typeof evt.detail.serverResponse !== "string") { return; }
    var tpl = document.createElement("template");
    tpl.innerHTML = evt.detail.serverResponse;
    var taken = {};
    tpl.content.querySelectorAll("[hx-swap-oob][id^='error-']").forEach(function (box) {
      var id = box.id;
      while (id.length > 6 && !el(id)) { id = id.indexOf("-", 6) > 0 ? id.slice(0, id.lastIndexOf("-")) : ""; }
      if (!el(id) || taken[id]) { box.remove(); return; }
      taken[id] = true;
      box.id = id;
    });
    evt.detail.serverResponse = tpl.innerHTML;
  }

  function loadSplits() {
    var select = el("x-split_id");
    var projectId = el("experiments").getAttribute("data-project-id");
    Studio.api("GET", "/api/v1/splits?project_id=" + encodeURIComponent(projectId)).then(function (data) {
      var items = data.items || [];
      select.textContent = "";
      if (!items.length) {
        var none = document.createElement("option");
        none.value = "";
        none.textContent = "No split yet: make one first";
        select.appendChild(none);
      }
      items.forEach(function (s) {
        var t = s.totals || {};
        var option = document.createElement("option");
        option.value = s.id;
        option.textContent = s.name + " · " + (t.train || 0) + " train / " + (t.val || 0) + " val";
        select.appendChild(option);
      });
      if (items.length) {
        var newest = select.options[select.options.length - 1];
        newest.selected = newest.defaultSelected = true;
      }
    }).catch(function (err) { Studio.showError(err); });
  }

  function start() {
    form = el("experiment-form");
    if (!form) { return; }
    el("x-architecture_type").addEventListener("change", function () { showFamily(); sync(); });
    form.addEventListener("change", sync);
    form.addEventListener("input", sync);
    // "Back to the defaults" resets the fields first: the hidden ones follow once it has.
    form.addEventListener("reset", function () { setTimeout(function () { showFamily(); sync(); }, 0); });
    form.addEventListener("htmx:beforeRequest", check);
    form.addEventListener("htmx:beforeSwap", nearestBoxes);
    showFamily();
    sync();
    loadSplits();
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
