// ComfyUI-Flipbook editors: geometry and serialisation, no DOM (node --test tests/js runs it).
//
// Conventions of the pack (pipelines/coords.py): points are image pixels, x right, y down, pixel i's
// centre at i, so the image spans -0.5 .. W-0.5. Node widgets hold the values exactly as the Python
// side parses them: points_json / edges_json / root (pipelines/keypoints.py skeleton_from_json),
// control_json (pipelines/bezier.py parse_control_json), targets_json (a list of [x, y] targets).

// --- image <-> canvas ----------------------------------------------------------------------------

/** The letterboxed place of a W x H image inside a box: {scale, ox, oy, w, h} (display px). */
export function fitView(imgW, imgH, boxW, boxH) {
  const w = Math.max(1, imgW), h = Math.max(1, imgH);
  const scale = Math.max(1e-6, Math.min(boxW / w, boxH / h));
  return { scale, ox: (boxW - w * scale) / 2, oy: (boxH - h * scale) / 2, w: imgW, h: imgH };
}

/** Image pixel -> display position (pixel centres at (i + 0.5) * scale). */
export function toCanvas(view, p) {
  return [view.ox + (p[0] + 0.5) * view.scale, view.oy + (p[1] + 0.5) * view.scale];
}

/** Display position -> image pixel (inverse of toCanvas), not clamped. */
export function toImage(view, c) {
  return [(c[0] - view.ox) / view.scale - 0.5, (c[1] - view.oy) / view.scale - 0.5];
}

/** A point moved onto the canvas's pixel centres 0..W-1, 0..H-1 (coords.clamp_to_canvas). */
export function clampToImage(p, w, h) {
  return [Math.min(Math.max(p[0], 0), Math.max(w - 1, 0)), Math.min(Math.max(p[1], 0), Math.max(h - 1, 0))];
}

/** Rounded for the widget text: 0.1 px is finer than a mouse and keeps the JSON short. */
export function roundPx(v) {
  return Math.round(v * 10) / 10;
}

/** Index of the nearest point within `radius` display px of display position `c`, else -1. */
export function hitTest(points, view, c, radius = 8) {
  let best = -1, bestD = radius * radius;
  points.forEach((p, i) => {
    if (!p) return;
    const q = toCanvas(view, p);
    const d = (q[0] - c[0]) ** 2 + (q[1] - c[1]) ** 2;
    if (d <= bestD) { best = i; bestD = d; }
  });
  return best;
}

// --- keypoints: parse and write what skeleton_from_json reads -------------------------------------

function parseText(name, text) {
  if (text === undefined || text === null) return null;
  if (typeof text !== "string") return text;
  const t = text.trim();
  if (!t) return null;
  try {
    return JSON.parse(t);
  } catch (err) {
    throw new Error(`${name}: expected JSON, got a parse error: ${err.message}`);
  }
}

function isPair(p) {
  return Array.isArray(p) && p.length === 2 && p.every((v) => typeof v === "number" && Number.isFinite(v));
}

/**
 * The keypoint widgets as a model {points, edges, root, names, form, implicitEdges}.
 * canvas [H, W]: only used for `normalized` points (0..1, align_corners like coords.unit_to_pixel).
 * edges_json empty: edges are the minimum spanning tree (implicitEdges true), as Python does.
 */
export function readKeypoints(pointsJson, edgesJson, root = -1, { normalized = false, canvas = null } = {}) {
  let data = parseText("points_json", pointsJson);
  let edges = parseText("edges_json", edgesJson);
  let names = null, form = "list";
  if (data && !Array.isArray(data) && typeof data === "object") {
    if (!Array.isArray(data.points)) throw new Error('points_json: expected an object with a "points" list');
    form = "object";
    if (edges === null && Array.isArray(data.edges)) edges = data.edges;
    names = Array.isArray(data.names) ? [...data.names] : null;
    if (root < 0 && Number.isInteger(data.root)) root = data.root;
    data = data.points;
  }
  data = data ?? [];
  if (!Array.isArray(data) || !data.every(isPair)) throw new Error("points_json: expected a list of [x, y] number pairs");
  let points = data.map((p) => [p[0], p[1]]);
  if (normalized && canvas) {
    const [h, w] = canvas;
    points = points.map(([x, y]) => [x * Math.max(w - 1, 1), y * Math.max(h - 1, 1)]);
  }
  const implicitEdges = edges === null || (Array.isArray(edges) && edges.length === 0);
  if (implicitEdges) edges = minimumSpanningEdges(points);
  else {
    if (!Array.isArray(edges) || !edges.every((e) => Array.isArray(e) && e.length === 2 && e.every(Number.isInteger)))
      throw new Error("edges_json: expected a list of [i, j] index pairs");
    if (edges.some((e) => e.some((i) => i < 0 || i >= points.length)))
      throw new Error(`edges_json: expected indices between 0 and ${points.length - 1}`);
    edges = edges.map((e) => [e[0], e[1]]);
  }
  return { points, edges, root: Number.isInteger(root) && root < points.length ? root : -1, names, form,
           normalized: !!(normalized && canvas), implicitEdges };
}

/** The model as widget values {points_json, edges_json, root} that skeleton_from_json reads back. */
export function writeKeypoints(model, { canvas = null } = {}) {
  let pts = model.points.map((p) => [roundPx(p[0]), roundPx(p[1])]);
  if (model.normalized && canvas) {
    const [h, w] = canvas;
    pts = model.points.map(([x, y]) => [x / Math.max(w - 1, 1), y / Math.max(h - 1, 1)].map((v) => Math.round(v * 1e5) / 1e5));
  }
  const pointsValue = model.form === "object" || model.names
    ? { points: pts, ...(model.names ? { names: model.names } : {}) }
    : pts;
  return {
    points_json: JSON.stringify(pointsValue),
    edges_json: model.implicitEdges ? "" : JSON.stringify(model.edges),
    root: model.root,
  };
}

/** Euclidean minimum spanning tree (Prim), the bones Python makes when none are given. */
export function minimumSpanningEdges(points) {
  const n = points.length;
  if (n < 2) return [];
  const inTree = new Array(n).fill(false), best = new Array(n).fill(Infinity), from = new Array(n).fill(-1);
  const out = [];
  best[0] = 0;
  for (let k = 0; k < n; k++) {
    let u = -1;
    for (let i = 0; i < n; i++) if (!inTree[i] && (u < 0 || best[i] < best[u])) u = i;
    inTree[u] = true;
    if (from[u] >= 0) out.push([Math.min(from[u], u), Math.max(from[u], u)]);
    for (let v = 0; v < n; v++) {
      if (inTree[v]) continue;
      const d = Math.hypot(points[u][0] - points[v][0], points[u][1] - points[v][1]);
      if (d < best[v]) { best[v] = d; from[v] = u; }
    }
  }
  return out;
}

// --- keypoint edits (each returns a new model; the old one goes on the undo stack) ----------------

function copyModel(m) {
  return { ...m, points: m.points.map((p) => [...p]), edges: m.edges.map((e) => [...e]),
           names: m.names ? [...m.names] : null };
}

export function addPoint(model, p) {
  const m = copyModel(model);
  m.points.push([p[0], p[1]]);
  if (m.names) m.names.push(`p${m.points.length - 1}`);
  if (m.implicitEdges) m.edges = minimumSpanningEdges(m.points);
  return m;
}

export function movePoint(model, i, p) {
  const m = copyModel(model);
  m.points[i] = [p[0], p[1]];
  return m;
}

/** Delete point i: its bones go, higher indices move down by one, the root follows (or becomes -1). */
export function deletePoint(model, i) {
  const m = copyModel(model);
  if (i < 0 || i >= m.points.length) return m;
  m.points.splice(i, 1);
  if (m.names) m.names.splice(i, 1);
  if (m.implicitEdges) m.edges = minimumSpanningEdges(m.points);
  else m.edges = m.edges.filter((e) => e[0] !== i && e[1] !== i).map((e) => e.map((j) => (j > i ? j - 1 : j)));
  m.root = m.root === i ? -1 : m.root > i ? m.root - 1 : m.root;
  return m;
}

/** Add the bone i-j, or remove it when it is there (either direction). Bones become explicit. */
export function toggleBone(model, i, j) {
  const m = copyModel(model);
  if (i === j || i < 0 || j < 0 || i >= m.points.length || j >= m.points.length) return m;
  const k = m.edges.findIndex((e) => (e[0] === i && e[1] === j) || (e[0] === j && e[1] === i));
  if (k >= 0) m.edges.splice(k, 1);
  else m.edges.push([i, j]);
  m.implicitEdges = false;
  return m;
}

export function setRoot(model, i) {
  const m = copyModel(model);
  m.root = i >= 0 && i < m.points.length ? i : -1;
  return m;
}

// --- undo / redo --------------------------------------------------------------------------------

/** Snapshots of a value; push() after each edit, undo()/redo() return the value to show. */
export class History {
  constructor(initial, limit = 100) {
    this.stack = [structuredClone(initial)];
    this.index = 0;
    this.limit = limit;
  }
  get current() { return structuredClone(this.stack[this.index]); }
  push(value) {
    const snap = structuredClone(value);
    if (JSON.stringify(snap) === JSON.stringify(this.stack[this.index])) return false;
    this.stack = this.stack.slice(0, this.index + 1);
    this.stack.push(snap);
    if (this.stack.length > this.limit) this.stack.shift();
    this.index = this.stack.length - 1;
    return true;
  }
  canUndo() { return this.index > 0; }
  canRedo() { return this.index < this.stack.length - 1; }
  undo() { if (this.canUndo()) this.index--; return this.current; }
  redo() { if (this.canRedo()) this.index++; return this.current; }
  /** Start over from `value` without history (e.g. the widget text was edited by hand). */
  reset(value) { this.stack = [structuredClone(value)]; this.index = 0; }
}

// --- bone tree, as pipelines/skeleton.py computes it --------------------------------------------

/** Breadth-first (depth, parent) of every joint from root; neighbours visited in edge order. */
export function boneTree(n, edges, root) {
  const adj = Array.from({ length: n }, () => []);
  for (const [a, b] of edges) { adj[a].push(b); adj[b].push(a); }
  const depth = new Array(n).fill(-1), parent = new Array(n).fill(-1);
  if (root < 0 || root >= n) return { depth, parent };
  depth[root] = 0;
  const queue = [root];
  while (queue.length) {
    const i = queue.shift();
    for (const j of adj[i]) if (depth[j] < 0) { depth[j] = depth[i] + 1; parent[j] = i; queue.push(j); }
  }
  return { depth, parent };
}

/** The joint of smallest eccentricity (skeleton.graph_centre): the root when none is given. */
export function graphCentre(n, edges) {
  let best = 0, bestEcc = Infinity;
  for (let r = 0; r < n; r++) {
    const { depth } = boneTree(n, edges, r);
    const ecc = Math.min(...depth) < 0 ? Math.max(...depth) + 1 : Math.max(...depth);
    if (ecc < bestEcc) { best = r; bestEcc = ecc; }
  }
  return best;
}

/** The root Python uses: the given one, else the graph centre. */
export function effectiveRoot(model) {
  return model.root >= 0 && model.root < model.points.length ? model.root : graphCentre(model.points.length, model.edges);
}

// --- Bezier (pipelines/bezier.py) ---------------------------------------------------------------

export const PRESETS = ["still", "sway", "wave", "random"];
export const LOOP_MODES = ["loop", "ping-pong", "once", "aniclipart"];

/** Point of the cubic with control [c0, c1, c2, c3] at u. */
export function bezierPoint(c, u) {
  const v = 1 - u;
  const a = v * v * v, b = 3 * v * v * u, d = 3 * v * u * u, e = u * u * u;
  return [a * c[0][0] + b * c[1][0] + d * c[2][0] + e * c[3][0], a * c[0][1] + b * c[1][1] + d * c[2][1] + e * c[3][1]];
}

/** Curve parameter of every frame, bezier.frame_times. */
export function frameTimes(n, loop = "loop", cycles = 1) {
  const frac = (x) => x - Math.floor(x);
  const t = Array.from({ length: n }, (_, i) => i);
  if (loop === "once") return t.map((i) => i / Math.max(n - 1, 1));
  if (loop === "loop") return t.map((i) => frac((i * cycles) / n));
  if (loop === "ping-pong") return t.map((i) => 1 - Math.abs(1 - 2 * frac((i * cycles) / n)));
  const s = Math.floor(n / (2 * cycles));
  if (s < 1) return new Array(n).fill(0);
  const poses = s > 1 ? Array.from({ length: s }, (_, i) => i / (s - 1)) : [0];
  const one = [...poses, ...[...poses].reverse()];
  const u = [];
  for (let c = 0; c < cycles; c++) u.push(...one);
  while (u.length < n) u.push(0);
  return u.slice(0, Math.max(n, 0));
}

function boneNormals(points, parent) {
  return points.map((p, i) => {
    let d;
    if (parent[i] >= 0) d = [p[0] - points[parent[i]][0], p[1] - points[parent[i]][1]];
    else {
      const kid = parent.findIndex((q) => q === i);
      d = kid >= 0 ? [points[kid][0] - p[0], points[kid][1] - p[1]] : [0, 1];
    }
    const nrm = [-d[1], d[0]];
    const len = Math.max(Math.hypot(nrm[0], nrm[1]), 1e-9);
    return [nrm[0] / len, nrm[1] / len];
  });
}

/**
 * Control points [K][4][2] of a weight-free preset (bezier.preset_control) for still / sway / wave;
 * canvas [H, W]. "random" draws from torch's generator, which only the server has: null here
 * (the preview route answers the preset's control points).
 */
export function presetControl(model, preset, amplitude, canvas) {
  const pts = model.points;
  const n = pts.length;
  const ctrl = pts.map((p) => [[...p], [...p], [...p], [...p]]);
  if (preset === "still" || n === 0) return ctrl;
  if (preset === "random") return null;
  const root = effectiveRoot(model);
  const { depth: d0, parent } = boneTree(n, model.edges, root);
  const m = Math.max(...d0);
  const depth = d0.map((d) => (d >= 0 ? d : m + 1));
  const maxDepth = Math.max(Math.max(...depth), 1);
  const a = amplitude * Math.max(canvas[0], canvas[1]);
  const normals = boneNormals(pts, parent);
  for (let i = 0; i < n; i++) {
    const s = depth[i] / maxDepth;
    const [dx, dy] = normals[i];
    if (preset === "sway") {
      for (const k of [1, 2]) { ctrl[i][k][0] += a * s * dx; ctrl[i][k][1] += a * s * dy; }
    } else if (preset === "wave") {
      const sigma = 1 - 2 * (depth[i] % 2);
      ctrl[i][1][0] += 2 * sigma * a * s * dx; ctrl[i][1][1] += 2 * sigma * a * s * dy;
      ctrl[i][2][0] -= 2 * sigma * a * s * dx; ctrl[i][2][1] -= 2 * sigma * a * s * dy;
    }
  }
  return ctrl;
}

/**
 * control_json over a base (the preset's control [K][4][2]): entries [[x1,y1],[x2,y2],[x3,y3]] in px
 * or null (keep the base), or {"relative": true, "control": [...]} offsets from the keypoint.
 * Returns {control [K][4][2], edited [K] booleans, relative}; c0 is always the keypoint.
 */
export function readControl(text, points, base) {
  const data0 = parseText("control_json", text);
  const control = base.map((c, i) => [[...points[i]], [...c[1]], [...c[2]], [...c[3]]]);
  const edited = new Array(points.length).fill(false);
  if (data0 === null) return { control, edited, relative: true };
  let data = data0, relative = false;
  if (!Array.isArray(data) && typeof data === "object") { relative = !!data.relative; data = data.control; }
  if (!Array.isArray(data)) throw new Error("control_json: expected a list, one entry per keypoint");
  data.forEach((entry, i) => {
    if (entry === null || i >= points.length) return;
    if (!Array.isArray(entry) || entry.length !== 3 || !entry.every(isPair)) throw new Error(`control_json[${i}]: expected three [x, y] points`);
    for (let k = 0; k < 3; k++) {
      control[i][k + 1] = relative ? [entry[k][0] + points[i][0], entry[k][1] + points[i][1]] : [entry[k][0], entry[k][1]];
    }
    edited[i] = true;
  });
  return { control, edited, relative };
}

/**
 * control_json for the keypoints the user edited (others null: they keep the preset, so changing
 * the preset still moves them). Relative offsets, so a curve follows its keypoint when it moves.
 * Nothing edited: "" (the preset alone).
 */
export function writeControl(control, edited, points) {
  if (!edited.some(Boolean)) return "";
  const entries = control.map((c, i) => (edited[i]
    ? [1, 2, 3].map((k) => [roundPx(c[k][0] - points[i][0]), roundPx(c[k][1] - points[i][1])])
    : null));
  return JSON.stringify({ relative: true, control: entries });
}

/** control_json entries resized to K keypoints (a keypoint added or deleted upstream). */
export function resizeControlJson(text, k) {
  const data0 = parseText("control_json", text);
  if (data0 === null) return text ?? "";
  const obj = !Array.isArray(data0) && typeof data0 === "object";
  const list = obj ? data0.control : data0;
  if (!Array.isArray(list) || list.length === k) return text;
  const out = list.slice(0, k);
  while (out.length < k) out.push(null);
  return JSON.stringify(obj ? { ...data0, control: out } : out);
}

/** Keypoint positions of every frame [T][K][2], clamped to the canvas (Trajectory.frames). */
export function trajectoryFrames(control, nFrames, loop, cycles, canvas) {
  const [h, w] = canvas;
  return frameTimes(nFrames, loop, cycles).map((u) => control.map((c) => clampToImage(bezierPoint(c, u), w, h)));
}

// --- warp targets (CPAB Keypoint Warp / Fit targets_json) ----------------------------------------

/** targets_json: a list of [x, y] (or null: stays at its source) for K source points. */
export function readTargets(text, sources) {
  const data = parseText("targets_json", text);
  const out = sources.map((p) => [...p]);
  if (data === null) return out;
  if (!Array.isArray(data)) throw new Error("targets_json: expected a list of [x, y] points");
  data.forEach((t, i) => { if (i < out.length && isPair(t)) out[i] = [t[0], t[1]]; });
  return out;
}

export function writeTargets(targets) {
  return JSON.stringify(targets.map((p) => [roundPx(p[0]), roundPx(p[1])]));
}
