"""CPABMM training benchmark (issue 13; spec cpab.md §2.4-2.6), on the CPU at the tiny-64 config.

1. training speed: optimiser steps per second at batch 8 (synthetic 64² data, every loss of the
   config), with 1 and 2 torch threads, and the share of the step time spent in the CPAB fits;
2. the small model: a tiny-64 run on the synthetic motion data (``--steps``, batch ``--batch``), then
   the release's reconstruction L1 on held-out synthetic clips against the identity baseline (copy
   the source frame); ``--checkpoint FILE`` evaluates a given model instead of training one; the
   shipped model (assets/cpabmm_tiny64.safetensors, the same recipe run to 1920 steps) is scored too;
3. with CUDA: the vox-256 step time and peak memory at batch 8 (synthetic 256² data).

Run: PYTHONPATH=<dir holding comfyui_flipbook> python benchmarks/cpabmm_train.py [--steps 400]
The last line is ``RESULT iter_s=<steps per second, 1 thread> cpab_fit_share=<0..1>
heldout_l1=<x> identity_l1=<y>``.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch

from comfyui_flipbook.pipelines.cpabmm import CPABMM, load_model
from comfyui_flipbook.pipelines.cpabmm.train import SyntheticMotion, engine, train_config
from comfyui_flipbook.pipelines.cpabmm.train.evaluate import reconstruction_l1

SMALL_MODEL = "tiny-64"
SHIPPED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets", "cpabmm_tiny64.safetensors")


def step_speed(threads: int, batch: int = 8, steps: int = 6, device: str = "cpu") -> tuple[float, float]:
    """(steps/s, share of the time in the CPAB fits) of full training steps on a fixed set of batches."""
    torch.set_num_threads(threads)
    cfg = train_config("tiny-64" if device == "cpu" else "vox-256")
    torch.manual_seed(0)
    model = CPABMM(cfg["model"], with_avd=False).to(device).train()
    net = engine.TrainingModel(model, cfg["train"]).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.5, 0.999), weight_decay=1e-4)
    ds = SyntheticMotion(64, size=int(cfg["model"]["size"]))
    batches = []
    for b in range(2):
        items = [ds.pair(b * batch + i, i) for i in range(batch)]
        batches.append((torch.stack([x["source"] for x in items]).to(device),
                        torch.stack([x["driving"] for x in items]).to(device), torch.arange(batch) + b * batch))

    def one(k):
        s, d, seeds = batches[k % 2]
        losses, _ = net(s, d, seeds, epoch=5)
        sum(losses.values()).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    one(0)
    if device != "cpu":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    engine.FIT_SECONDS[0] = 0.0
    t = time.perf_counter()
    for k in range(steps):
        one(k)
    if device != "cpu":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t
    return steps / dt, engine.FIT_SECONDS[0] / dt


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=300, help="training steps of the small model (fresh run)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--heldout", type=int, default=16, help="held-out synthetic clips (12 frames each)")
    ap.add_argument("--checkpoint", default=None, help="evaluate this model instead of training one")
    ap.add_argument("--out", default=None, help="keep the trained model here (default: a temporary folder)")
    args = ap.parse_args()
    n = torch.get_num_threads()

    speed1, share = step_speed(1)
    speed2, _ = step_speed(2)
    print(f"training speed, tiny-64, batch 8: {speed1:.3f} steps/s (1 thread), {speed2:.3f} steps/s (2 threads); "
          f"CPAB fits {share:.0%} of a step (1 thread)")
    if torch.cuda.is_available():
        s, _ = step_speed(1, device="cuda", steps=5)
        print(f"vox-256 on {torch.cuda.get_device_name()}: {1 / s:.3f} s/step at batch 8, peak memory "
              f"{torch.cuda.max_memory_allocated() / 2 ** 30:.2f} GiB")

    torch.set_num_threads(1)
    path = args.checkpoint
    scratch = tempfile.TemporaryDirectory(prefix="cpabmm_train_") if path is None and args.out is None else None
    if path is None:
        out = args.out or scratch.name
        t = time.perf_counter()
        summary = engine.train(SMALL_MODEL, "synthetic", out, steps=args.steps, batch_size=args.batch, workers=0,
                               progress=False, name="tiny-64", resume=False)
        path = summary["weights"]
        print(f"small model: {args.steps} steps at batch {args.batch} in {time.perf_counter() - t:.0f} s "
              f"(perceptual loss: {summary['perceptual']}) -> {path} ({os.path.getsize(path) / 1e6:.1f} MB)")
    res = reconstruction_l1(load_model(path), SyntheticMotion(args.heldout, held_out=True))
    print(f"held-out reconstruction L1 over {res.videos} clips / {res.frames} frames: {res.l1:.5f} "
          f"(identity baseline {res.identity_l1:.5f}, {100 * (1 - res.l1 / res.identity_l1):.1f}% lower)")
    if args.checkpoint is None and os.path.isfile(SHIPPED):
        shipped = reconstruction_l1(load_model(SHIPPED), SyntheticMotion(args.heldout, held_out=True))
        print(f"shipped model ({os.path.relpath(SHIPPED)}, 1920 steps at batch 4): held-out L1 {shipped.l1:.5f} "
              f"(identity {shipped.identity_l1:.5f}, {100 * (1 - shipped.l1 / shipped.identity_l1):.1f}% lower)")
    torch.set_num_threads(n)
    if scratch is not None:
        scratch.cleanup()
    print(f"RESULT iter_s={speed1:.4f} cpab_fit_share={share:.3f} heldout_l1={res.l1:.5f} "
          f"identity_l1={res.identity_l1:.5f}")


if __name__ == "__main__":
    main()
