"""Silhouette triangle mesh of a raster clipart, with the skeleton keypoints as mesh vertices.

Spec: flexiclip.md §1.3 (AniClipart's mesh) and §4 (scipy-only mesher fallback, ours). ComfyUI
type: ``FLIPBOOK_MESH``.

The mesh covers the silhouette's bilinear footprint dilated by ``margin_px``, so that every visible
pixel, and every texture sample with alpha > 0 after a warp, lies inside a triangle, and silhouette
gradients come through bilinear texture sampling (§2.5 point 1).
Coordinates are canvas pixels (x right, y down, pixel centres at integers), as in
:class:`~.skeleton.Skeleton`.

Draw order (``Mesh.z``, our rule for overlapping parts, spec §5): every face takes the skeleton
depth (bones from the root) of the bone nearest to its centroid; the renderer draws faces by
increasing z and then face index, the last one drawn wins. Parts far from the root (hands, feet)
therefore pass in front of the parts near it (torso) when they overlap. Set ``mesh.z`` to change it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import ndimage
from scipy.spatial import Delaunay, cKDTree

from .errors import check_image, check_mask, check_range, describe, fail
from .raster import rasterize_face_ids
from .skeleton import Skeleton

# Texels with an alpha above this belong to the silhouette that the mesh must cover.
_ALPHA_EPS = 1e-3
# Most vertices we accept (a dense 2-D factorisation and the renderer stay fast below it).
_MAX_VERTICES = 60_000
BACKENDS = ("scipy", "triangle")


@dataclass
class Mesh:
    """A 2-D triangle mesh bound to a texture. ComfyUI type ``FLIPBOOK_MESH``.

    vertices: [V,2] float64 rest positions in canvas px (x, y).
    faces: [F,3] int64, counter-clockwise in image coordinates (positive signed area
        ``(b-a) x (c-a)`` with y pointing down).
    keypoint_idx: [K] int64, ``vertices[keypoint_idx] == skeleton.points`` exactly.
    texture: [4,H,W] float32 RGBA, straight alpha, 0..1.
    canvas: (H, W).
    z: [F] float32 draw order (higher is drawn on top; ties by face index, last wins).

    >>> from comfyui_flipbook.pipelines.synthetic import synthetic_character
    >>> image, skeleton = synthetic_character(64)
    >>> mesh = build_mesh(image, None, skeleton)
    >>> mesh.texture.shape, mesh.canvas, bool(mesh.areas().min() > 0)
    (torch.Size([4, 64, 64]), (64, 64), True)
    >>> torch.equal(mesh.vertices[mesh.keypoint_idx].float(), skeleton.points)
    True
    """

    vertices: torch.Tensor
    faces: torch.Tensor
    keypoint_idx: torch.Tensor
    texture: torch.Tensor
    canvas: tuple[int, int]
    z: torch.Tensor
    # Lazily built operators (gradients, Laplacians, draw order, ...), keyed by name.
    cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def num_vertices(self) -> int:
        return int(self.vertices.shape[0])

    @property
    def num_faces(self) -> int:
        return int(self.faces.shape[0])

    def cached(self, key, build):
        """``build()`` once per mesh; operators depend only on the rest mesh. Built outside
        inference mode, so that a mesh made by a ComfyUI node also serves gradient code."""
        if key not in self.cache:
            with torch.inference_mode(False):
                self.cache[key] = build()
        return self.cache[key]

    def constant(self, name: str) -> torch.Tensor:
        """A field (vertices, faces, keypoint_idx, texture, z) as a normal tensor: fields made
        under torch.inference_mode() cannot be saved for backward."""
        return self.cached(("constant", name), lambda: getattr(self, name).clone())

    def areas(self) -> torch.Tensor:
        """[F] float64 rest triangle areas (positive)."""
        def build():
            v = self.vertices.clone()[self.faces.clone()]
            e1, e2 = v[:, 1] - v[:, 0], v[:, 2] - v[:, 0]
            return 0.5 * (e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0])
        return self.cached("areas", build)


def texture_and_alpha(image: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """RGBA texture [4,H,W] from an [H,W,3|4] picture. Alpha: the mask if given (times the
    picture's alpha for RGBA), else the alpha channel, else ``luminance < 0.95`` (spec §4 node 4)."""
    h, w, c = image.shape
    rgb = image[..., :3].float().clamp(0, 1)
    if mask is not None:
        alpha = mask.float().clamp(0, 1)
        if c == 4:
            alpha = alpha * image[..., 3].float().clamp(0, 1)
    elif c == 4:
        alpha = image[..., 3].float().clamp(0, 1)
    else:
        lum = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
        alpha = (lum < 0.95).float()
    return torch.cat([rgb, alpha[..., None]], -1).permute(2, 0, 1).contiguous()


def _check_inputs(image, mask, skeleton):
    img = check_image("image", image)
    if img.shape[0] != 1:
        fail("image", "one picture (a batch of 1)", describe(image))
    img = img[0]
    h, w = int(img.shape[0]), int(img.shape[1])
    if mask is not None:
        m = check_mask("mask", mask)
        if m.shape[0] != 1 or tuple(m.shape[1:]) != (h, w):
            fail("mask", f"one {w}x{h} mask matching the image", describe(mask))
        mask = m[0]
    if not isinstance(skeleton, Skeleton):
        fail("skeleton", "a FLIPBOOK_SKELETON (Skeleton)", describe(skeleton))
    if tuple(int(s) for s in skeleton.canvas) != (h, w):
        fail("skeleton", f"keypoints on the {w}x{h} image canvas (Skeleton.scaled_to rescales)",
             f"canvas {skeleton.canvas[1]}x{skeleton.canvas[0]}")
    skeleton.validate(min_points=2)
    return img, mask


def _contours(domain: np.ndarray, simplify_eps: float, spacing: float) -> list[np.ndarray]:
    """Closed boundary polylines (x, y) of a boolean mask, outer borders and holes alike,
    simplified (Douglas-Peucker) then resampled so that no segment is longer than ``spacing``."""
    from skimage.measure import approximate_polygon, find_contours

    padded = np.pad(domain, 1).astype(np.float32)
    out = []
    for c in find_contours(padded, 0.5):
        c = c[:, ::-1] - 1.0                        # (row, col) of the padded mask -> (x, y)
        if simplify_eps > 0:
            c = approximate_polygon(c, simplify_eps)
        if len(c) < 4:                              # closed: first == last
            continue
        a, b = c[:-1], c[1:]
        n = np.maximum(np.ceil(np.linalg.norm(b - a, axis=1) / spacing), 1).astype(int)
        seg = np.repeat(np.arange(len(a)), n)
        frac = (np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)) / np.repeat(n, n)
        out.append(a[seg] + frac[:, None] * (b - a)[seg])
    return out


def _unique_keypoints(kp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct keypoints in first-seen order, and the index of each keypoint among them
    (identical keypoints share one vertex)."""
    _, first, inv = np.unique(kp, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first)
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return kp[np.sort(first)], rank[inv.ravel()]


def _thin(samples: np.ndarray, keypoints: np.ndarray, near_kp: float, min_dist: float = 0.25):
    """Samples with none closer than ``near_kp`` to a keypoint and none closer than ``min_dist``
    to an earlier kept sample (deterministic, index order): no duplicate or near-duplicate points."""
    if len(samples) == 0:
        return samples
    samples = samples[cKDTree(keypoints).query(samples)[0] >= near_kp]
    pairs = cKDTree(samples).query_pairs(min_dist, output_type="ndarray")
    keep = np.ones(len(samples), bool)
    if len(pairs):
        pairs = np.sort(pairs, 1)
        for a, b in pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))].tolist():
            if keep[a]:
                keep[b] = False
    return samples[keep]


def _signed_area2(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    return (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])


def _lookup(img: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Bilinear look-up of a float image at (x, y) points; outside reads 0."""
    return ndimage.map_coordinates(img, [xy[:, 1], xy[:, 0]], order=1, mode="constant", cval=0.0)


def _mesh_scipy(domain, core, keypoints, spacing, simplify_eps, seed=0):
    """Boundary samples + jittered hexagonal interior lattice + keypoints -> Delaunay, keeping the
    faces whose centroid is in the domain (and any face that covers a ``core`` pixel centre)."""
    h, w = domain.shape
    inside = ndimage.distance_transform_edt(domain).astype(np.float32)
    boundary = _contours(domain, simplify_eps, spacing)
    bnd = np.concatenate(boundary) if boundary else np.zeros((0, 2))
    # Hexagonal lattice (equilateral triangles of area 0.87*max_area), jittered by 10% to break
    # Delaunay ties deterministically; only points at least half a spacing inside the boundary.
    dy = spacing * math.sqrt(3) / 2
    rows = np.arange(0.0, h + dy, dy)
    cols = np.arange(0.0, w + spacing, spacing)
    gx = cols[None, :] + (np.arange(len(rows)) % 2)[:, None] * spacing / 2
    gy = np.broadcast_to(rows[:, None], gx.shape)
    grid = np.stack([gx.ravel(), gy.ravel()], 1)
    grid += np.random.default_rng(seed).uniform(-0.1, 0.1, grid.shape) * spacing
    grid = grid[_lookup(inside, grid) >= 0.5 * spacing + 0.5]
    kpu, kp_vertex = _unique_keypoints(keypoints)
    pts = np.concatenate([kpu, _thin(np.concatenate([bnd, grid]), kpu, 0.35 * spacing)])
    dom = domain.astype(np.float32)

    def triangulate(points):
        t = Delaunay(points)
        f = t.simplices.astype(np.int64)
        return t, f, _lookup(dom, points[f].mean(1)) >= 0.5

    tri, faces, keep_f = triangulate(pts)
    # One refinement round: split the faces larger than max_area (= spacing²/2) at their centroid.
    big = faces[keep_f][np.abs(_signed_area2(pts, faces[keep_f])) > spacing ** 2]
    if len(big):
        pts = np.concatenate([pts, _thin(pts[big].mean(1), kpu, 0.35 * spacing)])
        tri, faces, keep_f = triangulate(pts)
    # Safety net: every silhouette pixel must be covered (the renderer needs it); add back the
    # dropped Delaunay faces containing pixels that the kept faces miss.
    kept = faces[keep_f]
    covered = rasterize_face_ids(torch.from_numpy(pts)[None], torch.from_numpy(kept),
                                 torch.arange(len(kept)), domain.shape)[0].numpy() >= 0
    ys, xs = np.nonzero(core & ~covered)
    if len(xs):
        s = tri.find_simplex(np.stack([xs, ys], 1).astype(np.float64))
        keep_f[s[s >= 0]] = True
    return pts, faces[keep_f], kp_vertex


def _mesh_triangle(domain, keypoints, spacing, simplify_eps, max_area, min_angle):
    """Shewchuk's Triangle on the boundary segments + keypoints, quality flags ``pq<angle>a<area>``
    as AniClipart; faces whose centroid falls in a hole or outside are dropped afterwards."""
    try:
        import triangle as tr
    except ImportError:
        fail("backend", "the 'triangle' package for backend='triangle' (pip install triangle), "
             "or backend='scipy'", "triangle is not installed")
    kpu, kp_vertex = _unique_keypoints(keypoints)
    pts, segs, n = [kpu], [], len(kpu)
    for c in _contours(domain, simplify_eps, spacing):
        c = _thin(c, kpu, 0.35 * spacing)           # keypoints replace nearby boundary samples
        if len(c) < 3:
            continue
        i = np.arange(len(c)) + n
        segs.append(np.stack([i, np.roll(i, -1)], 1))
        pts.append(c)
        n += len(c)
    pts = np.concatenate(pts)
    segs = np.concatenate(segs) if segs else np.zeros((0, 2), np.int64)
    out = tr.triangulate({"vertices": pts, "segments": segs}, f"pq{min_angle:g}a{max_area:g}")
    v = np.asarray(out["vertices"], np.float64)
    f = np.asarray(out["triangles"], np.int64)
    # Triangle keeps input vertices first and in order (spec §1.3): keypoints keep exact values.
    v[: len(kpu)] = kpu
    f = f[_lookup(domain.astype(np.float32), v[f].mean(1)) >= 0.5]
    return v, f, kp_vertex


def _face_depth(vertices, faces, skeleton: Skeleton) -> np.ndarray:
    """Skeleton depth of the bone (or keypoint) nearest to each face centroid (see module doc)."""
    depth = skeleton.depths().numpy()
    pts = skeleton.points.double().numpy()
    cen = vertices[faces].mean(1)
    edges = skeleton.edges.numpy()
    if len(edges) == 0:
        return depth[cKDTree(pts).query(cen)[1]].astype(np.float32)
    a, b = pts[edges[:, 0]], pts[edges[:, 1]]
    ab = b - a
    t = ((cen[:, None] - a[None]) * ab[None]).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-12)[None]
    proj = a[None] + np.clip(t, 0, 1)[..., None] * ab[None]
    nearest = np.linalg.norm(cen[:, None] - proj, axis=-1).argmin(1)
    bone_depth = np.maximum(depth[edges[:, 0]], depth[edges[:, 1]])
    return bone_depth[nearest].astype(np.float32)


def build_mesh(image: torch.Tensor, mask: torch.Tensor | None, skeleton: Skeleton, *,
               max_area: float = 30.0, min_angle: float = 20.0, margin_px: float = 2.0,
               simplify_eps: float = 1.0, backend: str = "scipy") -> Mesh:
    """Triangulate the silhouette of ``image`` with the skeleton keypoints as vertices.

    Args:
        image: [H,W,3|4] (or [1,H,W,3|4]) float 0..1.
        mask: [H,W] (or [1,H,W]) 0..1, or None: alpha if RGBA, else ``luminance < 0.95``.
        skeleton: keypoints on the same canvas (H, W); at least 2 keypoints, all on the image.
        max_area: largest triangle area in px^2 (AniClipart: 30 on a 256 canvas).
        min_angle: smallest triangle angle in degrees (honoured by backend="triangle"; the scipy
            mesher gets near-equilateral triangles from its lattice instead).
        margin_px: dilation in px of the silhouette's bilinear footprint (its pixels and their
            8 neighbours), so that its border, and every texture sample with alpha > 0 after a
            warp, lies inside triangles.
        simplify_eps: Douglas-Peucker tolerance of the boundary in px (0 keeps every contour point).
        backend: "scipy" (default, no extra dependency) or "triangle" (pip install triangle).

    Every connected part of the silhouette is meshed (holes stay holes); keypoints outside the
    silhouette get a small disc of mesh around them. Deterministic.
    """
    img, mask = _check_inputs(image, mask, skeleton)
    check_range("max_area", float(max_area), 0.5, 1e6)
    check_range("min_angle", float(min_angle), 0.0, 34.0)
    check_range("margin_px", float(margin_px), 0.0, 64.0)
    check_range("simplify_eps", float(simplify_eps), 0.0, 16.0)
    if backend not in BACKENDS:
        fail("backend", "'scipy' or 'triangle'", repr(backend))
    texture = texture_and_alpha(img, mask)
    h, w = texture.shape[1:]
    core = texture[3].numpy() > _ALPHA_EPS
    if not core.any():
        fail("mask", "a non-empty silhouette (some pixels with alpha/mask > 0)", "an empty mask")
    spacing = math.sqrt(2.0 * max_area)
    # Texels whose bilinear footprint reaches a visible texel (the 3x3 neighbourhood): after any
    # warp, every sample with alpha > 0 then lies inside the mesh. The margin is added beyond it.
    support = ndimage.binary_dilation(core, np.ones((3, 3), bool))
    domain = ndimage.distance_transform_edt(~support) <= margin_px if margin_px > 0 else support
    kp = skeleton.points.double().numpy()
    # A disc around every keypoint: keypoints slightly outside the silhouette are still meshed.
    r_kp = max(margin_px + 0.5, 0.5 * spacing)
    yy, xx = np.mgrid[0:h, 0:w]
    for x, y in kp:
        x0, x1 = int(max(math.floor(x - r_kp), 0)), int(min(math.ceil(x + r_kp), w - 1))
        y0, y1 = int(max(math.floor(y - r_kp), 0)), int(min(math.ceil(y + r_kp), h - 1))
        sub = (xx[y0:y1 + 1, x0:x1 + 1] - x) ** 2 + (yy[y0:y1 + 1, x0:x1 + 1] - y) ** 2
        domain[y0:y1 + 1, x0:x1 + 1] |= sub <= r_kp ** 2
    est = domain.sum() / (0.433 * spacing ** 2) * 0.5 + 4 * domain.sum() ** 0.5
    if est > _MAX_VERTICES:
        fail("max_area", f"a triangle area giving at most {_MAX_VERTICES} vertices",
             f"{max_area} (about {int(est)} vertices)")
    if backend == "triangle":
        v, f, kp_vertex = _mesh_triangle(domain, kp, spacing, simplify_eps, max_area, min_angle)
    else:
        v, f, kp_vertex = _mesh_scipy(domain, support, kp, spacing, simplify_eps)
    # Orient counter-clockwise in image coordinates (positive (b-a)x(c-a), y down), drop
    # degenerate faces and unreferenced vertices.
    a2 = _signed_area2(v, f)
    f = np.where((a2 < 0)[:, None], f[:, [0, 2, 1]], f)
    f = f[np.abs(a2) > 1e-6]
    used = np.zeros(len(v), bool)
    used[f.ravel()] = True
    used[kp_vertex] = True
    remap = np.cumsum(used) - 1
    v, f, kp_vertex = v[used], remap[f], remap[kp_vertex]
    vertices = torch.from_numpy(np.ascontiguousarray(v))
    vertices[torch.from_numpy(kp_vertex)] = skeleton.points.double()
    z = torch.from_numpy(_face_depth(v, f, skeleton))
    return Mesh(vertices=vertices, faces=torch.from_numpy(np.ascontiguousarray(f)),
                keypoint_idx=torch.from_numpy(kp_vertex.astype(np.int64)), texture=texture,
                canvas=(int(h), int(w)), z=z)
