"""Fitting θ so that T_θ moves keypoints onto keypoints (spec cpab.md §2.1, §3.2).

The objective, per θ (one per frame), is MAP with libcpab's smoothness prior:
``Σ_k w_k ‖(T_θ(p_k) - q_k)·s‖² + λ θᵀ Σ_θ⁻¹ θ (+ γ ‖θ - θ_prev‖²)``,
with ``s`` the pixel size of the canvas per axis, so that residuals are in pixels (isotropic on
non-square images; without a canvas size, in [0,1]² units). Two optimisers:

- ``lm``: Levenberg-Marquardt on the exact Jacobian (:func:`~.transform.transform_jacobian`). It stays
  here rather than in :mod:`..optimise`: it needs the full [n, 2K, d] residual Jacobian, which only
  CPAB computes, and its damping and trial steps are no gradient step;
- ``adam``: the pack's one Adam loop (:func:`..optimise.adam_minimise`, i.e. ``torch.optim.Adam`` as
  CPABMM runs it) on the exact gradient, given in closed form (``grad_fn``). ``loss="norm"``
  reproduces CPABMM's fit: the (not squared) Frobenius norm of all residuals of a frame, no prior,
  θ₀ = 1e-6, lr 1e-2 (C:dense_motion.py:61-71).

Both are autograd-free, so they run unchanged under ``torch.inference_mode()``.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from ..errors import check_finite, fail
from ..optimise import adam_minimise
from ..progress import StepCallback, report
from .tessellation import Tessellation
from .transform import _as_batch, integrate, step_tables, transform_jacobian

METHODS = ("lm", "adam")


@dataclass
class FitResult:
    theta: torch.Tensor        # [n, d] float64
    error_px: torch.Tensor     # [n, K] residual distance per keypoint, in pixels (weight-0 points too)
    iterations: int            # iterations run (LM: Jacobian evaluations)


@contextlib.contextmanager
def single_thread():
    """Fits run thousands of ops on tensors of a few hundred numbers: intra-op threads cannot help,
    and on a busy CPU their synchronisation made fits ~5-10× slower (benchmarks/cpab.py)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _prepare(tess, moving, fixed, weights, theta0, pixel_size):
    fixed = check_finite("target keypoints", torch.as_tensor(fixed, dtype=torch.float64))
    if fixed.dim() == 2:
        fixed = fixed[None]
    n, k = fixed.shape[:2]
    moving = check_finite("source keypoints", torch.as_tensor(moving, dtype=torch.float64))
    if moving.dim() == 2:
        moving = moving[None].expand(n, -1, -1)
    if moving.shape[0] == 1 and n > 1:
        moving = moving.expand(n, -1, -1)
    if moving.shape != fixed.shape or fixed.shape[-1] != 2:
        fail("keypoints", f"source and target with the same number of [x, y] points "
                          f"(source {tuple(moving.shape)})", f"target {tuple(fixed.shape)}")
    if k < 1:
        fail("keypoints", "at least one keypoint", "none")
    if weights is None:
        w = torch.ones(n, k, dtype=torch.float64)
    else:
        w = check_finite("weights", torch.as_tensor(weights, dtype=torch.float64))
        if w.dim() == 1 or (w.dim() == 2 and w.shape[0] == 1):
            w = w.reshape(1, -1).expand(n, -1)
        if tuple(w.shape) != (n, k):
            fail("weights", f"one weight per keypoint ({k})", f"shape {tuple(w.shape)}")
        if (w < 0).any():
            fail("weights", "non-negative weights (0 = invisible)", f"{w.min().item()}")
    if theta0 is None:
        theta = torch.zeros(n, tess.dim, dtype=torch.float64)
    else:
        theta = check_finite("theta0", torch.as_tensor(theta0, dtype=torch.float64)).reshape(-1, tess.dim)
        theta = theta.expand(n, -1).clone() if theta.shape[0] == 1 else theta.clone()
        if theta.shape[0] != n:
            fail("theta0", f"1 or {n} rows", f"{theta.shape[0]}")
    sx, sy = (1.0, 1.0) if pixel_size is None else (float(pixel_size[0]), float(pixel_size[1]))
    scale = torch.tensor([sx, sy], dtype=torch.float64)
    return moving.contiguous(), fixed, w, theta, scale


def _cost(tess, moving, fixed, theta, w, scale, nsteps, prec, gamma, theta_prev):
    out = integrate(moving, step_tables(tess, theta, nsteps), tess.nx, tess.ny, nsteps)
    r = (out - fixed) * scale
    c = (w * (r ** 2).sum(-1)).sum(-1)
    if prec is not None:
        c = c + torch.einsum("nd,de,ne->n", theta, prec, theta)
    if gamma > 0:
        c = c + gamma * ((theta - theta_prev) ** 2).sum(-1)
    return c, r


def fit_theta(tess: Tessellation, moving, fixed, *, method: str = "lm", iterations: int = 10,
              lr: float = 1e-2, nsteps: int = 20, prior_strength: float = 1e-6,
              length_scale: float = 0.1, weights=None, theta0=None, pixel_size=None,
              theta_prev=None, temporal_weight: float = 0.0, loss: str = "squared",
              norm_group: int = 1, tol_px: float = 0.05,
              callback: StepCallback | None = None) -> FitResult:
    """Fit θ [n, d] so that ``T_θ(moving) ≈ fixed``.

    moving, fixed: [K, 2] or [n, K, 2] in [0,1]² units (n independent fits, batched);
    weights: [K] or [n, K], 0 drops a keypoint (invisible); pixel_size: (W-1, H-1) for
    pixel-isotropic residuals and ``tol_px`` (LM stops once every visible keypoint is that close);
    theta_prev + temporal_weight: pull towards the previous frame's θ (tracks).
    Adam only: ``loss="norm"`` (CPABMM) minimises the Frobenius norm over each ``norm_group``
    consecutive θ rows (a CPABMM frame's 10 partial transforms share one norm).
    """
    if method not in METHODS:
        fail("optimizer", f"one of {METHODS}", repr(method))
    if int(iterations) != iterations or iterations < 0:
        fail("iterations", "an integer >= 0", f"{iterations}")
    if prior_strength < 0 or temporal_weight < 0:
        fail("prior_strength", "a value >= 0", f"{prior_strength}, {temporal_weight}")
    moving, fixed, w, theta, scale = _prepare(tess, moving, fixed, weights, theta0, pixel_size)
    n = theta.shape[0]
    prec = tess.prior_precision(length_scale) * prior_strength if prior_strength > 0 else None
    gamma = float(temporal_weight)
    if gamma > 0:
        theta_prev = torch.as_tensor(theta_prev, dtype=torch.float64).reshape(-1, tess.dim).expand(n, -1)
    fit = _fit_lm if method == "lm" else _fit_adam
    with single_thread():
        theta, its = fit(tess, moving, fixed, w, theta, scale, int(iterations), nsteps, prec, gamma,
                         theta_prev, lr=lr, loss=loss, norm_group=norm_group, tol_px=tol_px, callback=callback)
    _, r = _cost(tess, moving, fixed, theta, w, scale, nsteps, None, 0.0, None)
    return FitResult(theta, r.norm(dim=-1), its)


def _fit_lm(tess, moving, fixed, w, theta, scale, iterations, nsteps, prec, gamma, theta_prev,
            *, tol_px, callback, **_):
    n, k = fixed.shape[:2]
    d = tess.dim
    sw = w.sqrt()
    eye = torch.eye(d, dtype=torch.float64)
    mu = None
    cost, _ = _cost(tess, moving, fixed, theta, w, scale, nsteps, prec, gamma, theta_prev)
    done = 0
    for it in range(iterations):
        out, jac = transform_jacobian(tess, moving, theta, nsteps)
        r = (out - fixed) * scale                                        # [n, K, 2]
        err = r.norm(dim=-1)
        if bool(((err * (w > 0)).amax(-1) < tol_px).all()):
            break
        jw = (jac * scale.view(1, 1, 2, 1) * sw.view(n, k, 1, 1)).reshape(n, 2 * k, d)
        rw = (r * sw.unsqueeze(-1)).reshape(n, 2 * k)
        hess = jw.transpose(1, 2) @ jw
        grad = (jw.transpose(1, 2) @ rw.unsqueeze(-1)).squeeze(-1)
        if prec is not None:
            hess = hess + prec
            grad = grad + theta @ prec
        if gamma > 0:
            hess = hess + gamma * eye
            grad = grad + gamma * (theta - theta_prev)
        if mu is None:
            mu = 1e-3 * hess.diagonal(dim1=1, dim2=2).mean(-1).clamp_min(1e-12)
        pending = torch.ones(n, dtype=torch.bool)
        for _trial in range(6):                       # raise μ until the step lowers the cost
            step = torch.linalg.solve(hess + mu.view(n, 1, 1) * eye, -grad.unsqueeze(-1)).squeeze(-1)
            cand = theta + step
            c_new, _ = _cost(tess, moving, fixed, cand, w, scale, nsteps, prec, gamma, theta_prev)
            ok = pending & torch.isfinite(c_new) & (c_new <= cost)
            theta = torch.where(ok.unsqueeze(-1), cand, theta)
            cost = torch.where(ok, c_new, cost)
            mu = torch.where(ok, mu / 3, torch.where(pending, mu * 4, mu))
            pending = pending & ~ok
            if not pending.any():
                break
        done = it + 1
        report(callback, done, iterations)
    return theta, done


def _fit_adam(tess, moving, fixed, w, theta, scale, iterations, nsteps, prec, gamma, theta_prev,
              *, lr, loss, norm_group, callback, **_):
    """Adam (:func:`..optimise.adam_minimise`) on the exact gradient, written out by hand: no graph."""
    if loss not in ("squared", "norm"):
        fail("loss", "'squared' or 'norm'", repr(loss))
    n = theta.shape[0]
    if loss == "norm" and n % norm_group:
        fail("norm_group", f"a divisor of the number of transforms ({n})", f"{norm_group}")

    def loss_and_gradient(th):
        out = integrate(moving, step_tables(tess, th, nsteps), tess.nx, tess.ny, nsteps)
        r = (out - fixed) * scale
        if loss == "squared":
            value = (w * (r ** 2).sum(-1)).sum(-1)
            cot = 2 * w.unsqueeze(-1) * r * scale
        else:
            wr = w.unsqueeze(-1) * r
            value = (wr * r).reshape(n // norm_group, -1).sum(-1).sqrt()
            norm = value.clamp_min(1e-12)
            cot = wr * scale / norm.repeat_interleave(norm_group).view(n, 1, 1)
        _, g = transform_jacobian(tess, moving, th, nsteps, cotangent=cot)
        if prec is not None:
            value = value + torch.einsum("nd,de,ne->n", th, prec, th)
            g = g + 2 * th @ prec
        if gamma > 0:
            value = value + gamma * ((th - theta_prev) ** 2).sum(-1)
            g = g + 2 * gamma * (th - theta_prev)
        return value, g

    theta, _ = adam_minimise(theta, grad_fn=loss_and_gradient, iters=iterations, lr=lr, callback=callback)
    return theta, iterations


def fit_track(tess: Tessellation, moving, fixed, *, warm_start: bool = True, temporal_weight: float = 0.0,
              callback: StepCallback | None = None, **kw) -> FitResult:
    """One θ per frame for a track. moving: [K, 2] or [F, K, 2]; fixed: [F, K, 2].

    warm_start: frame f starts from θ_{f-1} (sequential; consecutive θ stay close, and converged
    frames cost one Jacobian); otherwise all frames are fitted at once from θ = 0 (batched).
    temporal_weight γ adds γ‖θ_f - θ_{f-1}‖² (warm start only).
    """
    fixed = torch.as_tensor(fixed, dtype=torch.float64)
    if fixed.dim() != 3:
        fail("target keypoints", "a track [frames, K, 2]", f"shape {tuple(fixed.shape)}")
    f = fixed.shape[0]
    moving = torch.as_tensor(moving, dtype=torch.float64)
    moving = _as_batch(moving, f) if moving.dim() == 2 or moving.shape[0] == f else moving
    weights = kw.pop("weights", None)
    if not warm_start:
        res = fit_theta(tess, moving, fixed, weights=weights, callback=callback, **kw)
        report(callback, f, f)
        return res
    theta0 = kw.pop("theta0", None)
    prev = torch.zeros(1, tess.dim, dtype=torch.float64) if theta0 is None else \
        torch.as_tensor(theta0, dtype=torch.float64).reshape(1, -1)
    thetas, errs, its = [], [], 0
    for i in range(f):
        wi = None if weights is None else torch.as_tensor(weights, dtype=torch.float64).reshape(-1, fixed.shape[1])[
            min(i, torch.as_tensor(weights).reshape(-1, fixed.shape[1]).shape[0] - 1)]
        # inside a frame: re-report the frames done at every iteration, so a cancel lands mid-fit
        inner = None if callback is None else (lambda _k, _n, i=i: callback(i, f))
        res = fit_theta(tess, moving[i], fixed[i], weights=wi, theta0=prev, theta_prev=prev,
                        temporal_weight=temporal_weight if i > 0 else 0.0, callback=inner, **kw)
        prev = res.theta
        thetas.append(res.theta)
        errs.append(res.error_px)
        its += res.iterations
        report(callback, i + 1, f)
    return FitResult(torch.cat(thetas), torch.cat(errs), its)
