// The dataset page's import half: a ZIP sent with a real upload progress bar (XMLHttpRequest's
// upload.onprogress: bytes, MB/s, ETA; a cancel aborts it), a server path posted by htmx, and
// the running import followed over its event stream (files processed, files/s, ETA, cancel).
// The panel of an import is always the API's own fragment (GET /api/v1/datasets/import/{id}
// with HX-Request); this script only moves its live figures and reloads it when the import
// ends. A completed import tells the page: document "dataset:changed" (the browse half reloads)
// and "import:changed" (the list of imports reloads, also when one fails or starts).
(function () {
  "use strict";

  var IMPORT_API = "/api/v1/datasets/import/";
  var section = null;
  var streams = {};      // id → the event stream of an import followed until it ends
  var upload = null;     // the XMLHttpRequest of the upload under way
  var pending = {};      // imports started or watched here whose end is still to be told

  function $(id) { return document.getElementById(id); }

  function changed(name) { document.dispatchEvent(new CustomEvent(name)); }

  function mb(bytes) { return (bytes / (1024 * 1024)).toFixed(bytes < 1024 * 1024 ? 2 : 1) + " MB"; }

  function duration(seconds) {
    if (seconds === null || seconds === undefined || !isFinite(seconds)) { return "—"; }
    var s = Math.max(0, Math.round(seconds));
    if (s < 60) { return s + " s"; }
    var m = Math.floor(s / 60);
    return m < 60 ? m + " min " + (s % 60) + " s" : Math.floor(m / 60) + " h " + (m % 60) + " min";
  }

  // --- the import's panel and its live figures ----------------------------------------------

  function showImport(id) {
    if (!id) { return Promise.resolve(); }
    return window.htmx.ajax("GET", IMPORT_API + encodeURIComponent(id), { target: "#import-job", swap: "innerHTML" });
  }

  function panel() { return document.querySelector("#import-job [data-import-id]"); }

  function live(name) {
    var box = panel();
    return box ? box.querySelector('[data-live="' + name + '"]') : null;
  }

  function setLive(name, text) {
    var el = live(name);
    if (el) { el.textContent = text; }
  }

  var PHASES = { starting: "starting", extracting: "unpacking the archive", reading: "reading the files",
                 decoding: "decoding images", committing: "saving" };

  function drawProgress(p) {
    var bar = panel() && panel().querySelector("progress");
    if (bar && p.total) { bar.max = p.total; bar.value = p.done || 0; }
    setLive("phase", PHASES[p.phase] || p.phase || "");
    setLive("count", (p.done || 0).toLocaleString() + " / " + (p.total ? p.total.toLocaleString() : "?") + " files");
    setLive("rate", p.rate ? p.rate.toLocaleString(undefined, { maximumFractionDigits: 1 }) + " files/s" : "— files/s");
    setLive("eta", "ETA " + duration(p.eta_s));
    var box = $("import-job");
    box.setAttribute("data-progress-seen", String(Number(box.getAttribute("data-progress-seen") || 0) + 1));
  }

  function drawStatus(job) {
    if (job && job.files) {
      var bar = panel() && panel().querySelector("progress");
      if (bar && !bar.hasAttribute("value")) { bar.max = job.files; bar.value = 0; }
      setLive("count", "0 / " + job.files.toLocaleString() + " files");
    }
  }

  function panelId() {
    var box = panel();
    return box ? box.getAttribute("data-import-id") : null;
  }

  // An import followed until it ends, shown or not: several may run at once (one started
  // while another runs), and each one's end is told to the page.
  function follow(id) {
    if (streams[id]) { return; }
    pending[id] = true;
    $("import-job").setAttribute("data-progress-seen", "0");
    streams[id] = window.Studio.follow(IMPORT_API + encodeURIComponent(id) + "/stream", {
      types: ["status", "progress"],
      ends: ["complete", "error", "closed"],
      onEvent: function (type, data) {
        var shown = panelId() === id;
        if (type === "progress") { if (shown) { drawProgress(data); } }
        else if (type === "status") { if (shown) { drawStatus(data); } }
        else { ended(id, type, shown); }
      },
      onState: function (state) {
        if (panelId() === id) { setLive("connection", state === "live" ? "" : "Connection lost: reconnecting…"); }
      }
    });
  }

  function unfollow(id) {
    if (streams[id]) { streams[id].close(); delete streams[id]; }
  }

  // The shown import's panel is drawn again (the API's fragment tells the end); one ended
  // out of sight is told to the page here.
  function ended(id, type, shown) {
    delete streams[id];
    if (shown) { showImport(id); return; }
    delete pending[id];
    if (type === "complete") { changed("dataset:changed"); }
    changed("import:changed");
  }

  // Whatever panel htmx has just drawn: follow it while it runs; tell the page once one that
  // was started or watched here has ended.
  function panelDrawn(started) {
    var box = panel();
    if (!box) { return; }
    var id = box.getAttribute("data-import-id");
    sessionStorage.setItem(storageKey(), id);
    if (started) { pending[id] = true; }
    if (box.getAttribute("data-done") !== "true") {
      if (section.getAttribute("data-can-edit") !== "true") {
        box.querySelectorAll("[data-cancel-import]").forEach(function (b) { b.classList.add("hidden"); });
      }
      follow(id);
      return;
    }
    unfollow(id);
    if (pending[id]) {
      delete pending[id];
      if (box.getAttribute("data-state") === "completed") { changed("dataset:changed"); }
      changed("import:changed");
    }
  }

  function cancelImport(button) {
    var id = button.getAttribute("data-cancel-import");
    button.disabled = true;
    setLive("phase", "cancelling…");
    window.Studio.api("POST", IMPORT_API + encodeURIComponent(id) + "/cancel", {})
      .then(function () { return showImport(id); })
      .catch(function (err) { button.disabled = false; window.Studio.showError(err); });
  }

  function storageKey() { return "studio.import." + section.getAttribute("data-project-id"); }

  // --- the ZIP upload -------------------------------------------------------------------------

  function chosenFile() {
    var input = $("zip-file");
    return input && input.files && input.files.length ? input.files[0] : null;
  }

  function showChosen() {
    var file = chosenFile();
    $("zip-chosen").textContent = file ? file.name + " (" + mb(file.size) + ")" : "";
    $("error-file").textContent = "";
  }

  function uploadShown(on) {
    $("upload-start").disabled = on;
    $("upload-cancel").classList.toggle("hidden", !on);
    if (on) { $("upload-status").classList.remove("hidden"); }
  }

  function drawUpload(sent, total, started) {
    var bar = $("upload-bar");
    var share = total ? sent / total : 0;
    bar.value = Math.round(share * 1000) / 10;
    var seconds = (performance.now() - started) / 1000;
    var speed = seconds > 0 ? sent / seconds : 0;
    $("upload-percent").textContent = (Math.round(share * 1000) / 10) + " %";
    $("upload-bytes").textContent = mb(sent) + " of " + mb(total);
    $("upload-speed").textContent = speed ? (speed / (1024 * 1024)).toFixed(2) + " MB/s" : "";
    $("upload-eta").textContent = "ETA " + (speed && sent < total ? duration((total - sent) / speed) : duration(0));
  }

  function uploadError(xhr) {
    var payload = null;
    try { payload = JSON.parse(xhr.responseText); } catch (e) { payload = null; }
    var err = (payload && payload.error) || { code: "HTTP_" + xhr.status, message: "the upload failed (" + xhr.status + ")" };
    var e = new Error(err.message);
    // A refusal that names no field is about the archive itself: it is told by the file too.
    e.code = err.code; e.field = err.field || (err.details ? undefined : "file");
    e.details = err.details; e.status = xhr.status;
    return e;
  }

  function uploadDone(xhr) {
    upload = null;
    uploadShown(false);
    if (xhr.status === 401) { window.location.assign("/login?next=" + encodeURIComponent(window.location.pathname)); return; }
    if (xhr.status !== 202 && xhr.status !== 200) {
      $("upload-note").textContent = "The studio refused the archive.";
      window.Studio.showError(uploadError(xhr), $("upload-form"));
      changed("import:changed");  // a refused archive may be on record as a failed import
      return;
    }
    var job = JSON.parse(xhr.responseText).data;
    $("upload-note").textContent = "Uploaded: the import runs below.";
    pending[job.id] = true;
    changed("import:changed");
    showImport(job.id);
  }

  function startUpload(evt) {
    evt.preventDefault();
    var file = chosenFile();
    window.Studio.flash("");
    $("error-file").textContent = "";
    $("error-format").textContent = "";
    if (!file) { $("error-file").textContent = "Choose a ZIP archive first."; $("zip-file").focus(); return; }
    var pid = section.getAttribute("data-project-id");
    var format = $("zip-format").value;
    var xhr = new XMLHttpRequest();
    var started = performance.now();
    var query = "?project_id=" + encodeURIComponent(pid) + "&format=" + encodeURIComponent(format);
    xhr.open("POST", IMPORT_API + "upload" + query);
    xhr.setRequestHeader("X-Requested-With", "studio");
    xhr.setRequestHeader("Accept", "application/json");
    xhr.setRequestHeader("Idempotency-Key", window.Studio.uuid());
    xhr.upload.onprogress = function (e) { drawUpload(e.loaded, e.lengthComputable ? e.total : file.size, started); };
    xhr.upload.onload = function () {
      drawUpload(file.size, file.size, started);
      $("upload-note").textContent = "Upload complete: the studio is checking the archive…";
    };
    xhr.onload = function () { uploadDone(xhr); };
    xhr.onerror = function () {
      upload = null; uploadShown(false);
      $("upload-note").textContent = "";
      window.Studio.flash("The upload did not reach the studio. Check that it is running, then try again.");
    };
    xhr.onabort = function () { upload = null; uploadShown(false); $("upload-note").textContent = "Upload cancelled: nothing was imported."; };
    var body = new FormData();
    body.append("project_id", pid);
    body.append("format", format);
    body.append("file", file, file.name);
    upload = xhr;
    drawUpload(0, file.size, started);
    $("upload-note").textContent = "Uploading " + file.name + "…";
    uploadShown(true);
    xhr.send(body);
  }

  function wireDrop() {
    var zone = $("zip-drop");
    ["dragenter", "dragover"].forEach(function (name) {
      zone.addEventListener(name, function (e) { e.preventDefault(); zone.classList.add("over"); });
    });
    ["dragleave", "drop"].forEach(function (name) {
      zone.addEventListener(name, function () { zone.classList.remove("over"); });
    });
    zone.addEventListener("drop", function (e) {
      e.preventDefault();
      if (e.dataTransfer && e.dataTransfer.files.length) {
        $("zip-file").files = e.dataTransfer.files;
        showChosen();
      }
    });
  }

  function wireUpload() {
    if (!$("upload-form")) { return; }
    $("upload-form").addEventListener("submit", startUpload);
    $("zip-file").addEventListener("change", showChosen);
    $("upload-cancel").addEventListener("click", function () { if (upload) { upload.abort(); } });
    // Leaving the page would end the upload: the browser asks first.
    window.addEventListener("beforeunload", function (e) {
      if (upload) { e.preventDefault(); e.returnValue = ""; }
    });
    wireDrop();
  }

  // --- start ----------------------------------------------------------------------------------

  function start() {
    section = $("dataset-import");
    if (!section) { return; }
    wireUpload();
    document.body.addEventListener("htmx:afterSwap", function (evt) {
      if (evt.detail.target && evt.detail.target.id === "import-job") {
        var config = evt.detail.requestConfig;
        var started = Boolean(config && config.elt && config.elt.id === "local-form");
        panelDrawn(started);
        if (started) { changed("import:changed"); }
      }
    });
    $("import-job").addEventListener("click", function (evt) {
      var button = evt.target.closest("[data-cancel-import]");
      if (button) { cancelImport(button); }
    });
    // An import still running when the page opened, else the one last shown here.
    var ready = function () { section.setAttribute("data-ready", "true"); };
    showImport(section.getAttribute("data-running-import") || lastShown()).then(ready, ready);
  }

  function lastShown() {
    var id = sessionStorage.getItem(storageKey());
    return id && document.querySelector('[data-import-row="' + id + '"]') ? id : "";
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
