"""Coordinates: pixels, the unit square and normalised device coordinates, each rule stated once.

**Pixels** (the pack's one convention: :class:`~.skeleton.Skeleton`, tracks, poses, meshes):
x right, y down, pixel *centres* at the integers 0..W-1 and 0..H-1. A canvas size is (H, W).

**Unit square** [0, 1]² and **NDC** [-1, 1]² (``grid_sample``'s grid, ``ndc = 2 u - 1``) come in the
two conventions of ``align_corners`` (kornia's ``normalize_pixel_coordinates`` is the model):

- ``align_corners=True``: the *centres* of the corner pixels sit on 0 and 1, ``u = x / (W - 1)``.
  CPAB's domain (libcpab, spec cpab.md §3.2 step 1), CPABMM's keypoints in [-1, 1] (spec §2.1),
  keypoints typed as fractions (Flipbook Keypoints (JSON) ``normalized``).
- ``align_corners=False``: the *outer edges* of the image sit on 0 and 1, ``u = (x + 0.5) / W``.
  The mesh renderer's texture look-up (spec flexiclip.md §2.5) and :func:`rescale_pixels`.

A third rule is a release's convention, named for it: :func:`pixel_to_fraction` divides by the size,
``u = x / W`` (neither of the above). OpenPose writes normalised keypoints so (comfyui_controlnet_aux's
POSE_KEYPOINT), and Animate-X feeds its pose encoder so (spec animatex.md §1.2).

All functions take points ``[..., 2]`` (x, y) and keep their dtype; sizes are (H, W).

>>> p = torch.tensor([[0.0, 0.0], [639.0, 479.0]])
>>> pixel_to_unit(p, (480, 640))
tensor([[0., 0.],
        [1., 1.]])
>>> pixel_to_ndc(p, (480, 640), align_corners=False)
tensor([[-0.9984, -0.9979],
        [ 0.9984,  0.9979]])
>>> rescale_pixels(p, (480, 640), (240, 320)).tolist()
[[-0.25, -0.25], [319.25, 239.25]]
"""
from __future__ import annotations

import torch

from .errors import fail


def _size(size) -> tuple[int, int]:
    try:
        h, w = (int(s) for s in size)
    except (TypeError, ValueError):
        fail("size", "a canvas size (height, width)", repr(size))
    if h < 1 or w < 1:
        fail("size", "a canvas of at least 1x1 pixels", f"{w}x{h}")
    return h, w


def _check_points(points: torch.Tensor) -> torch.Tensor:
    if not isinstance(points, torch.Tensor) or points.dim() < 1 or points.shape[-1] != 2:
        fail("points", "a tensor [..., 2] of (x, y)", f"{type(points).__name__} "
             f"{tuple(points.shape) if isinstance(points, torch.Tensor) else ''}".strip())
    return points


def _pair(x: float, y: float, like: torch.Tensor) -> torch.Tensor:
    dtype = like.dtype if like.is_floating_point() else torch.float32
    return torch.tensor([x, y], dtype=dtype, device=like.device)


def pixel_to_unit(points: torch.Tensor, size, *, align_corners: bool = True) -> torch.Tensor:
    """Pixels -> [0, 1]²: ``x / (W - 1)`` (align_corners, the default) or ``(x + 0.5) / W``.

    points: [..., 2] (x, y) px; size: (H, W). On a one-pixel axis its only centre maps to 0.
    """
    h, w = _size(size)
    points = _check_points(points)
    if align_corners:
        return points / _pair(max(w - 1, 1), max(h - 1, 1), points)
    return (points + 0.5) / _pair(w, h, points)


def unit_to_pixel(points: torch.Tensor, size, *, align_corners: bool = True) -> torch.Tensor:
    """[0, 1]² -> pixels, the inverse of :func:`pixel_to_unit`. Linear with align_corners, so it
    also converts unit *displacements* (a flow) to pixels."""
    h, w = _size(size)
    points = _check_points(points)
    if align_corners:
        return points * _pair(max(w - 1, 1), max(h - 1, 1), points)
    return points * _pair(w, h, points) - 0.5


def unit_to_ndc(points: torch.Tensor, *, out: torch.Tensor | None = None) -> torch.Tensor:
    """[0, 1]² -> grid_sample's [-1, 1]²: ``2 u - 1`` (into ``out`` when given)."""
    if out is not None:
        return torch.mul(points, 2, out=out).sub_(1)
    return points * 2 - 1


def ndc_to_unit(points: torch.Tensor) -> torch.Tensor:
    """[-1, 1]² -> [0, 1]²: ``(p + 1) / 2``."""
    return (points + 1) / 2


def pixel_to_ndc(points: torch.Tensor, size, *, align_corners: bool) -> torch.Tensor:
    """Pixels -> [-1, 1]², the grid ``grid_sample(..., align_corners=align_corners)`` reads.

    align_corners=True: ``2 x / (W - 1) - 1`` (kornia's normalize_pixel_coordinates);
    align_corners=False: ``(2 x + 1) / W - 1``.
    """
    if align_corners:
        return unit_to_ndc(pixel_to_unit(points, size))
    h, w = _size(size)
    points = _check_points(points)
    return (2 * points + 1) / _pair(w, h, points) - 1


def pixel_to_fraction(points: torch.Tensor, size) -> torch.Tensor:
    """Pixels -> fractions of the canvas size, ``x / W``, ``y / H``: OpenPose's normalised
    keypoints and Animate-X's pose-encoder input (the release's rule, not an align_corners one)."""
    h, w = _size(size)
    return _check_points(points) / _pair(w, h, points)


def fraction_to_pixel(points: torch.Tensor, size) -> torch.Tensor:
    """Fractions of the canvas size -> pixels, ``x · W``, ``y · H`` (inverse of :func:`pixel_to_fraction`)."""
    h, w = _size(size)
    return _check_points(points) * _pair(w, h, points)


def clamp_to_canvas(points: torch.Tensor, size) -> torch.Tensor:
    """Pixels clamped in place onto the canvas's pixel centres, 0..W-1 and 0..H-1; returns ``points``."""
    h, w = _size(size)
    points = _check_points(points)
    points[..., 0].clamp_(0, w - 1)
    points[..., 1].clamp_(0, h - 1)
    return points


def rescale_pixels(points: torch.Tensor, src, dst) -> torch.Tensor:
    """Pixels on a ``src`` canvas -> the same places on a ``dst`` canvas, ``(p + 0.5) s - 0.5`` with
    ``s = dst / src`` per axis: pixel centres map to pixel centres, the image's edges to its edges
    (the align_corners=False unit square shared by both canvases). Equal canvases return ``points``.
    """
    (h0, w0), (h1, w1) = _size(src), _size(dst)
    points = _check_points(points)
    if (h0, w0) == (h1, w1):
        return points
    return (points + 0.5) * _pair(w1 / w0, h1 / h0, points) - 0.5
