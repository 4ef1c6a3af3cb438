"""Keypoints from two of the places a user has them: typed JSON, or a mask (an OpenPose detector's
come through :func:`.pose.pose_skeleton`).

Both return :class:`~.skeleton.Skeleton`. Automatic keypoints replace AniClipart's straight skeleton
(scikit-geometry, not on PyPI; spec flexiclip.md §1.2) with a medial-axis skeleton from
``skimage.morphology.skeletonize``: joints, ends and midpoints of long branches (spec §4, node 3).
"""
from __future__ import annotations

import json

import numpy as np
import torch

from .coords import clamp_to_canvas, unit_to_pixel
from .errors import FlipbookInputError, check_mask, check_points, fail
from .skeleton import Skeleton, connect_components, graph_centre

# --- JSON ----------------------------------------------------------------------------------


def _parse_json(name: str, text):
    if not isinstance(text, str):
        return text
    text = text.strip()
    if not text:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise FlipbookInputError(f"{name}: expected JSON, got a parse error at line {exc.lineno} "
                                 f"column {exc.colno}: {exc.msg}") from None


def minimum_spanning_edges(points: torch.Tensor) -> torch.Tensor:
    """Bones for points given without any: the Euclidean minimum spanning tree (Prim)."""
    from scipy.sparse.csgraph import minimum_spanning_tree

    d = torch.cdist(points.double(), points.double()).numpy() + 1e-9  # 0 would mean "no edge"
    np.fill_diagonal(d, 0.0)
    mst = minimum_spanning_tree(d).tocoo()
    return torch.tensor(np.stack([mst.row, mst.col], 1), dtype=torch.long).reshape(-1, 2)


def skeleton_from_json(points_json, edges_json="", canvas: tuple[int, int] = (512, 512), *,
                       normalized: bool = False, root: int = -1) -> Skeleton:
    """Keypoints typed by a user.

    ``points_json``: ``[[x, y], ...]`` in pixels (or 0..1 with ``normalized``), or an object
    ``{"points": [...], "edges": [[i, j], ...], "root": r, "names": [...]}``.
    ``edges_json``: ``[[i, j], ...]`` (0-based); empty gives the minimum spanning tree.
    ``root``: -1 takes the object's root, else the graph centre.
    """
    data = _parse_json("points_json", points_json)
    names = None
    edges = _parse_json("edges_json", edges_json)
    if isinstance(data, dict):
        if "points" not in data:
            fail("points_json", 'a list of [x, y] points or an object with a "points" list', f"keys {sorted(data)}")
        if edges is None:
            edges = data.get("edges")
        names = data.get("names")
        if root < 0 and "root" in data:
            root = int(data["root"])
        data = data["points"]
    if data is None:
        fail("points_json", "a list of [x, y] points", "an empty string")
    try:
        pts = torch.tensor(data, dtype=torch.float32)
    except (TypeError, ValueError):
        fail("points_json", "a list of [x, y] number pairs", str(data)[:120])
    pts = check_points("points_json", pts, min_count=2)
    h, w = canvas
    if normalized:
        pts = unit_to_pixel(pts, canvas)
    check_points("points_json", pts, size=canvas)
    if edges is None or len(edges) == 0:
        edges_t = minimum_spanning_edges(pts)
    else:
        try:
            edges_t = torch.tensor(edges, dtype=torch.long).reshape(-1, 2)
        except (TypeError, ValueError, RuntimeError):
            fail("edges_json", "a list of [i, j] index pairs", str(edges)[:120])
        if edges_t.min() < 0 or edges_t.max() >= len(pts):
            fail("edges_json", f"indices between 0 and {len(pts) - 1}", str(edges_t.tolist())[:120])
    if names is not None and len(names) != len(pts):
        fail("points_json names", f"{len(pts)} names, one per point", f"{len(names)}")
    if root >= len(pts):
        fail("root", f"a keypoint index below {len(pts)} (or -1 for automatic)", f"{root}")
    if root < 0:
        root = graph_centre(len(pts), edges_t)
    return Skeleton(pts, edges_t, (int(h), int(w)), root, names)


def targets_from_json(text, source: Skeleton, name: str = "targets_json") -> Skeleton | None:
    """Where each source keypoint should go, typed or set by the warp-target editor: ``[[x, y] or
    null, ...]`` in pixels of the source's canvas (null, or a shorter list: that keypoint stays). The
    source skeleton with the points moved (same bones and root), or None for empty text."""
    data = _parse_json(name, text)
    if data is None:
        return None
    k = source.num_points
    if not isinstance(data, list) or len(data) > k:
        fail(name, f"a list of at most {k} [x, y] points (one per keypoint, or null)", str(data)[:120])
    pts = source.points.clone().float()
    for i, t in enumerate(data):
        if t is None:
            continue
        try:
            pts[i] = torch.tensor(t, dtype=torch.float32).reshape(2)
        except (TypeError, ValueError, RuntimeError):
            fail(f"{name}[{i}]", "an [x, y] point or null", str(t)[:40])
    h, w = source.canvas
    check_points(name, pts, size=(h, w))
    return Skeleton(pts, source.edges, (int(h), int(w)), source.root, source.names)


# --- automatic, from a mask ------------------------------------------------------------------


def _mask_from_image(image: torch.Tensor) -> torch.Tensor:
    """Alpha if the image has it, else ink: luminance below 0.95 (spec flexiclip.md §4, node 4)."""
    if image.shape[-1] == 4:
        return image[..., 3]
    lum = image[..., :3] @ torch.tensor([0.299, 0.587, 0.114], dtype=image.dtype)
    return (lum < 0.95).to(image.dtype)


def _skeleton_graph(skel: np.ndarray):
    """Nodes (ends and junction clusters) and branches (pixel paths) of a 1-px skeleton."""
    from scipy import ndimage

    k = np.ones((3, 3), dtype=np.int32)
    k[1, 1] = 0
    nb = ndimage.convolve(skel.astype(np.int32), k, mode="constant") * skel
    node_px = skel & ((nb == 1) | (nb >= 3))
    labels, n_nodes = ndimage.label(node_px, structure=np.ones((3, 3)))
    node_pos = []
    for i in range(1, n_nodes + 1):
        ys, xs = np.nonzero(labels == i)
        node_pos.append((xs.mean(), ys.mean()))
    h, w = skel.shape
    offs = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]
    visited = np.zeros_like(skel, dtype=bool)
    branches = []  # (node_a, node_b, [(x, y), ...])
    for y0, x0 in zip(*np.nonzero(node_px)):
        a = labels[y0, x0] - 1
        for dy, dx in offs:
            y, x = y0 + dy, x0 + dx
            if not (0 <= y < h and 0 <= x < w) or not skel[y, x] or visited[y, x]:
                continue
            if node_px[y, x]:
                b = labels[y, x] - 1
                if b != a and a < b:
                    branches.append((a, b, [(x0, y0), (x, y)]))
                continue
            path = [(x0, y0)]
            py, px = y0, x0
            cy, cx = y, x
            end = None
            while True:
                visited[cy, cx] = True
                path.append((cx, cy))
                nxt = None
                for ddy, ddx in offs:
                    ny, nx = cy + ddy, cx + ddx
                    if not (0 <= ny < h and 0 <= nx < w) or not skel[ny, nx] or (ny, nx) == (py, px):
                        continue
                    if node_px[ny, nx] and labels[ny, nx] - 1 != a or (node_px[ny, nx] and len(path) > 2):
                        end = labels[ny, nx] - 1
                        path.append((nx, ny))
                        break
                    if not node_px[ny, nx] and not visited[ny, nx]:
                        nxt = (ny, nx)
                if end is not None or nxt is None:
                    break
                py, px = cy, cx
                cy, cx = nxt
            if end is not None and end != a:
                branches.append((a, end, path))
    return node_pos, branches


def _path_length(path) -> float:
    p = np.asarray(path, dtype=np.float64)
    return float(np.linalg.norm(np.diff(p, axis=0), axis=1).sum()) if len(p) > 1 else 0.0


def auto_keypoints(mask: torch.Tensor, *, max_keypoints: int = 16, min_branch: float = 0.08,
                   image: torch.Tensor | None = None) -> Skeleton:
    """Keypoints and bones from a silhouette: the medial-axis skeleton's ends and junctions, then
    midpoints of the longest branches while fewer than ``max_keypoints``.

    Branches shorter than ``min_branch`` × the silhouette's size are spurs and pruned first; when
    there are still too many points, the shortest end branches go. The root is the joint deepest
    inside the shape (largest distance to the outline): the torso of a character.
    """
    from scipy import ndimage
    from skimage.morphology import skeletonize

    if mask is None and image is not None:
        mask = _mask_from_image(image if image.dim() == 3 else image[0])
    mask = check_mask("mask", mask)[0]
    if max_keypoints < 2:
        fail("max_keypoints", "at least 2", f"{max_keypoints}")
    m = (mask > 0.5).cpu().numpy()
    if m.sum() < 16:
        fail("mask", "a silhouette of at least 16 pixels (the picture looks empty: check alpha or mask)",
             f"{int(m.sum())} pixels")
    h, w = m.shape
    # Smooth the outline a little so that pixel noise does not grow spurs; keep every component.
    m = ndimage.binary_fill_holes(ndimage.binary_opening(m, iterations=1) | (ndimage.binary_erosion(m) & m))
    if m.sum() < 16:
        m = (mask > 0.5).cpu().numpy()
    skel = skeletonize(m)
    ys, xs = np.nonzero(m)
    size = max(xs.max() - xs.min(), ys.max() - ys.min(), 1)
    node_pos, branches = _skeleton_graph(skel)
    nodes = {i: np.asarray(p) for i, p in enumerate(node_pos)}
    edges = {}
    for a, b, path in branches:
        key = (min(a, b), max(a, b))
        if key not in edges or _path_length(path) < _path_length(edges[key]):
            edges[key] = path if a < b else path[::-1]

    def degree(n):
        return sum(1 for e in edges if n in e)

    def merge_through(n):
        """Remove a degree-2 node by joining its two branches."""
        e1, e2 = [e for e in edges if n in e]
        p1, p2 = edges.pop(e1), edges.pop(e2)
        if e1[0] == n:
            p1 = p1[::-1]                                   # now ends at n
        if e2[1] == n:
            p2 = p2[::-1]                                   # now starts at n
        a, b = (e1[0] if e1[1] == n else e1[1]), (e2[1] if e2[0] == n else e2[0])
        del nodes[n]
        if a != b:
            key = (min(a, b), max(a, b))
            path = p1 + p2[1:]
            edges[key] = path if a < b else path[::-1]

    def prune(limit_len: float, limit_count: int | None):
        while True:
            leaves = [(e, _path_length(p)) for e, p in edges.items() if degree(e[0]) == 1 or degree(e[1]) == 1]
            if len(nodes) <= 2 or not leaves:
                return
            e, ln = min(leaves, key=lambda t: t[1])
            if ln >= limit_len if limit_count is None else len(nodes) <= limit_count:
                return
            leaf = e[0] if degree(e[0]) == 1 else e[1]
            other = e[1] if leaf == e[0] else e[0]
            if len(edges) == 1:
                return
            edges.pop(e)
            del nodes[leaf]
            if degree(other) == 2:
                merge_through(other)

    prune(min_branch * size, None)
    prune(0.0, max_keypoints)
    for n in [n for n in list(nodes) if n in nodes and degree(n) == 2]:
        if n in nodes and degree(n) == 2:
            merge_through(n)
    # isolated nodes (a component whose skeleton is a single blob) are kept as they are
    # midpoints of long branches while there is room
    while len(nodes) < max_keypoints and edges:
        e, path = max(edges.items(), key=lambda t: _path_length(t[1]))
        if _path_length(path) < 2 * min_branch * size or len(path) < 5:
            break
        cum = np.concatenate([[0], np.cumsum(np.linalg.norm(np.diff(np.asarray(path, float), axis=0), axis=1))])
        mid = int(np.searchsorted(cum, cum[-1] / 2))
        n = max(nodes) + 1 if nodes else 0
        nodes[n] = np.asarray(path[mid], dtype=np.float64)
        edges.pop(e)
        edges[(e[0], n)] = path[: mid + 1]
        edges[(e[1], n) if e[1] < n else (n, e[1])] = path[mid:] if e[1] > n else path[mid:][::-1]
    ids = sorted(nodes)
    if len(ids) < 2:
        # a blob: two points along its principal axis
        c = np.array([xs.mean(), ys.mean()])
        cov = np.cov(np.stack([xs, ys]))
        v = np.linalg.eigh(cov)[1][:, -1]
        ext = np.sqrt(max(np.linalg.eigvalsh(cov)[-1], 1.0))
        pts = np.stack([c - v * ext, c + v * ext])
        edge_list = [[0, 1]]
    else:
        remap = {n: i for i, n in enumerate(ids)}
        pts = np.stack([nodes[n] for n in ids])
        edge_list = [[remap[a], remap[b]] for a, b in edges]
    pts_t = clamp_to_canvas(torch.tensor(pts, dtype=torch.float32), (h, w))
    edges_t = connect_components(pts_t, torch.tensor(edge_list, dtype=torch.long).reshape(-1, 2))
    return Skeleton(pts_t, edges_t, (h, w), _metric_centre(pts_t, edges_t))


def _metric_centre(points: torch.Tensor, edges: torch.Tensor) -> int:
    """The joint whose farthest joint, measured along the bones, is nearest: a character's chest."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import shortest_path

    k = len(points)
    e = edges.numpy()
    wts = (points[edges[:, 0]] - points[edges[:, 1]]).norm(dim=1).double().numpy() + 1e-6
    g = coo_matrix((wts, (e[:, 0], e[:, 1])), shape=(k, k))
    d = shortest_path(g, directed=False)
    return int(np.argmin(np.where(np.isfinite(d), d, 1e12).max(1)))
