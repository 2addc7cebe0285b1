// The projects page: inline rename and the archive/restore confirmation of each row (opened and
// closed with buttons or Escape, focus kept where the user works), the list reloaded after a
// create or a refused change, the address kept in step with the list shown, and a rename's field
// error put next to that row's field. Requests themselves are htmx's (see projects.html).
(function () {
  "use strict";

  var LIST = "projects-list";
  var sender = null;        // the element whose answer is being swapped in
  var freshId = null;       // a project just created: marked when the list shows it
  var pagerFocus = null;    // "previous" | "next": which pager button had the focus
  var afterReload = null;   // a message to show again once the list has reloaded
  var loaded = false;       // the first list shown is the one the address already names

  function list() { return document.getElementById(LIST); }

  function rowOf(elt) { return elt && elt.closest ? elt.closest("tr[data-project-id]") : null; }

  // --- inline editors -----------------------------------------------------------------------

  function open(trigger) {
    var box = document.getElementById(trigger.getAttribute("aria-controls"));
    if (!box) { return; }
    closeAll(rowOf(trigger));
    box.classList.remove("hidden");
    trigger.setAttribute("aria-expanded", "true");
    if (box.matches("form.rename")) {
      var shown = rowOf(trigger).querySelector(".shown");
      if (shown) { shown.classList.add("hidden"); }
      var input = box.querySelector("input[name=name]");
      input.focus();
      input.select();
    } else {
      box.querySelector("[data-confirm]").focus();
    }
  }

  function close(box, refocus) {
    if (!box || box.classList.contains("hidden")) { return; }
    box.classList.add("hidden");
    var row = rowOf(box);
    var trigger = row.querySelector("[aria-controls='" + box.id + "']");
    if (trigger) { trigger.setAttribute("aria-expanded", "false"); }
    if (box.matches("form.rename")) {
      var input = box.querySelector("input[name=name]");
      input.value = input.getAttribute("data-original");
      box.querySelectorAll(".field-error").forEach(function (e) { e.textContent = ""; });
      var shown = row.querySelector(".shown");
      if (shown) { shown.classList.remove("hidden"); }
    }
    if (refocus && trigger) { trigger.focus(); }
  }

  function closeAll(row) {
    if (!row) { return; }
    row.querySelectorAll("form.rename, .confirm").forEach(function (box) { close(box, false); });
  }

  function onClick(evt) {
    var button = evt.target.closest ? evt.target.closest("button[data-action]") : null;
    if (!button || !list().contains(button)) { return; }
    var action = button.getAttribute("data-action");
    if (action === "rename" || action === "confirm") {
      if (button.getAttribute("aria-expanded") === "true") {
        close(document.getElementById(button.getAttribute("aria-controls")), true);
      } else {
        open(button);
      }
    } else if (action === "cancel") {
      close(button.closest("form.rename, .confirm"), true);
    }
  }

  function onKey(evt) {
    if (evt.key !== "Escape" || !evt.target.closest) { return; }
    var box = evt.target.closest("#" + LIST + " form.rename, #" + LIST + " .confirm");
    if (box) {
      evt.preventDefault();
      close(box, true);
    }
  }

  // --- requests ------------------------------------------------------------------------------

  function reload(url) {
    var current = list().querySelector(".project-list");
    var target = url || (current && current.getAttribute("data-url")) || list().getAttribute("hx-get");
    window.htmx.ajax("GET", target, { target: "#" + LIST, swap: "innerHTML" });
  }

  // After a create: the first page of the active projects, where the new one is on top.
  function showCreated(form, evt) {
    var note = document.querySelector("#created [data-project-id]");
    freshId = note ? note.getAttribute("data-project-id") : null;
    form.reset();
    var search = document.getElementById("project-search");
    search.querySelector("[name=q]").value = "";
    search.querySelector("[name=status]").value = "active";
    var limit = search.querySelector("[name=limit]").value;
    reload("/api/v1/projects?status=active&limit=" + encodeURIComponent(limit));
    if (evt.detail.xhr.status === 202) { setTimeout(function () { reload(); }, 1500); }
  }

  function onBeforeRequest(evt) {
    var elt = evt.detail.elt;
    pagerFocus = elt.hasAttribute && elt.hasAttribute("data-pager") ? elt.getAttribute("data-pager") : null;
  }

  // The element that sent a request: htmx re-fires afterRequest on a connected ancestor when
  // the sender itself was swapped out (its row), and detail.elt then names that ancestor.
  function senderOf(evt) {
    var config = evt.detail.requestConfig;
    return (config && config.elt) || evt.detail.elt;
  }

  function onAfterRequest(evt) {
    var elt = senderOf(evt);
    sender = null;
    if (elt.id === "create-project" && evt.detail.successful) {
      showCreated(elt, evt);
      return;
    }
    var changed = elt.matches && (elt.matches("form.rename") || elt.hasAttribute("data-confirm"));
    if (!changed) { return; }
    var id = elt.closest ? (rowOf(elt) || {}).id : null;
    var status = evt.detail.xhr.status;
    if (evt.detail.successful) {
      refocus(elt, id);
    } else if (status === 409 || status === 412) {
      // The project changed meanwhile (or was archived): show what it is now.
      var box = document.querySelector("#flash p");
      afterReload = box ? box.textContent : null;
      reload();
    }
  }

  function refocus(elt, id) {
    var row = id ? document.getElementById(id) : null;
    if (!row) { return; }
    var renamed = elt.matches("form.rename");
    var name = row.querySelector(".shown a");
    var next = renamed ? row.querySelector("[data-action=rename]") : row.querySelector("[data-action=confirm]");
    (next || name || row).focus();
    var what = name ? "“" + name.textContent + "”" : "The project";
    var done = renamed ? "renamed" : (row.querySelector(".badge.ok") ? "restored" : "archived");
    window.Studio.flash(what + " " + (renamed ? "is its new name." : done + "."), "info");
  }

  // A rename's field error goes next to that row's field, not to the create form's field of
  // the same name (the error fragment names fields by id, and ids are unique in a page).
  function onOobBeforeSwap(evt) {
    var form = sender && sender.closest ? sender.closest("form.rename") : null;
    var target = evt.detail.target;
    if (!form || !target || !target.id || target.id.indexOf("error-") !== 0) { return; }
    var box = form.querySelector("[data-error-for='" + target.id.slice(6) + "']");
    if (!box) { return; }
    box.textContent = evt.detail.fragment.textContent.trim();
    evt.detail.shouldSwap = false;
  }

  function onAfterSwap(evt) {
    if (evt.detail.target !== list()) { return; }
    var shown = list().querySelector(".project-list");
    var page = shown && shown.getAttribute("data-page-url");
    if (page && loaded && window.history.replaceState) { window.history.replaceState(null, "", page); }
    loaded = true;
    if (freshId) {
      var row = document.getElementById("project-" + freshId);
      if (row) { row.classList.add("fresh"); }
      freshId = null;
    }
    if (pagerFocus) {
      var again = list().querySelector("[data-pager=" + pagerFocus + "]:not([disabled])") ||
        list().querySelector("[data-pager]:not([disabled])");
      if (again) { again.focus(); }
      pagerFocus = null;
    }
    if (afterReload) {
      window.Studio.flash(afterReload + " The list now shows the project as it is.", "error");
      afterReload = null;
    }
  }

  function install() {
    if (!list()) { return; }
    document.addEventListener("click", onClick);
    document.addEventListener("keydown", onKey);
    document.body.addEventListener("htmx:beforeRequest", onBeforeRequest);
    document.body.addEventListener("htmx:beforeSwap", function (evt) { sender = senderOf(evt); });
    document.body.addEventListener("htmx:oobBeforeSwap", onOobBeforeSwap);
    document.body.addEventListener("htmx:afterRequest", onAfterRequest);
    document.body.addEventListener("htmx:afterSwap", onAfterSwap);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", install);
  } else {
    install();
  }
})();
