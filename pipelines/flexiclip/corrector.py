"""FlexiClip-style temporal Jacobian corrector (spec flexiclip.md §2.3, ours: the official code's
version does not work as the paper describes, §2.2.4). ComfyUI type ``FLIPBOOK_TJC``.

Per face f and distinct pose s (times ``u_s = s / (S - 1)``) the pose Jacobians ``Jᴾ[s, f]`` (2x2)
get a correction ``Jᴿ[s, f]``, integrated along the poses from ``Jᴿ(u_0) = 0``:

    dJᴿ/dτ = a ⊙ Jᴿ + c,   a = -softplus(out[:4]),  c = out[4:],
    out = f_R([φ(Jᴿ(τ)) | φ(J₀ᴾ) | C_wᴾ | C_{w-1}ᴿ | τ])

(the pfODE structure of [S]: ``a`` the contractive scaling term, ``c`` the drive). ``C_wᴾ`` encodes the
pose Jacobians of window w (the window of the interval's start pose; windows of ``window`` poses),
``C_{w-1}ᴿ`` the corrections recorded in the previous window (zeros for w = 0): two one-layer
attention encoders over per-face token sequences, 2 heads of 32-d queries/keys/values [S]. Faces are
the batch. Pose s therefore depends on no pose after the end of its window (causal).

f_R's last layer starts at zero: ``out ≡ 0``, so ``c = 0`` and ``Jᴿ ≡ 0`` exactly; the corrected
animation then *is* the pose-only one (:func:`corrected_vertices`). ``structure="plain"`` is [F]'s
unstructured ``dJᴿ/dτ = f_R(...)[:4]``. Fixed-step RK4 (or Euler) with ``substeps`` per interval.
"""
from __future__ import annotations

import json
import math

import torch
from torch import nn

from ..errors import fail
from ..seeds import effective_seed

STRUCTURES = ("pfode", "plain")
SOLVERS = ("rk4", "euler")


class WindowEncoder(nn.Module):
    """One transformer-encoder layer over a per-face sequence of flattened 2x2 Jacobians, mean-pooled:
    [F, L, 4] -> [F, d]. Tokens: ``Linear(4, d)`` + a learned frame-index embedding; 2 heads with
    32-d q/k/v (as [F], F:painter_clipart.py:411-419), d_ff 32."""

    def __init__(self, d: int = 32, heads: int = 2, head_dim: int = 32, d_ff: int = 32, max_len: int = 64):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        self.lift = nn.Linear(4, d)
        self.index = nn.Embedding(max_len, d)
        self.qkv = nn.Linear(d, 3 * heads * head_dim)
        self.out = nn.Linear(heads * head_dim, d)
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.ff = nn.Sequential(nn.Linear(d, d_ff), nn.ReLU(), nn.Linear(d_ff, d))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        f, n, _ = tokens.shape
        if n > self.index.num_embeddings:
            fail("window", f"at most {self.index.num_embeddings} poses", str(n))
        h = self.lift(tokens) + self.index.weight[:n]
        q, k, v = self.qkv(h).view(f, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(self.head_dim), -1) @ v   # [F,heads,n,hd]
        h = self.norm1(h + self.out(att.transpose(1, 2).reshape(f, n, -1)))
        h = self.norm2(h + self.ff(h))
        return h.mean(1)


class TemporalJacobianCorrector(nn.Module):
    """Jᴿ for every pose from the pose Jacobians (module doc). ``forward(jp [S,F,2,2]) -> jr [S,F,2,2]``.

    >>> c = TemporalJacobianCorrector()
    >>> jp = torch.eye(2).repeat(6, 10, 1, 1) + 0.1 * torch.randn(6, 10, 2, 2)
    >>> bool(c(jp).eq(0).all())                 # zero-initialised: no correction
    True
    """

    def __init__(self, window: int = 4, substeps: int = 2, solver: str = "rk4", structure: str = "pfode",
                 d: int = 32, hidden: tuple[int, int] = (512, 256), seed: int = 0):
        super().__init__()
        if solver not in SOLVERS:
            fail("solver", " / ".join(SOLVERS), repr(solver))
        if structure not in STRUCTURES:
            fail("structure", " / ".join(STRUCTURES), repr(structure))
        if int(window) < 1 or int(substeps) < 1:
            fail("window / substeps", "at least 1", f"{window} / {substeps}")
        self.config = dict(window=int(window), substeps=int(substeps), solver=solver, structure=structure,
                           d=int(d), hidden=list(hidden), seed=int(seed))
        with torch.random.fork_rng(devices=[]):          # seeded initial weights, global generator untouched
            torch.manual_seed(effective_seed(seed))
            self._build(int(d), hidden)

    def _build(self, d: int, hidden) -> None:
        self.encode_pose = WindowEncoder(d)
        self.encode_corr = WindowEncoder(d)
        # φ as [F]'s JacFC: Linear(4, 64)-ReLU-Linear(64, 32), shared by Jᴿ and J₀ᴾ.
        self.phi = nn.Sequential(nn.Linear(4, 64), nn.ReLU(), nn.Linear(64, d))
        self.f_r = nn.Sequential(nn.Linear(4 * d + 1, hidden[0]), nn.ReLU(), nn.Linear(hidden[0], hidden[1]),
                                 nn.ReLU(), nn.Linear(hidden[1], 8))
        nn.init.zeros_(self.f_r[-1].weight)
        nn.init.zeros_(self.f_r[-1].bias)

    @property
    def window(self) -> int:
        return self.config["window"]

    def velocity(self, jr: torch.Tensor, tau: float, static: torch.Tensor) -> torch.Tensor:
        """dJᴿ/dτ [F,4] at state ``jr`` [F,4]; ``static`` [F, 3d] = [φ(J₀ᴾ) | C_wᴾ | C_{w-1}ᴿ]."""
        t = torch.full((jr.shape[0], 1), float(tau), dtype=jr.dtype, device=jr.device)
        out = self.f_r(torch.cat([self.phi(jr), static, t], 1))
        if self.config["structure"] == "plain":
            return out[:, :4]
        return -nn.functional.softplus(out[:, :4]) * jr + out[:, 4:]

    def forward(self, jp: torch.Tensor, times: torch.Tensor | None = None) -> torch.Tensor:
        if jp.dim() != 4 or tuple(jp.shape[-2:]) != (2, 2):
            fail("jacobians", "a tensor [poses, faces, 2, 2]", str(tuple(jp.shape)))
        s, f = jp.shape[:2]
        dtype = self.f_r[0].weight.dtype
        flat = jp.reshape(s, f, 4).to(dtype)
        u = torch.linspace(0, 1, s, dtype=torch.float64) if times is None else times.double().cpu()
        w_len, n_sub = self.window, self.config["substeps"]
        phi0 = self.phi(flat[0])
        jr = flat.new_zeros(f, 4)
        out = [jr]
        c_corr = flat.new_zeros(f, phi0.shape[1])
        c_pose = None
        for i in range(s - 1):
            w = i // w_len
            if i % w_len == 0:                  # entering window w: encode its poses, and the last window's Jᴿ
                c_pose = self.encode_pose(flat[w * w_len:(w + 1) * w_len].transpose(0, 1))
                if w > 0:
                    c_corr = self.encode_corr(torch.stack(out[(w - 1) * w_len:w * w_len], 1))
            static = torch.cat([phi0, c_pose, c_corr], 1)
            t0, h = float(u[i]), float(u[i + 1] - u[i]) / n_sub
            for k in range(n_sub):
                tau = t0 + k * h
                if self.config["solver"] == "euler":
                    jr = jr + h * self.velocity(jr, tau, static)
                    continue
                k1 = self.velocity(jr, tau, static)
                k2 = self.velocity(jr + 0.5 * h * k1, tau + 0.5 * h, static)
                k3 = self.velocity(jr + 0.5 * h * k2, tau + 0.5 * h, static)
                k4 = self.velocity(jr + h * k3, tau + h, static)
                jr = jr + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
            out.append(jr)
        return torch.stack(out).reshape(s, f, 2, 2).to(jp.dtype)


def corrected_vertices(deformer, targets: torch.Tensor, corrector: TemporalJacobianCorrector | None,
                       times: torch.Tensor | None = None, pose_deformer=None):
    """``(V, V_pose, Jᴿ)`` for keypoint targets [S,K,2] (spec §2.3 "Composition").

    The pose Jacobians are those of FlexiClip's pose solve, ``Jᴾ = jac(solve(I, T))`` (§2.2.3), or of
    ``pose_deformer``'s poses (AniClipart's ARAP, §2.3 "Spatial Jacobians"); the pose-only animation is
    ``V_pose = solve(Jᴾ, T)`` and the corrected one ``V = solve(Jᴾ + Jᴿ, T)`` with ``deformer``'s Poisson
    system: with ``Jᴿ ≡ 0`` (an untrained corrector) the two are the same tensor values, bitwise.
    Without a corrector: ``(the pose solve, same, None)``.
    """
    from ..deform import face_jacobians

    v_rest = (pose_deformer or deformer).deform(targets)
    if corrector is None:
        return v_rest, v_rest, None
    jp = face_jacobians(deformer.mesh, v_rest)
    jr = corrector(jp, times)
    v_pose = deformer.deform(targets, jp)
    v = deformer.deform(targets, jp + jr)
    return v, v_pose, jr


def save_corrector(corrector: TemporalJacobianCorrector, path: str) -> str:
    """safetensors file with the weights and the constructor's settings (metadata ``config``)."""
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in corrector.state_dict().items()}
    save_file(state, path, metadata={"format": "flipbook-flexiclip-tjc", "config": json.dumps(corrector.config)})
    return path


def load_corrector(path: str) -> TemporalJacobianCorrector:
    """A corrector from :func:`save_corrector`'s file (safetensors: no pickle)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(path, "pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != "flipbook-flexiclip-tjc":
        fail("corrector", "a FlexiClip corrector file written by Flipbook (format flipbook-flexiclip-tjc)",
             f"format {meta.get('format')!r}")
    cfg = json.loads(meta["config"])
    cfg["hidden"] = tuple(cfg["hidden"])
    module = TemporalJacobianCorrector(**cfg)
    try:
        module.load_state_dict(load_file(path))
    except RuntimeError as exc:
        fail("corrector", "weights matching their stored settings", str(exc).splitlines()[0])
    return module
