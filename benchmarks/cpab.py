"""CPAB warper benchmark, side by side in one run (spec cpab.md §3.2, §4.1-4.2).

512² RGB picture, 6×6 cells (zero boundary), 8 keypoints moved up to 40 px:
- fit: one target (LM, 10 iterations max) and a 24-frame track (warm-started LM), per frame;
- dense flow: T on a 128² grid (50 steps) + bilinear upsampling of the displacement, per frame;
- warp: grid_sample of the picture, per frame, against a memory copy of the same bytes;
- integration: ours (coarse grid + upsampling, fused cell lookup) against a straightforward
  per-step loop over every pixel at full resolution (advanced-index gather + batched matmul).

Run: PYTHONPATH=<dir holding comfyui_flipbook> python benchmarks/cpab.py [--threads 2]
The last line is ``RESULT fit_warp_s_per_frame=... warp_vs_memcpy=... integration_speedup=...``.
"""
from __future__ import annotations

import argparse
import math
import os
import time

import torch

from comfyui_flipbook.pipelines import cpab
from comfyui_flipbook.pipelines.cpab.transform import cell_index, identity_grid, step_tables

SIZE = 512
FRAMES = 24


def best_of(fn, repeat=3):
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def keypoints(seed=1, k=8, max_move=40.0, margin=60):
    g = torch.Generator().manual_seed(seed)
    src = torch.rand(k, 2, generator=g) * (SIZE - 2 * margin) + margin
    ang = torch.rand(k, generator=g) * 2 * math.pi
    mag = torch.rand(k, generator=g) * max_move
    return src, src + torch.stack([ang.cos(), ang.sin()], -1) * mag[:, None]


def straightforward_dense(params: cpab.CPABParams, size, nsteps=50):
    """The textbook loop at full resolution: every pixel, every step, gather its cell's 2×3 matrix
    and multiply (what a direct port of libcpab's fast path does)."""
    tess = params.tess
    table = step_tables(tess, params.theta[:1], nsteps, params.t[:1]).float().view(-1, 2, 3)
    p = identity_grid(size).reshape(-1, 2)
    for _ in range(nsteps):
        a = table[cell_index(p[:, 0], p[:, 1], tess.nx, tess.ny)]
        p = (a[:, :, :2] @ p.unsqueeze(-1)).squeeze(-1) + a[:, :, 2]
    return p.view(1, *size, 2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    image = torch.rand(1, 3, SIZE, SIZE)
    src, dst = keypoints()
    size = (SIZE, SIZE)
    cells = cpab.default_cells(6, size)
    print(f"CPAB benchmark: {SIZE}x{SIZE}, cells {cells}, 8 keypoints (<=40 px), {torch.get_num_threads()} threads, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    cpab.tessellation(*cells, True, False).prior_precision(0.1)       # build + cache the basis once

    # --- fit ---------------------------------------------------------------------------------
    res = {}

    def fit_one():
        res["one"] = cpab.fit_keypoints(src, dst, size, cells=cells)

    t_fit_one = best_of(fit_one)
    t = torch.linspace(0, 1, FRAMES).view(-1, 1, 1)
    track = src + (dst - src) * torch.sin(math.pi * t) ** 2        # smooth out-and-back, like a Bezier preset

    def fit_track():
        res["track"] = cpab.fit_keypoints(src, track, size, cells=cells, warm_start=True)

    t_fit_track = best_of(fit_track, 2) / FRAMES
    params = res["track"][0]

    # --- dense flow and warp ----------------------------------------------------------------------
    grid = {}

    def dense():
        grid["g"] = cpab.sampling_grid(params, size, flow_resolution=128, nsteps=50)

    t_dense = best_of(dense, 2) / FRAMES
    g = grid["g"]

    def do_warp():
        cpab.warp(image, g)

    t_warp = best_of(do_warp) / FRAMES
    warp_bytes = (image[0].numel() + g[0].numel() + image[0].numel()) * 4      # read picture + grid, write frame
    # a copy moves 2× its size; copy the bytes of all frames at once, like the warp (out of cache)
    big = torch.ones(FRAMES * warp_bytes // 8)
    big_dst = torch.empty_like(big)
    t_copy = best_of(lambda: big_dst.copy_(big), 5) / FRAMES
    buf, dst_buf = big[: warp_bytes // 8], big_dst[: warp_bytes // 8]
    t_copy_hot = best_of(lambda: dst_buf.copy_(buf), 20)

    # --- integration against the straightforward full-resolution loop ------------------------------
    one = cpab.CPABParams(params.theta[FRAMES // 4:FRAMES // 4 + 1], cells, True, False, size)
    t_ours = best_of(lambda: cpab.sampling_grid(one, size, flow_resolution=128, nsteps=50), 3)
    ref = {}

    def naive():
        ref["g"] = straightforward_dense(one, size)

    t_naive = best_of(naive, 1)
    approx = cpab.sampling_grid(one, size, flow_resolution=128, nsteps=50)
    upsample_err = ((approx - ref["g"].clamp(0, 1)) * (SIZE - 1)).norm(dim=-1)

    fit_err = res["track"][1]
    fit_warp = t_fit_track + t_dense + t_warp
    rows = [
        ("fit, one target (LM <=10 it, 20 steps)", t_fit_one, f"max error {float(res['one'][1].max()):.3f} px"),
        ("fit, 24-frame track, warm-started, per frame", t_fit_track, f"max error {float(fit_err.max()):.3f} px"),
        ("dense flow 128² x 50 steps + upsample, per frame", t_dense, f"{128 * 128 * 50 / 1e6:.2f} M point-steps"),
        ("warp (grid_sample 512² RGB), per frame", t_warp, f"{warp_bytes / 1e6:.1f} MB moved"),
        ("memory copy of the same bytes, per frame of 24", t_copy,
         f"(one frame's bytes alone, in cache: {t_copy_hot * 1e3:.2f} ms)"),
        ("fit + flow + warp, per frame (track)", fit_warp, "goal < 0.2 s"),
        ("integration: straightforward, 512² x 50 steps", t_naive, f"{SIZE * SIZE * 50 / 1e6:.1f} M point-steps"),
        ("integration: ours, 128² x 50 + upsample", t_ours,
         f"vs full res: mean {float(upsample_err.mean()):.2f} px, max {float(upsample_err.max()):.2f} px"),
    ]
    for name, sec, note in rows:
        print(f"{name:<52} {sec * 1e3:9.2f} ms   {note}")
    print(f"warp / memcpy = {t_warp / t_copy:.2f} (goal <= 2); integration speed-up = {t_naive / t_ours:.1f}x")
    print(f"RESULT fit_warp_s_per_frame={fit_warp:.4f} warp_vs_memcpy={t_warp / t_copy:.2f} "
          f"integration_speedup={t_naive / t_ours:.1f}")


if __name__ == "__main__":
    main()
