"""Benchmark of FlexiClip's video SDS iteration: UNet forward counts and wall time, ours against the
official algorithm's cost structure, side by side on the same inputs (spec flexiclip.md §1.8, §2.2).

    PYTHONPATH=<dir holding comfyui_flipbook> python benchmarks/flexiclip_sds.py [--iters 3] [--size 256] [--real]

Inputs: the shipped character (512² RGBA) with its keypoints, the "wave" preset, 24 frames (AniClipart's
6 poses forward-back twice), the corrector on, render 256², the tiny random text-to-video model
(make-test-models' configuration, VAE x32). Counted per iteration:

- ours: one batched UNet call per iteration: the corrected and the pose-only latents (the DDS-style
  flow term shares the SDS noise and t), each with both guidance branches (4 forwards); the pose-only
  render is encoded without a graph, and each of the 6 distinct poses once.
- official (F:animate_clipart.py:205-223, F:losses.py:138-198; spec §2.2.5): two full SDS passes, the
  corrected video and the pose-only one, each encoded through the VAE with a graph; the per-face
  Python Jacobian loop ``J_f = E'_f E_f⁻¹`` (F:painter_clipart.py:857-891) and
  ``torch.autograd.set_detect_anomaly(True)`` (F:animate_clipart.py:18). We time that structure
  re-implemented from the spec with our renderer, solve and model (no upstream code).

``jacobian_speedup`` = the per-face loop over the 6 poses / our vectorised ``face_jacobians``, same
vertices. ``--real``: the real-size ModelScope UNet3D (diffusers' default UNet3DConditionModel config,
1.4B parameters) and SD's KL-f8 VAE with random fp16 weights, 24 frames x 256², on CUDA: time per
iteration, peak memory, projected 1000 iterations. Last line:
``RESULT ours_unet_forwards_per_iter=<n> official_unet_forwards_per_iter=<n> jacobian_speedup=<x> iter_s_tiny=<s>``.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch


class Counter(torch.nn.Module):
    """Wraps a UNet and counts its calls and the batch rows (forwards) they evaluate."""

    def __init__(self, unet):
        super().__init__()
        self.unet, self.calls, self.rows = unet, 0, 0

    def forward(self, x, t, **kw):
        self.calls += 1
        self.rows += x.shape[0]
        return self.unet(x, t, **kw)

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.unet, name)


def official_jacobians(rest: torch.Tensor, faces: torch.Tensor, vertices: torch.Tensor) -> torch.Tensor:
    """The official per-face loop: for every pose and face, J = E' E⁻¹ of the edge matrices."""
    out = torch.empty(vertices.shape[0], faces.shape[0], 2, 2, dtype=vertices.dtype)
    for s in range(vertices.shape[0]):
        for f in range(faces.shape[0]):
            a, b, c = faces[f].tolist()
            e = torch.stack([rest[b] - rest[a], rest[c] - rest[a]], 1)
            e2 = torch.stack([vertices[s, b] - vertices[s, a], vertices[s, c] - vertices[s, a]], 1)
            out[s, f] = e2 @ torch.linalg.inv(e)
    return out


def setup(size: int, backbone):
    from comfyui_flipbook.pipelines.bezier import preset_trajectory
    from comfyui_flipbook.pipelines.flexiclip import demo_inputs, triangle_area
    from comfyui_flipbook.pipelines.flexiclip.corrector import TemporalJacobianCorrector
    from comfyui_flipbook.pipelines.flexiclip.sds import SDS
    from comfyui_flipbook.pipelines.mesh import build_mesh

    image, sk = demo_inputs()
    mesh = build_mesh(image, None, sk, max_area=triangle_area(tuple(image.shape[:2]), 30.0))
    traj = preset_trajectory(sk, "wave", n_frames=24, amplitude=0.06, loop="aniclipart", cycles=2)
    st = replace(SDS, render_size=size, iterations=1000)
    return mesh, traj, st, TemporalJacobianCorrector()


def run_iterations(obj, iters: int, official: bool) -> tuple[float, float]:
    """Mean (wall, process CPU) seconds of one forward + backward of the objective, after one warm-up."""
    params = [p.requires_grad_(True) for p in obj.initial_params()]
    times, cpu = [], []
    for k in range(iters + 1):
        t, c = time.perf_counter(), time.process_time()
        with torch.enable_grad(), torch.autograd.set_detect_anomaly(official):
            loss = obj(params)
            if official:                               # the second full SDS pass, on the pose-only video
                loss = loss + official_second_pass(obj, params)
            loss.backward()
        if k:
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
        for p in params:
            p.grad = None
    return sum(times) / len(times), sum(cpu) / len(cpu)


def official_second_pass(obj, params) -> torch.Tensor:
    """[F]'s pose-only SDS pass: per-face loop Jacobians, render, VAE encode with a graph, guided UNet."""
    from comfyui_flipbook.pipelines.diffusion.sampler import sds_gradient
    from comfyui_flipbook.pipelines.flexiclip.sds import encode_with_grad, posterior_noise

    poses = obj.animate(params)[0]
    v_rest = obj.deformer.deform(poses)
    official_jacobians(obj.mesh.vertices, obj.mesh.faces, v_rest.detach())   # its loop, timed in the iteration
    x = obj.render(v_rest)                             # all 24 frames, encoded with a graph
    noise_post = posterior_noise(obj.backbone, x.shape[0], obj.s.render_size, obj.generator)
    z = encode_with_grad(obj.backbone, x, noise_post, obj.s.vae_chunk).float()
    noise = torch.randn(z.shape, generator=obj.generator).to(z.device)
    t = torch.randint(obj.s.t_min, obj.s.t_max, (), generator=obj.generator)
    g = sds_gradient(obj._guided, z, t.to(z.device), noise, obj.scheduler)
    return 0.0 * ((z - (z - g).detach()) ** 2).sum()   # [F]'s use of it is a constant (spec §2.2.5)


def measure(backbone, size: int, iters: int):
    from comfyui_flipbook.pipelines.deform import face_jacobians
    from comfyui_flipbook.pipelines.flexiclip.sds import SDSObjective

    counter = Counter(backbone.unet)
    bb = replace(backbone, unet=counter)
    mesh, traj, st, corr = setup(size, bb)
    obj = SDSObjective(mesh, traj, bb, "a cartoon character is dancing", st, corrector=corr)
    counter.calls = counter.rows = 0
    with torch.no_grad():
        obj(obj.initial_params())
    ours_calls, ours_rows = counter.calls, counter.rows
    ours_s = run_iterations(obj, iters, official=False)
    # [F]: SDS on the corrected video (no flow pass of ours) + the second full SDS pass on the pose-only one
    obj = SDSObjective(mesh, traj, bb, "a cartoon character is dancing", replace(st, lambda_flow=0.0, dedupe_encode=False),
                       corrector=corr)
    counter.calls = counter.rows = 0
    with torch.no_grad():
        params = obj.initial_params()
        obj(params)
        official_second_pass(obj, params)
    off_calls, off_rows = counter.calls, counter.rows
    official_s = run_iterations(obj, iters, official=True)
    # Jacobians side by side, same vertices (the 6 distinct poses)
    with torch.no_grad():
        v = obj.deformer.deform(obj.animate(obj.initial_params())[0])
    t = time.perf_counter()
    loop = official_jacobians(mesh.vertices, mesh.faces, v)
    loop_s = time.perf_counter() - t
    reps, t = 20, time.perf_counter()
    for _ in range(reps):
        ours = face_jacobians(mesh, v)
    ours_j = (time.perf_counter() - t) / reps
    assert torch.allclose(loop, ours, atol=1e-8), "the two Jacobians disagree"
    return dict(mesh=(mesh.num_vertices, mesh.num_faces), ours_calls=ours_calls, ours_rows=ours_rows,
                official_calls=off_calls, official_rows=off_rows, ours_s=ours_s, official_s=official_s,
                jacobian_loop_s=loop_s, jacobian_ours_s=ours_j)


def real_size(iters: int, device: str = "cuda", unet_config: dict | None = None, vae_config: dict | None = None,
              dtype: torch.dtype = torch.float16) -> dict:
    """ModelScope-size UNet3D + SD VAE, random fp16 weights, 24 frames x 256² on CUDA (the configs can be
    swapped for small ones to dry-run this path on a CPU)."""
    from diffusers import AutoencoderKL, UNet3DConditionModel

    from comfyui_flipbook.pipelines.diffusion.backbone import TINY_SCHEDULER, T2VBackbone, tiny_t2v

    dev = torch.device(device)
    cuda = dev.type == "cuda"
    # diffusers' default UNet3DConditionModel is ModelScope's layout (1.4B parameters, cross-attention 1024)
    unet = UNet3DConditionModel(**(unet_config or {})).to(dev, dtype).eval().requires_grad_(False)
    vae = AutoencoderKL(**(vae_config or dict(
        block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=4,
        sample_size=256))).to(dev, dtype).eval().requires_grad_(False)
    tiny = tiny_t2v(0)                                # its text encoder is unused: random 1024-d prompt embeddings
    bb = T2VBackbone(unet=unet, vae=vae, text_encoder=tiny.text_encoder, tokenizer=tiny.tokenizer,
                     scheduler_config=dict(TINY_SCHEDULER), dtype=dtype, name="modelscope-size-random")
    from comfyui_flipbook.pipelines.diffusion.sampler import t2v_denoiser
    from comfyui_flipbook.pipelines.flexiclip.sds import SDSObjective

    mesh, traj, st, corr = setup(256, bb)
    width = unet.config.cross_attention_dim
    cond = torch.randn(1, 77, width, generator=torch.Generator().manual_seed(0)).to(dev, dtype)
    den = t2v_denoiser(unet, cond, torch.zeros_like(cond), st.guidance)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    obj = SDSObjective(mesh, traj, bb, "", replace(st, fp16=dtype == torch.float16), corrector=corr, denoiser=den)
    s, _ = run_iterations(obj, iters, official=False)
    if cuda:
        torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() / 2 ** 30 if cuda else float("nan")
    return dict(iter_s=s, peak_gb=peak, params_m=sum(
        p.numel() for p in unet.parameters()) / 1e6, projected_1000_min=s * 1000 / 60)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--real", action="store_true", help="also the ModelScope-size UNet on CUDA")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from comfyui_flipbook.pipelines.diffusion.backbone import tiny_t2v

    r = measure(tiny_t2v(0, vae_downscale=32), args.size, args.iters)
    speed = r["jacobian_loop_s"] / r["jacobian_ours_s"]
    print(f"mesh: {r['mesh'][0]} vertices, {r['mesh'][1]} faces; 24 frames, 6 poses, render {args.size}²")
    print(f"ours:     {r['ours_calls']} UNet calls ({r['ours_rows']} forwards) per iteration, "
          f"{r['ours_s'][0]:.3f} s wall, {r['ours_s'][1]:.3f} s CPU")
    print(f"official: {r['official_calls']} UNet calls ({r['official_rows']} forwards) per iteration, "
          f"{r['official_s'][0]:.3f} s wall, {r['official_s'][1]:.3f} s CPU "
          "(second SDS pass with a VAE graph, per-face loop, detect_anomaly)")
    print(f"jacobians of 6 poses: loop {r['jacobian_loop_s'] * 1e3:.1f} ms, ours {r['jacobian_ours_s'] * 1e3:.3f} ms")
    if args.real:
        if not torch.cuda.is_available():
            print("real size: no CUDA device, skipped")
        else:
            g = real_size(args.iters)
            print(f"real size ({g['params_m']:.0f}M-parameter UNet, fp16, 24 x 256²): {g['iter_s']:.3f} s/iteration, "
                  f"peak {g['peak_gb']:.1f} GB, 1000 iterations ≈ {g['projected_1000_min']:.1f} min")
    print(f"RESULT ours_unet_forwards_per_iter={r['ours_rows']} official_unet_forwards_per_iter={r['official_rows']} "
          f"jacobian_speedup={speed:.0f} iter_s_tiny={r['ours_s'][0]:.3f}")


if __name__ == "__main__":
    main()
