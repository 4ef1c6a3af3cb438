"""CPAB core and nodes: properties of the transform, the fit and the warp (spec cpab.md §1, §3.2)."""
import math

import pytest
import torch

from comfyui_flipbook.nodes import cpab as cpab_nodes
from comfyui_flipbook.pipelines import cpab
from comfyui_flipbook.pipelines.cpab.tessellation import constraint_matrix
from comfyui_flipbook.pipelines.cpab.transform import cell_index, transform_jacobian
from comfyui_flipbook.pipelines.errors import FlipbookInputError
from comfyui_flipbook.pipelines.coords import pixel_to_unit
from comfyui_flipbook.pipelines.skeleton import KeypointTrack, Skeleton


def _moves(seed, k=8, size=512, max_move=40.0, margin=60):
    g = torch.Generator().manual_seed(seed)
    src = torch.rand(k, 2, generator=g) * (size - 2 * margin) + margin
    ang = torch.rand(k, generator=g) * 2 * math.pi
    mag = torch.rand(k, generator=g) * max_move
    return src, src + torch.stack([ang.cos(), ang.sin()], -1) * mag[:, None]


def _blobs(size=128):
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    img = torch.stack([torch.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * s * s))
                       for cx, cy, s in [(40, 50, 14), (90, 70, 18), (60, 100, 10)]])
    return img[None]


# --- tessellation and basis -------------------------------------------------------------------

@pytest.mark.parametrize("zb,vp,expected", [
    (False, False, {2: 20, 3: 34, 4: 58, 6: 130}),     # CPABMM's tables (C:dense_motion.py:10-29)
    (True, False, {2: 14, 3: 34, 4: 62, 6: 142}),
    (False, True, {2: 10, 3: 11, 4: 15, 6: 27}),
    (True, True, {n: n * n - 1 for n in (2, 3, 4, 6)}),
])
def test_basis_dimension_matches_libcpab(zb, vp, expected):
    for n, d in expected.items():
        assert cpab.tessellation(n, n, zb, vp).dim == d


@pytest.mark.parametrize("zb,vp", [(False, False), (True, False), (True, True)])
def test_basis_is_orthonormal_and_satisfies_constraints(zb, vp):
    tess = cpab.tessellation(4, 3, zb, vp)
    b = tess.basis
    assert (b.T @ b - torch.eye(tess.dim, dtype=b.dtype)).abs().max() < 1e-10
    lmat = torch.from_numpy(constraint_matrix(4, 3, zb, vp))
    assert (lmat @ b).abs().max() < 1e-6


def test_random_fields_are_continuous_across_every_shared_edge():
    """Independent of the constraint rows: evaluate both cells' affine fields along each shared edge."""
    tess = cpab.tessellation(3, 2, True, False)
    a = cpab.theta_to_affine(tess, torch.randn(1, tess.dim, dtype=torch.float64))[0]   # [nC, 2, 3]
    tri = tess.triangles()
    edges = {}
    for c in range(tess.num_cells):
        for i in range(3):
            e = tuple(sorted((tuple(tri[c, i].tolist()), tuple(tri[c, (i + 1) % 3].tolist()))))
            edges.setdefault(e, []).append(c)
    shared = [(e, cs) for e, cs in edges.items() if len(cs) == 2]
    assert len(shared) == 4 * 3 * 2 + 2 * 2 + 3 * 1           # inside squares + between squares
    for (p, q), (c1, c2) in shared:
        for s in (0.0, 0.3, 1.0):
            x = torch.tensor([p[0] + s * (q[0] - p[0]), p[1] + s * (q[1] - p[1]), 1.0], dtype=torch.float64)
            assert torch.allclose(a[c1] @ x, a[c2] @ x, atol=1e-9)
    # and zero_boundary: no normal velocity anywhere on the border
    for (p, q), cs in edges.items():
        if len(cs) == 1:
            axis = 0 if p[0] == q[0] else 1
            mid = torch.tensor([(p[0] + q[0]) / 2, (p[1] + q[1]) / 2, 1.0], dtype=torch.float64)
            assert abs(float((a[cs[0]] @ mid)[axis])) < 1e-9


def test_cell_lookup_finds_each_triangle_and_the_outside_rules():
    tess = cpab.tessellation(3, 2, True, False)
    c = tess.centroids
    assert torch.equal(cell_index(c[:, 0], c[:, 1], 3, 2), torch.arange(tess.num_cells))
    # outside: left of the domain -> left triangle (3), above -> top (0), below -> bottom (2)
    x = torch.tensor([-0.5, 0.5, 0.5, 1.5, -0.01], dtype=torch.float64)
    y = torch.tensor([0.3, -0.5, 1.7, 0.3, -1.0], dtype=torch.float64)
    idx = cell_index(x, y, 3, 2)
    assert idx.tolist() == [3, 4 * 1 + 0, 4 * (1 + 3) + 2, 4 * 2 + 1, 0]


# --- transform ---------------------------------------------------------------------------------

def test_gradients_through_integration_match_finite_differences():
    tess = cpab.tessellation(4, 4, True, False)
    g = torch.Generator().manual_seed(0)
    theta = (torch.randn(2, tess.dim, generator=g, dtype=torch.float64) * 0.5).requires_grad_(True)
    pts = (torch.rand(2, 6, 2, generator=g, dtype=torch.float64) * 0.9 + 0.05).requires_grad_(True)
    w = torch.randn(2, 6, 2, generator=g, dtype=torch.float64)

    def f(th, p):
        return (cpab.transform(tess, p, th, nsteps=20) * w).sum()

    gth, gp = torch.autograd.grad(f(theta, pts), (theta, pts))
    theta, pts = theta.detach(), pts.detach()
    eps = 1e-6
    for i in (0, 7, tess.dim - 1):
        d = torch.zeros_like(theta)
        d[1, i] = eps
        fd = (f(theta + d, pts) - f(theta - d, pts)) / (2 * eps)
        assert abs(float(fd - gth[1, i])) < 1e-6 * max(1.0, abs(float(fd)))
    d = torch.zeros_like(pts)
    d[0, 2, 1] = eps
    fd = (f(theta, pts + d) - f(theta, pts - d)) / (2 * eps)
    assert abs(float(fd - gp[0, 2, 1])) < 1e-6
    # the hand-written reverse pass (used by the fits) agrees with autograd
    out, jac = transform_jacobian(tess, pts, theta, nsteps=20)
    assert torch.allclose(torch.einsum("npc,npcd->nd", w, jac), gth, atol=1e-10)
    _, gvjp = transform_jacobian(tess, pts, theta, nsteps=20, cotangent=w)
    assert torch.allclose(gvjp, gth, atol=1e-10)


def test_inverse_is_minus_theta_and_identity_is_zero():
    tess = cpab.tessellation(6, 6, False, False)
    g = torch.Generator().manual_seed(3)
    theta = tess.sample_theta(1, 0.1, 1.0, generator=g)
    pts = torch.rand(200, 2, generator=g, dtype=torch.float64)
    fwd = cpab.transform(tess, pts, theta, nsteps=50)
    moved = (fwd[0] - pts).norm(dim=-1).max() * 511
    back = cpab.transform(tess, fwd, -theta, nsteps=50)[0]
    assert moved > 20                                        # a real deformation ...
    assert (back - pts).norm(dim=-1).max() * 511 < 0.5       # ... undone by -θ (px at 512²)
    assert torch.equal(cpab.transform(tess, pts, torch.zeros_like(theta), nsteps=50)[0], pts)


def test_zero_boundary_keeps_samples_inside_and_valid_outside_does_not():
    g = torch.Generator().manual_seed(5)
    pts = cpab.identity_grid((32, 32), dtype=torch.float64).reshape(-1, 2)
    excursion = {}
    for zb in (True, False):
        tess = cpab.tessellation(6, 6, zb, False)
        theta = tess.sample_theta(2, 0.1, 2.0, generator=g)
        out = cpab.transform(tess, pts, theta, nsteps=50)
        excursion[zb] = float(torch.maximum(-out, out - 1).clamp_min(0).max()) * 511
    assert excursion[True] < 0.05 and excursion[False] > 5
    params = cpab.random_params((6, 6), 4, strength=2.0, zero_boundary=True, mode="independent", seed=1)
    grid = cpab.sampling_grid(params, (96, 128))
    assert grid.min() >= 0 and grid.max() <= 1


def test_warp_then_inverse_returns_the_image():
    img = _blobs()
    params = cpab.random_params((6, 6), 1, strength=0.8, zero_boundary=True, mode="independent", seed=2)
    there = cpab.warp(img, cpab.sampling_grid(params, (128, 128), flow_resolution=128))
    back = cpab.warp(there, cpab.sampling_grid(params.inverse(), (128, 128), flow_resolution=128))
    moved = (there - img).abs().mean()
    assert moved > 0.01
    assert (back - img).abs().mean() < 0.15 * moved
    assert (back - img).abs().max() < 0.05


def test_random_deform_is_seeded_and_fold_free():
    a = cpab.random_params((6, 6), 3, strength=0.6, seed=7, mode="independent")
    b = cpab.random_params((6, 6), 3, strength=0.6, seed=7, mode="independent")
    c = cpab.random_params((6, 6), 3, strength=0.6, seed=8, mode="independent")
    assert torch.equal(a.theta, b.theta) and not torch.equal(a.theta, c.theta)
    grid = cpab.sampling_grid(a, (96, 96), flow_resolution=96)
    assert cpab.grid_to_flow(grid).norm(dim=-1).max() > 20     # ~80 px at 512²: strong, still no fold
    dx = grid[:, :, 1:, :] - grid[:, :, :-1, :]
    dy = grid[:, 1:, :, :] - grid[:, :-1, :, :]
    det = dx[:, :-1, :, 0] * dy[:, :, :-1, 1] - dx[:, :-1, :, 1] * dy[:, :, :-1, 0]
    assert (det > 0).all()                                     # orientation kept: no folds
    wiggle = cpab.random_params((6, 6), 8, strength=0.6, seed=7, mode="wiggle")
    assert torch.allclose(wiggle.theta[0], a.theta[0])           # the loop starts at the first draw


# --- fitting and the warper ---------------------------------------------------------------------

def test_identical_keypoints_give_identity():
    src, _ = _moves(0)
    res = cpab.keypoint_warp(torch.rand(1, 3, 512, 512), src, src, tween_frames=3)
    assert res.params.theta.abs().max() < 1e-9
    assert res.flow.abs().max() < 1e-3


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fitted_keypoints_land_within_half_a_pixel(seed):
    src, dst = _moves(seed)
    size = (512, 512)
    params, err = cpab.fit_keypoints(src, dst, size, cells=(6, 6))
    assert err.max() < 0.5
    # rendered with 50 steps: the picture's source keypoints appear at the targets
    tess = params.tess
    seen = cpab.transform(tess, pixel_to_unit(dst.double(), size), params.theta, nsteps=50)[0] * 511
    assert (seen - src).norm(dim=-1).max() < 0.5
    grid = cpab.sampling_grid(params, size, flow_resolution=128).permute(0, 3, 1, 2)
    at = torch.nn.functional.grid_sample(grid, (dst / 511 * 2 - 1).view(1, 1, -1, 2), align_corners=True)
    assert (at[0, :, 0].T * 511 - src).norm(dim=-1).max() < 1.5   # + upsampling from 128² (spec: ~0.9 px)


def test_weights_drop_invisible_keypoints():
    src, dst = _moves(4)
    dst[3] = torch.tensor([-50.0, 900.0])                      # off-canvas but invisible
    w = torch.ones(8)
    w[3] = 0
    params, err = cpab.fit_keypoints(src, dst, (512, 512), cells=(6, 6), weights=w)
    assert err[0, w > 0].max() < 0.5
    track = torch.stack([src, dst])                                 # batched (no warm start) + weights
    params, err = cpab.fit_keypoints(src, track, (512, 512), cells=(6, 6), weights=w, warm_start=False)
    assert err[:, w > 0].max() < 0.5 and params.theta[0].abs().max() < 1e-9
    with pytest.raises(FlipbookInputError, match="target keypoints"):
        cpab.fit_keypoints(src, dst, (512, 512), cells=(6, 6))


def test_tracks_are_continuous_and_warm_started():
    src, dst = _moves(5, k=6)
    t = torch.linspace(0, 1, 12).view(-1, 1, 1)
    track = src + (dst - src) * torch.sin(math.pi * t)       # out and back, first and last = rest
    params, err = cpab.fit_keypoints(src, track, (512, 512), cells=(6, 6), warm_start=True)
    assert err.max() < 0.5
    th = params.theta
    assert th[0].abs().max() < 1e-9
    steps = (th[1:] - th[:-1]).norm(dim=-1)
    assert steps.max() < 3 * steps.median() + 1e-6             # no jumps between neighbouring frames
    flow = cpab.grid_to_flow(cpab.sampling_grid(params, (128, 128), flow_resolution=64))
    jump = (flow[1:] - flow[:-1]).abs().amax((1, 2, 3))
    motion = (track[1:] - track[:-1]).norm(dim=-1).amax(-1) * 128 / 512
    assert (jump < 4 * motion + 0.5).all()


def test_adam_fit_and_cpabmm_norm_loss_reduce_the_error():
    src, dst = _moves(6)
    tess = cpab.tessellation(4, 4, False, False)
    s01, d01 = src.double() / 511, dst.double() / 511
    for loss in ("squared", "norm"):
        res = cpab.fit_theta(tess, d01, s01, method="adam", iterations=100, lr=0.05, nsteps=20, prior_strength=0,
                             loss=loss)
        assert res.error_px.mean() < 0.35 * (d01 - s01).norm(dim=-1).mean()


# --- nodes ----------------------------------------------------------------------------------------

def _skeleton(points, size=(256, 256)):
    return Skeleton(points, torch.zeros(0, 2, dtype=torch.long), size)


def test_keypoint_warp_node_tween_and_trajectory(inference):
    image = torch.rand(1, 256, 256, 3)
    src, dst = _moves(7, k=5, size=256, max_move=20, margin=40)
    node = cpab_nodes.FlipbookCPABKeypointWarp()
    args = dict(frames=5, cells=4, zero_boundary=True, volume_preserving=False, optimizer="lm", iterations=10,
                prior_strength=0.01, fit_steps=20, flow_resolution=64, steps=30, interpolation="bilinear",
                padding="border", warm_start=True)
    frames, mask, flow, params = node.run(image, _skeleton(src), target_keypoints=_skeleton(dst),
                                          mask=torch.ones(1, 256, 256), **args)
    assert frames.shape == (5, 256, 256, 3) and mask.shape == (5, 256, 256)
    assert torch.allclose(frames[0], image[0], atol=1e-4)       # t = 0 is the identity (float32 sampling)
    assert flow[0].abs().max() < 1e-4 and flow[-1].abs().max() > 5
    assert (mask > 0.999).all()                                  # zero boundary: nothing leaves the picture

    from comfyui_flipbook.pipelines.bezier import Trajectory

    t = torch.linspace(0, 1, 4).view(-1, 1, 1)
    traj = Trajectory(_skeleton(src), 4, tracks=KeypointTrack(src + (dst - src) * t, None, (256, 256)))
    frames, _, flow, params = node.run(image, _skeleton(src), trajectory=traj, **args)
    assert frames.shape[0] == 4 and params.num_frames == 4
    apply = cpab_nodes.FlipbookCPABApply()
    again, _, flow2 = apply.apply(params, 1.0, 0, False, 64, 30, "bilinear", "border", image=image)
    assert torch.allclose(again, frames, atol=1e-5)
    inv, _, _ = apply.apply(params, 1.0, 0, True, 64, 30, "bilinear", "border", image=again)
    assert (inv[-1] - image[0]).abs().mean() < (again[-1] - image[0]).abs().mean()
    pic = cpab_nodes.FlipbookFlowToImage().draw(flow, 0.0)[0]
    assert pic.shape == (4, 256, 256, 3) and torch.allclose(pic[0], torch.ones_like(pic[0]))


def test_fit_and_random_deform_nodes(inference):
    src, dst = _moves(8, k=4, size=256, max_move=15, margin=40)
    params, report = cpab_nodes.FlipbookCPABFit().fit(_skeleton(src), 4, True, False, "lm", 10, 0.01, 20, True, 0.0,
                                                      target_keypoints=_skeleton(dst))
    assert params.num_frames == 1 and "max keypoint error" in report
    node = cpab_nodes.FlipbookCPABRandomDeform()
    image = torch.rand(1, 64, 96, 3)
    a = node.deform(image, 4, "wiggle", 0.5, 0.1, 4, True, False, 32, 20, "bilinear", "border", 3)
    b = node.deform(image, 4, "wiggle", 0.5, 0.1, 4, True, False, 32, 20, "bilinear", "border", 3)
    assert torch.equal(a[0], b[0]) and a[0].shape == (4, 64, 96, 3) and a[3].cells == (4, 3)


def test_bad_inputs_raise_clear_errors(inference):
    node = cpab_nodes.FlipbookCPABKeypointWarp()
    image = torch.rand(1, 128, 128, 3)
    args = dict(frames=2, cells=4, zero_boundary=True, volume_preserving=False, optimizer="lm", iterations=3,
                prior_strength=0.01, fit_steps=10, flow_resolution=32, steps=10, interpolation="bilinear",
                padding="border", warm_start=True)
    pts = torch.tensor([[30.0, 30.0], [90.0, 60.0], [60.0, 100.0]])
    sk = _skeleton(pts, (128, 128))
    with pytest.raises(FlipbookInputError, match="3 keypoints"):
        node.run(image, sk, target_keypoints=_skeleton(pts[:2], (128, 128)), **args)
    with pytest.raises(FlipbookInputError, match="inside the 128x128"):
        node.run(image, sk, target_keypoints=_skeleton(pts + torch.tensor([60.0, 0.0]), (128, 128)), **args)
    with pytest.raises(FlipbookInputError, match="neither"):
        node.run(image, sk, **args)
    with pytest.raises(FlipbookInputError, match="cells"):
        node.run(image, sk, target_keypoints=sk, **{**args, "cells": 0})
    bad = pts.clone()
    bad[1, 0] = float("nan")
    with pytest.raises(FlipbookInputError, match="finite"):
        cpab.fit_keypoints(pts, bad, (128, 128), cells=(4, 4))
    with pytest.raises(FlipbookInputError, match="finite"):
        node.run(torch.full((1, 32, 32, 3), float("nan")), sk, target_keypoints=sk, **args)
    with pytest.raises(FlipbookInputError, match="weights_json"):
        node.run(image, sk, target_keypoints=sk, weights_json="[1, 2]", **args)
    with pytest.raises(FlipbookInputError, match="theta"):
        cpab.transform(cpab.tessellation(4, 4), torch.rand(3, 2), torch.zeros(1, 5))
