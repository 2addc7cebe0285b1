// The dataset page's browsing half: filters for the thumbnail grid (kept in the page's URL),
// reloads of the grid, histogram and health when the dataset changes (an import ended:
// "dataset:changed" on document), and the editor's dialog to relabel or delete an image.
// The lists themselves are fragments of the API's JSON drawn by htmx (pages/dataset_browse.py);
// the grid's next pages load by themselves as its last item scrolls into view.
(function () {
  "use strict";

  var DEFAULT_PAGE = 48;
  var MAX_PAGE = 500;
  var SUBSETS = ["train", "val", "test"];
  var state = { label: "", split_id: "", subset: "" };
  var pageSize = DEFAULT_PAGE;
  var pid = "";
  var editing = null; // { item, opener } while the dialog is open

  function $(id) { return document.getElementById(id); }

  // --- filters, kept in the URL so that a reload or a shared link shows the same images -------

  function readUrl() {
    var q = new URLSearchParams(window.location.search);
    state.label = q.get("label") || "";
    state.split_id = q.get("split_id") || "";
    state.subset = SUBSETS.indexOf(q.get("subset")) >= 0 ? q.get("subset") : "";
    var size = parseInt(q.get("limit") || "", 10);
    pageSize = size >= 1 ? Math.min(size, MAX_PAGE) : DEFAULT_PAGE;
  }

  function writeUrl() {
    var q = new URLSearchParams(window.location.search);
    ["label", "split_id", "subset"].forEach(function (key) {
      if (state[key]) { q.set(key, state[key]); } else { q.delete(key); }
    });
    var rest = q.toString();
    window.history.replaceState(null, "", window.location.pathname + (rest ? "?" + rest : ""));
  }

  function imagesUrl() {
    var q = new URLSearchParams();
    q.set("limit", String(pageSize));
    if (state.label) { q.set("label", state.label); }
    if (state.split_id) {
      q.set("split_id", state.split_id);
      if (state.subset) { q.set("subset", state.subset); }
    }
    return "/api/v1/datasets/" + encodeURIComponent(pid) + "/images?" + q.toString();
  }

  function setOptions(select, options, chosen) {
    var first = select.options[0];
    select.textContent = "";
    select.appendChild(first);
    options.forEach(function (o) {
      var option = document.createElement("option");
      option.value = o.value;
      option.textContent = o.text;
      select.appendChild(option);
    });
    select.value = chosen;
    if (select.value !== chosen) { select.value = ""; }
  }

  function showFilters() {
    $("filter-label").value = state.label;
    $("filter-split").value = state.split_id;
    var subset = $("filter-subset");
    subset.disabled = !state.split_id;
    subset.value = state.split_id ? state.subset : "";
  }

  function onFilter() {
    state.label = $("filter-label").value;
    state.split_id = $("filter-split").value;
    state.subset = state.split_id ? $("filter-subset").value : "";
    showFilters();
    writeUrl();
    reloadGrid();
  }

  // The labels come from the histogram just drawn; a label asked for in the URL stays offered.
  function labelsFromHistogram() {
    var labels = [];
    document.querySelectorAll("#histogram tr[data-label]").forEach(function (row) {
      var label = row.getAttribute("data-label");
      if (label) { labels.push(label); } // "": a detection project's negatives, no class
    });
    if (state.label && labels.indexOf(state.label) < 0) { labels.push(state.label); }
    setOptions($("filter-label"), labels.map(function (l) { return { value: l, text: l }; }), state.label);
    var list = $("label-options");
    list.textContent = "";
    labels.forEach(function (l) {
      var option = document.createElement("option");
      option.value = l;
      list.appendChild(option);
    });
  }

  function loadSplits() {
    var url = "/api/v1/splits?project_id=" + encodeURIComponent(pid);
    return Studio.api("GET", url).then(function (data) {
      var splits = (data && data.items) || [];
      var options = splits.map(function (s) { return { value: s.id, text: s.name + " (" + s.strategy + ", " + s.images + " images)" }; });
      setOptions($("filter-split"), options, state.split_id);
      if (state.split_id && $("filter-split").value !== state.split_id) {
        state.split_id = ""; state.subset = ""; // that split is gone
        writeUrl();
        reloadGrid();
      }
      showFilters();
    }).catch(function (err) { Studio.showError(err); });
  }

  // --- reloads ----------------------------------------------------------------------------------

  function reloadGrid() { htmx.trigger($("thumbs"), "browse-refresh"); }

  function reloadFacts() {
    htmx.trigger($("histogram"), "browse-refresh");
    htmx.trigger($("health"), "browse-refresh");
  }

  function reloadAll() {
    loadSplits();
    reloadFacts();
    reloadGrid();
  }

  function setTotal(delta) {
    var box = $("browse-total");
    var total = Math.max(0, Number(box.getAttribute("data-total") || 0) + delta);
    var filtered = Boolean(state.label || state.split_id);
    box.setAttribute("data-total", String(total));
    box.textContent = total.toLocaleString("en") + (total === 1 ? " image" : " images") +
      (filtered ? (total === 1 ? " matches" : " match") : "");
  }

  // A part whose request failed says so in its place, with a way to ask again (the message
  // itself is in the page's message area): never a "loading…" left forever.
  var FAILED = {
    histogram: "The classes could not be counted.",
    health: "The health report could not be made.",
    thumbs: "The images could not be loaded."
  };

  function retryNote(tag, note, again) {
    var box = document.createElement(tag);
    box.className = "browse-failed";
    var text = document.createElement("span");
    text.className = "error";
    text.textContent = note;
    var button = document.createElement("button");
    button.type = "button";
    button.textContent = "Try again";
    button.addEventListener("click", again);
    box.appendChild(text);
    box.appendChild(button);
    return box;
  }

  function onFailed(evt) {
    var elt = evt.detail.elt;
    if (!elt || !elt.closest) { return; }
    var more = elt.closest("#thumbs li.more");
    if (more) {
      more.textContent = "";
      more.appendChild(retryNote("span", "More images could not be loaded.", function () {
        more.textContent = "Loading more images…";
        htmx.trigger(more, "browse-retry");
      }));
      return;
    }
    var part = elt.closest("#histogram, #health, #thumbs");
    if (!part || !FAILED[part.id]) { return; }
    part.textContent = "";
    part.appendChild(retryNote(part.id === "thumbs" ? "li" : "p", FAILED[part.id], function () {
      htmx.trigger(part, "browse-refresh");
    }));
  }

  // --- the editor's dialog: relabel or delete one image ------------------------------------

  function imageUrl(item) {
    return "/api/v1/datasets/" + encodeURIComponent(pid) + "/images/" + encodeURIComponent(item.getAttribute("data-image-id"));
  }

  function clearDialog() {
    $("image-dialog-error").textContent = "";
    if ($("error-label")) { $("error-label").textContent = ""; }
    $("delete-confirm").classList.add("hidden");
  }

  function openDialog(item, opener) {
    var dialog = $("image-dialog");
    var name = item.getAttribute("data-filename");
    editing = { item: item, opener: opener };
    clearDialog();
    var preview = $("image-dialog-preview");
    preview.src = item.querySelector("img").getAttribute("src");
    preview.alt = item.querySelector("img").getAttribute("alt");
    $("image-dialog-name").textContent = name;
    $("delete-name").textContent = name;
    var field = $("relabel-label"); // absent for a detection project: its boxes say its classes
    if (field) { field.value = item.getAttribute("data-label") || ""; }
    dialog.showModal();
    if (field) { field.focus(); field.select(); } else { $("image-delete").focus(); }
  }

  function closeDialog() {
    var dialog = $("image-dialog");
    if (dialog.open) { dialog.close(); }
  }

  function afterClose() {
    var was = editing;
    editing = null;
    if (!was) { return; }
    if (document.body.contains(was.opener)) { was.opener.focus(); return; }
    $("images-title").focus(); // the image is gone: back to the grid's heading
  }

  // Field problems go next to their field; anything else inside the dialog, which covers the
  // page's message area while it is open.
  function dialogError(err) {
    var form = $("relabel-form");
    Studio.showError(err, form);
    var onField = err && (err.field === "label" || (err.details || []).some(function (d) { return d.field === "label"; }));
    if (!onField) { $("image-dialog-error").textContent = err && err.message ? err.message : String(err); }
  }

  function showLabel(item, label) {
    var img = item.querySelector("img");
    var name = item.getAttribute("data-filename");
    item.setAttribute("data-label", label || "");
    item.querySelector(".thumb-label").textContent = label || "no label";
    img.alt = name + ", " + (label ? "labelled " + label : "no label");
  }

  function saveLabel(evt) {
    evt.preventDefault();
    if (!editing) { return; }
    var item = editing.item;
    if (!$("relabel-label")) { return; }
    var label = $("relabel-label").value.trim();
    clearDialog();
    Studio.api("PATCH", imageUrl(item), { label: label }).then(function (image) {
      if (state.label && image.label !== state.label) {
        item.remove(); // no longer among the images the filter shows
        setTotal(-1);
      } else {
        showLabel(item, image.label);
      }
      closeDialog();
      Studio.flash(image.filename + " is now labelled " + image.label + ".", "info");
      reloadFacts();
    }).catch(dialogError);
  }

  function askDelete() {
    clearDialog();
    $("delete-confirm").classList.remove("hidden");
    $("image-delete-yes").focus();
  }

  function keep() {
    $("delete-confirm").classList.add("hidden");
    $("image-delete").focus();
  }

  function deleteImage() {
    if (!editing) { return; }
    var item = editing.item;
    var name = item.getAttribute("data-filename");
    Studio.api("DELETE", imageUrl(item)).then(function () {
      var next = item.nextElementSibling && item.nextElementSibling.querySelector(".edit-image");
      item.remove();
      setTotal(-1);
      if (next) { editing.opener = next; }
      closeDialog();
      Studio.flash(name + " was deleted from the dataset.", "info");
      reloadFacts();
    }).catch(dialogError);
  }

  function wireDialog() {
    var dialog = $("image-dialog");
    if (!dialog) { return; } // not an editor: no dialog, no edit buttons
    $("relabel-form").addEventListener("submit", saveLabel);
    $("image-dialog-close").addEventListener("click", closeDialog);
    $("image-delete").addEventListener("click", askDelete);
    $("image-delete-no").addEventListener("click", keep);
    $("image-delete-yes").addEventListener("click", deleteImage);
    dialog.addEventListener("close", afterClose);
    $("thumbs").addEventListener("click", function (evt) {
      var button = evt.target.closest(".edit-image");
      if (button) { openDialog(button.closest("li.thumb"), button); }
    });
  }

  // --- wiring -----------------------------------------------------------------------------------

  function onHistogramClick(evt) {
    var button = evt.target.closest(".filter-label");
    if (!button) { return; }
    state.label = button.getAttribute("data-label");
    showFilters();
    writeUrl();
    reloadGrid();
    $("images-title").scrollIntoView({ block: "start" });
    $("filter-label").focus();
  }

  function start() {
    var root = $("browse");
    if (!root) { return; }
    pid = root.getAttribute("data-project-id");
    readUrl();
    // The grid asks for its first page with the filters chosen (its next pages carry them).
    document.addEventListener("htmx:configRequest", function (evt) {
      if (evt.detail.elt && evt.detail.elt.id === "thumbs") { evt.detail.path = imagesUrl(); }
    });
    document.addEventListener("htmx:afterSwap", function (evt) {
      if (evt.detail.target && evt.detail.target.id === "histogram") { labelsFromHistogram(); }
    });
    document.addEventListener("htmx:responseError", onFailed);
    document.addEventListener("htmx:sendError", onFailed);
    $("browse-filters").addEventListener("change", onFilter);
    $("browse-filters").addEventListener("submit", function (evt) { evt.preventDefault(); });
    $("histogram").addEventListener("click", onHistogramClick);
    document.addEventListener("dataset:changed", reloadAll);
    wireDialog();
    showFilters();
    loadSplits();
  }

  start();
})();
