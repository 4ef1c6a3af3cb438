"""FlipSketch nodes: attention composition, frame alignment, the sampler, sketch clean-up.

A sketch animation: Flipbook DDIM Invert (the sketch -> x_T^r); the model through Flipbook FlipSketch
Attention (which returns it carrying the composition, as ComfyUI's attention patches ride on a MODEL)
into Flipbook FlipSketch Sampler (composition + frame alignment) -> Flipbook Video Decode -> Flipbook
Sketch Binarise.
"""
from __future__ import annotations

from ..pipelines.flipsketch.pipeline import binarise_sketch, flipsketch_sample
from ..pipelines.flipsketch.settings import COPIES, REFERENCES, SAMPLING, FlipSketchAttention, FrameAlign
from ._comfy import check_interrupted, progress_callback
from .diffusion import on_device, to_intermediate
from . import widgets as W
from .types import ATTN_PATCH, EMBEDS, FRAME_ALIGN, T2V

CATEGORY = "Flipbook/FlipSketch"
_FS = FlipSketchAttention()
_FA = FrameAlign()


class FlipbookFlipSketchAttention:
    DESCRIPTION = ("FlipSketch's dual attention composition (paper §4.3): the generation's spatial self-attention "
                   "takes the reference sketch's queries in its first N frames, and its temporal self-attention "
                   "attends to the reference's frame-0 key, up-weighted by lambda. Installed by module name. "
                   "Wire the model through it: its model output carries the composition to the sampler "
                   "(the model wired in is left as it was).")
    CATEGORY = CATEGORY
    FUNCTION = "make"
    RETURN_TYPES = (ATTN_PATCH, T2V)
    RETURN_NAMES = ("attention", "model")
    OUTPUT_TOOLTIPS = ("The composition settings (for the sampler's optional attention input, as older workflows wire it).",
                       "The model carrying the composition (a clone sharing the weights); empty without a model input.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "lambda_": ("FLOAT", {"default": _FS.lam, "min": 0.0, "max": 1.0, "step": 0.05, "tooltip":
                        "Fidelity vs motion: the reference key's weight (1 + lambda * j / 50) for frame j. "
                        "Higher = closer to the sketch, less motion (app: lambda = 1 - motion slider)."}),
            "tau2": ("INT", {"default": _FS.tau2, "min": -1, "max": 1000, "tooltip":
                     "Compose at step indices 0..tau2 (official 15 of 25); -1 = never."}),
            "copies": (list(COPIES), {"default": _FS.copies, "tooltip":
                       "Frames that take the reference queries: shrinking max(1, frames - step) (official), all, one."}),
            "spatial": ("BOOLEAN", {"default": True, "tooltip": "Spatial composition C^S on."}),
            "temporal": ("BOOLEAN", {"default": True, "tooltip": "Temporal composition C^T on."}),
            "reference": (list(REFERENCES), {"default": _FS.reference, "tooltip":
                          "copies: denoise N copies of the sketch noise as a clip (official code). single: denoise "
                          "it as one frame and repeat its queries (the paper's wording; cheaper, slightly different)."}),
        }, "optional": {
            "model": (T2V, {"tooltip": "The text-to-video model to carry the composition."}),
        }}

    def make(self, lambda_, tau2, copies, spatial, temporal, reference, model=None):
        patch = FlipSketchAttention(lam=lambda_, tau2=tau2, copies=copies, spatial=spatial, temporal=temporal,
                                    reference=reference)
        return (patch, None if model is None else model.with_patches(patch))


class FlipbookFlipSketchAlign:
    DESCRIPTION = ("Settings of FlipSketch's iterative frame alignment (paper §4.2): for the first steps, Adam on the "
                   "noise of frames 2..M so that frame 0 denoised jointly matches the sketch's own denoising. "
                   "The sampler aligns by default; wire this node in to change the settings or switch it off.")
    CATEGORY = CATEGORY
    FUNCTION = "make"
    RETURN_TYPES = (FRAME_ALIGN,)
    RETURN_NAMES = ("align",)
    OUTPUT_TOOLTIPS = ("Frame-alignment settings for the FlipSketch sampler.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "enabled": ("BOOLEAN", {"default": _FA.enabled, "tooltip":
                        "On as in the paper. The official app ships it off (much cheaper, slightly less faithful)."}),
            "tau1": ("INT", {"default": _FA.tau1, "min": 0, "max": 1000, "tooltip": "Align at step indices 0..tau1-1."}),
            "iterations": W.iterations(_FA.iters, "Adam iterations per step.", max=200),
            "lr": ("FLOAT", {"default": _FA.lr, "min": 0.0, "max": 1.0, "step": 0.0001, "tooltip": "Adam learning rate."}),
            "official_quirks": ("BOOLEAN", {"default": _FA.official_quirks, "tooltip":
                                "Return the noise before the last Adam update, as the official code does."}),
            "chunk": ("INT", {"default": _FA.chunk, "min": 1, "max": 64, "tooltip":
                      "Samples per backward pass: activation memory grows with it; the result does not change."}),
        }}

    def make(self, enabled, tau1, iterations, lr, official_quirks, chunk):
        return (FrameAlign(enabled=enabled, tau1=tau1, iters=iterations, lr=lr, official_quirks=official_quirks,
                           chunk=chunk),)


class FlipbookFlipSketchSampler:
    DESCRIPTION = ("FlipSketch sampling: every sample starts with the inverted sketch noise in frame 0 and random "
                   "noise elsewhere; a null-prompt reference denoising of the sketch feeds the attention composition, "
                   "and frame alignment keeps frame 0 on the sketch. Seeds seed, seed+1, ... give one sample each.")
    CATEGORY = CATEGORY
    FUNCTION = "sample"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("Video latents (seeds, C, frames, h, w); decode with Flipbook Video Decode.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": (T2V, {"tooltip": "FlipSketch's checkpoint (or any ModelScope-style T2V backbone), through Flipbook "
                            "FlipSketch Attention so that it carries the composition."}),
            "positive": (EMBEDS, {"tooltip": "The motion prompt, e.g. 'a cat is walking'."}),
            "reference": ("LATENT", {"tooltip": "The sketch's inverted noise x_T^r from Flipbook DDIM Invert."}),
            "frames": W.frames(SAMPLING.frames, "Frames per animation (app: 10).", min=2, max=64),
            "steps": W.steps(SAMPLING.steps, "DDIM steps (app: 25)."),
            "guidance": W.guidance(SAMPLING.guidance, "Classifier-free guidance (app: 9)."),
            "seeds": ("INT", {"default": SAMPLING.seeds, "min": 1, "max": 64, "tooltip": "Animations to make (app: 3)."}),
            "seed": W.seed(SAMPLING.seed, "Seed of the first animation (animation s uses seed + s)."),
            "seed_chunk": ("INT", {"default": 0, "min": 0, "max": 64, "tooltip":
                           "Animations per UNet call (memory); 0 = all at once. The result does not change."}),
            "frame_align": ("BOOLEAN", {"default": True, "tooltip":
                            "Iterative frame alignment (paper: on; official app: off). Settings: the align input."}),
        }, "optional": {
            "attention": (ATTN_PATCH, {"tooltip": "Composition settings from Flipbook FlipSketch Attention, as older "
                          "workflows wire them; they take the place of a composition the model carries."}),
            "negative": (EMBEDS, {"tooltip": "Negative prompt; default the empty prompt (app)."}),
            "align": (FRAME_ALIGN, {"tooltip": "Frame-alignment settings (default tau1 10, 10 iterations, lr 1e-3)."}),
        }}

    def sample(self, model, positive, reference, frames, steps, guidance, seeds, seed, seed_chunk, frame_align,
               attention=None, negative=None, align=None):
        opts = (align or _FA) if frame_align else None
        with on_device(model, "unet", "text_encoder"):
            lat = flipsketch_sample(model, positive, reference["samples"], negative=negative, attention=attention,
                                    align=opts, frames=frames, steps=steps, guidance=guidance, seeds=seeds,
                                    seed=seed, seed_chunk=seed_chunk, check=check_interrupted,
                                    callback=progress_callback(int(steps), "FlipSketch"))
            return ({"samples": to_intermediate(lat)},)


class FlipbookSketchBinarise:
    DESCRIPTION = "Sketch clean-up as in FlipSketch's app: Otsu threshold per frame, black strokes on white."
    CATEGORY = CATEGORY
    FUNCTION = "clean"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("frames",)
    OUTPUT_TOOLTIPS = ("Binary frames (0 or 1).",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "frames": ("IMAGE", {"tooltip": "Decoded animation frames (or a sketch)."}),
            "size": ("INT", {"default": 0, "min": 0, "max": 4096, "step": 8, "tooltip":
                     "Resize to size x size first (LANCZOS); 0 keeps the size. The app uses 1024."}),
            "invert": ("BOOLEAN", {"default": False, "tooltip": "White strokes on black instead."}),
        }}

    def clean(self, frames, size, invert):
        return (binarise_sketch(frames, size=size, invert=invert),)


NODE_CLASS_MAPPINGS = {c.__name__: c for c in (FlipbookFlipSketchAttention, FlipbookFlipSketchAlign,
                                               FlipbookFlipSketchSampler, FlipbookSketchBinarise)}
NODE_DISPLAY_NAME_MAPPINGS = {
    "FlipbookFlipSketchAttention": "Flipbook FlipSketch Attention",
    "FlipbookFlipSketchAlign": "Flipbook FlipSketch Frame Align",
    "FlipbookFlipSketchSampler": "Flipbook FlipSketch Sampler",
    "FlipbookSketchBinarise": "Flipbook Sketch Binarise",
}
