"""The one keypoint format of the pack, with converters at the edges.

A :class:`Skeleton` is K keypoints in canvas pixels (x right, y down, pixel centres at integers),
bones as index pairs, the canvas size and a root joint. ComfyUI type: ``FLIPBOOK_SKELETON``.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from .coords import rescale_pixels
from .errors import check_points, fail


@dataclass
class Skeleton:
    points: torch.Tensor                      # [K, 2] float32, pixels (x, y)
    edges: torch.Tensor                       # [E, 2] int64 bone index pairs
    canvas: tuple[int, int]                   # (H, W)
    root: int = 0
    names: list[str] | None = field(default=None)

    def __post_init__(self):
        self.points = torch.as_tensor(self.points, dtype=torch.float32).reshape(-1, 2)
        self.edges = torch.as_tensor(self.edges, dtype=torch.long).reshape(-1, 2)
        k = self.points.shape[0]
        if self.edges.numel() and (self.edges.min() < 0 or self.edges.max() >= k):
            fail("edges", f"bone indices between 0 and {k - 1}", f"{self.edges.tolist()}")
        if not 0 <= self.root < max(k, 1):
            fail("root", f"a keypoint index below {k}", f"{self.root}")

    @property
    def num_points(self) -> int:
        return int(self.points.shape[0])

    def validate(self, *, min_points: int = 2) -> "Skeleton":
        check_points("keypoints", self.points, min_count=min_points, size=self.canvas)
        return self

    def with_points(self, points: torch.Tensor) -> "Skeleton":
        return replace(self, points=points)

    def scaled_to(self, canvas: tuple[int, int]) -> "Skeleton":
        """The same skeleton on another canvas size (pixel centres map to pixel centres)."""
        h1, w1 = canvas
        return replace(self, points=rescale_pixels(self.points, self.canvas, canvas), canvas=(int(h1), int(w1)))

    def depths(self) -> torch.Tensor:
        """Graph distance (in bones) of every joint from the root; unreachable joints get the max+1."""
        k = self.num_points
        adj: list[list[int]] = [[] for _ in range(k)]
        for a, b in self.edges.tolist():
            adj[a].append(b)
            adj[b].append(a)
        depth = [-1] * k
        depth[self.root] = 0
        queue = [self.root]
        while queue:
            i = queue.pop(0)
            for j in adj[i]:
                if depth[j] < 0:
                    depth[j] = depth[i] + 1
                    queue.append(j)
        m = max(depth)
        return torch.tensor([d if d >= 0 else m + 1 for d in depth], dtype=torch.float32)

    def parents(self) -> list[int]:
        """Parent of every joint in the BFS tree from the root (root's parent is -1)."""
        k = self.num_points
        adj: list[list[int]] = [[] for _ in range(k)]
        for a, b in self.edges.tolist():
            adj[a].append(b)
            adj[b].append(a)
        parent = [-2] * k
        parent[self.root] = -1
        queue = [self.root]
        while queue:
            i = queue.pop(0)
            for j in adj[i]:
                if parent[j] == -2:
                    parent[j] = i
                    queue.append(j)
        return [p if p != -2 else -1 for p in parent]
