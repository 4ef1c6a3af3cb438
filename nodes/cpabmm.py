"""CPABMM nodes: load a user-trained checkpoint, animate a picture with a driving video, load frames.

No official CPABMM weights exist (spec cpab.md §0): put your own checkpoint in ComfyUI's
models/cpabmm folder (.safetensors, or the official .pth.tar, read with torch.load(weights_only=True)).
"""
from __future__ import annotations

import torch

from ..pipelines import cpabmm
from ..pipelines.errors import fail, reading
from ..pipelines.io import load_frames
from ._comfy import (FileList, check_interrupted, file_signature, free_memory, input_image_path, list_models, model_path, progress_callback,
                     register_model_folder, torch_device, with_animated_preview)
from . import widgets as W
from .types import CPABMM_MODEL as MODEL

CAT = "Flipbook/CPAB"
FOLDER = "cpabmm"
EXTENSIONS = {".safetensors", ".pth", ".tar", ".pt", ".ckpt"}

register_model_folder(FOLDER, EXTENSIONS)


def _checkpoints() -> list[str]:
    return list_models(FOLDER) or FileList(["cpabmm-vox-256.safetensors"])


class FlipbookCPABMMLoader:
    DESCRIPTION = ("Loads a CPABMM checkpoint you trained (the authors released none) from models/cpabmm: "
                   ".safetensors, or the official training checkpoint (.pth.tar) read safely with "
                   "torch.load(weights_only=True). The preset sets resolution and fit iterations when the file "
                   "does not store its own config.")
    CATEGORY = CAT
    FUNCTION = "load"
    RETURN_TYPES = (MODEL,)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("CPABMM networks (keypoint detector, dense motion, inpainting, optional background and AVD).",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "checkpoint": (_checkpoints(), {"tooltip": "A file in ComfyUI's models/cpabmm folder."}),
            "preset": (["auto", *cpabmm.PRESETS], {"default": "auto",
                                                  "tooltip": "auto: the config stored in the file. vox/taichi/mgif: "
                                                             "256² input (taichi fits 200 iterations); ted: 384²."}),
        }}

    def load(self, checkpoint, preset):
        path = model_path(FOLDER, checkpoint)
        with reading("checkpoint", path, "a CPABMM checkpoint (.safetensors or .pth.tar)"):
            return (cpabmm.load_model(path, preset, device=torch_device()),)


class FlipbookCPABMMAnimate:
    DESCRIPTION = ("CPABMM motion transfer: animates the source picture with the motion of the driving frames. "
                   "Keypoints from both → 10 local + 1 global CPAB transforms fitted per frame → dense motion with "
                   "occlusion → inpainting. ~seconds per frame on a CPU at 256² (the θ fits dominate).")
    CATEGORY = CAT
    FUNCTION = "animate"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("frames",)
    OUTPUT_TOOLTIPS = ("One animated frame per driving frame, at the source's size.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": (MODEL, {"tooltip": "From Flipbook CPABMM Loader."}),
            "source": ("IMAGE", {"tooltip": "The picture to animate (first frame used)."}),
            "driving": ("IMAGE", {"tooltip": "The driving video frames (e.g. from Flipbook Load Frames)."}),
            "mode": (list(cpabmm.MODES), {"default": cpabmm.ANIMATE.mode,
                                         "tooltip": "relative: source keypoints + driving motion since frame 0, scaled "
                                                    "by the hull areas. standard: driving keypoints as they are. avd: "
                                                    "the AVD network (needs avd weights)."}),
            "max_iter": W.iterations(cpabmm.ANIMATE.max_iter, "Adam iterations of the local θ fits (global: 1.5×). "
                                     "0 = the preset's (100; taichi 200).", max=2000),
            "use_bg": ("BOOLEAN", {"default": cpabmm.ANIMATE.use_bg,
                                   "tooltip": "Use the background motion predictor when the checkpoint has one."}),
            "batch": ("INT", {"default": cpabmm.ANIMATE.batch, "min": 1, "max": 64,
                              "tooltip": "Driving frames processed together."}),
        }}

    def animate(self, model, source, driving, mode, max_iter, use_bg, batch):
        cb = progress_callback(int(driving.shape[0]) if isinstance(driving, torch.Tensor) else 1, "CPABMM")
        out = cpabmm.animate(model, source[:1].clone() if isinstance(source, torch.Tensor) else source,
                             driving.clone() if isinstance(driving, torch.Tensor) else driving,
                             mode=mode, max_iter=max_iter, use_bg=use_bg, batch=batch, callback=cb,
                             check=check_interrupted)
        free_memory()
        return with_animated_preview((out,), out)


class FlipbookCPABMMConvert:
    DESCRIPTION = ("Converts an official CPABMM training checkpoint (.pth/.pth.tar, read with "
                   "torch.load(weights_only=True)) in models/cpabmm to .safetensors next to it, with its config stored.")
    CATEGORY = CAT
    FUNCTION = "convert"
    OUTPUT_NODE = True
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("path",)
    OUTPUT_TOOLTIPS = ("The written .safetensors file.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "checkpoint": (_checkpoints(), {"tooltip": "The .pth/.tar checkpoint in models/cpabmm."}),
            "preset": (list(cpabmm.PRESETS), {"default": "vox", "tooltip": "The config it was trained with."}),
        }}

    def convert(self, checkpoint, preset):
        src = model_path(FOLDER, checkpoint)
        if src.lower().endswith(".safetensors"):
            fail("checkpoint", "a .pth/.tar/.pt checkpoint to convert", checkpoint)
        with reading("checkpoint", src, "a CPABMM training checkpoint (.pth/.pth.tar)"):
            return (cpabmm.convert_to_safetensors(src, None, preset),)


class FlipbookCPABMMEvaluate:
    DESCRIPTION = ("Reconstruction L1 of the CPABMM release (spec cpab.md §2.6): the first frame of a video is the "
                   "source and every frame is driven by itself (standard mode, background predictor when present). "
                   "Lower is better; the identity baseline copies the first frame. Use held-out videos.")
    CATEGORY = CAT
    FUNCTION = "evaluate"
    RETURN_TYPES = ("FLOAT", "FLOAT", "IMAGE", "STRING")
    RETURN_NAMES = ("l1", "identity_l1", "reconstruction", "report")
    OUTPUT_TOOLTIPS = ("Mean |reconstruction − frame| over all frames, in 0..1 units.",
                       "The same for copying the first frame (a model should beat it).",
                       "The reconstructed frames [F,H,W,3].",
                       "Both numbers as text.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": (MODEL, {"tooltip": "From Flipbook CPABMM Loader."}),
            "video": ("IMAGE", {"tooltip": "A held-out video (e.g. from Flipbook Load Frames); frame 0 is the source."}),
            "max_iter": W.iterations(cpabmm.ANIMATE.max_iter, "Adam iterations of the local θ fits (global: 1.5×). "
                                     "0 = the preset's.", max=2000),
        }}

    def evaluate(self, model, video, max_iter):
        from ..pipelines.cpabmm.train.evaluate import reconstruct_video
        from ..pipelines.errors import check_image

        video = check_image("video", video, channels=(3,))
        cb = progress_callback(int(video.shape[0]), "CPABMM evaluate")
        pred, l1, ident = reconstruct_video(model, video.clone(), max_iter=max_iter, callback=cb)
        free_memory()
        return (l1, ident, pred, f"reconstruction L1 {l1:.5f} (identity {ident:.5f}) over {video.shape[0]} frames")


class FlipbookLoadFrames:
    DESCRIPTION = ("Loads every frame of an animated WebP/GIF/PNG (or one still picture) from ComfyUI's input folder "
                   "as an IMAGE batch. Core LoadImage keeps only the first frame.")
    CATEGORY = CAT
    FUNCTION = "load"
    RETURN_TYPES = ("IMAGE", "INT")
    RETURN_NAMES = ("frames", "count")
    OUTPUT_TOOLTIPS = ("Frames [F,H,W,3] in 0..1.", "Number of frames.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "file": ("STRING", {"default": "cpabmm_driving.webp",
                                "tooltip": "File name inside ComfyUI's input folder."}),
            "max_frames": W.max_frames("At most this many frames (0: all, within the memory budget "
                                       "$FLIPBOOK_MEMORY_BUDGET_GB).", default=240),
            "every_nth": W.every_nth("Keep every n-th frame."),
        }}

    @classmethod
    def IS_CHANGED(cls, file, **_):
        """A file replaced under the same name re-runs: its size and modification time are the key."""
        return file_signature(file)

    def load(self, file, max_frames, every_nth):
        frames = load_frames(input_image_path(file), max_frames=max_frames, every_nth=every_nth,
                             check=check_interrupted)
        return with_animated_preview((frames, int(frames.shape[0])), frames)


NODE_CLASS_MAPPINGS = {
    "FlipbookCPABMMLoader": FlipbookCPABMMLoader,
    "FlipbookCPABMMAnimate": FlipbookCPABMMAnimate,
    "FlipbookCPABMMConvert": FlipbookCPABMMConvert,
    "FlipbookCPABMMEvaluate": FlipbookCPABMMEvaluate,
    "FlipbookLoadFrames": FlipbookLoadFrames,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "FlipbookCPABMMLoader": "Flipbook CPABMM Loader",
    "FlipbookCPABMMAnimate": "Flipbook CPABMM Animate",
    "FlipbookCPABMMConvert": "Flipbook CPABMM Convert to safetensors",
    "FlipbookCPABMMEvaluate": "Flipbook CPABMM Evaluate (reconstruction L1)",
    "FlipbookLoadFrames": "Flipbook Load Frames",
}
