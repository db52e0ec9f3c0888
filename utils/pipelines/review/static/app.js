// Hip keypoint review page: plain JS, one canvas, no build step (docs/review_app.md).
// Coordinates are image pixels with pixel centres on integers (docs/clinical_definitions.md);
// the geometry below mirrors utils/hip_geometry.py (hip_frames, hip_lines) so the AI and
// IHDI update live while a point moves; the server recomputes them on every save.
"use strict";

const COLORS = { h_line: "#ffd400", p_line: "#00e5ff", d_line: "#ff4fd8", roof: "#ff9900",
                 ann: "#3ddc4a", pred: "#ff4d4d", next: "#ffffff" };
const GRADE_NAMES = { 0: "ungradable", 1: "I", 2: "II", 3: "III", 4: "IV" };
const SIDES = ["left", "right"];
const EPS = 1e-9;

const S = {
  list: [], order: [], filter: "all", layout: null, hasPredictions: false,
  stem: null, detail: null, img: null, display: null,
  kps: null, savedKps: null, undo: [], drafts: {},
  view: { s: 1, ox: 0, oy: 0 }, drag: null, wl: { window: 255, level: 128 },
  showPred: true, busy: false, lastServer: null,
};

// ------------------------------------------------------------------ geometry
function sub(a, b) { return [a[0] - b[0], a[1] - b[1]]; }
function add(a, b) { return [a[0] + b[0], a[1] + b[1]]; }
function mul(a, k) { return [a[0] * k, a[1] * k]; }
function dot(a, b) { return a[0] * b[0] + a[1] * b[1]; }
function norm(a) { return Math.hypot(a[0], a[1]); }

function complete(kps) {
  return !!kps && kps.every(p => p && Number.isFinite(p[0]) && Number.isFinite(p[1]));
}

// utils.hip_geometry.hip_frames for one image: per side AI, IHDI grade, frame, validity
function hipFrames(kps, lay) {
  const tri = { left: kps[lay.triradiate.left], right: kps[lay.triradiate.right] };
  const hv = sub(tri.right, tri.left);
  const hl = norm(hv);
  const hOk = hl > EPS && Number.isFinite(hl);
  const hu = hOk ? mul(hv, 1 / hl) : [NaN, NaN];
  const inferior = [-hu[1], hu[0]];
  const out = { span: hl };
  for (const s of SIDES) {
    const lateral = s === "left" ? mul(hu, -1) : hu;
    const edge = kps[lay.lateral_edge[s]];
    const hidx = lay.hpoint[s];
    let hp = [0, 0];
    for (const i of hidx) hp = add(hp, kps[i]);
    hp = mul(hp, 1 / hidx.length);
    const roof = sub(edge, tri[s]);
    const roofLen = norm(roof);
    const ok = hOk && roofLen > EPS && Number.isFinite(roofLen) && Number.isFinite(hp[0]) && Number.isFinite(hp[1]);
    const d = dot(roof, lateral);
    const cross = roof[0] * lateral[1] - roof[1] * lateral[0];
    const ai = ok ? Math.atan2(Math.abs(cross), d) * 180 / Math.PI : NaN;
    const t = dot(sub(edge, tri[s]), lateral);
    const origin = add(tri[s], mul(lateral, t));
    const dv = sub(hp, origin);
    const x = dot(dv, lateral), y = dot(dv, inferior);
    const grade = !ok ? 0 : (y < 0 ? 4 : (x <= 0 ? 1 : (y >= x ? 2 : 3)));
    out[s] = { triradiate: tri[s], lateral_edge: edge, hpoint: hp, lateral, inferior, origin,
               ai_deg: ai, grade, valid: ok };
  }
  return out;
}

// utils.hip_geometry.hip_lines: segments to draw
function hipLines(kps, lay) {
  const f = hipFrames(kps, lay);
  const tl = f.left.triradiate, tr = f.right.triradiate;
  const span = norm(sub(tr, tl)), L = span / 2;
  const out = {};
  for (const s of SIDES) {
    const d = f[s];
    const h0 = mul(add(tl, tr), 0.5);
    const reach = Math.max(dot(sub(d.origin, d.triradiate), d.lateral), 0);
    const h1 = add(d.triradiate, mul(d.lateral, reach + 0.3 * span));
    const diag = mul(add(d.lateral, d.inferior), 1 / Math.SQRT2);
    out[s] = {
      h_line: [h0, h1],
      p_line: [sub(d.origin, mul(d.inferior, 0.5 * L)), add(d.origin, mul(d.inferior, L))],
      d_line: [d.origin, add(d.origin, mul(diag, L))],
      roof: [d.triradiate, d.lateral_edge],
    };
  }
  return { frames: f, lines: out };
}

// ------------------------------------------------------------------ API
async function api(method, path, body) {
  const opt = { method, headers: {} };
  if (body !== undefined) { opt.body = JSON.stringify(body); opt.headers["Content-Type"] = "application/json"; }
  const r = await fetch(path, opt);
  let data = null;
  try { data = await r.json(); } catch (e) { data = null; }
  if (!r.ok) {
    const msg = data && data.detail ? (typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail)) : r.statusText;
    throw new Error(`${r.status}: ${msg}`);
  }
  return data;
}

function setStatus(text, error) {
  const el = document.getElementById("status");
  el.textContent = text;
  el.className = error ? "error" : "";
}

// ------------------------------------------------------------------ list
async function loadList() {
  const data = await api("GET", "/api/images");
  S.list = data.images;
  S.layout = data.layout;
  S.hasPredictions = data.has_predictions;
  const worst = document.querySelector('#filter option[value="worst"]');
  worst.disabled = !S.hasPredictions;
  renderList();
}

function filtered() {
  let items = S.list.slice();
  if (S.filter === "unannotated") items = items.filter(it => !it.annotated);
  else if (S.filter === "flagged") items = items.filter(it => it.flagged);
  else if (S.filter === "worst") {
    items = items.filter(it => it.has_prediction);
    items.sort((a, b) => (b.error_px ?? -1) - (a.error_px ?? -1));
  }
  return items;
}

function renderList() {
  const ul = document.getElementById("image-list");
  ul.innerHTML = "";
  const items = filtered();
  S.order = items.map(it => it.stem);
  for (const it of items) {
    const li = document.createElement("li");
    li.dataset.stem = it.stem;
    if (it.stem === S.stem) li.classList.add("current");
    const mark = it.status === "annotated" ? "\u2713" : (it.status === "error" ? "!" : "\u25cb");
    const parts = [`<span class="badge" title="${it.status}">${mark}</span>`,
                   `<span class="stem">${escapeHtml(it.stem)}</span>`];
    if (it.flagged) parts.push('<span class="badge flag" title="flagged by the plausibility gate">\u2691</span>');
    if (it.error_px != null) parts.push(`<span class="badge" title="mean error, px">${it.error_px.toFixed(1)}</span>`);
    if (S.drafts[it.stem] || (it.stem === S.stem && isDirty())) parts.push('<span class="badge unsaved" title="unsaved changes">\u25cf</span>');
    li.innerHTML = parts.join("");
    li.addEventListener("click", () => openImage(it.stem));
    ul.appendChild(li);
  }
  const n = S.list.length, a = S.list.filter(it => it.annotated).length, fl = S.list.filter(it => it.flagged).length;
  document.getElementById("counts").textContent = `${n} images, ${a} annotated, ${fl} flagged; showing ${items.length}`;
}

function escapeHtml(s) {
  return s.replace(/[&<>"']/g, c => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

// ------------------------------------------------------------------ image
function layoutOf(d) {
  return { triradiate: d.triradiate, lateral_edge: d.lateral_edge, hpoint: d.hpoint, n: d.num_points };
}

async function openImage(stem) {
  if (S.stem && isDirty()) S.drafts[S.stem] = { kps: clone(S.kps), undo: S.undo };
  else if (S.stem) delete S.drafts[S.stem];
  const d = await api("GET", `/api/images/${encodeURIComponent(stem)}`);
  S.stem = stem;
  S.detail = d;
  S.savedKps = d.keypoints ? clone(d.keypoints) : null;
  const draft = S.drafts[stem];
  S.kps = draft ? clone(draft.kps) : (d.keypoints ? clone(d.keypoints) : new Array(d.num_points).fill(null));
  S.undo = draft ? draft.undo : [];
  S.lastServer = d.measures;
  document.getElementById("title").textContent = `${stem} (${d.width}\u00d7${d.height}, ${d.layout})`;
  document.getElementById("wl").hidden = !d.dicom;
  document.getElementById("prefill").disabled = !d.can_predict;
  const img = new Image();
  await new Promise((ok, fail) => {
    img.onload = ok;
    img.onerror = () => fail(new Error(`cannot load the image of ${stem}`));
    img.src = `/api/images/${encodeURIComponent(stem)}/image?t=${Date.now()}`;
  });
  S.img = img;
  S.wl = { window: 255, level: 128 };
  document.getElementById("window").value = 255;
  document.getElementById("level").value = 128;
  makeDisplay();
  fit();
  setStatus(d.problem ? d.problem : (d.box_problem ? d.box_problem : ""), !!(d.problem || d.box_problem));
  update();
}

// window/level on the 8-bit film the server rendered (for DICOMs)
function makeDisplay() {
  const c = document.createElement("canvas");
  c.width = S.img.naturalWidth;
  c.height = S.img.naturalHeight;
  const g = c.getContext("2d");
  g.drawImage(S.img, 0, 0);
  const { window: w, level: l } = S.wl;
  if (!(w === 255 && l === 128)) {
    const im = g.getImageData(0, 0, c.width, c.height);
    const lo = l - w / 2, k = 255 / Math.max(w, 1);
    const lut = new Uint8ClampedArray(256);
    for (let v = 0; v < 256; v++) lut[v] = Math.round((v - lo) * k);
    for (let i = 0; i < im.data.length; i += 4) {
      const v = lut[im.data[i]];
      im.data[i] = im.data[i + 1] = im.data[i + 2] = v;
    }
    g.putImageData(im, 0, 0);
  }
  S.display = c;
}

// ------------------------------------------------------------------ view
const canvas = document.getElementById("canvas");
const ctx = canvas.getContext("2d");

function resize() {
  const r = canvas.getBoundingClientRect();
  const dpr = window.devicePixelRatio || 1;
  canvas.width = Math.max(1, Math.round(r.width * dpr));
  canvas.height = Math.max(1, Math.round(r.height * dpr));
  draw();
}

function fit() {
  if (!S.img) return;
  const r = canvas.getBoundingClientRect();
  const s = Math.min(r.width / S.img.naturalWidth, r.height / S.img.naturalHeight) * 0.96;
  S.view = { s, ox: (r.width - S.img.naturalWidth * s) / 2, oy: (r.height - S.img.naturalHeight * s) / 2 };
  draw();
}

// image px (pixel centres on integers) <-> canvas CSS px
function toScreen(p) { return [(p[0] + 0.5) * S.view.s + S.view.ox, (p[1] + 0.5) * S.view.s + S.view.oy]; }
function toImage(q) { return [(q[0] - S.view.ox) / S.view.s - 0.5, (q[1] - S.view.oy) / S.view.s - 0.5]; }

function eventPos(e) {
  const r = canvas.getBoundingClientRect();
  return [e.clientX - r.left, e.clientY - r.top];
}

function draw() {
  const dpr = window.devicePixelRatio || 1;
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (!S.display) return;
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.imageSmoothingEnabled = S.view.s < 2;
  ctx.drawImage(S.display, S.view.ox, S.view.oy, S.img.naturalWidth * S.view.s, S.img.naturalHeight * S.view.s);
  const d = S.detail, lay = layoutOf(d);
  if (S.showPred && d.prediction && complete(d.prediction.keypoints)) drawSet(d.prediction.keypoints, lay, COLORS.pred, true);
  if (S.kps) {
    if (complete(S.kps)) drawLines(S.kps, lay, false);
    drawPoints(S.kps, COLORS.ann, false);
  }
}

function drawSet(kps, lay, color, dashed) {
  drawLines(kps, lay, dashed);
  drawPoints(kps, color, true);
}

function seg(a, b, color, dashed) {
  const p = toScreen(a), q = toScreen(b);
  ctx.strokeStyle = color;
  ctx.lineWidth = 1.5;
  ctx.setLineDash(dashed ? [5, 4] : []);
  ctx.beginPath(); ctx.moveTo(p[0], p[1]); ctx.lineTo(q[0], q[1]); ctx.stroke();
}

function drawLines(kps, lay, dashed) {
  const { lines } = hipLines(kps, lay);
  for (const s of SIDES) for (const name of ["h_line", "p_line", "d_line", "roof"]) {
    const [a, b] = lines[s][name];
    if ([a[0], a[1], b[0], b[1]].every(Number.isFinite)) seg(a, b, COLORS[name], dashed);
  }
  ctx.setLineDash([]);
}

function drawPoints(kps, color, hollow) {
  ctx.font = "11px system-ui, sans-serif";
  kps.forEach((p, i) => {
    if (!p) return;
    const q = toScreen(p);
    ctx.beginPath();
    ctx.arc(q[0], q[1], hollow ? 5 : 4, 0, 2 * Math.PI);
    if (hollow) { ctx.strokeStyle = color; ctx.lineWidth = 1.5; ctx.stroke(); }
    else { ctx.fillStyle = color; ctx.fill(); ctx.strokeStyle = "#000"; ctx.lineWidth = 1; ctx.stroke(); }
    if (!hollow) { ctx.fillStyle = "#fff"; ctx.fillText(String(i), q[0] + 6, q[1] - 5); }
  });
}

// ------------------------------------------------------------------ measures panel
function fmtAi(v) { return Number.isFinite(v) ? `${v.toFixed(1)}\u00b0` : "-"; }

function update() {
  const d = S.detail;
  if (!d) return;
  const lay = layoutOf(d);
  const live = complete(S.kps) ? hipFrames(S.kps, lay) : null;
  for (const s of SIDES) {
    document.getElementById(`ai-${s}`).textContent = live ? fmtAi(live[s].ai_deg) : "-";
    document.getElementById(`ihdi-${s}`).textContent = live ? GRADE_NAMES[live[s].grade] : "-";
    const pm = d.prediction && d.prediction.measures;
    document.getElementById(`pred-ai-${s}`).textContent = pm ? fmtAi(pm[s].ai_deg ?? NaN) : "-";
    document.getElementById(`pred-ihdi-${s}`).textContent = pm ? pm[s].ihdi_name : "-";
    const qc = d.qc ? d.qc[s] : null;
    const pqc = d.prediction_qc ? d.prediction_qc[s] : null;
    const parts = [];
    if (qc) parts.push(qc.length ? `annotation: ${qc.join(", ")}` : "annotation: ok");
    if (pqc) parts.push(pqc.length ? `prediction: ${pqc.join(", ")}` : "prediction: ok");
    document.getElementById(`qc-${s}`).textContent = parts.length ? parts.join("; ") : "-";
  }
  for (const tr of document.querySelectorAll("#measures tr.pred")) tr.hidden = !d.prediction;
  const next = S.kps ? S.kps.findIndex(p => !p) : -1;
  const prompt = document.getElementById("prompt");
  prompt.textContent = next >= 0 ? `Click to place point ${next + 1} of ${d.num_points}: ${pointName(d, next)}`
                                 : (complete(S.kps) ? "Drag a point to move it." : "");
  const dirty = isDirty();
  document.getElementById("dirty").hidden = !dirty;
  document.title = (dirty ? "* " : "") + `${S.stem} - hip keypoint review`;
  document.getElementById("save").disabled = !(dirty && complete(S.kps));
  document.getElementById("undo").disabled = S.undo.length === 0;
  if (dirty !== S.listDirty || S.listStem !== S.stem) { S.listDirty = dirty; S.listStem = S.stem; renderList(); }
  draw();
}

function pointName(d, i) {
  const [side, ...rest] = d.point_names[i].split(" ");
  return `image-${side} hip, ${rest.join(" ").replace(/_/g, " ")}`;
}

function clone(k) { return k ? k.map(p => (p ? [p[0], p[1]] : null)) : k; }

function isDirty() {
  if (!S.kps) return false;
  const a = JSON.stringify(S.kps);
  const b = JSON.stringify(S.savedKps || new Array(S.kps.length).fill(null));
  return a !== b;
}

function pushUndo() { S.undo.push(clone(S.kps)); if (S.undo.length > 200) S.undo.shift(); }

function undo() {
  if (!S.undo.length) return;
  S.kps = S.undo.pop();
  update();
}

// ------------------------------------------------------------------ saving, pre-fill
async function save() {
  if (S.busy || !complete(S.kps) || !isDirty()) return;
  S.busy = true;
  const stem = S.stem;
  const sent = clone(S.kps);
  try {
    const r = await api("PUT", `/api/images/${encodeURIComponent(stem)}/keypoints`, { keypoints: sent });
    if (S.stem === stem) {
      S.detail = r;
      S.savedKps = clone(r.keypoints);
      // the server stores 4 decimals; keep what it stored so the page matches the file
      if (JSON.stringify(S.kps) === JSON.stringify(sent)) S.kps = clone(r.keypoints);
      S.lastServer = r.measures;
    }
    delete S.drafts[stem];
    const m = r.measures;
    setStatus(`saved ${stem}` + (r.history_file ? ` (previous version kept as .history/${r.history_file})` : "")
              + (r.boxes_made ? "; hip boxes made from the keypoints" : "")
              + `\nserver: AI left ${fmtAi(m.left.ai_deg)} ${m.left.ihdi_name}, right ${fmtAi(m.right.ai_deg)} ${m.right.ihdi_name}`);
    const it = S.list.find(x => x.stem === stem);
    if (it) Object.assign(it, { status: r.status, annotated: r.annotated, flagged: r.flagged, qc: r.qc, error_px: r.error_px });
    renderList();
  } catch (e) {
    setStatus(`not saved: ${e.message}`, true);
  } finally {
    S.busy = false;
    update();
  }
}

async function prefill() {
  if (S.busy || !S.detail || !S.detail.can_predict) return;
  S.busy = true;
  const stem = S.stem;
  setStatus(`running the model on ${stem} ...`);
  try {
    const r = await api("POST", `/api/images/${encodeURIComponent(stem)}/predict`);
    if (S.stem !== stem) return;
    pushUndo();
    S.kps = r.keypoints.map(p => (p && Number.isFinite(p[0]) && Number.isFinite(p[1]) ? p : null));
    const gated = r.qc ? Object.entries(r.qc).filter(([, v]) => v.length).map(([s, v]) => `${s} hip ${v.join(", ")}`) : [];
    setStatus(`pre-filled by the model in ${r.seconds} s` + (r.missing_sides.length ? `; no box for the ${r.missing_sides.join(" and ")} hip: place those points` : "")
              + (gated.length ? `; ungradable (plausibility gate): ${gated.join("; ")}` : "")
              + "; correct the points, then save");
  } catch (e) {
    setStatus(`pre-fill failed: ${e.message}`, true);
  } finally {
    S.busy = false;
    update();
  }
}

function go(step) {
  if (!S.order.length) return;
  let i = S.order.indexOf(S.stem);
  i = i < 0 ? 0 : Math.min(Math.max(i + step, 0), S.order.length - 1);
  if (S.order[i] !== S.stem) openImage(S.order[i]).catch(e => setStatus(e.message, true));
}

// ------------------------------------------------------------------ mouse
function nearest(q) {
  let best = -1, bd = 9;                      // grab radius, CSS px
  (S.kps || []).forEach((p, i) => {
    if (!p) return;
    const s = toScreen(p);
    const d = Math.hypot(s[0] - q[0], s[1] - q[1]);
    if (d < bd) { bd = d; best = i; }
  });
  return best;
}

function inImage(p) {
  return p[0] >= -0.5 && p[1] >= -0.5 && p[0] <= S.img.naturalWidth - 0.5 && p[1] <= S.img.naturalHeight - 0.5;
}

function clampImage(p) {
  return [Math.min(Math.max(p[0], -0.5), S.img.naturalWidth - 0.5), Math.min(Math.max(p[1], -0.5), S.img.naturalHeight - 0.5)];
}

canvas.addEventListener("pointerdown", e => {
  if (!S.detail || !S.img) return;
  const q = eventPos(e);
  const i = e.button === 0 ? nearest(q) : -1;
  canvas.setPointerCapture(e.pointerId);
  if (i >= 0) {
    pushUndo();
    S.drag = { kind: "point", i, moved: false };
  } else {
    S.drag = { kind: "pan", start: q, ox: S.view.ox, oy: S.view.oy, moved: false };
  }
});

canvas.addEventListener("pointermove", e => {
  if (!S.drag) return;
  const q = eventPos(e);
  if (S.drag.kind === "point") {
    S.kps[S.drag.i] = clampImage(toImage(q));
    S.drag.moved = true;
    update();
  } else {
    const dx = q[0] - S.drag.start[0], dy = q[1] - S.drag.start[1];
    if (Math.hypot(dx, dy) > 3) S.drag.moved = true;
    S.view.ox = S.drag.ox + dx;
    S.view.oy = S.drag.oy + dy;
    draw();
  }
});

canvas.addEventListener("pointerup", e => {
  const d = S.drag;
  S.drag = null;
  if (!d) return;
  if (d.kind === "point" && d.moved) { update(); return; }
  if (d.kind === "point") S.undo.pop();         // a click on a point is no move
  if (!d.moved && e.button === 0) {            // a click: place the next missing point
    const next = S.kps.findIndex(p => !p);
    const p = toImage(eventPos(e));
    if (next >= 0 && inImage(p)) {
      pushUndo();
      S.kps[next] = [p[0], p[1]];
      update();
    }
  }
});

canvas.addEventListener("wheel", e => {
  if (!S.img) return;
  e.preventDefault();
  const q = eventPos(e);
  const k = Math.exp(-e.deltaY * 0.0015);
  const s = Math.min(Math.max(S.view.s * k, 0.05), 64);
  const p = toImage(q);
  S.view.s = s;
  S.view.ox = q[0] - (p[0] + 0.5) * s;
  S.view.oy = q[1] - (p[1] + 0.5) * s;
  draw();
}, { passive: false });

// ------------------------------------------------------------------ keys and controls
document.addEventListener("keydown", e => {
  if (e.target.tagName === "INPUT" || e.target.tagName === "SELECT") return;
  const k = e.key.toLowerCase();
  if ((e.ctrlKey || e.metaKey) && k === "s") { e.preventDefault(); save(); }
  else if ((e.ctrlKey || e.metaKey) && k === "z") { e.preventDefault(); undo(); }
  else if (e.ctrlKey || e.metaKey || e.altKey) return;
  else if (k === "arrowright" || k === "n") { e.preventDefault(); go(1); }
  else if (k === "arrowleft" || k === "p") { e.preventDefault(); go(-1); }
  else if (k === "z" || k === "u") undo();
  else if (k === "s") save();
  else if (k === "f") fit();
});

window.addEventListener("beforeunload", e => {
  if (isDirty() || Object.keys(S.drafts).length) { e.preventDefault(); e.returnValue = ""; }
});
new ResizeObserver(() => resize()).observe(document.getElementById("stage"));   // window or toolbar changes

document.getElementById("filter").addEventListener("change", e => { S.filter = e.target.value; renderList(); });
document.getElementById("prev").addEventListener("click", () => go(-1));
document.getElementById("next").addEventListener("click", () => go(1));
document.getElementById("undo").addEventListener("click", undo);
document.getElementById("save").addEventListener("click", save);
document.getElementById("prefill").addEventListener("click", prefill);
document.getElementById("fit").addEventListener("click", fit);
document.getElementById("show-pred").addEventListener("change", e => { S.showPred = e.target.checked; draw(); });
for (const id of ["window", "level"]) {
  document.getElementById(id).addEventListener("input", e => {
    S.wl[id] = Number(e.target.value);
    if (S.img) { makeDisplay(); draw(); }
  });
}

// for scripts and the browser test: the state, the geometry, and where a point is on screen
window.review = {
  state: S, hipFrames, hipLines, open: openImage, save,
  screenOf(i) { return toScreen(S.kps[i]); },
  imageOf(x, y) { return toImage([x, y]); },
  ready: false,
};

(async function start() {
  try {
    resize();
    await loadList();
    if (S.list.length) await openImage(S.list[0].stem);
    window.review.ready = true;
  } catch (e) {
    setStatus(e.message, true);
  }
})();
