"""A synthetic motion dataset generated in code (ours): the pack's drawn character (and simple drawn
shapes), recoloured, moved by smooth random affine motions plus a CPAB wiggle, over textured or plain
backgrounds that drift slightly (a camera). Clip ``i`` is a pure function of (seed, i), so a
held-out set is just other clip numbers; frames are drawn on demand, nothing is stored.
"""
from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F

from ... import cpab
from ...synthetic import synthetic_character
from .data import _hue
from .data import _seed_generator as _gen

HELD_OUT = 1_000_000          # clip numbers from here on are the held-out set


@lru_cache(maxsize=4)
def _sprite(size: int) -> torch.Tensor:
    rgba, _ = synthetic_character(2 * size)                   # drawn at 2× and shrunk: smooth edges
    x = rgba.permute(2, 0, 1)[None]
    x = torch.cat([x[:, :3] * x[:, 3:], x[:, 3:]], 1)         # premultiplied for the resampling
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]


class SyntheticMotion:
    """``clips`` clips of ``frames`` frames at ``size``². ``pair(i, seed)`` -> two frames of clip i
    (chosen by seed); ``video(i)`` -> all frames [F,3,H,W]. ``held_out=True`` numbers the clips from
    :data:`HELD_OUT`, disjoint from the training clips."""

    def __init__(self, clips: int = 2000, *, size: int = 64, frames: int = 12, seed: int = 0,
                 held_out: bool = False, wiggle: float = 0.25, camera: float = 0.12):
        self.clips, self.size, self.num_frames, self.seed = int(clips), int(size), int(frames), int(seed)
        self.offset = HELD_OUT if held_out else 0
        self.wiggle, self.camera = wiggle, camera

    def __len__(self):
        return self.clips

    def _clip(self, i):
        g = _gen(self.seed * 7_919 + self.offset + i)
        u = lambda lo, hi: lo + (hi - lo) * float(torch.rand((), generator=g))           # noqa: E731
        s = self.size
        # background: plain (30%) or a few coloured sinusoids; its drift over the clip
        base = torch.rand(3, 1, 1, generator=g) * 0.6 + 0.3
        if float(torch.rand((), generator=g)) < 0.3:
            bg = base.expand(3, s, s).clone()
        else:
            yy, xx = torch.meshgrid(torch.linspace(0, 1, 2 * s), torch.linspace(0, 1, 2 * s), indexing="ij")
            bg = base.expand(3, 2 * s, 2 * s).clone()
            for _ in range(3):
                f, a = u(2, 9), u(0, 2 * math.pi)
                wave = torch.sin(2 * math.pi * f * (xx * math.cos(a) + yy * math.sin(a)) + u(0, 6.3))
                bg = bg + 0.12 * wave[None] * (torch.rand(3, 1, 1, generator=g) - 0.5) * 2
            bg = bg.clamp(0, 1)
        sprite = _sprite(s).clone()
        rgb = sprite[:3] / sprite[3:].clamp_min(1e-6)
        rgb = _hue(rgb[None], u(0, 1))[0] if float(torch.rand((), generator=g)) < 0.7 else rgb
        sprite = torch.cat([rgb * sprite[3:], sprite[3:]], 0)
        motion = {k: (u(*c), u(*a), u(0.5, 1.5), u(0, 2 * math.pi)) for k, c, a in (
            ("tx", (-0.25, 0.25), (0.05, 0.2)), ("ty", (-0.15, 0.15), (0.03, 0.15)),
            ("rot", (-0.3, 0.3), (0.05, 0.3)), ("scale", (0.75, 1.0), (0.0, 0.1)))}
        drift = (u(-self.camera, self.camera), u(-self.camera, self.camera), u(0, 2 * math.pi))
        wig = cpab.random_params((3, 3), self.num_frames, strength=self.wiggle, length_scale=0.3, mode="wiggle",
                                 seed=int(torch.randint(2 ** 31, (), generator=g))) if self.wiggle > 0 else None
        return bg, sprite, motion, drift, wig

    def _render(self, clip, times):
        bg, sprite, motion, drift, wig = clip
        s = self.size
        n = len(times)
        t = torch.tensor(times, dtype=torch.float32) / max(self.num_frames, 1)
        val = {k: c + a * torch.sin(2 * math.pi * f * t + p) for k, (c, a, f, p) in motion.items()}
        # where each output pixel reads the sprite: the inverse of scale·rotate then translate
        cos, sin, sc = torch.cos(val["rot"]), torch.sin(val["rot"]), val["scale"]
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0], theta[:, 0, 1] = cos / sc, sin / sc
        theta[:, 1, 0], theta[:, 1, 1] = -sin / sc, cos / sc
        # the camera: the background texture pans by δ(t) (texture units), the character with it
        cam = torch.tensor(drift[:2]).view(1, 2) * torch.sin(2 * math.pi * t + drift[2]).view(n, 1)
        off = torch.stack([val["tx"], val["ty"]], 1) - 2 * cam
        theta[:, :, 2] = -(theta[:, :, :2] @ off.unsqueeze(-1)).squeeze(-1)
        grid = F.affine_grid(theta, (n, 4, s, s), align_corners=False)
        src = sprite[None].expand(n, -1, -1, -1)
        if wig is not None:
            sel = cpab.CPABParams(wig.theta[list(times)], wig.cells, wig.zero_boundary)
            src = cpab.warp(src, cpab.sampling_grid(sel, (s, s), flow_resolution=s // 2, nsteps=20))
        fg = F.grid_sample(src, grid, align_corners=False, padding_mode="zeros")
        if bg.shape[1] == s:
            back = bg[None].expand(n, -1, -1, -1)
        else:                                     # the central half of a 2× texture, panned
            base = F.affine_grid(torch.eye(2, 3)[None].expand(n, -1, -1) * 0.5, (n, 3, s, s), align_corners=False)
            back = F.grid_sample(bg[None].expand(n, -1, -1, -1), base + cam.view(n, 1, 1, 2), align_corners=False,
                                 padding_mode="reflection")
        return (fg[:, :3] + back * (1 - fg[:, 3:])).clamp(0, 1)

    def pair(self, index: int, seed: int) -> dict:
        g = _gen(seed)
        times = sorted(torch.randint(self.num_frames, (2,), generator=g).tolist())
        frames = self._render(self._clip(int(index) % self.clips), times)
        if float(torch.rand((), generator=g)) < 0.5:          # the releases' horizontal flip
            frames = frames.flip(3)
        return {"source": frames[0], "driving": frames[1], "name": f"clip{index}"}

    def video(self, index: int, max_frames: int = 0) -> torch.Tensor:
        n = self.num_frames if not max_frames else min(max_frames, self.num_frames)
        return self._render(self._clip(int(index)), list(range(n)))
