"""POST /flipbook/preview (nodes/preview_route.py): answers, refusals, bounds and supersession."""
from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from comfyui_flipbook.nodes import preview_route as pr
from comfyui_flipbook.pipelines.errors import FlipbookInputError

ASSETS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets")
POINTS = json.load(open(os.path.join(ASSETS, "flipbook_character.keypoints.json")))
POINTS_JSON = json.dumps(POINTS if isinstance(POINTS, list) else POINTS["points"])


@pytest.fixture
def svc(tmp_path):
    """A service whose input folder is a temporary folder holding the shipped character."""
    root = tmp_path / "input"
    (root / "sub").mkdir(parents=True)
    src = os.path.join(ASSETS, "flipbook_character.png")
    for dst in (root / "flipbook_character.png", root / "sub" / "c.png"):
        dst.write_bytes(open(src, "rb").read())
    (tmp_path / "secret.png").write_bytes(open(src, "rb").read())

    def resolve(name):
        path = os.path.realpath(os.path.join(root, name))
        if os.path.commonpath([str(root), path]) != str(root) or not os.path.isfile(path):
            raise FlipbookInputError(f"file: expected a file inside the input folder, got {name!r}")
        return path

    return pr.PreviewService(resolve_input=resolve)


def _req(**kw):
    base = {"image": "flipbook_character.png", "points_json": POINTS_JSON, "edges_json": "", "frames": 6,
            "max_side": 96, "preset": "wave", "amplitude": 0.08}
    base.update(kw)
    return base


def _decode(url: str) -> Image.Image:
    head, data = url.split(",", 1)
    return Image.open(io.BytesIO(base64.b64decode(data)))


def _frames(answer) -> list[torch.Tensor]:
    if "webp" in answer:
        im = _decode(answer["webp"])
        out = []
        for i in range(im.n_frames):
            im.seek(i)
            out.append(torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32)))
        return out
    return [torch.from_numpy(np.asarray(_decode(u).convert("RGB"), dtype=np.float32)) for u in answer["png"]]


def test_clipart_preview_is_a_small_animation_that_moves(svc):
    out = svc.render(_req(format="png"))
    assert out["kind"] == "clipart" and out["frames"] == 6 and out["canvas"] == [512, 512]
    assert max(out["size"]) == 96
    frames = _frames(out)
    assert len(frames) == 6 and _decode(out["png"][0]).size == (96, 96)
    assert (frames[0] - frames[2]).abs().mean() > 0.5, "the wave preset moves the character"
    assert len(out["control"]) == len(json.loads(POINTS_JSON)) and len(out["track"]) == 6
    still = _frames(svc.render(_req(format="png", preset="still")))
    assert (still[0] - still[3]).abs().max() == 0, "still: every frame the rest pose"
    webp = svc.render(_req())
    assert _decode(webp["webp"]).n_frames == 6


def test_one_frame_answer_and_the_edit_shows(svc):
    """A dragged handle changes the frame it should; the mesh is reused for trajectory-only edits."""
    a = svc.render(_req(frame=2, format="png"))
    assert a["frames"] == 1 and len(a["png"]) == 1
    k = len(json.loads(POINTS_JSON))
    ctrl = [None] * k
    ctrl[4] = [[60, -40], [60, -40], [0, 0]]          # the left hand swings far up-right
    b = svc.render(_req(frame=2, format="png", control_json=json.dumps({"relative": True, "control": ctrl})))
    assert len(svc.meshes) == 1, "a trajectory edit reuses the mesh"
    fa, fb = _frames(a)[0], _frames(b)[0]
    assert (fa - fb).abs().mean() > 0.2
    assert b["track"][2][4] != a["track"][2][4]
    # a moved keypoint builds a new mesh; its rest frame is the picture itself, a moving frame changes
    pts = json.loads(POINTS_JSON)
    pts[4] = [pts[4][0] + 40, pts[4][1]]
    rest = svc.render(_req(frame=0, format="png", points_json=json.dumps(pts)))
    assert len(svc.meshes) == 2
    assert (_frames(rest)[0] - _frames(svc.render(_req(frame=0, format="png")))[0]).abs().max() == 0
    c = svc.render(_req(frame=2, format="png", points_json=json.dumps(pts)))
    assert (_frames(c)[0] - fa).abs().mean() > 0.05


def test_cpab_preview_with_targets(svc):
    pts = json.loads(POINTS_JSON)
    targets = [None] * len(pts)
    targets[4] = [pts[4][0] - 30, pts[4][1] - 30]
    out = svc.render(_req(kind="cpab", targets_json=json.dumps(targets), frames=4, max_side=64, format="png"))
    assert out["frames"] == 4 and "control" not in out
    f = _frames(out)
    assert (f[0] - f[3]).abs().mean() > 0.1, "the tween moves"
    traj = svc.render(_req(kind="cpab", frames=3, max_side=64, format="png"))
    assert traj["frames"] == 3 and len(traj["track"]) == 3


def test_input_folder_names_only(svc):
    assert svc.render(_req(image="sub/c.png", frame=0))["frames"] == 1
    assert svc.render(_req(image="c.png", subfolder="sub", frame=0))["frames"] == 1
    assert svc.render(_req(image="flipbook_character.png [input]", frame=0))["frames"] == 1
    for bad, where in [("../secret.png", "image"), ("/etc/passwd", "image"), ("sub/../../secret.png", "image"),
                       ("flipbook_character.png [output]", "image"), ("missing.png", "file"), ("", "image"),
                       (None, "image")]:
        with pytest.raises(FlipbookInputError, match=where):
            svc.render(_req(image=bad))
    with pytest.raises(FlipbookInputError, match="image"):
        svc.render(_req(image="c.png", subfolder="../"))
    with pytest.raises(FlipbookInputError, match="node"):
        svc.render(_req(image=None, node="12345"))


def test_node_held_picture(svc, monkeypatch):
    monkeypatch.setattr(pr, "_last_images", pr._LRU(16))     # this test's picture stays in this test
    img = torch.ones(1, 300, 200, 3)
    img[:, 100:200, 60:140] = 0.1                       # a dark block on white: the ink silhouette
    pr.remember_image("77", img)
    pts = [[80, 120], [120, 180], [100, 150]]
    out = svc.render(_req(image=None, node="77", points_json=json.dumps(pts), frame=0))
    assert out["canvas"] == [300, 200] and max(out["size"]) == 96
    pic = svc.render({"kind": "picture", "node": "77", "max_side": 64})
    assert pic["canvas"] == [300, 200] and pic["size"] == [64, 43] and _decode(pic["png"][0]).size == (43, 64)
    assert svc.render({"kind": "picture", "image": "flipbook_character.png"})["canvas"] == [512, 512]


def test_bounds_and_bad_values_are_refused_by_name(svc):
    for field, value in [("frames", pr.MAX_FRAMES + 1), ("frames", 0), ("max_side", pr.MAX_SIDE + 1),
                         ("max_side", 8), ("amplitude", float("nan")), ("amplitude", "big"), ("preset", "dance"),
                         ("kind", "diffusion"), ("format", "gif"), ("frame", 6), ("root", 99),
                         ("points_json", "[[1, 2]"), ("points_json", "x" * (pr.MAX_TEXT + 1)),
                         ("control_json", "[1]"), ("seq", -1), ("points_json", 5)]:
        with pytest.raises(FlipbookInputError, match=field):
            svc.render(_req(**{field: value}))
    with pytest.raises(FlipbookInputError, match="points_json"):
        svc.render(_req(points_json="[[10, 10], [900, 10]]"))            # off the 512² picture
    with pytest.raises(FlipbookInputError, match="targets_json"):
        svc.render(_req(kind="cpab", targets_json="[[1, 2, 3]]"))
    with pytest.raises(FlipbookInputError, match="preview request"):
        svc.render([1, 2])


def test_a_newer_request_supersedes_an_older_one(svc, monkeypatch):
    svc.render(_req(client="c1", seq=5, frame=0))
    with pytest.raises(pr.Superseded):
        svc.render(_req(client="c1", seq=4, frame=0))                     # arrived late
    assert svc.render(_req(client="c2", seq=1, frame=0))["seq"] == 1      # other clients are not affected
    # a request still rendering when a newer one arrives stops between frames
    started, release = threading.Event(), threading.Event()
    real = svc._checker

    def slow_checker(client, seq, deadline):
        check = real(client, seq, deadline)

        def wrapped(*a):
            if seq == 6:
                started.set()
                release.wait(10)
            return check(*a)
        return wrapped

    monkeypatch.setattr(svc, "_checker", slow_checker)
    result = {}

    def old():
        try:
            svc.render(_req(client="c1", seq=6))
        except pr.Superseded:
            result["old"] = "superseded"

    t = threading.Thread(target=old)
    t.start()
    assert started.wait(10)
    svc.announce("c1", 7)                                                 # what a newer request does first
    release.set()
    t.join(30)
    assert result == {"old": "superseded"}


def test_time_limit(svc, monkeypatch):
    monkeypatch.setattr(pr, "TIME_LIMIT_S", -1.0)
    with pytest.raises(FlipbookInputError, match="longer than"):
        svc.render(_req(frame=0))


def test_http_handler_answers_json(svc):
    """The aiohttp handler: 200 with frames, 400 naming the input, 409 superseded, 400 for unreadable JSON."""
    pytest.importorskip("aiohttp")
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    async def go():
        async def route(request):
            return await pr.handle(request, svc)

        app = web.Application()
        app.router.add_post("/flipbook/preview", route)
        async with TestClient(TestServer(app)) as client:
            r = await client.post("/flipbook/preview", json=_req(frame=1, client="h", seq=3))
            ok = (r.status, await r.json())
            r = await client.post("/flipbook/preview", json=_req(frames=1000))
            bad = (r.status, await r.json())
            r = await client.post("/flipbook/preview", json=_req(client="h", seq=2))
            late = (r.status, await r.json())
            r = await client.post("/flipbook/preview", data=b"{not json")
            junk = r.status
        return ok, bad, late, junk

    ok, bad, late, junk = asyncio.run(go())
    assert ok[0] == 200 and ok[1]["frames"] == 1 and ok[1]["png"][0].startswith("data:image/png;base64,")
    assert bad[0] == 400 and "frames" in bad[1]["error"]
    assert late == (409, {"superseded": True, "seq": 2})
    assert junk == 400


def test_route_is_not_installed_outside_comfyui():
    assert pr.install_preview_route() is False
