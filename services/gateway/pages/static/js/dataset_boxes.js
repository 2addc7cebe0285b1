// The boxes of a detection project's dataset page: their colours, and the image viewer.
//
// Colours: the server colours each class by a hash of its name (the box_colour filter), which
// two classes may share; this page knows its classes, so it gives them the palette's colours in
// turn (the histogram's classes first, then any other as it first shows up) and no two of the
// first twelve share one. Thumbnails and the viewer then agree, and stay so as pages load.
//
// The viewer: a thumbnail opens the full image with its boxes and labels over it, the boxes
// listed in words beneath, and the grid's neighbours a key (← →) or a button away. The boxes are
// read back from the thumbnail's own drawing (fragments/dataset/boxes.html: an SVG in the
// image's pixels, one g.box per box with its colour and label), so the viewer shows exactly what
// the grid shows, from the same answer of the browse API. A link opened in a new tab (or with a
// modifier key) still opens the bare image.
(function () {
  "use strict";

  var SVG = "http://www.w3.org/2000/svg";
  var COLOURS = 12; // box-0 … box-11 in dataset_browse.css
  var current = null; // { item, opener } while the viewer is open
  var classes = []; // the page's classes in the order they take the palette's colours

  function $(id) { return document.getElementById(id); }

  // --- colours ------------------------------------------------------------------------------

  function colourFor(label) {
    var at = classes.indexOf(label);
    if (at < 0) { classes.push(label); at = classes.length - 1; }
    return "box-" + (at % COLOURS);
  }

  // Every box not yet coloured by the page (all of them when the order changed).
  function paint(all) {
    var which = all ? "svg.box-overlay g.box" : "svg.box-overlay g.box:not([data-painted])";
    $("thumbs").querySelectorAll(which).forEach(function (g) {
      g.setAttribute("class", "box " + colourFor(g.getAttribute("data-label")));
      g.setAttribute("data-painted", "");
    });
  }

  function fromHistogram() {
    var first = [];
    $("histogram").querySelectorAll("tr[data-label]").forEach(function (row) {
      var label = row.getAttribute("data-label");
      if (label) { first.push(label); }
    });
    if (!first.length) { return; }
    classes = first.concat(classes.filter(function (l) { return first.indexOf(l) < 0; }));
    paint(true);
  }

  // A page of thumbnails swaps in (its sentinel replaced: the swap's target is gone by then),
  // or the histogram is drawn again.
  function onSettle(evt) {
    var target = evt.detail.target;
    if (target && target.id === "histogram") { fromHistogram(); } else { paint(false); }
  }

  // --- the viewer ---------------------------------------------------------------------------

  function colourOf(element) {
    var found = "";
    element.classList.forEach(function (name) { if (/^box-\d+$/.test(name)) { found = name; } });
    return found;
  }

  // The image's size and its boxes in its own pixels, as its thumbnail draws them.
  function boxesOf(item) {
    var width = Number(item.getAttribute("data-width")) || 1;
    var height = Number(item.getAttribute("data-height")) || 1;
    var boxes = [];
    item.querySelectorAll("svg.box-overlay g.box").forEach(function (g) {
      var frame = g.querySelector("rect.box-frame");
      boxes.push({
        label: g.getAttribute("data-label"),
        colour: colourOf(g),
        x: Number(frame.getAttribute("x")),
        y: Number(frame.getAttribute("y")),
        w: Number(frame.getAttribute("width")),
        h: Number(frame.getAttribute("height"))
      });
    });
    return { width: width, height: height, boxes: boxes };
  }

  function percent(part, whole) { return (100 * part / whole).toFixed(3) + "%"; }

  function frameOf(box) {
    var rect = document.createElementNS(SVG, "rect");
    rect.setAttribute("class", "box-frame " + box.colour);
    rect.setAttribute("data-label", box.label);
    rect.setAttribute("x", String(box.x));
    rect.setAttribute("y", String(box.y));
    rect.setAttribute("width", String(box.w));
    rect.setAttribute("height", String(box.h));
    return rect;
  }

  function tagOf(box, seen) {
    var tag = document.createElement("span");
    // Above its box, or just inside it when the box starts at the image's top edge.
    tag.className = "viewer-tag " + box.colour + (box.y < 0.06 * seen.height ? " inside" : "");
    tag.textContent = box.label;
    tag.style.left = percent(box.x, seen.width);
    tag.style.top = percent(box.y, seen.height);
    return tag;
  }

  function wordsOf(box) {
    var li = document.createElement("li");
    var swatch = document.createElement("span");
    swatch.className = "viewer-swatch " + box.colour;
    li.appendChild(swatch);
    li.appendChild(document.createTextNode(box.label + ": at " + Math.round(box.x) + ", " +
      Math.round(box.y) + ", " + Math.round(box.w) + " × " + Math.round(box.h) + " px"));
    return li;
  }

  function neighbour(item, step) {
    var next = step < 0 ? item.previousElementSibling : item.nextElementSibling;
    while (next && !next.classList.contains("thumb")) {
      next = step < 0 ? next.previousElementSibling : next.nextElementSibling;
    }
    return next;
  }

  function drawBoxes(stage, seen) {
    stage.querySelectorAll("svg, .viewer-tag").forEach(function (old) { old.remove(); });
    var svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("class", "viewer-drawing");
    svg.setAttribute("viewBox", "0 0 " + seen.width + " " + seen.height);
    svg.setAttribute("preserveAspectRatio", "none");
    svg.setAttribute("aria-hidden", "true");
    stage.appendChild(svg);
    seen.boxes.forEach(function (box) {
      svg.appendChild(frameOf(box));
      stage.appendChild(tagOf(box, seen));
    });
  }

  function draw(item) {
    var seen = boxesOf(item);
    var stage = $("viewer-stage");
    var image = $("viewer-image");
    var said = item.querySelector("img").getAttribute("alt");
    // The stage takes the image's shape, as wide as fits and never taller than the window
    // allows: the drawing laid over it then matches the image pixel for pixel.
    stage.style.aspectRatio = seen.width + " / " + seen.height;
    stage.style.width = "min(100%, calc(68vh * " + (seen.width / seen.height).toFixed(4) + "))";
    image.src = item.querySelector("a.thumb-link").getAttribute("href");
    image.alt = said;
    drawBoxes(stage, seen);
    var list = $("viewer-boxes");
    list.textContent = "";
    seen.boxes.forEach(function (box) { list.appendChild(wordsOf(box)); });
    list.hidden = seen.boxes.length === 0;
    $("viewer-title").textContent = item.getAttribute("data-filename");
    $("viewer-said").textContent = said;
    $("viewer-prev").disabled = !neighbour(item, -1);
    $("viewer-next").disabled = !neighbour(item, 1);
  }

  function show(item, opener) {
    var viewer = $("image-viewer");
    current = { item: item, opener: opener };
    draw(item);
    if (!viewer.open) { viewer.showModal(); }
    $("viewer-close").focus();
  }

  function move(step) {
    if (!current) { return; }
    var next = neighbour(current.item, step);
    if (!next) { return; }
    current.item = next;
    current.opener = next.querySelector("a.thumb-link");
    draw(next);
    if (document.activeElement && document.activeElement.disabled) { $("viewer-close").focus(); }
  }

  function afterClose() {
    var was = current;
    current = null;
    $("viewer-image").removeAttribute("src");
    if (was && document.body.contains(was.opener)) { was.opener.focus(); }
  }

  function onThumbClick(evt) {
    var link = evt.target.closest("a.thumb-link");
    if (!link || evt.button !== 0 || evt.ctrlKey || evt.metaKey || evt.shiftKey || evt.altKey) {
      return;
    }
    evt.preventDefault();
    show(link.closest("li.thumb"), link);
  }

  function onKey(evt) {
    if (evt.key === "ArrowLeft") { evt.preventDefault(); move(-1); }
    if (evt.key === "ArrowRight") { evt.preventDefault(); move(1); }
  }

  function start() {
    var viewer = $("image-viewer");
    var root = $("browse");
    if (!viewer || !root || root.getAttribute("data-task") !== "detection") { return; }
    document.addEventListener("htmx:afterSettle", onSettle);
    fromHistogram();
    paint(false);
    $("thumbs").addEventListener("click", onThumbClick);
    $("viewer-prev").addEventListener("click", function () { move(-1); });
    $("viewer-next").addEventListener("click", function () { move(1); });
    $("viewer-close").addEventListener("click", function () { viewer.close(); });
    viewer.addEventListener("keydown", onKey);
    viewer.addEventListener("close", afterClose);
  }

  start();
})();
