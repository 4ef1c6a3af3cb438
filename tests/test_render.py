"""Textured-mesh renderer: exact identity warp, exact face-ID pass, gradients, draw order."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from comfyui_flipbook.pipelines.deform import MeshDeformer
from comfyui_flipbook.pipelines.errors import FlipbookInputError
from comfyui_flipbook.pipelines.mesh import build_mesh
from comfyui_flipbook.pipelines.raster import rasterize_face_ids
from comfyui_flipbook.pipelines.render import render_mesh
from comfyui_flipbook.pipelines.skeleton import Skeleton
from comfyui_flipbook.pipelines.synthetic import synthetic_character


@pytest.fixture(scope="module")
def character():
    image, skeleton = synthetic_character(96)
    return image, skeleton, build_mesh(image, None, skeleton)


def _composite(image, bg=(1.0, 1.0, 1.0)):
    a = image[..., 3:]
    return image[..., :3] * a + (1 - a) * torch.tensor(bg)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_identity_renders_input_exactly(character, dtype, inference):
    image, _, mesh = character
    rest = mesh.vertices.to(dtype)[None].repeat(2, 1, 1)
    out, alpha = render_mesh(mesh, rest, background=(0.2, 0.5, 1.0))
    assert out.shape == (2, 96, 96, 3) and alpha.shape == (2, 96, 96) and out.dtype == dtype
    expected = _composite(image.to(dtype), (0.2, 0.5, 1.0))
    opaque = image[..., 3] == 1
    assert opaque.sum() > 1000
    assert (out[:, opaque] - image[opaque][:, :3].to(dtype)).abs().max() == 0
    assert (out - expected).abs().max() < 1e-6
    assert (alpha - image[..., 3].to(dtype)).abs().max() < 1e-6
    none, no_alpha = render_mesh(mesh, rest[:1], return_alpha=False)
    assert no_alpha is None and none.shape == (1, 96, 96, 3)


def test_out_size_matches_bilinear_resize(character):
    image, _, mesh = character
    out, alpha = render_mesh(mesh, mesh.vertices.float(), out_size=(192, 144), background=(0, 0, 0))
    pre = torch.cat([image[..., :3] * image[..., 3:], image[..., 3:]], -1).permute(2, 0, 1)[None]
    ref = F.interpolate(pre, size=(192, 144), mode="bilinear", align_corners=False)[0]
    assert out.shape == (1, 192, 144, 3)
    assert (out[0] - ref[:3].permute(1, 2, 0)).abs().max() < 1e-5
    assert (alpha[0] - ref[3]).abs().max() < 1e-5


def test_face_id_pass_is_exact():
    gen = torch.Generator().manual_seed(0)
    verts = torch.rand(2, 12, 2, generator=gen, dtype=torch.float64) * 30
    faces = torch.stack([torch.randperm(12, generator=gen)[:3] for _ in range(10)])
    rank = torch.randperm(10, generator=gen)
    ids = rasterize_face_ids(verts, faces, rank, (30, 30))
    yy, xx = torch.meshgrid(torch.arange(30.0), torch.arange(30.0), indexing="ij")
    p = torch.stack([xx, yy], -1).double()                         # [H,W,2]
    for t in range(2):
        tri = verts[t][faces]                                        # [F,3,2]
        a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]

        def cross(u, v):
            return u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]
        area = cross(b - a, c - a)
        w = torch.stack([cross(c - b, p[..., None, :] - b), cross(a - c, p[..., None, :] - c),
                         cross(b - a, p[..., None, :] - a)], -1) * area.sign()[:, None]
        strictly = (w > 1e-6).all(-1)                                # [H,W,F]
        loosely = (w > -1e-6).all(-1)
        got = ids[t]
        hit = got >= 0
        assert hit[strictly.any(-1)].all()                           # no holes
        assert (got[~loosely.any(-1)] == -1).all()                   # nothing outside
        face = got[hit]
        assert loosely[hit][torch.arange(len(face)), face].all()     # the face contains the pixel
        top = torch.where(strictly, rank, torch.full_like(rank, -1)).amax(-1)
        assert (rank[face] >= top[hit]).all()                        # and is the last drawn


def test_render_gradient_matches_finite_differences(inference):
    # Smooth texture, margin mesh, jittered vertices (no exact texel-centre positions).
    yy, xx = np.mgrid[0:24, 0:24].astype(np.float64)
    alpha = np.clip(8.5 - np.hypot(xx - 12, yy - 12), 0, 1)
    rgb = np.stack([np.sin(xx / 3) * 0.4 + 0.5, np.cos(yy / 4) * 0.4 + 0.5, (xx + yy) / 48], -1)
    image = torch.from_numpy(np.concatenate([rgb, alpha[..., None]], -1)).float()
    sk = Skeleton([[9.0, 12.0], [15.0, 11.0]], [[0, 1]], (24, 24))
    mesh = build_mesh(image, None, sk, max_area=10.0, margin_px=2.0)
    gen = torch.Generator().manual_seed(0)
    with torch.inference_mode(False), torch.enable_grad():
        weights = torch.rand(1, 24, 24, 3, generator=gen, dtype=torch.float64)
        verts = (mesh.vertices + 0.6 * torch.rand(mesh.vertices.shape, generator=gen,
                                                 dtype=torch.float64) - 0.3)[None].requires_grad_()

        def loss(v):
            img, a = render_mesh(mesh, v, background=(0.3, 0.6, 0.9))
            return (img * weights).sum() + (a * weights[..., 0]).sum()
        loss(verts).backward()
        grad = verts.grad[0]
        eps = 1e-6
        idx = torch.randperm(mesh.num_vertices, generator=gen)[:12]
        with torch.no_grad():
            for i in idx.tolist():
                for d in range(2):
                    plus, minus = verts.detach().clone(), verts.detach().clone()
                    plus[0, i, d] += eps
                    minus[0, i, d] -= eps
                    fd = (loss(plus) - loss(minus)) / (2 * eps)
                    assert abs(fd - grad[i, d]) < 1e-4 * max(1.0, abs(fd)), (i, d, fd, grad[i, d])
        assert grad.abs().max() > 1e-3


def test_draw_order_last_wins():
    # Red disc left, blue disc right; the right one is moved over the left one.
    yy, xx = np.mgrid[0:40, 0:80]
    left = (xx - 20) ** 2 + (yy - 20) ** 2 <= 100
    right = (xx - 60) ** 2 + (yy - 20) ** 2 <= 100
    rgb = np.zeros((40, 80, 3), np.float32)
    rgb[left] = (1, 0, 0)
    rgb[right] = (0, 0, 1)
    image = torch.from_numpy(np.concatenate([rgb, (left | right)[..., None]], -1).astype(np.float32))
    sk = Skeleton([[20.0, 20.0], [60.0, 20.0]], [[0, 1]], (40, 80))
    mesh = build_mesh(image, None, sk, max_area=10.0)
    targets = torch.tensor([[[20.0, 20.0], [24.0, 20.0]]], dtype=torch.float64)
    moved = MeshDeformer(mesh, "arap").deform(targets)
    on_right = mesh.vertices[mesh.faces].mean(1)[:, 0] > 40
    mesh.z = on_right.float()                                    # right disc on top
    out, _ = render_mesh(mesh, moved)
    assert torch.allclose(out[0, 20, 22].float(), torch.tensor([0.0, 0.0, 1.0]), atol=1e-5)
    mesh.z = (~on_right).float()                                 # left disc on top
    out, _ = render_mesh(mesh, moved)
    assert torch.allclose(out[0, 20, 22].float(), torch.tensor([1.0, 0.0, 0.0]), atol=1e-5)
    assert torch.allclose(out[0, 20, 60].float(), torch.tensor([1.0, 1.0, 1.0]))   # vacated: background


def test_deform_then_render_under_inference_mode(character, inference):
    image, skeleton, mesh = character
    targets = skeleton.points[None].repeat(3, 1, 1).clone()
    targets[:, 5] += torch.tensor([[0.0, 0.0], [3.0, -2.0], [6.0, -4.0]])   # the left hand moves
    verts = MeshDeformer(mesh).deform(targets)
    assert verts.dtype == torch.float32
    out, alpha = render_mesh(mesh, verts)
    assert torch.equal(out[0], render_mesh(mesh, mesh.vertices.float())[0][0]) or \
        (out[0] - _composite(image)).abs().max() < 1e-5
    assert (out[2] - out[0]).abs().sum() > 1.0                    # something moved
    assert (alpha[2].sum() - alpha[0].sum()).abs() < 0.05 * alpha[0].sum()


def test_render_bad_input(character):
    _, _, mesh = character
    with pytest.raises(FlipbookInputError):
        render_mesh(mesh, mesh.vertices[:-1])
    with pytest.raises(FlipbookInputError):
        render_mesh(mesh, mesh.vertices * float("nan"))
    with pytest.raises(FlipbookInputError):
        render_mesh("mesh", mesh.vertices)
    with pytest.raises(FlipbookInputError):
        render_mesh(mesh, mesh.vertices, out_size=(0, 10))


def test_face_id_pass_has_no_gaps_on_shared_integer_edges():
    # A 6x6 grid of squares (corners on pixel centres), two triangles each: every pixel centre of
    # the covered square lies on an edge or vertex of some triangles and must still get a face.
    n, step = 6, 4
    gy, gx = torch.meshgrid(torch.arange(n + 1), torch.arange(n + 1), indexing="ij")
    verts = (torch.stack([gx, gy], -1).reshape(-1, 2) * step + 2).double()
    idx = lambda r, c: r * (n + 1) + c  # noqa: E731
    faces = []
    for r in range(n):
        for c in range(n):
            faces += [[idx(r, c), idx(r, c + 1), idx(r + 1, c + 1)], [idx(r, c), idx(r + 1, c + 1), idx(r + 1, c)]]
    faces = torch.tensor(faces)
    ids = rasterize_face_ids(verts[None], faces, torch.arange(len(faces)), (30, 30))[0]
    inside = torch.zeros(30, 30, dtype=torch.bool)
    inside[2:2 + n * step + 1, 2:2 + n * step + 1] = True
    assert (ids[inside] >= 0).all() and (ids[~inside] == -1).all()
