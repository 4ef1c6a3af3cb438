"""Animate-X end to end, minus ComfyUI: model bundle, input preparation, motion (IPI inputs), sampling.

Used by nodes/animatex.py, the tests and the benchmark. The CLIP image encoder and the VAE are
passed in as callables, so ComfyUI's CLIP_VISION / VAE objects, stand-ins in tests, or anything
else with the same behaviour can serve.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from ..errors import check_image, check_mask, fail
from ..pose import PoseSequence, render_poses
from .configs import AnimateXConfig
from .sampler import Conditioning, sample
from .unet import AnimateXUNet

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
                 chunk: int = 16) -> Motion:
    """CLIP embeddings of the reference and the driving frames, and the keypoints, for the IPI.

    ``encode_image`` maps IMAGE (N, H, W, 3) to (N, D) pooled, projected CLIP embeddings, resized to
    the encoder's size without crop (spec §1.2). Without driving frames (poses only), the CLIP input
    of each frame is its rendered skeleton: an interpretation, the release uses the video frames.
    Keypoint frame 0 is the reference pose when given, else driving frame 0 (the release's choice).
    """
    ref = reference_rgb(reference, reference_mask)
    f = poses.frames
    if driving_frames is None:
        driving = render_poses(poses, poses.canvas[1], poses.canvas[0])
    else:
        driving = _rgb("driving_frames", driving_frames)
        if driving.shape[0] != f:
            fail("driving_frames", f"one frame per pose ({f})", f"{driving.shape[0]} frames (pose count != frame count)")

    def enc(x):
        out = torch.cat([encode_image(x[i:i + chunk]).float().cpu() for i in range(0, x.shape[0], chunk)])
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


def animate(model: AnimateXModel, cond: Conditioning, latent_hw: tuple[int, int], **kw) -> torch.Tensor:
    """Latents (F, 4, h, w) in the VAE's raw space (divided by its scale), for a VAE decoder."""
    return sample(model.unet, cond, latent_hw=latent_hw, **kw) / model.cfg.vae_scale
