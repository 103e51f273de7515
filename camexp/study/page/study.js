/* The rater's side of a camexp study: one item at a time, every answer kept in localStorage as it is given
   (per study and rater), and a JSON file of the answers to download. The items come from items.js
   (window.CAMEXP_STUDY), which works from file:// and from any static host. Served by `camexp study serve`
   (api/plan answers), the page also takes the participant's own item order and sides from the server and
   sends each answer to it as it is given, re-sending until the server has acknowledged it.
   Input is ignored until the item's three images have loaded, and the response time starts then. */
(function () {
  "use strict";
  var S = window.CAMEXP_STUDY;
  var N = S.items.length;
  var PREFIX = "camexp-study:" + S.id + ":";
  var CURRENT = PREFIX + "current";
  var CHOICES = ["left", "same", "right"];
  var SWAP = {left: "right", right: "left", same: "same"};
  // state: {rater, served, pos, order: [item per position], flipped: [bool per item],
  //         answers: [null | {choice (as seen), ms, sent}] per item}
  var state = null;
  var shownAt = 0;
  var ready = false;  // the shown item's images have loaded: answers are taken
  var shownToken = 0;

  function $(id) { return document.getElementById(id); }
  function show(section) {
    ["start", "trial", "done"].forEach(function (s) { $(s).hidden = s !== section; });
  }
  function storeKey(rater) { return PREFIX + "rater:" + rater; }
  function load(rater) {
    try {
      var s = JSON.parse(localStorage.getItem(storeKey(rater)));
      return s && s.answers && s.answers.length === N && s.order && s.order.length === N ? s : null;
    } catch (e) { return null; }
  }
  function save() {
    localStorage.setItem(storeKey(state.rater), JSON.stringify(state));
    localStorage.setItem(CURRENT, state.rater);
  }
  function itemAt(pos) { return state.order[pos]; }
  function firstOpen(from) {
    for (var i = 0; i < N; i++) { var p = (from + i) % N; if (!state.answers[itemAt(p)]) return p; }
    return -1;
  }
  function answered() { return state.answers.filter(Boolean).length; }
  function unsent() { return state.answers.filter(function (a) { return a && !a.sent; }).length; }

  function identity() {  // the order items.js gives (practice items first), every side as items.js has it
    var order = [], flipped = [];
    for (var i = 0; i < N; i++) { order.push(S.order ? S.order[i] : i); flipped.push(false); }
    return {order: order, flipped: flipped};
  }

  // The server's plan for this participant, or null when the page is not served by `camexp study serve`.
  function fetchPlan(rater, done) {
    if (location.protocol === "file:" || !window.fetch) { done(null); return; }
    fetch("api/plan?participant=" + encodeURIComponent(rater), {cache: "no-store"})
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (p) { done(p && p.order && p.order.length === N ? p : null); })
      .catch(function () { done(null); });
  }

  function begin(rater) {
    fetchPlan(rater, function (plan) {
      var local = load(rater);
      var layout = plan || identity();
      state = local && local.served === !!plan ? local
        : {rater: rater, served: !!plan, pos: 0, order: layout.order, flipped: layout.flipped,
           answers: new Array(N).fill(null)};
      if (plan) {  // answers the server holds (given in another browser, or before the local storage was cleared)
        Object.keys(plan.answers).forEach(function (k) {
          if (!state.answers[k]) state.answers[k] = {choice: plan.answers[k][0], ms: plan.answers[k][1], sent: true};
        });
      }
      if (state.pos < 0 || state.pos >= N || state.answers[itemAt(state.pos)]) state.pos = firstOpen(0);
      save();
      sendPending();
      state.pos < 0 ? finish() : render();
    });
  }

  function render() {
    var item = S.items[itemAt(state.pos)];
    var flip = state.flipped[itemAt(state.pos)];
    show("trial");
    ready = false;
    setChoices(false);
    var token = ++shownToken;
    $("question").textContent = S.question.split("{class_name}").join(item.class_name);
    var imgs = [[$("img-original"), item.original], [$("img-left"), flip ? item.right : item.left],
                [$("img-right"), flip ? item.left : item.right]];
    var waiting = imgs.length;
    imgs.forEach(function (pair) {
      var img = pair[0];
      img.onload = img.onerror = null;
      img.removeAttribute("src");
      img.onload = function () { if (--waiting === 0 && token === shownToken) shown(); };
      img.onerror = img.onload;  // a missing image must not lock the page: it shows as broken, answers are taken
      img.src = pair[1];
    });
    $("bar").max = N;
    $("bar").value = answered();
    $("count").textContent = (item.practice ? "Practice \u00b7 " : "") + "Item " + (state.pos + 1) + " of " + N + " \u00b7 " + answered() + " answered" +
      (unsent() ? " \u00b7 " + unsent() + " not yet saved on the server" : "");
    $("who").textContent = "Participant: " + state.rater;
    $("back").disabled = state.pos === 0;
    if (state.pos + 1 < N) {
      var next = S.items[itemAt(state.pos + 1)];
      [next.original, next.left, next.right].forEach(function (src) { new Image().src = src; });
    }
  }

  function shown() {  // all three images are on screen: the clock starts, answers are taken
    ready = true;
    setChoices(true);
    shownAt = performance.now();
  }
  function setChoices(on) { CHOICES.forEach(function (c) { $("choose-" + c).disabled = !on; }); }

  function choose(choice) {
    if (!state || $("trial").hidden || !ready) return;
    ready = false;
    var item = itemAt(state.pos);
    state.answers[item] = {choice: choice, ms: Math.round(performance.now() - shownAt), sent: false};
    var next = firstOpen(state.pos + 1 < N ? state.pos + 1 : 0);
    state.pos = next < 0 ? N : next;
    save();
    send(item);
    next < 0 ? finish() : render();
  }

  function send(item) {
    var a = state.answers[item];
    if (!state.served || !a || a.sent) return;
    var rater = state.rater;
    fetch("api/answer", {method: "POST", headers: {"Content-Type": "application/json"},
                         body: JSON.stringify({participant: rater, item: item, choice: a.choice, ms: a.ms})})
      .then(function (r) {
        if (!r.ok || !state || state.rater !== rater || state.answers[item] !== a) return;
        a.sent = true;
        save();
      })
      .catch(function () {});
  }
  function sendPending() {
    if (state && state.served) state.answers.forEach(function (a, i) { if (a && !a.sent) send(i); });
  }

  function back() {  // undo: the previous item again, its answer taken back
    if (!state || state.pos === 0) return;
    state.pos = Math.min(state.pos, N) - 1;
    state.answers[itemAt(state.pos)] = null;
    save();
    render();
  }

  function finish() {
    show("done");
    var missing = N - answered();
    $("done-text").textContent = missing ? missing + " item(s) are still open; you can go back to them."
      : state.served ? "You answered every item. Thank you: your answers are saved; you can close the page."
      : "You answered every item. Please download your answers and send the file to the researcher.";
  }

  function download() {  // choices in the items.js layout (a served participant's swapped sides undone)
    var answers = [];
    state.answers.forEach(function (a, i) {
      if (a) answers.push({item: i, choice: state.flipped[i] ? SWAP[a.choice] : a.choice, ms: a.ms});
    });
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

  function startScreen() {
    state = null;
    $("resume").hidden = true;
    $("start-form").hidden = false;
    $("rater").value = "";
    show("start");
    $("rater").focus();
  }

  $("title").textContent = S.title;
  document.title = S.title;
  if (S.instructions) {
    var p = document.createElement("p");
    p.className = "plain-text";
    p.textContent = S.instructions;
    $("instructions").replaceChildren(p);
  }
  if (S.consent) {
    $("consent").textContent = S.consent;
    $("consent").className = "plain-text";
    $("consent-box").hidden = false;
  }
  $("start-form").addEventListener("submit", function (e) {
    e.preventDefault();
    var rater = $("rater").value.trim();
    if (!/^[A-Za-z0-9_.-]{1,40}$/.test(rater)) {
      $("start-error").textContent = "Please type an id of letters, digits, - _ or . (at most 40).";
      return;
    }
    if (S.consent && !$("agree").checked) {
      $("start-error").textContent = "Please tick \u201cI agree\u201d to take part.";
      return;
    }
    $("start-error").textContent = "";
    begin(rater);
  });
  CHOICES.forEach(function (c) { $("choose-" + c).addEventListener("click", function () { choose(c); }); });
  $("back").addEventListener("click", back);
  $("review").addEventListener("click", back);
  $("download").addEventListener("click", download);
  $("save-partial").addEventListener("click", download);
  $("next-rater").addEventListener("click", function () { localStorage.removeItem(CURRENT); startScreen(); });
  $("resume-yes").addEventListener("click", function () { begin(localStorage.getItem(CURRENT)); });
  $("resume-no").addEventListener("click", function () { localStorage.removeItem(CURRENT); startScreen(); });
  document.addEventListener("keydown", function (e) {
    if ($("trial").hidden || e.altKey || e.ctrlKey || e.metaKey) return;
    var key = {ArrowLeft: "left", ArrowRight: "right", ArrowDown: "same", s: "same", S: "same"}[e.key];
    if (key) { e.preventDefault(); if (!e.repeat) choose(key); }
    else if (e.key === "Backspace") { e.preventDefault(); if (!e.repeat) back(); }
  });
  setInterval(sendPending, 5000);

  // A previous participant's session is never resumed unasked: the next person at this computer says who they are.
  var current = localStorage.getItem(CURRENT);
  show("start");
  if (current && load(current)) {
    $("resume-text").textContent = "Continue as participant " + current + "? (" +
      load(current).answers.filter(Boolean).length + " of " + N + " answered)";
    $("resume").hidden = false;
    $("start-form").hidden = true;
    $("resume-yes").focus();
  } else {
    $("rater").focus();
  }
})();
