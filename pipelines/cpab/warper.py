"""The weight-free CPAB keypoint warper, end to end (spec cpab.md §3.2): keypoints in pixels in,
frames, flow and θ out. Used by the nodes, the tests and benchmarks/cpab.py."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..coords import pixel_to_unit
from ..errors import check_points, fail
from ..progress import StepCallback
from .fit import fit_theta, fit_track
from .tessellation import check_tess
from .warp import CPABParams, grid_to_flow, sampling_grid, warp


@dataclass
class WarpResult:
    frames: torch.Tensor      # [F, C, H, W]
    grid: torch.Tensor        # [F, H, W, 2] sampling positions in [0,1]²
    params: CPABParams
    fit_error_px: torch.Tensor  # [F_fit, K]

    @property
    def flow(self) -> torch.Tensor:
        return grid_to_flow(self.grid)


def default_cells(cells_x: int, size: tuple[int, int]) -> tuple[int, int]:
    """Square cells in pixels: cells_y = round(cells_x · H / W) (at least 1)."""
    h, w = size
    return check_tess(cells_x, max(1, round(cells_x * h / w)))


def fit_keypoints(source_px: torch.Tensor, targets_px: torch.Tensor, size: tuple[int, int], *,
                  cells: tuple[int, int], zero_boundary: bool = True, volume_preserving: bool = False,
                  optimizer: str = "lm", iterations: int = 10, lr: float = 0.05, prior_strength: float = 1e-2,
                  length_scale: float = 0.1, nsteps: int = 20, weights=None, warm_start: bool = True,
                  temporal_weight: float = 0.0, callback: StepCallback | None = None):
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
    from .tessellation import tessellation
    tess = tessellation(cells[0], cells[1], zero_boundary, volume_preserving)
    kw = dict(method=optimizer, iterations=iterations, lr=lr, nsteps=nsteps, prior_strength=prior_strength,
              length_scale=length_scale, pixel_size=(w - 1, h - 1), weights=wts)
    if targets_px.shape[0] == 1:
        res = fit_theta(tess, tgt01, src01[None], callback=callback, **{**kw, "weights": None if wts is None else wts[0]})
    else:
        res = fit_track(tess, tgt01, src01[None].expand(targets_px.shape[0], -1, -1), warm_start=warm_start,
                        temporal_weight=temporal_weight, callback=callback, **kw)
    return CPABParams(res.theta, cells, zero_boundary, volume_preserving, (h, w)), res.error_px


def keypoint_warp(image: torch.Tensor, source_px, targets_px, *, tween_frames: int = 0, cells_x: int = 6,
                  zero_boundary: bool = True, volume_preserving: bool = False, optimizer: str = "lm",
                  iterations: int = 10, lr: float = 0.05, prior_strength: float = 1e-2, length_scale: float = 0.1,
                  nsteps_fit: int = 20, nsteps_render: int = 50, flow_resolution: int = 128,
                  interpolation: str = "bilinear", padding: str = "border", weights=None, warm_start: bool = True,
                  temporal_weight: float = 0.0, fit_callback: StepCallback | None = None,
                  render_callback: StepCallback | None = None) -> WarpResult:
    """Warp ``image`` [1, C, H, W] so that the source keypoints move to the targets.

    targets_px [K, 2] with ``tween_frames`` > 1: one fit, frames along T^t for t = 0..1;
    targets_px [F, K, 2] (a track): one fit per frame (warm-started), one frame each.
    """
    size = (image.shape[-2], image.shape[-1])
    cells = default_cells(cells_x, size)
    params, err = fit_keypoints(source_px, targets_px, size, cells=cells, zero_boundary=zero_boundary,
                                volume_preserving=volume_preserving, optimizer=optimizer, iterations=iterations,
                                lr=lr, prior_strength=prior_strength, length_scale=length_scale, nsteps=nsteps_fit,
                                weights=weights, warm_start=warm_start, temporal_weight=temporal_weight,
                                callback=fit_callback)
    if params.num_frames == 1 and tween_frames > 1:
        params = params.tween(tween_frames)
    grid = sampling_grid(params, size, flow_resolution=flow_resolution, nsteps=nsteps_render,
                         callback=render_callback)
    frames = warp(image, grid, interpolation=interpolation, padding=padding)
    return WarpResult(frames, grid, params, err)
