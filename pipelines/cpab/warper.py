"""The weight-free CPAB keypoint warper, end to end (spec cpab.md §3.2): keypoints in pixels in,
frames, flow and θ out. The CPAB nodes, the tests and benchmarks/cpab.py all call this.

The map is backward (spec §1.5): θ is fitted so that T_θ(target) ≈ source, and output pixel p
reads the source at T_θ(p), so the output shows each source keypoint at its target.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import torch

from ..coords import pixel_to_unit, rescale_pixels
from ..errors import FlipbookInputError, check_points, fail
from ..progress import StepCallback
from ..skeleton import Skeleton
from .fit import fit_theta, fit_track
from .tessellation import check_tess, tessellation
from .warp import CPABParams, grid_to_flow, random_params, sampling_grid, warp


@dataclass(frozen=True)
class WarpSettings:
    """Defaults of the warper and its nodes (spec §3.2 "Parameters and defaults", our choices where
    marked there): square cells, 6 across; zero boundary; Levenberg-Marquardt, 10 iterations, 20
    integration steps while fitting and 50 (libcpab's) for rendering, a 128² flow grid."""
    cells: int = 6
    zero_boundary: bool = True
    volume_preserving: bool = False
    optimizer: str = "lm"
    iterations: int = 10               # Levenberg-Marquardt's; 0 in the nodes means "this or adam_iterations"
    adam_iterations: int = 100         # Adam's: lands within 0.05 px on the shipped example (10 left 3 px)
    lr: float = 0.05
    prior_strength: float = 0.01
    length_scale: float = 0.1
    fit_steps: int = 20
    steps: int = 50
    flow_resolution: int = 128
    interpolation: str = "bilinear"
    padding: str = "border"
    warm_start: bool = True
    temporal_weight: float = 0.0
    frames: int = 16                   # a tween's frames
    strength: float = 0.3              # random deformations: prior standard deviation


WARP = WarpSettings()


def fit_iterations(optimizer: str, iterations: int) -> int:
    """``iterations``, or for 0 the optimiser's own default: LM 10, Adam 100. Measured on the shipped
    cpab_keypoint_warp example (24 frames, warm start): Adam 10 -> 3.2 px max error, 100 -> 0.03 px;
    LM 10 -> 0.05 px (its early stop)."""
    if int(iterations) == 0:
        return WARP.adam_iterations if optimizer == "adam" else WARP.iterations
    return int(iterations)


@dataclass
class WarpResult:
    """frames: [F, C, H, W] warped picture (None when none was given); mask: [F, H, W] warped mask
    (None when none was given); grid: [F, H, W, 2] sampling positions in [0,1]² (:attr:`flow` in
    pixels); params: the θ of every frame; fit_error_px: [F_fit, K] per keypoint, or None."""
    frames: torch.Tensor | None
    grid: torch.Tensor
    params: CPABParams
    fit_error_px: torch.Tensor | None = None
    mask: torch.Tensor | None = None

    @property
    def flow(self) -> torch.Tensor:
        return grid_to_flow(self.grid)


def default_cells(cells_x: int, size: tuple[int, int]) -> tuple[int, int]:
    """Square cells in pixels: cells_y = round(cells_x · H / W) (at least 1)."""
    h, w = size
    return check_tess(cells_x, max(1, round(cells_x * h / w)))


def fit_keypoints(source_px: torch.Tensor, targets_px: torch.Tensor, size: tuple[int, int], *,
                  cells: tuple[int, int], zero_boundary: bool = WARP.zero_boundary,
                  volume_preserving: bool = WARP.volume_preserving, optimizer: str = WARP.optimizer,
                  iterations: int = WARP.iterations, lr: float = WARP.lr, prior_strength: float = WARP.prior_strength,
                  length_scale: float = WARP.length_scale, nsteps: int = WARP.fit_steps, weights=None,
                  warm_start: bool = WARP.warm_start, temporal_weight: float = WARP.temporal_weight,
                  callback: StepCallback | None = None):
    """θ per target frame such that the *output* shows each source keypoint at its target.

    source_px [K, 2]; targets_px [K, 2] or [F, K, 2]; pixels on a canvas of ``size`` = (H, W).
    Keypoints with weight 0 are ignored (and may lie anywhere); the others must be on the canvas.
    Returns (CPABParams, fit error per keypoint in px [F, K]).
    """
    h, w = size
    source_px = torch.as_tensor(source_px, dtype=torch.float32)
    targets_px = torch.as_tensor(targets_px, dtype=torch.float32)
    if targets_px.dim() == 2:
        targets_px = targets_px[None]
    if source_px.dim() != 2 or targets_px.dim() != 3 or targets_px.shape[1:] != source_px.shape:
        fail("target keypoints", f"{source_px.shape[0] if source_px.dim() == 2 else '?'} [x, y] points per frame, "
             "as many as the source keypoints", f"shape {tuple(targets_px.shape)} for source {tuple(source_px.shape)}")
    iterations = fit_iterations(optimizer, iterations)
    k = source_px.shape[0]
    wts = None if weights is None else torch.as_tensor(weights, dtype=torch.float64).reshape(-1, k)
    vis = slice(None) if wts is None else (wts.amax(0) > 0)
    check_points("source keypoints", source_px[vis], size=size)
    for f in range(targets_px.shape[0]):
        wf = vis if wts is None else (wts[min(f, wts.shape[0] - 1)] > 0)
        check_points("target keypoints" + (f" (frame {f})" if targets_px.shape[0] > 1 else ""),
                     targets_px[f][wf], size=size)
    # backward map: T(target) = source, so the output shows the source keypoint at the target
    src01, tgt01 = pixel_to_unit(source_px.double(), size), pixel_to_unit(targets_px.double(), size)
    tess = tessellation(cells[0], cells[1], zero_boundary, volume_preserving)
    kw = dict(method=optimizer, iterations=iterations, lr=lr, nsteps=nsteps, prior_strength=prior_strength,
              length_scale=length_scale, pixel_size=(w - 1, h - 1), weights=wts)
    if targets_px.shape[0] == 1:
        res = fit_theta(tess, tgt01, src01[None], callback=callback, **{**kw, "weights": None if wts is None else wts[0]})
    else:
        res = fit_track(tess, tgt01, src01[None].expand(targets_px.shape[0], -1, -1), warm_start=warm_start,
                        temporal_weight=temporal_weight, callback=callback, **kw)
    return CPABParams(res.theta, cells, zero_boundary, volume_preserving, (h, w)), res.error_px


def keypoint_targets(source: Skeleton, target: Skeleton | None = None, trajectory=None,
                     size: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Where the source keypoints are and where they go, in pixels of the picture ``size`` (H, W):
    (source [K, 2], target [K, 2]) for one target skeleton, (source [K, 2], track [F, K, 2]) for a
    trajectory (:class:`~..bezier.Trajectory`). Points on other canvases are rescaled
    (:func:`..coords.rescale_pixels`); ``size`` None keeps the source's canvas."""
    if not isinstance(source, Skeleton):
        fail("source_keypoints", "a FLIPBOOK_SKELETON", type(source).__name__)
    if target is None and trajectory is None:
        raise FlipbookInputError("target_keypoints / trajectory: connect one of them (where the source keypoints "
                                 "should move to), got neither")
    if target is not None and trajectory is not None:
        raise FlipbookInputError("target_keypoints / trajectory: connect only one of them, got both")
    size = tuple(source.canvas) if size is None else tuple(size)
    src = rescale_pixels(source.points.float(), source.canvas, size).clone()
    if target is not None:
        if not isinstance(target, Skeleton):
            fail("target_keypoints", "a FLIPBOOK_SKELETON", type(target).__name__)
        if target.num_points != source.num_points:
            fail("target_keypoints", f"{source.num_points} keypoints like the source", f"{target.num_points}")
        return src, rescale_pixels(target.points.float(), target.canvas, size).clone()
    frames = torch.as_tensor(trajectory.frames(), dtype=torch.float32)
    if frames.dim() != 3 or frames.shape[1] != source.num_points:
        fail("trajectory", f"tracks of {source.num_points} keypoints like the source", f"shape {tuple(frames.shape)}")
    return src, rescale_pixels(frames, trajectory.skeleton.canvas, size).clone()


def weights_from_json(text: str, k: int) -> torch.Tensor | None:
    """Per-keypoint weights from a JSON list of ``k`` numbers (0 = invisible), or None for empty text."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        w = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FlipbookInputError(f"weights_json: expected a JSON list of {k} numbers (0 = invisible), "
                                 f"got a parse error: {exc.msg}") from None
    w = torch.as_tensor(w, dtype=torch.float64)
    if w.dim() != 1 or w.numel() != k:
        fail("weights_json", f"a list of {k} numbers, one per keypoint (0 = invisible)", f"{text[:80]}")
    return w


def fit_report(params: CPABParams, error_px: torch.Tensor) -> str:
    """One line on a fit: frames, cells, d, the worst and mean keypoint error in pixels."""
    return (f"{params.num_frames} frame(s), cells {params.cells[0]}x{params.cells[1]}, d={params.tess.dim}; "
            f"max keypoint error {float(error_px.amax(-1).max()):.3f} px (mean {float(error_px.mean()):.3f} px)")


def render_warp(params: CPABParams, size: tuple[int, int], *, image: torch.Tensor | None = None,
           mask: torch.Tensor | None = None, flow_resolution: int = WARP.flow_resolution, nsteps: int = WARP.steps,
           interpolation: str = WARP.interpolation, padding: str = WARP.padding,
           callback: StepCallback | None = None) -> WarpResult:
    """Warp a picture [1 or F, C, H, W] and/or a mask [1 or F, 1, H, W] by ``params``: the
    sampling grid of every frame (:func:`.warp.sampling_grid`), then ``grid_sample`` (the mask
    bilinearly). The mask comes back as [F, H, W]."""
    grid = sampling_grid(params, size, flow_resolution=flow_resolution, nsteps=nsteps, callback=callback)
    frames = None if image is None else warp(image, grid, interpolation=interpolation, padding=padding)
    mask_out = None if mask is None else warp(mask, grid, interpolation="bilinear", padding=padding)[:, 0]
    return WarpResult(frames, grid, params, mask=mask_out)


def keypoint_warp(image: torch.Tensor, source_px, targets_px, *, tween_frames: int = 0, mask: torch.Tensor | None = None,
                  cells_x: int = WARP.cells, zero_boundary: bool = WARP.zero_boundary,
                  volume_preserving: bool = WARP.volume_preserving, optimizer: str = WARP.optimizer,
                  iterations: int = WARP.iterations, lr: float = WARP.lr, prior_strength: float = WARP.prior_strength,
                  length_scale: float = WARP.length_scale, nsteps_fit: int = WARP.fit_steps,
                  nsteps_render: int = WARP.steps, flow_resolution: int = WARP.flow_resolution,
                  interpolation: str = WARP.interpolation, padding: str = WARP.padding, weights=None,
                  warm_start: bool = WARP.warm_start, temporal_weight: float = WARP.temporal_weight,
                  fit_callback: StepCallback | None = None, render_callback: StepCallback | None = None) -> WarpResult:
    """Warp ``image`` [1, C, H, W] (and ``mask`` [1, 1, H, W]) so that the source keypoints move to the targets.

    targets_px [K, 2]: one fit, then with ``tween_frames`` >= 1 that many frames along T^t for
    t = 0..1 (0: the one fitted frame); targets_px [F, K, 2] (a track): one fit per frame
    (warm-started), one frame each.
    """
    # 1. Square cells on the picture
    size = (image.shape[-2], image.shape[-1])
    cells = default_cells(cells_x, size)
    # 2. Fit θ per target frame (backward map, §2.1 / §3.2 step 2)
    params, err = fit_keypoints(source_px, targets_px, size, cells=cells, zero_boundary=zero_boundary,
                                volume_preserving=volume_preserving, optimizer=optimizer, iterations=iterations,
                                lr=lr, prior_strength=prior_strength, length_scale=length_scale, nsteps=nsteps_fit,
                                weights=weights, warm_start=warm_start, temporal_weight=temporal_weight,
                                callback=fit_callback)
    # 3. One target: a diffeomorphic tween from the identity (§1.5 "Path")
    if torch.as_tensor(targets_px).dim() == 2 and tween_frames >= 1:
        params = params.tween(tween_frames)
    # 4. Dense grids and the warp (§3.2 steps 3-4)
    result = render_warp(params, size, image=image, mask=mask, flow_resolution=flow_resolution, nsteps=nsteps_render,
                    interpolation=interpolation, padding=padding, callback=render_callback)
    result.fit_error_px = err
    return result


def apply_params(params: CPABParams, size: tuple[int, int], *, t: float = 1.0, frames: int = 0, inverse: bool = False,
                 image: torch.Tensor | None = None, mask: torch.Tensor | None = None, **render_kw) -> WarpResult:
    """Fitted (or sampled) θ applied again: part of the way (``t``; 1 = as fitted, 0 = identity), as
    a tween 0 -> t of the last θ over ``frames`` > 1, and/or inverted (T with -θ, spec §1.5).
    ``image`` [1 or F, C, H, W]: one frame per θ, or its first frame for every θ."""
    p = params.inverse() if inverse else params
    p = p.tween(frames).at(t) if frames > 1 else p.at(t)
    if image is not None and image.shape[0] not in (1, p.num_frames):
        image = image[:1]
    return render_warp(p, size, image=image, mask=mask, **render_kw)


def random_warp(image: torch.Tensor, frames: int, *, mode: str = "wiggle", strength: float = WARP.strength,
                length_scale: float = WARP.length_scale, cells_x: int = WARP.cells,
                zero_boundary: bool = WARP.zero_boundary, volume_preserving: bool = WARP.volume_preserving,
                seed: int = 0, mask: torch.Tensor | None = None, **render_kw) -> WarpResult:
    """Random smooth deformations of ``image`` [1, C, H, W] drawn from the CPAB prior
    (:func:`.warp.random_params`: ``wiggle``, ``tween`` or ``independent``), rendered."""
    size = (image.shape[-2], image.shape[-1])
    params = random_params(default_cells(cells_x, size), frames, strength=strength, length_scale=length_scale,
                           zero_boundary=zero_boundary, volume_preserving=volume_preserving, mode=mode, seed=seed,
                           canvas=size)
    return render_warp(params, size, image=image, mask=mask, **render_kw)
