"""The CPAB basis is canonical: the same B (so the same meaning of θ) on every machine (spec cpab.md §1.2)."""
import numpy as np
import pytest
import torch

from comfyui_flipbook.pipelines import cpab
from comfyui_flipbook.pipelines.cpab.tessellation import constraint_matrix, hat_fields, null_space
from comfyui_flipbook.pipelines.cpab.transform import cell_index, theta_to_affine

CASES = [(6, 6, False, False), (4, 3, True, False), (3, 3, False, True)]


def _other_presentations(lmat, h, seed=0):
    """Constraint systems and spans with the same null space, as another library might hand them over."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(lmat))
    scaled = lmat[perm] * rng.uniform(0.1, 10.0, (len(lmat), 1))           # rows permuted and scaled
    mixed = rng.standard_normal((len(lmat), len(lmat))) @ lmat             # another basis of the row space
    doubled = np.concatenate([lmat, 3.0 * lmat[::-1]])                      # redundant rows
    col_scaled = h @ np.diag(rng.uniform(0.5, 2.0, h.shape[1]))             # positively rescaled span
    return [(scaled, h), (mixed, h), (doubled, h), (lmat, col_scaled)]


@pytest.mark.parametrize("nx,ny,zb,vp", CASES)
def test_basis_does_not_depend_on_how_the_constraints_are_presented(nx, ny, zb, vp):
    b = cpab.tessellation(nx, ny, zb, vp).basis.numpy()
    lmat, h = constraint_matrix(nx, ny, zb, vp), hat_fields(nx, ny).toarray()
    for other_l, other_h in _other_presentations(lmat, h):
        assert np.abs(null_space(other_l, other_h) - b).max() < 1e-12


def test_the_former_eigenvector_basis_was_not_canonical():
    """What an SVD basis (libcpab's, and ours before) did with the same presentations: an equally valid, rotated basis."""
    lmat = constraint_matrix(4, 3, True, False)
    h = hat_fields(4, 3).toarray()
    shown = [lmat] + [m for m, _ in _other_presentations(lmat, h)[::2]]   # as given, scaled, doubled
    old = []
    for m in shown:                       # libcpab's basis: right singular vectors of L for σ = 0
        old.append(np.linalg.svd(m)[2][-46:].T)   # d = 46 for 4 x 3 cells
        assert np.abs(lmat @ old[-1]).max() < 1e-6
    assert min(np.abs(o - old[0]).max() for o in old[1:]) > 1e-2
    new = [null_space(m, hh) for m, hh in _other_presentations(lmat, h)]
    assert max(np.abs(n - new[0]).max() for n in new[1:]) < 1e-12


def test_basis_does_not_depend_on_torch_threads_and_writes_no_files(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("FLIPBOOK_CACHE_DIR", str(tmp_path / "cache"))
    ref = cpab.tessellation(5, 4, False, False).basis.clone()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        cpab.tessellation.cache_clear()
        assert (cpab.tessellation(5, 4, False, False).basis - ref).abs().max() < 1e-12
    finally:
        torch.set_num_threads(threads)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("zb,vp,expected", [(False, False, {8: 234, 10: 370}), (True, False, {8: 254, 10: 398}),
                                            (False, True, {8: 47, 10: 75})])
def test_large_tessellations_have_the_spec_dimension_and_an_orthonormal_basis(zb, vp, expected):
    for n, d in expected.items():
        tess = cpab.tessellation(n, n, zb, vp)
        b = tess.basis
        assert b.shape == (24 * n * n, d)
        assert (b.T @ b - torch.eye(d, dtype=b.dtype)).abs().max() < 1e-10
        assert (torch.from_numpy(constraint_matrix(n, n, zb, vp)) @ b).abs().max() < 1e-6


@pytest.mark.parametrize("cells,zb,expected", [
    ((6, 6), False, (-0.010523338239838788, 0.04634263631962231)),    # CPABMM's global space
    ((4, 4), True, (0.0024881193196562013, -0.04057572315365501)),    # the warper's default flags
])
def test_a_fixed_theta_gives_the_same_velocity_on_every_machine(cells, zb, expected):
    tess = cpab.tessellation(*cells, zb, False)
    # a closed-form θ (no RNG whose stream could change between versions)
    theta = torch.sin(1.7 * torch.arange(tess.dim, dtype=torch.float64) + 0.3)[None]
    p = torch.tensor([0.3, 0.6], dtype=torch.float64)
    a = theta_to_affine(tess, theta)[0, cell_index(p[:1], p[1:], *cells)[0]]
    v = a @ torch.cat([p, p.new_ones(1)])
    assert (v - torch.tensor(expected, dtype=v.dtype)).abs().max() < 1e-12
