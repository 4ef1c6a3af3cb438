"""The frontend's plain JS modules (web/js) under Node's own test runner: tests/js/*.test.mjs."""
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_js_modules_pass_node_test():
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed: the web/js unit tests (node --test tests/js) need it")
    files = sorted(str(p) for p in (ROOT / "tests" / "js").glob("*.test.mjs"))
    assert files, "no JS tests"
    run = subprocess.run([node, "--test", *files], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "# fail 0" in run.stdout


_EDIT_SCRIPT = r"""
import * as G from "./web/js/editor_geometry.js";
let m = G.readKeypoints("[[32,10],[32,30],[20,50],[44,50],[50,20]]", "[[0,1],[1,2],[1,3],[0,4]]", -1);
m = G.addPoint(m, [60.26, 5.5]);
m = G.toggleBone(m, 4, 5);
m = G.movePoint(m, 2, [18.5, 52.04]);
m = G.deletePoint(m, 3);
m = G.setRoot(m, 1);
const w = G.writeKeypoints(m);
const base = G.presetControl(m, "wave", 0.1, [64, 64]);
const { control, edited } = G.readControl("", m.points, base);
control[4][1] = [52, 2]; control[4][2] = [63, 20]; edited[4] = true;
const control_json = G.writeControl(control, edited, m.points);
const c = G.readControl(control_json, m.points, base).control;
console.log(JSON.stringify({ ...w, control_json, frames: G.trajectoryFrames(c, 6, "ping-pong", 1, [64, 64]) }));
"""


def test_editor_writes_what_python_parses():
    """What the editors write into the widgets is what the nodes read: the same keypoints, bones, root
    and Bezier frames in Python as in the editor."""
    import json

    import torch

    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed")
    run = subprocess.run([node, "--input-type=module", "-e", _EDIT_SCRIPT], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, run.stderr[-2000:]
    out = json.loads(run.stdout)
    from comfyui_flipbook.pipelines import bezier, keypoints

    sk = keypoints.skeleton_from_json(out["points_json"], out["edges_json"], (64, 64), root=out["root"])
    assert torch.allclose(sk.points, torch.tensor([[32, 10], [32, 30], [18.5, 52], [50, 20], [60.3, 5.5]]))
    assert sorted(map(sorted, sk.edges.tolist())) == [[0, 1], [0, 3], [1, 2], [3, 4]]
    assert sk.root == 1
    tr = bezier.preset_trajectory(sk, "wave", n_frames=6, amplitude=0.1, loop="ping-pong", control_json=out["control_json"])
    assert torch.allclose(tr.frames(), torch.tensor(out["frames"]), atol=0.06)  # the widget rounds to 0.1 px
    still = bezier.preset_trajectory(sk, "wave", n_frames=6, amplitude=0.1, loop="ping-pong")
    assert not torch.allclose(tr.frames()[:, 4], still.frames()[:, 4], atol=1.0), "the edited curve moves keypoint 4"
