"""Type-I tessellation of [0,1]², its continuity constraints, the null-space basis and the prior.

Spec cpab.md §1.1-1.2 and §1.5 (libcpab's construction, re-derived; no code taken).

Each of the ``nx × ny`` squares is split through its centre into 4 triangles, ordered
top (c,ul,ur), right (c,ur,lr), bottom (c,lr,ll), left (c,ll,ul); cell index = 4(col + row·nx) + t.
A cell carries an affine velocity ``v(x) = A_c [x, y, 1]ᵀ`` with ``A_c ∈ R^{2×3}`` stored row-major,
so ``vec(A)`` has ``D = 6·nC`` entries. The continuous piecewise-affine fields are the null space of
the constraint matrix ``L``; ``B = null(L)`` is an orthonormal ``D × d`` basis and ``vec(A) = B θ``.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import numpy as np
import torch

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
        fail("cells", "at most 400 squares (20 x 20); the basis is a dense SVD", f"{nx} x {ny}")
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
    nx, ny = check_tess(nx, ny)
    verts = _triangle_vertices(nx, ny)
    nc = len(verts)
    scale = np.array([2.0 * nx, 2.0 * ny])
    rows: list[np.ndarray] = []

    def agree(ci: int, cj: int, v) -> None:
        """A_ci [v,1] = A_cj [v,1], both output dims."""
        h = np.array([v[0] / scale[0], v[1] / scale[1], 1.0])
        for k in range(2):
            r = np.zeros(6 * nc)
            r[6 * ci + 3 * k:6 * ci + 3 * k + 3] = h
            r[6 * cj + 3 * k:6 * cj + 3 * k + 3] = -h
            rows.append(r)

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
                r = np.zeros(6 * nc)
                r[6 * c + 3 * k:6 * c + 3 * k + 3] = [v[0] / scale[0], v[1] / scale[1], 1.0]
                rows.append(r)
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
            r = np.zeros(6 * nc)
            r[6 * c + 0] = 1.0
            r[6 * c + 4] = 1.0
            rows.append(r)
    return np.stack(rows) if rows else np.zeros((0, 6 * nc))


def null_space(lmat: np.ndarray) -> np.ndarray:
    """Orthonormal basis [D, d] of {a : L a = 0}: eigenvectors of LᵀL with eigenvalue below
    (1e-6)² of the largest (libcpab takes singular values <= 1e-6; eigh is ~4x faster than SVD)."""
    dim = lmat.shape[1]
    if lmat.shape[0] == 0:
        return np.eye(dim)
    w, v = np.linalg.eigh(lmat.T @ lmat)
    null = w <= (1e-6 ** 2) * max(1.0, float(w.max()))
    return np.ascontiguousarray(v[:, null])


def _cache_dir() -> str:
    return os.environ.get("FLIPBOOK_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "comfyui-flipbook")


def _cached_basis(nx: int, ny: int, zb: bool, vp: bool) -> torch.Tensor:
    """The basis, cached on disk: another LAPACK may return a rotated (equally valid) null-space
    basis, and θ is only meaningful with the basis it was fitted in, so keep one per machine."""
    path = os.path.join(_cache_dir(), f"cpab_basis_v1_{nx}x{ny}_zb{int(zb)}_vp{int(vp)}.npy")
    try:
        b = np.load(path)
        if b.shape[0] == 24 * nx * ny:
            return torch.from_numpy(b)
    except Exception:  # absent or unreadable: rebuild
        pass
    b = null_space(constraint_matrix(nx, ny, zb, vp))
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp.npy"
        np.save(tmp, b)
        os.replace(tmp, path)
    except OSError:  # read-only home: memory cache only
        pass
    return torch.from_numpy(b)


@functools.lru_cache(maxsize=16)
def tessellation(nx: int, ny: int, zero_boundary: bool = True, volume_preserving: bool = False) -> Tessellation:
    """The (cached) CPAB space for a ``nx × ny`` type-I tessellation."""
    nx, ny = check_tess(nx, ny)
    basis = _cached_basis(nx, ny, bool(zero_boundary), bool(volume_preserving))
    tri = torch.tensor(_triangle_vertices(nx, ny), dtype=torch.float64)
    centroids = tri.mean(1) / torch.tensor([2.0 * nx, 2.0 * ny], dtype=torch.float64)
    return Tessellation(nx, ny, bool(zero_boundary), bool(volume_preserving), basis, centroids)
