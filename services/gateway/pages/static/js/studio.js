// What every page shares: htmx's settings, JSON bodies for forms, errors shown in the page,
// a session kept alive, and small helpers for page scripts (Studio.*). No inline script
// anywhere: the Content Security Policy forbids them, so pages wire behaviour here and in
// their own file under /static/js, reading what they need from data- attributes.
(function () {
  "use strict";

  function uuid() {
    if (window.crypto && crypto.randomUUID) {
      try { return crypto.randomUUID(); } catch (e) { /* not a secure context */ }
    }
    var b = new Uint8Array(16);
    crypto.getRandomValues(b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    var h = Array.prototype.map.call(b, function (x) { return (x + 0x100).toString(16).slice(1); }).join("");
    return h.slice(0, 8) + "-" + h.slice(8, 12) + "-" + h.slice(12, 16) + "-" + h.slice(16, 20) + "-" + h.slice(20);
  }

  function flash(message, kind) {
    var box = document.getElementById("flash");
    if (!box) { return; }
    box.textContent = "";
    if (!message) { return; }
    var p = document.createElement("p");
    p.className = kind || "error";
    p.setAttribute("role", kind === "info" ? "status" : "alert");
    p.textContent = message;
    box.appendChild(p);
  }

  function clearErrors(elt) {
    flash("");
    var form = elt && elt.closest ? (elt.closest("form") || elt) : null;
    if (!form || !form.querySelectorAll) { return; }
    form.querySelectorAll(".field-error").forEach(function (e) { e.textContent = ""; });
  }

  // A form's fields as the API's JSON: a dotted name nests ("hyperparameters.lr"), a number
  // input gives a number, a checkbox a boolean, data-type="json" parses, data-type="list"
  // splits on commas, and an empty optional field is left out so the API's default applies.
  function setPath(obj, path, value) {
    var keys = path.split(".");
    var at = obj;
    for (var i = 0; i < keys.length - 1; i++) {
      if (typeof at[keys[i]] !== "object" || at[keys[i]] === null) { at[keys[i]] = {}; }
      at = at[keys[i]];
    }
    at[keys[keys.length - 1]] = value;
  }

  function typed(input, raw) {
    var kind = input.getAttribute("data-type") || input.type;
    if (kind === "checkbox") { return input.checked; }
    if (raw === "" ) { return undefined; }
    if (kind === "number" || kind === "range") { return Number(raw); }
    if (kind === "json") { return JSON.parse(raw); }
    if (kind === "list") { return raw.split(",").map(function (s) { return s.trim(); }).filter(Boolean); }
    if (kind === "bool") { return raw === "true"; }
    return raw;
  }

  function formJson(elt) {
    var form = elt.tagName === "FORM" ? elt : elt.closest("form");
    var body = {};
    if (!form) { return body; }
    Array.prototype.forEach.call(form.elements, function (input) {
      if (!input.name || input.disabled || input.type === "file" || input.type === "submit") { return; }
      if (input.type === "radio" && !input.checked) { return; }
      var value = typed(input, input.value);
      if (value === undefined && input.type !== "checkbox") { return; }
      setPath(body, input.name, value);
    });
    return body;
  }

  function install() {
    var htmx = window.htmx;
    htmx.config.includeIndicatorStyles = false;
    htmx.config.allowEval = false;
    htmx.config.allowScriptTags = false;
    htmx.config.selfRequestsOnly = true;
    htmx.config.historyCacheSize = 0;
    // Error answers carry the error fragment (message and field errors, out of band).
    htmx.config.responseHandling = [
      { code: "204", swap: false },
      { code: "[23]..", swap: true },
      { code: "[45]..", swap: true, error: true },
      { code: "...", swap: false }
    ];

    htmx.defineExtension("studio-json", {
      onEvent: function (name, evt) {
        if (name === "htmx:configRequest") {
          var verb = (evt.detail.verb || "get").toUpperCase();
          if (verb !== "GET" && evt.detail.elt.hasAttribute("data-json")) {
            evt.detail.headers["Content-Type"] = "application/json";
          }
          if (verb === "POST" && !evt.detail.headers["Idempotency-Key"]) {
            evt.detail.headers["Idempotency-Key"] = uuid();
          }
        }
        return true;
      },
      encodeParameters: function (xhr, parameters, elt) {
        if (!elt.hasAttribute("data-json")) { return null; }
        xhr.overrideMimeType("text/html");
        var body = formJson(elt);
        var extra = elt.getAttribute("data-json");
        if (extra) { Object.assign(body, JSON.parse(extra)); }
        return JSON.stringify(body);
      }
    });

    // A person's action clears the last message; a poll or a lazy load in the background must
    // not wipe a message the person has not read yet.
    document.body.addEventListener("htmx:beforeRequest", function (evt) {
      var cfg = evt.detail.requestConfig || {};
      var trigger = cfg.triggeringEvent;
      if (trigger && (trigger.type === "submit" || trigger.type === "click" || trigger.type === "change" || trigger.type === "keyup" || trigger.type === "input")) {
        clearErrors(evt.detail.elt);
      }
    });
    document.body.addEventListener("htmx:responseError", function (evt) {
      var status = evt.detail.xhr.status;
      if (status === 401) { signIn(); }
    });
    document.body.addEventListener("htmx:sendError", function () {
      flash("The studio did not answer. Check that it is running, then try again.");
    });
    document.body.addEventListener("htmx:timeout", function () {
      flash("The studio took too long to answer. Try again in a moment.");
    });
    keepSignedIn();
  }

  function signIn() {
    window.location.assign("/login?next=" + encodeURIComponent(window.location.pathname + window.location.search));
  }

  // The access cookie lives for a while; renew it well before it runs out while a page is open.
  function keepSignedIn() {
    var url = document.body.getAttribute("data-session-refresh");
    if (!url) { return; }
    var every = Number(document.body.getAttribute("data-session-every") || 600) * 1000;
    setInterval(function () {
      fetch(url, { method: "POST", headers: { "X-Requested-With": "studio" }, credentials: "same-origin" })
        .then(function (r) { if (r.status === 401) { signIn(); } })
        .catch(function () { /* offline for now: the next tick tries again */ });
    }, every);
  }

  // JSON from the API for page scripts: the envelope's data, or an Error carrying its code.
  function api(method, url, body, headers) {
    var h = Object.assign({ "Accept": "application/json", "X-Requested-With": "studio" }, headers || {});
    var init = { method: method, headers: h, credentials: "same-origin" };
    if (body !== undefined) {
      h["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
      if (method === "POST" && !h["Idempotency-Key"]) { h["Idempotency-Key"] = uuid(); }
    }
    return fetch(url, init).then(function (r) {
      if (r.status === 401) { signIn(); }
      if (r.status === 204) { return null; }
      return r.json().catch(function () { return {}; }).then(function (payload) {
        if (!r.ok) {
          var err = (payload && payload.error) || { code: "HTTP_" + r.status, message: "the request failed (" + r.status + ")" };
          var e = new Error(err.message);
          e.code = err.code; e.field = err.field; e.status = r.status; e.details = err.details;
          throw e;
        }
        return payload.data !== undefined ? payload.data : payload;
      });
    }, function () {
      var e = new Error("The studio did not answer. Check that it is running, then try again.");
      e.code = "OFFLINE";
      throw e;
    });
  }

  // Show an API error in the page: the message above, each field's problem by its field.
  function showError(err, form) {
    flash(err && err.message ? err.message : String(err));
    var problems = (err && err.details) || (err && err.field ? [{ field: err.field, message: err.message }] : []);
    problems.forEach(function (p) {
      var id = "error-" + String(p.field).replace(/[^A-Za-z0-9_-]/g, "-");
      var box = (form || document).querySelector("#" + id) || document.getElementById(id);
      if (box) { box.textContent = p.message; }
    });
  }

  // An EventSource that never shows an event twice. The browser resends Last-Event-ID on its
  // own reconnects (a gateway restarted); a stream opened anew after the browser gave up starts
  // after the last id seen. opts: types (event names to deliver), ends (names that end the
  // stream, delivered too), onEvent(type, data, id), onState("live" | "reconnecting"),
  // unstored (names of live events that carry no id of their own: by the SSE spec such an event
  // shows the last id seen, so these are never taken for a repeat of it).
  // A named "error" event of the stream is a MessageEvent; a connection error is not.
  function follow(url, opts) {
    var last = null;
    var seen = {};
    var source = null;
    var ended = false;
    var unstored = opts.unstored || [];
    var ends = opts.ends || ["complete"];
    var names = (opts.types || []).concat(ends.filter(function (t) { return (opts.types || []).indexOf(t) < 0; }));
    function state(s) { if (opts.onState) { opts.onState(s); } }
    function deliver(evt) {
      if (!(evt instanceof MessageEvent)) { return; }
      if (evt.lastEventId && unstored.indexOf(evt.type) < 0) {
        if (seen[evt.lastEventId]) { return; }
        seen[evt.lastEventId] = true;
        last = evt.lastEventId;
      }
      var data = null;
      try { data = JSON.parse(evt.data); } catch (e) { data = evt.data; }
      opts.onEvent(evt.type, data, evt.lastEventId);
      if (ends.indexOf(evt.type) >= 0) { close(); }
    }
    function open() {
      var u = url;
      if (last) { u += (url.indexOf("?") >= 0 ? "&" : "?") + "last_event_id=" + encodeURIComponent(last); }
      source = new EventSource(u, { withCredentials: true });
      source.onopen = function () { state("live"); };
      names.forEach(function (type) { source.addEventListener(type, deliver); });
      source.addEventListener("error", function (evt) {
        if (ended || evt instanceof MessageEvent) { return; }
        state("reconnecting");
        if (source.readyState === EventSource.CLOSED) {
          setTimeout(function () { if (!ended) { open(); } }, 2000);
        }
      });
    }
    function close() { ended = true; if (source) { source.close(); } }
    open();
    return { close: close };
  }

  window.Studio = { api: api, flash: flash, showError: showError, follow: follow, uuid: uuid, formJson: formJson };

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", install);
  } else {
    install();
  }
})();
