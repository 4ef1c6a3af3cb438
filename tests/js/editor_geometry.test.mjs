// node --test tests/js: the editors' geometry and serialisation agree with the Python widgets' parsers.
// Expected numbers below were computed by pipelines/bezier.py and pipelines/keypoints.py.
import assert from "node:assert/strict";
import { test } from "node:test";
import * as G from "../../web/js/editor_geometry.js";

const close = (a, b, tol = 1e-3) => {
  const fa = [a].flat(Infinity), fb = [b].flat(Infinity);
  assert.equal(fa.length, fb.length, `shapes differ: ${JSON.stringify(a)} vs ${JSON.stringify(b)}`);
  fa.forEach((v, i) => assert.ok(Math.abs(v - fb[i]) <= tol, `${i}: ${v} != ${fb[i]}`));
};

test("image <-> canvas mapping round-trips at any display size, pixel centres at (i + 0.5) s", () => {
  for (const [bw, bh] of [[512, 512], [300, 140], [97, 333]]) {
    const v = G.fitView(512, 384, bw, bh);
    assert.ok(v.scale * 512 <= bw + 1e-9 && v.scale * 384 <= bh + 1e-9);
    assert.ok(Math.abs(v.scale * 512 - bw) < 1e-9 || Math.abs(v.scale * 384 - bh) < 1e-9, "fills one side");
    for (const p of [[0, 0], [511, 383], [100.25, 7.5]]) close(G.toImage(v, G.toCanvas(v, p)), p, 1e-9);
    close(G.toCanvas(v, [-0.5, -0.5]), [v.ox, v.oy], 1e-9);           // the image's corner
    close(G.toCanvas(v, [511.5, 383.5]), [v.ox + 512 * v.scale, v.oy + 384 * v.scale], 1e-9);
  }
  assert.deepEqual(G.clampToImage([-3, 900], 64, 32), [0, 31]);
});

test("hit test finds the nearest point within the radius only", () => {
  const v = G.fitView(100, 100, 200, 200);  // scale 2
  const pts = [[10, 10], [12, 10], [50, 50]];
  assert.equal(G.hitTest(pts, v, G.toCanvas(v, [11.6, 10])), 1);
  assert.equal(G.hitTest(pts, v, G.toCanvas(v, [10.2, 10])), 0);
  assert.equal(G.hitTest(pts, v, G.toCanvas(v, [30, 30])), -1);
  assert.equal(G.hitTest(pts, v, G.toCanvas(v, [53, 50]), 8), 2);             // 6 display px away
  assert.equal(G.hitTest(pts, v, G.toCanvas(v, [55, 50]), 8), -1);    // 10 display px away
});

test("keypoint widgets read and write what skeleton_from_json parses", () => {
  const m = G.readKeypoints("[[256, 112], [256, 176], [140, 190]]", "[[0, 1], [1, 2]]", -1);
  assert.deepEqual(m.points, [[256, 112], [256, 176], [140, 190]]);
  assert.deepEqual(m.edges, [[0, 1], [1, 2]]);
  assert.equal(m.root, -1);
  const w = G.writeKeypoints(G.movePoint(m, 2, [141.04, 190.96]));
  assert.deepEqual(JSON.parse(w.points_json), [[256, 112], [256, 176], [141, 191]]);
  assert.equal(w.edges_json, "[[0,1],[1,2]]");
  assert.equal(w.root, -1);
  // the object form keeps its names; edges_json wins over the object's edges, as in Python
  const o = G.readKeypoints('{"points": [[1, 2], [3, 4]], "edges": [[0, 1]], "root": 1, "names": ["a", "b"]}', "", -1);
  assert.equal(o.root, 1);
  assert.deepEqual(o.edges, [[0, 1]]);
  const o2 = G.addPoint(o, [5, 6]);
  assert.deepEqual(JSON.parse(G.writeKeypoints(o2).points_json), { points: [[1, 2], [3, 4], [5, 6]], names: ["a", "b", "p2"] });
  // normalized points: pixels inside the editor, fractions in the widget (align_corners)
  const n = G.readKeypoints("[[0, 0], [1, 0.5]]", "", -1, { normalized: true, canvas: [65, 33] });
  assert.deepEqual(n.points, [[0, 0], [32, 32]]);
  assert.deepEqual(JSON.parse(G.writeKeypoints(n, { canvas: [65, 33] }).points_json), [[0, 0], [1, 0.5]]);
  assert.throws(() => G.readKeypoints("[[1, 2], [3]]", ""), /points_json/);
  assert.throws(() => G.readKeypoints("[[1, 2]", ""), /points_json: expected JSON/);
  assert.throws(() => G.readKeypoints("[[1, 2], [3, 4]]", "[[0, 5]]"), /edges_json/);
});

test("empty edges are the minimum spanning tree Python builds, and stay implicit", () => {
  const m = G.readKeypoints("[[10,10],[30,12],[12,40],[50,50]]", "", -1);
  assert.ok(m.implicitEdges);
  const norm = (es) => es.map((e) => [...e].sort((a, b) => a - b)).sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  assert.deepEqual(norm(m.edges), [[0, 1], [0, 2], [2, 3]]);               // scipy's tree
  assert.equal(G.writeKeypoints(m).edges_json, "");
  assert.equal(G.writeKeypoints(G.addPoint(m, [60, 60])).edges_json, "");
  const t = G.toggleBone(m, 1, 3);                                          // a bone edit makes them explicit
  assert.equal(t.implicitEdges, false);
  assert.equal(norm(JSON.parse(G.writeKeypoints(t).edges_json)).length, 4);
});

test("delete renumbers bones and the root; toggling a bone adds then removes it", () => {
  let m = G.readKeypoints("[[0,0],[1,1],[2,2],[3,3]]", "[[0,1],[1,2],[2,3]]", 3);
  m = G.deletePoint(m, 1);
  assert.deepEqual(m.points, [[0, 0], [2, 2], [3, 3]]);
  assert.deepEqual(m.edges, [[1, 2]]);
  assert.equal(m.root, 2);
  assert.equal(G.deletePoint(m, 2).root, -1);
  const a = G.toggleBone(m, 2, 0);
  assert.deepEqual(a.edges, [[1, 2], [2, 0]]);
  assert.deepEqual(G.toggleBone(a, 0, 2).edges, [[1, 2]]);
  assert.deepEqual(G.toggleBone(a, 1, 1).edges, a.edges);                   // no self bone
  assert.equal(G.setRoot(m, 0).root, 0);
  assert.equal(G.setRoot(m, 9).root, -1);
  assert.deepEqual(m.points.length, 3, "edits return new models");
});

test("undo / redo walk the snapshots; a new edit drops the redo branch", () => {
  const h = new G.History({ n: 0 }, 3);
  assert.equal(h.push({ n: 0 }), false, "no-op edits are not recorded");
  h.push({ n: 1 }); h.push({ n: 2 });
  assert.deepEqual(h.undo(), { n: 1 });
  assert.deepEqual(h.undo(), { n: 0 });
  assert.deepEqual(h.undo(), { n: 0 });
  assert.deepEqual(h.redo(), { n: 1 });
  h.push({ n: 5 });
  assert.equal(h.canRedo(), false);
  h.push({ n: 6 });
  assert.equal(h.stack.length, 3, "bounded");
  const cur = h.current; cur.n = 99;
  assert.deepEqual(h.current, { n: 6 }, "snapshots are copies");
});

// Python: skeleton_from_json('[[32,10],[32,30],[20,50],[44,50],[50,20]]', '[[0,1],[1,2],[1,3],[0,4]]', (64,64))
const SK = G.readKeypoints("[[32,10],[32,30],[20,50],[44,50],[50,20]]", "[[0,1],[1,2],[1,3],[0,4]]", -1);

test("bone tree and automatic root match skeleton.py", () => {
  assert.equal(G.effectiveRoot(SK), 0);
  assert.deepEqual(G.boneTree(5, SK.edges, 0), { depth: [0, 1, 2, 2, 1], parent: [-1, 0, 1, 1, 0] });
  assert.deepEqual(G.boneTree(4, [[0, 1], [1, 2]], 1), { depth: [1, 0, 1, -1], parent: [1, -1, 1, -1] });
});

test("preset seeding equals bezier.preset_control (sway, wave, still; random is the server's)", () => {
  close(G.presetControl(SK, "sway", 0.1, [64, 64]), [
    [[32, 10], [32, 10], [32, 10], [32, 10]], [[32, 30], [28.8, 30], [28.8, 30], [32, 30]],
    [[20, 50], [14.512, 46.7072], [14.512, 46.7072], [20, 50]], [[44, 50], [38.512, 53.2928], [38.512, 53.2928], [44, 50]],
    [[50, 20], [48.4459, 22.7973], [48.4459, 22.7973], [50, 20]]]);
  close(G.presetControl(SK, "wave", 0.1, [64, 64]), [
    [[32, 10], [32, 10], [32, 10], [32, 10]], [[32, 30], [38.4, 30], [25.6, 30], [32, 30]],
    [[20, 50], [9.0241, 43.4145], [30.9759, 56.5855], [20, 50]], [[44, 50], [33.0241, 56.5855], [54.9759, 43.4145], [44, 50]],
    [[50, 20], [53.1081, 14.4054], [46.8919, 25.5946], [50, 20]]]);
  close(G.presetControl(SK, "still", 0.1, [64, 64]), SK.points.map((p) => [p, p, p, p]));
  assert.equal(G.presetControl(SK, "random", 0.1, [64, 64]), null);
});

test("frame times equal bezier.frame_times", () => {
  close(G.frameTimes(10, "aniclipart", 2), [0, 1, 1, 0, 0, 1, 1, 0, 0, 0]);
  close(G.frameTimes(7, "ping-pong", 2), [0, 0.571429, 0.857143, 0.285714, 0.285714, 0.857143, 0.571429], 1e-6);
  close(G.frameTimes(4, "once"), [0, 1 / 3, 2 / 3, 1]);
  close(G.frameTimes(4, "loop", 1), [0, 0.25, 0.5, 0.75]);
  close(G.bezierPoint([[0, 0], [1, 0], [1, 1], [0, 1]], 0), [0, 0]);
  close(G.bezierPoint([[0, 0], [1, 0], [1, 1], [0, 1]], 1), [0, 1]);
});

test("control_json written by the editor gives Python's trajectory (relative, null keeps the preset)", () => {
  const base = G.presetControl(SK, "wave", 0.1, [64, 64]);
  let { control, edited } = G.readControl("", SK.points, base);
  assert.equal(G.writeControl(control, edited, SK.points), "", "nothing edited: the preset alone");
  control[1][1] = [37, 30]; control[1][2] = [37, 35]; control[1][3] = [32, 30]; edited[1] = true;
  const text = G.writeControl(control, edited, SK.points);
  assert.deepEqual(JSON.parse(text), { relative: true, control: [null, [[5, 0], [5, 5], [0, 0]], null, null, null] });
  const back = G.readControl(text, SK.points, base);
  close(back.control, control);
  assert.deepEqual(back.edited, [false, true, false, false, false]);
  // Python: preset_trajectory(sk, 'wave', n_frames=5, amplitude=0.1, control_json=text).frames()
  close(G.trajectoryFrames(back.control, 5, "loop", 1, [64, 64])[1], [[32, 10], [34.4, 30.48], [16.838938, 48.103363],
    [40.83894, 51.896637], [50.895138, 18.388754]]);
  close(G.trajectoryFrames(back.control, 5, "loop", 1, [64, 64])[3], [[32, 10], [35.6, 32.16], [21.580532, 50.948318],
    [45.58053, 49.051682], [49.552433, 20.805624]]);
  // absolute entries, as a user may type them
  close(G.readControl("[null, [[1,2],[3,4],[5,6]], null, null, null]", SK.points, base).control[1], [[32, 30], [1, 2], [3, 4], [5, 6]]);
  assert.throws(() => G.readControl("[[1, 2]]", SK.points, base), /control_json\[0\]/);
  assert.equal(G.resizeControlJson(text, 6), JSON.stringify({ relative: true, control: [null, [[5, 0], [5, 5], [0, 0]], null, null, null, null] }));
  assert.equal(G.resizeControlJson(text, 5), text);
  assert.equal(G.resizeControlJson("", 3), "");
});

test("warp targets: null or missing entries stay at their source", () => {
  const src = [[1, 1], [2, 2], [3, 3]];
  assert.deepEqual(G.readTargets("", src), src);
  assert.deepEqual(G.readTargets("[[5, 5], null]", src), [[5, 5], [2, 2], [3, 3]]);
  assert.equal(G.writeTargets([[5.04, 5], [2, 2.26]]), "[[5,5],[2,2.3]]");
  assert.throws(() => G.readTargets("{}", src), /targets_json/);
});
