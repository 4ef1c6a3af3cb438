"""Shared diffusion nodes: text-to-video backbones, text encoding, DDIM inversion, video decoding.

Types: FLIPBOOK_T2V (unet + vae + text encoder + tokenizer + scheduler config, and the attention
patches it carries, e.g. from Flipbook FlipSketch Attention), FLIPBOOK_EMBEDS
(prompt embeddings (1, 77, D)), FLIPBOOK_INVERSION (the inversion's latents Z_0..Z_T). Video
latents travel as ComfyUI LATENT {"samples": (batch, channels, frames, h, w)}.
"""
from __future__ import annotations

import os

from ..pipelines.devices import resolve_dtype
from ..pipelines.diffusion.backbone import load_t2v, tiny_t2v
from ..pipelines.diffusion.inversion import REDUCTIONS, invert_frames
from ..pipelines.diffusion.text import encode_text
from ..pipelines.diffusion.vae import POSTERIORS, VAE_RANGES, decode_latents
from ..pipelines.errors import fail, reading
from ..pipelines.flexiclip.settings import T2V_MODEL as FLEXICLIP_T2V
from ..pipelines.flipsketch.settings import FLIPSKETCH_MODEL
from ._comfy import (FileList, check_interrupted, grad_enabled, intermediate_device, list_models, model_path, offload_device,
                     on_compute_device, progress_callback, torch_device, with_animated_preview)

from . import widgets as W
from .types import EMBEDS, INVERSION, T2V

CATEGORY = "Flipbook/Diffusion"


def t2v_folders() -> list[str]:
    """Diffusers text-to-video folders in models/diffusers: top level, or one level down (a cloned
    Hugging Face repo such as t2v_sketch-lora/checkpoint-2500)."""
    found = []
    for top in list_models("diffusers", dirs=True):
        path = model_path("diffusers", top, is_dir=True)
        if os.path.isdir(os.path.join(path, "unet")):
            found.append(top)
            continue
        for sub in sorted(os.listdir(path)):
            if os.path.isdir(os.path.join(path, sub, "unet")):
                found.append(f"{top}/{sub}")
    # Nothing installed yet: still show the names the shipped workflows use, loading one explains where to put it.
    return FileList(found or [FLIPSKETCH_MODEL, FLEXICLIP_T2V])


def _check_model(model):
    if not hasattr(model, "unet") or not hasattr(model, "scheduler_config"):
        fail("model", "a FLIPBOOK_T2V backbone (Flipbook T2V Loader or Flipbook Tiny T2V)", type(model).__name__)
    return model


def on_device(model, *parts: str):
    """``with on_device(model, "unet", "text_encoder"):`` those parts of a FLIPBOOK_T2V sit on the compute
    device for the block and go back to the offload device after it (the backbone is outside ComfyUI's
    model management; loaders keep it on the offload device)."""
    return on_compute_device(*(getattr(_check_model(model), p) for p in parts))


def to_intermediate(x):
    """Node outputs off the GPU (ComfyUI caches them): tensors, or lists/dicts of tensors."""
    if isinstance(x, dict):
        return {k: to_intermediate(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(to_intermediate(v) for v in x)
    return x.to(intermediate_device()) if hasattr(x, "to") and hasattr(x, "device") else x


class FlipbookT2VLoader:
    DESCRIPTION = ("Loads a text-to-video model in diffusers folder layout (unet/vae/text_encoder/tokenizer/"
                   "scheduler) from ComfyUI's models/diffusers folder, e.g. FlipSketch's checkpoint-2500 "
                   "or ModelScope text-to-video-ms-1.7b. Offline; FlipSketch's lora/*.pt pickles are not read.")
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = (T2V,)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The text-to-video backbone (UNet3D, VAE, CLIP text encoder, tokenizer, DDIM config); "
                       "kept on the offload device, moved to the GPU only while a Flipbook node runs it.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model_dir": (t2v_folders(), {"tooltip": "A diffusers folder under models/diffusers, e.g. the "
                                          "Hugging Face repo Hmrishav/t2v_sketch-lora cloned there (its checkpoint-2500)."}),
            "dtype": W.dtype("Weights precision. auto: bf16 (or fp16 where bf16 is unsupported) on a GPU, fp32 on "
                             "a CPU. FlipSketch ran in bf16."),
        }}

    def load(self, model_dir, dtype):
        path = model_path("diffusers", model_dir, is_dir=True)
        with grad_enabled(), reading("model_dir", path, "a diffusers text-to-video folder (unet/vae/text_encoder/...)"):
            # parameters must not be inference tensors: frame alignment backpropagates
            return (load_t2v(path, resolve_dtype(dtype, torch_device()), offload_device()),)


class FlipbookTinyT2V:
    DESCRIPTION = ("A tiny text-to-video backbone with seeded random weights (the test configuration): every "
                   "workflow runs on a CPU in seconds. Produces noise-like pictures, not animations.")
    CATEGORY = CATEGORY
    FUNCTION = "build"
    RETURN_TYPES = (T2V,)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("A random tiny backbone with the same interface as a loaded one.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "seed": W.seed(0, "Seed of the random weights."),
            "vae_downscale": (["32", "8", "2"], {"default": "32", "tooltip":
                              "Pixels per latent cell. 32 keeps 256-pixel workflows fast; 8 matches ModelScope's grid."}),
        }}

    def build(self, seed, vae_downscale):
        with grad_enabled():
            return (tiny_t2v(int(seed), device=offload_device(), vae_downscale=int(vae_downscale)),)


class FlipbookTextEncode:
    DESCRIPTION = "Encodes a prompt with the backbone's CLIP text encoder (77 tokens)."
    CATEGORY = CATEGORY
    FUNCTION = "encode"
    RETURN_TYPES = (EMBEDS,)
    RETURN_NAMES = ("embeds",)
    OUTPUT_TOOLTIPS = ("Prompt embeddings (1, 77, D) for Flipbook samplers and the DDIM inverter.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": (T2V, {"tooltip": "The backbone whose text encoder to use."}),
            "text": ("STRING", {"default": "", "multiline": True, "tooltip":
                     "The prompt, e.g. 'a cat is walking'. Empty = the null prompt."}),
        }}

    def encode(self, model, text):
        with on_device(model, "text_encoder"):
            return (to_intermediate(encode_text(model, str(text))),)


class FlipbookDDIMInvert:
    DESCRIPTION = ("DDIM inversion of a picture or clip: encodes it with the VAE, then runs the DDIM steps "
                   "backwards to noise, keeping the whole trajectory Z_0..Z_T. FlipSketch settings: 25 steps, "
                   "guidance 1, repeat 5, mean_frames, vae_range 0_1, posterior sample, size 256.")
    CATEGORY = CATEGORY
    FUNCTION = "invert"
    RETURN_TYPES = ("LATENT", INVERSION)
    RETURN_NAMES = ("noise", "trajectory")
    OUTPUT_TOOLTIPS = ("The inverted noise Z_T as a video LATENT (1, C, frames, h, w).",
                       "All latents Z_0..Z_T with their timesteps, for methods that follow the trajectory.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": (T2V, {"tooltip": "The text-to-video backbone."}),
            "image": ("IMAGE", {"tooltip": "The picture (or frames) to invert."}),
            "steps": W.steps(25, "DDIM steps (FlipSketch 25)."),
            "guidance": W.guidance(1.0, "Classifier-free guidance of the inversion. 1 = unguided, one UNet pass "
                                   "per step (FlipSketch's two branches are both the empty prompt, so this is its result)."),
            "repeat_frames": ("INT", {"default": 1, "min": 1, "max": 64, "tooltip":
                              "Repeat every frame this often before inverting (FlipSketch: the sketch as a 5-frame clip)."}),
            "reduce": (list(REDUCTIONS), {"default": "none", "tooltip":
                       "mean_frames: average the frames of every latent (FlipSketch's x_T^r)."}),
            "vae_range": (list(VAE_RANGES), {"default": "-1_1", "tooltip":
                          "Pixel range fed to the VAE. -1_1 is what VAEs expect; 0_1 is what FlipSketch's app does."}),
            "posterior": (list(POSTERIORS), {"default": "mean", "tooltip":
                          "VAE latent: the posterior mean, or a sample drawn with the seed (FlipSketch)."}),
            "size": ("INT", {"default": 0, "min": 0, "max": 2048, "step": 8, "tooltip":
                     "Resize to size x size first (LANCZOS); 0 keeps the picture's size. FlipSketch: 256."}),
            "seed": W.seed(0, "Seed of the posterior sample."),
        }, "optional": {
            "prompt": (EMBEDS, {"tooltip": "Prompt of the inversion; default the empty prompt (FlipSketch)."}),
            "negative": (EMBEDS, {"tooltip": "Unconditional prompt when guidance != 1; default empty."}),
        }}

    def invert(self, model, image, steps, guidance, repeat_frames, reduce, vae_range, posterior, size, seed,
               prompt=None, negative=None):
        with on_device(model, "unet", "vae", "text_encoder"):
            x_t, traj = invert_frames(model, image, prompt, steps=steps, guidance=guidance, negative=negative,
                                      repeat_frames=repeat_frames, reduce=reduce, vae_range=vae_range,
                                      posterior=posterior, size=size, seed=seed, check=check_interrupted,
                                      callback=progress_callback(int(steps), "DDIM inversion"))
            return to_intermediate(({"samples": x_t}, traj))


class FlipbookVideoDecode:
    DESCRIPTION = "Decodes video latents (batch, channels, frames, h, w) to IMAGE frames, a few frames at a time."
    CATEGORY = CATEGORY
    FUNCTION = "decode"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("frames",)
    OUTPUT_TOOLTIPS = ("All frames of all samples, sample after sample: [batch * frames, H, W, 3].",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": (T2V, {"tooltip": "The backbone whose VAE decodes."}),
            "latent": ("LATENT", {"tooltip": "Video latents from a Flipbook sampler or the inverter."}),
            "chunk": ("INT", {"default": 8, "min": 1, "max": 256, "tooltip": "Frames per VAE call (memory)."}),
        }}

    def decode(self, model, latent, chunk):
        with on_device(model, "vae"):
            samples = latent["samples"]
            total = samples.shape[0] * samples.shape[2] if samples.dim() == 5 else 1
            frames = decode_latents(model, samples, chunk=chunk, check=check_interrupted,
                                    callback=progress_callback(total, "video decode"))
        return with_animated_preview((frames,), frames, fps=8.0)


NODE_CLASS_MAPPINGS = {c.__name__: c for c in (FlipbookT2VLoader, FlipbookTinyT2V, FlipbookTextEncode,
                                               FlipbookDDIMInvert, FlipbookVideoDecode)}
NODE_DISPLAY_NAME_MAPPINGS = {
    "FlipbookT2VLoader": "Flipbook T2V Loader (diffusers folder)",
    "FlipbookTinyT2V": "Flipbook Tiny T2V (random, for tests)",
    "FlipbookTextEncode": "Flipbook Text Encode",
    "FlipbookDDIMInvert": "Flipbook DDIM Invert",
    "FlipbookVideoDecode": "Flipbook Video Decode",
}
