"""CPAB nodes: weight-free diffeomorphic warps from keypoints (spec cpab.md §3.2, §4)."""
from __future__ import annotations

import json

import torch

from ..pipelines import cpab
from ..pipelines.cpab.warp import INTERPOLATIONS, PADDINGS
from ..pipelines.errors import FlipbookInputError, check_image, check_mask, fail
from ..pipelines.skeleton import Skeleton
from ._comfy import progress_callback
from . import widgets as W
from .types import CPAB_PARAMS as PARAMS
from .types import FLOW, SKELETON, TRAJECTORY

CAT = "Flipbook/CPAB"

# --- shared input declarations ----------------------------------------------------------------

TESS_INPUTS = {
    "cells": ("INT", {"default": 6, "min": 1, "max": 20,
                      "tooltip": "Tessellation squares across the width; rows follow the aspect ratio (square cells). "
                                 "More cells = more local motion. CPABMM uses 4 (local) and 6 (global)."}),
    "zero_boundary": ("BOOLEAN", {"default": True,
                                  "tooltip": "Keep the picture's border in place (points slide along it): no holes at the "
                                             "edges. Off = libcpab 'valid outside' (CPABMM's setting)."}),
    "volume_preserving": ("BOOLEAN", {"default": False,
                                      "tooltip": "Divergence-free velocity: areas are preserved (fewer degrees of freedom)."}),
}
FIT_INPUTS = {
    "optimizer": (["lm", "adam"], {"default": "lm",
                                   "tooltip": "lm: Levenberg-Marquardt on the exact Jacobian (fast, precise). "
                                              "adam: gradient steps like CPABMM's fit."}),
    "iterations": ("INT", {"default": 10, "min": 1, "max": 1000,
                           "tooltip": "Optimiser iterations per frame (lm: 10; adam: 100 or more). LM stops early "
                                      "once every keypoint is within 0.01 px."}),
    "prior_strength": ("FLOAT", {"default": 0.01, "min": 0.0, "max": 100.0, "step": 0.001,
                                 "tooltip": "Weight λ of the smoothness prior (libcpab's covariance, length scale 0.1) "
                                            "against squared pixel errors. Larger = smoother motion, looser keypoints."}),
    "fit_steps": ("INT", {"default": 20, "min": 1, "max": 200,
                          "tooltip": "Integration steps while fitting (20 is within ~0.05 px of 50)."}),
}
RENDER_INPUTS = {
    "flow_resolution": ("INT", {"default": 128, "min": 8, "max": 4096,
                                "tooltip": "Long side of the grid the transform is integrated on; the displacement is "
                                           "upsampled to the image (128: ~0.9 px from exact at 512²)."}),
    "steps": ("INT", {"default": 50, "min": 1, "max": 500,
                      "tooltip": "Integration steps for rendering (libcpab/CPABMM: 50)."}),
    "interpolation": (list(INTERPOLATIONS), {"default": "bilinear", "tooltip": "How the source picture is sampled."}),
    "padding": (list(PADDINGS), {"default": "border",
                                                    "tooltip": "What is sampled outside the picture (only happens "
                                                               "without zero_boundary)."}),
}
FRAMES_IN = {"image": ("IMAGE", {"tooltip": "The picture to warp (its first frame is used)."})}
MASK_IN = {"mask": ("MASK", {"tooltip": "Optional mask (e.g. LoadImage's alpha mask) warped the same way."})}


def _first_frame(image) -> torch.Tensor:
    image = check_image("image", image)
    return image[:1].permute(0, 3, 1, 2).float().clone()


def _mask_frame(mask, size) -> torch.Tensor:
    mask = check_mask("mask", mask)[:1]
    if tuple(mask.shape[1:]) != tuple(size):
        fail("mask", f"the image's size {size[1]}x{size[0]}", f"{mask.shape[2]}x{mask.shape[1]}")
    return mask[:, None].float().clone()


def _points_on(points: torch.Tensor, canvas, size) -> torch.Tensor:
    """Pixel points given on ``canvas`` (H, W), moved to ``size`` (pixel centres map to centres)."""
    if tuple(canvas) == tuple(size):
        return points.float().clone()
    s = torch.tensor([size[1] / canvas[1], size[0] / canvas[0]])
    return (points.float() + 0.5) * s - 0.5


def _weights(weights_json: str, k: int):
    text = (weights_json or "").strip()
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


def keypoint_targets(source: Skeleton, target: Skeleton | None, trajectory, size):
    """(source [K,2], targets [K,2] or [F,K,2]) in pixels of the image ``size``."""
    if not isinstance(source, Skeleton):
        fail("source_keypoints", "a FLIPBOOK_SKELETON", type(source).__name__)
    if target is None and trajectory is None:
        raise FlipbookInputError("target_keypoints / trajectory: connect one of them (where the source keypoints "
                                 "should move to), got neither")
    if target is not None and trajectory is not None:
        raise FlipbookInputError("target_keypoints / trajectory: connect only one of them, got both")
    src = _points_on(source.points, source.canvas, size)
    if target is not None:
        if not isinstance(target, Skeleton):
            fail("target_keypoints", "a FLIPBOOK_SKELETON", type(target).__name__)
        if target.num_points != source.num_points:
            fail("target_keypoints", f"{source.num_points} keypoints like the source", f"{target.num_points}")
        return src, _points_on(target.points, target.canvas, size)
    frames = torch.as_tensor(trajectory.frames(), dtype=torch.float32)
    if frames.dim() != 3 or frames.shape[1] != source.num_points:
        fail("trajectory", f"tracks of {source.num_points} keypoints like the source", f"shape {tuple(frames.shape)}")
    return src, _points_on(frames, trajectory.skeleton.canvas, size)


def _render(params: cpab.CPABParams, image, mask, size, flow_resolution, steps, interpolation, padding):
    cb = progress_callback(params.num_frames, "CPAB render")
    grid = cpab.sampling_grid(params, size, flow_resolution=flow_resolution, nsteps=steps, callback=cb)
    frames = None if image is None else cpab.warp(image, grid, interpolation=interpolation,
                                                  padding=padding).permute(0, 2, 3, 1)
    if mask is not None:
        mask_out = cpab.warp(mask, grid, interpolation="bilinear", padding=padding)[:, 0]
    else:
        mask_out = torch.zeros(grid.shape[0], size[0], size[1])
    return frames, mask_out, cpab.grid_to_flow(grid)


class FlipbookCPABKeypointWarp:
    DESCRIPTION = ("All-in-one CPAB warp (no model needed): fits a diffeomorphic, fold-free deformation that moves "
                   "the source keypoints to the targets and renders it. A single target gives a tween (T^t, t = 0..1) "
                   "over `frames`; a trajectory gives one fitted frame per trajectory frame (warm-started).")
    CATEGORY = CAT
    FUNCTION = "run"
    RETURN_TYPES = ("IMAGE", "MASK", FLOW, PARAMS)
    RETURN_NAMES = ("frames", "mask", "flow", "params")
    OUTPUT_TOOLTIPS = ("Warped frames.", "The mask warped the same way (zeros when no mask is given).",
                       "Backward flow in pixels [F,H,W,2]: each output pixel reads the source at pixel + flow.",
                       "Fitted CPAB parameters, for CPAB Apply.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            **FRAMES_IN,
            "source_keypoints": (SKELETON, {"tooltip": "Keypoints on the picture (where things are now)."}),
            "frames": ("INT", {"default": 16, "min": 1, "max": 1024,
                               "tooltip": "Frames of the tween with a single target (ignored with a trajectory)."}),
            **TESS_INPUTS, **FIT_INPUTS, **RENDER_INPUTS,
            "warm_start": ("BOOLEAN", {"default": True,
                                       "tooltip": "Trajectories: start each frame's fit from the previous frame's "
                                                  "(continuous motion, fewer iterations)."}),
        }, "optional": {
            "target_keypoints": (SKELETON, {"tooltip": "Where the keypoints should go (same count as the source)."}),
            "trajectory": (TRAJECTORY, {"tooltip": "Keypoint positions per frame, e.g. from Flipbook Bezier Trajectory."}),
            **MASK_IN,
            "weights_json": ("STRING", {"default": "", "multiline": False,
                                        "tooltip": "Optional JSON list, one weight per keypoint; 0 = ignore that keypoint."}),
        }}

    def run(self, image, source_keypoints, frames, cells, zero_boundary, volume_preserving, optimizer, iterations,
            prior_strength, fit_steps, flow_resolution, steps, interpolation, padding, warm_start,
            target_keypoints=None, trajectory=None, mask=None, weights_json=""):
        img = _first_frame(image)
        size = (img.shape[2], img.shape[3])
        src, tgt = keypoint_targets(source_keypoints, target_keypoints, trajectory, size)
        n_fit = 1 if tgt.dim() == 2 else tgt.shape[0]
        params, _ = cpab.fit_keypoints(src, tgt, size, cells=cpab.default_cells(cells, size),
                                       zero_boundary=zero_boundary, volume_preserving=volume_preserving,
                                       optimizer=optimizer, iterations=iterations, prior_strength=prior_strength,
                                       nsteps=fit_steps, weights=_weights(weights_json, src.shape[0]),
                                       warm_start=warm_start, callback=progress_callback(n_fit, "CPAB fit"))
        if tgt.dim() == 2:
            params = params.tween(frames)
        m = None if mask is None else _mask_frame(mask, size)
        out, mask_out, flow = _render(params, img, m, size, flow_resolution, steps, interpolation, padding)
        return out, mask_out, flow, params


class FlipbookCPABFit:
    DESCRIPTION = ("Fits CPAB parameters so that the source keypoints move to the target keypoints (one θ) or follow "
                   "a trajectory (one θ per frame). Use with CPAB Apply to warp pictures or masks.")
    CATEGORY = CAT
    FUNCTION = "fit"
    RETURN_TYPES = (PARAMS, "STRING")
    RETURN_NAMES = ("params", "report")
    OUTPUT_TOOLTIPS = ("CPAB parameters per frame.", "Fit error per frame in pixels (max over keypoints).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "source_keypoints": (SKELETON, {"tooltip": "Keypoints where things are now (their canvas is the size)."}),
            **TESS_INPUTS, **FIT_INPUTS,
            "warm_start": ("BOOLEAN", {"default": True, "tooltip": "Trajectories: start each frame from the previous θ."}),
            "temporal_weight": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1000.0, "step": 0.01,
                                          "tooltip": "Trajectories: pull each θ towards the previous frame's (smoother, "
                                                     "looser). Needs warm_start."}),
        }, "optional": {
            "target_keypoints": (SKELETON, {"tooltip": "Where the keypoints should go."}),
            "trajectory": (TRAJECTORY, {"tooltip": "Keypoint positions per frame."}),
            "weights_json": ("STRING", {"default": "", "tooltip": "Optional JSON list of per-keypoint weights (0 = ignore)."}),
        }}

    def fit(self, source_keypoints, cells, zero_boundary, volume_preserving, optimizer, iterations, prior_strength,
            fit_steps, warm_start, temporal_weight, target_keypoints=None, trajectory=None, weights_json=""):
        size = tuple(source_keypoints.canvas)
        src, tgt = keypoint_targets(source_keypoints, target_keypoints, trajectory, size)
        n_fit = 1 if tgt.dim() == 2 else tgt.shape[0]
        params, err = cpab.fit_keypoints(src, tgt, size, cells=cpab.default_cells(cells, size),
                                         zero_boundary=zero_boundary, volume_preserving=volume_preserving,
                                         optimizer=optimizer, iterations=iterations, prior_strength=prior_strength,
                                         nsteps=fit_steps, weights=_weights(weights_json, src.shape[0]),
                                         warm_start=warm_start, temporal_weight=temporal_weight,
                                         callback=progress_callback(n_fit, "CPAB fit"))
        worst = err.amax(-1)
        report = (f"{params.num_frames} frame(s), cells {params.cells[0]}x{params.cells[1]}, d={params.tess.dim}; "
                  f"max keypoint error {float(worst.max()):.3f} px (mean {float(err.mean()):.3f} px)")
        return params, report


class FlipbookCPABApply:
    DESCRIPTION = ("Applies CPAB parameters to a picture and/or a mask: the full transform (t = 1), part of the way "
                   "(0 < t < 1), a tween from the identity over `frames`, or the inverse (T with −θ).")
    CATEGORY = CAT
    FUNCTION = "apply"
    RETURN_TYPES = ("IMAGE", "MASK", FLOW)
    RETURN_NAMES = ("frames", "mask", "flow")
    OUTPUT_TOOLTIPS = ("Warped frames (a black picture when no image is given).", "Warped mask (zeros when none).",
                       "Backward flow in pixels.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "params": (PARAMS, {"tooltip": "From CPAB Fit, CPAB Keypoint Warp or CPAB Random Deform."}),
            "t": ("FLOAT", {"default": 1.0, "min": -4.0, "max": 4.0, "step": 0.01,
                            "tooltip": "How far along the path: 1 = the fitted transform, 0 = identity, 0.5 = halfway."}),
            "frames": W.frames(0, "0: one frame per θ. Above 1: a tween 0→t of the last θ over this many frames.", min=0),
            "inverse": ("BOOLEAN", {"default": False, "tooltip": "Apply the inverse transform (T with −θ)."}),
            **RENDER_INPUTS,
        }, "optional": {
            "image": ("IMAGE", {"tooltip": "Picture to warp (first frame, or one frame per θ)."}),
            **MASK_IN,
        }}

    def apply(self, params, t, frames, inverse, flow_resolution, steps, interpolation, padding, image=None, mask=None):
        if image is None and mask is None:
            raise FlipbookInputError("image / mask: connect a picture or a mask to warp, got neither")
        p = params.inverse() if inverse else params
        p = p.tween(frames).at(t) if frames > 1 else p.at(t)
        img = None
        if image is not None:
            img = check_image("image", image)
            img = img.permute(0, 3, 1, 2).float().clone()
            if img.shape[0] not in (1, p.num_frames):
                img = img[:1]
        size = tuple(img.shape[2:]) if img is not None else tuple(check_mask("mask", mask).shape[1:])
        m = None if mask is None else _mask_frame(mask, size)
        out, mask_out, flow = _render(p, img, m, size, flow_resolution, steps, interpolation, padding)
        if out is None:
            out = torch.zeros(p.num_frames, size[0], size[1], 3)
        return out, mask_out, flow


class FlipbookCPABRandomDeform:
    DESCRIPTION = ("Random smooth, fold-free deformations drawn from the CPAB prior (seeded): a looping wiggle, a tween "
                   "into one random deformation, or an independent deformation per frame (augmentation).")
    CATEGORY = CAT
    FUNCTION = "deform"
    RETURN_TYPES = ("IMAGE", "MASK", FLOW, PARAMS)
    RETURN_NAMES = ("frames", "mask", "flow", "params")
    OUTPUT_TOOLTIPS = ("Deformed frames.", "The mask deformed the same way (zeros when none).",
                       "Backward flow in pixels.", "The sampled CPAB parameters.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            **FRAMES_IN,
            "frames": W.frames(16, "Number of frames."),
            "mode": (["wiggle", "tween", "independent"], {"default": "wiggle",
                                                          "tooltip": "wiggle: seamless loop. tween: identity → one random "
                                                                     "deformation. independent: a new draw per frame."}),
            "strength": ("FLOAT", {"default": 0.3, "min": 0.0, "max": 5.0, "step": 0.01,
                                   "tooltip": "Prior standard deviation σ (libcpab: 1). 0.3 is a gentle wobble."}),
            "length_scale": ("FLOAT", {"default": 0.1, "min": 0.01, "max": 2.0, "step": 0.01,
                                       "tooltip": "Correlation length of the velocity field (fraction of the picture); "
                                                  "larger = smoother, more global motion."}),
            **TESS_INPUTS, **RENDER_INPUTS,
            "seed": W.seed(0, "Random seed."),
        }, "optional": {**MASK_IN}}

    def deform(self, image, frames, mode, strength, length_scale, cells, zero_boundary, volume_preserving,
               flow_resolution, steps, interpolation, padding, seed, mask=None):
        img = _first_frame(image)
        size = (img.shape[2], img.shape[3])
        params = cpab.random_params(cpab.default_cells(cells, size), frames, strength=strength,
                                    length_scale=length_scale, zero_boundary=zero_boundary,
                                    volume_preserving=volume_preserving, mode=mode, seed=seed, canvas=size)
        m = None if mask is None else _mask_frame(mask, size)
        out, mask_out, flow = _render(params, img, m, size, flow_resolution, steps, interpolation, padding)
        return out, mask_out, flow, params


class FlipbookFlowToImage:
    DESCRIPTION = "Colour-wheel picture of a flow: hue = direction, saturation = speed, white = still."
    CATEGORY = CAT
    FUNCTION = "draw"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    OUTPUT_TOOLTIPS = ("Flow visualisation, one frame per flow frame.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "flow": (FLOW, {"tooltip": "Flow in pixels [F,H,W,2] from a CPAB node."}),
            "max_magnitude": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 10000.0, "step": 0.5,
                                        "tooltip": "Pixels shown at full colour; 0 = the largest motion in the batch."}),
        }}

    def draw(self, flow, max_magnitude):
        if not isinstance(flow, torch.Tensor) or flow.dim() != 4 or flow.shape[-1] != 2:
            fail("flow", "a FLIPBOOK_FLOW tensor [frames, height, width, 2]", type(flow).__name__)
        return (cpab.flow_to_image(flow, max_magnitude),)


NODE_CLASS_MAPPINGS = {
    "FlipbookCPABKeypointWarp": FlipbookCPABKeypointWarp,
    "FlipbookCPABFit": FlipbookCPABFit,
    "FlipbookCPABApply": FlipbookCPABApply,
    "FlipbookCPABRandomDeform": FlipbookCPABRandomDeform,
    "FlipbookFlowToImage": FlipbookFlowToImage,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "FlipbookCPABKeypointWarp": "Flipbook CPAB Keypoint Warp",
    "FlipbookCPABFit": "Flipbook CPAB Fit",
    "FlipbookCPABApply": "Flipbook CPAB Apply",
    "FlipbookCPABRandomDeform": "Flipbook CPAB Random Deform",
    "FlipbookFlowToImage": "Flipbook Flow to Image",
}
