"""One optimiser loop for every "optimise X so that a prediction matches a target" step: FlipSketch's
frame alignment (X = noise of frames 2..M), PoseAnimate's pose-aware embeddings (X = text embedding),
CPAB's keypoint fits (X = θ), ... (spec §3, "Shared internals").

Two ways to give the gradient, one Adam (``torch.optim.Adam``, the arithmetic of the official codes):

- ``loss_fn(x)``: autograd differentiates it (the loop leaves ComfyUI's inference mode for that);
- ``grad_fn(x) -> (loss, grad)``: the autograd-free step, for a caller that has the exact gradient
  in closed form (CPAB's hand-written sensitivities, :func:`.cpab.transform.transform_jacobian`):
  no graph is built, so it is as fast as the gradient itself.

CPAB's Levenberg-Marquardt fit stays in :mod:`.cpab.fit`: it needs the full residual Jacobian, which
only CPAB has, and it is no gradient step.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from .progress import Check, StepCallback, poll, report


def adam_minimise(x0: torch.Tensor | Sequence[torch.Tensor], loss_fn: Callable | None = None, *, iters: int,
                  lr: float, grad_fn: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
                  lr_at: Callable[[int], float] | None = None, stop_below: Callable[[int], float] | None = None,
                  before_last: bool = False, per_item: bool = False, check: Check | None = None,
                  callback: StepCallback | None = None, betas: tuple[float, float] = (0.9, 0.999),
                  eps: float = 1e-8) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Adam (default betas and eps) on a copy of ``x0`` for ``iters`` iterations; works inside
    ComfyUI's inference_mode.

    Exactly one of ``loss_fn(x)`` (autograd) or ``grad_fn(x) -> (loss, grad)`` (no autograd) gives
    one loss per independent item (or a scalar); their sum is minimised, so items never mix and
    splitting a batch into chunks gives the same result. ``lr_at(k)`` overrides the learning rate at
    iteration k; the loop stops once every loss is below ``stop_below(k)``; with ``per_item`` (losses one
    per row of x) a row whose loss fell below it is frozen from the next iteration on, so each item stops
    as if optimised alone (PoseAnimate's frame chunks give equal results). ``before_last`` returns x
    as it was before the last update (FlipSketch's official off-by-one). ``check()`` runs before
    every iteration (nodes pass ComfyUI's cancel check; it raises to stop); ``callback(k, iters)``
    after each. Returns ``(x, losses)`` with one detached loss tensor per iteration.

    ``x0`` may also be a list of tensors (several parameter sets, e.g. FlexiClip's control-point MLP and
    its corrector network): ``loss_fn`` then receives the list and a list comes back (``loss_fn`` only;
    ``before_last`` is for one tensor). ``betas``/``eps`` are Adam's (AniClipart: (0.9, 0.9), 1e-6).

    >>> x, losses = adam_minimise(torch.tensor([3.0]), grad_fn=lambda x: (x * x, 2 * x), iters=100, lr=0.1)
    >>> bool(x.abs() < 0.1), bool(losses[-1] < losses[0])
    (True, True)
    """
    if (loss_fn is None) == (grad_fn is None):
        raise TypeError("adam_minimise: give exactly one of loss_fn (autograd) or grad_fn (loss and gradient)")
    losses: list[torch.Tensor] = []
    many = not isinstance(x0, torch.Tensor)
    if many and (grad_fn is not None or before_last):
        raise TypeError("adam_minimise: a list of tensors takes loss_fn, without before_last")
    with torch.inference_mode(False), torch.enable_grad():
        xs = [t.detach().clone().requires_grad_(True) for t in (x0 if many else [x0])]
        x = xs if many else xs[0]
        prev = None if many else x.detach()
        opt = torch.optim.Adam(xs, lr=float(lr), betas=tuple(betas), eps=float(eps))
        done = None
        for k in range(int(iters)):
            poll(check)
            if lr_at is not None:
                for group in opt.param_groups:
                    group["lr"] = float(lr_at(k))
            if grad_fn is None:
                loss = loss_fn(x)
                if before_last:
                    prev = x.detach().clone()
                opt.zero_grad(set_to_none=True)
                loss.sum().backward()
            else:
                with torch.no_grad():
                    loss, grad = grad_fn(x.detach())
                if before_last:
                    prev = x.detach().clone()
                x.grad = grad.to(x.dtype)
            keep = x.detach().clone() if done is not None and bool(done.any()) else None
            opt.step()
            if keep is not None:
                with torch.no_grad():
                    x[done] = keep[done]
            losses.append(loss.detach())
            report(callback, k + 1, int(iters))
            if stop_below is not None:
                below = loss.detach().reshape(-1) < stop_below(k)
                if per_item and not many and below.numel() == x.shape[0]:
                    done = below if done is None else done | below
                    below = done
                if bool(below.all()):
                    break
    if many:
        return [t.detach() for t in xs], losses
    return (prev if before_last else x.detach()), losses


def delayed_log_lerp(step: int, iters: int, *, lr_init: float, lr_final: float, delay_mult: float = 1.0,
                     delay_steps: int = 0) -> float:
    """A warm-up-then-log-linear learning-rate multiplier (the NeRF-style schedule AniClipart runs through
    ``LambdaLR``, A:painter_clipart.py:594-603, spec flexiclip.md §1.8): ``delay(step) · exp((1-τ) ln lr_init
    + τ ln lr_final) / lr_init`` with τ = clip(step / iters, 0, 1) and ``delay = m + (1 - m) sin(π/2 ·
    clip(step / delay_steps, 0, 1))``. Multiply the base learning rate by it.

    >>> [round(0.005 * delayed_log_lerp(k, 1000, lr_init=0.002, lr_final=0.0008, delay_mult=0.1, delay_steps=100), 5)
    ...  for k in (0, 100, 1000)]
    [0.0005, 0.00456, 0.002]
    """
    import math

    delay = 1.0
    if delay_steps > 0:
        delay = delay_mult + (1 - delay_mult) * math.sin(0.5 * math.pi * min(max(step / delay_steps, 0.0), 1.0))
    tau = min(max(step / max(iters, 1), 0.0), 1.0)
    return delay * math.exp(math.log(lr_init) * (1 - tau) + math.log(lr_final) * tau) / lr_init
