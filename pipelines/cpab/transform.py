"""CPAB transformations T_θ^t of points in [0,1]²: cell lookup, exact per-cell steps, Jacobians.

Spec cpab.md §1.1 (cell lookup), §1.3 (libcpab's "fast" scheme: precompute ``Trel_c = expm(t·Ã_c/N)``
for every cell, then N times: find the cell of p, p ← Trel_c [p; 1]) and §1.4 (gradients).

Two ways to differentiate, both exact for the discretised map:
- :func:`transform` is plain torch, so autograd gives gradients with respect to θ *and* the points;
- :func:`transform_jacobian` integrates forward once and accumulates ``∂p_N/∂Trel`` backwards by
  hand (``λ_s = M_cᵀ λ_{s+1}``), then chains through ``∂Trel/∂A`` (Fréchet derivative of the
  exponential) and the basis: the full ``[n, P, 2, d]`` Jacobian for Levenberg-Marquardt, or a
  gradient for Adam, without an autograd graph (so it also runs under ``torch.inference_mode()``).
Coordinates: the unit square with align_corners (:func:`..coords.pixel_to_unit`, x = column / (W-1),
y = row / (H-1)); coordinate 0 is x.
"""
from __future__ import annotations

import math

import torch

from ..errors import check_finite, fail
from .tessellation import Tessellation

_TAYLOR_ORDER = 8
_TAYLOR_NORM = 0.25       # scale X by 2^-s until ‖X‖₁ <= this: truncation error < 0.25⁹/9! ≈ 1e-11


def theta_to_affine(tess: Tessellation, theta: torch.Tensor) -> torch.Tensor:
    """θ [n, d] -> per-cell affine velocities A [n, nC, 2, 3] (``vec A = B θ``)."""
    theta = check_theta(tess, theta)
    b = tess.basis.to(theta.device, theta.dtype)
    return (theta @ b.T).reshape(theta.shape[0], tess.num_cells, 2, 3)


def check_theta(tess: Tessellation, theta) -> torch.Tensor:
    if not isinstance(theta, torch.Tensor) or not theta.is_floating_point():
        fail("theta", f"a float tensor [n, {tess.dim}]", f"{type(theta).__name__}")
    if theta.dim() == 1:
        theta = theta[None]
    if theta.dim() != 2 or theta.shape[1] != tess.dim:
        fail("theta", f"[n, {tess.dim}] parameters for {tess.nx}x{tess.ny} cells "
                      f"(zero_boundary={tess.zero_boundary}, volume_preserving={tess.volume_preserving})",
             f"shape {tuple(theta.shape)}")
    return check_finite("theta", theta)


def _augment(a: torch.Tensor) -> torch.Tensor:
    """[..., 2, 3] -> [..., 3, 3] with a zero bottom row."""
    return torch.cat([a, a.new_zeros(*a.shape[:-2], 1, 3)], -2)


def _squarings(x: torch.Tensor) -> int:
    if x.numel() == 0:
        return 0
    norm = float(x.detach().abs().sum(-2).amax())
    return max(0, math.ceil(math.log2(norm / _TAYLOR_NORM))) if norm > _TAYLOR_NORM else 0


def expm_affine(a: torch.Tensor) -> torch.Tensor:
    """exp([[A],[0 0 0]]) for A [..., 2, 3] -> the top two rows [..., 2, 3]. Taylor series with
    scaling and squaring; plain torch ops, so autograd works through it."""
    s = _squarings(a)
    x = _augment(a) / (2 ** s)
    eye = torch.eye(3, dtype=a.dtype, device=a.device).expand_as(x)
    out = eye
    for j in range(_TAYLOR_ORDER, 0, -1):      # Horner: I + X(I + X/2(I + X/3(...)))
        out = eye + (x @ out) / j
    for _ in range(s):
        out = out @ out
    return out[..., :2, :]


def expm_affine_with_derivative(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """expm of A [..., 2, 3] and its derivative: (T [..., 6], D [..., 6, 6]) with
    ``D[..., i, k] = ∂T_i / ∂A_k`` (row-major entries), by forward-mode Taylor + squaring."""
    s = _squarings(a)
    scale = 2.0 ** -s
    x = _augment(a) * scale                                      # [..., 3, 3]
    unit = torch.zeros(6, 3, 3, dtype=a.dtype, device=a.device)
    unit.view(6, 9)[torch.arange(6), torch.tensor([0, 1, 2, 3, 4, 5])] = scale
    dx = unit.expand(*a.shape[:-2], 6, 3, 3)                      # [..., 6, 3, 3]
    xe = x.unsqueeze(-3)
    term = torch.eye(3, dtype=a.dtype, device=a.device).expand_as(x)
    dterm = torch.zeros_like(dx)
    out, dout = term, dterm
    for j in range(1, _TAYLOR_ORDER + 1):      # P_j = P_{j-1} X / j, dP_j = (dP_{j-1} X + P_{j-1} dX) / j
        dterm = (dterm @ xe + term.unsqueeze(-3) @ dx) / j
        term = (term @ x) / j
        out = out + term
        dout = dout + dterm
    for _ in range(s):
        dout = dout @ out.unsqueeze(-3) + out.unsqueeze(-3) @ dout
        out = out @ out
    t = out[..., :2, :].reshape(*a.shape[:-2], 6)
    d = dout[..., :2, :].reshape(*a.shape[:-2], 6, 6).transpose(-1, -2)
    return t, d


def step_tables(tess: Tessellation, theta: torch.Tensor, nsteps: int, t: float | torch.Tensor = 1.0) -> torch.Tensor:
    """Trel = expm(t·Ã/N) for every (θ, cell): [n, nC, 6] (row-major 2×3)."""
    a = theta_to_affine(tess, theta)
    tt = torch.as_tensor(t, dtype=a.dtype, device=a.device).reshape(-1, 1, 1, 1)
    return expm_affine(a * (tt / nsteps)).reshape(a.shape[0], tess.num_cells, 6)


def cell_index(x: torch.Tensor, y: torch.Tensor, nx: int, ny: int) -> torch.Tensor:
    """Cell of every point (spec §1.1), 4(col + row·nx) + t with t = 0 top, 1 right, 2 bottom, 3 left.
    Points outside [0,1]² get the nearest border triangle: the fractions are taken in the clamped
    square without clamping them, which reproduces the outside rules exactly."""
    code = _code_index(x, y, nx, ny)
    return code - (code % 4) + _CODE_TO_TRI.to(code.device)[code % 4]


# Inside a square, code = 2·[xf < yf] + [xf + yf > 1]: 0 top, 1 right, 2 left, 3 bottom.
_CODE_TO_TRI = torch.tensor([0, 1, 3, 2])


def _code_index(x: torch.Tensor, y: torch.Tensor, nx: int, ny: int) -> torch.Tensor:
    """4·square + code (see _CODE_TO_TRI): the cell lookup in few elementwise ops (no torch.where,
    which is slow on CPU)."""
    gx = x * nx
    gy = y * ny
    col = gx.floor().clamp_(0, nx - 1)
    row = gy.floor().clamp_(0, ny - 1)
    xf = gx - col
    yf = gy - row
    code = (xf < yf).to(x.dtype).mul_(2).add_((xf + yf) > 1)
    return torch.addcmul(col, row, torch.tensor(float(nx), dtype=x.dtype)).mul_(4).add_(code).long()


def _check_nsteps(nsteps: int) -> int:
    if int(nsteps) != nsteps or nsteps < 1:
        fail("nsteps", "an integer >= 1", f"{nsteps}")
    return int(nsteps)


def _code_table(table: torch.Tensor) -> torch.Tensor:
    """[n, nC, 6] in triangle order -> [n·nC, 6] in code order (see _CODE_TO_TRI)."""
    n, nc = table.shape[:2]
    perm = (torch.arange(nc // 4).view(-1, 1) * 4 + _CODE_TO_TRI.view(1, 4)).reshape(-1).to(table.device)
    return table.index_select(1, perm).reshape(n * nc, 6)


def integrate(points: torch.Tensor, table: torch.Tensor, nx: int, ny: int, nsteps: int,
              record: bool = False):
    """N exact cell steps. points [n, P, 2], table [n, nC, 6] -> [n, P, 2]
    (with record=True also the list of (x, y, code-ordered cell) before each step, for _backward).
    Plain torch ops throughout, so autograd reaches both the table (θ) and the points."""
    n, nc = table.shape[0], table.shape[1]
    p = points.shape[1]
    flat = _code_table(table)
    base = (torch.arange(n, device=table.device) * nc).repeat_interleave(p)
    x, y = points[..., 0].reshape(-1), points[..., 1].reshape(-1)
    traj = []
    for _ in range(nsteps):
        idx = _code_index(x, y, nx, ny).add_(base)
        g = flat.index_select(0, idx)                   # [n·P, 6]
        if record:
            traj.append((x, y, idx))
        x, y = (torch.addcmul(g[:, 2], g[:, 0], x).addcmul_(g[:, 1], y),
                torch.addcmul(g[:, 5], g[:, 3], x).addcmul_(g[:, 4], y))
    out = torch.stack([x, y], -1).view(n, p, 2)
    return (out, traj) if record else out


def _backward(traj, table: torch.Tensor, lam: torch.Tensor, per_row: bool) -> torch.Tensor:
    """Reverse accumulation through the recorded steps: ``∂/∂Trel_c += λ_{s+1} [p_s; 1]ᵀ`` at the
    cell c of step s, then ``λ_s = M_cᵀ λ_{s+1}``.

    lam [n, P, m, 2]: cotangents on the final points. Returns ∂/∂table (triangle order) as
    [n, P, m, nC, 6] (per_row: one row per point and cotangent, i.e. a Jacobian) or [n, m, nC, 6].
    """
    n, nc = table.shape[0], table.shape[1]
    flat = _code_table(table)
    _, p, m, _ = lam.shape
    dev = lam.device
    if per_row:   # row of (θ, point, cotangent); cell offsets by θ are removed from idx below
        row = (torch.arange(n * p * m, device=dev) * nc).view(n * p, m)
        grad = lam.new_zeros(n * p * m * nc, 6)
    else:
        row = ((torch.arange(n, device=dev) * m).view(n, 1) + torch.arange(m, device=dev).view(1, m)) * nc
        row = row.repeat_interleave(p, 0)                                     # [n·P, m]
        grad = lam.new_zeros(n * m * nc, 6)
    base = (torch.arange(n, device=dev) * nc).repeat_interleave(p)
    lx, ly = lam[..., 0].reshape(n * p, m), lam[..., 1].reshape(n * p, m)
    for x, y, idx in reversed(traj):
        g = flat.index_select(0, idx)                                         # [n·P, 6]
        xs, ys = x.unsqueeze(-1), y.unsqueeze(-1)
        contrib = torch.stack([lx * xs, lx * ys, lx, ly * xs, ly * ys, ly], -1)   # [n·P, m, 6]
        lin = (row + (idx - base).unsqueeze(-1)).reshape(-1)
        grad.index_add_(0, lin, contrib.reshape(-1, 6))
        lx, ly = (g[:, 0:1] * lx + g[:, 3:4] * ly, g[:, 1:2] * lx + g[:, 4:5] * ly)
    # code order -> triangle order (the permutation is its own inverse)
    grad = grad.view(-1, nc // 4, 4, 6)[:, :, _CODE_TO_TRI.to(dev)].reshape(-1, nc, 6)
    return grad.view(n, p, m, nc, 6) if per_row else grad.view(n, m, nc, 6)


def _as_batch(points: torch.Tensor, n: int) -> torch.Tensor:
    if points.dim() == 2:
        points = points.unsqueeze(0).expand(n, *points.shape)
    if points.dim() != 3 or points.shape[-1] != 2 or points.shape[0] != n:
        fail("points", f"[P, 2] or [{n}, P, 2] coordinates", f"shape {tuple(points.shape)}")
    return points


def transform(tess: Tessellation, points: torch.Tensor, theta: torch.Tensor, nsteps: int = 50,
              t: float | torch.Tensor = 1.0) -> torch.Tensor:
    """T_θ^t(points): points [P, 2] (shared) or [n, P, 2] in [0,1]² units, θ [n, d] -> [n, P, 2].
    ``t`` (a float or one value per θ) walks the diffeomorphic path T^t; T^{-1}_θ = T_{-θ}."""
    nsteps = _check_nsteps(nsteps)
    theta = check_theta(tess, theta)
    points = _as_batch(check_finite("points", points.to(theta.dtype)), theta.shape[0])
    table = step_tables(tess, theta, nsteps, t)
    return integrate(points, table, tess.nx, tess.ny, nsteps)


def transform_jacobian(tess: Tessellation, points: torch.Tensor, theta: torch.Tensor, nsteps: int = 50,
                       t: float = 1.0, cotangent: torch.Tensor | None = None):
    """T_θ^t(points) and its derivative with respect to θ, computed without autograd.

    Without ``cotangent``: returns (out [n, P, 2], J [n, P, 2, d]).
    With ``cotangent`` [n, P, 2] (∂loss/∂out): returns (out, ∂loss/∂θ [n, d]) in one reverse pass.
    """
    nsteps = _check_nsteps(nsteps)
    theta = check_theta(tess, theta).detach()
    points = _as_batch(points.to(theta.dtype).detach(), theta.shape[0])
    a = theta_to_affine(tess, theta) * (float(t) / nsteps)
    n, p = points.shape[:2]
    nc = tess.num_cells
    table = expm_affine(a).reshape(n, nc, 6)
    out, traj = integrate(points, table, tess.nx, tess.ny, nsteps, record=True)
    # ∂Trel/∂A only where a trajectory went: a few dozen of the nC cells for keypoint fits
    code = torch.cat([idx for _, _, idx in traj]).unique()
    local = code % nc
    vis = code - local + 4 * (local // 4) + _CODE_TO_TRI.to(code.device)[local % 4]      # triangle order
    _, dv = expm_affine_with_derivative(a.reshape(n * nc, 2, 3).index_select(0, vis))   # [V, 6, 6]
    bv = (tess.basis.to(theta.device, theta.dtype) * (float(t) / nsteps)).view(nc, 6, -1)[vis % nc]  # ∂(A t/N)/∂θ
    owner = vis // nc
    if cotangent is None:
        eye = torch.eye(2, dtype=theta.dtype, device=theta.device)
        g = _backward(traj, table, eye.expand(n, p, 2, 2), per_row=True)                  # [n, P, 2, nC, 6]
        gv = g.permute(0, 3, 1, 2, 4).reshape(n * nc, p, 2, 6).index_select(0, vis)
        contrib = torch.einsum("vpmi,vik,vkd->vpmd", gv, dv, bv)
        return out, theta.new_zeros(n, p, 2, tess.dim).index_add_(0, owner, contrib)
    g = _backward(traj, table, cotangent.to(theta.dtype).unsqueeze(2), per_row=False)[:, 0]  # [n, nC, 6]
    contrib = torch.einsum("vi,vik,vkd->vd", g.reshape(n * nc, 6).index_select(0, vis), dv, bv)
    return out, theta.new_zeros(n, tess.dim).index_add_(0, owner, contrib)


def identity_grid(size: tuple[int, int], *, dtype=torch.float32, device=None) -> torch.Tensor:
    """[h, w, 2] pixel centres (x, y) in the unit square with align_corners (:mod:`..coords`), built
    with ``linspace`` so that the ends are exactly 0 and 1 (CPAB's identity grid)."""
    h, w = size
    ys = torch.linspace(0, 1, h, dtype=dtype, device=device) if h > 1 else torch.zeros(1, dtype=dtype, device=device)
    xs = torch.linspace(0, 1, w, dtype=dtype, device=device) if w > 1 else torch.zeros(1, dtype=dtype, device=device)
    return torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1)


def transform_grid(tess: Tessellation, theta: torch.Tensor, size: tuple[int, int], nsteps: int = 50,
                   t: float | torch.Tensor = 1.0, chunk: int = 1 << 20) -> torch.Tensor:
    """T_θ^t on the ``size`` = (h, w) pixel grid: [n, h, w, 2] in [0,1]² units.
    Points are processed in chunks of ``chunk`` (n·points) to bound memory."""
    nsteps = _check_nsteps(nsteps)
    theta = check_theta(tess, theta)
    n = theta.shape[0]
    h, w = size
    table = step_tables(tess, theta, nsteps, t)
    pts = identity_grid((h, w), dtype=theta.dtype, device=theta.device).reshape(1, h * w, 2)
    per = max(1, chunk // max(n, 1))
    outs = [integrate(pts[:, i:i + per].expand(n, -1, -1), table, tess.nx, tess.ny, nsteps)
            for i in range(0, h * w, per)]
    return torch.cat(outs, 1).reshape(n, h, w, 2)
