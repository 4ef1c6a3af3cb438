"""Mesh building, Poisson/ARAP deformation and metrics of the weight-free FlexiClip path."""
import math
import sys

import numpy as np
import pytest
import torch

from comfyui_flipbook.pipelines.deform import MeshDeformer, cotan_laplacian, face_jacobians
from comfyui_flipbook.pipelines.errors import FlipbookInputError
from comfyui_flipbook.pipelines.mesh import build_mesh
from comfyui_flipbook.pipelines.metrics import METRIC_KEYS, animation_metrics
from comfyui_flipbook.pipelines.raster import rasterize_face_ids
from comfyui_flipbook.pipelines.render import draw_rank
from comfyui_flipbook.pipelines.skeleton import Skeleton
from comfyui_flipbook.pipelines.synthetic import synthetic_character

METHODS = ("poisson_bilap", "poisson", "arap")


@pytest.fixture(scope="module")
def character():
    image, skeleton = synthetic_character(128)
    return image, skeleton, build_mesh(image, None, skeleton)


def _rotation(angle):
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[c, -s], [s, c]], dtype=torch.float64)


def _covered(mesh, vertices=None):
    v = mesh.vertices if vertices is None else vertices
    return rasterize_face_ids(v[None], mesh.faces, draw_rank(mesh), mesh.canvas)[0] >= 0


def _blobs_image():
    """Two discs (the right one with a hole) and a small separate square, RGBA 64x96."""
    yy, xx = np.mgrid[0:64, 0:96]
    left = (xx - 24) ** 2 + (yy - 32) ** 2 <= 14 ** 2
    r2 = (xx - 66) ** 2 + (yy - 32) ** 2
    ring = (r2 <= 15 ** 2) & (r2 >= 6 ** 2)
    square = (xx >= 88) & (xx <= 93) & (yy >= 4) & (yy <= 9)
    alpha = (left | ring | square).astype(np.float32)
    rgb = np.stack([alpha * 0.8, 0.2 + 0 * alpha, 1 - alpha * 0.5], -1)
    return torch.from_numpy(np.concatenate([rgb, alpha[..., None]], -1)).float()


def test_mesh_has_keypoints_as_vertices_and_covers_silhouette(character):
    image, skeleton, mesh = character
    v, f = mesh.vertices, mesh.faces
    assert v.dtype == torch.float64 and f.dtype == torch.long and mesh.z.shape == (mesh.num_faces,)
    assert torch.equal(v[mesh.keypoint_idx], skeleton.points.double())
    assert (mesh.areas() > 1e-3).all()                       # CCW in image coords, no slivers
    assert torch.bincount(f.ravel(), minlength=len(v)).min() > 0     # no unreferenced vertex
    d = torch.cdist(v, v) + torch.eye(len(v)) * 1e9
    assert d.min() > 0.2                                      # no (near-)duplicate points
    assert mesh.areas().max() < 1.5 * 30.0                   # one refinement round
    assert mesh.texture.shape == (4, 128, 128) and torch.equal(mesh.texture[3], image[..., 3])
    covered = _covered(mesh)
    # Every visible pixel, and the dilated silhouette up to the simplification tolerance.
    assert covered[image[..., 3] > 0].all()
    from scipy import ndimage
    dist = ndimage.distance_transform_edt(image[..., 3].numpy() <= 0)
    assert covered[torch.from_numpy(dist <= 2.0 - 1.0)].all()
    # Distal parts are drawn over the torso: the hand faces have a higher z than the pelvis ones.
    cen = v[f].mean(1)
    hand = (cen - skeleton.points[5].double()).norm(dim=1).argmin()
    pelvis = (cen - skeleton.points[0].double()).norm(dim=1).argmin()
    assert mesh.z[hand] > mesh.z[pelvis]


def test_mesh_is_deterministic(character):
    image, skeleton, mesh = character
    again = build_mesh(image, None, skeleton)
    assert torch.equal(again.vertices, mesh.vertices) and torch.equal(again.faces, mesh.faces)


def test_mesh_blobs_holes_and_keypoints_outside():
    image = _blobs_image()
    # Keypoints: in the left disc, on the ring, and one 3 px outside the ring; the square has none.
    pts = [[24.0, 32.0], [66.0, 20.0], [84.0, 32.0]]
    sk = Skeleton(pts, [[0, 1], [1, 2]], (64, 96))
    mesh = build_mesh(image, None, sk, max_area=12.0)
    assert torch.equal(mesh.vertices[mesh.keypoint_idx], sk.points.double())
    covered = _covered(mesh)
    assert covered[image[..., 3] > 0].all()
    assert not covered[32, 66] and not covered[32, 45]          # the hole and the gap stay empty
    # The keypoint-free square follows the nearest keypoint (virtual handle) instead of failing.
    for method in METHODS:
        deformer = MeshDeformer(mesh, method)
        targets = sk.points.double() + torch.tensor([4.0, -2.0], dtype=torch.float64)
        out = deformer.deform(targets)
        assert torch.allclose(out[0], mesh.vertices + torch.tensor([4.0, -2.0], dtype=torch.float64),
                              atol=1e-6)


def test_mesh_luminance_rule_and_given_mask():
    image = torch.ones(40, 40, 3)
    image[10:30, 8:32] = 0.2
    sk = Skeleton([[12.0, 20.0], [28.0, 20.0]], [[0, 1]], (40, 40))
    mesh = build_mesh(image, None, sk, max_area=10.0)
    assert torch.equal(mesh.texture[3], (image[..., 0] < 0.95).float())
    mask = torch.zeros(40, 40)
    mask[12:28, 10:30] = 1.0
    masked = build_mesh(image, mask, sk, max_area=10.0)
    assert torch.equal(masked.texture[3], mask)
    assert masked.vertices[:, 0].min() > mesh.vertices[:, 0].min()


def test_triangle_backend_or_clear_error(monkeypatch):
    image, skeleton = synthetic_character(96)
    try:
        import triangle  # noqa: F401
        have = True
    except ImportError:
        have = False
    if have:
        mesh = build_mesh(image, None, skeleton, backend="triangle", min_angle=20.0)
        assert torch.equal(mesh.vertices[mesh.keypoint_idx], skeleton.points.double())
        assert _covered(mesh)[image[..., 3] > 0].all()
        assert (mesh.areas() > 0).all() and mesh.areas().max() <= 30.0 + 1e-6
    monkeypatch.setitem(sys.modules, "triangle", None)
    with pytest.raises(FlipbookInputError, match="pip install triangle"):
        build_mesh(image, None, skeleton, backend="triangle")


@pytest.mark.parametrize("bad", ["empty", "one_point", "outside", "nan", "shape", "canvas",
                                 "backend", "area"])
def test_build_mesh_bad_input(bad):
    image, skeleton = synthetic_character(64)
    mask = None
    kwargs = {}
    if bad == "empty":
        mask = torch.zeros(64, 64)
    elif bad == "one_point":
        skeleton = Skeleton(skeleton.points[:1], torch.zeros(0, 2), (64, 64))
    elif bad == "outside":
        skeleton = skeleton.with_points(skeleton.points + torch.tensor([60.0, 0.0]))
    elif bad == "nan":
        image = image.clone()
        image[3, 3, 0] = float("nan")
    elif bad == "shape":
        image = image[..., :2]
    elif bad == "canvas":
        skeleton = Skeleton(skeleton.points, skeleton.edges, (32, 32))
    elif bad == "backend":
        kwargs["backend"] = "qhull"
    elif bad == "area":
        kwargs["max_area"] = float("nan")
    with pytest.raises(FlipbookInputError):
        build_mesh(image, mask, skeleton, **kwargs)


def test_operators(character):
    _, _, mesh = character
    lap = cotan_laplacian(mesh)
    assert abs(lap - lap.T).max() < 1e-9
    assert np.abs(lap @ np.ones(mesh.num_vertices)).max() < 1e-9     # constants in the kernel
    # -2*cotmatrix: the entry of an interior edge (i, j) is -(cot a + cot b), a and b the angles
    # opposite to it (igl.cotmatrix holds +(cot a + cot b)/2).
    from comfyui_flipbook.pipelines.deform import mesh_edges
    i, j, l, r, _, _ = mesh_edges(mesh.faces.numpy())
    p = mesh.vertices.numpy()
    k = int(np.nonzero(r >= 0)[0][0])

    def cot(apex, a, b):
        u, v = p[a] - p[apex], p[b] - p[apex]
        return (u @ v) / abs(u[0] * v[1] - u[1] * v[0])
    expected = -(cot(l[k], i[k], j[k]) + cot(r[k], i[k], j[k]))
    assert abs(lap[i[k], j[k]] - expected) < 1e-9
    assert np.linalg.eigvalsh(lap.toarray()).min() > -1e-8          # positive semi-definite
    jac = face_jacobians(mesh, mesh.vertices)
    assert torch.allclose(jac, torch.eye(2, dtype=torch.float64).expand_as(jac), atol=1e-12)
    affine = torch.tensor([[1.2, 0.3], [-0.1, 0.9]], dtype=torch.float64)
    jac = face_jacobians((mesh.vertices, mesh.faces), mesh.vertices @ affine.T + 5)
    assert torch.allclose(jac, affine.expand_as(jac), atol=1e-10)


@pytest.mark.parametrize("method", METHODS)
def test_rest_pose_and_rigid_motion(character, method, inference):
    _, _, mesh = character
    deformer = MeshDeformer(mesh, method)
    rest_kp = mesh.vertices[mesh.keypoint_idx]
    out = deformer.deform(rest_kp[None].repeat(3, 1, 1))
    assert out.shape == (3, mesh.num_vertices, 2) and out.dtype == torch.float64
    assert (out - mesh.vertices).abs().max() < 1e-9
    assert deformer.deform(rest_kp.float()).dtype == torch.float32
    shift = torch.tensor([7.0, -4.0], dtype=torch.float64)
    assert (deformer.deform(rest_kp + shift)[0] - mesh.vertices - shift).abs().max() < 1e-8
    # Rotation + translation: ARAP from keypoints alone; Poisson with the rotated Jacobians.
    rot = _rotation(0.4)
    jac = None if method == "arap" else rot.expand(1, mesh.num_faces, 2, 2)
    moved = deformer.deform((rest_kp @ rot.T + shift)[None], jac)[0]
    assert (moved - (mesh.vertices @ rot.T + shift)).abs().max() < 1e-7


@pytest.mark.parametrize("method", METHODS)
def test_keypoints_reach_targets(character, method):
    _, skeleton, mesh = character
    rest_kp = mesh.vertices[mesh.keypoint_idx]
    t = torch.linspace(0, 1, 4, dtype=torch.float64)[:, None, None]
    wave = torch.stack([torch.sin(rest_kp[:, 1] / 15), torch.cos(rest_kp[:, 0] / 15)], -1)
    targets = rest_kp + 6.0 * t * wave                         # up to 6*sqrt(2) px moves
    hard = MeshDeformer(mesh, method, constraint_lambda=1e6 if method != "arap" else 1.0)
    err = (hard.deform(targets)[:, mesh.keypoint_idx] - targets).norm(dim=-1).max()
    assert err < 1e-2
    if method != "arap":
        # FlexiClip's faithful λ=1 keeps handles soft: poisson_bilap within 3 px of moves up to
        # 8.5 px here (the harmonic "poisson" form is softer), both much closer than the rest pose.
        soft = MeshDeformer(mesh, method).deform(targets)[:, mesh.keypoint_idx]
        soft_err = (soft - targets).norm(dim=-1)
        assert soft_err.max() < (3.0 if method == "poisson_bilap" else 5.0)
        assert soft_err[-1].mean() < 0.5 * (rest_kp - targets[-1]).norm(dim=-1).mean()


def test_dense_and_sparse_solvers_agree(character):
    _, _, mesh = character
    rest_kp = mesh.vertices[mesh.keypoint_idx]
    targets = rest_kp + torch.randn(2, *rest_kp.shape, dtype=torch.float64,
                                    generator=torch.Generator().manual_seed(0)) * 3
    jac = torch.eye(2, dtype=torch.float64) + 0.05 * torch.randn(
        2, mesh.num_faces, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for method in METHODS:
        j = None if method == "arap" else jac
        dense = MeshDeformer(mesh, method, solver="dense").deform(targets, j)
        sparse = MeshDeformer(mesh, method, solver="sparse").deform(targets, j)
        assert (dense - sparse).abs().max() < 1e-6


@pytest.fixture(scope="module")
def tiny_mesh():
    yy, xx = np.mgrid[0:20, 0:20]
    alpha = (((xx - 10) ** 2 + (yy - 10) ** 2) <= 49).astype(np.float32)
    image = torch.from_numpy(np.stack([alpha, alpha * 0.5, 1 - alpha, alpha], -1)).float()
    sk = Skeleton([[7.0, 10.0], [13.0, 9.0], [10.0, 14.0]], [[0, 1], [0, 2]], (20, 20))
    return build_mesh(image, None, sk, max_area=8.0)


@pytest.mark.parametrize("method", METHODS)
def test_deform_gradcheck(tiny_mesh, method):
    deformer = MeshDeformer(tiny_mesh, method, constraint_lambda=2.0)
    gen = torch.Generator().manual_seed(0)
    rest_kp = tiny_mesh.vertices[tiny_mesh.keypoint_idx]
    targets = (rest_kp + torch.randn(1, *rest_kp.shape, dtype=torch.float64, generator=gen)).requires_grad_()
    if method == "arap":
        assert torch.autograd.gradcheck(lambda t: deformer.deform(t), (targets,), atol=1e-6)
        return
    jac = (torch.eye(2, dtype=torch.float64) + 0.1 * torch.randn(
        1, tiny_mesh.num_faces, 2, 2, dtype=torch.float64, generator=gen)).requires_grad_()
    assert torch.autograd.gradcheck(lambda t, j: deformer.deform(t, j), (targets, jac), atol=1e-6)


def test_deform_bad_input(character):
    _, _, mesh = character
    with pytest.raises(FlipbookInputError):
        MeshDeformer(mesh, "laplace")
    with pytest.raises(FlipbookInputError):
        MeshDeformer(mesh, constraint_lambda=0.0)
    deformer = MeshDeformer(mesh)
    kp = mesh.vertices[mesh.keypoint_idx]
    with pytest.raises(FlipbookInputError):
        deformer.deform(kp[:-1])
    with pytest.raises(FlipbookInputError):
        deformer.deform(kp * float("nan"))
    with pytest.raises(FlipbookInputError):
        deformer.deform(kp, torch.eye(2).expand(1, 3, 2, 2))
    with pytest.raises(FlipbookInputError):
        MeshDeformer(mesh, "arap").deform(kp, torch.eye(2).expand(1, mesh.num_faces, 2, 2))


def test_metrics(character, inference):
    _, _, mesh = character
    v0 = mesh.vertices
    static = animation_metrics(mesh, v0[None].repeat(4, 1, 1))
    assert set(static) == set(METRIC_KEYS)
    assert static["motion_vitality"] == 0 and static["animation_energy"] == 0
    assert static["temporal_consistency"] == 0
    assert static["geometric_deviation"] < 1e-8 and static["deformation_smoothness"] < 1e-8
    rigid = torch.stack([v0 @ _rotation(0.1 * t).T + torch.tensor([2.0 * t, -t]) for t in range(6)])
    m = animation_metrics(mesh, rigid)
    assert m["geometric_deviation"] < 1e-8 and m["deformation_smoothness"] < 1e-8
    assert m["motion_vitality"] > 10 and m["animation_energy"] > 0
    # Uniform 2 px/frame translation: path length 2*(T-1), no jerk, energy 4 per vertex-step.
    walk = torch.stack([v0 + torch.tensor([2.0 * t, 0.0]) for t in range(5)])
    m = animation_metrics(mesh, walk)
    assert abs(m["motion_vitality"] - 8.0) < 1e-9 and m["temporal_consistency"] < 1e-9
    assert abs(m["animation_energy"] - 4.0 * 4 * mesh.num_vertices) < 1e-6
    stretch = torch.stack([v0, v0 * torch.tensor([1.2, 1.0], dtype=torch.float64)])
    m = animation_metrics(mesh, stretch)
    assert m["geometric_deviation"] > 5 and m["deformation_smoothness"] > 5
    with pytest.raises(FlipbookInputError):
        animation_metrics(mesh, v0)


def test_objects_made_in_inference_mode_serve_gradient_code(tiny_mesh):
    # A node builds mesh and deformer under inference mode; an optimiser later needs gradients.
    image, skeleton = synthetic_character(48)
    with torch.inference_mode():
        mesh = build_mesh(image, None, skeleton, max_area=12.0)
        deformer = MeshDeformer(mesh)
        arap = MeshDeformer(mesh, "arap")
    from comfyui_flipbook.pipelines.render import render_mesh
    targets = skeleton.points.double()[None].clone().requires_grad_()
    for d in (deformer, arap):
        verts = d.deform(targets)
        image_out, _ = render_mesh(mesh, verts)
        (image_out.sum() + face_jacobians(mesh, verts).sum()).backward()
        assert targets.grad is not None and torch.isfinite(targets.grad).all()
        assert targets.grad.abs().sum() > 0
        targets.grad = None
