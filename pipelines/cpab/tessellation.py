"""Type-I tessellation of [0,1]², its continuity constraints, the null-space basis and the prior.

Spec cpab.md §1.1-1.2 and §1.5 (libcpab's construction, re-derived; no code taken).

Each of the ``nx × ny`` squares is split through its centre into 4 triangles, ordered
top (c,ul,ur), right (c,ur,lr), bottom (c,lr,ll), left (c,ll,ul); cell index = 4(col + row·nx) + t.
A cell carries an affine velocity ``v(x) = A_c [x, y, 1]ᵀ`` with ``A_c ∈ R^{2×3}`` stored row-major,
so ``vec(A)`` has ``D = 6·nC`` entries. The continuous piecewise-affine fields are the null space of
the constraint matrix ``L``; ``B = null(L)`` is an orthonormal ``D × d`` basis and ``vec(A) = B θ``.
B is canonical (:func:`null_space`): every machine and library builds the same one, so θ is portable
(libcpab's SVD basis, and ours before, was only defined up to a rotation).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import torch
from scipy import sparse

from ..errors import fail

# vertices of triangle t as (dx, dy) in half-cell units from the square's upper-left corner
_TRIANGLES = (
    ((1, 1), (0, 0), (2, 0)),   # 0 top:    c, ul, ur
    ((1, 1), (2, 0), (2, 2)),   # 1 right:  c, ur, lr
    ((1, 1), (2, 2), (0, 2)),   # 2 bottom: c, lr, ll
    ((1, 1), (0, 2), (0, 0)),   # 3 left:   c, ll, ul
)


def check_tess(nx: int, ny: int) -> tuple[int, int]:
    if int(nx) != nx or int(ny) != ny or nx < 1 or ny < 1:
        fail("cells", "at least 1 cell along x and along y", f"{nx} x {ny}")
    if nx * ny > 400:
        fail("cells", "at most 400 squares (20 x 20)", f"{nx} x {ny}")
    return int(nx), int(ny)


@dataclass(frozen=True, eq=False)
class Tessellation:
    """The geometry and the basis of one CPAB space (cached per (nx, ny, flags))."""

    nx: int
    ny: int
    zero_boundary: bool
    volume_preserving: bool
    basis: torch.Tensor          # [D, d] float64, orthonormal columns
    centroids: torch.Tensor      # [nC, 2] float64, in [0,1]² units

    @property
    def num_cells(self) -> int:
        return 4 * self.nx * self.ny

    @property
    def dim(self) -> int:
        return int(self.basis.shape[1])

    def triangles(self) -> torch.Tensor:
        """[nC, 3, 2] vertices (x, y) in [0,1]² units."""
        return torch.tensor(_triangle_vertices(self.nx, self.ny), dtype=torch.float64) / torch.tensor(
            [2.0 * self.nx, 2.0 * self.ny], dtype=torch.float64)

    def constraints(self) -> torch.Tensor:
        return torch.from_numpy(constraint_matrix(self.nx, self.ny, self.zero_boundary, self.volume_preserving))

    def prior_covariance_cells(self, length_scale: float = 0.1) -> torch.Tensor:
        """[nC, nC]: the squared-exponential kernel between triangle centroids (libcpab's Σ_A is
        this kernel ⊗ I_6: the same entry of two cells correlates, different entries do not)."""
        d2 = torch.cdist(self.centroids, self.centroids) ** 2
        return torch.exp(-d2 / (2.0 * length_scale ** 2))

    def prior_covariance(self, length_scale: float = 0.1, sigma: float = 1.0) -> torch.Tensor:
        """Σ_θ = Bᵀ Σ_A B, [d, d] float64 (spec §1.5)."""
        kc = self.prior_covariance_cells(length_scale) * sigma ** 2
        b = self.basis.reshape(self.num_cells, 6, self.dim)          # [c, e, d]
        # Σ_θ[p,q] = Σ_{c,c',e} B[c,e,p] K[c,c'] B[c',e,q], contracted in the cheap order
        kb = (kc @ b.reshape(self.num_cells, -1)).reshape(-1, self.dim)
        return self.basis.T @ kb

    def prior_precision(self, length_scale: float = 0.1, sigma: float = 1.0) -> torch.Tensor:
        """(Σ_θ + 1e-4 I)⁻¹, [d, d] float64; cached."""
        return _precision(self, float(length_scale), float(sigma))

    def sample_theta(self, n: int, length_scale: float = 0.1, sigma: float = 1.0,
                     generator: torch.Generator | None = None) -> torch.Tensor:
        """θ ~ N(0, Σ_θ), [n, d] float64. Drawn as vec A ~ N(0, Σ_A) then θ = Bᵀ vec A, so the
        field B θ (the projection of A onto CPA fields) does not depend on the basis' rotation:
        a seed gives the same deformation on every machine."""
        kc = self.prior_covariance_cells(length_scale) * sigma ** 2
        chol = torch.linalg.cholesky(kc + 1e-8 * torch.eye(len(kc), dtype=kc.dtype))
        z = torch.randn(n, self.num_cells, 6, generator=generator, dtype=torch.float64)
        a = torch.einsum("cf,nfe->nce", chol, z).reshape(n, -1)
        return a @ self.basis


@functools.lru_cache(maxsize=32)
def _precision(tess: Tessellation, length_scale: float, sigma: float) -> torch.Tensor:
    with torch.inference_mode(False):     # cached: must not be an inference tensor (a node made it first)
        cov = tess.prior_covariance(length_scale, sigma)
        return torch.linalg.inv(cov + 1e-4 * torch.eye(tess.dim, dtype=cov.dtype))


def _triangle_vertices(nx: int, ny: int) -> list:
    """Vertices of every cell in integer half-cell coordinates (exact, hashable)."""
    out = []
    for i in range(ny):
        for j in range(nx):
            for tri in _TRIANGLES:
                out.append([(2 * j + dx, 2 * i + dy) for dx, dy in tri])
    return out


def constraint_matrix(nx: int, ny: int, zero_boundary: bool, volume_preserving: bool) -> np.ndarray:
    """L [rows, 6·nC]: L vec(A) = 0 exactly for continuous piecewise-affine fields (§1.2)."""
    return _constraints_sparse(nx, ny, zero_boundary, volume_preserving).toarray()


def _constraints_sparse(nx: int, ny: int, zero_boundary: bool, volume_preserving: bool) -> sparse.csr_matrix:
    nx, ny = check_tess(nx, ny)
    verts = _triangle_vertices(nx, ny)
    nc = len(verts)
    scale = np.array([2.0 * nx, 2.0 * ny])
    rows: list[tuple[list, list]] = []          # (column indices, values) per row

    def affine_row(c: int, k: int, v, sign: float = 1.0) -> tuple[list, list]:
        return list(range(6 * c + 3 * k, 6 * c + 3 * k + 3)), [sign * v[0] / scale[0], sign * v[1] / scale[1], sign]

    def agree(ci: int, cj: int, v) -> None:
        """A_ci [v,1] = A_cj [v,1], both output dims."""
        for k in range(2):
            (a, va), (b, vb) = affine_row(ci, k, v), affine_row(cj, k, v, -1.0)
            rows.append((a + b, va + vb))

    edges: dict = {}
    for c, tri in enumerate(verts):
        for a in range(3):
            e = tuple(sorted((tri[a], tri[(a + 1) % 3])))
            edges.setdefault(e, []).append(c)
    for e, cells in edges.items():
        if len(cells) == 2:                         # shared edge: agree at both its vertices
            for v in e:
                agree(cells[0], cells[1], v)

    boundary = [(e, cells[0]) for e, cells in edges.items() if len(cells) == 1]
    if zero_boundary:
        # the normal velocity vanishes on the border: v_x = 0 on x ∈ {0,1}, v_y = 0 on y ∈ {0,1}
        for e, c in boundary:
            k = 0 if e[0][0] == e[1][0] else 1      # vertical edge -> x normal
            for v in e:
                rows.append(affine_row(c, k, v))
    else:
        # "valid outside": neighbouring border triangles agree on the outward normal line through
        # their shared corner, so the field extended outside the domain stays continuous
        by_corner: dict = {}
        for e, c in boundary:
            for v in e:
                by_corner.setdefault(v, []).append((e, c))
        for v, lst in by_corner.items():
            if len(lst) != 2:
                continue
            (e1, c1), (e2, c2) = lst
            vertical1, vertical2 = e1[0][0] == e1[1][0], e2[0][0] == e2[1][0]
            if vertical1 != vertical2:               # a corner of the domain: two different sides
                continue
            if vertical1:
                out = (-20, 0) if v[0] == 0 else (20, 0)
            else:
                out = (0, -20) if v[1] == 0 else (0, 20)
            aux = (v[0] + out[0] * nx, v[1] + out[1] * ny)   # 10 units outside, in half-cells
            agree(c1, c2, v)
            agree(c1, c2, aux)
    if volume_preserving:
        for c in range(nc):                          # trace(A_c[:, :2]) = 0
            rows.append(([6 * c, 6 * c + 4], [1.0, 1.0]))
    indptr = np.cumsum([0] + [len(r[0]) for r in rows])
    cols = np.array([i for r in rows for i in r[0]], dtype=np.int64)
    vals = np.array([x for r in rows for x in r[1]], dtype=np.float64)
    return sparse.csr_matrix((vals, cols, indptr), shape=(len(rows), 6 * nc))


def hat_fields(nx: int, ny: int) -> sparse.csr_matrix:
    """H [6·nC, 2V]: column 2i+k is vec A of the continuous piecewise-affine field whose k-th
    component is 1 at mesh vertex i and 0 at every other vertex (the P1 "hat" function).
    Vertices (square corners and centres) are ordered by (y, x). The columns span exactly the
    fields that satisfy the continuity rows of L, with exact combinatorial (LAPACK-free) structure."""
    nx, ny = check_tess(nx, ny)
    verts = _triangle_vertices(nx, ny)
    order = sorted({v for tri in verts for v in tri}, key=lambda v: (v[1], v[0]))
    ids = {v: i for i, v in enumerate(order)}
    tri = np.array(verts, dtype=np.float64) / np.array([2.0 * nx, 2.0 * ny])
    m = np.concatenate([tri, np.ones((len(verts), 3, 1))], 2)     # [c, vertex i, (x, y, 1)]
    minv = np.linalg.inv(m)                                        # [c, (x, y, 1), i]: f(p_i)=δ
    c, k, e, i = np.meshgrid(np.arange(len(verts)), np.arange(2), np.arange(3), np.arange(3), indexing="ij")
    vid = np.array([[ids[v] for v in t] for t in verts])[c, i]
    return sparse.csr_matrix((minv[c, e, i].ravel(), ((6 * c + 3 * k + e).ravel(), (2 * vid + k).ravel())),
                             shape=(6 * len(verts), 2 * len(order)))


def _rref(a: np.ndarray, tol: float) -> tuple[np.ndarray, list[int]]:
    """Reduced row echelon form (partial pivoting; unique whatever the row order or scaling)."""
    a = a.copy()
    piv: list[int] = []
    for j in range(a.shape[1]):
        r = len(piv)
        if r == a.shape[0]:
            break
        p = r + int(np.argmax(np.abs(a[r:, j])))
        if abs(a[p, j]) <= tol:
            a[r:, j] = 0.0
            continue
        a[[r, p]] = a[[p, r]]
        a[r] /= a[r, j]
        f = a[:, j].copy()
        f[r] = 0.0
        a -= f[:, None] * a[r][None, :]
        piv.append(j)
    return a[:len(piv)], piv


def null_space(lmat, span=None) -> np.ndarray:
    """The canonical orthonormal basis [D, d] of {a : L a = 0, a ∈ span(span)}.

    It is a function of the null space alone, not of how L (row order, row scaling, redundant
    rows) or a linear-algebra library presents it: with ``span`` = H (columns spanning a superspace
    of the null space; default I), the constraints on the H-coordinates are brought to reduced row
    echelon form (unique), whose free columns give the unique null vectors N with an identity
    block; B is H N orthonormalised by Gram-Schmidt in column order with positive diagonal
    (CholeskyQR2, unique). No SVD/eigenvector choice enters, so every machine gets the same B.
    """
    lmat = sparse.csr_matrix(lmat)
    h = sparse.identity(lmat.shape[1], format="csr") if span is None else sparse.csr_matrix(span)
    rownorm = np.asarray(abs(lmat).max(1).todense()).ravel()
    lmat = sparse.diags(1.0 / np.where(rownorm > 0, rownorm, 1.0)) @ lmat     # rows of max 1
    c = np.asarray((lmat @ h).todense())
    c = c[np.abs(c).max(1) > 1e-10] if c.size else c       # rows satisfied by every column of H
    red, piv = _rref(c, 1e-9)
    free = np.setdiff1d(np.arange(h.shape[1]), piv)
    n = np.zeros((h.shape[1], len(free)))
    n[free, np.arange(len(free))] = 1.0
    n[piv] = -red[:, free]
    gram_h = (h.T @ h).toarray()
    for _ in range(2):                                     # CholeskyQR2 in H-coordinates
        r = np.linalg.cholesky(n.T @ gram_h @ n).T
        n = scipy.linalg.solve_triangular(r, n.T, trans="T").T
    return np.ascontiguousarray(h @ (n @ _dct_matrix(n.shape[1])))


def _dct_matrix(d: int) -> np.ndarray:
    """The orthonormal DCT-II matrix [d, d] (closed form). Mixing the local Gram-Schmidt vectors
    with it gives every basis vector a global support, as libcpab's SVD basis has: θ then acts on
    the whole picture coordinate by coordinate, which Adam's per-coordinate steps (CPABMM's fit)
    depend on. Exactly orthogonal in exact arithmetic, so B stays orthonormal and canonical."""
    if d == 0:
        return np.zeros((0, 0))
    i = np.arange(d)
    q = np.cos(np.pi * (i[:, None] + 0.5) * i[None, :] / d) * np.sqrt(2.0 / d)
    q[:, 0] = np.sqrt(1.0 / d)
    return q


@functools.lru_cache(maxsize=16)
def tessellation(nx: int, ny: int, zero_boundary: bool = True, volume_preserving: bool = False) -> Tessellation:
    """The (cached) CPAB space for a ``nx × ny`` type-I tessellation."""
    nx, ny = check_tess(nx, ny)
    # cached for the process: built outside inference mode, so that a space first made by a node
    # (ComfyUI runs nodes under torch.inference_mode()) still serves fits that backpropagate
    with torch.inference_mode(False):
        basis = torch.from_numpy(null_space(_constraints_sparse(nx, ny, zero_boundary, volume_preserving),
                                            hat_fields(nx, ny)))
        tri = torch.tensor(_triangle_vertices(nx, ny), dtype=torch.float64)
        centroids = tri.mean(1) / torch.tensor([2.0 * nx, 2.0 * ny], dtype=torch.float64)
    return Tessellation(nx, ny, bool(zero_boundary), bool(volume_preserving), basis, centroids)
