// ComfyUI-Flipbook editors: drawing on a 2D canvas context (no state; editors.js owns it).
import { bezierPoint, toCanvas } from "./editor_geometry.js";

export const COLOURS = {
  point: "#ffd23f", root: "#ff4d4d", selected: "#3fd0ff", bone: "rgba(255,255,255,0.85)", boneShadow: "rgba(0,0,0,0.6)",
  curve: "rgba(63,208,255,0.9)", handle: "#ff9f1c", handleLine: "rgba(255,159,28,0.7)", source: "rgba(200,200,200,0.9)",
  target: "#7cff6b", arrow: "rgba(124,255,107,0.9)", text: "#fff", empty: "#2a2a2a", grid: "#333",
};

/** Background: the picture letterboxed (or a grey board with a note when there is none). */
export function drawPicture(ctx, view, image, note) {
  const { width, height } = ctx.canvas;
  ctx.fillStyle = "#1b1b1b";
  ctx.fillRect(0, 0, width, height);
  const x = view.ox, y = view.oy, w = view.w * view.scale, h = view.h * view.scale;
  // a checkerboard shows transparency
  ctx.fillStyle = COLOURS.empty;
  ctx.fillRect(x, y, w, h);
  if (image && image.complete && image.naturalWidth) ctx.drawImage(image, x, y, w, h);
  if (note) {
    ctx.fillStyle = "rgba(0,0,0,0.55)";
    ctx.fillRect(x, y + h / 2 - 14, w, 28);
    ctx.fillStyle = COLOURS.text;
    ctx.font = "12px sans-serif";
    ctx.textAlign = "center";
    ctx.textBaseline = "middle";
    ctx.fillText(note, x + w / 2, y + h / 2, w - 8);
  }
}

function dot(ctx, c, r, fill, stroke = "#000") {
  ctx.beginPath();
  ctx.arc(c[0], c[1], r, 0, Math.PI * 2);
  ctx.fillStyle = fill;
  ctx.fill();
  ctx.lineWidth = 1.5;
  ctx.strokeStyle = stroke;
  ctx.stroke();
}

function line(ctx, a, b, colour, width = 2, dash = null) {
  ctx.beginPath();
  ctx.moveTo(a[0], a[1]);
  ctx.lineTo(b[0], b[1]);
  ctx.setLineDash(dash || []);
  ctx.lineWidth = width;
  ctx.strokeStyle = colour;
  ctx.stroke();
  ctx.setLineDash([]);
}

/** Keypoints with their indices, bones, the root (red) and the selection; a bone being dragged. */
export function drawSkeleton(ctx, view, { points, edges, root, selected = -1, hover = -1, labels = true,
                                         bonePreview = null, radius = 6, dim = false }) {
  for (const [a, b] of edges) {
    if (!points[a] || !points[b]) continue;
    const pa = toCanvas(view, points[a]), pb = toCanvas(view, points[b]);
    line(ctx, pa, pb, COLOURS.boneShadow, 4);
    line(ctx, pa, pb, dim ? "rgba(255,255,255,0.4)" : COLOURS.bone, 2);
  }
  if (bonePreview) line(ctx, toCanvas(view, points[bonePreview.from]), bonePreview.to, COLOURS.selected, 2, [6, 4]);
  ctx.font = "bold 11px sans-serif";
  ctx.textAlign = "left";
  ctx.textBaseline = "bottom";
  points.forEach((p, i) => {
    const c = toCanvas(view, p);
    const fill = i === selected ? COLOURS.selected : i === root ? COLOURS.root : COLOURS.point;
    dot(ctx, c, i === hover ? radius + 2 : radius, dim ? "rgba(200,200,200,0.7)" : fill);
    if (labels) {
      ctx.lineWidth = 3;
      ctx.strokeStyle = "#000";
      ctx.strokeText(String(i), c[0] + radius, c[1] - radius / 2);
      ctx.fillStyle = COLOURS.text;
      ctx.fillText(String(i), c[0] + radius, c[1] - radius / 2);
    }
  });
}

/** Each keypoint's cubic Bezier, its handles (c1, c2, and c3 of the selected one) and where it is now. */
export function drawCurves(ctx, view, { control, selected = -1, hoverHandle = null, now = null, edited = [] }) {
  control.forEach((c, i) => {
    const pts = [];
    for (let s = 0; s <= 32; s++) pts.push(toCanvas(view, bezierPoint(c, s / 32)));
    ctx.beginPath();
    pts.forEach((p, s) => (s ? ctx.lineTo(p[0], p[1]) : ctx.moveTo(p[0], p[1])));
    ctx.lineWidth = i === selected ? 2.5 : 1.5;
    ctx.strokeStyle = edited[i] ? COLOURS.handle : COLOURS.curve;
    ctx.stroke();
    const ks = i === selected ? [1, 2, 3] : [1, 2];
    const h = ks.map((k) => toCanvas(view, c[k]));
    line(ctx, toCanvas(view, c[0]), h[0], COLOURS.handleLine, 1);
    line(ctx, h[1], toCanvas(view, c[3]), COLOURS.handleLine, 1);
    ks.forEach((k, j) => {
      const hot = hoverHandle && hoverHandle[0] === i && hoverHandle[1] === k;
      const r = hot ? 6 : i === selected ? 5 : 4;
      ctx.fillStyle = k === 3 ? COLOURS.selected : COLOURS.handle;
      ctx.fillRect(h[j][0] - r, h[j][1] - r, 2 * r, 2 * r);
      ctx.lineWidth = 1;
      ctx.strokeStyle = "#000";
      ctx.strokeRect(h[j][0] - r, h[j][1] - r, 2 * r, 2 * r);
    });
  });
  if (now) now.forEach((p) => dot(ctx, toCanvas(view, p), 3, "#fff"));
}

/** Sources (grey) to targets (green) with arrows. */
export function drawArrows(ctx, view, { sources, targets, hover = -1, selected = -1 }) {
  sources.forEach((s, i) => {
    const a = toCanvas(view, s), b = toCanvas(view, targets[i]);
    dot(ctx, a, 4, COLOURS.source);
    const len = Math.hypot(b[0] - a[0], b[1] - a[1]);
    if (len > 2) {
      line(ctx, a, b, COLOURS.arrow, 2);
      const ang = Math.atan2(b[1] - a[1], b[0] - a[0]);
      ctx.beginPath();
      ctx.moveTo(b[0], b[1]);
      ctx.lineTo(b[0] - 9 * Math.cos(ang - 0.45), b[1] - 9 * Math.sin(ang - 0.45));
      ctx.lineTo(b[0] - 9 * Math.cos(ang + 0.45), b[1] - 9 * Math.sin(ang + 0.45));
      ctx.closePath();
      ctx.fillStyle = COLOURS.arrow;
      ctx.fill();
    }
    dot(ctx, b, i === hover ? 7 : 5, i === selected ? COLOURS.selected : COLOURS.target);
    ctx.font = "bold 11px sans-serif";
    ctx.fillStyle = COLOURS.text;
    ctx.textAlign = "left";
    ctx.textBaseline = "bottom";
    ctx.fillText(String(i), b[0] + 6, b[1] - 3);
  });
}

/** One preview frame letterboxed, with a small caption. */
export function drawFrame(ctx, image, caption) {
  const { width, height } = ctx.canvas;
  ctx.fillStyle = "#111";
  ctx.fillRect(0, 0, width, height);
  if (image && image.naturalWidth) {
    const s = Math.min(width / image.naturalWidth, height / image.naturalHeight);
    const w = image.naturalWidth * s, h = image.naturalHeight * s;
    ctx.imageSmoothingEnabled = true;
    ctx.drawImage(image, (width - w) / 2, (height - h) / 2, w, h);
  }
  if (caption) {
    ctx.font = "11px sans-serif";
    ctx.textAlign = "left";
    ctx.textBaseline = "top";
    ctx.fillStyle = "rgba(0,0,0,0.6)";
    ctx.fillRect(0, 0, Math.min(width, ctx.measureText(caption).width + 8), 16);
    ctx.fillStyle = COLOURS.text;
    ctx.fillText(caption, 4, 2);
  }
}
