"""CPAB nodes: weight-free diffeomorphic warps from keypoints (spec cpab.md §3.2, §4)."""
from __future__ import annotations

import torch

from ..pipelines import budget, cpab, keypoints
from ..pipelines.cpab import WARP
from ..pipelines.cpab.fit import METHODS as OPTIMIZERS
from ..pipelines.cpab.warp import INTERPOLATIONS, PADDINGS, RANDOM_MODES
from ..pipelines.errors import FlipbookInputError, check_image, check_mask, fail
from ._comfy import progress_callback, with_animated_preview
from .image import resolve_mask
from . import widgets as W
from .types import CPAB_PARAMS as PARAMS
from .types import FLOW, SKELETON, TRAJECTORY

CAT = "Flipbook/CPAB"

# --- shared input declarations ----------------------------------------------------------------

TESS_INPUTS = {
    "cells": ("INT", {"default": WARP.cells, "min": 1, "max": 20,
                      "tooltip": "Tessellation squares across the width; rows follow the aspect ratio (square cells). "
                                 "More cells = more local motion. CPABMM uses 4 (local) and 6 (global)."}),
    "zero_boundary": ("BOOLEAN", {"default": WARP.zero_boundary,
                                  "tooltip": "Keep the picture's border in place (points slide along it): no holes at the "
                                             "edges. Off = libcpab 'valid outside' (CPABMM's setting)."}),
    "volume_preserving": ("BOOLEAN", {"default": WARP.volume_preserving,
                                      "tooltip": "Divergence-free velocity: areas are preserved (fewer degrees of freedom)."}),
}
FIT_INPUTS = {
    "optimizer": (list(OPTIMIZERS), {"default": WARP.optimizer,
                                     "tooltip": "lm: Levenberg-Marquardt on the exact Jacobian (fast, precise). "
                                                "adam: gradient steps like CPABMM's fit."}),
    "iterations": W.iterations(0, "Optimiser iterations per frame. 0: the optimiser's default (lm 10, adam 100; "
                               "Adam with 10 stays pixels off its targets). LM stops early once every keypoint is "
                               "within 0.05 px."),
    "prior_strength": ("FLOAT", {"default": WARP.prior_strength, "min": 0.0, "max": 100.0, "step": 0.001,
                                 "tooltip": "Weight λ of the smoothness prior (libcpab's covariance, length scale 0.1) "
                                            "against squared pixel errors. Larger = smoother motion, looser keypoints."}),
    "fit_steps": ("INT", {"default": WARP.fit_steps, "min": 1, "max": 200,
                          "tooltip": "Integration steps while fitting (20 is within ~0.05 px of 50)."}),
}
RENDER_INPUTS = {
    "flow_resolution": ("INT", {"default": WARP.flow_resolution, "min": 8, "max": 4096,
                                "tooltip": "Long side of the grid the transform is integrated on; the displacement is "
                                           "upsampled to the image (128: ~0.9 px from exact at 512²)."}),
    "steps": W.steps(WARP.steps, "Integration steps for rendering (libcpab/CPABMM: 50).", max=500),
    "interpolation": (list(INTERPOLATIONS), {"default": WARP.interpolation,
                                             "tooltip": "How the source picture is sampled."}),
    "padding": (list(PADDINGS), {"default": WARP.padding,
                                 "tooltip": "What is sampled outside the picture (only happens without zero_boundary)."}),
}
FRAMES_IN = {"image": ("IMAGE", {"tooltip": "The picture to warp (its first frame is used)."})}
MASK_IN = {"mask": ("MASK", {"tooltip": "Optional mask (e.g. LoadImage's alpha mask) warped the same way."})}


def _first_frame(image) -> torch.Tensor:
    image = check_image("image", image)
    return image[:1].permute(0, 3, 1, 2).float().clone()


def _mask_frame(mask, size, image=None) -> torch.Tensor:
    mask = check_mask("mask", resolve_mask(mask, image))[:1]
    if tuple(mask.shape[1:]) != tuple(size):
        fail("mask", f"the image's size {size[1]}x{size[0]}", f"{mask.shape[2]}x{mask.shape[1]}")
    return mask[:, None].float().clone()


def _check_render_memory(frames: int, size) -> None:
    """Grid, flow, frames, mask and their output copies of every rendered frame: ~48 bytes per pixel."""
    budget.check("frames", int(frames) * size[0] * size[1] * 48, f"{int(frames)} warped frames of {size[1]}x{size[0]}")


def _render_kw(flow_resolution, steps, interpolation, padding, frames: int, desc: str = "CPAB render") -> dict:
    return dict(flow_resolution=flow_resolution, nsteps=steps, interpolation=interpolation, padding=padding,
                callback=progress_callback(frames, desc))


def _outputs(result: cpab.WarpResult, size):
    """(IMAGE [F,H,W,3] or None, MASK [F,H,W] (zeros without a mask), FLOW) of a warp."""
    frames = None if result.frames is None else result.frames.permute(0, 2, 3, 1)
    mask = result.mask if result.mask is not None else torch.zeros(result.grid.shape[0], size[0], size[1])
    return frames, mask, result.flow


TARGETS_JSON = ("STRING", {"default": "", "multiline": False,
                            "tooltip": "Where the source keypoints go, [[x, y] or null, ...] in px (the warp-target editor "
                                       "writes it); used when neither target_keypoints nor trajectory is connected."})


def _typed_targets(source, target, trajectory, text):
    """The target skeleton: the connected one, else targets_json's (when no trajectory is connected)."""
    if target is not None or trajectory is not None or not (text or "").strip():
        return target
    return keypoints.targets_from_json(text, source)


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
            "frames": W.frames(WARP.frames, "Frames of the tween with a single target (ignored with a trajectory)."),
            **TESS_INPUTS, **FIT_INPUTS, **RENDER_INPUTS,
            "warm_start": ("BOOLEAN", {"default": WARP.warm_start,
                                       "tooltip": "Trajectories: start each frame's fit from the previous frame's "
                                                  "(continuous motion, fewer iterations)."}),
        }, "optional": {
            "target_keypoints": (SKELETON, {"tooltip": "Where the keypoints should go (same count as the source)."}),
            "trajectory": (TRAJECTORY, {"tooltip": "Keypoint positions per frame, e.g. from Flipbook Bezier Trajectory."}),
            **MASK_IN,
            "weights_json": ("STRING", {"default": "", "multiline": False,
                                        "tooltip": "Optional JSON list, one weight per keypoint; 0 = ignore that keypoint."}),
       
            "targets_json": TARGETS_JSON,
        }}

    def run(self, image, source_keypoints, frames, cells, zero_boundary, volume_preserving, optimizer, iterations,
            prior_strength, fit_steps, flow_resolution, steps, interpolation, padding, warm_start,
            target_keypoints=None, trajectory=None, mask=None, weights_json="", targets_json=""):
        target_keypoints = _typed_targets(source_keypoints, target_keypoints, trajectory, targets_json)
        img = _first_frame(image)
        size = (img.shape[2], img.shape[3])
        src, tgt = cpab.keypoint_targets(source_keypoints, target_keypoints, trajectory, size)
        n_fit = 1 if tgt.dim() == 2 else tgt.shape[0]
        _check_render_memory(max(frames, 1) if tgt.dim() == 2 else n_fit, size)
        result = cpab.keypoint_warp(
            img, src, tgt, tween_frames=frames, mask=None if mask is None else _mask_frame(mask, size, image),
            cells_x=cells, zero_boundary=zero_boundary, volume_preserving=volume_preserving, optimizer=optimizer,
            iterations=iterations, prior_strength=prior_strength, nsteps_fit=fit_steps, nsteps_render=steps,
            flow_resolution=flow_resolution, interpolation=interpolation, padding=padding,
            weights=cpab.weights_from_json(weights_json, src.shape[0]), warm_start=warm_start,
            fit_callback=progress_callback(n_fit, "CPAB fit"),
            render_callback=progress_callback(frames if tgt.dim() == 2 else n_fit, "CPAB render"))
        out = (*_outputs(result, size), result.params)
        return with_animated_preview(out, out[0])


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
            "warm_start": ("BOOLEAN", {"default": WARP.warm_start,
                                       "tooltip": "Trajectories: start each frame from the previous θ."}),
            "temporal_weight": ("FLOAT", {"default": WARP.temporal_weight, "min": 0.0, "max": 1000.0, "step": 0.01,
                                          "tooltip": "Trajectories: pull each θ towards the previous frame's (smoother, "
                                                     "looser). Needs warm_start."}),
        }, "optional": {
            "target_keypoints": (SKELETON, {"tooltip": "Where the keypoints should go."}),
            "trajectory": (TRAJECTORY, {"tooltip": "Keypoint positions per frame."}),
            "weights_json": ("STRING", {"default": "", "tooltip": "Optional JSON list of per-keypoint weights (0 = ignore)."}),
       
            "targets_json": TARGETS_JSON,
        }}

    def fit(self, source_keypoints, cells, zero_boundary, volume_preserving, optimizer, iterations, prior_strength,
            fit_steps, warm_start, temporal_weight, target_keypoints=None, trajectory=None, weights_json="",
            targets_json=""):
        target_keypoints = _typed_targets(source_keypoints, target_keypoints, trajectory, targets_json)
        size = tuple(source_keypoints.canvas)
        src, tgt = cpab.keypoint_targets(source_keypoints, target_keypoints, trajectory, size)
        n_fit = 1 if tgt.dim() == 2 else tgt.shape[0]
        params, err = cpab.fit_keypoints(src, tgt, size, cells=cpab.default_cells(cells, size),
                                         zero_boundary=zero_boundary, volume_preserving=volume_preserving,
                                         optimizer=optimizer, iterations=iterations, prior_strength=prior_strength,
                                         nsteps=fit_steps, weights=cpab.weights_from_json(weights_json, src.shape[0]),
                                         warm_start=warm_start, temporal_weight=temporal_weight,
                                         callback=progress_callback(n_fit, "CPAB fit"))
        return params, cpab.fit_report(params, err)


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
        img = None if image is None else check_image("image", image).permute(0, 3, 1, 2).float().clone()
        size = tuple(img.shape[2:]) if img is not None else tuple(check_mask("mask", mask).shape[1:])
        n = frames if frames > 1 else params.num_frames
        _check_render_memory(n, size)
        result = cpab.apply_params(params, size, t=t, frames=frames, inverse=inverse, image=img,
                                   mask=None if mask is None else _mask_frame(mask, size, image),
                                   **_render_kw(flow_resolution, steps, interpolation, padding, n))
        out, mask_out, flow = _outputs(result, size)
        if out is None:
            out = torch.zeros(result.params.num_frames, size[0], size[1], 3)
        return with_animated_preview((out, mask_out, flow), out if image is not None else mask_out[..., None].expand(-1, -1, -1, 3))


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
            "mode": (list(RANDOM_MODES), {"default": RANDOM_MODES[0],
                                          "tooltip": "wiggle: seamless loop. tween: identity → one random "
                                                                     "deformation. independent: a new draw per frame."}),
            "strength": ("FLOAT", {"default": WARP.strength, "min": 0.0, "max": 5.0, "step": 0.01,
                                   "tooltip": "Prior standard deviation σ (libcpab: 1). 0.3 is a gentle wobble."}),
            "length_scale": ("FLOAT", {"default": WARP.length_scale, "min": 0.01, "max": 2.0, "step": 0.01,
                                       "tooltip": "Correlation length of the velocity field (fraction of the picture); "
                                                  "larger = smoother, more global motion."}),
            **TESS_INPUTS, **RENDER_INPUTS,
            "seed": W.seed(0, "Random seed."),
        }, "optional": {**MASK_IN}}

    def deform(self, image, frames, mode, strength, length_scale, cells, zero_boundary, volume_preserving,
               flow_resolution, steps, interpolation, padding, seed, mask=None):
        img = _first_frame(image)
        size = (img.shape[2], img.shape[3])
        _check_render_memory(frames, size)
        result = cpab.random_warp(img, frames, mode=mode, strength=strength, length_scale=length_scale, cells_x=cells,
                                  zero_boundary=zero_boundary, volume_preserving=volume_preserving, seed=seed,
                                  mask=None if mask is None else _mask_frame(mask, size, image),
                                  **_render_kw(flow_resolution, steps, interpolation, padding, frames))
        out = (*_outputs(result, size), result.params)
        return with_animated_preview(out, out[0])


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
