// ComfyUI-Flipbook: editors on the picture with a live animated preview.
//
// Keypoints (JSON): click to add, drag to move, right-click or Delete to delete, Shift-drag (or the
// Bones tool) from one point to another to add/remove a bone, the Root tool (or R) marks the root.
// Bezier Trajectory: drag each keypoint's handles (orange squares; click a keypoint for its end
// handle), the node's preset is the start; a timeline scrubs and plays. CPAB Keypoint Warp / Fit:
// drag each keypoint to its target (right-click: back to its source). Ctrl+Z / Ctrl+Y are the graph's
// undo and redo (the editors follow); the ↶ ↷ buttons undo one editor's own edits. Values live in
// the node's own widgets (points_json, edges_json, root; control_json; targets_json): they save with
// the workflow, travel in the API prompt and stay editable as text (the editor follows the text). The
// preview comes from the pack's POST /flipbook/preview: one frame while dragging, the whole
// animation when the mouse rests.
import * as G from "./editor_geometry.js";
import { drawArrows, drawCurves, drawFrame, drawPicture, drawSkeleton } from "./editor_draw.js";

const comfy = globalThis.window?.comfyAPI;
const app = comfy?.app?.app;
const api = comfy?.api?.api;

export const EDITED_NODES = {
  FlipbookKeypointsFromJSON: "keypoints",
  FlipbookBezierTrajectory: "trajectory",
  FlipbookCPABKeypointWarp: "warp",
  FlipbookCPABFit: "warp",
};
const MIN_SIZE = [560, 300];      // the editor's least room in a node (px)
const EDITOR_HEIGHT = 300;
const CLIENT = Math.random().toString(36).slice(2);
const DEFAULT_CANVAS = [512, 512];

// --- the graph around a node ------------------------------------------------------------------

function widget(node, name) {
  return node?.widgets?.find((w) => w.name === name);
}

function value(node, name, fallback) {
  const w = widget(node, name);
  return w === undefined || w.value === undefined ? fallback : w.value;
}

function inputNode(node, name) {
  const slot = node?.inputs?.findIndex((i) => i.name === name) ?? -1;
  if (slot < 0 || node.inputs[slot].link == null) return null;
  try {
    return node.getInputNode(slot);
  } catch {
    return null;
  }
}

function outputNodes(node, slot = 0) {
  try {
    return node.getOutputNodes?.(slot) || [];
  } catch {
    return [];
  }
}

/** The picture of an IMAGE input: {url, request} for a Load Image file, else the node's last run. */
function pictureOf(node, input, holder) {
  const src = inputNode(node, input);
  if (src && (src.comfyClass || src.type) === "LoadImage") {
    let name = String(value(src, "image", "") || "");
    if (!name) return null;
    let type = "input";
    const m = name.match(/^(.*) \[(\w+)\]$/);
    if (m) { name = m[1]; type = m[2]; }
    const cut = name.lastIndexOf("/");
    const sub = cut >= 0 ? name.slice(0, cut) : "", file = cut >= 0 ? name.slice(cut + 1) : name;
    const url = api.apiURL(`/view?filename=${encodeURIComponent(file)}&type=${type}&subfolder=${encodeURIComponent(sub)}`);
    return { url, request: { image: String(value(src, "image", "")) } };
  }
  if (holder) return { url: null, request: { node: String(holder.id) } };
  return null;
}

/** The Keypoints (JSON) node feeding a skeleton input (its widgets are the keypoints). */
function keypointsSource(node, input) {
  const src = inputNode(node, input);
  return src && (src.comfyClass || src.type) === "FlipbookKeypointsFromJSON" ? src : null;
}

function keypointWidgets(kp) {
  return { points_json: value(kp, "points_json", ""), edges_json: value(kp, "edges_json", ""),
           root: value(kp, "root", -1), normalized: !!value(kp, "normalized", false) };
}

function trajectoryWidgets(tr) {
  if (!tr) return { preset: "wave", amplitude: 0.06, frames: 24, loop: "loop", cycles: 1, seed: 0, control_json: "" };
  return { preset: value(tr, "preset", "wave"), amplitude: value(tr, "amplitude", 0.06), frames: value(tr, "frames", 24),
           loop: value(tr, "loop", "loop"), cycles: value(tr, "cycles", 1), seed: Number(value(tr, "seed", 0)) || 0,
           control_json: value(tr, "control_json", "") || "" };
}

function setWidget(node, name, v) {
  const w = widget(node, name);
  if (!w || w.value === v) return false;
  w.value = v;
  try { w.callback?.(v, app.canvas, node); } catch (err) { console.warn("ComfyUI-Flipbook:", err); }
  return true;
}

function graphChanged(node) {
  node.setDirtyCanvas?.(true, true);
  app.graph?.setDirtyCanvas?.(true, true);
  const tracker = app.extensionManager?.workflow?.activeWorkflow?.changeTracker ?? app.workflowManager?.activeWorkflow?.changeTracker;
  try { tracker?.checkState?.(); } catch { /* an older frontend */ }
}

// --- live preview -----------------------------------------------------------------------------

class PreviewClient {
  constructor(client, onAnswer, onError) {
    this.client = client;           // one per editor: only its own newer requests supersede
    this.seq = 0;
    this.shown = -1;
    this.inFlight = null;
    this.pending = null;
    this.restTimer = null;
    this.onAnswer = onAnswer;
    this.onError = onError;
  }

  /** While dragging: one frame now (at most one request in flight, the newest waits), all frames at rest. */
  drag(body, frame) {
    this.pending = { ...body, frame, format: "png" };
    if (!this.inFlight) this.flush();
    this.rest(body);
  }

  rest(body, delay = 350) {
    clearTimeout(this.restTimer);
    this.restTimer = setTimeout(() => { this.pending = { ...body, format: "png" }; this.flush(true); }, delay);
  }

  async flush(supersede = false) {
    if (!this.pending) return;
    if (supersede && this.inFlight) this.inFlight.abort();
    const body = { ...this.pending, client: this.client, seq: ++this.seq };
    this.pending = null;
    const ctrl = new AbortController();
    this.inFlight = ctrl;
    try {
      const res = await api.fetchApi("/flipbook/preview", { method: "POST", body: JSON.stringify(body), signal: ctrl.signal,
                                                            headers: { "Content-Type": "application/json" } });
      const out = await res.json().catch(() => ({}));
      if (res.status === 409) return;                         // superseded by a newer request
      if (!res.ok) { if (body.seq > this.shown) this.onError(out.error || `preview: HTTP ${res.status}`); return; }
      if (body.seq > this.shown || out.frame == null) { this.shown = Math.max(this.shown, body.seq); this.onAnswer(out); }
    } catch (err) {
      if (err?.name !== "AbortError") this.onError(String(err));
    } finally {
      if (this.inFlight === ctrl) this.inFlight = null;
      if (this.pending) this.flush();
    }
  }

  stop() { clearTimeout(this.restTimer); this.inFlight?.abort(); this.pending = null; }
}

// --- one editor ---------------------------------------------------------------------------------

function button(label, title, onClick) {
  const b = document.createElement("button");
  b.textContent = label;
  b.title = title;
  b.style.cssText = "font:11px sans-serif;padding:1px 6px;margin-right:3px;background:#333;color:#ddd;border:1px solid #555;border-radius:3px;cursor:pointer";
  b.addEventListener("click", (e) => { e.stopPropagation(); onClick(b); });
  return b;
}

export class Editor {
  constructor(node, kind) {
    this.node = node;
    this.nodeClass = node.comfyClass || node.type;
    this.kind = kind;
    this.mode = "points";            // keypoints editor tools: points, bones, root
    this.hover = -1;
    this.selected = -1;
    this.drag = null;
    this.image = new Image();
    this.imageUrl = null;
    this.imageSize = null;
    this.frames = [];
    this.frameIndex = 0;
    this.playing = true;
    this.lastText = null;
    this.error = "";
    this.serverControl = null;       // the random preset's control points, from the preview route
    this.history = null;
    // one client id per editor instance: a reloaded graph reuses node ids, its editors start over
    this.preview = new PreviewClient(`${CLIENT}-${node.id}-${Math.random().toString(36).slice(2, 8)}`, (out) => this.onPreview(out), (msg) => {
      // a picture that is no Load Image file is kept by the server once the node has run
      this.error = msg.startsWith("node:") ? "no picture yet: run the workflow once (it is no Load Image file)" : msg;
      this.paint();
    });
    this.build();
    this.pictureCanvas = null;       // a server-held picture comes downscaled: its original size maps the points
    this.image.onload = () => {
      this.imageSize = this.pictureCanvas || [this.image.naturalHeight, this.image.naturalWidth];
      this.sync(true);
    };
    this.poll = setInterval(() => this.sync(false), 250);
    // the node holding the picture ran: ask for its (new) picture a moment later
    this.onExecuting = (e) => {
      const id = e?.detail?.node ?? e?.detail;
      if (this.heldNode != null && String(id) === String(this.heldNode)) {
        setTimeout(() => this.state?.picture?.request && this.fetchHeld(this.state.picture.request), 1500);
      }
    };
    api?.addEventListener?.("executing", this.onExecuting);
    this.player = setInterval(() => this.tick(), 1000 / 12);
  }

  build() {
    const root = document.createElement("div");
    root.className = "flipbook-editor";
    root.dataset.flipbookEditor = this.kind;
    root.style.cssText = "display:flex;flex-direction:column;width:100%;height:100%;box-sizing:border-box;gap:3px;min-height:0";
    const bar = document.createElement("div");
    bar.style.cssText = "display:flex;align-items:center;flex-wrap:wrap;min-height:20px;color:#bbb;font:11px sans-serif";
    if (this.kind === "keypoints") {
      this.tools = {};
      for (const [m, label, tip] of [["points", "Points", "Click: add; drag: move; right-click / Delete: delete"],
                                     ["bones", "Bones", "Drag from a point to another: add or remove that bone (also Shift-drag)"],
                                     ["root", "Root", "Click a point: it becomes the root (also R over a point)"]]) {
        this.tools[m] = bar.appendChild(button(label, tip, () => { this.mode = m; this.paintTools(); }));
      }
      bar.appendChild(button("Auto bones", "Empty edges_json: the minimum spanning tree (as the node does)", () => this.autoBones()));
    }
    if (this.kind === "trajectory") bar.appendChild(button("Reset curves", "Clear control_json: the preset alone", () => this.commitControl("")));
    if (this.kind === "warp") bar.appendChild(button("Reset targets", "Every target back at its source", () => this.commitTargets("")));
    bar.appendChild(button("↶", "Undo this editor's last edit (Ctrl+Z undoes the graph's)", () => this.undo()));
    bar.appendChild(button("↷", "Redo this editor's edit (Ctrl+Y redoes the graph's)", () => this.redo()));
    this.status = bar.appendChild(document.createElement("span"));
    this.status.style.cssText = "margin-left:4px;white-space:nowrap;overflow:hidden;text-overflow:ellipsis;flex:1";
    const row = document.createElement("div");
    row.style.cssText = "display:flex;flex:1;gap:4px;min-height:0";
    this.canvas = row.appendChild(document.createElement("canvas"));
    this.canvas.className = "flipbook-editor-canvas";
    this.canvas.tabIndex = 0;
    this.canvas.style.cssText = "flex:1 1 0;min-width:0;height:100%;outline:none;cursor:crosshair;touch-action:none";
    this.previewCanvas = row.appendChild(document.createElement("canvas"));
    this.previewCanvas.className = "flipbook-editor-preview";
    this.previewCanvas.style.cssText = "flex:1 1 0;min-width:0;height:100%";
    const time = document.createElement("div");
    time.style.cssText = "display:flex;align-items:center;gap:4px;color:#bbb;font:11px sans-serif";
    this.playButton = time.appendChild(button("❚❚", "Play / pause the preview", () => { this.playing = !this.playing; this.paintTools(); }));
    this.scrub = time.appendChild(document.createElement("input"));
    this.scrub.type = "range";
    this.scrub.min = "0";
    this.scrub.max = "0";
    this.scrub.value = "0";
    this.scrub.className = "flipbook-editor-timeline";
    this.scrub.style.cssText = "flex:1";
    this.scrub.addEventListener("input", () => { this.playing = false; this.frameIndex = Number(this.scrub.value); this.paintTools(); this.paint(); });
    this.frameLabel = time.appendChild(document.createElement("span"));
    root.append(bar, row, time);
    this.element = root;
    root.__flipbookEditor = this;
    // The editor's own pointer and key events stay here: the node must not be dragged, nor the
    // graph's shortcuts (Delete removes the node!) fire, while editing. Wheel events still zoom the graph.
    for (const type of ["pointerdown", "pointermove", "pointerup", "mousedown", "mousemove", "dblclick", "contextmenu", "click"]) {
      this.canvas.addEventListener(type, (e) => e.stopPropagation());
      this.scrub.addEventListener(type, (e) => e.stopPropagation());
    }
    this.canvas.addEventListener("contextmenu", (e) => e.preventDefault());
    this.canvas.addEventListener("pointerdown", (e) => this.onDown(e));
    this.canvas.addEventListener("pointermove", (e) => this.onMove(e));
    this.canvas.addEventListener("pointerup", (e) => this.onUp(e));
    this.canvas.addEventListener("pointerleave", () => { if (!this.drag) { this.hover = -1; this.paint(); } });
    this.canvas.addEventListener("keydown", (e) => this.onKey(e));
    this.resizer = new ResizeObserver(() => this.paint());
    this.resizer.observe(this.canvas);
    this.resizer.observe(this.previewCanvas);
    this.paintTools();
  }

  /**
   * The node left the graph. A graph reload (the graph's undo, a workflow tab) makes a new node with
   * the same id, and the Vue "Nodes 2.0" canvas may keep showing this editor's element instead of the
   * new node's: so this editor follows the new node while it is shown, and goes away when it is not.
   */
  orphan() {
    if (this.orphaned) return;
    this.nodeId = this.node.id;
    this.orphaned = Date.now();
    this.preview.stop();
  }

  adopt() {
    const cur = (this.graph || app.graph)?.getNodeById?.(this.nodeId);
    if (cur && cur !== this.node && (cur.comfyClass || cur.type) === this.nodeClass) {
      this.node = cur;
      this.graph = cur.graph || this.graph;
      this.orphaned = null;
      this.history = null;
      this.lastSig = null;
      return true;
    }
    if (Date.now() - this.orphaned > 3000 && !(this.element.isConnected && cur)) this.destroy();
    return false;
  }

  destroy() {
    this.destroyed = true;
    api?.removeEventListener?.("executing", this.onExecuting);
    clearInterval(this.poll);
    clearInterval(this.player);
    this.preview.stop();
    this.resizer?.disconnect();
  }

  paintTools() {
    for (const [m, b] of Object.entries(this.tools || {})) b.style.background = m === this.mode ? "#2d6a8a" : "#333";
    this.playButton.textContent = this.playing ? "❚❚" : "▶";
    this.frameLabel.textContent = this.frames.length ? `${this.frameIndex + 1}/${this.frames.length}` : "–";
  }

  // --- what the widgets say -------------------------------------------------------------------
  /** The state read from the widgets around the node: keypoints, picture, trajectory, targets. */
  read() {
    const node = this.node;
    const s = { error: "" };
    const kpNode = this.kind === "keypoints" ? node : keypointsSource(node, this.kind === "trajectory" ? "skeleton" : "source_keypoints");
    s.kpNode = kpNode;
    s.picture = this.kind === "keypoints" ? pictureOf(node, "image", node)
      : this.kind === "warp" && node.inputs?.some((i) => i.name === "image") ? pictureOf(node, "image", kpNode) : null;
    if (!s.picture && kpNode) s.picture = pictureOf(kpNode, "image", kpNode);
    s.canvas = this.imageSize || DEFAULT_CANVAS;
    if (!kpNode) {
      s.error = "connect Flipbook Keypoints (JSON) to edit here";
      return s;
    }
    s.kpw = keypointWidgets(kpNode);
    try {
      s.model = G.readKeypoints(s.kpw.points_json, s.kpw.edges_json, s.kpw.root, { normalized: s.kpw.normalized, canvas: s.canvas });
    } catch (err) {
      s.error = err.message;
      return s;
    }
    const trNode = this.kind === "trajectory" ? node : outputNodes(kpNode).find((n) => (n.comfyClass || n.type) === "FlipbookBezierTrajectory");
    s.trNode = trNode;
    s.tr = trajectoryWidgets(trNode);
    if (this.kind !== "warp") {
      let base = G.presetControl(s.model, s.tr.preset, s.tr.amplitude, s.canvas);
      if (!base) base = this.serverControl?.length === s.model.points.length ? this.serverControl : G.presetControl(s.model, "still", 0, s.canvas);
      try {
        Object.assign(s, G.readControl(s.tr.control_json, s.model.points, base));
      } catch (err) {
        s.error = err.message;
      }
    } else {
      const linked = ["target_keypoints", "trajectory"].filter((n) => node.inputs?.find((i) => i.name === n)?.link != null);
      if (linked.length) s.note = `${linked.join(" and ")} connected: the node uses that, not these targets`;
      s.sources = s.model.points;
      try {
        s.targets = G.readTargets(value(node, "targets_json", ""), s.sources);
      } catch (err) {
        s.error = err.message;
        s.targets = s.sources.map((p) => [...p]);
      }
    }
    return s;
  }

  /** The text of the widgets this editor writes (its undo unit). */
  ownText(s) {
    if (this.kind === "keypoints") return JSON.stringify([s.kpw?.points_json, s.kpw?.edges_json, s.kpw?.root]);
    if (this.kind === "trajectory") return value(this.node, "control_json", "") || "";
    return value(this.node, "targets_json", "") || "";
  }

  /** Follow the widgets (typed text, undo, a reloaded workflow, the upstream keypoints) and repaint. */
  sync(force) {
    if (this.drag || this.destroyed) return;
    this.graph = this.node.graph || this.graph;
    // the node left its graph (a reload; its onRemoved may have gone to another editor: see orphan)
    if (this.graph && this.graph.getNodeById?.(this.node.id) !== this.node) this.orphan();
    if (this.orphaned && !this.adopt()) return;
    // a stand-in for a reloaded node (see orphan) that is no longer shown: the node's own editor is
    if (this.node.__flipbookEditor !== this && !this.element.isConnected) {
      this.hiddenSince ??= Date.now();
      if (Date.now() - this.hiddenSince > 5000) { this.destroy(); return; }
    } else this.hiddenSince = null;
    const s = this.read();
    const picture = s.picture?.url || null;
    if (picture !== this.imageUrl) {
      this.imageUrl = picture;
      this.imageSize = null;
      this.pictureCanvas = null;
      if (picture) this.image.src = picture;
    }
    this.heldNode = !picture ? s.picture?.request?.node ?? null : null;
    if (this.heldNode && !this.imageSize && Date.now() - (this.heldAsked || 0) > 5000) this.fetchHeld(s.picture.request);
    const sig = JSON.stringify([s.kpw, s.tr, s.note, this.kind === "warp" ? value(this.node, "targets_json", "") : null,
                                s.picture?.request, this.kind === "warp" ? value(this.node, "frames", 16) : null, this.imageSize]);
    if (!force && sig === this.lastSig) return;
    this.lastSig = sig;
    this.state = s;
    const own = this.ownText(s);
    if (!this.history) this.history = new G.History(own);
    else if (own !== this.history.current) this.history.push(own);
    this.paint();
    if (!s.error) this.preview.rest(this.previewBody(s), force ? 50 : 200);
  }

  /** The picture the server keeps from the node's last run (no Load Image upstream). */
  async fetchHeld(request) {
    this.heldAsked = Date.now();
    try {
      const res = await api.fetchApi("/flipbook/preview", { method: "POST", headers: { "Content-Type": "application/json" },
                                                            body: JSON.stringify({ ...request, kind: "picture", max_side: 256 }) });
      if (!res.ok) return;                      // not run yet: the editor works on a blank canvas
      const out = await res.json();
      if (this.imageUrl || !out.png?.[0]) return;
      if (this.image.src !== out.png[0]) { this.pictureCanvas = out.canvas; this.image.src = out.png[0]; }
    } catch { /* offline: keep the blank canvas */ }
  }

  previewBody(s) {
    const kw = G.writeKeypoints({ ...s.model, normalized: false });      // pixels, as the request says
    const body = { ...(s.picture?.request || {}), points_json: kw.points_json, edges_json: kw.edges_json, root: kw.root,
                   normalized: false, max_side: 192 };
    if (!s.picture) body.node = String(s.kpNode?.id ?? "");
    if (this.kind === "warp") {
      return { ...body, kind: "cpab", targets_json: G.writeTargets(s.targets), frames: Math.min(Number(value(this.node, "frames", 16)) || 16, 24), max_side: 128 };
    }
    const cpab = this.kind === "trajectory" && outputNodes(this.node).some((n) => (n.comfyClass || n.type) === "FlipbookCPABKeypointWarp");
    const tr = s.tr;
    const control_json = s.control ? G.writeControl(s.control, s.edited, s.model.points) : tr.control_json;
    return { ...body, kind: cpab ? "cpab" : "clipart", preset: tr.preset, amplitude: tr.amplitude,
             frames: Math.min(Number(tr.frames) || 24, 48), loop: tr.loop, cycles: tr.cycles, seed: tr.seed, control_json,
             ...(cpab ? { max_side: 128 } : {}) };
  }

  onPreview(out) {
    this.error = "";
    if (!this.imageUrl && out.canvas && JSON.stringify(out.canvas) !== JSON.stringify(this.imageSize)) {
      this.imageSize = out.canvas;    // a node's picture held by the server: its size maps the points
      this.sync(true);
    }
    if (out.control && this.state?.tr?.preset === "random") {
      const had = !!this.serverControl;
      this.serverControl = out.control;
      if (!had) this.sync(true);
    }
    const imgs = (out.png || []).map((u) => { const im = new Image(); im.src = u; return im; });
    if (out.frame != null) {
      this.quick = { image: imgs[0], frame: out.frame, ms: out.ms };
    } else {
      this.quick = null;
      this.frames = imgs;
      this.track = out.track || null;
      this.frameIndex = Math.min(this.frameIndex, Math.max(imgs.length - 1, 0));
      this.scrub.max = String(Math.max(imgs.length - 1, 0));
      this.lastMs = out.ms;
    }
    const img = imgs[0];
    if (img && !img.complete) img.onload = () => this.paintPreview();
    this.paintTools();
    this.paint();
  }

  tick() {
    if (!this.playing || this.quick || this.frames.length < 2 || this.drag) return;
    if (!this.element.isConnected) return;
    this.frameIndex = (this.frameIndex + 1) % this.frames.length;
    this.scrub.value = String(this.frameIndex);
    this.paintTools();
    this.paintPreview();
    if (this.kind === "trajectory") this.paint();
  }

  // --- painting -------------------------------------------------------------------------------
  fitCanvas(c) {
    const r = c.getBoundingClientRect();
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(r.width * dpr)), h = Math.max(1, Math.round(r.height * dpr));
    if (c.width !== w || c.height !== h) { c.width = w; c.height = h; }
    return dpr;
  }

  view() {
    const dpr = this.fitCanvas(this.canvas);
    const [h, w] = this.state?.canvas || DEFAULT_CANVAS;
    return { ...G.fitView(w, h, this.canvas.width / dpr, this.canvas.height / dpr), dpr };
  }

  paint() {
    if (!this.canvas.isConnected) return;
    const v = this.view();
    const ctx = this.canvas.getContext("2d");
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    const s = this.state || {};
    ctx.save();
    ctx.scale(v.dpr, v.dpr);
    const note = s.error || (!this.imageUrl && !this.imageSize ? "no picture: connect Load Image (or run once)" : "");
    drawPicture(ctx, { ...v, ...{} }, this.imageSize ? this.image : null, s.error ? "" : note);
    const model = this.dragModel || s.model;
    if (model && this.kind === "keypoints") {
      const bone = this.drag?.type === "bone" && this.drag.to ? { from: this.drag.index, to: this.drag.to } : null;
      drawSkeleton(ctx, v, { points: model.points, edges: model.edges, root: G.effectiveRoot(model), selected: this.selected,
                             hover: this.hover, bonePreview: bone });
    } else if (model && this.kind === "trajectory") {
      drawSkeleton(ctx, v, { points: model.points, edges: model.edges, root: G.effectiveRoot(model), selected: this.selected,
                             dim: true, radius: 4 });
      const control = this.dragControl || s.control;
      if (control) {
        let now = null;
        if (this.frames.length && this.track?.[this.frameIndex]) now = this.track[this.frameIndex];
        drawCurves(ctx, v, { control, selected: this.selected, hoverHandle: this.hoverHandle, now, edited: this.dragEdited || s.edited });
      }
    } else if (model && this.kind === "warp") {
      drawSkeleton(ctx, v, { points: model.points, edges: model.edges, root: -1, labels: false, dim: true, radius: 3 });
      drawArrows(ctx, v, { sources: s.sources, targets: this.dragTargets || s.targets, hover: this.hover, selected: this.selected });
    }
    ctx.restore();
    this.status.textContent = s.error ? `⚠ ${s.error}` : this.error ? `⚠ ${this.error}` : this.statusText(s);
    this.status.style.color = s.error || this.error ? "#ff8a80" : "#bbb";
    this.paintPreview();
  }

  statusText(s) {
    const [h, w] = s.canvas || DEFAULT_CANVAS;
    const n = s.model?.points.length ?? 0;
    const ms = this.quick?.ms ?? this.lastMs;
    return `${s.note ? `${s.note} · ` : ""}${n} points · ${w}×${h}px${ms != null ? ` · preview ${Math.round(ms)} ms` : ""}`;
  }

  paintPreview() {
    if (!this.previewCanvas.isConnected) return;
    this.fitCanvas(this.previewCanvas);
    const ctx = this.previewCanvas.getContext("2d");
    const img = this.quick ? this.quick.image : this.frames[this.frameIndex];
    const caption = this.quick ? `frame ${this.quick.frame + 1} (dragging)` : this.frames.length ? "preview" : "preview: waiting";
    drawFrame(ctx, img, caption);
  }

  // --- pointer --------------------------------------------------------------------------------
  local(e) {
    const r = this.canvas.getBoundingClientRect();
    return [e.clientX - r.left, e.clientY - r.top];
  }

  handleHit(control, c, v) {
    let best = null, bestD = 9 * 9;
    control.forEach((cc, i) => {
      for (const k of i === this.selected ? [1, 2, 3] : [1, 2]) {
        const q = G.toCanvas(v, cc[k]);
        const d = (q[0] - c[0]) ** 2 + (q[1] - c[1]) ** 2;
        if (d <= bestD) { best = [i, k]; bestD = d; }
      }
    });
    return best;
  }

  onDown(e) {
    const s = this.state;
    if (!s?.model) return;
    this.canvas.focus({ preventScroll: true });
    const v = this.view(), c = this.local(e);
    const [h, w] = s.canvas;
    if (this.kind === "keypoints") {
      const hit = G.hitTest(s.model.points, v, c);
      if (e.button === 2) { if (hit >= 0) this.commitModel(G.deletePoint(s.model, hit)); return; }
      if (e.button !== 0) return;
      if (hit >= 0 && (this.mode === "root")) { this.commitModel(G.setRoot(s.model, hit)); return; }
      if (hit >= 0 && (this.mode === "bones" || e.shiftKey)) this.drag = { type: "bone", index: hit, to: c };
      else if (hit >= 0) { this.drag = { type: "move", index: hit, start: c }; this.selected = hit; }
      else if (this.mode === "points") this.drag = { type: "add", start: c, at: G.clampToImage(G.toImage(v, c), w, h) };
    } else if (this.kind === "trajectory") {
      if (e.button !== 0) return;
      const hh = s.control && this.handleHit(s.control, c, v);
      if (hh) { this.drag = { type: "handle", index: hh[0], k: hh[1] }; this.selected = hh[0]; }
      else { this.selected = G.hitTest(s.model.points, v, c); this.paint(); return; }
    } else {
      const hit = G.hitTest(s.targets, v, c, 9);
      if (e.button === 2) {
        if (hit >= 0) { const t = s.targets.map((p) => [...p]); t[hit] = [...s.sources[hit]]; this.commitTargets(G.writeTargets(t)); }
        return;
      }
      if (e.button !== 0 || hit < 0) return;
      this.drag = { type: "target", index: hit };
      this.selected = hit;
    }
    this.canvas.setPointerCapture?.(e.pointerId);
    this.paint();
  }

  onMove(e) {
    const s = this.state;
    if (!s?.model) return;
    const v = this.view(), c = this.local(e);
    const [h, w] = s.canvas;
    const p = G.clampToImage(G.toImage(v, c), w, h);
    const d = this.drag;
    if (!d) {
      const hover = this.kind === "warp" ? G.hitTest(s.targets, v, c, 9) : G.hitTest(s.model.points, v, c);
      const hh = this.kind === "trajectory" && s.control ? this.handleHit(s.control, c, v) : null;
      if (hover !== this.hover || JSON.stringify(hh) !== JSON.stringify(this.hoverHandle)) {
        this.hover = hover; this.hoverHandle = hh; this.paint();
      }
      return;
    }
    if (d.type === "bone") d.to = c;
    else if (d.type === "move") {
      if (Math.hypot(c[0] - d.start[0], c[1] - d.start[1]) < 2 && !d.moved) return;
      d.moved = true;
      this.dragModel = G.movePoint(s.model, d.index, p);
      this.preview.drag(this.previewBody({ ...s, model: this.dragModel, control: this.followControl(s, this.dragModel) }), this.quickFrame(s, d.index));
    } else if (d.type === "handle") {
      const control = (this.dragControl || s.control).map((cc) => cc.map((q) => [...q]));
      control[d.index][d.k] = p;
      this.dragControl = control;
      this.dragEdited = s.edited.map((x, i) => x || i === d.index);
      this.preview.drag(this.previewBody({ ...s, control, edited: this.dragEdited }), this.quickFrame({ ...s, control }, d.index));
    } else if (d.type === "target") {
      const t = (this.dragTargets || s.targets).map((q) => [...q]);
      t[d.index] = p;
      this.dragTargets = t;
      const n = Math.min(Number(value(this.node, "frames", 16)) || 16, 24);
      this.preview.drag(this.previewBody({ ...s, targets: t }), n - 1);
    }
    this.paint();
  }

  /** The control points that follow a moved keypoint (relative handles move with it). */
  followControl(s, model) {
    if (!s.control) return null;
    return s.control.map((c, i) => {
      const d = [model.points[i][0] - s.model.points[i][0], model.points[i][1] - s.model.points[i][1]];
      return c.map((q) => [q[0] + d[0], q[1] + d[1]]);
    });
  }

  /** The frame to show while dragging: the scrubbed one when paused, else where keypoint i moves most. */
  quickFrame(s, i) {
    const n = Math.min(Number(s.tr?.frames) || 24, 48);
    if (!this.playing && this.frames.length) return Math.min(this.frameIndex, n - 1);
    if (!s.control) return Math.floor(n / 4);
    const frames = G.trajectoryFrames(s.control, n, s.tr.loop, s.tr.cycles, s.canvas);
    let best = 0, bestD = -1;
    frames.forEach((f, t) => {
      const d = Math.hypot(f[i][0] - s.control[i][0][0], f[i][1] - s.control[i][0][1]);
      if (d > bestD + 1e-9) { best = t; bestD = d; }
    });
    if (bestD < 0.5) {   // this keypoint stays (the root): the frame where anything moves most
      frames.forEach((f, t) => {
        const d = f.reduce((a, q, j) => a + Math.hypot(q[0] - s.control[j][0][0], q[1] - s.control[j][0][1]), 0);
        if (d > bestD) { best = t; bestD = d; }
      });
    }
    return best;
  }

  onUp(e) {
    const d = this.drag, s = this.state;
    this.drag = null;
    this.canvas.releasePointerCapture?.(e.pointerId);
    if (!d || !s?.model) return;
    const v = this.view(), c = this.local(e);
    if (d.type === "add") {
      if (Math.hypot(c[0] - d.start[0], c[1] - d.start[1]) < 4) {
        this.selected = s.model.points.length;
        this.commitModel(G.addPoint(s.model, d.at));
      }
    } else if (d.type === "move" && this.dragModel) {
      this.commitModel(this.dragModel);
    } else if (d.type === "bone") {
      const hit = G.hitTest(s.model.points, v, c);
      if (hit >= 0 && hit !== d.index) this.commitModel(G.toggleBone(s.model, d.index, hit));
    } else if (d.type === "handle" && this.dragControl) {
      this.commitControl(G.writeControl(this.dragControl, this.dragEdited, s.model.points));
    } else if (d.type === "target" && this.dragTargets) {
      this.commitTargets(G.writeTargets(this.dragTargets));
    }
    this.dragModel = this.dragControl = this.dragEdited = this.dragTargets = null;
    this.paint();
  }

  onKey(e) {
    const s = this.state;
    const key = e.key.toLowerCase();
    let done = true;
    // Ctrl+Z / Ctrl+Y are the graph's undo/redo (ComfyUI's change tracker sees every edit here, see
    // graphChanged): handling them here too would undo twice. The ↶ ↷ buttons undo this editor alone.
    if (e.ctrlKey || e.metaKey) done = false;
    else if ((key === "delete" || key === "backspace") && this.kind === "keypoints" && s?.model) {
      const i = this.hover >= 0 ? this.hover : this.selected;
      if (i >= 0) { this.commitModel(G.deletePoint(s.model, i)); this.selected = -1; this.hover = -1; }
    } else if (key === "r" && this.kind === "keypoints" && s?.model) {
      const i = this.hover >= 0 ? this.hover : this.selected;
      if (i >= 0) this.commitModel(G.setRoot(s.model, i));
    } else done = false;
    if (done) { e.preventDefault(); e.stopPropagation(); e.stopImmediatePropagation?.(); }
  }

  // --- writing the widgets --------------------------------------------------------------------
  commitModel(model) {
    const s = this.state;
    const kp = s.kpNode;
    const out = G.writeKeypoints(model, { canvas: s.canvas });
    let changed = setWidget(kp, "points_json", out.points_json);
    changed = setWidget(kp, "edges_json", out.edges_json) || changed;
    changed = setWidget(kp, "root", out.root) || changed;
    // curves downstream keep one entry per keypoint
    for (const n of outputNodes(kp)) {
      if ((n.comfyClass || n.type) !== "FlipbookBezierTrajectory") continue;
      const cj = value(n, "control_json", "");
      try { setWidget(n, "control_json", G.resizeControlJson(cj, model.points.length)); } catch { /* typed text: leave it */ }
    }
    if (changed) this.afterCommit();
  }

  commitControl(text) {
    if (setWidget(this.node, "control_json", text)) this.afterCommit();
  }

  commitTargets(text) {
    if (setWidget(this.node, "targets_json", text)) this.afterCommit();
  }

  afterCommit() {
    graphChanged(this.node);
    this.sync(true);
  }

  autoBones() {
    const s = this.state;
    if (!s?.model) return;
    this.commitModel({ ...s.model, edges: G.minimumSpanningEdges(s.model.points), implicitEdges: true });
  }

  undo() { this.applyOwn(this.history?.undo()); }
  redo() { this.applyOwn(this.history?.redo()); }

  applyOwn(text) {
    if (text == null) return;
    if (this.kind === "keypoints") {
      const [p, e, r] = JSON.parse(text);
      const kp = this.state?.kpNode;
      if (!kp) return;
      setWidget(kp, "points_json", p); setWidget(kp, "edges_json", e); setWidget(kp, "root", r);
    } else setWidget(this.node, this.kind === "trajectory" ? "control_json" : "targets_json", text);
    graphChanged(this.node);
    this.sync(true);                // the widget now equals the history's current entry: no new step
  }

  // --- for tests and scripts: where things are on the screen (client px) ------------------------
  clientPoint(p) {
    const v = this.view(), r = this.canvas.getBoundingClientRect();
    const q = G.toCanvas(v, p);
    return [r.left + q[0], r.top + q[1]];
  }
}

// --- registration -------------------------------------------------------------------------------

function attach(node, kind) {
  if (node.__flipbookEditor) return node.__flipbookEditor;
  const editor = new Editor(node, kind);
  const w = node.addDOMWidget("flipbook_editor", "flipbook-editor", editor.element, {
    serialize: false, hideOnZoom: false, getMinHeight: () => EDITOR_HEIGHT, getValue: () => undefined, setValue: () => {},
  });
  w.serialize = false;               // a view of other widgets, never a value of its own
  node.__flipbookEditor = editor;
  const removed = node.onRemoved;
  node.onRemoved = function () { editor.orphan(); return removed?.apply(this, arguments); };
  const grow = () => {
    const min = node.computeSize?.() || MIN_SIZE;
    const want = [Math.max(node.size[0], MIN_SIZE[0]), Math.max(node.size[1], min[1])];
    if (want[0] !== node.size[0] || want[1] !== node.size[1]) node.setSize(want);
  };
  const configured = node.onConfigure;
  node.onConfigure = function () {
    const r = configured?.apply(this, arguments);
    requestAnimationFrame(() => { grow(); editor.sync(true); });
    return r;
  };
  requestAnimationFrame(() => { grow(); editor.sync(true); });
  return editor;
}

/** The editor shown for the node with this id (the one a user sees and the mouse reaches). */
export function shownEditor(id) {
  const node = app?.graph?.getNodeById?.(id);
  const shown = [...document.querySelectorAll(".flipbook-editor")].map((el) => el.__flipbookEditor)
    .find((e) => e && !e.destroyed && e.node === node && e.element.isConnected);
  return shown || node?.__flipbookEditor || null;
}

if (app) {
  window.flipbookEditor = shownEditor;
  app.registerExtension({
    name: "ComfyUI-Flipbook.Editors",
    nodeCreated(node) {
      const kind = EDITED_NODES[node.comfyClass || node.type];
      if (kind) attach(node, kind);
    },
  });
}
