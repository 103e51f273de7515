/* The rater's side of a camexp study: one item at a time, every answer kept in localStorage as it is given
   (per study and rater), and a JSON file of the answers to download. No network: the items come from
   items.js (window.CAMEXP_STUDY), which works from file:// as well as from any static host. */
(function () {
  "use strict";
  var S = window.CAMEXP_STUDY;
  var N = S.items.length;
  var PREFIX = "camexp-study:" + S.id + ":";
  var CURRENT = PREFIX + "current";
  var CHOICES = ["left", "same", "right"];
  var state = null;  // {rater, pos, answers: [null | {choice, ms}] per item}
  var shownAt = 0;

  function $(id) { return document.getElementById(id); }
  function show(section) {
    ["start", "trial", "done"].forEach(function (s) { $(s).hidden = s !== section; });
  }
  function storeKey(rater) { return PREFIX + "rater:" + rater; }
  function load(rater) {
    try {
      var s = JSON.parse(localStorage.getItem(storeKey(rater)));
      return s && s.answers && s.answers.length === N ? s : null;
    } catch (e) { return null; }
  }
  function save() {
    localStorage.setItem(storeKey(state.rater), JSON.stringify(state));
    localStorage.setItem(CURRENT, state.rater);
  }
  function firstOpen(from) {
    for (var i = 0; i < N; i++) { var j = (from + i) % N; if (!state.answers[j]) return j; }
    return -1;
  }
  function answered() { return state.answers.filter(Boolean).length; }

  function begin(rater) {
    state = load(rater) || {rater: rater, pos: 0, answers: new Array(N).fill(null)};
    save();
    if (state.pos < 0 || state.pos >= N) state.pos = firstOpen(0);
    state.pos < 0 ? finish() : render();
  }

  function render() {
    var item = S.items[state.pos];
    show("trial");
    $("question").textContent = S.question.replace("{class_name}", item.class_name);
    $("img-original").src = item.original;
    $("img-left").src = item.left;
    $("img-right").src = item.right;
    $("bar").max = N;
    $("bar").value = answered();
    $("count").textContent = "Item " + (state.pos + 1) + " of " + N + " \u00b7 " + answered() + " answered";
    $("back").disabled = state.pos === 0;
    var next = S.items[state.pos + 1];
    if (next) [next.original, next.left, next.right].forEach(function (src) { new Image().src = src; });
    shownAt = performance.now();
  }

  function choose(choice) {
    if (!state || $("trial").hidden) return;
    state.answers[state.pos] = {choice: choice, ms: Math.round(performance.now() - shownAt)};
    var next = firstOpen(state.pos + 1 < N ? state.pos + 1 : 0);
    state.pos = next < 0 ? N : next;
    save();
    next < 0 ? finish() : render();
  }

  function back() {  // undo: the previous item again, its answer taken back
    if (!state || state.pos === 0) return;
    state.pos = Math.min(state.pos, N) - 1;
    state.answers[state.pos] = null;
    save();
    render();
  }

  function finish() {
    show("done");
    var missing = N - answered();
    $("done-text").textContent = missing ? missing + " item(s) are still open; you can go back to them."
      : "You answered every item. Please download your answers and send the file to the researcher.";
  }

  function download() {
    var answers = [];
    state.answers.forEach(function (a, i) { if (a) answers.push({item: i, choice: a.choice, ms: a.ms}); });
    var payload = {format: "camexp-study-answers/1", study_id: S.id, rater: state.rater, items: N,
                   complete: answers.length === N, saved: new Date().toISOString(), answers: answers};
    var blob = new Blob([JSON.stringify(payload, null, 1)], {type: "application/json"});
    var a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = "answers_" + state.rater + ".json";
    document.body.appendChild(a);
    a.click();
    setTimeout(function () { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
  }

  $("title").textContent = S.title;
  document.title = S.title;
  $("start-form").addEventListener("submit", function (e) {
    e.preventDefault();
    var rater = $("rater").value.trim();
    if (!/^[A-Za-z0-9_.-]{1,40}$/.test(rater)) {
      $("start-error").textContent = "Please type an id of letters, digits, - _ or . (at most 40).";
      return;
    }
    begin(rater);
  });
  CHOICES.forEach(function (c) { $("choose-" + c).addEventListener("click", function () { choose(c); }); });
  $("back").addEventListener("click", back);
  $("review").addEventListener("click", back);
  $("download").addEventListener("click", download);
  $("save-partial").addEventListener("click", download);
  $("next-rater").addEventListener("click", function () {
    localStorage.removeItem(CURRENT);
    state = null;
    $("rater").value = "";
    show("start");
    $("rater").focus();
  });
  document.addEventListener("keydown", function (e) {
    if ($("trial").hidden || e.altKey || e.ctrlKey || e.metaKey) return;
    var key = {ArrowLeft: "left", ArrowRight: "right", ArrowDown: "same", s: "same", S: "same"}[e.key];
    if (key) { e.preventDefault(); choose(key); } else if (e.key === "Backspace") { e.preventDefault(); back(); }
  });

  var current = localStorage.getItem(CURRENT);
  if (current && load(current)) { begin(current); } else { show("start"); $("rater").focus(); }
})();
