"""CPABMM inference: keypoints -> N local + 1 global CPAB fits -> dense motion -> inpainting
(spec cpab.md §2.1-2.2, §2.7, §3.1). Every network runs without autograd; the θ fits use the
hand-written gradients of :mod:`..cpab.transform`, so the whole path runs under inference_mode.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..coords import ndc_to_unit, unit_to_ndc
from ..cpab import fit_theta, tessellation, transform_grid
from ..errors import check_image, fail
from ..progress import Check, StepCallback, poll, report
from .model import CPABMM
from .networks import coordinate_grid
from .settings import ANIMATE

MODES = ("relative", "standard", "avd")
GROUP = 5          # keypoints per local transform


def fit_cpab_grids(kp_source: torch.Tensor, kp_driving: torch.Tensor, size: tuple[int, int], *, num_cpab: int,
                   max_iter: int = 100, global_factor: float = 1.5, nsteps: int = 50, lr: float = 1e-2,
                   partial_cells: int = 4, global_cells: int = 6) -> torch.Tensor:
    """The N local + 1 global backward grids [bs, N+1, h, w, 2] in [-1, 1] (C:dense_motion.py:32-99).

    Each θ is fitted so that T_θ(kp_driving) ≈ kp_source with CPABMM's own recipe: zero_boundary off,
    θ₀ = 1e-6, Adam(lr 1e-2) on the unsquared norm of a frame's residuals, max_iter iterations for
    the local transforms (5 keypoints each, 4×4 cells) and 1.5·max_iter for the global one (all
    keypoints, 6×6 cells). Frames in the batch are independent (one norm per frame).
    """
    bs = kp_source.shape[0]
    h, w = size
    ks = ndc_to_unit(kp_source.double())
    kd = ndc_to_unit(kp_driving.double())
    out = []
    for cells, groups, iters in ((partial_cells, num_cpab, max_iter),
                                 (global_cells, 1, max(1, round(global_factor * max_iter)))):
        tess = tessellation(cells, cells, False, False)
        src = kd.reshape(bs * groups, -1, 2)
        dst = ks.reshape(bs * groups, -1, 2)
        theta0 = torch.full((bs * groups, tess.dim), 1e-6, dtype=torch.float64)
        res = fit_theta(tess, src, dst, method="adam", iterations=iters, lr=lr, nsteps=nsteps, prior_strength=0.0,
                        theta0=theta0, loss="norm", norm_group=groups)
        grid = transform_grid(tess, res.theta.float(), (h, w), nsteps)          # [bs·groups, h, w, 2] in [0,1]
        out.append(unit_to_ndc(grid).view(bs, groups, h, w, 2))
    return torch.cat(out, 1)


def background_grid(bs: int, size, bg_param: torch.Tensor | None) -> torch.Tensor:
    """[bs, 1, h, w, 2]: the identity, or the affine background motion (homogeneous division)."""
    grid = coordinate_grid(*size).expand(bs, *size, 2)
    if bg_param is None:
        return grid.unsqueeze(1).clone()
    homo = torch.cat([grid, torch.ones_like(grid[..., :1])], -1)
    moved = torch.einsum("bij,bhwj->bhwi", bg_param, homo)
    return (moved[..., :2] / moved[..., 2:3]).unsqueeze(1)


def _hull_area(points) -> float:
    from scipy.spatial import ConvexHull, QhullError

    try:
        return float(ConvexHull(points.detach().cpu().double().numpy()).volume)
    except (QhullError, ValueError):
        return 0.0


def relative_keypoints(kp_source, kp_driving, kp_driving_initial):
    """kp_s + (kp_d − kp_d0)·sqrt(area(hull kp_s) / area(hull kp_d0)) (C:demo.py:22-34)."""
    a_s, a_d = _hull_area(kp_source[0]), _hull_area(kp_driving_initial[0])
    scale = math.sqrt(a_s / a_d) if a_s > 0 and a_d > 0 else 1.0
    return kp_source + (kp_driving - kp_driving_initial) * scale


def _to_model(images: torch.Tensor, size: int) -> torch.Tensor:
    x = images.permute(0, 3, 1, 2).float()
    if x.shape[2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x


@torch.no_grad()
def animate(model: CPABMM, source: torch.Tensor, driving: torch.Tensor, *, mode: str = ANIMATE.mode,
            max_iter: int | None = ANIMATE.max_iter, use_bg: bool = ANIMATE.use_bg, batch: int = ANIMATE.batch,
            initial_frame: int = 0, callback: StepCallback | None = None, check: Check | None = None) -> torch.Tensor:
    """Animate ``source`` IMAGE [1,H,W,3] with the motion of ``driving`` IMAGE [F,h,w,3] -> [F,H,W,3].

    mode: :data:`MODES` (spec §2.7); max_iter: the local fits' Adam iterations (0 or None: the
    config's); use_bg: the background predictor when the checkpoint has one; batch: driving frames
    per pass; initial_frame: the driving frame whose keypoints the relative mode measures motion from
    (C:demo.py --find_best_frame; :func:`.best_frame.find_best_frame` picks it).
    """
    # 1. Check inputs
    if mode not in MODES:
        fail("mode", f"one of {MODES}", repr(mode))
    source = check_image("source", source, channels=(3,))
    driving = check_image("driving", driving, channels=(3,))
    if mode == "avd" and model.avd_network is None:
        fail("mode", "'relative' or 'standard': this checkpoint has no AVD network", "'avd'")
    cfg = model.config
    size = int(cfg["size"])
    iters = int(cfg["max_iter"] if max_iter is None or max_iter <= 0 else max_iter)
    dev = next(model.parameters()).device
    # 2. The source at model and motion resolution, and its keypoints [1, K, 2] in [-1, 1]
    src = _to_model(source[:1], size).to(dev)
    kp_s = model.kp_detector(src)["fg_kp"]
    src_small = model.dense_motion_network.downsample(src)
    motion = tuple(src_small.shape[2:])
    n = driving.shape[0]
    if not 0 <= int(initial_frame) < n:
        fail("initial_frame", f"a driving frame index in 0..{n - 1}", str(initial_frame))
    kp_d0 = None
    if int(initial_frame) > 0:
        kp_d0 = model.kp_detector(_to_model(driving[int(initial_frame):int(initial_frame) + 1], size).to(dev))["fg_kp"]
    frames = []
    for i in range(0, n, batch):
        # 3. Driving keypoints, moved onto the source (relative / AVD / as detected)
        poll(check)
        drv = _to_model(driving[i:i + batch], size).to(dev)
        b = drv.shape[0]
        kp_d = model.kp_detector(drv)["fg_kp"]
        if kp_d0 is None:
            kp_d0 = kp_d[:1]
        ks = kp_s.expand(b, -1, -1)
        if mode == "relative":
            kp_n = relative_keypoints(ks, kp_d, kp_d0)
        elif mode == "avd":
            kp_n = model.avd_network({"fg_kp": ks}, {"fg_kp": kp_d})["fg_kp"]
        else:
            kp_n = kp_d
        # 4. Backward grids: background, N local and 1 global CPAB transforms (§2.1-2.2)
        bg = model.bg_predictor(src.expand(b, -1, -1, -1), drv) if (use_bg and model.bg_predictor is not None) else None
        grids = torch.cat([background_grid(b, motion, bg).to(dev),
                           fit_cpab_grids(ks.cpu(), kp_n.cpu(), motion, num_cpab=model.num_cpab, max_iter=iters,
                                          global_factor=cfg["global_iter_factor"], nsteps=cfg["nsteps"],
                                          lr=cfg["lr"], partial_cells=cfg["partial_cells"],
                                          global_cells=cfg["global_cells"]).to(dev)], 1)
        # 5. Dense motion with occlusion, then inpainting; back to the source's size
        poll(check)
        dense = model.dense_motion_network(src_small.expand(b, -1, -1, -1), kp_n, ks, grids)
        out = model.inpainting_network(src.expand(b, -1, -1, -1), dense)["prediction"]
        if out.shape[2:] != tuple(source.shape[1:3]):
            out = F.interpolate(out, size=tuple(source.shape[1:3]), mode="bilinear", align_corners=False)
        frames.append(out.clamp(0, 1).permute(0, 2, 3, 1).cpu())
        report(callback, min(i + batch, n), n)
    return torch.cat(frames)
