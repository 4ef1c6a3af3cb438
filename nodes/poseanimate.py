"""PoseAnimate nodes (spec flipsketch-poseanimate.md §2, §3): a character picture + a pose sequence -> an
animation, zero-shot on SD1.5 + an OpenPose ControlNet.

Flipbook PoseAnimate Loader (SD1.5 + ControlNet) -> Flipbook Pose Align + Transition (PATA: the driving
poses moved onto the character's, with transition poses) -> Flipbook PoseAnimate Invert (PACM stage 0)
-> Flipbook PoseAnimate Embedding Optimiser (PACM stages 1-2) -> the model through Flipbook PoseAnimate
Attention (DCAM/MGDM ride on it) -> Flipbook PoseAnimate Sampler -> SaveAnimatedWEBP.
"""
from __future__ import annotations

import os

from ..pipelines import pose as P
from ..pipelines.devices import resolve_dtype
from ..pipelines.errors import check_range, fail
from ..pipelines.poseanimate.models import SINGLE_FILE_EXTS, load_sdcn, tiny_sdcn
from ..pipelines.poseanimate.pata import pata
from ..pipelines.poseanimate.pipeline import decode, invert_source, optimise_embeddings, poseanimate_sample
from ..pipelines.poseanimate.settings import (ALIGN_MODES, CONTROLNET_FILE, CONTROLNET_MODEL, MASK_MODES, PACM,
                                              PACM_DEFAULTS, PATA_DEFAULTS, SAMPLING, SD_FILE, SD_MODEL, SLOTS, STEPS,
                                              PoseAnimateAttention)
from ._comfy import (FileList, check_interrupted, grad_enabled, intermediate_device, list_models, model_path,
                     offload_device, progress_callback, torch_device)
from .diffusion import on_device, to_intermediate
from . import widgets as W
from .types import INVERSION, POSE_EMBEDS, SDCN

CATEGORY = "Flipbook/PoseAnimate"
_P = PACM_DEFAULTS
_A = PoseAnimateAttention()


def _folders(folder: str, marker: str) -> list[str]:
    out = []
    for top in list_models(folder, dirs=True):
        if os.path.exists(os.path.join(model_path(folder, top, is_dir=True), marker)):
            out.append(top)
    return out


def checkpoint_choices() -> list[str]:
    """SD1.5 diffusers folders in models/diffusers, then single files in models/checkpoints."""
    files = [f for f in list_models("checkpoints") if f.lower().endswith(SINGLE_FILE_EXTS)]
    return FileList(_folders("diffusers", "unet") + files or [SD_MODEL, SD_FILE])   # none yet: the workflows' names


def controlnet_choices() -> list[str]:
    """ControlNets in models/controlnet: diffusers folders (config.json) and single files."""
    files = [f for f in list_models("controlnet") if f.lower().endswith(SINGLE_FILE_EXTS)]
    return FileList(_folders("controlnet", "config.json") + files or [CONTROLNET_MODEL, CONTROLNET_FILE])


def _resolve(folder: str, name: str) -> str:
    if not name.lower().endswith(SINGLE_FILE_EXTS):
        try:
            return model_path("diffusers" if folder == "checkpoints" else folder, name, is_dir=True)
        except Exception:
            pass
    return model_path(folder, name)


class FlipbookPoseAnimateLoader:
    DESCRIPTION = ("Loads SD1.5 and an OpenPose ControlNet for PoseAnimate, offline; single files are converted "
                   "with the SD1.5 configs shipped in the pack and nothing is downloaded. SD1.5: a diffusers folder "
                   "from models/diffusers (stable-diffusion-v1-5) or a single file from models/checkpoints "
                   "(.safetensors; .ckpt only through torch.load(weights_only=True)). ControlNet: models/controlnet "
                   "(control_v11p_sd15_openpose, its diffusers folder or .safetensors/.pth).")
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = (SDCN,)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("SD1.5 (UNet, VAE, CLIP text encoder, tokenizer, DDIM config) + ControlNet; kept on the "
                       "offload device, moved to the GPU only while a Flipbook node runs it.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "checkpoint": (checkpoint_choices(), {"tooltip": "SD1.5: a diffusers folder in models/diffusers or a "
                           "single-file checkpoint in models/checkpoints (e.g. v1-5-pruned-emaonly.safetensors)."}),
            "controlnet": (controlnet_choices(), {"tooltip": "An OpenPose ControlNet for SD1.5 in models/controlnet "
                           "(e.g. control_v11p_sd15_openpose; the paper does not name its checkpoint)."}),
            "dtype": W.dtype("Weights precision. auto: fp16 on a GPU, fp32 on a CPU."),
        }}

    def load(self, checkpoint, controlnet, dtype):
        sd, cn = _resolve("checkpoints", checkpoint), _resolve("controlnet", controlnet)
        with grad_enabled():   # parameters must not be inference tensors: the PACM backpropagates
            return (load_sdcn(sd, cn, dtype=resolve_dtype(dtype, torch_device(), half="fp16"), device=offload_device()),)


class FlipbookTinySDControlNet:
    DESCRIPTION = ("A tiny SD + OpenPose ControlNet with seeded random weights (the test configuration): PoseAnimate "
                   "workflows run on a CPU in seconds. Produces noise-like pictures, not animations.")
    CATEGORY = CATEGORY
    FUNCTION = "build"
    RETURN_TYPES = (SDCN,)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("A random tiny bundle with the same interface as a loaded one.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "seed": W.seed(0, "Seed of the random weights."),
            "vae_downscale": (["8", "2"], {"default": "8", "tooltip": "Pixels per latent cell (SD1.5: 8)."}),
        }}

    def build(self, seed, vae_downscale):
        with grad_enabled():
            return (tiny_sdcn(int(seed), device=offload_device(), vae_downscale=int(vae_downscale)),)


class FlipbookPoseAlignTransition:
    DESCRIPTION = ("PATA (PoseAnimate's pose alignment + transition, our algorithm: the paper gives none): scales the "
                   "driving poses by the neck-to-mid-hip length and moves their neck onto the character's, then puts "
                   "t interpolated poses between the character's pose and the first driving pose. Frame 0 is the "
                   "character's own pose.")
    CATEGORY = CATEGORY
    FUNCTION = "align"
    RETURN_TYPES = ("POSE_KEYPOINT", "IMAGE")
    RETURN_NAMES = ("pose_keypoint", "pose_images")
    OUTPUT_TOOLTIPS = ("[source pose, t transition poses, aligned driving poses] on the character's canvas.",
                       "The same poses drawn as OpenPose skeletons on black (the ControlNet's input).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "source": ("POSE_KEYPOINT", {"tooltip": "The character's pose (frame 0 is used), e.g. from DWPose on the picture."}),
            "sequence": ("POSE_KEYPOINT", {"tooltip": "The driving pose sequence."}),
            "total_frames": W.frames(PATA_DEFAULTS.total_frames, "Frames of the animation, the source pose included "
                                     "(paper: 16); 0 = all driving frames. A short sequence holds its last pose.",
                                     min=0, max=1024),
            "t": ("INT", {"default": PATA_DEFAULTS.transition, "min": 0, "max": 256, "tooltip":
                  "Transition poses between the character's pose and the first driving pose (our default 4)."}),
            "align_mode": (list(ALIGN_MODES), {"default": PATA_DEFAULTS.align_mode, "tooltip":
                           "sequence: one scale and shift from the first driving frame (keeps the motion's travel); "
                           "per_frame: every frame aligned on its own."}),
            "width": ("INT", {"default": 512, "min": 8, "max": 4096, "step": 8, "tooltip": "Width of the pose images "
                      "(the character picture's)."}),
            "height": ("INT", {"default": 512, "min": 8, "max": 4096, "step": 8, "tooltip": "Height of the pose images."}),
            "hands": ("BOOLEAN", {"default": True, "tooltip": "Draw the hands."}),
            "min_confidence": W.min_confidence(0.3, "Points below this confidence count as missing."),
        }}

    def align(self, source, sequence, total_frames, t, align_mode, width, height, hands, min_confidence):
        src = P.poses_from_openpose(P.openpose_frames(source, source="source"), threshold=min_confidence)
        seq = P.poses_from_openpose(P.openpose_frames(sequence, source="sequence"), threshold=min_confidence)
        out = pata(src, seq, total_frames=total_frames, t=t, align_mode=align_mode)
        images = P.render_poses(out, int(width), int(height), hands=bool(hands), feet=False, colors="controlnet")
        return (P.poses_to_openpose(out), images)


class FlipbookPoseAnimateInvert:
    DESCRIPTION = ("PoseAnimate's stage 0: DDIM inversion of the character picture with ControlNet(source pose) and "
                   "the prompt, unguided (w = 1), keeping the latents Z_0..Z_T.")
    CATEGORY = CATEGORY
    FUNCTION = "invert"
    RETURN_TYPES = (INVERSION, "LATENT")
    RETURN_NAMES = ("trajectory", "noise")
    OUTPUT_TOOLTIPS = ("Z_0..Z_T with the prompt, for the embedding optimiser.", "Z_T as a LATENT (1, C, 1, h, w).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": (SDCN, {"tooltip": "SD1.5 + OpenPose ControlNet."}),
            "image": ("IMAGE", {"tooltip": "The character picture (first frame used)."}),
            "poses": ("IMAGE", {"tooltip": "Pose images; frame 0 must be the character's own pose (PATA's output)."}),
            "prompt": ("STRING", {"default": "a man", "multiline": True, "tooltip":
                       "Describes the character (prompt C of the paper)."}),
            "steps": W.steps(STEPS, "DDIM steps T (paper: 50). The optimiser and sampler use the same."),
            "size": ("INT", {"default": 0, "min": 0, "max": 2048, "step": 8, "tooltip":
                     "Resize the picture to size x size first; 0 keeps it (paper: 512)."}),
        }}

    def invert(self, model, image, poses, prompt, steps, size):
        with on_device(model, "unet", "controlnet", "vae", "text_encoder"):
            traj = invert_source(model, image, poses, str(prompt), steps=steps, size=size, check=check_interrupted,
                                 callback=progress_callback(int(steps), "PoseAnimate inversion"))
            return to_intermediate((traj, {"samples": traj["latents"][-1][:, :, None]}))


class FlipbookPoseAnimateOptimise:
    DESCRIPTION = ("PoseAnimate's pose-aware embedding optimisation (PACM): per DDIM step, Adam on the text embedding "
                   "so that a guided step under the source pose reproduces the inversion (stage 1, E_s), then under "
                   "each target pose (stage 2, E[i]). The learning-rate schedule and early stop are null-text "
                   "inversion's (our choice: the paper gives none).")
    CATEGORY = CATEGORY
    FUNCTION = "optimise"
    RETURN_TYPES = (POSE_EMBEDS,)
    RETURN_NAMES = ("embeds",)
    OUTPUT_TOOLTIPS = ("Per-frame, per-step embeddings (frame 0 = E_s) with the source noise and poses, for the sampler.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": (SDCN, {"tooltip": "SD1.5 + OpenPose ControlNet (as inverted)."}),
            "trajectory": (INVERSION, {"tooltip": "Z_0..Z_T from Flipbook PoseAnimate Invert."}),
            "poses": ("IMAGE", {"tooltip": "Pose images, frame 0 the source pose, frames 1.. the targets (PATA)."}),
            "guidance": W.guidance(_P.guidance, "CFG scale w of the optimisation (paper: 7.5)."),
            "inner_iterations": W.iterations(_P.inner_iters, "Adam iterations per step, stage 1 (paper: 5).", max=100),
            "stage2_iterations": W.iterations(_P.stage2_iters, "Adam iterations per step and frame, stage 2 "
                                              "(Alg. 1 writes one step; 5 as stage 1 by default).", max=100),
            "lr": ("FLOAT", {"default": _P.lr, "min": 0.0, "max": 1.0, "step": 0.001, "tooltip":
                   "Adam learning rate (null-text: 1e-2)."}),
            "lr_decay": ("BOOLEAN", {"default": _P.lr_decay, "tooltip": "lr * (1 - step/100), as null-text inversion."}),
            "early_stop": ("FLOAT", {"default": _P.early_stop, "min": 0.0, "max": 1.0, "step": 1e-5, "tooltip":
                           "Stop a frame's step once its loss < early_stop + step * 2e-5 (null-text); 0 = never."}),
            "slot": (list(SLOTS), {"default": _P.slot, "tooltip": "CFG branch of the optimised embedding: cond (PA:81, "
                     "default) or uncond (PA:41's caption, null-text's)."}),
            "frame_chunk": ("INT", {"default": _P.frame_chunk, "min": 1, "max": 64, "tooltip":
                            "Target poses optimised together (memory); the result does not change."}),
        }}

    def optimise(self, model, trajectory, poses, guidance, inner_iterations, stage2_iterations, lr, lr_decay,
                 early_stop, slot, frame_chunk):
        opts = PACM(guidance=guidance, inner_iters=inner_iterations, stage2_iters=stage2_iterations, lr=lr,
                    lr_decay=lr_decay, early_stop=early_stop, slot=slot, frame_chunk=frame_chunk)
        steps = int(trajectory.get("steps", 1)) if isinstance(trajectory, dict) else 1
        frames = int(poses.shape[0]) if hasattr(poses, "shape") and poses.dim() == 4 else 1
        with on_device(model, "unet", "controlnet", "text_encoder"):
            out = optimise_embeddings(model, trajectory, poses, opts=opts, check=check_interrupted,
                                      callback=progress_callback(steps * frames, "PoseAnimate PACM"))
            return (out.to(intermediate_device()),)


class FlipbookPoseAnimateAttention:
    DESCRIPTION = ("PoseAnimate's dual consistency attention (DCAM) on the UNet's up-block self-attention: frame i "
                   "attends to frames 0, i-1 and i with weights lambda1..3 (frame 0 stays plain); with a source mask, "
                   "mask-guided decoupling (MGDM) attends character to character and background to background, the "
                   "frames' masks taken from the cross-attention maps of the subject word. Returns the model carrying it.")
    CATEGORY = CATEGORY
    FUNCTION = "patch"
    RETURN_TYPES = (SDCN,)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The model carrying the attention patch (a clone sharing the weights).",)

    @classmethod
    def INPUT_TYPES(cls):
        def lam(i, tip):
            return ("FLOAT", {"default": _A.lambdas[i], "min": 0.0, "max": 1.0, "step": 0.05, "tooltip": tip})
        return {"required": {
            "model": (SDCN, {"tooltip": "SD1.5 + OpenPose ControlNet."}),
            "lambda1": lam(0, "Weight of frame 0 (the source) in every frame's self-attention (paper: 0.7)."),
            "lambda2": lam(1, "Weight of the previous frame (paper: 0.15)."),
            "lambda3": lam(2, "Weight of the frame itself (paper: 0.15). The three should sum to 1."),
            "mask_mode": (list(MASK_MODES), {"default": _A.mask_mode, "tooltip":
                          "MGDM: multiply keys and values by the masks (Eq. 9, faithful) or drop masked keys from the "
                          "softmax (logit)."}),
            "subject_word": ("STRING", {"default": "", "tooltip": "A word of the prompt naming the character (e.g. "
                             "'man'): its cross-attention maps give the frames' masks. Empty: the source mask for all."}),
            "threshold": ("FLOAT", {"default": _A.threshold, "min": 0.0, "max": 1.0, "step": 0.05, "tooltip":
                          "Mask threshold of the normalised cross-attention map (our choice 0.3, P2P's recipe)."}),
            "blocks": (["up", "all"], {"default": "up", "tooltip": "up: the up-sampling blocks only (paper)."}),
        }, "optional": {
            "source_mask": ("MASK", {"tooltip": "The character's mask in the picture (any matting node); enables MGDM."}),
        }}

    def patch(self, model, lambda1, lambda2, lambda3, mask_mode, subject_word, threshold, blocks, source_mask=None):
        for name, v in (("lambda1", lambda1), ("lambda2", lambda2), ("lambda3", lambda3), ("threshold", threshold)):
            check_range(name, float(v), 0.0, 1.0)
        if not hasattr(model, "with_patches"):
            fail("model", "an SD1.5 + ControlNet bundle", type(model).__name__)
        mask = None if source_mask is None else source_mask.detach().clone().float()
        cfg = PoseAnimateAttention(lambdas=(float(lambda1), float(lambda2), float(lambda3)), source_mask=mask,
                                   subject_word=str(subject_word), threshold=float(threshold), mask_mode=mask_mode,
                                   blocks=blocks)
        return (model.with_patches(cfg),)


class FlipbookPoseAnimateSampler:
    DESCRIPTION = ("PoseAnimate generation: every frame starts from the character's inverted noise Z_T; frame 0 with "
                   "E_s (it reconstructs the picture), frame i with its pose and E[i]; all frames and both guidance "
                   "branches in one UNet + ControlNet call per step, with the attention the model carries.")
    CATEGORY = CATEGORY
    FUNCTION = "sample"
    RETURN_TYPES = ("IMAGE", "LATENT")
    RETURN_NAMES = ("frames", "latent")
    OUTPUT_TOOLTIPS = ("The animation frames.", "The latents (1, C, frames, h, w).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": (SDCN, {"tooltip": "The model, through Flipbook PoseAnimate Attention for DCAM/MGDM."}),
            "embeds": (POSE_EMBEDS, {"tooltip": "From Flipbook PoseAnimate Embedding Optimiser (steps, poses, Z_T)."}),
            "guidance": W.guidance(SAMPLING.guidance, "CFG scale (paper: 7.5; use the optimiser's)."),
            "decode_chunk": ("INT", {"default": SAMPLING.decode_chunk, "min": 1, "max": 256, "tooltip":
                             "Frames per VAE decode call (memory)."}),
        }}

    def sample(self, model, embeds, guidance, decode_chunk):
        check_range("guidance", float(guidance), 0.0, 100.0)
        steps = int(getattr(embeds, "steps", 1))
        with on_device(model, "unet", "controlnet", "vae"):
            lat = poseanimate_sample(model, embeds, guidance=guidance, check=check_interrupted,
                                     callback=progress_callback(steps, "PoseAnimate"))
            frames = decode(model, lat, chunk=decode_chunk, check=check_interrupted,
                            callback=progress_callback(int(lat.shape[2]), "PoseAnimate decode"))
            return (frames, {"samples": to_intermediate(lat)})


NODE_CLASS_MAPPINGS = {c.__name__: c for c in (FlipbookPoseAnimateLoader, FlipbookTinySDControlNet,
                                               FlipbookPoseAlignTransition, FlipbookPoseAnimateInvert,
                                               FlipbookPoseAnimateOptimise, FlipbookPoseAnimateAttention,
                                               FlipbookPoseAnimateSampler)}
NODE_DISPLAY_NAME_MAPPINGS = {
    "FlipbookPoseAnimateLoader": "Flipbook PoseAnimate Loader (SD1.5 + ControlNet)",
    "FlipbookTinySDControlNet": "Flipbook Tiny SD + ControlNet (random, for tests)",
    "FlipbookPoseAlignTransition": "Flipbook Pose Align + Transition (PATA)",
    "FlipbookPoseAnimateInvert": "Flipbook PoseAnimate Invert",
    "FlipbookPoseAnimateOptimise": "Flipbook PoseAnimate Embedding Optimiser (PACM)",
    "FlipbookPoseAnimateAttention": "Flipbook PoseAnimate Attention (DCAM/MGDM)",
    "FlipbookPoseAnimateSampler": "Flipbook PoseAnimate Sampler",
}
