// The export page: keeps the predict card and the exports list in step with the export shown
// (fragments/export/detail.html, swapped in by htmx), and tries an image on the exported model:
// dropped on the drop zone or chosen with the file input, sent as multipart to
// POST /api/v1/export/{id}/predict, shown with its top classes as bars, or (a detector's
// export) with its boxes drawn over the image (an SVG in the image's own [0, 1] coordinates)
// and listed in words beneath.
(function () {
  "use strict";

  var shown = { id: null, status: null };
  var asked = 0;          // the latest prediction asked for: older answers are dropped
  var previewUrl = null;  // the object URL of the image shown, revoked when replaced

  function $(id) { return document.getElementById(id); }

  function predictCard() { return $("predict"); }

  // --- the export shown ---------------------------------------------------------------

  function detail() {
    var el = $("export-detail");
    if (!el) { return { id: null, status: "none", format: null }; }
    return { id: el.getAttribute("data-export-id"), status: el.getAttribute("data-status"), format: el.getAttribute("data-format"), parity: el.getAttribute("data-parity") };
  }

  function onSwapped() {
    var now = detail();
    if (now.id === shown.id && now.status === shown.status) { return; }
    var finished = now.id === shown.id && (now.status === "completed" || now.status === "failed");
    shown = { id: now.id, status: now.status };
    if (now.id) {
      refreshList();
      remember(now.id);
    }
    if (finished) { announce(now); }
    setPredictable(now);
  }

  function refreshList() {
    var list = $("export-list");
    if (list && window.htmx) { window.htmx.trigger(list, "refresh"); }
  }

  // The export shown survives a reload: it goes in the page's address.
  function remember(id) {
    var url = new URL(window.location.href);
    if (url.searchParams.get("export_id") === id) { return; }
    url.searchParams.set("export_id", id);
    window.history.replaceState(null, "", url.toString());
  }

  function announce(now) {
    if (now.status === "completed") {
      Studio.flash("Export " + now.id.slice(0, 8) + " is ready: parity " + (now.parity || "checked") + ".", "info");
    } else {
      Studio.flash("Export " + now.id.slice(0, 8) + " failed: see why below.");
    }
  }

  function setPredictable(now) {
    var note = $("predict-note");
    var zone = $("predict-zone");
    if (!note || !zone) { return; }
    var ready = now.status === "completed" && now.format === "onnx";
    zone.classList.toggle("hidden", !ready);
    predictCard().setAttribute("data-export-id", ready ? now.id : "");
    if (ready) {
      note.textContent = "Export " + now.id.slice(0, 8) + " answers: drop an image on it, or choose one.";
    } else if (!now.id) {
      note.textContent = "Choose a completed ONNX export to try it on an image.";
    } else if (now.status === "completed") {
      note.textContent = "Only an ONNX export answers predictions here; this one is " + now.format + ".";
    } else if (now.status === "failed") {
      note.textContent = "This export failed: export the run again to try it.";
    } else {
      note.textContent = "The export is still running: it can be tried once its parity check has passed.";
    }
    if (!ready) { resetResult(); }
  }

  // --- a prediction -------------------------------------------------------------------

  function resetResult() {
    $("predict-result").classList.add("hidden");
    $("predict-error").textContent = "";
    $("predict-busy").textContent = "";
    $("predict-bars").textContent = "";
    clearOverlay();
  }

  function fail(message) {
    $("predict-busy").textContent = "";
    $("predict-result").classList.add("hidden");
    $("predict-error").textContent = message;
  }

  function megabytes(bytes) { return (bytes / (1024 * 1024)).toFixed(1) + " MiB"; }

  // What is wrong with a file before it is sent, or null.
  function refusal(file) {
    var most = Number(predictCard().getAttribute("data-max-bytes"));
    if (file.type && file.type.indexOf("image/") !== 0) {
      return file.name + " is not an image (" + file.type + "): choose a PNG, JPEG or other image file.";
    }
    if (file.size === 0) { return file.name + " is empty: choose an image file."; }
    if (most && file.size > most) {
      return file.name + " is too large (" + megabytes(file.size) + "): an image of at most " + megabytes(most) + " can be tried.";
    }
    return null;
  }

  function choose(file) {
    var exportId = predictCard().getAttribute("data-export-id");
    resetResult();
    if (!file || !exportId) { return; }
    var why = refusal(file);
    if (why) { fail(why); return; }
    var mine = ++asked;
    $("predict-busy").textContent = "Asking the exported model about " + file.name + "…";
    send(exportId, file).then(function (data) {
      if (mine !== asked) { return; }
      var first = (data.predictions || [])[0];
      if (data.task === "detection") {
        showBoxes(file, (first && first.boxes) || []);
      } else {
        show(file, first || []);
      }
    }, function (err) {
      if (mine !== asked) { return; }
      fail("Could not predict " + file.name + ": " + err.message);
    });
  }

  function send(exportId, file) {
    var form = new FormData();
    form.append("file", file, file.name);
    var topK = predictCard().getAttribute("data-top-k") || "5";
    var url = "/api/v1/export/" + encodeURIComponent(exportId) + "/predict?top_k=" + encodeURIComponent(topK);
    var init = { method: "POST", body: form, credentials: "same-origin", headers: { "Accept": "application/json", "X-Requested-With": "studio" } };
    return fetch(url, init).then(function (r) {
      if (r.status === 401) { window.location.assign("/login?next=" + encodeURIComponent(window.location.pathname)); }
      return r.json().catch(function () { return {}; }).then(function (payload) {
        if (r.ok) { return payload.data || {}; }
        var err = (payload && payload.error) || {};
        throw new Error(err.message || ("the studio answered " + r.status));
      });
    }, function () {
      throw new Error("the studio did not answer. Check that it is running, then try again.");
    });
  }

  function preview(file) {
    if (previewUrl) { URL.revokeObjectURL(previewUrl); }
    previewUrl = URL.createObjectURL(file);
    var img = $("predict-preview");
    img.src = previewUrl;
    img.alt = "The image you chose: " + file.name;
    $("predict-name").textContent = file.name;
    $("predict-busy").textContent = "";
    clearOverlay();
  }

  function show(file, ranked) {
    preview(file);
    $("predict-bars").setAttribute("aria-label", "Top classes and their scores");
    $("predict-top-kind").textContent = "Top class:";
    var best = ranked[0] || { label: "—", score: 0 };
    $("predict-top-label").textContent = best.label;
    $("predict-top-score").textContent = "(" + percent(best.score) + ")";
    drawBars(ranked);
    $("predict-result").classList.remove("hidden");
  }

  function percent(score) { return (score * 100).toFixed(1) + " %"; }

  function drawBars(ranked) {
    var list = $("predict-bars");
    list.textContent = "";
    ranked.forEach(function (item) {
      var li = document.createElement("li");
      li.className = "bar";
      var label = document.createElement("span");
      label.className = "bar-label";
      label.textContent = item.label;
      var track = document.createElement("span");
      track.className = "track";
      var fill = document.createElement("span");
      fill.className = "fill";
      fill.style.width = Math.max(0, Math.min(100, item.score * 100)).toFixed(1) + "%";
      track.appendChild(fill);
      var score = document.createElement("span");
      score.className = "num small";
      score.textContent = percent(item.score);
      li.appendChild(label); li.appendChild(track); li.appendChild(score);
      list.appendChild(li);
    });
  }

  // --- a detector's boxes ---------------------------------------------------------------

  var SVG = "http://www.w3.org/2000/svg";
  var PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4",
                 "#f032e6", "#9a6324", "#469990", "#808000", "#000075", "#bfef45"];

  function clearOverlay() {
    var old = $("predict-boxes");
    if (old) { old.parentNode.removeChild(old); }
    var figure = $("predict-preview").closest("figure");
    if (figure) { figure.classList.remove("detected"); }
  }

  // The preview and its boxes share a frame the image's own shape (a classifier's preview is
  // a square with the image contained in it, where boxes would miss their objects).
  function frame() {
    var img = $("predict-preview");
    var box = img.parentNode;
    if (!box.classList.contains("predict-frame")) {
      box = document.createElement("div");
      box.className = "predict-frame";
      img.parentNode.insertBefore(box, img);
      box.appendChild(img);
    }
    box.parentNode.classList.add("detected");
    return box;
  }

  // The boxes over the preview: the SVG spans the image exactly and uses its [0, 1] space,
  // so a box lands where the detector saw it whatever size the image is shown at.
  function showBoxes(file, boxes) {
    preview(file);
    var colours = {};
    var svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("id", "predict-boxes");
    svg.setAttribute("class", "predict-boxes");
    svg.setAttribute("viewBox", "0 0 1 1");
    svg.setAttribute("preserveAspectRatio", "none");
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", boxes.length + " boxes found");
    boxes.forEach(function (b) {
      if (!(b.label in colours)) { colours[b.label] = PALETTE[Object.keys(colours).length % PALETTE.length]; }
      var g = document.createElementNS(SVG, "g");
      g.setAttribute("class", "box");
      g.setAttribute("data-label", b.label);
      var rect = document.createElementNS(SVG, "rect");
      [["x", b.x], ["y", b.y], ["width", b.w], ["height", b.h]].forEach(function (kv) {
        rect.setAttribute(kv[0], String(kv[1]));
      });
      rect.setAttribute("stroke", colours[b.label]);
      rect.setAttribute("vector-effect", "non-scaling-stroke");
      var title = document.createElementNS(SVG, "title");
      title.textContent = b.label + " " + percent(b.score);
      g.appendChild(rect); g.appendChild(title);
      svg.appendChild(g);
    });
    frame().appendChild(svg);
    var best = boxes[0];
    $("predict-top-kind").textContent = "Found:";
    $("predict-top-label").textContent = boxes.length === 1 ? "1 box" : boxes.length + " boxes";
    $("predict-top-score").textContent = best ? "(best: " + best.label + ", " + percent(best.score) + ")" : "(none above the model's score threshold)";
    listBoxes(boxes, colours);
    $("predict-result").classList.remove("hidden");
  }

  function listBoxes(boxes, colours) {
    var list = $("predict-bars");
    list.textContent = "";
    list.setAttribute("aria-label", "Boxes found, best first");
    boxes.forEach(function (b) {
      var li = document.createElement("li");
      li.className = "bar box-row";
      var swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.borderColor = colours[b.label];
      var label = document.createElement("span");
      label.className = "bar-label";
      label.textContent = b.label;
      var where = document.createElement("span");
      where.className = "small muted";
      where.textContent = "at " + percent(b.x) + ", " + percent(b.y) + " · " + percent(b.w) + " × " + percent(b.h) + " of the image";
      var score = document.createElement("span");
      score.className = "num small";
      score.textContent = percent(b.score);
      li.appendChild(swatch); li.appendChild(label); li.appendChild(where); li.appendChild(score);
      list.appendChild(li);
    });
  }

  // --- wiring -------------------------------------------------------------------------

  function wireDrop() {
    var zone = $("drop-zone");
    var input = $("predict-file");
    if (!zone || !input) { return; }
    input.addEventListener("change", function () { choose(input.files && input.files[0]); });
    ["dragenter", "dragover"].forEach(function (name) {
      zone.addEventListener(name, function (evt) {
        evt.preventDefault();
        if (evt.dataTransfer) { evt.dataTransfer.dropEffect = "copy"; }
        zone.classList.add("over");
      });
    });
    zone.addEventListener("dragleave", function () { zone.classList.remove("over"); });
    zone.addEventListener("drop", function (evt) {
      evt.preventDefault();
      zone.classList.remove("over");
      var files = evt.dataTransfer && evt.dataTransfer.files;
      if (!files || !files.length) { fail("Drop an image file here."); return; }
      input.value = "";  // the file input no longer names the image shown
      choose(files[0]);
    });
    // A file dropped beside the zone must not make the browser leave the page to open it.
    ["dragover", "drop"].forEach(function (name) {
      window.addEventListener(name, function (evt) {
        if (zone.contains(evt.target)) { return; }
        evt.preventDefault();
        if (evt.dataTransfer) { evt.dataTransfer.dropEffect = "none"; }
      });
    });
  }

  // An export asked for by the page's address that cannot be shown (gone, or never there):
  // the panel says so instead of loading forever (the message itself is in the flash).
  function onRefused(evt) {
    var el = evt.detail && evt.detail.elt;
    if (!el || el.id !== "export-detail" || el.getAttribute("data-status") !== "loading") { return; }
    el.setAttribute("data-status", "none");
    var note = el.querySelector("p");
    if (note) { note.textContent = "That export cannot be shown. Export a run, or choose one of the project's exports below."; }
  }

  function start() {
    if (!predictCard()) { return; }
    wireDrop();
    document.body.addEventListener("htmx:afterSettle", onSwapped);
    document.body.addEventListener("htmx:responseError", onRefused);
    onSwapped();
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
