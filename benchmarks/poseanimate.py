"""PoseAnimate benchmark: UNet+ControlNet forward-equivalents of the PACM, as the algorithm is written vs ours.

Run: python benchmarks/poseanimate.py [--frames 4] [--steps 10] [--iters 5] [--gpu-only]
(with the pack importable as comfyui_flipbook).

Forward-equivalents count one UNet+ControlNet pass of one latent as 1 and a backward as 2. "As written"
(naive): both CFG branches recomputed at every inner iteration, no early stop, one frame at a time. Ours:
the non-optimised branch once per step, frames batched, each frame stopping early on its own (and leaving
the batch, so a stopped frame costs nothing). Both
include the inversion (T passes) and the generation (T x 2 x frames).

CPU part (measured): the tiny SD + ControlNet (8x8 latents) at ``--frames/--steps/--iters``, naive first,
then ours with early-stop thresholds swept upward from 0; the cheapest one whose source reconstruction
(frame 0 generated with E_s, latent MSE to Z_0) is within 5 % of the naive run's is kept ("equal source
reconstruction"). The paper-scale counts (16 frames x 50 steps x 5 iterations) follow from the per-pass
formulas with the inner iterations ours actually ran (the tiny run's mean). Last line:
``RESULT naive_forward_equivalents=<n> ours_forward_equivalents=<n> recon_ratio=<ours / naive error>
wall_ratio=<naive time / ours>``.

GPU part (only with CUDA): SD1.5 + ControlNet at full size with random weights (the shipped configs), the
paper's settings (16 frames, 512², 50 steps, 5 inner iterations): time and peak memory of each stage.
"""
from __future__ import annotations

import argparse
import time

import torch

from comfyui_flipbook.pipelines.poseanimate import PACM, invert_source, optimise_embeddings, poseanimate_sample, tiny_sdcn


def naive_per_step(iters: int) -> int:
    """One frame's step as written: iters x (2 branch passes + a backward of 2), then 2 passes to advance."""
    return iters * 4 + 2


def ours_per_step(mean_iters: float) -> float:
    """One frame's step, ours: the other branch once, mean_iters x (1 pass + a backward of 2), 1 pass to advance."""
    return 1 + 3 * mean_iters + 1


def shared(frames: int, steps: int) -> int:
    """Inversion (one branch, w = 1) + generation (both branches, every frame)."""
    return steps + steps * 2 * frames


def _run(model, traj, poses, opts):
    stats = {}
    t0 = time.perf_counter()
    emb = optimise_embeddings(model, traj, poses, opts=opts, stats=stats)
    wall = time.perf_counter() - t0
    rec = poseanimate_sample(model.with_patches(), emb)[:, :, 0]
    err = float((rec - traj["latents"][0]).pow(2).mean())
    iters = [h.shape[0] for h in stats["history"]]           # iterations run per (chunk, step)
    fe = stats["forwards"] + 2 * stats["backwards"]
    return dict(fe=fe, err=err, wall=wall, history=stats["history"], iters=iters)


def cpu(frames: int, steps: int, iters: int) -> dict:
    model = tiny_sdcn(0)
    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, 16, 16, 3, generator=g)
    poses = torch.rand(frames, 16, 16, 3, generator=g)
    with torch.inference_mode():
        traj = invert_source(model, image, poses, "a man", steps=steps)
    naive = _run(model, traj, poses, PACM(inner_iters=iters, stage2_iters=iters, early_stop=0, frame_chunk=1,
                                          cache_other=False))
    # thresholds from the naive run's own final inner losses (the null-text rule adds step * 2e-5 on top)
    finals = torch.cat([h[-1] for h in naive["history"]]).sort().values
    best = None
    for q in (0.0, 0.1, 0.25, 0.5, 0.75, 0.9):
        tau = float(finals[int(q * (len(finals) - 1))]) if q else 0.0
        ours = _run(model, traj, poses, PACM(inner_iters=iters, stage2_iters=iters, early_stop=min(tau, 1.0),
                                             frame_chunk=frames, cache_other=True))
        ours["tau"] = tau
        if ours["err"] <= 1.05 * naive["err"] and (best is None or ours["fe"] <= best["fe"]):
            best = ours
    # mean inner iterations per (frame, step) that ours ran (stopped frames leave the batch): from its count
    mean_iters = (best["fe"] / (frames * steps) - 2) / 3
    return dict(naive=naive, ours=best, mean_iters=mean_iters, frames=frames, steps=steps, iters=iters)


def gpu(frames: int = 16, steps: int = 50, iters: int = 5, size: int = 512, dtype=torch.bfloat16, chunk: int = 15):
    import tempfile

    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from comfyui_flipbook.pipelines.diffusion.backbone import write_tiny_tokenizer
    from comfyui_flipbook.pipelines.poseanimate.models import SDControlNet, shipped_config

    dev = torch.device("cuda")
    torch.manual_seed(0)
    with torch.device(dev):
        unet = UNet2DConditionModel.from_config(shipped_config("sd15_unet"))
        cn = ControlNetModel.from_config(shipped_config("sd15_controlnet"))
        vae = AutoencoderKL.from_config(shipped_config("sd15_vae"))
        text = CLIPTextModel(CLIPTextConfig(**shipped_config("sd15_text_encoder")))
    with tempfile.TemporaryDirectory() as tmp:
        write_tiny_tokenizer(tmp)
        tok = CLIPTokenizer.from_pretrained(tmp)
    parts = {k: m.to(dtype).eval().requires_grad_(False) for k, m in
             dict(unet=unet, vae=vae, text_encoder=text, controlnet=cn).items()}
    model = SDControlNet(tokenizer=tok, scheduler_config=shipped_config("sd15_scheduler"), dtype=dtype, name="sd15-random",
                         **parts)
    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, size, size, 3, generator=g)
    poses = torch.rand(frames, size, size, 3, generator=g)
    out = {}

    def timed(name, fn):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        r = fn()
        torch.cuda.synchronize()
        out[name] = (time.perf_counter() - t0, torch.cuda.max_memory_allocated() / 2 ** 30)
        print(f"gpu {name}: {out[name][0]:.1f} s, peak {out[name][1]:.1f} GiB", flush=True)
        return r

    with torch.inference_mode():
        traj = timed("invert", lambda: invert_source(model, image, poses, "a man", steps=steps))
    emb = timed("pacm", lambda: optimise_embeddings(model, traj, poses, opts=PACM(inner_iters=iters, stage2_iters=iters,
                                                                                 frame_chunk=chunk)))
    with torch.inference_mode():
        timed("sample", lambda: poseanimate_sample(model.with_patches(), emb))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--gpu-only", action="store_true")
    ap.add_argument("--gpu-chunk", type=int, default=15)
    args = ap.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    if torch.cuda.is_available():
        gpu(chunk=args.gpu_chunk)
    if args.gpu_only:
        return
    r = cpu(args.frames, args.steps, args.iters)
    n, o = r["naive"], r["ours"]
    print(f"tiny {r['frames']} frames x {r['steps']} steps x {r['iters']} iterations: "
          f"naive {n['fe']} forward-equivalents (+{shared(r['frames'], r['steps'])} inversion/generation), "
          f"{n['wall']:.2f} s, recon {n['err']:.4g}; ours {o['fe']} (early stop {o['tau']:.3g}, "
          f"{r['mean_iters']:.2f} inner iterations per frame and step), {o['wall']:.2f} s, recon {o['err']:.4g}")
    assert n["fe"] == r["frames"] * r["steps"] * naive_per_step(r["iters"]), "naive count off its formula"
    frames, steps, iters = 16, 50, 5
    naive_pa = shared(frames, steps) + frames * steps * naive_per_step(iters)
    ours_pa = shared(frames, steps) + frames * steps * ours_per_step(r["mean_iters"] * iters / r["iters"])
    print(f"paper scale (16 frames x 50 steps x 5 iterations): naive {naive_pa}, ours {ours_pa:.0f} "
          f"(ours without early stop: {shared(frames, steps) + frames * steps * ours_per_step(iters)})")
    print(f"RESULT naive_forward_equivalents={naive_pa} ours_forward_equivalents={ours_pa:.0f} "
          f"recon_ratio={o['err'] / n['err']:.3f} wall_ratio={n['wall'] / o['wall']:.2f}")


if __name__ == "__main__":
    main()
