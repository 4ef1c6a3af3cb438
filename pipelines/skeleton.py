"""The one keypoint format of the pack, with converters at the edges.

Two shapes of the same thing, both in canvas pixels (:mod:`.coords`: x right, y down, pixel
centres at integers), with an optional detection confidence (0 = missing):

- :class:`Skeleton`: K keypoints of one pose with their bones and a root (``FLIPBOOK_SKELETON``);
- :class:`KeypointTrack`: the same K keypoints over F frames, [F, K, 2]. A trajectory's explicit
  tracks (:class:`~.bezier.Trajectory`) and a pose sequence (:class:`~.pose.PoseSequence`) are
  keypoint tracks.

Converters to these live at the edges: typed JSON and masks (:mod:`.keypoints`), OpenPose JSON
(:mod:`.pose.openpose`), a Bezier trajectory's frames (:meth:`.bezier.Trajectory.frames`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from .coords import rescale_pixels
from .errors import check_finite, check_points, fail


def bone_tree(num_points: int, edges: torch.Tensor, root: int) -> tuple[list[int], list[int]]:
    """Breadth-first tree of a bone graph from ``root``: (depth, parent) of every joint.

    depth: bones from the root, -1 where unreachable; parent: the joint it was reached from,
    -1 for the root and unreachable joints. Neighbours are visited in edge order.

    >>> bone_tree(4, torch.tensor([[0, 1], [1, 2]]), 1)
    ([1, 0, 1, -1], [1, -1, 1, -1])
    """
    adj: list[list[int]] = [[] for _ in range(num_points)]
    for a, b in edges.tolist():
        adj[a].append(b)
        adj[b].append(a)
    depth, parent = [-1] * num_points, [-1] * num_points
    depth[root] = 0
    queue = [root]
    while queue:
        i = queue.pop(0)
        for j in adj[i]:
            if depth[j] < 0:
                depth[j], parent[j] = depth[i] + 1, i
                queue.append(j)
    return depth, parent


def graph_centre(num_points: int, edges: torch.Tensor) -> int:
    """The joint with the smallest eccentricity (bones to the farthest joint; a joint that cannot be
    reached counts one more than the farthest that can): a sensible root when none is given."""
    best, best_ecc = 0, math.inf
    for r in range(num_points):
        depth = bone_tree(num_points, edges, r)[0]
        ecc = max(depth) + 1 if min(depth) < 0 else max(depth)
        if ecc < best_ecc:
            best, best_ecc = r, ecc
    return best


def connect_components(points: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """``edges`` plus the shortest bones that join separate pieces of the graph into one whole:
    while there are several, the piece of point 0 gets a bone to its nearest point elsewhere."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    k = len(points)
    e = edges.tolist()
    while True:
        a = coo_matrix((np.ones(len(e)), ([x for x, _ in e], [y for _, y in e])), shape=(k, k)) if e else \
            coo_matrix((k, k))
        n, lab = connected_components(a, directed=False)
        if n <= 1:
            return torch.tensor(e, dtype=torch.long).reshape(-1, 2)
        d = torch.cdist(points, points)
        lab_t = torch.as_tensor(lab)
        d[lab_t[:, None] == lab_t[None, :]] = math.inf
        d[lab_t != 0] = math.inf                       # join component 0 to its nearest neighbour
        i, j = divmod(int(d.argmin()), k)
        e.append([i, j])


def _check_conf(conf, shape: tuple[int, ...], name: str):
    if conf is None:
        return None
    conf = torch.as_tensor(conf, dtype=torch.float32)
    if tuple(conf.shape) != shape:
        fail(name, f"one confidence per keypoint {shape}", f"{tuple(conf.shape)}")
    return check_finite(name, conf)


@dataclass
class Skeleton:
    """K keypoints of one pose, with bones. ComfyUI type ``FLIPBOOK_SKELETON``.

    points: [K, 2] float32 canvas pixels (x, y).
    edges: [E, 2] int64 bones as pairs of point indices.
    canvas: (H, W) of the picture the points are on.
    root: index of the root joint (presets keep it still; bone depths count from it).
    names: K joint names, or None.
    conf: [K] float32 detection confidence (0 = missing, filled in), or None (all present).

    >>> sk = Skeleton(torch.tensor([[10.0, 10.0], [10.0, 30.0], [20.0, 40.0]]), [[0, 1], [1, 2]], (64, 48))
    >>> sk.depths().tolist(), sk.parents()
    ([0.0, 1.0, 2.0], [-1, 0, 1])
    >>> sk.scaled_to((128, 96)).points[0].tolist()
    [20.5, 20.5]
    """

    points: torch.Tensor
    edges: torch.Tensor
    canvas: tuple[int, int]
    root: int = 0
    names: list[str] | None = field(default=None)
    conf: torch.Tensor | None = None

    def __post_init__(self):
        self.points = torch.as_tensor(self.points, dtype=torch.float32).reshape(-1, 2)
        self.edges = torch.as_tensor(self.edges, dtype=torch.long).reshape(-1, 2)
        k = self.points.shape[0]
        if self.edges.numel() and (self.edges.min() < 0 or self.edges.max() >= k):
            fail("edges", f"bone indices between 0 and {k - 1}", f"{self.edges.tolist()}")
        if not 0 <= self.root < max(k, 1):
            fail("root", f"a keypoint index below {k}", f"{self.root}")
        self.conf = _check_conf(self.conf, (k,), "keypoint confidence")

    @property
    def num_points(self) -> int:
        return int(self.points.shape[0])

    def validate(self, *, min_points: int = 2) -> "Skeleton":
        check_points("keypoints", self.points, min_count=min_points, size=self.canvas)
        return self

    def with_points(self, points: torch.Tensor) -> "Skeleton":
        return replace(self, points=points)

    def scaled_to(self, canvas: tuple[int, int]) -> "Skeleton":
        """The same skeleton on another canvas size (:func:`.coords.rescale_pixels`)."""
        h1, w1 = canvas
        return replace(self, points=rescale_pixels(self.points, self.canvas, canvas), canvas=(int(h1), int(w1)))

    def depths(self) -> torch.Tensor:
        """[K] float32 graph distance (in bones) of every joint from the root; unreachable joints
        get the largest depth + 1."""
        depth = bone_tree(self.num_points, self.edges, self.root)[0]
        m = max(depth)
        return torch.tensor([d if d >= 0 else m + 1 for d in depth], dtype=torch.float32)

    def parents(self) -> list[int]:
        """Parent of every joint in the breadth-first tree from the root (-1: the root, or unreachable)."""
        return bone_tree(self.num_points, self.edges, self.root)[1]


@dataclass
class KeypointTrack:
    """K keypoints over F frames: the pack's one keypoint-track type.

    points: [F, K, 2] float32 canvas pixels (x, y).
    conf: [F, K] float32 detection confidence (0 = missing), or None (all present).
    canvas: (H, W) of the picture the points are on.

    >>> track = KeypointTrack(torch.zeros(3, 2, 2), None, (64, 64))
    >>> track.frames, track.num_points, track.present.all().item()
    (3, 2, True)
    """

    points: torch.Tensor
    conf: torch.Tensor | None
    canvas: tuple[int, int]
    _kind = "tracks"                  # what error messages call it (not a field)

    def __post_init__(self):
        self.points = torch.as_tensor(self.points, dtype=torch.float32)
        if self.points.dim() != 3 or self.points.shape[-1] != 2:
            fail(self._kind, "keypoints [frames, K, 2]", f"{tuple(self.points.shape)}")
        check_finite(self._kind, self.points)
        self.conf = _check_conf(self.conf, tuple(self.points.shape[:2]), f"{self._kind} confidence")
        self.canvas = (int(self.canvas[0]), int(self.canvas[1]))

    @property
    def frames(self) -> int:
        return int(self.points.shape[0])

    @property
    def num_points(self) -> int:
        return int(self.points.shape[1])

    @property
    def present(self) -> torch.Tensor:
        """[F, K] bool: detected (confidence > 0; everything when there is no confidence)."""
        if self.conf is None:
            return torch.ones(self.points.shape[:2], dtype=torch.bool)
        return self.conf > 0

    def select(self, index):
        """The frames ``index`` (an int, slice or index tensor) as a track of the same kind."""
        return replace(self, points=self.points[index], conf=None if self.conf is None else self.conf[index])

    def scaled_to(self, canvas: tuple[int, int]):
        """The same track on another canvas size (:func:`.coords.rescale_pixels`)."""
        return replace(self, points=rescale_pixels(self.points, self.canvas, canvas), canvas=tuple(canvas))
