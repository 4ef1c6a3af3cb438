"""Face-ID rasterisation of 2-D triangles at pixel centres: which triangle covers each pixel.

A vectorised scanline rasteriser: for every (frame, triangle, pixel row) the covered span of pixel
centres is computed exactly, then spans are expanded and reduced with a scatter-max over draw
ranks. Inclusive edges (within ``_EDGE_EPS``), so shared edges leave no gaps; the last triangle in
draw order wins. No gradient (the renderer's differentiable pass is separate, :mod:`.render`).
Pixels as everywhere in the pack (:mod:`.coords`): x right, y down, centres at integers.
Used by the mesh builder (coverage check) and the renderer; it knows nothing of meshes.
"""
from __future__ import annotations

import torch

# Candidate pixels expanded per chunk in the face-ID pass (bounds its memory, ~100 MB).
_CHUNK = 2_000_000
# Edge tolerance in px: pixel centres this close outside a triangle still count as inside.
_EDGE_EPS = 1e-7


def _row_spans(tri: torch.Tensor, height: int, width: int):
    """Covered pixel-centre spans of triangles [N,3,2] (float64): (tri index, y, x0, count)."""
    ys = tri[..., 1]
    y0 = torch.ceil(ys.min(1).values - _EDGE_EPS).clamp(min=0).long()
    y1 = torch.floor(ys.max(1).values + _EDGE_EPS).clamp(max=height - 1).long()
    nrows = (y1 - y0 + 1).clamp(min=0)
    tid = torch.repeat_interleave(torch.arange(tri.shape[0]), nrows)
    if tid.numel() == 0:
        empty = torch.zeros(0, dtype=torch.long)
        return empty, empty, empty, empty
    start = torch.cumsum(nrows, 0) - nrows
    y = y0[tid] + torch.arange(tid.numel()) - start[tid]
    yf = y.to(tri.dtype)
    t = tri[tid]                                         # [R,3,2]
    a, b = t, t.roll(-1, dims=1)                         # edges a->b
    ya, yb, xa, xb = a[..., 1], b[..., 1], a[..., 0], b[..., 0]
    lo_y, hi_y = torch.minimum(ya, yb), torch.maximum(ya, yb)
    crosses = (yf[:, None] >= lo_y - _EDGE_EPS) & (yf[:, None] <= hi_y + _EDGE_EPS)
    dy = yb - ya
    flat = dy.abs() < 1e-12
    s = ((yf[:, None] - ya) / torch.where(flat, torch.ones_like(dy), dy)).clamp(0, 1)
    x = xa + s * (xb - xa)
    inf = torch.full_like(x, float("inf"))
    lo = torch.where(crosses, torch.where(flat, torch.minimum(xa, xb), x), inf).min(1).values
    hi = torch.where(crosses, torch.where(flat, torch.maximum(xa, xb), x), -inf).max(1).values
    x0 = torch.ceil(lo - _EDGE_EPS).clamp(min=0).long()
    x1 = torch.floor(hi + _EDGE_EPS).clamp(max=width - 1).long()
    count = (x1 - x0 + 1).clamp(min=0)
    keep = count > 0
    return tid[keep], y[keep], x0[keep], count[keep]


@torch.no_grad()
def rasterize(vertices: torch.Tensor, faces: torch.Tensor,
              size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Face-ID pass, sparse: (frame, y, x, k) of every covered pixel centre, k the index in
    ``faces`` of the face that covers it last (faces are given in draw order).

    vertices: [T,V,2] px (x, y), pixel centres at integers; faces: [F,3] in draw order. Works in
    the bounding box of all frames' triangles, so the buffers scale with the animated area.
    """
    h, w = size
    t_count = vertices.shape[0]
    n_faces = faces.shape[0]
    tri = vertices.detach().to(torch.float64)[:, faces].reshape(-1, 3, 2)   # [T*F,3,2]
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    area2 = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    valid = torch.nonzero(area2.abs() > 1e-12).squeeze(1)
    empty = torch.zeros(0, dtype=torch.long)
    if len(valid) == 0:
        return empty, empty, empty, empty
    lo = torch.ceil(tri[valid].amin((0, 1)) - _EDGE_EPS).clamp(min=0)
    hi = torch.floor(tri[valid].amax((0, 1)) + _EDGE_EPS)
    x_lo, y_lo = int(lo[0]), int(lo[1])
    bw, bh = min(int(hi[0]), w - 1) - x_lo + 1, min(int(hi[1]), h - 1) - y_lo + 1
    if bw <= 0 or bh <= 0:
        return empty, empty, empty, empty
    tri = tri - torch.tensor([x_lo, y_lo], dtype=torch.float64)          # box coordinates
    best = torch.full((t_count, bh, bw), -1, dtype=torch.int32)
    flat = best.view(-1)
    order = torch.arange(n_faces, dtype=torch.int32).repeat(t_count)
    # Chunk over triangles by their bounding-box size so the expanded spans stay bounded.
    bbox = (tri[valid].amax(1) - tri[valid].amin(1) + 1).clamp(min=1).prod(1)
    csum = torch.cumsum(bbox, 0)
    n_chunks = int(csum[-1] // _CHUNK) + 1
    cuts = torch.searchsorted(csum, torch.arange(1, n_chunks, dtype=csum.dtype) * _CHUNK)
    for ids in valid.tensor_split(cuts):
        tid, y, x0, count = _row_spans(tri[ids], bh, bw)
        if tid.numel() == 0:
            continue
        g = ids[tid]                                      # global (frame, face) index
        base = torch.div(g, n_faces, rounding_mode="floor") * (bh * bw) + y * bw + x0
        # Pixel k of a span sits at base + k: expand spans without per-pixel gathers.
        first = torch.cumsum(count, 0) - count
        total = int(first[-1] + count[-1])
        pix = torch.repeat_interleave(base - first, count, output_size=total) + torch.arange(total)
        src = torch.repeat_interleave(order[g], count, output_size=total)
        flat.scatter_reduce_(0, pix, src, reduce="amax")
    frame, y, x = torch.nonzero(best >= 0, as_tuple=True)
    return frame, y + y_lo, x + x_lo, best[frame, y, x]


def rasterize_face_ids(vertices: torch.Tensor, faces: torch.Tensor, rank: torch.Tensor,
                       size: tuple[int, int]) -> torch.Tensor:
    """Face-ID pass, dense: [T,H,W] int64 index of the visible face at every pixel centre, -1
    where no face covers it. rank: [F] draw rank of every face (a permutation; the highest rank
    covering a pixel wins).

    Two triangles splitting a 3x3 square along its diagonal; the shared diagonal goes to face 1:

    >>> v = torch.tensor([[[0.0, 0.0], [2.0, 0.0], [2.0, 2.0], [0.0, 2.0]]])
    >>> rasterize_face_ids(v, torch.tensor([[0, 1, 2], [0, 2, 3]]), torch.tensor([0, 1]), (3, 4))[0]
    tensor([[ 1,  0,  0, -1],
            [ 1,  1,  0, -1],
            [ 1,  1,  1, -1]])
    """
    order = torch.argsort(rank)
    frame, y, x, k = rasterize(vertices, faces[order], size)
    out = torch.full((vertices.shape[0], *size), -1, dtype=torch.long)
    out[frame, y, x] = order[k.long()]
    return out
