"""Textured-mesh renderer: warp the rest clipart by deformed mesh vertices (spec flexiclip.md §2.5).

Two passes per frame batch:

1. Face-ID pass (no gradient, :mod:`.raster`): every pixel centre gets the last face, in draw order
   (``mesh.z`` then face index), that contains it.
2. Differentiable pass: for a hit pixel p in face f, the rest-texture position is the affine map
   of f evaluated at p, written as ``uv = p + (R0 - V0) + (E_R - E) E^-1 (p - V0)`` (E, E_R: edge
   matrices of the deformed and rest triangle). For identical deformed and rest vertices every
   correction term is exactly 0 in floating point, so the identity warp reproduces the input
   exactly. The premultiplied RGBA texture is sampled bilinearly there (the same as
   ``grid_sample(bilinear, align_corners=False, padding_mode="zeros")`` with pixel centres at
   integers, through a power-of-two zero-padded texture so that this stays exact) and
   composited over the background. Differentiable wrt the vertices.

Premultiplied interpolation keeps the colour of fully transparent texels out of edge pixels.
"""
from __future__ import annotations

import numpy as np
import torch

from .coords import pixel_to_ndc, rescale_pixels
from .errors import check_finite, describe, fail
from .mesh import Mesh
from .raster import rasterize


def draw_order(mesh: Mesh) -> torch.Tensor:
    """[F] face indices in draw order: by z, then face index (the last drawn wins). Not cached:
    ``mesh.z`` may be reassigned, and this is one small sort."""
    z = mesh.z.detach().cpu().to(torch.float64).numpy()
    return torch.from_numpy(np.lexsort((np.arange(mesh.num_faces), z)))


def draw_rank(mesh: Mesh) -> torch.Tensor:
    """[F] draw rank of every face (the inverse permutation of :func:`draw_order`)."""
    order = draw_order(mesh)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(mesh.num_faces)
    return rank


def _padded_texture(mesh: Mesh, dtype: torch.dtype) -> torch.Tensor:
    """[1,4,Hp,Wp] premultiplied RGBA, zero-padded (transparent) to power-of-two sizes: the
    normalised grid ``(2u+1)/Wp - 1`` and grid_sample's un-normalisation are then exact in
    floating point, so integer texel positions read texels exactly."""
    def build():
        tex = mesh.texture.to(dtype)
        pre = torch.cat([tex[:3] * tex[3:], tex[3:]], 0)
        h, w = pre.shape[1:]
        hp, wp = 1 << max(h - 1, 1).bit_length(), 1 << max(w - 1, 1).bit_length()
        return torch.nn.functional.pad(pre, (0, wp - w, 0, hp - h))[None].contiguous()
    return mesh.cached(("padded_texture", dtype), build)


def _sample_bilinear(texture: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Premultiplied RGBA [N,4] at uv [N,2] (texel centres at integers, transparent outside):
    ``grid_sample(bilinear, align_corners=False, padding_mode="zeros")``."""
    grid = pixel_to_ndc(uv, texture.shape[-2:], align_corners=False)
    out = torch.nn.functional.grid_sample(texture, grid.view(1, 1, -1, 2), mode="bilinear",
                                          padding_mode="zeros", align_corners=False)
    return out.view(4, -1).t()


def render_mesh(mesh: Mesh, vertices: torch.Tensor, *, background=(1.0, 1.0, 1.0),
                out_size: tuple[int, int] | None = None, return_alpha: bool = True):
    """Render the mesh texture warped to ``vertices``.

    Args:
        mesh: the rest mesh (texture, faces, draw order ``z``).
        vertices: [T,V,2] (or [V,2]) deformed vertices in canvas px.
        background: RGB in 0..1 the texture is composited over.
        out_size: (H, W) to render at another resolution (the canvas is scaled to it).
        return_alpha: also return the coverage (rendered alpha).

    Returns:
        (image [T,H,W,3], mask [T,H,W] or None), in the dtype of ``vertices`` (float32 for
        integer input). Differentiable wrt ``vertices``; works under torch.inference_mode().
    """
    if not isinstance(mesh, Mesh):
        fail("mesh", "a FLIPBOOK_MESH (Mesh)", describe(mesh))
    if not isinstance(vertices, torch.Tensor):
        fail("vertices", "a tensor [frames, vertices, 2]", describe(vertices))
    if vertices.dim() == 2:
        vertices = vertices[None]
    if vertices.dim() != 3 or tuple(vertices.shape[1:]) != (mesh.num_vertices, 2):
        fail("vertices", f"a tensor [frames, {mesh.num_vertices}, 2]", describe(vertices))
    check_finite("vertices", vertices)
    if len(tuple(background)) != 3:
        fail("background", "an RGB triple", repr(background))
    dtype = vertices.dtype if vertices.is_floating_point() else torch.float32
    device = vertices.device
    verts = vertices.to(dtype).cpu()
    h0, w0 = mesh.canvas
    h, w = (int(out_size[0]), int(out_size[1])) if out_size is not None else (h0, w0)
    if h < 1 or w < 1:
        fail("out_size", "a positive (height, width)", repr(out_size))
    scaled = rescale_pixels(verts.detach().double(), (h0, w0), (h, w))
    # Faces in draw order, so that the face-ID pass returns row indices of the tables below.
    faces = mesh.constant("faces")[draw_order(mesh)]
    frame, y, x, k = rasterize(scaled, faces, (h, w))
    n_frames = verts.shape[0]
    hit = (frame * h + y) * w + x
    # output pixel centres on the mesh canvas
    px, py = rescale_pixels(torch.stack([x, y], 1).to(dtype), (h, w), (h0, w0)).unbind(1)
    # Per (frame, face) affine correction to rest-texture coordinates (see module doc).
    rest = mesh.constant("vertices").to(dtype)[faces]     # [F,3,2]
    cur = verts[:, faces]                                 # [T,F,3,2]
    e = cur[..., 1:, :] - cur[..., :1, :]                 # [T,F,2(edge),2(xy)]
    er = rest[:, 1:, :] - rest[:, :1, :]
    det = e[..., 0, 0] * e[..., 1, 1] - e[..., 0, 1] * e[..., 1, 0]
    det = torch.where(det.abs() > 1e-12, det, torch.ones_like(det))
    # inv(E) with E = [e1 e2] as columns; D = (E_R - E) inv(E).
    inv = torch.stack([torch.stack([e[..., 1, 1], -e[..., 1, 0]], -1),
                       torch.stack([-e[..., 0, 1], e[..., 0, 0]], -1)], -2) / det[..., None, None]
    d = (er - e).transpose(-1, -2) @ inv                  # [T,F,2,2], columns r_i - e_i
    shift = rest[:, 0, :] - cur[..., 0, :]                # [T,F,2]
    params = torch.cat([d.reshape(n_frames, -1, 4), shift, cur[..., 0, :]], -1)
    prm = params.reshape(-1, 8).index_select(0, frame * mesh.num_faces + k).unbind(1)
    qx, qy = px - prm[6], py - prm[7]
    uv = torch.stack([px + prm[4] + prm[0] * qx + prm[1] * qy,
                      py + prm[5] + prm[2] * qx + prm[3] * qy], 1)
    rgba = _sample_bilinear(_padded_texture(mesh, dtype), uv)    # [N,4] premultiplied
    bg = torch.as_tensor(background, dtype=dtype)
    color = rgba[:, :3] + (1 - rgba[:, 3:]) * bg
    if bg.min() == bg.max():                              # grey backgrounds: a plain fill
        image = torch.full((n_frames * h * w, 3), float(bg[0]), dtype=dtype)
    else:
        image = bg.expand(n_frames * h * w, 3).clone()
    image.index_put_((hit,), color)
    image = image.view(n_frames, h, w, 3).to(device)
    if not return_alpha:
        return image, None
    alpha = torch.zeros(n_frames * h * w, dtype=dtype)
    alpha.index_put_((hit,), rgba[:, 3])
    return image, alpha.view(n_frames, h, w).to(device)
