"""Mesh deformation driven by keypoint targets: FlexiClip's Poisson solve and AniClipart's ARAP.

Spec: flexiclip.md §2.4 (operators, the FlexiClip system, back-ends) and §1.5 (two-step ARAP,
Igarashi et al. 2009). Everything is vectorised (no Python loop over faces or edges), every
matrix that does not change per frame is factorised once per mesh, and the solve is batched over
frames and differentiable wrt the keypoint targets and the per-face Jacobians.

Operators (rest mesh, float64): hat-function gradients ``∇φ`` per face corner; ``G`` (2F x V)
stacks d/dx over d/dy; ``M = diag(double area)`` as FlexiClip ([F] uses the double area, so that
λ=1 means the same as there); ``L = GᵀMG`` (= -2·cotmatrix, positive semi-definite).

Systems, solved for the displacement from the rest pose (so that rest targets and identity
Jacobians return the rest vertices exactly):
- "poisson_bilap" (FlexiClip, default): ``(LᵀL + λKᵀK) V = Lᵀ Gᵀ M vec(J) + λKᵀT``.
- "poisson" (NJF): ``(L + λKᵀK) V = Gᵀ M vec(J) + λKᵀT`` (harmonic: cusps at point handles).
- "arap": two-step ARAP (similarity step, then rotation-normalised edge step) with handle weight
  ``λ · 3000²`` in the normal equations (AniClipart's row weight 3000, so λ=1 reproduces it).
  ARAP takes no Jacobians.

A part of the mesh with too few keypoints (a separate blob) gets "virtual handles": one vertex (two
for ARAP) that follows the translation of the nearest keypoint, so every system is non-singular.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.csgraph import connected_components
from scipy.sparse.linalg import splu

from .errors import check_finite, check_range, describe, fail
from .mesh import Mesh

METHODS = ("poisson_bilap", "poisson", "arap")
SOLVERS = ("auto", "sparse", "dense")
# AniClipart's ARAP handle row weight (A:painter_clipart.py:140-146).
ARAP_WEIGHT = 3000.0


def _rest_and_faces(mesh_or_pair):
    if isinstance(mesh_or_pair, Mesh):
        return mesh_or_pair.vertices, mesh_or_pair.faces
    try:
        rest, faces = mesh_or_pair
    except (TypeError, ValueError):
        fail("mesh", "a Mesh or a (rest_vertices [V,2], faces [F,3]) pair", describe(mesh_or_pair))
    return torch.as_tensor(rest, dtype=torch.float64), torch.as_tensor(faces, dtype=torch.long)


def hat_gradients(rest: torch.Tensor, faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-face gradients of the three hat functions [F,3,2] and double areas [F] (float64).

    For a triangle (a, b, c) with ``2A = (b-a) x (c-a)``: ``∇φ_a = perp(c-b)/2A``,
    ``∇φ_b = perp(a-c)/2A``, ``∇φ_c = perp(b-a)/2A`` with ``perp(x, y) = (-y, x)`` (spec §2.4).
    """
    v = rest.to(torch.float64)[faces]                     # [F,3,2]
    e1, e2 = v[:, 1] - v[:, 0], v[:, 2] - v[:, 0]
    area2 = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    opposite = v[:, [2, 0, 1]] - v[:, [1, 2, 0]]          # c-b, a-c, b-a
    perp = torch.stack([-opposite[..., 1], opposite[..., 0]], -1)
    return perp / area2[:, None, None], area2.abs()


def face_jacobians(mesh_or_pair, vertices: torch.Tensor) -> torch.Tensor:
    """Per-face Jacobians of the map rest -> ``vertices``: [...,V,2] -> [...,F,2,2].

    ``J_f[d, e] = Σ_i V[f_i, d] ∇φ_{f,i}[e]`` (spec §2.4); the rest pose gives the identity.
    Returned in the dtype of ``vertices``; differentiable.
    """
    rest, faces = _rest_and_faces(mesh_or_pair)
    if isinstance(mesh_or_pair, Mesh):
        grads = mesh_or_pair.cached("hat_gradients", lambda: hat_gradients(rest, faces))[0]
        faces = mesh_or_pair.constant("faces")
    else:
        grads = hat_gradients(rest, faces)[0]
    if not isinstance(vertices, torch.Tensor) or vertices.dim() < 2 or \
            tuple(vertices.shape[-2:]) != (rest.shape[0], 2):
        fail("vertices", f"a tensor [..., {rest.shape[0]}, 2]", describe(vertices))
    dtype = vertices.dtype if vertices.is_floating_point() else torch.float64
    corners = vertices.to(dtype)[..., faces, :]           # [...,F,3,2]
    return torch.einsum("...fid,fie->...fde", corners, grads.to(dtype=dtype, device=vertices.device))


def _gradient_operator(mesh: Mesh) -> tuple[sp.csr_matrix, np.ndarray]:
    """G (2F x V, rows d/dx then d/dy) and the double areas [F]."""
    def build():
        grads, area2 = hat_gradients(mesh.vertices, mesh.faces)
        f = mesh.num_faces
        rows = np.concatenate([np.repeat(np.arange(f), 3), f + np.repeat(np.arange(f), 3)])
        cols = np.tile(mesh.faces.numpy().ravel(), 2)
        vals = np.concatenate([grads[..., 0].numpy().ravel(), grads[..., 1].numpy().ravel()])
        g = sp.csr_matrix((vals, (rows, cols)), shape=(2 * f, mesh.num_vertices))
        return g, area2.numpy()
    return mesh.cached("gradient_operator", build)


def cotan_laplacian(mesh: Mesh) -> sp.csr_matrix:
    """``L = GᵀMG`` with M the double areas: the positive cotangent Laplacian (= -2·cotmatrix)."""
    def build():
        g, area2 = _gradient_operator(mesh)
        m = sp.diags(np.concatenate([area2, area2]))
        return (g.T @ m @ g).tocsr()
    return mesh.cached("cotan_laplacian", build)


def mesh_edges(faces: np.ndarray):
    """Undirected edges of a triangle mesh: (i, j) with i < j, the opposite vertex and the face
    on each side (l, r, face_l, face_r; r = face_r = -1 on the boundary). Vectorised (a sort)."""
    a = faces.ravel()
    b = faces[:, [1, 2, 0]].ravel()
    c = faces[:, [2, 0, 1]].ravel()
    face = np.repeat(np.arange(len(faces)), 3)
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    order = np.lexsort((hi, lo))
    lo, hi, c, face = lo[order], hi[order], c[order], face[order]
    first = np.ones(len(lo), bool)
    first[1:] = (lo[1:] != lo[:-1]) | (hi[1:] != hi[:-1])
    start = np.nonzero(first)[0]
    second = np.minimum(start + 1, len(lo) - 1)
    paired = np.diff(np.append(start, len(lo))) > 1
    return (lo[start], hi[start], c[start], np.where(paired, c[second], -1),
            face[start], np.where(paired, face[second], -1))


def _virtual_handles(mesh: Mesh, need: int) -> tuple[np.ndarray, np.ndarray]:
    """Handle vertices and the keypoint each follows: the keypoints, plus, for every connected
    part with fewer than ``need`` distinct keypoint vertices, vertices that follow the translation
    of the nearest keypoint (the vertex nearest to it, then the farthest from that one)."""
    faces = mesh.faces.numpy()
    n = mesh.num_vertices
    rows = np.concatenate([faces[:, 0], faces[:, 1], faces[:, 2]])
    cols = np.concatenate([faces[:, 1], faces[:, 2], faces[:, 0]])
    graph = sp.coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    _, label = connected_components(graph, directed=False)
    kp_v = mesh.keypoint_idx.numpy()
    verts = mesh.vertices.numpy()
    kp_xy = verts[kp_v]
    hv, hk = list(kp_v), list(range(len(kp_v)))
    for comp in np.unique(label):
        members = np.nonzero(label == comp)[0]
        own = np.unique(kp_v[label[kp_v] == comp])
        missing = need - len(own)
        if missing <= 0:
            continue
        if len(own):
            anchor, k_near = int(own[0]), int(np.nonzero(kp_v == own[0])[0][0])
        else:
            d = np.linalg.norm(verts[members][:, None] - kp_xy[None], axis=-1)   # [m,K]
            row, k_near = np.unravel_index(int(d.argmin()), d.shape)
            anchor, k_near = int(members[row]), int(k_near)
            hv.append(anchor)
            hk.append(k_near)
            missing -= 1
        if missing > 0 and len(members) > 1:
            hv.append(int(members[np.linalg.norm(verts[members] - verts[anchor], axis=1).argmax()]))
            hk.append(k_near)
    return np.asarray(hv, np.int64), np.asarray(hk, np.int64)


class _SparseFactor:
    """Sparse LU (SuperLU, symmetric mode) of a symmetric positive-definite matrix."""

    def __init__(self, a: sp.spmatrix):
        self.lu = splu(sp.csc_matrix(a), permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0,
                       options={"SymmetricMode": True})

    def solve(self, rhs: torch.Tensor) -> torch.Tensor:
        # SuperLU wants column-major right-hand sides: a C-ordered [V, m] block is ~40x slower.
        rhs = np.asfortranarray(rhs.detach().cpu().numpy(), dtype=np.float64)
        return torch.from_numpy(self.lu.solve(rhs))


class _DenseFactor:
    """Dense float64 Cholesky (torch.linalg.cholesky once, cholesky_solve per call)."""

    def __init__(self, a: sp.spmatrix):
        self.chol = torch.linalg.cholesky(torch.from_numpy(np.asarray(a.todense())))

    def solve(self, rhs: torch.Tensor) -> torch.Tensor:
        return torch.cholesky_solve(rhs.detach().to(torch.float64), self.chol)


class _Apply(torch.autograd.Function):
    """y = op(x) for a constant linear map with its adjoint: a symmetric solve (adjoint = the
    same solve) or a sparse matrix product (adjoint = transposed product)."""

    @staticmethod
    def forward(ctx, forward, adjoint, x):
        ctx.adjoint = adjoint
        return forward(x)

    @staticmethod
    def backward(ctx, grad):
        return None, None, ctx.adjoint(grad.contiguous())


def _solve(factor, rhs: torch.Tensor) -> torch.Tensor:
    return _Apply.apply(factor.solve, factor.solve, rhs)


def _matmul(mat: sp.spmatrix, x: torch.Tensor) -> torch.Tensor:
    mat = sp.csr_matrix(mat)
    mat_t = sp.csr_matrix(mat.T)
    return _Apply.apply(lambda v: torch.from_numpy(mat @ v.detach().numpy()),
                        lambda g: torch.from_numpy(mat_t @ g.detach().numpy()), x)


# Up to this many unknowns "auto" uses the dense torch Cholesky: it runs on torch's own threads,
# while SuperLU's back-substitution goes through the multi-threaded OpenBLAS of scipy, which
# measured 20-40x slower than single-threaded on a busy 2-core machine (benchmarks/clipart.py).
_DENSE_MAX = 2000


def _factor(a: sp.spmatrix, solver: str):
    if solver == "dense" or (solver == "auto" and a.shape[0] <= _DENSE_MAX):
        return _DenseFactor(a)
    return _SparseFactor(a)


class MeshDeformer:
    """Deform a mesh so that its keypoint vertices follow targets, frames batched.

    Args:
        mesh: the rest mesh.
        method: "poisson_bilap" (FlexiClip, default), "poisson" or "arap" (see module doc).
        constraint_lambda: handle weight λ; 1.0 is FlexiClip's (soft handles, a few px off on
            large moves), 1e3 gives practically hard handles. For "arap" it scales AniClipart's
            weight (3000²).
        solver: "auto" (dense float64 Cholesky up to 2000 unknowns, sparse LU above), "sparse",
            "dense".

    The constant system is factorised once here (float64); :meth:`deform` only builds right-hand
    sides and back-substitutes.
    """

    def __init__(self, mesh: Mesh, method: str = "poisson_bilap", constraint_lambda: float = 1.0,
                 solver: str = "auto"):
        if not isinstance(mesh, Mesh):
            fail("mesh", "a FLIPBOOK_MESH (Mesh)", describe(mesh))
        if method not in METHODS:
            fail("method", " / ".join(METHODS), repr(method))
        if solver not in SOLVERS:
            fail("solver", " / ".join(SOLVERS), repr(solver))
        check_range("constraint_lambda", float(constraint_lambda), 1e-6, 1e9)
        self.mesh, self.method, self.constraint_lambda = mesh, method, float(constraint_lambda)
        # Built outside inference mode: a deformer made by a node also serves gradient code.
        with torch.inference_mode(False):
            self._build(solver)

    def _build(self, solver: str) -> None:
        mesh, method = self.mesh, self.method
        n = mesh.num_vertices
        self.rest = mesh.constant("vertices").to(torch.float64)
        self.rest_keypoints = self.rest[mesh.constant("keypoint_idx")]
        hv, hk = _virtual_handles(mesh, 2 if method == "arap" else 1)
        self.handle_vertex, self.handle_keypoint = torch.from_numpy(hv), torch.from_numpy(hk)
        weight = self.constraint_lambda * (ARAP_WEIGHT ** 2 if method == "arap" else 1.0)
        self.weight = weight
        ktk = sp.csr_matrix((np.ones(len(hv)), (hv, hv)), shape=(n, n))
        if method == "arap":
            self._setup_arap(ktk, solver)
            return
        lap = cotan_laplacian(mesh)
        g, area2 = _gradient_operator(mesh)
        gtm = (g.T @ sp.diags(np.concatenate([area2, area2]))).tocsr()
        if method == "poisson_bilap":
            self.system = (lap.T @ lap + weight * ktk).tocsc()
            self.jacobian_map = (lap.T @ gtm).tocsr()          # Lᵀ Gᵀ M
        else:
            self.system = (lap + weight * ktk).tocsc()
            self.jacobian_map = gtm                              # Gᵀ M
        self.factor = _factor(self.system, solver)

    # -- ARAP (Igarashi et al. 2009, two steps), vectorised over edges ------------------------
    def _setup_arap(self, ktk: sp.spmatrix, solver: str) -> None:
        faces = self.mesh.faces.numpy()
        rest = self.rest.numpy()
        n = self.mesh.num_vertices
        i, j, l, r, _, _ = mesh_edges(faces)
        nbr = np.stack([i, j, l, np.where(r >= 0, r, i)], 1)     # [E,4]; a missing r repeats i
        valid = np.stack([np.ones_like(i), np.ones_like(i), np.ones_like(i), r >= 0], 1).astype(float)
        # Similarity fit of the rest neighbourhood (centred at v_i for conditioning):
        # rows [x y 1 0; y -x 0 1] per neighbour, G_k = (AᵀA)⁻¹Aᵀ, rows (c, s, tx, ty).
        p = rest[nbr] - rest[i][:, None]                         # [E,4,2]
        a = np.zeros((len(i), 8, 4))
        a[:, 0::2, 0], a[:, 0::2, 1], a[:, 0::2, 2] = p[..., 0], p[..., 1], 1.0
        a[:, 1::2, 0], a[:, 1::2, 1], a[:, 1::2, 3] = p[..., 1], -p[..., 0], 1.0
        a *= np.repeat(valid, 2, axis=1)[..., None]
        gk = np.linalg.solve(np.einsum("eki,ekj->eij", a, a), a.transpose(0, 2, 1))   # [E,4,8]
        e = rest[j] - rest[i]                                     # rest edge vectors [E,2]
        ek = np.stack([np.stack([e[:, 0], e[:, 1]], 1), np.stack([e[:, 1], -e[:, 0]], 1)], 1)
        h = -np.einsum("eab,ebk->eak", ek, gk[:, :2])             # [E,2,8]: -E_k G_k
        h[:, 0, 0] -= 1.0                                         # - v_i  (x)
        h[:, 1, 1] -= 1.0                                         # - v_i  (y)
        h[:, 0, 2] += 1.0                                         # + v_j  (x)
        h[:, 1, 3] += 1.0                                         # + v_j  (y)
        cols = (2 * nbr[:, :, None] + np.arange(2)).reshape(-1, 8)  # unknown index 2v+d
        hth = np.einsum("eak,eal->ekl", h, h)
        a1 = sp.coo_matrix((hth.ravel(), (np.repeat(cols, 8, 1).ravel(), np.tile(cols, (1, 8)).ravel())),
                           shape=(2 * n, 2 * n)).tocsr()
        a1 = a1 + self.weight * sp.kron(ktk, sp.identity(2))
        inc = sp.csr_matrix((np.concatenate([-np.ones(len(i)), np.ones(len(i))]),
                             (np.tile(np.arange(len(i)), 2), np.concatenate([i, j]))), shape=(len(i), n))
        a2 = inc.T @ inc + self.weight * ktk
        self.edge_fit = torch.from_numpy(gk[:, :2].copy())        # [E,2,8] rows (c, s)
        self.edge_nbr = torch.from_numpy(nbr)
        self.edge_vec = torch.from_numpy(e)
        self.incidence_t = inc.T.tocsr()
        self.factor = _factor(a1.tocsc(), solver)
        self.factor2 = _factor(a2.tocsc(), solver)

    def _handle_rhs(self, d_targets: torch.Tensor) -> torch.Tensor:
        """λKᵀΔT for displacements [T,K,2] -> [V,T,2] (virtual handles included)."""
        t = d_targets[:, self.handle_keypoint].permute(1, 0, 2)   # [H,T,2]
        out = torch.zeros(self.mesh.num_vertices, *t.shape[1:], dtype=torch.float64)
        return out.index_add(0, self.handle_vertex, t * self.weight)

    def _deform_arap(self, d_targets: torch.Tensor) -> torch.Tensor:
        n_frames = d_targets.shape[0]
        n = self.mesh.num_vertices
        rhs = self._handle_rhs(d_targets)                         # [V,T,2]
        # Step 1 (similarity): unknowns interleaved (x0, y0, x1, ...).
        d1 = _solve(self.factor, rhs.permute(0, 2, 1).reshape(2 * n, n_frames))
        v1 = self.rest[None] + d1.reshape(n, 2, n_frames).permute(2, 0, 1)     # [T,V,2]
        # Step 2: per-edge rotation from the fitted similarity, normalised; edge targets.
        local = v1[:, self.edge_nbr].reshape(n_frames, -1, 8)     # [T,E,8]
        cs = torch.einsum("ekn,ten->tek", self.edge_fit, local)   # [T,E,2] = (c, s)
        cs = cs / cs.norm(dim=-1, keepdim=True).clamp(min=1e-12)
        c, s = cs[..., 0], cs[..., 1]
        ex, ey = self.edge_vec[:, 0], self.edge_vec[:, 1]
        # T_k e_k - e_k with T_k = [[c, s], [-s, c]], written so that c=1, s=0 gives exact zeros.
        de = torch.stack([(c - 1) * ex + s * ey, -s * ex + (c - 1) * ey], -1)  # [T,E,2]
        rhs2 = _matmul(self.incidence_t, de.permute(1, 0, 2).reshape(-1, 2 * n_frames))
        rhs2 = rhs2 + rhs.reshape(n, 2 * n_frames)
        d2 = _solve(self.factor2, rhs2)
        return self.rest[None] + d2.reshape(n, n_frames, 2).permute(1, 0, 2)

    def deform(self, targets: torch.Tensor, jacobians: torch.Tensor | None = None) -> torch.Tensor:
        """Vertices [T,V,2] for keypoint targets [T,K,2] (or [K,2]) and optional per-face
        Jacobians [T,F,2,2] (default identity = rest pose; not for "arap").

        Computed in float64; returned in the dtype of ``targets`` (float32 stays float32).
        Differentiable wrt targets and jacobians; fine under torch.inference_mode().
        """
        mesh = self.mesh
        if not isinstance(targets, torch.Tensor):
            fail("targets", "a tensor [frames, keypoints, 2]", describe(targets))
        if targets.dim() == 2:
            targets = targets[None]
        k = int(mesh.keypoint_idx.shape[0])
        if targets.dim() != 3 or tuple(targets.shape[1:]) != (k, 2) or targets.shape[0] == 0:
            fail("targets", f"a tensor [frames, {k}, 2]", describe(targets))
        check_finite("targets", targets)
        out_dtype = targets.dtype if targets.is_floating_point() else torch.float64
        device = targets.device
        d_targets = targets.cpu().to(torch.float64) - self.rest_keypoints
        n_frames = d_targets.shape[0]
        if self.method == "arap":
            if jacobians is not None:
                fail("jacobians", "None for method 'arap' (ARAP takes keypoints only; use a "
                     "Poisson method to apply Jacobians)", describe(jacobians))
            return self._deform_arap(d_targets).to(device=device, dtype=out_dtype)
        n = mesh.num_vertices
        rhs = self._handle_rhs(d_targets).reshape(n, 2 * n_frames)
        if jacobians is not None:
            if not isinstance(jacobians, torch.Tensor) or \
                    tuple(jacobians.shape) != (n_frames, mesh.num_faces, 2, 2):
                fail("jacobians", f"a tensor [{n_frames}, {mesh.num_faces}, 2, 2]",
                     describe(jacobians))
            check_finite("jacobians", jacobians)
            d_jac = jacobians.cpu().to(torch.float64) - torch.eye(2, dtype=torch.float64)
            # vec(J): rows e*F + f (d/dx block, then d/dy), columns t*2 + d.
            vec = d_jac.permute(3, 1, 0, 2).reshape(2 * mesh.num_faces, 2 * n_frames)
            rhs = rhs + _matmul(self.jacobian_map, vec)
        disp = _solve(self.factor, rhs).reshape(n, n_frames, 2).permute(1, 0, 2)
        return (self.rest[None] + disp).to(device=device, dtype=out_dtype)
