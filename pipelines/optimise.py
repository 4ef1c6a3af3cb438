"""One optimiser loop for every "optimise X so that a denoiser prediction matches a target" step:
FlipSketch's frame alignment (X = noise of frames 2..M), PoseAnimate's pose-aware embeddings
(X = text embedding), ... (spec §3, "Shared internals")."""
from __future__ import annotations

from typing import Callable

import torch

from .progress import Check, poll


def adam_minimise(x0: torch.Tensor, loss_fn: Callable[[torch.Tensor], torch.Tensor], *, iters: int, lr: float,
                  lr_at: Callable[[int], float] | None = None, stop_below: Callable[[int], float] | None = None,
                  before_last: bool = False, check: Check | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Adam on a copy of ``x0`` for ``iters`` iterations; works inside ComfyUI's inference_mode.

    ``loss_fn(x)`` returns one loss per independent item (or a scalar); their sum is minimised, so
    items never mix and splitting a batch into chunks gives the same result. ``lr_at(k)`` overrides the
    learning rate at iteration k; the loop stops once every loss is below ``stop_below(k)``.
    ``before_last`` returns x as it was before the last update (FlipSketch's official off-by-one).
    ``check()`` runs before every iteration (nodes pass ComfyUI's cancel check; it raises to stop).
    Returns ``(x, losses)`` with one detached loss tensor per iteration.
    """
    losses: list[torch.Tensor] = []
    with torch.inference_mode(False), torch.enable_grad():
        x = x0.detach().clone().requires_grad_(True)
        prev = x.detach()
        opt = torch.optim.Adam([x], lr=float(lr))
        for k in range(int(iters)):
            poll(check)
            if lr_at is not None:
                for group in opt.param_groups:
                    group["lr"] = float(lr_at(k))
            loss = loss_fn(x)
            if before_last:
                prev = x.detach().clone()
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()
            opt.step()
            losses.append(loss.detach())
            if stop_below is not None and bool((loss.detach() < stop_below(k)).all()):
                break
    return (prev if before_last else x.detach()), losses
