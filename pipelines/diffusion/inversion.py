"""Image or video -> DDIM-inverted noise, keeping the whole latent trajectory (spec §1.2, §3 node 5)."""
from __future__ import annotations

import torch

from ..errors import check_image, check_range, fail
from ..progress import Check, StepCallback
from .sampler import ddim_invert, t2v_denoiser
from .text import null_embeds
from .vae import encode_frames, resize_frames
from ..seeds import generator as seed_generator

REDUCTIONS = ("none", "mean_frames")


def invert_frames(backbone, image: torch.Tensor, embeds: torch.Tensor | None = None, *, steps: int = 25,
                  guidance: float = 1.0, negative: torch.Tensor | None = None, repeat_frames: int = 1,
                  reduce: str = "none", vae_range: str = "-1_1", posterior: str = "mean", size: int = 0,
                  seed: int = 0, callback: StepCallback | None = None,
                  check: Check | None = None) -> tuple[torch.Tensor, dict]:
    """DDIM-invert IMAGE frames [F,H,W,3] with a text-to-video backbone.

    Each frame is repeated ``repeat_frames`` times (FlipSketch: one sketch -> a 5-frame clip), resized
    to ``size`` (0 keeps it), VAE-encoded, then inverted for ``steps`` DDIM steps with the prompt
    ``embeds`` (default: the empty prompt). ``guidance`` != 1 mixes in ``negative`` (default: the empty
    prompt) by classifier-free guidance; at 1 only one branch runs (FlipSketch's two branches are
    both the empty prompt, so this is the same result at half the cost, spec §1.2).
    ``reduce="mean_frames"`` averages the frames of every Z_k (FlipSketch's x_T^r). Attention patches
    the backbone carries are installed and stay passive (their sampler is not running).

    Returns ``(x_T, trajectory)`` with x_T of shape (1, C, F', h, w) and trajectory
    ``{"latents": [Z_0..Z_T], "timesteps": (T,), "scheduler_config": dict, "steps": T}``.
    """
    image = check_image("image", image)[..., :3]
    if int(repeat_frames) < 1:
        fail("repeat_frames", "an integer >= 1", repr(repeat_frames))
    if reduce not in REDUCTIONS:
        fail("reduce", f"one of {REDUCTIONS}", repr(reduce))
    if int(steps) < 1:
        fail("steps", "an integer >= 1", repr(steps))
    check_range("guidance", float(guidance), 0.0, 100.0)
    if size:
        image = resize_frames(image, int(size))
    image = image.repeat_interleave(int(repeat_frames), dim=0)
    gen = seed_generator(seed)
    z0 = encode_frames(backbone, image, vae_range=vae_range, posterior=posterior, generator=gen).to(backbone.device)
    cond = null_embeds(backbone) if embeds is None else embeds.to(backbone.device, backbone.dtype)
    uncond = None
    if float(guidance) != 1.0:
        uncond = null_embeds(backbone) if negative is None else negative.to(backbone.device, backbone.dtype)
    with backbone.installed():       # what the model carries, passed through (no sampler drives it here)
        traj, timesteps = ddim_invert(t2v_denoiser(backbone.unet, cond, uncond, float(guidance)), z0,
                                      backbone.scheduler_config, int(steps), callback, check)
    if reduce == "mean_frames":
        traj = [z.mean(dim=2, keepdim=True) for z in traj]
    return traj[-1], {"latents": traj, "timesteps": timesteps, "scheduler_config": dict(backbone.scheduler_config),
                      "steps": int(steps)}
