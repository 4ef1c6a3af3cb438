"""The one sampling loop, and what every method plugs into it.

**Denoiser convention.** A denoiser is a callable ``denoiser(x, t) -> prediction``: x the noisy latents
(any layout: video (B, C, F, h, w) for the text-to-video UNet and Animate-X, images (B, C, h, w) for a
2-D UNet), t one timestep of the scheduler (a 0-dim int64 tensor), the prediction of the same shape in
the scheduler's ``prediction_type`` (eps or v). Everything a model needs besides x and t (prompt
embeddings, guidance, ControlNet residuals, Animate-X's cached conditioning, FlipSketch's composed
attention) is bound inside it, so one loop serves

* :func:`ddim_invert` / :func:`ddim_sample` (a T2V UNet with a prompt, :func:`t2v_denoiser`);
* FlipSketch: a guided generation denoiser plus ``before_step`` (the reference pass, frame alignment)
  and ``after_step`` (dropping the saved attention) hooks;
* Animate-X: a guided v-prediction averaged over context windows (:func:`over_windows`);
* PoseAnimate: a UNet2D + ControlNet denoiser (:func:`controlnet_predict`), all frames and both
  CFG branches in one call per step (pipelines/poseanimate/pipeline.py);
* FlexiClip's video SDS: no loop, one noised evaluation (:func:`sds_gradient`).

Classifier-free guidance is :func:`guide`; :func:`cfg_batch` evaluates both branches in one batched call.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from ..errors import fail
from ..progress import Check, StepCallback, poll, report
from .scheduler import DDIM, make_scheduler

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# before_step(i, t, x) -> x (may replace the latents, e.g. frame alignment); after_step(i, t, x) -> None
BeforeStep = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]
AfterStep = Callable[[int, torch.Tensor, torch.Tensor], None]


def ddim_loop(denoiser: Denoiser, x: torch.Tensor, scheduler: DDIM, *, before_step: BeforeStep | None = None,
              after_step: AfterStep | None = None, eta: float = 0.0, generator: torch.Generator | None = None,
              callback: StepCallback | None = None, check: Check | None = None) -> torch.Tensor:
    """Walk ``x`` through ``scheduler.timesteps``: at step i, ``before_step``, then one denoiser call and
    one :meth:`DDIM.step`, then ``after_step``, then ``callback(i + 1, steps)``. ``check()`` runs before
    every denoiser call (cancel); a denoiser that calls its model several times checks between them.
    Runs without autograd (a hook that optimises enables it itself).

    >>> sched = make_scheduler(dict(num_train_timesteps=1000, clip_sample=False), 4)
    >>> x0 = torch.zeros(1, 4, 2, 8, 8)
    >>> noise = torch.ones_like(x0)                       # a denoiser that knows the noise: exact recovery
    >>> xt = sched.add_noise(x0, noise, sched.timesteps[0])
    >>> torch.allclose(ddim_loop(lambda x, t: noise, xt, sched), x0, atol=1e-5)
    True
    """
    n = len(scheduler.timesteps)
    with torch.no_grad():
        for i, t in enumerate(scheduler.timesteps):
            if before_step is not None:
                x = before_step(i, t, x)
            poll(check)
            x = scheduler.step(denoiser(x, t), t, x, eta=eta, generator=generator)
            if after_step is not None:
                after_step(i, t, x)
            report(callback, i + 1, n)
    return x


def ddim_invert(denoiser: Denoiser, z0: torch.Tensor, scheduler_config: dict, steps: int,
                callback: StepCallback | None = None, check: Check | None = None) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Deterministic DDIM inversion Z_0 -> Z_T (spec flipsketch-poseanimate.md §1.2, §2.2 stage 0).

    Returns ``(trajectory, timesteps)``: ``trajectory[k]`` is Z_k, k = 0..steps (Z_0 = ``z0``), and
    ``timesteps[k-1]`` the noise level of Z_k (ascending, e.g. 1, 41, ..., 961 for 25 steps).
    Sampling from Z_T with :func:`ddim_sample` and the same settings walks the same levels back.
    """
    sched = make_scheduler(scheduler_config, steps, inverse=True, device=z0.device)
    traj = [z0]
    ddim_loop(denoiser, z0, sched, after_step=lambda i, t, x: traj.append(x), callback=callback, check=check)
    return traj, sched.timesteps.clone()


def ddim_sample(denoiser: Denoiser, zT: torch.Tensor, scheduler_config: dict, steps: int,
                callback: StepCallback | None = None, check: Check | None = None) -> torch.Tensor:
    """Plain deterministic DDIM sampling Z_T -> Z_0 (the inverse of :func:`ddim_invert`)."""
    return ddim_loop(denoiser, zT, make_scheduler(scheduler_config, steps, device=zT.device),
                     callback=callback, check=check)


# --- guidance, starting noise --------------------------------------------------------------------

def guide(uncond: torch.Tensor, cond: torch.Tensor, guidance: float) -> torch.Tensor:
    """Classifier-free guidance: p_u + g (p_c - p_u), for eps or v alike.

    >>> guide(torch.tensor([1.0]), torch.tensor([3.0]), 2.5)
    tensor([6.])
    """
    return uncond + guidance * (cond - uncond)


def cfg_batch(predict: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor, t,
              guidance: float) -> torch.Tensor:
    """Both guidance branches in one batched call: ``predict(x2, t)`` evaluates the model on
    x2 = [x; x] (2B, ...), its first half unconditional, its second conditional; returns the guided
    prediction (B, ...)."""
    p_u, p_c = predict(torch.cat([x, x]), t).chunk(2)
    return guide(p_u, p_c, guidance)


def initial_noise(shape: Sequence[int], seed: int, *, count: int = 1, offset: float = 0.0, device=None,
                  dtype: torch.dtype | None = None) -> torch.Tensor:
    """Starting latents (count, *shape): sample k is drawn from a CPU generator seeded
    ``(seed + k) mod 2**64`` (so results do not depend on the device, and seed widgets may go to 2**64 - 1;
    FlipSketch's sample k uses seed + k, spec §1.1), plus ``offset`` x a second draw that is constant
    over the two spatial dims (offset noise: Animate-X adds 0.1 x randn(1, 4, F, 1, 1), spec animatex.md §1.5).

    >>> initial_noise((4, 3, 8, 8), 2**64 - 1, count=2).shape
    torch.Size([2, 4, 3, 8, 8])
    >>> torch.equal(initial_noise((4, 3, 8, 8), 0, count=2)[1], initial_noise((4, 3, 8, 8), 1)[0])
    True
    """
    out = []
    for k in range(int(count)):
        g = torch.Generator().manual_seed((int(seed) + k) % 2 ** 64)
        x = torch.randn(*shape, generator=g)
        if offset:
            x = x + offset * torch.randn(*shape[:-2], 1, 1, generator=g)
        out.append(x)
    return torch.stack(out).to(device, dtype)


# --- denoisers ---------------------------------------------------------------------------------------

def t2v_denoiser(unet, cond: torch.Tensor, uncond: torch.Tensor | None = None, guidance: float = 1.0) -> Denoiser:
    """A text-conditioned UNet (diffusers' ``unet(x, t, encoder_hidden_states=e).sample``) with prompt
    embeddings (1 or B, 77, D). With ``uncond``: classifier-free guidance, both branches batched by
    :func:`cfg_batch`; without: the ``cond`` branch alone."""
    def embeds(e: torch.Tensor, b: int) -> torch.Tensor:
        return e.expand(b, -1, -1) if e.shape[0] == 1 else e

    if uncond is None:
        return lambda x, t: unet(x, t, encoder_hidden_states=embeds(cond, x.shape[0])).sample

    def guided(x: torch.Tensor, t) -> torch.Tensor:
        b = x.shape[0]
        e = torch.cat([embeds(uncond, b), embeds(cond, b)])
        return cfg_batch(lambda x2, t_: unet(x2, t_, encoder_hidden_states=e).sample, x, t, guidance)
    return guided


def controlnet_predict(unet, controlnet, x: torch.Tensor, t, embeds: torch.Tensor, cond: torch.Tensor,
                       scale: float = 1.0) -> torch.Tensor:
    """A UNet2D guided by a ControlNet (as diffusers' StableDiffusionControlNetPipeline calls them):
    ``controlnet(x, t, e, controlnet_cond=cond)`` gives residuals added to the UNet's skip connections.
    x (B, C, h, w), embeds (B, 77, D), cond (B, 3, H, W) in 0..1 (e.g. OpenPose images); the
    prediction has x's shape. Both branches of a CFG batch get the ControlNet (PoseAnimate, spec §2.2)."""
    down, mid = controlnet(x, t, encoder_hidden_states=embeds, controlnet_cond=cond, conditioning_scale=float(scale),
                           return_dict=False)
    return unet(x, t, encoder_hidden_states=embeds, down_block_additional_residuals=down,
                mid_block_additional_residual=mid).sample


def context_windows(frames: int, size: int, overlap: int) -> list[list[int]]:
    """Frame windows of ``size`` stepping by size - overlap; the last one ends on the last frame.
    size <= 0 or size >= frames: one window with every frame (spec animatex.md §1.6).

    >>> context_windows(10, 4, 2)
    [[0, 1, 2, 3], [2, 3, 4, 5], [4, 5, 6, 7], [6, 7, 8, 9]]
    """
    if size <= 0 or size >= frames:
        return [list(range(frames))]
    if not 0 <= overlap < size:
        fail("context_overlap", f"between 0 and context_frames - 1 ({size - 1})", str(overlap))
    starts = list(range(0, frames - size + 1, size - overlap))
    if starts[-1] + size < frames:
        starts.append(frames - size)
    return [list(range(s, s + size)) for s in starts]


def over_windows(predict: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor],
                 windows: list[list[int]]) -> Denoiser:
    """A video denoiser from a per-window one: ``predict(x[:, :, window], t, k)`` for window k, averaged
    where windows overlap (AnimateDiff-style context windows over the frame axis, dim 2)."""
    def denoiser(x: torch.Tensor, t) -> torch.Tensor:
        out = torch.zeros_like(x)
        weight = torch.zeros(1, 1, x.shape[2], *(1,) * (x.dim() - 3), device=x.device)
        for k, w in enumerate(windows):
            out[:, :, w] += predict(x[:, :, w], t, k)
            weight[:, :, w] += 1
        return out / weight
    return denoiser


# --- score distillation ------------------------------------------------------------------------------

def sds_gradient(denoiser: Denoiser, z: torch.Tensor, t, noise: torch.Tensor, scheduler: DDIM,
                 weight: float | torch.Tensor | None = None) -> torch.Tensor:
    """Score-distillation gradient (Poole et al. 2022; FlexiClip/AniClipart video SDS, spec flexiclip.md
    §1.7): noise ``z`` to level t, z_t = √ᾱ_t z + √(1 - ᾱ_t) noise, predict, and return
    g = w(t) (eps_hat(z_t, t) - noise), w(t) = 1 - ᾱ_t unless ``weight`` is given. ``denoiser`` is the
    guided prediction (eps or v: it is turned into eps); g has z's shape and no graph, and the loss
    0.5 ||z - (z - g).detach()||² has gradient g with respect to z.
    """
    with torch.no_grad():
        z_t = scheduler.add_noise(z.detach(), noise, t)
        _, eps_hat = scheduler.split(denoiser(z_t, t), t, z_t)
        w = 1 - scheduler.alphas_cumprod[int(t)] if weight is None else weight
        return w * (eps_hat - noise)
