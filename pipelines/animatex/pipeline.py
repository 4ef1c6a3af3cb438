"""Animate-X end to end, minus ComfyUI: model bundle, input preparation, motion (IPI inputs), sampling.

Sampling as released (spec §1.5): v-prediction, the zero-terminal-SNR ``linear_sd`` schedule, DDIM over
``1 + arange(0, 1000, 1000 // steps)`` (31 UNet steps for "30"), classifier-free guidance 2.5 with
everything zeroed in the unconditional branch, offset noise 0.1, through the pack's one DDIM loop.
Additions (interpretations, spec §1.6, §3.1): both guidance branches run as one batch; all
conditioning is computed once before the loop (finding 8); sequences longer than a window are
sampled in overlapping context windows whose v-predictions are averaged.

Used by nodes/animatex.py, the tests and the benchmark. The CLIP image encoder and the VAE are
passed in as callables, so ComfyUI's CLIP_VISION / VAE objects, stand-ins in tests, or anything
else with the same behaviour can serve.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from ..diffusion.sampler import cfg_batch, context_windows, ddim_loop, guide, initial_noise, over_windows
from ..diffusion.scheduler import DDIM, released_timesteps
from ..errors import check_image, check_mask, fail
from ..pose import PoseSequence, render_poses
from ..progress import Check, StepCallback, poll, report
from .settings import NUM_TIMESTEPS, SAMPLING, AnimateXConfig, alphas_cumprod
from .unet import AnimateXUNet
from ..seeds import generator as seed_generator

REFERENCE_MODES = ("local_image", "latent", "both")


@dataclass
class AnimateXModel:
    """ComfyUI type FLIPBOOK_ANIMATEX: the UNet (with IPI) and the empty-prompt tokens zero_y."""
    unet: AnimateXUNet
    zero_y: torch.Tensor
    name: str = ""

    @property
    def cfg(self) -> AnimateXConfig:
        return self.unet.cfg


@dataclass
class Motion:
    """ComfyUI type FLIPBOOK_ANIMATEX_MOTION: the implicit pose indicator's inputs for F frames,
    reference first. clip_ref (D,), clip_frames (F+1, D), keypoints (F+1, 2, 18)."""
    clip_ref: torch.Tensor
    clip_frames: torch.Tensor
    keypoints: torch.Tensor

    @property
    def frames(self) -> int:
        return int(self.keypoints.shape[0]) - 1


@dataclass
class Conditioning:
    """What the sampler feeds the UNet besides noise: one animation's inputs, already prepared.

    zero_y (1, T, C); clip_ref (clip_dim,); clip_frames (F+1, clip_dim) reference first;
    keypoints (F+1, 2, 18) reference first; pose_images (F, 3, H, W) 0..1; local_image (3, H, W)
    0..1 or None; ref_latent (4, h, w) scaled VAE latent or None; ref_pose_image (3, H, W) or None.
    """
    zero_y: torch.Tensor
    clip_ref: torch.Tensor
    clip_frames: torch.Tensor
    keypoints: torch.Tensor
    pose_images: torch.Tensor
    local_image: torch.Tensor | None = None
    ref_latent: torch.Tensor | None = None
    ref_pose_image: torch.Tensor | None = None

    @property
    def frames(self) -> int:
        return int(self.pose_images.shape[0])

    def check(self, clip_dim: int, context_dim: int) -> None:
        f = self.frames
        if self.keypoints.shape != (f + 1, 2, 18):
            fail("motion", f"keypoints for the reference + {f} pose frames, shape ({f + 1}, 2, 18)",
                 f"{tuple(self.keypoints.shape)} (pose count != frame count?)")
        if self.clip_frames.shape[0] != f + 1:
            fail("motion", f"CLIP features of the reference + {f} driving frames",
                 f"{self.clip_frames.shape[0]} (pose count != frame count?)")
        if self.clip_frames.shape[-1] != clip_dim or self.clip_ref.shape[-1] != clip_dim:
            fail("clip_vision", f"a CLIP vision model with {clip_dim}-d image embeddings "
                 "(CLIP-ViT-H-14-laion2B-s32B-b79K for the released checkpoint)", f"{self.clip_frames.shape[-1]}-d")
        if self.zero_y.dim() != 3 or self.zero_y.shape[-1] != context_dim:
            fail("zero_y", f"text tokens (1, T, {context_dim}) from the model's text encoder", f"{tuple(self.zero_y.shape)}")

    def window(self, idx: list[int]) -> "Conditioning":
        sel = [0] + [i + 1 for i in idx]
        return Conditioning(self.zero_y, self.clip_ref, self.clip_frames[sel], self.keypoints[sel],
                            self.pose_images[idx], self.local_image, self.ref_latent, self.ref_pose_image)


# --- inputs --------------------------------------------------------------------------------------------

def _rgb(name: str, image: torch.Tensor) -> torch.Tensor:
    image = check_image(name, image)
    return image[..., :3].float()


def reference_rgb(reference: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """The reference as (1, H, W, 3); with Load Image's MASK (1 = transparent) it is composited on
    white (transparent pixels of a PNG come in black)."""
    ref = _rgb("reference", reference)[:1]
    if mask is not None:
        m = check_mask("reference_mask", mask)[:1].to(ref)
        if tuple(m.shape[1:]) != tuple(ref.shape[1:3]):
            fail("reference_mask", f"a mask of the reference's size {tuple(ref.shape[1:3])}", f"{tuple(m.shape[1:])}")
        ref = ref * (1 - m[..., None]) + m[..., None]
    return ref


def _resize(images: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """(N, H, W, 3) -> (N, 3, h, w), bilinear, aspect not kept (the release's behaviour)."""
    x = images.permute(0, 3, 1, 2)
    if tuple(x.shape[-2:]) != tuple(hw):
        x = F.interpolate(x, size=hw, mode="bilinear", align_corners=False, antialias=True)
    return x.clamp(0, 1)


def build_motion(encode_image: Callable[[torch.Tensor], torch.Tensor], reference: torch.Tensor,
                 poses: PoseSequence, *, driving_frames: torch.Tensor | None = None,
                 reference_pose: PoseSequence | None = None, reference_mask: torch.Tensor | None = None,
                 chunk: int = 16, check: Check | None = None, callback: StepCallback | None = None) -> Motion:
    """CLIP embeddings of the reference and the driving frames, and the keypoints, for the IPI.

    ``encode_image`` maps IMAGE (N, H, W, 3) to (N, D) pooled, projected CLIP embeddings, resized to
    the encoder's size without crop (spec §1.2). Without driving frames (poses only), the CLIP input
    of each frame is its rendered skeleton: an interpretation, the release uses the video frames.
    Keypoint frame 0 is the reference pose when given, else driving frame 0 (the release's choice).
    ``check()`` runs before every encoder call and every rendered skeleton (cancel); ``callback`` counts
    the encoded images.
    """
    ref = reference_rgb(reference, reference_mask)
    f = poses.frames
    if driving_frames is None:
        driving = render_poses(poses, poses.canvas[1], poses.canvas[0], check=check)
    else:
        driving = _rgb("driving_frames", driving_frames)
        if driving.shape[0] != f:
            fail("driving_frames", f"one frame per pose ({f})", f"{driving.shape[0]} frames (pose count != frame count)")

    done = [0]

    def encode(x):
        poll(check)
        out = encode_image(x).float().cpu()
        done[0] += x.shape[0]
        report(callback, done[0], f + 1)
        return out

    def enc(x):
        out = torch.cat([encode(x[i:i + chunk]) for i in range(0, x.shape[0], chunk)])
        if out.dim() != 2 or out.shape[0] != x.shape[0]:
            fail("clip_vision", "one pooled image embedding per image", f"{tuple(out.shape)}")
        return out

    clip_ref = enc(ref)[0]
    clip_frames = torch.cat([clip_ref[None], enc(driving)])
    kp = poses.normalized_body()
    first = reference_pose.normalized_body()[:1] if reference_pose is not None else kp[:1]
    return Motion(clip_ref, clip_frames, torch.cat([first, kp]))


def prepare(model: AnimateXModel, reference: torch.Tensor, pose_images: torch.Tensor, motion: Motion, *,
            width: int = 0, height: int = 0, reference_mode: str = "local_image",
            encode_latent: Callable[[torch.Tensor], torch.Tensor] | None = None,
            reference_pose_image: torch.Tensor | None = None,
            reference_mask: torch.Tensor | None = None) -> tuple[Conditioning, tuple[int, int]]:
    """Sampler inputs at width x height (0: the model's native 512 x 768). Returns the conditioning
    and the latent size. ``encode_latent`` (latent/both modes) maps IMAGE (1, H, W, 3) to the VAE's
    raw latent (1, 4, h, w); it is scaled by the model's VAE factor here."""
    cfg = model.cfg
    width, height = width or cfg.width, height or cfg.height
    mult = 8 * 2 ** (len(cfg.dim_mult) - 1)
    for name, v in (("width", width), ("height", height)):
        if v % mult or v < mult:
            fail(name, f"a multiple of {mult} (the UNet halves the latent {len(cfg.dim_mult) - 1} times)", str(v))
    if reference_mode not in REFERENCE_MODES:
        fail("reference_mode", f"one of {REFERENCE_MODES}", repr(reference_mode))
    hw = (height, width)
    poses = _rgb("pose_images", pose_images)
    if poses.shape[0] != motion.frames:
        fail("pose_images", f"one image per pose of the motion ({motion.frames})",
             f"{poses.shape[0]} images (pose count != frame count)")
    ref = reference_rgb(reference, reference_mask)
    local = ref_latent = ref_pose = None
    if reference_mode in ("local_image", "both"):
        local = _resize(ref, hw)[0]
    if reference_mode in ("latent", "both"):
        if encode_latent is None:
            fail("vae", f"a VAE for reference_mode={reference_mode!r} (it encodes the reference)", "none")
        z = encode_latent(_resize(ref, hw).permute(0, 2, 3, 1))
        if z.dim() != 4 or tuple(z.shape[-2:]) != (height // 8, width // 8) or z.shape[1] != cfg.in_dim:
            fail("vae", f"a {cfg.in_dim}-channel latent of size {height // 8}x{width // 8} (an SD 1/2 VAE)", f"{tuple(z.shape)}")
        ref_latent = z[0].float() * cfg.vae_scale
        ref_pose = _resize(_rgb("reference_pose_image", reference_pose_image), hw)[0] if reference_pose_image is not None \
            else _resize(poses[:1], hw)[0]
    cond = Conditioning(zero_y=model.zero_y, clip_ref=motion.clip_ref, clip_frames=motion.clip_frames,
                        keypoints=motion.keypoints, pose_images=_resize(poses, hw), local_image=local,
                        ref_latent=ref_latent, ref_pose_image=ref_pose)
    return cond, (height // 8, width // 8)


# --- sampling ------------------------------------------------------------------------------------------

def branch_conditions(model: AnimateXUNet, c: Conditioning, latent_hw: tuple[int, int]) -> dict:
    """Unconditional and conditional conditioning stacked as a batch of 2 (unconditional first, as
    :func:`cfg_batch` reads it)."""
    f = c.frames
    cond = model.conditions(
        batch=1, frames=f, latent_hw=latent_hw, zero_y=c.zero_y, clip_ref=c.clip_ref[None],
        local_image=None if c.local_image is None else c.local_image[None],
        pose_images=c.pose_images.permute(1, 0, 2, 3)[None], keypoints=c.keypoints[None],
        clip_frames=c.clip_frames[None],
        ref_latent=None if c.ref_latent is None else c.ref_latent[None],
        ref_pose_image=None if c.ref_pose_image is None else c.ref_pose_image[None])
    # the release's unconditional branch: image, local_image, dwpose, pose_embeddings (and randomref) None
    uncond = model.conditions(batch=1, frames=f, latent_hw=latent_hw, zero_y=c.zero_y)
    return {k: torch.cat([uncond[k], cond[k]]) for k in cond}


def split_branches(both: dict, frames: int) -> tuple[dict, dict]:
    """The batch of 2 from :func:`branch_conditions` as ``(uncond, cond)`` batches of 1 (motion is
    (2*(F+1), ...))."""
    n = {k: (frames + 1 if k == "motion" else 1) for k in both}
    return ({k: v[:n[k]] for k, v in both.items()}, {k: v[n[k]:] for k, v in both.items()})


def released_scheduler(steps: int) -> DDIM:
    """The release's DDIM (spec §1.5): float64 ᾱ table, timesteps 1 + k * (1000 // steps) descending,
    v-prediction, the level below t = 0 being ᾱ_0 (the previous index clamped at 0)."""
    ac = alphas_cumprod()
    return DDIM(ac, torch.tensor(released_timesteps(steps, NUM_TIMESTEPS)), NUM_TIMESTEPS // int(steps), ac[0],
                "v_prediction")


@torch.no_grad()
def sample(model: AnimateXUNet, c: Conditioning, *, latent_hw: tuple[int, int], seed: int = SAMPLING.seed,
           steps: int = SAMPLING.steps, guidance: float = SAMPLING.guidance, eta: float = SAMPLING.eta,
           noise_offset: float = SAMPLING.noise_offset, context_frames: int = SAMPLING.context_frames,
           context_overlap: int = SAMPLING.context_overlap, cache_conditions: bool = True,
           batch_cfg: bool = SAMPLING.batch_cfg, callback: StepCallback | None = None,
           check: Check | None = None) -> torch.Tensor:
    """Sample one animation: returns latents (F, 4, h, w) in the UNet's (scaled) space.

    ``cache_conditions=False`` recomputes the conditioning at every step (what a straightforward
    port does; the benchmark's baseline): the result is the same. ``batch_cfg=False`` runs the two
    guidance branches one after the other (half the activation memory, same result).
    """
    # 1. Check inputs
    cfg = model.cfg
    c.check(cfg.clip_dim, cfg.context_dim)
    f = c.frames
    # 2. Timesteps, and the starting noise with its offset noise (spec §1.5); eta's noise from seed + 1
    scheduler = released_scheduler(steps)
    x = initial_noise((cfg.in_dim, f, *latent_hw), seed, offset=noise_offset, device=model.device,
                      dtype=torch.float32)
    generator = seed_generator(seed, 1)
    # 3. Conditioning of every context window, once (it does not depend on t, finding 8)
    windows = context_windows(f, context_frames, context_overlap)

    def conditions(k: int) -> dict:
        return branch_conditions(model, c.window(windows[k]), latent_hw)

    cached = [conditions(k) for k in range(len(windows))] if cache_conditions else None

    # 4. The guided v-prediction of one window, averaged over windows
    def predict(x_w: torch.Tensor, t, k: int) -> torch.Tensor:
        both = cached[k] if cached is not None else conditions(k)
        tt = torch.full((2,), int(t), device=x_w.device, dtype=torch.long)
        if batch_cfg:
            return cfg_batch(lambda x2, _: model(x2, tt, both).float(), x_w, t, guidance)
        uncond, cond = split_branches(both, x_w.shape[2])
        return guide(model(x_w, tt[:1], uncond).float(), model(x_w, tt[:1], cond).float(), guidance)

    # 5. Denoising loop
    x = ddim_loop(over_windows(predict, windows), x, scheduler, eta=eta, generator=generator,
                  callback=callback, check=check)
    return x[0].permute(1, 0, 2, 3).contiguous()


def animate(model: AnimateXModel, cond: Conditioning, latent_hw: tuple[int, int], **kw) -> torch.Tensor:
    """Latents (F, 4, h, w) in the VAE's raw space (divided by its scale), for a VAE decoder."""
    return sample(model.unet, cond, latent_hw=latent_hw, **kw) / model.cfg.vae_scale
