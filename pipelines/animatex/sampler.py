"""Animate-X sampling as released (spec §1.5): v-prediction, zero-terminal-SNR ``linear_sd``
schedule, DDIM over ``1 + arange(0, 1000, 1000 // steps)`` (31 UNet steps for "30"), classifier-free
guidance 2.5 with everything zeroed in the unconditional branch, offset noise 0.1.

Additions (interpretations, spec §1.6, §3.1): both guidance branches run as one batch; all
conditioning is computed once before the loop (finding 8); sequences longer than a window are
sampled in overlapping context windows whose v-predictions are averaged.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import fail
from ..progress import StepCallback, report
from .unet import AnimateXUNet

NUM_TIMESTEPS = 1000


def alphas_cumprod(num: int = NUM_TIMESTEPS, beta_start: float = 0.00085, beta_end: float = 0.012,
                   zero_terminal_snr: bool = True) -> torch.Tensor:
    """ᾱ_t (float64) of ``linear_sd`` (linear in √β), rescaled to zero terminal SNR (Lin et al. 2024:
    shift √ᾱ so the last is 0, scale so the first is unchanged)."""
    betas = torch.linspace(beta_start ** 0.5, beta_end ** 0.5, num, dtype=torch.float64) ** 2
    ac = torch.cumprod(1 - betas, 0)
    if zero_terminal_snr:
        s = ac.sqrt()
        s0, s_t = s[0].clone(), s[-1].clone()
        s = (s - s_t) * s0 / (s0 - s_t)
        ac = s ** 2
    return ac


def ddim_timesteps(steps: int, num: int = NUM_TIMESTEPS) -> list[int]:
    """The release's list: 1 + arange(0, num, num // steps), clamped, descending (991 ... 1 for 30)."""
    if steps < 1 or steps > num:
        fail("steps", f"between 1 and {num}", str(steps))
    stride = num // steps
    return [min(max(t, 0), num - 1) for t in range(1, num + 1, stride)][::-1]


def ddim_step(x: torch.Tensor, v: torch.Tensor, t: int, stride: int, ac: torch.Tensor, *, eta: float = 0.0,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """One DDIM step from a v-prediction; the previous index t - stride is clamped at 0 as released."""
    a = float(ac[t])
    ap = float(ac[max(t - stride, 0)])
    x0 = math.sqrt(a) * x - math.sqrt(1 - a) * v
    eps = (x - math.sqrt(a) * x0) / math.sqrt(1 - a)
    sigma = eta * math.sqrt((1 - ap) / (1 - a) * (1 - a / ap)) if eta > 0 else 0.0
    out = math.sqrt(ap) * x0 + math.sqrt(max(1 - ap - sigma ** 2, 0.0)) * eps
    if sigma > 0:
        out = out + sigma * torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
    return out


def context_windows(frames: int, size: int, overlap: int) -> list[list[int]]:
    """Windows of ``size`` frames stepping by size - overlap; the last one ends on the last frame.
    size <= 0 or size >= frames: one window with every frame."""
    if size <= 0 or size >= frames:
        return [list(range(frames))]
    if not 0 <= overlap < size:
        fail("context_overlap", f"between 0 and context_frames - 1 ({size - 1})", str(overlap))
    starts = list(range(0, frames - size + 1, size - overlap))
    if starts[-1] + size < frames:
        starts.append(frames - size)
    return [list(range(s, s + size)) for s in starts]


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


def branch_conditions(model: AnimateXUNet, c: Conditioning, latent_hw: tuple[int, int]) -> dict:
    """Conditional and unconditional conditioning stacked as a batch of 2 (cond first)."""
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
    return {k: torch.cat([cond[k], uncond[k]]) for k in cond}


def _split_branches(cond: dict, frames: int) -> tuple[dict, dict]:
    """The batch of 2 from :func:`branch_conditions` as two batches of 1 (motion is (2*(F+1), ...))."""
    n = {k: (frames + 1 if k == "motion" else 1) for k in cond}
    return ({k: v[:n[k]] for k, v in cond.items()}, {k: v[n[k]:] for k, v in cond.items()})


def initial_noise(frames: int, latent_hw: tuple[int, int], seed: int, noise_offset: float) -> torch.Tensor:
    """randn(1, 4, F, h, w) + offset * randn(1, 4, F, 1, 1) from one CPU generator (device-independent)."""
    g = torch.Generator().manual_seed(int(seed))
    x = torch.randn(1, 4, frames, *latent_hw, generator=g)
    return x + noise_offset * torch.randn(1, 4, frames, 1, 1, generator=g)


@torch.no_grad()
def sample(model: AnimateXUNet, c: Conditioning, *, latent_hw: tuple[int, int], seed: int = 13, steps: int = 30,
           guidance: float = 2.5, eta: float = 0.0, noise_offset: float = 0.1, context_frames: int = 0,
           context_overlap: int = 8, cache_conditions: bool = True, batch_cfg: bool = True,
           callback: StepCallback | None = None, noise: torch.Tensor | None = None) -> torch.Tensor:
    """Sample one animation: returns latents (F, 4, h, w) in the UNet's (scaled) space.

    ``cache_conditions=False`` recomputes the conditioning at every step (what a straightforward
    port does; the benchmark's baseline): the result is the same. ``batch_cfg=False`` runs the two
    guidance branches one after the other (half the activation memory, same result).
    """
    cfg = model.cfg
    c.check(cfg.clip_dim, cfg.context_dim)
    f = c.frames
    ac = alphas_cumprod()
    ts = ddim_timesteps(steps)
    stride = NUM_TIMESTEPS // steps
    windows = context_windows(f, context_frames, context_overlap)
    x = initial_noise(f, latent_hw, seed, noise_offset) if noise is None else noise.clone()
    x = x.to(model.device, torch.float32)
    gen = torch.Generator().manual_seed((int(seed) + 1) % 2 ** 64)

    def conds():
        return [branch_conditions(model, c.window(w), latent_hw) for w in windows]

    cached = conds() if cache_conditions else None
    weight = torch.zeros(1, 1, f, 1, 1, device=x.device)
    for w in windows:
        weight[:, :, w] += 1
    for i, t in enumerate(ts):
        per_window = cached if cached is not None else conds()
        v = torch.zeros_like(x)
        tt = torch.full((2,), t, device=x.device, dtype=torch.long)
        for w, cond in zip(windows, per_window):
            if batch_cfg:
                vc, vu = model(x[:, :, w].repeat(2, 1, 1, 1, 1), tt, cond).float().chunk(2)
            else:
                vc, vu = (model(x[:, :, w], tt[:1], branch).float() for branch in _split_branches(cond, len(w)))
            v[:, :, w] += vu + guidance * (vc - vu)
        v = v / weight
        x = ddim_step(x, v, t, stride, ac, eta=eta, generator=gen)
        report(callback, i + 1, len(ts))
    return x[0].permute(1, 0, 2, 3).contiguous()
