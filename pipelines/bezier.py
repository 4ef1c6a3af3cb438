"""Keypoint trajectories: one cubic Bezier per keypoint (AniClipart/FlexiClip, spec flexiclip.md §1.4).

``c0`` is the keypoint; ``p(u) = (1-u)^3 c0 + 3(1-u)^2 u c1 + 3(1-u) u^2 c2 + u^3 c3``. Frame times
come from a loop mode. Weight-free presets (ours, spec §4) move joints perpendicular to the bone from
their parent, scaled by depth from the root, and return to rest (``c3 = c0``) so loops are seamless.
A :class:`Trajectory` may also hold explicit tracks (a :class:`~.skeleton.KeypointTrack`, e.g. from
a pose detector), bypassing the curves. ComfyUI type: ``FLIPBOOK_TRAJECTORY``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import torch

from .coords import clamp_to_canvas
from .errors import FlipbookInputError, check_finite, check_range, fail
from .skeleton import KeypointTrack, Skeleton
from .seeds import generator as seed_generator

LOOP_MODES = ("loop", "ping-pong", "once", "aniclipart")
PRESETS = ("still", "sway", "wave", "random")


def bezier(control: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Cubic Bezier points. control [..., 4, 2], u [T] -> [T, ..., 2]. Exact at u=0 and u=1."""
    u = u.to(control.dtype).reshape(-1, *([1] * (control.dim() - 1)))
    v = 1 - u
    c0, c1, c2, c3 = control.unbind(-2)
    return v ** 3 * c0 + 3 * v * v * u * c1 + 3 * v * u * u * c2 + u ** 3 * c3


def frame_times(n_frames: int, loop: str = "loop", cycles: int = 1) -> torch.Tensor:
    """Curve parameter u for every frame.

    - ``loop``: u = t/N over each cycle, never reaching 1 (seamless when the curve returns, c3 = c0);
    - ``ping-pong``: u rises 0→1 and falls back within each cycle, with no frame repeated at the turn;
    - ``once``: u = t/(N-1), first frame exactly c0, last exactly c3;
    - ``aniclipart``: the official schedule (A:painter_clipart.py:352-360, 477-480): S = N // (2·cycles)
      distinct poses at linspace(0,1,S), played forward then backward, the whole repeated ``cycles``
      times (turning poses appear twice).
    """
    if n_frames < 1:
        fail("frames", "at least 1", f"{n_frames}")
    if cycles < 1:
        fail("cycles", "at least 1", f"{cycles}")
    if loop not in LOOP_MODES:
        fail("loop", f"one of {LOOP_MODES}", f"{loop!r}")
    t = torch.arange(n_frames, dtype=torch.float64)
    if loop == "once":
        return t / max(n_frames - 1, 1)
    if loop == "loop":
        return torch.frac(t * cycles / n_frames)
    if loop == "ping-pong":
        x = torch.frac(t * cycles / n_frames)
        return 1 - (1 - 2 * x).abs()
    s = n_frames // (2 * cycles)
    if s < 1:
        fail("frames", f"at least {2 * cycles} frames for {cycles} AniClipart ping-pong cycles", f"{n_frames}")
    poses = torch.linspace(0, 1, s, dtype=torch.float64) if s > 1 else torch.zeros(1, dtype=torch.float64)
    one = torch.cat([poses, poses.flip(0)])
    u = one.repeat(cycles)
    if len(u) < n_frames:                       # N not divisible: hold the rest pose at the end
        u = torch.cat([u, u.new_zeros(n_frames - len(u))])
    return u


@dataclass
class Trajectory:
    """Where the K keypoints of a skeleton are in each of T frames. ComfyUI type ``FLIPBOOK_TRAJECTORY``.

    skeleton: the keypoints at rest (their canvas is the trajectory's).
    n_frames: T.
    control: [K, 4, 2] float32 px, one cubic Bezier per keypoint (``control[:, 0]`` is the keypoint),
        evaluated at :meth:`times` given ``loop`` and ``cycles``; or
    tracks: a :class:`~.skeleton.KeypointTrack` [T, K, 2] of explicit positions (pose-driven).

    >>> sk = Skeleton(torch.tensor([[8.0, 8.0], [8.0, 24.0]]), [[0, 1]], (32, 32))
    >>> Trajectory(sk, 3, preset_control(sk, "still")).frames().shape
    torch.Size([3, 2, 2])
    """

    skeleton: Skeleton
    n_frames: int
    control: torch.Tensor | None = None
    loop: str = "loop"
    cycles: int = 1
    tracks: KeypointTrack | None = None

    def __post_init__(self):
        if (self.control is None) == (self.tracks is None):
            raise FlipbookInputError("trajectory: expected either Bezier control points or explicit tracks")
        k = self.skeleton.num_points
        if self.control is not None and tuple(self.control.shape) != (k, 4, 2):
            fail("control points", f"[{k}, 4, 2] (4 points per keypoint)", f"{tuple(self.control.shape)}")
        if self.tracks is not None:
            if not isinstance(self.tracks, KeypointTrack):
                fail("tracks", "a KeypointTrack [frames, K, 2]", type(self.tracks).__name__)
            if self.tracks.num_points != k:
                fail("tracks", f"[frames, {k}, 2]", f"{tuple(self.tracks.points.shape)}")
            if tuple(self.tracks.canvas) != tuple(self.skeleton.canvas):
                fail("tracks", f"keypoints on the skeleton's canvas {self.skeleton.canvas}", f"{self.tracks.canvas}")
            self.n_frames = self.tracks.frames

    def times(self) -> torch.Tensor:
        return frame_times(self.n_frames, self.loop, self.cycles)

    def frames(self) -> torch.Tensor:
        """Keypoint positions for every frame, [T, K, 2] float32 px, clipped to the canvas."""
        if self.tracks is not None:
            return self.tracks.points
        pts = bezier(self.control.double(), self.times())
        return clamp_to_canvas(pts, self.skeleton.canvas).float()


def _bone_normals(sk: Skeleton) -> torch.Tensor:
    """Unit perpendicular to the bone from each joint's parent (the root uses its first child)."""
    parents = sk.parents()
    p = sk.points.double()
    d = torch.zeros_like(p)
    for i, par in enumerate(parents):
        if par >= 0:
            d[i] = p[i] - p[par]
        else:
            kids = [j for j, q in enumerate(parents) if q == i]
            d[i] = p[kids[0]] - p[i] if kids else torch.tensor([0.0, 1.0], dtype=p.dtype)
    n = torch.stack([-d[:, 1], d[:, 0]], 1)
    return n / n.norm(dim=1, keepdim=True).clamp_min(1e-9)


def preset_control(skeleton: Skeleton, preset: str = "sway", *, amplitude: float = 0.06,
                   seed: int = 0) -> torch.Tensor:
    """Control points [K, 4, 2] of a weight-free preset. ``amplitude`` is a fraction of the canvas.

    With ``s_i = depth_i / max_depth`` and ``d_i`` the unit normal of the bone from i's parent
    (spec flexiclip.md §4, "Presets (ours)"):
    - ``still``: all control points at the keypoint;
    - ``sway``: ``c1 = c2 = p + A s_i d_i``, ``c3 = p`` (every limb swings to one side and back);
    - ``wave``: ``c1 = p + 2σ_i A s_i d_i``, ``c2 = p − 2σ_i A s_i d_i`` with σ alternating by depth,
      ``c3 = p``: a swing through both sides (out at u≈0.21, back through rest at u=0.5, the other
      side at u≈0.79), neighbours out of phase; our refinement of the spec's alternating sign. The
      factor 2 gives a peak offset of 0.58·A, comparable to sway's 0.75·A;
    - ``random``: ``c1, c2 = p + A s_i g`` with g ~ N(0, I) from ``seed``, ``c3 = p``.
    """
    if preset not in PRESETS:
        fail("preset", f"one of {PRESETS}", f"{preset!r}")
    p = skeleton.points.double()
    h, w = skeleton.canvas
    a = float(amplitude) * max(h, w)
    depth = skeleton.depths().double()
    s = (depth / depth.max().clamp_min(1))[:, None]
    ctrl = p[:, None, :].repeat(1, 4, 1)
    if preset == "still":
        return ctrl.float()
    if preset == "random":
        g = seed_generator(seed)
        off = torch.randn(len(p), 2, 2, generator=g, dtype=torch.float64) * a * s[:, None]
        ctrl[:, 1:3] += off
        return ctrl.float()
    d = _bone_normals(skeleton)
    if preset == "sway":
        ctrl[:, 1] += a * s * d
        ctrl[:, 2] += a * s * d
    else:
        sigma = (1 - 2 * (depth % 2))[:, None]
        ctrl[:, 1] += 2 * sigma * a * s * d
        ctrl[:, 2] -= 2 * sigma * a * s * d
    return ctrl.float()


def parse_control_json(text: str, skeleton: Skeleton, base: torch.Tensor) -> torch.Tensor:
    """Override control points from JSON.

    ``[[[x1,y1],[x2,y2],[x3,y3]], null, ...]``: c1..c3 per keypoint in pixels (``null`` keeps the
    preset's), or ``{"relative": true, "control": [...]}`` for offsets from the keypoint.
    """
    if not text or not text.strip():
        return base
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FlipbookInputError(f"control_json: expected JSON, got a parse error: {exc.msg}") from None
    relative = False
    if isinstance(data, dict):
        relative = bool(data.get("relative", False))
        data = data.get("control")
    k = skeleton.num_points
    if not isinstance(data, list) or len(data) != k:
        fail("control_json", f"a list of {k} entries (one per keypoint, each [[x,y]x3] or null)",
             f"{type(data).__name__} of length {len(data) if isinstance(data, list) else '-'}")
    out = base.clone()
    for i, entry in enumerate(data):
        if entry is None:
            continue
        try:
            c = torch.tensor(entry, dtype=torch.float32).reshape(3, 2)
        except (TypeError, ValueError, RuntimeError):
            fail(f"control_json[{i}]", "three [x, y] points", str(entry)[:80])
        out[i, 1:] = c + skeleton.points[i] if relative else c
    return check_finite("control_json", out)


def preset_trajectory(skeleton: Skeleton, preset: str = "sway", *, n_frames: int = 24,
                      amplitude: float = 0.06, loop: str = "loop", cycles: int = 1, seed: int = 0,
                      control_json: str = "") -> Trajectory:
    if isinstance(n_frames, bool) or not isinstance(n_frames, int) or n_frames < 1:
        fail("frames", "an integer >= 1", repr(n_frames))
    if isinstance(cycles, bool) or not isinstance(cycles, int) or cycles < 1:
        fail("cycles", "an integer >= 1", repr(cycles))
    check_range("amplitude", float(amplitude), 0.0, 10.0)
    ctrl = preset_control(skeleton, preset, amplitude=amplitude, seed=seed)
    ctrl = parse_control_json(control_json, skeleton, ctrl)
    ctrl[:, 0] = skeleton.points                 # c0 is the keypoint (fix_start_points, spec §1.4)
    return Trajectory(skeleton, n_frames, ctrl, loop, cycles)
