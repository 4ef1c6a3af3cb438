"""FlexiClip's learned half: the video SDS optimiser, the temporal Jacobian corrector (FlexiClip-style,
spec flexiclip.md §2.3) and the CLIP / X-CLIP scores (§3). The weight-free rig is nodes/clipart.py."""
from __future__ import annotations

import os
import re
from dataclasses import replace

import torch

from ..pipelines.bezier import bezier
from ..pipelines.deform import MeshDeformer
from ..pipelines.errors import check_image, fail
from ..pipelines.flexiclip import scores
from ..pipelines.flexiclip.corrector import (SOLVERS, STRUCTURES, TemporalJacobianCorrector, corrected_vertices,
                                             load_corrector, save_corrector)
from ..pipelines.flexiclip.pipeline import Animation
from ..pipelines.flexiclip.sds import FLOW_MODES, POSE_METHODS, SDS, optimise_sds
from ..pipelines.flexiclip.settings import FLEXICLIP_LAMBDA, XCLIP_MODEL
from ..pipelines.render import render_mesh
from . import widgets as W
from ._comfy import (FileList, check_interrupted, grad_enabled, list_models, model_path, models_root,
                     on_compute_device, preview_progress, register_model_folder)
from .types import ANIMATION, CORRECTOR, MESH, T2V, TRAJECTORY, XCLIP

CAT = "Flipbook/FlexiClip"
CORRECTOR_FOLDER = "flexiclip"            # models/flexiclip/*.safetensors: saved corrector states
register_model_folder(CORRECTOR_FOLDER, {".safetensors"})
register_model_folder("xclip", set())


def _tile(frames: torch.Tensor, n: int = 4) -> torch.Tensor:
    """n evenly spaced frames side by side [H, n*W, 3]: the live preview of the animation."""
    idx = torch.linspace(0, frames.shape[0] - 1, min(n, frames.shape[0])).round().long()
    return torch.cat(list(frames[idx]), 1)


class FlipbookFlexiClipCorrector:
    DESCRIPTION = ("FlexiClip-style temporal Jacobian corrector (our implementation of the paper's idea; the official "
                   "code's version ignores its attention output): attention over windows of per-triangle Jacobians "
                   "drives a pfODE-structured MLP that adds a correction Jᴿ to each pose's Jacobians. Starts as the "
                   "identity (no correction); the SDS optimiser trains it. Or load a saved state.")
    CATEGORY = CAT
    FUNCTION = "build"
    RETURN_TYPES = (CORRECTOR,)
    RETURN_NAMES = ("corrector",)
    OUTPUT_TOOLTIPS = ("The corrector network (untrained: no correction).",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "window": ("INT", {"default": 4, "min": 1, "max": 64, "tooltip":
                       "Poses per attention window (spec §2.3). Pose t sees no pose after the end of its window."}),
            "substeps": W.steps(2, "Integration substeps between two poses.", max=64),
            "solver": (list(SOLVERS), {"default": "rk4", "tooltip": "Fixed-step ODE integrator."}),
            "structure": (list(STRUCTURES), {"default": "pfode", "tooltip":
                          "pfode: dJᴿ/dτ = a ⊙ Jᴿ + c with a = -softplus (contractive; ours, from the paper's pfODE "
                          "analogy). plain: dJᴿ/dτ = MLP(...), as the official code."}),
            "seed": W.seed(0, "Seed of the initial weights."),
        }, "optional": {
            "state": (cls.states(), {"tooltip": "A saved corrector from models/flexiclip (Flipbook FlexiClip Corrector Save); "
                                     "(new) builds an untrained one from the widgets."}),
        }}

    @staticmethod
    def states() -> list[str]:
        return FileList(["(new)"] + list(list_models(CORRECTOR_FOLDER)))

    def build(self, window, substeps, solver, structure, seed, state="(new)"):
        with grad_enabled():
            if state and state != "(new)":
                return (load_corrector(model_path(CORRECTOR_FOLDER, state)),)
            return (TemporalJacobianCorrector(window, substeps, solver, structure, seed=int(seed)),)


class FlipbookFlexiClipCorrectorSave:
    DESCRIPTION = "Saves a (trained) corrector as safetensors in models/flexiclip, to load it again in Flipbook FlexiClip Corrector."
    CATEGORY = CAT
    FUNCTION = "save"
    RETURN_TYPES = ()
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "corrector": (CORRECTOR, {"tooltip": "From the SDS optimiser."}),
            "name": ("STRING", {"default": "flexiclip_corrector", "tooltip":
                     "File name (letters, digits, - and _); .safetensors is added. An existing file is replaced."}),
        }}

    def save(self, corrector, name):
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,100}", str(name)):
            fail("name", "a plain file name of letters, digits, - and _", repr(name))
        folder = os.path.join(models_root(), CORRECTOR_FOLDER)
        os.makedirs(folder, exist_ok=True)
        path = save_corrector(corrector, os.path.join(folder, f"{name}.safetensors"))
        return {"ui": {"text": [path]}, "result": ()}


class FlipbookFlexiClipSDS:
    DESCRIPTION = ("FlexiClip/AniClipart video SDS optimiser: learns the keypoints' Bezier curves (and the corrector) so "
                   "that the rendered clip scores well under a text-to-video model (ModelScope T2V). Defaults are the "
                   "papers' (spec §1.7-1.8): 256² renders, 24 frames, CFG 50, 1000 iterations; on a GPU. Shows the "
                   "current animation on the progress bar.")
    CATEGORY = CAT
    FUNCTION = "optimise"
    RETURN_TYPES = (TRAJECTORY, ANIMATION, CORRECTOR, "IMAGE")
    RETURN_NAMES = ("trajectory", "animation", "corrector", "frames")
    OUTPUT_TOOLTIPS = ("The learned Bezier trajectory (AniClipart frame schedule).",
                       "The deformed mesh of every frame (with the corrector's correction): connect Mesh Render.",
                       "The trained corrector (the input one if none was given: untrained, unused).",
                       "The last iteration's SDS render (render_size², before augmentation).")

    @classmethod
    def INPUT_TYPES(cls):
        s = SDS
        return {"required": {
            "mesh": (MESH, {"tooltip": "Mesh of the picture (Flipbook Mesh Builder)."}),
            "trajectory": (TRAJECTORY, {"tooltip": "Initial Bezier curves, e.g. a preset (Flipbook Bezier Trajectory): "
                                        "their control points; frames and loop_num below set the timing."}),
            "model": (T2V, {"tooltip": "Text-to-video model: ModelScope text-to-video-ms-1.7b (Flipbook T2V Loader)."}),
            "prompt": ("STRING", {"default": "a man is dancing", "multiline": True, "tooltip": "What the animation shows."}),
            "iterations": W.iterations(s.iterations, "Optimiser iterations. FlexiClip 1000, AniClipart 500.", max=10000),
            "guidance": W.guidance(s.guidance, "Classifier-free guidance of the SDS (AniClipart/FlexiClip: 50).", max=200.0),
            "frames": W.frames(s.frames, "Frames of the clip the T2V model scores (24).", min=2, max=64),
            "loop_num": ("INT", {"default": s.loop_num, "min": 0, "max": 8, "tooltip":
                         "AniClipart's ping-pong: frames/(2·loop_num) distinct poses played there and back loop_num times "
                         "(2: 6 poses). 0: every frame its own pose (recommended with the corrector)."}),
            "render_size": ("INT", {"default": s.render_size, "min": 32, "max": 1024, "step": 32, "tooltip":
                            "Square render fed to the VAE (256 in the papers; a multiple of the VAE's cell)."}),
            "skeleton_weight": ("FLOAT", {"default": s.w_skel, "min": 0.0, "max": 1000.0, "step": 0.5, "tooltip":
                                "Bone-length loss weight (AniClipart's run script: 25)."}),
            "use_mlp": ("BOOLEAN", {"default": s.use_mlp, "tooltip":
                        "Predict the control points with AniClipart's PointMLP (default), or optimise them directly."}),
            "lambda_flow": ("FLOAT", {"default": s.lambda_flow, "min": 0.0, "max": 1000.0, "step": 0.5, "tooltip":
                            "Flow-matching loss weight with a corrector (paper: 15; the official code has no such term)."}),
            "flow_mode": (list(FLOW_MODES), {"default": s.flow_mode, "tooltip":
                          "dds: score difference of the corrected and pose-only renders sharing the SDS UNet call "
                          "(cheap, default). exact: backpropagates through the UNet (GPU memory)."}),
            "augment": ("BOOLEAN", {"default": s.augment, "tooltip":
                        "One random perspective + crop shared by all frames per iteration (AniClipart)."}),
            "lr": ("FLOAT", {"default": s.lr, "min": 1e-6, "max": 10.0, "step": 0.0005, "tooltip":
                   "Adam learning rate (0.005) before the delayed log-linear schedule."}),
            "constraint_lambda": ("FLOAT", {"default": s.constraint_lambda, "min": 1e-3, "max": 1e6, "step": 0.1,
                                  "tooltip": "Keypoint constraint weight of the Poisson solve. 1: FlexiClip-faithful "
                                             "(soft); 1000: keypoints pinned as in the weight-free rig."}),
            "fp16": ("BOOLEAN", {"default": s.fp16, "tooltip": "Run the UNet and VAE in float16 autocast (GPU only)."}),
            "seed": W.seed(s.seed, "Seed of the timesteps, noise, augmentation and the MLP's initial weights."),
        }, "optional": {
            "corrector": (CORRECTOR, {"tooltip": "Temporal Jacobian corrector to train with the curves (FlexiClip); "
                                      "without it: AniClipart's objective."}),
            "negative": ("STRING", {"default": "", "tooltip": "Unconditional prompt of the guidance (default empty)."}),
            "pose_method": (list(POSE_METHODS), {"default": s.pose_method, "tooltip":
                            "How the keypoints pose the mesh: poisson_bilap is FlexiClip's Poisson solve, arap is "
                            "AniClipart's as-rigid-as-possible (the corrector then corrects ARAP's Jacobians)."}),
        }}

    def optimise(self, mesh, trajectory, model, prompt, iterations, guidance, frames, loop_num, render_size,
                 skeleton_weight, use_mlp, lambda_flow, flow_mode, augment, lr, constraint_lambda, fp16, seed,
                 corrector=None, negative="", pose_method=SDS.pose_method):
        st = replace(SDS, iterations=int(iterations), guidance=float(guidance), frames=int(frames),
                     loop_num=int(loop_num), render_size=int(render_size), w_skel=float(skeleton_weight),
                     use_mlp=bool(use_mlp), lambda_flow=float(lambda_flow), flow_mode=flow_mode, augment=bool(augment),
                     lr=float(lr), constraint_lambda=float(constraint_lambda), fp16=bool(fp16), seed=int(seed),
                     pose_method=pose_method)
        cb, show = preview_progress(max(1, st.iterations), "FlexiClip SDS")
        preview = lambda step, f: show(step, _tile(f))  # noqa: E731
        with grad_enabled(), on_compute_device(model.unet, model.vae, model.text_encoder):
            res = optimise_sds(mesh, trajectory, model, str(prompt), st, corrector=corrector, negative=str(negative),
                               check=check_interrupted, callback=cb, preview=preview)
        with torch.no_grad():
            img, _ = render_mesh(mesh, res.animation.vertices, out_size=(st.render_size,) * 2, return_alpha=False)
        return res.trajectory, res.animation, res.corrector if res.corrector is not None else corrector, img.cpu()


class FlipbookFlexiClipApplyCorrector:
    DESCRIPTION = ("Poses the mesh along a trajectory with FlexiClip's Poisson solve and a corrector: J = Jᴾ + Jᴿ per "
                   "triangle, then the solve. An untrained corrector gives the pose-only animation exactly.")
    CATEGORY = CAT
    FUNCTION = "apply"
    RETURN_TYPES = (ANIMATION,)
    RETURN_NAMES = ("animation",)
    OUTPUT_TOOLTIPS = ("The corrected deformed mesh of every frame.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "mesh": (MESH, {"tooltip": "Mesh of the picture."}),
            "trajectory": (TRAJECTORY, {"tooltip": "Keypoint trajectory (e.g. the SDS optimiser's)."}),
            "corrector": (CORRECTOR, {"tooltip": "Temporal Jacobian corrector (trained by the SDS optimiser, or loaded)."}),
            "constraint_lambda": ("FLOAT", {"default": FLEXICLIP_LAMBDA, "min": 1e-3, "max": 1e6, "step": 0.1, "tooltip":
                                  "Keypoint constraint weight. 1: FlexiClip-faithful (what the optimiser trains with by "
                                  "default); 1000: keypoints pinned."}),
        }}

    def apply(self, mesh, trajectory, corrector, constraint_lambda):
        if trajectory.skeleton.num_points != len(mesh.keypoint_idx):
            fail("trajectory", f"{len(mesh.keypoint_idx)} keypoints, as the mesh", f"{trajectory.skeleton.num_points}")
        if trajectory.control is not None:                 # the distinct poses on the curves, as the optimiser
            times, order = torch.unique(trajectory.times(), sorted=True, return_inverse=True)
            poses = bezier(trajectory.control.double(), times)
        else:                                              # explicit tracks: every frame its own pose
            times, order, poses = None, torch.arange(trajectory.n_frames), trajectory.frames().double()
        deformer = MeshDeformer(mesh, "poisson_bilap", float(constraint_lambda))
        with torch.no_grad():
            v, _, _ = corrected_vertices(deformer, poses, corrector, times)
        return (Animation(mesh, v.float()[order], trajectory),)


class FlipbookCLIPImageSimilarity:
    DESCRIPTION = ("CLIP image similarity of every frame to the input picture (identity preservation; FlexiClip reports "
                   "0.9563): mean cosine of ComfyUI CLIP vision embeddings.")
    CATEGORY = CAT
    FUNCTION = "measure"
    RETURN_TYPES = ("FLOAT", "STRING")
    RETURN_NAMES = ("clip_similarity", "json")
    OUTPUT_TOOLTIPS = ("Mean cosine similarity over the frames.", "Mean and per-frame values as JSON.")
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "clip_vision": ("CLIP_VISION", {"tooltip": "A CLIP vision model (Load CLIP Vision)."}),
            "frames": ("IMAGE", {"tooltip": "The animation frames."}),
            "reference": ("IMAGE", {"tooltip": "The input picture."}),
            "max_frames": W.max_frames("Score at most this many evenly spaced frames (0: all)."),
        }}

    def measure(self, clip_vision, frames, reference, max_frames):
        import json

        mean, per = scores.clip_image_similarity(clip_vision, frames, reference, max_frames=int(max_frames))
        text = json.dumps({"clip_similarity": mean, "per_frame": per})
        return {"ui": {"text": [text]}, "result": (mean, text)}


class FlipbookXCLIPLoader:
    DESCRIPTION = ("Loads a transformers X-CLIP folder from models/xclip, such as microsoft/xclip-base-patch32 cloned there, "
                   "for the text-video score. Offline.")
    CATEGORY = CAT
    FUNCTION = "load"
    RETURN_TYPES = (XCLIP,)
    RETURN_NAMES = ("xclip",)
    OUTPUT_TOOLTIPS = ("The X-CLIP model and tokenizer.",)

    @classmethod
    def INPUT_TYPES(cls):
        found = list_models("xclip", dirs=True)
        return {"required": {
            "model_dir": (FileList(found or [XCLIP_MODEL]), {"tooltip": "An X-CLIP folder under models/xclip."}),
        }}

    def load(self, model_dir):
        with grad_enabled():
            return (scores.load_xclip(model_path("xclip", model_dir, is_dir=True)),)


class FlipbookXCLIPSimilarity:
    DESCRIPTION = ("X-CLIP text-video similarity of the animation to the prompt (FlexiClip reports 0.2102): cosine of the "
                   "video and text embeddings, on evenly spaced frames.")
    CATEGORY = CAT
    FUNCTION = "measure"
    RETURN_TYPES = ("FLOAT",)
    RETURN_NAMES = ("xclip_similarity",)
    OUTPUT_TOOLTIPS = ("Cosine similarity of video and text.",)
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "xclip": (XCLIP, {"tooltip": "From Flipbook X-CLIP Loader."}),
            "frames": ("IMAGE", {"tooltip": "The animation frames."}),
            "text": ("STRING", {"default": "a man is dancing", "multiline": True, "tooltip": "The prompt to score against."}),
        }}

    def measure(self, xclip, frames, text):
        check_image("frames", frames)
        with on_compute_device(xclip.model):
            value = scores.xclip_similarity(xclip, frames, str(text))
        return {"ui": {"text": [f"{value:.4f}"]}, "result": (value,)}


NODE_CLASS_MAPPINGS = {c.__name__: c for c in (
    FlipbookFlexiClipCorrector, FlipbookFlexiClipCorrectorSave, FlipbookFlexiClipSDS, FlipbookFlexiClipApplyCorrector,
    FlipbookCLIPImageSimilarity, FlipbookXCLIPLoader, FlipbookXCLIPSimilarity)}
NODE_DISPLAY_NAME_MAPPINGS = {
    "FlipbookFlexiClipCorrector": "Flipbook FlexiClip Corrector (FlexiClip-style)",
    "FlipbookFlexiClipCorrectorSave": "Flipbook FlexiClip Corrector Save",
    "FlipbookFlexiClipSDS": "Flipbook FlexiClip SDS Optimiser",
    "FlipbookFlexiClipApplyCorrector": "Flipbook FlexiClip Apply Corrector",
    "FlipbookCLIPImageSimilarity": "Flipbook CLIP Image Similarity",
    "FlipbookXCLIPLoader": "Flipbook X-CLIP Loader",
    "FlipbookXCLIPSimilarity": "Flipbook X-CLIP Similarity",
}
