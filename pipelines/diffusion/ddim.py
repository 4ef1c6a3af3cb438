"""DDIM arithmetic: one scheduler factory, one guidance rule, one step, and the inversion loop that
keeps the whole trajectory Z_0 ... Z_T (spec §1.2, §2.2 stage 0; diffusers' DDIM(Inverse)Scheduler).

Denoisers are plain callables ``eps_fn(x, t) -> eps`` so the same loops serve the text-to-video
UNet3D (FlipSketch), a UNet2D + ControlNet (PoseAnimate) and score distillation (FlexiClip).
"""
from __future__ import annotations

import inspect
from typing import Callable

import torch

from ..progress import Check, StepCallback, poll, report

EpsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def make_scheduler(config: dict, steps: int, *, inverse: bool = False, device=None):
    """A fresh DDIMScheduler (or DDIMInverseScheduler) from a backbone's scheduler config."""
    from diffusers import DDIMInverseScheduler, DDIMScheduler

    cls = DDIMInverseScheduler if inverse else DDIMScheduler
    accepted = inspect.signature(cls.__init__).parameters   # both read one scheduler_config.json
    sched = cls.from_config({k: v for k, v in config.items() if k in accepted})
    sched.set_timesteps(int(steps), device=device)
    return sched


def guide(eps_uncond: torch.Tensor, eps_cond: torch.Tensor, guidance: float) -> torch.Tensor:
    """Classifier-free guidance: eps_u + g (eps_c - eps_u)."""
    return eps_uncond + guidance * (eps_cond - eps_uncond)


def ddim_step(scheduler, eps: torch.Tensor, t, x: torch.Tensor) -> torch.Tensor:
    """One deterministic (eta = 0) DDIM step, forward or inverse depending on the scheduler."""
    return scheduler.step(eps, t, x).prev_sample


def t2v_eps(unet, embeds: torch.Tensor) -> EpsFn:
    """A UNet3D denoiser with fixed text embeddings (broadcast over the latent batch)."""
    def eps_fn(x: torch.Tensor, t) -> torch.Tensor:
        e = embeds.expand(x.shape[0], -1, -1) if embeds.shape[0] == 1 else embeds
        return unet(x, t, encoder_hidden_states=e).sample
    return eps_fn


def cfg_eps(unet, cond: torch.Tensor, uncond: torch.Tensor | None, guidance: float) -> EpsFn:
    """A guided UNet3D denoiser: one batched call over [uncond; cond]; the cond branch alone at g = 1."""
    if uncond is None or guidance == 1.0:
        return t2v_eps(unet, cond)
    both = torch.cat([uncond, cond])

    def eps_fn(x: torch.Tensor, t) -> torch.Tensor:
        b = x.shape[0]
        e = torch.cat([both[:1].expand(b, -1, -1), both[1:].expand(b, -1, -1)])
        eu, ec = unet(torch.cat([x, x]), t, encoder_hidden_states=e).sample.chunk(2)
        return guide(eu, ec, guidance)
    return eps_fn


def ddim_invert(eps_fn: EpsFn, z0: torch.Tensor, scheduler_config: dict, steps: int,
                callback: StepCallback | None = None, check: Check | None = None) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Deterministic DDIM inversion Z_0 -> Z_T.

    Returns ``(trajectory, timesteps)``: ``trajectory[k]`` is Z_k, k = 0..steps (Z_0 = ``z0``), and
    ``timesteps[k-1]`` the noise level of Z_k (ascending, e.g. 1, 41, ..., 961 for 25 steps).
    Sampling from Z_T with :func:`ddim_sample` and the same settings walks the same levels back.
    ``check()`` runs before every denoiser call (cancel).
    """
    sched = make_scheduler(scheduler_config, steps, inverse=True, device=z0.device)
    traj = [z0]
    x = z0
    with torch.no_grad():
        for k, t in enumerate(sched.timesteps):
            poll(check)
            x = ddim_step(sched, eps_fn(x, t), t, x)
            traj.append(x)
            report(callback, k + 1, len(sched.timesteps))
    return traj, sched.timesteps.clone()


def ddim_sample(eps_fn: EpsFn, zT: torch.Tensor, scheduler_config: dict, steps: int,
                callback: StepCallback | None = None, check: Check | None = None) -> torch.Tensor:
    """Plain deterministic DDIM sampling Z_T -> Z_0 (the inverse of :func:`ddim_invert`)."""
    sched = make_scheduler(scheduler_config, steps, device=zT.device)
    x = zT
    with torch.no_grad():
        for k, t in enumerate(sched.timesteps):
            poll(check)
            x = ddim_step(sched, eps_fn(x, t), t, x)
            report(callback, k + 1, len(sched.timesteps))
    return x
