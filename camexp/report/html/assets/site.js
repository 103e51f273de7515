/* camexp report html: sortable tables, the leaderboard's metric choice, the image gallery and the image page.
   Hand-written, no library; text from the data goes into the page as text (textContent), never as HTML. */
"use strict";

function cellValue(td) {
  if (!td) return null;
  var v = td.getAttribute("data-v");
  if (v !== null) return v === "" ? null : parseFloat(v);
  var t = td.textContent.trim(), n = parseFloat(t);
  return isNaN(n) ? t.toLowerCase() : n;
}

function compareValues(a, b) {  /* missing values last, numbers before text */
  if (a === null || b === null) return a === b ? 0 : a === null ? 1 : -1;
  if (typeof a !== typeof b) return typeof a === "number" ? -1 : 1;
  return a < b ? -1 : a > b ? 1 : 0;
}

function makeSortable(table) {
  var heads = table.tHead ? table.tHead.rows[0].cells : [];
  Array.prototype.forEach.call(heads, function (th, col) {
    th.tabIndex = 0;
    th.title = "sort by this column";
    function sort() {
      var asc = th.getAttribute("aria-sort") !== "ascending";
      Array.prototype.forEach.call(heads, function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", asc ? "ascending" : "descending");
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (r, s) {
        var a = cellValue(r.cells[col]), b = cellValue(s.cells[col]);
        if (a === null || b === null) return compareValues(a, b);
        return asc ? compareValues(a, b) : compareValues(b, a);
      });
      rows.forEach(function (r) { body.appendChild(r); });
    }
    th.addEventListener("click", sort);
    th.addEventListener("keydown", function (e) { if (e.key === "Enter") sort(); });
  });
}

function setupBoards() {
  var select = document.getElementById("metric");
  if (!select) return;
  function show() {
    document.querySelectorAll("section.board").forEach(function (s) {
      s.hidden = s.getAttribute("data-metric") !== select.value;
    });
  }
  select.addEventListener("change", show);
  show();
}

function el(tag, attrs, text) {
  var e = document.createElement(tag);
  Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, attrs[k]); });
  if (text !== undefined) e.textContent = text;
  return e;
}

function fileName(index, which, full) {  /* as camexp/report/html/gallery.py names the image files */
  return "img/" + Math.floor(index / 1000) + "/" + index + "_" + which + (full ? "f" : "") + ".jpg";
}

function fmt(v) {
  if (v === null || v === undefined) return "—";
  return Math.abs(v) >= 100 ? v.toFixed(1) : Math.abs(v) >= 1 ? v.toFixed(2) : v.toPrecision(3);
}

/* ---- gallery -------------------------------------------------------------------------------------- */

var PAGE = 48;

function galleryState() {
  var p = new URLSearchParams(location.hash.slice(1));
  return {key: p.get("key") || "o", a: p.get("a") || "0", b: p.get("b") || "", order: p.get("order") || "desc",
          min: p.get("min") || "", max: p.get("max") || "", cls: p.get("cls") || "", correct: p.get("correct") || "",
          page: parseInt(p.get("page") || "0", 10) || 0};
}

function valueOf(G, st, i) {  /* the chosen per-image value of image i: a method's, or A minus B */
  var vals = G.values[st.key].values[i], a = vals[+st.a];
  if (st.b === "") return a;
  var b = vals[+st.b];
  return a === null || b === null ? null : a - b;
}

function setupGallery(G) {
  var root = document.getElementById("gallery");
  var form = el("form", {class: "controls", id: "controls"});
  function field(label, input) {
    var l = el("label", {}, label);
    l.appendChild(input);
    form.appendChild(l);
    return input;
  }
  function select(name, options) {
    var s = el("select", {name: name});
    options.forEach(function (o) { s.appendChild(el("option", {value: o[0]}, o[1])); });
    return s;
  }
  var keys = Object.keys(G.values);
  var methods = G.methods.map(function (m, j) { return [String(j), m]; });
  var inputs = {
    key: field("value", select("key", keys.map(function (k) { return [k, G.values[k].label]; }))),
    a: field("of method", select("a", methods)),
    b: field("minus method", select("b", [["", "—"]].concat(methods))),
    order: field("order", select("order", [["desc", "largest first"], ["asc", "smallest first"]])),
    min: field("at least", el("input", {name: "min", type: "number", step: "any"})),
    max: field("at most", el("input", {name: "max", type: "number", step: "any"})),
    cls: field("class contains", el("input", {name: "cls", type: "search"})),
    correct: field("top-1", select("correct", [["", "any"], ["yes", "correct"], ["no", "wrong"], ["none", "no label"]]))
  };
  root.appendChild(form);
  var info = el("p", {id: "count"});
  var grid = el("div", {class: "grid", id: "grid"});
  var pager = el("nav", {class: "pager"});
  var prev = el("button", {type: "button", id: "prev"}, "previous page");
  var next = el("button", {type: "button", id: "next"}, "next page");
  var where = el("span", {id: "where"});
  pager.appendChild(prev); pager.appendChild(where); pager.appendChild(next);
  root.appendChild(info); root.appendChild(grid); root.appendChild(pager);

  function encode(st) {
    var p = new URLSearchParams();
    Object.keys(st).forEach(function (k) { if (st[k] !== "" && !(k === "page" && st[k] === 0)) p.set(k, st[k]); });
    return p.toString();
  }
  function read() {
    var st = {page: 0};
    Object.keys(inputs).forEach(function (k) { st[k] = inputs[k].value; });
    return st;
  }
  function render(st) {
    if (!G.values[st.key]) st.key = keys[0];
    if (!G.methods[+st.a]) st.a = "0";
    if (st.b !== "" && !G.methods[+st.b]) st.b = "";
    Object.keys(inputs).forEach(function (k) { if (inputs[k].value !== String(st[k])) inputs[k].value = st[k]; });
    var rows = [];
    var lo = st.min === "" ? null : parseFloat(st.min), hi = st.max === "" ? null : parseFloat(st.max);
    var cls = st.cls.toLowerCase();
    for (var i = 0; i < G.ids.length; i++) {
      var v = valueOf(G, st, i);
      if ((lo !== null || hi !== null) && v === null) continue;
      if (lo !== null && v < lo) continue;
      if (hi !== null && v > hi) continue;
      if (cls && (G["class"][i] + " " + G.target[i]).toLowerCase().indexOf(cls) < 0) continue;
      var c = G.correct[i];
      if (st.correct === "yes" && c !== true) continue;
      if (st.correct === "no" && c !== false) continue;
      if (st.correct === "none" && c !== null) continue;
      rows.push([i, v]);
    }
    var dir = st.order === "asc" ? 1 : -1;
    rows.sort(function (r, s) {
      if (r[1] === null || s[1] === null) return compareValues(r[1], s[1]);
      return dir * compareValues(r[1], s[1]) || r[0] - s[0];
    });
    var pages = Math.max(1, Math.ceil(rows.length / PAGE));
    st.page = Math.min(Math.max(0, st.page), pages - 1);
    var label = G.values[st.key].label + " of " + G.methods[+st.a] + (st.b === "" ? "" : " minus " + G.methods[+st.b]);
    info.textContent = rows.length + " of " + G.ids.length + " images; sorted by " + label;
    where.textContent = "page " + (st.page + 1) + " of " + pages;
    prev.disabled = st.page === 0;
    next.disabled = st.page >= pages - 1;
    var state = encode(st);  /* kept in the address, and handed to the image page for its way back */
    history.replaceState(null, "", "#" + state);
    grid.textContent = "";
    rows.slice(st.page * PAGE, (st.page + 1) * PAGE).forEach(function (r) {
      var i = r[0], a = el("a", {class: "card", href: "image.html#i=" + i + "&g=" + encodeURIComponent(state)});
      var strip = el("div", {class: "strip"});
      strip.appendChild(el("img", {src: fileName(G.index[i], "o", false), alt: G.ids[i], loading: "lazy"}));
      G.methods.forEach(function (m, j) {
        strip.appendChild(el("img", {src: fileName(G.index[i], j, false), alt: m, title: m, loading: "lazy"}));
      });
      a.appendChild(strip);
      a.appendChild(el("span", {class: "id"}, G.ids[i]));
      a.appendChild(el("span", {class: "cls"}, G["class"][i] + (G.correct[i] === false ? " (top-1 wrong)" : "")));
      a.appendChild(el("span", {class: "val"}, fmt(r[1])));
      grid.appendChild(a);
    });
  }
  var st = galleryState();
  Object.keys(inputs).forEach(function (k) {
    inputs[k].value = st[k];
    inputs[k].addEventListener("input", function () { render(read()); });
  });
  form.addEventListener("submit", function (e) { e.preventDefault(); });
  prev.addEventListener("click", function () { var s = read(); s.page = galleryState().page - 1; render(s); });
  next.addEventListener("click", function () { var s = read(); s.page = galleryState().page + 1; render(s); });
  render(st);
}

/* ---- image page ----------------------------------------------------------------------------------- */

function setupImage(G) {
  var root = document.getElementById("image");
  function render() {
    var params = new URLSearchParams(location.hash.slice(1));
    var i = parseInt(params.get("i") || "0", 10), g = "&g=" + encodeURIComponent(params.get("g") || "");
    root.textContent = "";
    if (!(i >= 0 && i < G.ids.length)) {
      root.appendChild(el("p", {class: "error"}, "No image " + location.hash + " in this run."));
      return;
    }
    var nav = el("nav", {class: "pager"});
    /* back to the gallery as the user left it (its sort, filters and page came along in the address) */
    nav.appendChild(el("a", {href: "gallery.html#" + (params.get("g") || ""), id: "back"}, "back to the gallery"));
    if (i > 0) nav.appendChild(el("a", {href: "#i=" + (i - 1) + g}, "previous image"));
    if (i < G.ids.length - 1) nav.appendChild(el("a", {href: "#i=" + (i + 1) + g}, "next image"));
    root.appendChild(nav);
    root.appendChild(el("h1", {}, G.ids[i]));
    var c = G.correct[i];
    root.appendChild(el("p", {class: "facts"},
      "Explained class: " + G["class"][i] + " (" + G.target[i] + "); the model's confidence in it (Y): " +
      fmt(G.y[i]) + "; top-1 " + G.pred[i] + (c === null ? ", no true label" : c ? ", correct" : ", wrong (true " + G.label[i] + ")")));
    var figs = el("div", {class: "figures"});
    function figure(src, caption) {
      var f = el("figure");
      f.appendChild(el("img", {src: src, alt: caption}));
      f.appendChild(el("figcaption", {}, caption));
      figs.appendChild(f);
    }
    figure(fileName(G.index[i], "o", true), "image");
    G.methods.forEach(function (m, j) { figure(fileName(G.index[i], j, true), m); });
    root.appendChild(figs);
    var table = el("table", {class: "sortable values"}), head = el("tr");
    head.appendChild(el("th", {}, "per-image value"));
    G.methods.forEach(function (m) { head.appendChild(el("th", {}, m)); });
    table.appendChild(el("thead")).appendChild(head);
    var body = table.appendChild(el("tbody"));
    Object.keys(G.values).forEach(function (k) {
      var tr = el("tr");
      tr.appendChild(el("th", {}, G.values[k].label));
      G.values[k].values[i].forEach(function (v) {
        tr.appendChild(el("td", {"data-v": v === null ? "" : String(v)}, fmt(v)));
      });
      body.appendChild(tr);
    });
    root.appendChild(el("div", {class: "scroll"})).appendChild(table);
    makeSortable(table);
  }
  window.addEventListener("hashchange", render);
  render();
}

document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("table.sortable").forEach(makeSortable);
  setupBoards();
  var G = window.CAMEXP_GALLERY;
  if (G && document.getElementById("gallery")) setupGallery(G);
  if (G && document.getElementById("image")) setupImage(G);
});
