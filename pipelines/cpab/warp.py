"""Dense CPAB flow and warping of images and masks (spec cpab.md §1.5, §3.2 steps 3-4).

The transform is integrated on a coarse grid (``flow_resolution`` on the long side), its
*displacement* is upsampled bilinearly to the image, and ``grid_sample`` reads the source there.
The map is a backward map: output pixel p shows the source at T_θ^t(p). Fitting T(target) ≈ source
therefore moves the source keypoints onto the targets in the output.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F

from ..coords import pixel_to_unit, unit_to_ndc, unit_to_pixel
from ..errors import check_finite, fail
from ..progress import StepCallback, report
from .tessellation import Tessellation, tessellation
from .transform import identity_grid, integrate, step_tables, theta_to_affine
from ..seeds import generator as seed_generator

INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
PADDINGS = ("border", "reflection", "zeros")
RANDOM_MODES = ("wiggle", "tween", "independent")


@dataclass
class CPABParams:
    """θ for F frames plus everything needed to use them again. ComfyUI type FLIPBOOK_CPAB_PARAMS.

    θ is portable: the basis B is canonical (the same on every machine, see tessellation.null_space);
    :meth:`velocity` gives the per-cell fields ``vec A = B θ`` for use outside this package.
    """

    theta: torch.Tensor                      # [F, d] float64
    cells: tuple[int, int]                   # (nx, ny)
    zero_boundary: bool = True
    volume_preserving: bool = False
    canvas: tuple[int, int] | None = None    # (H, W) the fit was made on
    t: torch.Tensor = field(default=None)    # [F] time along the path per frame (1 = full)

    def __post_init__(self):
        self.theta = torch.as_tensor(self.theta, dtype=torch.float64).reshape(-1, self.tess.dim)
        if self.t is None:
            self.t = torch.ones(self.theta.shape[0], dtype=torch.float64)
        self.t = torch.as_tensor(self.t, dtype=torch.float64).reshape(-1).expand(self.theta.shape[0]).clone()

    @property
    def tess(self) -> Tessellation:
        return tessellation(self.cells[0], self.cells[1], self.zero_boundary, self.volume_preserving)

    @property
    def num_frames(self) -> int:
        return int(self.theta.shape[0])

    def velocity(self) -> torch.Tensor:
        return theta_to_affine(self.tess, self.theta)

    def inverse(self) -> "CPABParams":
        return replace(self, theta=-self.theta, t=self.t.clone())

    def tween(self, n_frames: int) -> "CPABParams":
        """T^t for t = 0..1 over n_frames, from the last θ (a diffeomorphic path from the identity)."""
        if n_frames < 1:
            fail("n_frames", "at least 1", f"{n_frames}")
        t = torch.linspace(0, 1, n_frames, dtype=torch.float64) if n_frames > 1 else torch.ones(1, dtype=torch.float64)
        return replace(self, theta=self.theta[-1:].expand(n_frames, -1).clone(), t=t)

    def at(self, t: float) -> "CPABParams":
        return replace(self, theta=self.theta.clone(), t=torch.full_like(self.t, float(t)) * self.t)


def coarse_size(size: tuple[int, int], flow_resolution: int) -> tuple[int, int]:
    h, w = size
    if flow_resolution < 2:
        fail("flow_resolution", "at least 2", f"{flow_resolution}")
    s = min(1.0, flow_resolution / max(h, w))
    return max(2, min(h, round(h * s))), max(2, min(w, round(w * s)))


def sampling_grid(params: CPABParams, size: tuple[int, int], *, flow_resolution: int = 128, nsteps: int = 50,
                  chunk: int = 16, callback: StepCallback | None = None) -> torch.Tensor:
    """Where every output pixel reads the source: [F, H, W, 2] in [0,1]² units (x, y).

    With zero_boundary the positions are clamped to [0,1]²: the continuous map keeps the domain,
    and the clamp removes the ≤0.01 px excursions of the step scheme (spec §1.5).
    """
    h, w = size
    tess = params.tess
    ch, cw = coarse_size(size, flow_resolution)
    ident_c = identity_grid((ch, cw))
    ident = identity_grid((h, w))
    out = []
    n = params.num_frames
    for i in range(0, n, chunk):
        theta = params.theta[i:i + chunk]
        table = step_tables(tess, theta, nsteps, params.t[i:i + chunk]).float()
        pts = ident_c.reshape(1, -1, 2).expand(theta.shape[0], -1, -1)
        disp = integrate(pts, table, tess.nx, tess.ny, nsteps).reshape(-1, ch, cw, 2) - ident_c
        if (ch, cw) != (h, w):
            disp = F.interpolate(disp.permute(0, 3, 1, 2), size=(h, w), mode="bilinear",
                                 align_corners=True).permute(0, 2, 3, 1)
        grid = (disp + ident).contiguous()          # (x, y) interleaved: grid_sample reads it ~3× faster
        if params.zero_boundary:
            grid = grid.clamp_(0.0, 1.0)
        out.append(grid)
        report(callback, min(i + chunk, n), n)
    return torch.cat(out)


def grid_to_flow(grid01: torch.Tensor) -> torch.Tensor:
    """Backward displacement in pixels, [F, H, W, 2] (x, y): source position minus pixel position."""
    size = tuple(grid01.shape[1:3])
    return unit_to_pixel(grid01 - identity_grid(size, dtype=grid01.dtype), size)


def flow_to_grid(flow: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`grid_to_flow`: [F, H, W, 2] pixels -> sampling positions in [0,1]²."""
    size = tuple(flow.shape[1:3])
    return pixel_to_unit(flow, size) + identity_grid(size, dtype=flow.dtype)


def warp(images: torch.Tensor, grid01: torch.Tensor, *, interpolation: str = "bilinear",
         padding: str = "border") -> torch.Tensor:
    """Sample images [1 or F, C, H, W] at grid01 [F, H, W, 2] -> [F, C, H, W].

    One frame at a time into a preallocated result: batching an expanded picture makes
    grid_sample copy it per frame, and scaling the whole grid batch at once runs out of cache
    (both measured ~2× slower, benchmarks/cpab.py)."""
    if interpolation not in INTERPOLATIONS:
        fail("interpolation", f"one of {INTERPOLATIONS}", repr(interpolation))
    if padding not in PADDINGS:
        fail("padding", f"one of {PADDINGS}", repr(padding))
    n = grid01.shape[0]
    if images.shape[0] not in (1, n):
        fail("image", f"1 or {n} frames", f"{images.shape[0]}")
    out = images.new_empty(n, images.shape[1], *grid01.shape[1:3])
    g = images.new_empty(1, *grid01.shape[1:])
    for i in range(n):
        unit_to_ndc(grid01[i:i + 1], out=g)                    # [0,1] -> grid_sample's [-1,1]
        src = images[:1] if images.shape[0] == 1 else images[i:i + 1]
        out[i] = F.grid_sample(src, g, mode=interpolation, padding_mode=padding, align_corners=True)[0]
    return out.clamp_(0, 1) if interpolation == "bicubic" else out


def random_params(cells: tuple[int, int], n_frames: int, *, strength: float = 0.5, length_scale: float = 0.1,
                  zero_boundary: bool = True, volume_preserving: bool = False, mode: str = "wiggle",
                  seed: int = 0, canvas: tuple[int, int] | None = None) -> CPABParams:
    """Random smooth deformations from the prior θ ~ N(0, strength² Σ_θ) (spec §1.5).

    mode "wiggle": a seamless loop θ_f = cos(2πf/F) θ₁ + sin(2πf/F) θ₂ (each frame is a prior draw);
    "tween": one draw walked from the identity (t = 0) to the full deformation (t = 1);
    "independent": one draw per frame.
    """
    tess = tessellation(cells[0], cells[1], zero_boundary, volume_preserving)
    if strength < 0:
        fail("strength", "a value >= 0", f"{strength}")
    g = seed_generator(seed)
    if mode == "wiggle":
        a, b = tess.sample_theta(2, length_scale, strength, generator=g)
        ang = torch.arange(n_frames, dtype=torch.float64) * (2 * math.pi / max(n_frames, 1))
        theta = torch.cos(ang)[:, None] * a + torch.sin(ang)[:, None] * b
        return CPABParams(theta, cells, zero_boundary, volume_preserving, canvas)
    if mode == "tween":
        theta = tess.sample_theta(1, length_scale, strength, generator=g)
        return CPABParams(theta, cells, zero_boundary, volume_preserving, canvas).tween(n_frames)
    if mode == "independent":
        theta = tess.sample_theta(n_frames, length_scale, strength, generator=g)
        return CPABParams(theta, cells, zero_boundary, volume_preserving, canvas)
    fail("mode", f"one of {RANDOM_MODES}", repr(mode))


def flow_to_image(flow: torch.Tensor, max_magnitude: float = 0.0) -> torch.Tensor:
    """Colour-wheel picture of a flow [F, H, W, 2] -> IMAGE [F, H, W, 3]: hue = direction,
    saturation = magnitude / max (the largest magnitude over all frames when max_magnitude is 0),
    white = no motion."""
    flow = check_finite("flow", flow.float())
    u, v = flow[..., 0], flow[..., 1]
    mag = torch.sqrt(u * u + v * v)
    m = float(max_magnitude) if max_magnitude > 0 else float(mag.max())
    sat = (mag / m).clamp(0, 1) if m > 0 else torch.zeros_like(mag)
    hue = (torch.atan2(-v, -u) / math.pi + 1) * 3.0            # 0..6 around the wheel
    k = torch.stack([(5 + hue) % 6, (3 + hue) % 6, (1 + hue) % 6], -1)
    rgb = 1 - (torch.minimum(k, 4 - k).clamp(0, 1))              # HSV with V=1, S=1
    return 1 - sat.unsqueeze(-1) * (1 - rgb)
