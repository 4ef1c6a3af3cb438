"""Animate-X benchmark: guided-step time and peak memory, cached vs per-step conditioning.

Run: python benchmarks/animatex.py [--frames 8] [--steps 4] [--gpu-only]
(with the pack importable as comfyui_flipbook). CPU part: the tiny config (spec §3.3) at 64x64.
GPU part (only when CUDA is available): the full-size UNet with random weights in fp16, 32 frames at
512x768 in one pass and 120 frames in 32-frame windows with overlap 8. Last line:
``RESULT step_s=<tiny seconds per guided step> cache_speedup=<per-step-conditioning / cached time>``.
"""
from __future__ import annotations

import argparse
import resource
import time

import torch

from comfyui_flipbook.pipelines.animatex import pipeline as S
from comfyui_flipbook.pipelines.animatex.settings import FULL, TINY
from comfyui_flipbook.pipelines.animatex.unet import build_unet, count_parameters
from comfyui_flipbook.pipelines.diffusion.sampler import context_windows
from comfyui_flipbook.pipelines.diffusion.scheduler import released_timesteps


def _conditioning(cfg, frames: int, hw: tuple[int, int], device="cpu", dtype=torch.float32) -> S.Conditioning:
    g = torch.Generator().manual_seed(0)
    h, w = hw

    def r(*s):
        return torch.rand(*s, generator=g).to(device, dtype)

    return S.Conditioning(zero_y=torch.randn(1, cfg.text_tokens, cfg.context_dim, generator=g).to(device, dtype),
                          clip_ref=r(cfg.clip_dim), clip_frames=r(frames + 1, cfg.clip_dim),
                          keypoints=r(frames + 1, 2, 18), pose_images=r(frames, 3, h * 8, w * 8), local_image=r(3, h * 8, w * 8))


def _timed(fn, repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def cpu_tiny(frames: int, steps: int) -> dict:
    torch.manual_seed(0)
    unet = build_unet(TINY)
    hw = (TINY.height // 8, TINY.width // 8)
    c = _conditioning(TINY, frames, hw)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with torch.inference_mode():
        S.sample(unet, c, latent_hw=hw, steps=1)                       # warm-up
        cached = _timed(lambda: S.sample(unet, c, latent_hw=hw, steps=steps), 2)
        per_step = _timed(lambda: S.sample(unet, c, latent_hw=hw, steps=steps, cache_conditions=False), 2)
        conds = _timed(lambda: S.branch_conditions(unet, c, hw), 3)
    n = len(released_timesteps(steps))
    return {"params_M": count_parameters(unet) / 1e6, "steps": n, "step_s": cached / n, "per_step_s": per_step / n,
            "conditions_s": conds, "cache_speedup": per_step / cached,
            "peak_rss_MB": max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, rss0) / 1024}


def gpu_full() -> list[dict]:
    dev = torch.device("cuda")
    unet = build_unet(FULL, device=dev, dtype=torch.float16)
    out = []
    for frames, window in ((32, 0), (120, 32)):
        hw = (FULL.height // 8, FULL.width // 8)
        c = _conditioning(FULL, frames, hw, dev, torch.float16)
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()
        with torch.inference_mode():
            S.sample(unet, c, latent_hw=hw, steps=1, context_frames=window, context_overlap=8)   # warm-up
            torch.cuda.synchronize()
            t = time.perf_counter()
            S.sample(unet, c, latent_hw=hw, steps=1, context_frames=window, context_overlap=8)
            torch.cuda.synchronize()
            dt = time.perf_counter() - t
        out.append({"frames": frames, "window": window, "step_s": dt,
                    "peak_GB": torch.cuda.max_memory_allocated() / 2 ** 30})
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--steps", type=int, default=4, help="DDIM steps per timed run on the tiny config")
    args = ap.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))

    full = build_unet(FULL, device="meta")
    n_full = count_parameters(full)
    windows = context_windows(120, 32, 8)
    print("Animate-X, machine-independent counts")
    print(f"  full UNet+IPI parameters: {n_full / 1e6:.1f}M ({n_full * 2 / 1e9:.2f} GB fp16, {n_full * 4 / 1e9:.2f} GB fp32)")
    print(f"  UNet calls per animation at steps=30: {len(released_timesteps(30))} batched (cond+uncond) = "
          f"{2 * len(released_timesteps(30))} forwards")
    print(f"  120 frames, window 32 / overlap 8: {len(windows)} windows, "
          f"{sum(len(w) for w in windows) / 120:.2f} frame-evaluations per frame per step")
    r = cpu_tiny(args.frames, args.steps)
    print(f"\nTiny config on CPU ({r['params_M']:.2f}M parameters, {args.frames} frames, 64x64, {r['steps']} steps)")
    print(f"  guided step (cond+uncond batched), cached conditioning: {r['step_s']:.3f} s")
    print(f"  guided step, conditioning recomputed every step:      {r['per_step_s']:.3f} s")
    print(f"  conditioning alone (both branches):                    {r['conditions_s']:.3f} s")
    print(f"  per-step / cached: {r['cache_speedup']:.2f}x; peak RSS {r['peak_rss_MB']:.0f} MB")
    if torch.cuda.is_available():
        print(f"\nFull size, random fp16 weights, on {torch.cuda.get_device_name()}")
        for g in gpu_full():
            print(f"  {g['frames']} frames 512x768 window {g['window'] or 'none'}: one guided step {g['step_s']:.2f} s, "
                  f"peak {g['peak_GB']:.1f} GB")
    else:
        print("\nNo GPU here: full-size time and memory not measured.")
    print(f"RESULT step_s={r['step_s']:.4f} cache_speedup={r['cache_speedup']:.3f}")


if __name__ == "__main__":
    main()
