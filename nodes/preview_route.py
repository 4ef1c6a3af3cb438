"""Live preview for the editors: ``POST /flipbook/preview`` renders what the widgets say, small and fast.

The keypoint, trajectory and warp-target editors (web/js/editors.js) send the widget values they edit;
the answer is the animation on a downscaled picture, through the weight-free clipart rig (mesh, Poisson
deformation, render; pipelines/flexiclip) or the CPAB keypoint warp (pipelines/cpab), as an animated
WebP or a list of PNGs (data URLs). Request (JSON), every field optional unless marked:

* ``kind``: ``"clipart"`` (default), ``"cpab"``, or ``"picture"`` (only the downscaled picture and its
  size, for an editor whose picture is no Load Image file);
* the picture (one of): ``image`` a file name in ComfyUI's input folder (Load Image's widget value,
  ``"name.png"``, ``"sub/name.png"`` or ``"name.png [input]"``), or ``node`` the id of a pack node whose
  last run held the picture (:func:`remember_image`). Nothing outside the input folder is read;
* ``points_json``, ``edges_json``, ``root``, ``normalized``: the Keypoints (JSON) widgets (required);
* ``frames``, ``preset``, ``amplitude``, ``loop``, ``cycles``, ``seed``, ``control_json``: the Bezier
  Trajectory widgets; ``targets_json`` (cpab): one target [x, y] (or null) per keypoint, a tween;
* ``max_side`` (32..256, default 192), ``frame`` (render only this frame: the fast answer while
  dragging), ``format`` (``"webp"`` or ``"png"``), ``client`` and ``seq`` (a newer ``seq`` from the same
  client supersedes an older request, which stops between frames and answers 409).

Bounds: the picture is downscaled to ``max_side`` (at most :data:`MAX_SIDE`), at most
:data:`MAX_FRAMES` frames, :data:`MAX_POINTS` keypoints, :data:`TIME_LIMIT_S` seconds per request (then
a 400 naming the limit), one preview rendering at a time.
"""
from __future__ import annotations

import base64
import io
import itertools
import logging
import os
import threading
import time
from collections import OrderedDict

import torch

from ..pipelines import bezier, coords, keypoints
from ..pipelines.errors import FlipbookInputError, fail
from ..pipelines.skeleton import KeypointTrack

_log = logging.getLogger("comfyui_flipbook")

MAX_SIDE = 256          # px, longest side of the preview picture
DEFAULT_SIDE = 192      # px: ~30 ms mesh + 4 ms a frame on a laptop CPU (benchmarks/RESULTS.md)
MAX_FRAMES = 48
MAX_POINTS = 256
MAX_TEXT = 100_000      # characters of one JSON widget value
TIME_LIMIT_S = 10.0
CPAB_PREVIEW = dict(iterations=6, nsteps_fit=10, nsteps_render=20, flow_resolution=64)  # coarser than the node


class Superseded(Exception):
    """A newer request of the same client arrived: this one stops."""


class _LRU(OrderedDict):
    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def get(self, key, default=None):
        if key in self:
            self.move_to_end(key)
            return self[key]
        return default

    def put(self, key, value):
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)


_last_images: _LRU = _LRU(16)        # node id -> (picture [h, w, C] <= MAX_SIDE, original (H, W), generation)
_image_generation = itertools.count()  # tells a re-run node's new picture from the old in the mesh cache
_images_lock = threading.Lock()


def _downscale(image: torch.Tensor, side: int) -> torch.Tensor:
    """[H, W, C] -> longest side ``side`` (never up), area-averaged."""
    h, w = image.shape[:2]
    s = min(1.0, side / max(h, w))
    if s >= 1.0:
        return image.contiguous()
    size = (max(1, round(h * s)), max(1, round(w * s)))
    x = torch.nn.functional.interpolate(image.permute(2, 0, 1)[None].float(), size=size, mode="area")
    return x[0].permute(1, 2, 0).contiguous()


def remember_image(node_id, image) -> None:
    """Keep a node's input picture (IMAGE [B, H, W, C]; the first frame, downscaled) for previews
    that name the node instead of a file (e.g. a picture that is not a Load Image file)."""
    if node_id is None or not isinstance(image, torch.Tensor) or image.dim() != 4:
        return
    with torch.inference_mode(False), _images_lock:
        _last_images.put(str(node_id), (_downscale(image[0].detach().cpu(), MAX_SIDE).clone(), tuple(image.shape[1:3]),
                                        next(_image_generation)))


def _strip_annotation(name: str) -> str:
    name = name.strip()
    if name.endswith("]") and " [" in name:
        name, kind = name[:-1].rsplit(" [", 1)
        if kind != "input":
            fail("image", "a file of ComfyUI's input folder", f"a file of the {kind!r} folder")
    return name


def _check_text(name: str, value, default=""):
    if value is None:
        return default
    if not isinstance(value, str):
        fail(name, "JSON text (a string)", type(value).__name__)
    if len(value) > MAX_TEXT:
        fail(name, f"at most {MAX_TEXT} characters", f"{len(value)}")
    return value


def _number(req: dict, name: str, default, lo, hi, kind=float):
    v = req.get(name, default)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or (kind is int and int(v) != v):
        fail(name, f"a{'n integer' if kind is int else ' number'} in [{lo}, {hi}]", repr(v)[:40])
    if not lo <= v <= hi:
        fail(name, f"a value in [{lo}, {hi}]", f"{v}")
    return kind(v)


def _choice(req: dict, name: str, default, options):
    v = req.get(name, default)
    if v not in options:
        fail(name, f"one of {list(options)}", repr(v)[:40])
    return v


class PreviewService:
    """Renders previews one at a time; remembers the newest ``seq`` of every client, pictures and meshes."""

    def __init__(self, resolve_input=None):
        from ._comfy import input_image_path

        self.resolve_input = resolve_input or input_image_path
        self.latest: dict[str, int] = {}
        self.lock = threading.Lock()          # one rendering at a time
        self._seq_lock = threading.Lock()
        self.pictures = _LRU(8)      # (path, mtime, side) -> (picture, original size)
        self.meshes = _LRU(4)        # (picture key, keypoints) -> (mesh, deformer)

    # --- supersession ---------------------------------------------------------------------------
    def announce(self, client: str, seq: int) -> None:
        """Called when a request arrives, before it waits for the renderer: newer ones win."""
        with self._seq_lock:
            if seq < self.latest.get(client, -1):
                raise Superseded()
            self.latest[client] = seq
            if len(self.latest) > 1024:      # bounded: forget the oldest clients
                for k in list(self.latest)[:512]:
                    del self.latest[k]

    def _checker(self, client: str, seq: int, deadline: float):
        def check(*_):
            if self.latest.get(client, seq) > seq:
                raise Superseded()
            if time.monotonic() > deadline:
                raise FlipbookInputError(f"preview: took longer than {TIME_LIMIT_S:.0f} s; ask for fewer frames or a "
                                         f"smaller max_side")
        return check

    # --- the picture ----------------------------------------------------------------------------
    def picture(self, req: dict, side: int):
        """(picture [h, w, C] float 0..1 of longest side <= ``side``, original (H, W), cache key)."""
        if req.get("node") is not None:
            with _images_lock:
                held = _last_images.get(str(req["node"]))
            if held is None:
                fail("node", "the id of a pack node that has run since ComfyUI started", repr(req["node"])[:40])
            img, full, generation = held
            return _downscale(img, side), full, ("node", str(req["node"]), generation, side)
        name = req.get("image")
        if not isinstance(name, str) or not name.strip():
            fail("image", "a file name of ComfyUI's input folder (or node: a node id)", repr(name)[:60])
        name = _strip_annotation(name)
        sub = req.get("subfolder") or ""
        if not isinstance(sub, str):
            fail("subfolder", "a folder name inside the input folder", repr(sub)[:40])
        if os.path.isabs(name) or os.path.isabs(sub) or ".." in (sub + "/" + name).replace("\\", "/").split("/"):
            fail("image", "a file name inside ComfyUI's input folder", repr(name)[:80])
        path = self.resolve_input(os.path.join(sub, name) if sub else name)
        key = (path, os.path.getmtime(path), side)
        hit = self.pictures.get(key)
        if hit is None:
            from ..pipelines.io import load_rgba

            full = load_rgba(path)
            hit = (_downscale(full, side), tuple(full.shape[:2]))
            self.pictures.put(key, hit)
        return hit[0], hit[1], key

    # --- rendering ------------------------------------------------------------------------------
    def render(self, req: dict) -> dict:
        if not isinstance(req, dict):
            fail("preview request", "a JSON object", type(req).__name__)
        client = str(req.get("client", ""))[:64]
        seq = _number(req, "seq", 0, 0, 2 ** 53, int)
        self.announce(client, seq)
        with self.lock, torch.inference_mode():
            t0 = time.monotonic()
            check = self._checker(client, seq, t0 + TIME_LIMIT_S)
            check()
            out = self._render(req, check)
            out.update(seq=seq, ms=round(1000 * (time.monotonic() - t0), 1))
            return out

    def _render(self, req: dict, check) -> dict:
        kind = _choice(req, "kind", "clipart", ("clipart", "cpab", "picture"))
        side = _number(req, "max_side", DEFAULT_SIDE, 32, MAX_SIDE, int)
        if kind == "picture":            # the picture itself, for an editor whose node has no Load Image
            pic, full, _ = self.picture(req, side)
            return {"kind": kind, "frames": 1, "size": list(pic.shape[:2]), "canvas": list(full), "frame": None,
                    "png": [_png(pic)]}
        n_frames = _number(req, "frames", 24, 1, MAX_FRAMES, int)
        only = req.get("frame")
        if only is not None:
            only = _number(req, "frame", 0, 0, n_frames - 1, int)
        fmt = _choice(req, "format", "webp", ("webp", "png"))
        fps = _number(req, "fps", 12.0, 1.0, 60.0)
        pic, full, pic_key = self.picture(req, side)
        small = tuple(pic.shape[:2])
        sk = keypoints.skeleton_from_json(_check_text("points_json", req.get("points_json")),
                                          _check_text("edges_json", req.get("edges_json")), full,
                                          normalized=bool(req.get("normalized", False)),
                                          root=_number(req, "root", -1, -1, MAX_POINTS, int))
        if sk.num_points > MAX_POINTS:
            fail("points_json", f"at most {MAX_POINTS} keypoints in a preview", f"{sk.num_points}")
        targets = _check_text("targets_json", req.get("targets_json"))
        if kind == "cpab" and targets.strip():
            tgt = keypoints.targets_from_json(targets, sk).points
            track, control = None, None
        else:
            traj = bezier.preset_trajectory(
                sk, _choice(req, "preset", "wave", bezier.PRESETS), n_frames=n_frames,
                amplitude=_number(req, "amplitude", 0.06, 0.0, 0.5),
                loop=_choice(req, "loop", "loop", bezier.LOOP_MODES), cycles=_number(req, "cycles", 1, 1, 64, int),
                seed=_number(req, "seed", 0, 0, 2 ** 64 - 1, int), control_json=_check_text("control_json", req.get("control_json")))
            track, control, tgt = traj.frames(), traj.control, None
        check()
        if kind == "clipart":
            frames = self._clipart(req, pic, pic_key, sk, track, small, only, check)
        else:
            frames = self._cpab(pic, sk, track, tgt, small, n_frames, only, check)
        out = {"kind": kind, "frames": int(frames.shape[0]), "size": list(small), "canvas": list(full),
               "frame": only}
        if control is not None:
            out["control"] = [[[round(float(v), 2) for v in q] for q in c] for c in control.tolist()]
        if track is not None:
            out["track"] = [[[round(float(v), 2) for v in q] for q in f] for f in track.tolist()]
        check()
        if fmt == "webp" and only is None:
            out["webp"] = _webp(frames, fps)
        else:
            out["png"] = [_png(f) for f in frames]
        return out

    def _clipart(self, req, pic, pic_key, sk, track, small, only, check):
        from ..pipelines.deform import METHODS, MeshDeformer
        from ..pipelines.flexiclip import triangle_area
        from ..pipelines.flexiclip import settings as clip
        from ..pipelines.mesh import build_mesh
        from ..pipelines.render import render_mesh

        sk_small = sk.scaled_to(small)
        method = _choice(req, "method", clip.DEFORM.method, METHODS)
        lam = _number(req, "constraint_lambda", clip.DEFORM.constraint_lambda, 1e-3, 1e6)
        area = _number(req, "max_triangle_area", clip.MESH.max_triangle_area, 2.0, 5000.0)
        margin = _number(req, "margin_px", clip.MESH.margin_px, 0.0, 64.0)
        key = (pic_key, tuple(map(tuple, sk_small.points.tolist())), tuple(map(tuple, sk_small.edges.tolist())),
               sk_small.root, method, lam, area, margin)
        hit = self.meshes.get(key)
        if hit is None:
            alpha = pic[..., 3] if pic.shape[-1] == 4 else None
            mesh = build_mesh(pic[..., :3] if alpha is None else pic, alpha, sk_small,
                              max_area=triangle_area(small, area), margin_px=margin * small[0] / max(sk.canvas[0], 1))
            check()
            hit = (mesh, MeshDeformer(mesh, method=method, constraint_lambda=lam))
            self.meshes.put(key, hit)
        mesh, deformer = hit
        pts = coords.rescale_pixels(track, sk.canvas, small)
        pts = KeypointTrack(pts, None, small).points
        if only is not None:
            pts = pts[only:only + 1]
        verts = deformer.deform(pts)
        check()
        bg = _choice(req, "background", "white", ("white", "black", "grey"))
        colour = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0), "grey": (0.5, 0.5, 0.5)}[bg]
        out = []
        for i in range(0, len(verts), 8):
            out.append(render_mesh(mesh, verts[i:i + 8], background=colour)[0])
            check()
        return torch.cat(out)

    def _cpab(self, pic, sk, track, tgt, small, n_frames, only, check):
        from ..pipelines import cpab

        src = coords.rescale_pixels(sk.points.float(), sk.canvas, small)
        if tgt is not None:
            targets = coords.rescale_pixels(tgt, sk.canvas, small)
        else:
            targets = coords.rescale_pixels(track, sk.canvas, small)
            if only is not None:
                targets = targets[only:only + 1]
        image = pic.permute(2, 0, 1)[None]
        rgb, alpha = image[:, :3], (image[:, 3:] if image.shape[1] == 4 else None)
        res = cpab.keypoint_warp(rgb, src, targets, tween_frames=n_frames if tgt is not None else 0, mask=alpha,
                                 fit_callback=check, render_callback=check, **CPAB_PREVIEW)
        frames = res.frames.permute(0, 2, 3, 1)
        if res.mask is not None:                 # composite on white, as the shipped workflow does
            a = res.mask[..., None]
            frames = frames * a + (1 - a)
        if tgt is not None and only is not None:
            frames = frames[min(only, len(frames) - 1)][None]
        return frames


def _uint8(frames: torch.Tensor):
    return (frames[..., :3].clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def _png(frame: torch.Tensor) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(_uint8(frame)).save(buf, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _webp(frames: torch.Tensor, fps: float) -> str:
    from PIL import Image

    ims = [Image.fromarray(a) for a in _uint8(frames)]
    buf = io.BytesIO()
    ims[0].save(buf, format="WEBP", save_all=True, append_images=ims[1:], duration=round(1000 / fps), loop=0,
                quality=75, method=0)
    return "data:image/webp;base64," + base64.b64encode(buf.getvalue()).decode()


SERVICE: PreviewService | None = None


def service() -> PreviewService:
    global SERVICE
    if SERVICE is None:
        SERVICE = PreviewService()
    return SERVICE


async def handle(request, svc: PreviewService | None = None):
    """The aiohttp handler: JSON in, JSON out; 400 with the input's name on bad input, 409 superseded."""
    import asyncio

    from aiohttp import web

    svc = svc or service()
    try:
        body = await request.json()
    except Exception:
        return web.json_response({"error": "preview request: expected a JSON object, got unreadable JSON"}, status=400)
    try:
        out = await asyncio.get_running_loop().run_in_executor(None, svc.render, body)
    except Superseded:
        return web.json_response({"superseded": True, "seq": body.get("seq") if isinstance(body, dict) else None},
                                 status=409)
    except FlipbookInputError as exc:
        return web.json_response({"error": str(exc)}, status=400)
    except Exception as exc:          # a preview must never take the server down
        _log.exception("ComfyUI-Flipbook: preview failed")
        return web.json_response({"error": f"preview failed: {type(exc).__name__}: {exc}"}, status=500)
    return web.json_response(out)


def install_preview_route() -> bool:
    """Inside ComfyUI: add ``POST /flipbook/preview`` to the PromptServer (as nodes/migrations.py does)."""
    from ._comfy import prompt_server

    server = prompt_server()
    if server is None or not hasattr(server, "routes"):     # plain Python, tests
        return False
    try:
        server.routes.post("/flipbook/preview")(handle)
    except Exception:
        _log.exception("ComfyUI-Flipbook: could not add the /flipbook/preview route")
        return False
    return True
