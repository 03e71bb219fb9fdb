"use strict";
// The rater's page: shows one trial at a time and sends left / right / tie. The server knows the
// rater from the cookie their link set; the page never learns which settings it shows.
const state = { rater: null, trial: null, busy: false, lastId: null, lastAt: 0, undoS: 30 };
const $ = (id) => document.getElementById(id);

async function post(path, body) {
  const res = await fetch(path, { method: "POST", headers: { "Content-Type": "application/json" },
                                  body: JSON.stringify(body), credentials: "same-origin" });
  const data = await res.json().catch(() => ({ error: "bad response" }));
  if (!res.ok) { const e = new Error(data.error || res.statusText); e.status = res.status; throw e; }
  return data;
}

// Retry through network failures (a restarting server); give up on 4xx answers.
async function persist(path, body) {
  for (let attempt = 0; ; attempt++) {
    try {
      const data = await post(path, body);
      $("status").textContent = "";
      return data;
    } catch (e) {
      if (e.status && e.status < 500) throw e;
      $("status").textContent = "server unreachable, retrying ...";
      await new Promise((r) => setTimeout(r, Math.min(2000, 250 * (attempt + 1))));
    }
  }
}

function progress(data) {
  document.body.dataset.done = String(data.done);
  $("progress").max = Math.max(data.target, 1);
  $("progress").value = Math.min(data.done, data.target);
  $("progress-text").textContent = `${data.done} / ${data.target} answers`;
}

function show(data) {
  state.trial = data.trial_id;
  document.body.dataset.trial = data.trial_id;
  $("caption").textContent = data.caption;
  $("question").textContent = data.question_text;
  $("left").src = data.left_image;
  $("right").src = data.right_image;
  progress(data);
}

// Small images are enlarged with hard pixel edges, large ones scaled smoothly.
function crisp(ev) {
  const img = ev.target;
  img.classList.toggle("pixelated", img.naturalWidth * 1.5 < img.clientWidth * devicePixelRatio);
}

async function next() {
  show(await persist("/api/next", {}));
}

async function answer(side) {
  if (state.busy || !state.trial) return;
  state.busy = true;
  try {
    const data = await persist("/api/answer", { trial_id: state.trial, answer: side });
    state.lastId = data.judgment_id;
    state.lastAt = Date.now();
    $("btn-undo").disabled = false;
    await next();
  } catch (e) {
    $("status").textContent = "not saved: " + e.message;
  } finally {
    state.busy = false;
  }
}

async function undo() {
  if (state.busy || !state.lastId || Date.now() - state.lastAt > state.undoS * 1000) return;
  state.busy = true;
  try {
    const data = await persist("/api/undo", { judgment_id: state.lastId });
    state.lastId = null;
    $("btn-undo").disabled = true;
    show(data);
    $("status").textContent = "last answer undone; answer it again";
  } catch (e) {
    $("status").textContent = "cannot undo: " + e.message;
  } finally {
    state.busy = false;
  }
}

// A click made by the keyboard (Enter or space on a focused button) has detail 0: ignored, so
// Enter never answers; the answer keys below do.
function onClick(action) {
  return (ev) => { if (ev.detail !== 0) { ev.currentTarget.blur(); action(); } };
}

const KEYS = { ArrowLeft: "left", "1": "left", a: "left", A: "left", ArrowDown: "tie", "2": "tie", " ": "tie",
               ArrowRight: "right", "3": "right", l: "right", L: "right" };

async function start() {
  if (matchMedia("(hover: none), (pointer: coarse)").matches || "ontouchstart" in window) {
    document.body.classList.add("touch");  // no key hints on phones and tablets
  }
  const res = await fetch("/api/config", { credentials: "same-origin" });
  if (!res.ok) { $("nolink").classList.remove("hidden"); return; }
  const config = await res.json();
  state.rater = config.rater;
  state.undoS = config.undo_s;
  $("rater").textContent = config.rater;
  $("judge").classList.remove("hidden");
  setInterval(() => {
    if (state.lastId && Date.now() - state.lastAt > state.undoS * 1000) $("btn-undo").disabled = true;
  }, 1000);
  for (const id of ["left", "right"]) {
    $(id).addEventListener("load", crisp);
    $(id).addEventListener("click", onClick(() => answer(id)));
  }
  $("btn-left").addEventListener("click", onClick(() => answer("left")));
  $("btn-right").addEventListener("click", onClick(() => answer("right")));
  $("btn-tie").addEventListener("click", onClick(() => answer("tie")));
  $("btn-undo").addEventListener("click", onClick(undo));
  document.addEventListener("keydown", (ev) => {
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    if (ev.key === "Enter") { ev.preventDefault(); return; }
    if (ev.key in KEYS) { ev.preventDefault(); answer(KEYS[ev.key]); }
    else if (ev.key === "Backspace" || ev.key === "u" || ev.key === "U") { ev.preventDefault(); undo(); }
  });
  await next();
}

start();
