"""Animate-X nodes: loader, implicit pose indicator, sampler (spec §5)."""
from __future__ import annotations

import os

from ..pipelines.animatex import weights
from ..pipelines.animatex.pipeline import REFERENCE_MODES, AnimateXModel, animate, build_motion, prepare
from ..pipelines.animatex.settings import RELEASED_CHECKPOINT, SAMPLING as S
from ..pipelines.animatex.text import zero_y_from_file
from ..pipelines.devices import resolve_dtype
from ..pipelines.diffusion.scheduler import released_timesteps
from ..pipelines.errors import fail, reading
from ._comfy import (FileList, check_interrupted, list_models, model_path, offload_device, on_compute_device,
                     progress_callback, register_model_folder, torch_device)
from . import widgets as W
from .image import resolve_mask
from .types import ANIMATEX as MODEL, ANIMATEX_MOTION as MOTION, POSES

CAT = "Flipbook/Animate-X"
FOLDER = "animatex"
TEXT_ENCODER = "open_clip_pytorch_model.bin"          # the release's OpenCLIP ViT-H-14 file
NO_TEXT_ENCODER = "none (use the clip input)"

register_model_folder(FOLDER, {".safetensors", ".pth", ".pt", ".ckpt", ".bin"})


def _choices(default: str) -> list[str]:
    names = list_models(FOLDER)
    return FileList(names if default in names else [default] + names)


class FlipbookAnimateXLoader:
    DESCRIPTION = ("Loads the Animate-X UNet (with its implicit pose indicator) from models/animatex: the released "
                   "animate-x_ckpt.pth (read with torch.load(weights_only=True); optionally converted once to fp16 "
                   "safetensors next to it) or a .safetensors. zero_y, the tokens of the empty prompt, comes from the "
                   "release's OpenCLIP file (text tower) or from a connected SD 2.x CLIP text encoder.")
    CATEGORY = CAT
    FUNCTION = "load"
    RETURN_TYPES = (MODEL,)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The Animate-X model.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "unet_name": (_choices(RELEASED_CHECKPOINT), {"tooltip": "Checkpoint in ComfyUI/models/animatex."}),
            "dtype": W.dtype("Weights precision. auto: fp16 on a GPU (as released), fp32 on a CPU."),
            "text_encoder": (FileList(_choices(TEXT_ENCODER) + [NO_TEXT_ENCODER]), {"default": TEXT_ENCODER,
                             "tooltip": "OpenCLIP ViT-H-14 file (models/animatex) whose text tower encodes the empty prompt."}),
            "convert_to_safetensors": ("BOOLEAN", {"default": False,
                                       "tooltip": "Write <name>.fp16.safetensors next to a .pth once (3.6 GB instead of 7.3); pick it next time."}),
        }, "optional": {
            "clip": ("CLIP", {"tooltip": "SD 2.x text encoder (OpenCLIP ViT-H): used for zero_y instead of the file."}),
        }}

    def load(self, unet_name, dtype, text_encoder, convert_to_safetensors, clip=None):
        path = model_path(FOLDER, unet_name)
        dtype = resolve_dtype(dtype, torch_device(), half="fp16")
        with reading("unet_name", path, "an Animate-X checkpoint (.pth or .safetensors)"):
            if convert_to_safetensors and not path.lower().endswith(".safetensors"):
                path = weights.convert_to_safetensors(path)
            unet = weights.load_unet(path, dtype=dtype, device=offload_device())
        if clip is not None:
            zero_y = clip.encode_from_tokens(clip.tokenize(""))
            zero_y = zero_y[0] if isinstance(zero_y, (tuple, list)) else zero_y
        elif text_encoder != NO_TEXT_ENCODER:
            te_path = model_path(FOLDER, text_encoder)
            with reading("text_encoder", te_path, "the OpenCLIP ViT-H-14 file"):
                zero_y = zero_y_from_file(te_path)
        else:
            fail("clip", "a CLIP text encoder, or a text_encoder file, to encode the empty prompt", "neither")
        zero_y = zero_y.float().reshape(1, -1, zero_y.shape[-1])
        if zero_y.shape[-1] != unet.cfg.context_dim:
            fail("text_encoder", f"a text encoder of width {unet.cfg.context_dim} (OpenCLIP ViT-H-14)", f"width {zero_y.shape[-1]}")
        return (AnimateXModel(unet, zero_y, os.path.basename(path)),)


def _clip_encoder(clip_vision):
    def encode(images):
        try:
            out = clip_vision.encode_image(images, crop=False)      # resize to 224 without crop (spec §1.2)
        except TypeError:                                            # older ComfyUI: no crop argument
            out = clip_vision.encode_image(images)
        return out["image_embeds"]
    return encode


# Images per CLIP call: small, so that a cancel lands within about a second on a CPU too (ViT-H/14)
POSE_INDICATOR_CHUNK = 4


class FlipbookAnimateXPoseIndicator:
    DESCRIPTION = ("Implicit pose indicator inputs (paper §3.2): CLIP image embeddings of the reference and of the "
                   "driving frames plus the pose keypoints. Computed once here; the sampler turns them into motion "
                   "tokens once per guidance branch, not at every step. Without driving video frames, each frame's "
                   "rendered skeleton is encoded instead (an interpretation).")
    CATEGORY = CAT
    FUNCTION = "encode"
    RETURN_TYPES = (MOTION,)
    RETURN_NAMES = ("motion",)
    OUTPUT_TOOLTIPS = ("CLIP features and keypoints of the reference and every driving frame.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "clip_vision": ("CLIP_VISION", {"tooltip": "CLIP-ViT-H-14-laion2B-s32B-b79K from ComfyUI's CLIPVisionLoader."}),
            "reference": ("IMAGE", {"tooltip": "The character picture."}),
            "poses": (POSES, {"tooltip": "The (retargeted) driving poses."}),
        }, "optional": {
            "driving_frames": ("IMAGE", {"tooltip": "The driving video frames, one per pose (Animate-X encodes them with CLIP)."}),
            "reference_pose": (POSES, {"tooltip": "The character's pose: keypoint frame 0. Default: the first driving pose (as released)."}),
            "reference_mask": ("MASK", {"tooltip": "Load Image's mask (1 = transparent): the reference is put on white."}),
        }}

    def encode(self, clip_vision, reference, poses, driving_frames=None, reference_pose=None, reference_mask=None):
        n = getattr(poses, "frames", 0) + 1
        return (build_motion(_clip_encoder(clip_vision), reference, poses, driving_frames=driving_frames,
                             reference_pose=reference_pose, reference_mask=resolve_mask(reference_mask, reference),
                             chunk=POSE_INDICATOR_CHUNK, check=check_interrupted,
                             callback=progress_callback(n, "Animate-X pose indicator")),)


class FlipbookAnimateXSampler:
    DESCRIPTION = ("Animate-X sampling as released: v-prediction, zero-terminal-SNR DDIM (steps=30 runs 31 UNet "
                   "steps), guidance 2.5, offset noise 0.1. reference_mode local_image is the release's (reference "
                   "pixels as the first-frame input), latent the paper's (VAE latent as an extra leading frame; needs "
                   "the VAE). Long sequences run in overlapping context windows. Decode the LATENT with VAEDecode "
                   "(an SD 1/2 VAE).")
    CATEGORY = CAT
    FUNCTION = "sample"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("One latent per pose frame, in the VAE's space.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": (MODEL, {"tooltip": "From Flipbook Animate-X Loader."}),
            "reference": ("IMAGE", {"tooltip": "The character picture (resized to width x height without keeping aspect, as released)."}),
            "pose_images": ("IMAGE", {"tooltip": "Rendered driving skeletons, one per frame (Flipbook Pose Render, Animate-X colours)."}),
            "motion": (MOTION, {"tooltip": "From Flipbook Animate-X Pose Indicator, for the same poses."}),
            "seed": W.seed(S.seed, "Noise seed (the release uses 13)."),
            "steps": ("INT", {"default": S.steps, "min": 1, "max": 1000,
                              "tooltip": "DDIM steps as the release counts them: t = 1 + k * (1000 // steps), 30 -> 31 UNet steps."}),
            "guidance": W.guidance(S.guidance, "Classifier-free guidance scale (the release: 2.5).", max=20.0),
            "eta": ("FLOAT", {"default": S.eta, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": "DDIM eta (0: deterministic)."}),
            "noise_offset": ("FLOAT", {"default": S.noise_offset, "min": 0.0, "max": 1.0, "step": 0.01,
                                       "tooltip": "Per-channel offset noise added to the initial noise (0.1 as released)."}),
            "reference_mode": (list(REFERENCE_MODES), {"default": S.reference_mode,
                               "tooltip": "local_image: the released config; latent: the paper's; both: both."}),
            "width": ("INT", {"default": 0, "min": 0, "max": 4096, "step": 64, "tooltip": "Output width; 0: the model's (512)."}),
            "height": ("INT", {"default": 0, "min": 0, "max": 4096, "step": 64, "tooltip": "Output height; 0: the model's (768)."}),
            "context_frames": ("INT", {"default": S.context_frames, "min": 0, "max": 1024,
                                       "tooltip": "Frames per window for long sequences (the model was trained on 32); 0: all at once."}),
            "context_overlap": ("INT", {"default": S.context_overlap, "min": 0, "max": 1023,
                                        "tooltip": "Frames shared by neighbouring windows (v averaged)."}),
            "batch_cfg": ("BOOLEAN", {"default": S.batch_cfg,
                                      "tooltip": "Run the guided and unguided branches as one batch (faster); off: one after the other (less memory)."}),
        }, "optional": {
            "vae": ("VAE", {"tooltip": "SD 1/2 VAE: needed for reference_mode latent/both (encodes the reference)."}),
            "reference_pose_image": ("IMAGE", {"tooltip": "Rendered pose of the reference (latent modes). Default: the first pose image."}),
            "reference_mask": ("MASK", {"tooltip": "Load Image's mask (1 = transparent): the reference is put on white."}),
        }}

    def sample(self, model, reference, pose_images, motion, seed, steps, guidance, eta, noise_offset, reference_mode,
               width, height, context_frames, context_overlap, batch_cfg=True, vae=None, reference_pose_image=None,
               reference_mask=None):
        encode = None if vae is None else (lambda img: vae.encode(img[..., :3]).float().cpu())
        cond, latent_hw = prepare(model, reference, pose_images, motion, width=width, height=height,
                                  reference_mode=reference_mode, encode_latent=encode,
                                  reference_pose_image=reference_pose_image,
                                  reference_mask=resolve_mask(reference_mask, reference))
        with on_compute_device(model.unet):      # makes room in ComfyUI first; back to offload after, also on cancel
            lat = animate(model, cond, latent_hw, seed=seed, steps=steps, guidance=guidance, eta=eta,
                          noise_offset=noise_offset, context_frames=context_frames, context_overlap=context_overlap,
                          batch_cfg=batch_cfg, check=check_interrupted,
                          callback=progress_callback(len(released_timesteps(steps)), "Animate-X"))
        return ({"samples": lat.float().cpu()},)


NODE_CLASS_MAPPINGS = {
    "FlipbookAnimateXLoader": FlipbookAnimateXLoader,
    "FlipbookAnimateXPoseIndicator": FlipbookAnimateXPoseIndicator,
    "FlipbookAnimateXSampler": FlipbookAnimateXSampler,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "FlipbookAnimateXLoader": "Flipbook Animate-X Loader",
    "FlipbookAnimateXPoseIndicator": "Flipbook Animate-X Pose Indicator (IPI)",
    "FlipbookAnimateXSampler": "Flipbook Animate-X Sampler",
}
