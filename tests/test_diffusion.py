"""Shared diffusion blocks: DDIM arithmetic and inversion, name-keyed attention patches, backbones,
text encoding, VAE round trips, the shared nodes (spec flipsketch-poseanimate.md §3, §3.2)."""

import pytest
import torch

from comfyui_flipbook.pipelines.diffusion import attention as A
from comfyui_flipbook.pipelines.diffusion import sampler as SM
from comfyui_flipbook.pipelines.diffusion.backbone import TINY_SCHEDULER, load_t2v, save_t2v, tiny_t2v
from comfyui_flipbook.pipelines.diffusion.sampler import ddim_invert, ddim_sample, t2v_denoiser
from comfyui_flipbook.pipelines.diffusion.scheduler import DDIM, make_scheduler, released_timesteps
from comfyui_flipbook.pipelines.diffusion.text import encode_text, null_embeds
from comfyui_flipbook.pipelines.diffusion.vae import decode_latents, encode_frames
from comfyui_flipbook.pipelines.errors import FlipbookInputError


@pytest.fixture(scope="module")
def bb():
    return tiny_t2v(0)


def _sketch(size=16):
    img = torch.ones(1, size, size, 3)
    img[:, size // 4: 3 * size // 4, size // 5: size // 5 + 2] = 0
    img[:, size // 2, size // 5: 4 * size // 5] = 0
    return img


def test_inverse_step_is_the_official_next_step_formula():
    """spec §1.2: inverse DDIM from alpha(t - 1000/steps) (or alphas_cumprod[0] below 0) to alpha(t)."""
    steps = 25
    inv = make_scheduler(TINY_SCHEDULER, steps, inverse=True)
    ac = make_scheduler(TINY_SCHEDULER, steps).alphas_cumprod
    assert inv.timesteps.tolist() == list(range(1, 1000, 40))
    gen = torch.Generator().manual_seed(0)
    for t in inv.timesteps[[0, 1, 12, -1]]:
        x, eps = torch.randn(2, 4, 3, 8, 8, generator=gen), torch.randn(2, 4, 3, 8, 8, generator=gen)
        t_prev = int(t) - 1000 // steps
        a = ac[t_prev] if t_prev >= 0 else ac[0]          # set_alpha_to_one=False: alphas_cumprod[0]
        a_next = ac[int(t)]
        want = a_next.sqrt() * (x - (1 - a).sqrt() * eps) / a.sqrt() + (1 - a_next).sqrt() * eps
        torch.testing.assert_close(inv.step(eps, t, x), want, rtol=1e-5, atol=1e-6)


def test_invert_and_sample_are_inverse_loops():
    """With a denoiser that does not depend on x, inversion then sampling returns Z_0 exactly."""
    gen = torch.Generator().manual_seed(1)
    z0, eps = torch.randn(1, 4, 2, 8, 8, generator=gen), torch.randn(1, 4, 2, 8, 8, generator=gen)
    traj, ts = ddim_invert(lambda x, t: eps, z0, TINY_SCHEDULER, 10)
    assert len(traj) == 11 and traj[0] is z0 and torch.all(ts[1:] > ts[:-1])
    back = ddim_sample(lambda x, t: eps, traj[-1], TINY_SCHEDULER, 10)
    torch.testing.assert_close(back, z0, rtol=1e-4, atol=1e-4)


def test_inversion_check_stops_before_the_next_denoiser_call():
    calls, polls = [], []

    def check():
        polls.append(1)
        if len(polls) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ddim_invert(lambda x, t: calls.append(t) or torch.zeros_like(x), torch.zeros(1, 4, 1, 2, 2),
                    TINY_SCHEDULER, 10, check=check)
    assert len(calls) == 2


def test_invert_then_sample_round_trips_on_tiny_model(bb):
    z0 = encode_frames(bb, _sketch())
    eps = t2v_denoiser(bb.unet, null_embeds(bb))
    traj, _ = ddim_invert(eps, z0, bb.scheduler_config, 8)
    rec = ddim_sample(eps, traj[-1], bb.scheduler_config, 8)
    other = ddim_sample(eps, torch.randn(z0.shape, generator=torch.Generator().manual_seed(3)), bb.scheduler_config, 8)
    err, base = (rec - z0).abs().mean(), (other - z0).abs().mean()
    assert err < 0.15 * base, (err, base)


def test_roles_come_from_module_names(bb):
    mods = A.attention_modules(bb.unet)
    roles = {n: r for n, (_, r) in mods.items()}
    assert roles["transformer_in.transformer_blocks.0.attn1"].role == "temporal_self"
    assert roles["transformer_in.transformer_blocks.0.attn1"].block == "in"
    mid = roles["mid_block.attentions.0.transformer_blocks.0.attn1"]
    assert (mid.role, mid.block, mid.level) == ("spatial_self", "mid", -1)
    up = roles["up_blocks.1.attentions.0.transformer_blocks.0.attn2"]
    assert (up.role, up.block, up.level) == ("cross", "up", 1)
    # a temporal block's attn2 attends to its own frames: self-attention, not cross
    assert roles["down_blocks.0.temp_attentions.0.transformer_blocks.0.attn2"].role == "temporal_self"
    kinds = [(r.kind, r.slot) for r in roles.values()]
    assert kinds.count(("spatial", "attn1")) == 4 and kinds.count(("temporal", "attn1")) == 5


class _Spy:
    """A patch that records calls and delegates to the processor it wraps."""

    def __init__(self, want, log, tag):
        self.want, self.log, self.tag = want, log, tag

    def processor(self, role, inner):
        if role.role != self.want:
            return None
        spy = self

        def proc(attn, hidden_states, *args, **kw):
            spy.log.append((spy.tag, role.name))
            return inner(attn, hidden_states, *args, **kw)
        return proc


def test_patches_install_compose_and_remove(bb):
    unet = bb.unet
    before = {n: m.processor for n, (m, _) in A.attention_modules(unet).items()}
    x, e = torch.randn(1, 4, 2, 8, 8), null_embeds(bb)
    with torch.no_grad():
        ref = unet(x, 500, encoder_hidden_states=e).sample
        log = []
        with A.patched(unet, _Spy("spatial_self", log, "a"), _Spy("spatial_self", log, "b"), _Spy("cross", log, "c")):
            out = unet(x, 500, encoder_hidden_states=e).sample
    torch.testing.assert_close(out, ref)
    # both spatial patches run on each of the 4 spatial attn1 (b wraps a, so b first), c on the 4 cross
    assert [t for t, _ in log].count("b") == 4 and [t for t, _ in log].count("a") == 4
    assert [t for t, _ in log].count("c") == 4
    first = log.index(next(item for item in log if item[0] == "b"))
    assert log[first + 1] == ("a", log[first][1])
    after = {n: m.processor for n, (m, _) in A.attention_modules(unet).items()}
    assert all(after[n] is before[n] for n in before)


def test_classic_processor_matches_default(bb):
    x, e = torch.randn(1, 4, 3, 8, 8), encode_text(bb, "a cat")

    class Classic:
        def processor(self, role, inner):
            return A.ClassicAttnProcessor()
    with torch.no_grad():
        ref = bb.unet(x, 300, encoder_hidden_states=e).sample
        with A.patched(bb.unet, Classic()):
            out = bb.unet(x, 300, encoder_hidden_states=e).sample
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


def test_text_encode(bb):
    a, b = encode_text(bb, "a cat is walking"), encode_text(bb, "a dog")
    assert a.shape == (1, 77, 32) and not torch.allclose(a, b)
    assert null_embeds(bb) is null_embeds(bb)
    torch.testing.assert_close(null_embeds(bb), encode_text(bb, ""))
    with pytest.raises(FlipbookInputError, match="text"):
        encode_text(bb, [])


def test_vae_encode_decode_and_chunking(bb):
    z = encode_frames(bb, _sketch().repeat(3, 1, 1, 1))
    assert z.shape == (1, 4, 3, 8, 8)
    torch.testing.assert_close(z[:, :, 0], z[:, :, 2])
    lat = torch.randn(2, 4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    full, chunked = decode_latents(bb, lat, chunk=64), decode_latents(bb, lat, chunk=2)
    assert full.shape == (6, 16, 16, 3) and 0 <= full.min() and full.max() <= 1
    torch.testing.assert_close(full, chunked, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(full[3], decode_latents(bb, lat[1:, :, :1])[0], rtol=1e-5, atol=1e-5)
    s1 = encode_frames(bb, _sketch(), posterior="sample", generator=torch.Generator().manual_seed(0))
    s2 = encode_frames(bb, _sketch(), posterior="sample", generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(s1, s2)
    assert not torch.allclose(s1, z[:, :, :1])
    with pytest.raises(FlipbookInputError, match="divisible"):
        encode_frames(bb, torch.ones(1, 15, 16, 3))
    with pytest.raises(FlipbookInputError, match="channels"):
        decode_latents(bb, torch.zeros(1, 3, 2, 8, 8))


def test_guided_eps_batches_branches(bb):
    x, c, u = torch.randn(2, 4, 2, 8, 8), encode_text(bb, "a cat"), null_embeds(bb)
    with torch.no_grad():
        got = t2v_denoiser(bb.unet, c, u, 3.0)(x, 100)
        eu, ec = t2v_denoiser(bb.unet, u)(x, 100), t2v_denoiser(bb.unet, c)(x, 100)
    torch.testing.assert_close(got, eu + 3.0 * (ec - eu), rtol=1e-4, atol=1e-4)


def test_save_and_load_folder_round_trip(tmp_path, bb):
    save_t2v(bb, str(tmp_path / "m"))
    assert (tmp_path / "m" / "model_index.json").is_file()
    loaded = load_t2v(str(tmp_path / "m"), "fp32")
    x, e = torch.randn(1, 4, 2, 8, 8), encode_text(loaded, "a cat is walking")
    torch.testing.assert_close(e, encode_text(bb, "a cat is walking"))
    with torch.no_grad():
        torch.testing.assert_close(loaded.unet(x, 10, encoder_hidden_states=e).sample,
                                   bb.unet(x, 10, encoder_hidden_states=e).sample)
    assert loaded.scheduler_config["steps_offset"] == 1 and not loaded.scheduler_config["set_alpha_to_one"]
    with pytest.raises(FlipbookInputError, match="model_dir"):
        load_t2v(str(tmp_path), "fp32")


def test_nodes_under_inference_mode(tmp_path, monkeypatch, inference):
    from comfyui_flipbook.nodes.diffusion import (FlipbookDDIMInvert, FlipbookT2VLoader, FlipbookTextEncode,
                                                  FlipbookVideoDecode, t2v_folders)
    from comfyui_flipbook.pipelines.flipsketch.settings import FLIPSKETCH_MODEL
    from comfyui_flipbook.pipelines.flipsketch.testmodels import write_test_models

    monkeypatch.setenv("FLIPBOOK_MODELS_DIR", str(tmp_path))
    from comfyui_flipbook.pipelines.flexiclip.settings import T2V_MODEL
    assert t2v_folders() == [FLIPSKETCH_MODEL, T2V_MODEL]   # nothing installed: the names the workflows use
    with pytest.raises(FlipbookInputError, match="not found"):
        FlipbookT2VLoader().load(FLIPSKETCH_MODEL, "fp32")
    write_test_models(str(tmp_path))
    assert t2v_folders() == [FLIPSKETCH_MODEL]
    (model,) = FlipbookT2VLoader().load(FLIPSKETCH_MODEL, "auto")
    assert not any(p.is_inference() for p in model.unet.parameters())
    (prompt,) = FlipbookTextEncode().encode(model, "")
    noise, traj = FlipbookDDIMInvert().invert(model, _sketch(64), 3, 1.0, 2, "mean_frames", "0_1", "sample", 64, 0,
                                               prompt=prompt)
    assert noise["samples"].shape == (1, 4, 1, 2, 2) and len(traj["latents"]) == 4
    torch.testing.assert_close(traj["latents"][-1], noise["samples"])
    (frames,) = FlipbookVideoDecode().decode(model, noise, 8)
    assert frames.shape == (1, 64, 64, 3)
    with pytest.raises(FlipbookInputError, match="latent"):
        FlipbookVideoDecode().decode(model, {"wrong": 1}, 8)
    with pytest.raises(FlipbookInputError, match="model"):
        FlipbookTextEncode().encode("not a model", "a cat")
    with pytest.raises(FlipbookInputError, match="repeat_frames"):
        FlipbookDDIMInvert().invert(model, _sketch(64), 3, 1.0, 0, "none", "0_1", "mean", 0, 0)


def test_adam_minimise_inside_inference_mode(inference):
    from comfyui_flipbook.pipelines.optimise import adam_minimise

    x0 = torch.zeros(3, 2)                                   # an inference tensor, like node inputs
    x, losses = adam_minimise(x0, lambda x: ((x - 3) ** 2).mean(1), iters=200, lr=0.1)
    assert torch.all(losses[-1] < losses[0]) and torch.allclose(x, torch.full((3, 2), 3.0), atol=0.05)
    one, _ = adam_minimise(x0, lambda x: ((x - 3) ** 2).mean(1), iters=1, lr=0.1)
    two_before, _ = adam_minimise(x0, lambda x: ((x - 3) ** 2).mean(1), iters=2, lr=0.1, before_last=True)
    torch.testing.assert_close(two_before, one)              # the official off-by-one
    _, short = adam_minimise(x0, lambda x: ((x - 3) ** 2).mean(1), iters=200, lr=0.01, lr_at=lambda k: 0.5,
                             stop_below=lambda k: 1.0)
    assert len(short) < 200 and torch.all(short[-1] < 1.0)


def test_loader_finds_fp16_variant_weights(tmp_path, bb):
    """ModelScope's Hugging Face folders ship unet/vae/text_encoder weights as *.fp16.safetensors only."""
    import shutil

    folder = tmp_path / "text-to-video-ms-1.7b"
    save_t2v(bb, str(folder))
    for part, name in (("unet", "diffusion_pytorch_model"), ("vae", "diffusion_pytorch_model")):
        src = folder / part / f"{name}.safetensors"
        shutil.move(src, folder / part / f"{name}.fp16.safetensors")
    loaded = load_t2v(str(folder), "fp32")
    torch.testing.assert_close(loaded.unet.conv_out.weight, bb.unet.conv_out.weight)


def test_on_compute_device_moves_outside_inference_mode_and_back_on_error(inference, monkeypatch):
    """Nodes move backbone parts to the GPU under ComfyUI's inference_mode; the moved parameters must
    stay ordinary tensors (frame alignment backpropagates) and go back even when the work raises. On a
    CPU a device move is a no-op, so a dtype conversion (which makes new tensors the same way) stands in."""
    from comfyui_flipbook.nodes import _comfy

    monkeypatch.setattr(_comfy, "torch_device", lambda: torch.float64)
    monkeypatch.setattr(_comfy, "offload_device", lambda: torch.float32)
    with torch.inference_mode(False):
        lin = torch.nn.Linear(2, 2)
    with pytest.raises(RuntimeError, match="cancelled"):
        with _comfy.on_compute_device(lin):
            assert lin.weight.dtype == torch.float64 and not lin.weight.is_inference()
            with _comfy.grad_enabled():
                lin(torch.ones(1, 2, dtype=torch.float64)).sum().backward()
            assert lin.weight.grad is not None
            raise RuntimeError("cancelled")
    assert lin.weight.dtype == torch.float32 and not lin.weight.is_inference()


# --- the sampler core: one step, one loop, one noise draw, room for ControlNet and SDS ------------------


@pytest.mark.parametrize("inverse", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_eps_step_is_diffusers_step_to_the_bit(inverse, dtype):
    """The one step reproduces DDIMScheduler.step / DDIMInverseScheduler.step exactly for eps-prediction
    (FlipSketch's backbone, the inverter), also with clip_sample, at every timestep of a run."""
    import inspect

    from diffusers import DDIMInverseScheduler, DDIMScheduler

    cls = DDIMInverseScheduler if inverse else DDIMScheduler
    gen = torch.Generator().manual_seed(0)
    for clip in (False, True):
        cfg = {**TINY_SCHEDULER, "clip_sample": clip}
        ours = make_scheduler(cfg, 25, inverse=inverse)
        ref = cls.from_config({k: v for k, v in cfg.items() if k in inspect.signature(cls.__init__).parameters})
        ref.set_timesteps(25)
        assert torch.equal(ours.timesteps, ref.timesteps)
        for t in ref.timesteps:
            x, eps = (torch.randn(2, 4, 3, 8, 8, generator=gen).to(dtype) for _ in range(2))
            assert torch.equal(ours.step(eps, t, x), ref.step(eps, t, x).prev_sample), int(t)


def test_v_step_forms_x0_first_and_matches_diffusers_within_rounding():
    """v-prediction: x0 = √ᾱ x - √(1-ᾱ) v, eps = (x - √ᾱ x0) / √(1-ᾱ) (Animate-X's release order); diffusers'
    v branch (eps = √ᾱ v + √(1-ᾱ) x) gives the same numbers up to float rounding."""
    from diffusers import DDIMScheduler

    cfg = {**TINY_SCHEDULER, "prediction_type": "v_prediction", "rescale_betas_zero_snr": True}
    ours = make_scheduler(cfg, 30)
    ref = DDIMScheduler.from_config(cfg)
    ref.set_timesteps(30)
    gen = torch.Generator().manual_seed(1)
    x, v = torch.randn(1, 4, 2, 8, 8, generator=gen), torch.randn(1, 4, 2, 8, 8, generator=gen)
    for t in ours.timesteps[[0, 10, -1]]:
        a, a_next = ours.levels(t)
        x0 = a ** 0.5 * x - (1 - a) ** 0.5 * v
        eps = (x - a ** 0.5 * x0) / (1 - a) ** 0.5
        assert torch.equal(ours.step(v, t, x), a_next ** 0.5 * x0 + (1 - a_next) ** 0.5 * eps)
        torch.testing.assert_close(ours.step(v, t, x), ref.step(v, t, x).prev_sample, rtol=1e-5, atol=1e-6)


def test_the_step_is_finite_at_alpha_bar_zero():
    """Zero terminal SNR puts ᾱ = 0 at t = T-1: a v-prediction there still gives x0 = -v, eps = x."""
    sched = make_scheduler({**TINY_SCHEDULER, "prediction_type": "v_prediction", "rescale_betas_zero_snr": True}, 10)
    t = torch.tensor(999)
    assert float(sched.alphas_cumprod[t]) == 0.0
    x, v = torch.randn(1, 4, 2, 8, 8), torch.randn(1, 4, 2, 8, 8)
    x0, eps = sched.split(v, t, x)
    assert torch.equal(x0, -v) and torch.equal(eps, x)
    out = sched.step(v, t, x)
    assert torch.isfinite(out).all()
    a_next = sched.alphas_cumprod[999 - sched.stride]
    torch.testing.assert_close(out, -a_next.sqrt() * v + (1 - a_next).sqrt() * x)


def test_initial_noise_is_per_seed_with_optional_offset_noise():
    """FlipSketch's draw (one CPU generator per sample, seed + k) and Animate-X's (randn + 0.1 randn(1, 4, F, 1, 1)
    from one generator) are the same function; seeds wrap at 2**64 (seed widgets go to 2**64 - 1)."""
    shape = (4, 3, 8, 8)
    got = SM.initial_noise(shape, 7, count=2)
    for k in range(2):
        assert torch.equal(got[k], torch.randn(1, *shape, generator=torch.Generator().manual_seed(7 + k))[0])
    g = torch.Generator().manual_seed(13)
    want = torch.randn(1, *shape, generator=g)
    want = want + 0.1 * torch.randn(1, 4, 3, 1, 1, generator=g)
    assert torch.equal(SM.initial_noise(shape, 13, offset=0.1), want)
    assert torch.equal(SM.initial_noise(shape, 2 ** 64 - 1, count=2)[1], SM.initial_noise(shape, 0)[0])


def test_sds_gradient_is_zero_for_the_true_noise_at_guidance_one():
    """FlexiClip's video SDS step (spec flexiclip.md §1.7): with guidance 1 and a denoiser that predicts the
    noise actually added, g = w(t) (eps_hat - eps) is exactly zero; another prediction gives w(t) x the error."""
    sched = make_scheduler(TINY_SCHEDULER, 25)
    z, noise = torch.randn(1, 4, 3, 8, 8), torch.randn(1, 4, 3, 8, 8)
    t = torch.tensor(500)
    true = SM.sds_gradient(lambda x, t_: SM.cfg_batch(lambda x2, _: noise.repeat(2, 1, 1, 1, 1), x, t_, 1.0),
                           z, t, noise, sched)
    assert true.shape == z.shape and torch.equal(true, torch.zeros_like(z))
    off = SM.sds_gradient(lambda x, t_: noise + 1, z, t, noise, sched)
    torch.testing.assert_close(off, (1 - sched.alphas_cumprod[500]) * torch.ones_like(z))


def test_a_2d_unet_with_controlnet_fits_the_denoiser_convention():
    """Room for PoseAnimate (spec §2, §3.1): a UNet2D + ControlNet denoiser with batched guidance runs in the
    one loop, forwards and inverted, with no loop of its own; image latents (B, C, h, w) work as video ones."""
    from diffusers import ControlNetModel, UNet2DConditionModel

    torch.manual_seed(0)
    blocks = dict(block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=32, attention_head_dim=8,
                  norm_num_groups=8)
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4,
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), **blocks).eval()
    controlnet = ControlNetModel(in_channels=4, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                 conditioning_embedding_out_channels=(16, 32), **blocks).eval()
    pose = torch.rand(1, 3, 16, 16)                       # one stride-2 conv: the pose image is 2x the latent
    cond, uncond = torch.randn(1, 77, 32), torch.zeros(1, 77, 32)

    def predict(x2, t):                                   # [uncond; cond], ControlNet in both branches
        e = torch.cat([uncond, cond]).repeat_interleave(x2.shape[0] // 2, 0)
        down, mid = controlnet(x2, t, encoder_hidden_states=e, controlnet_cond=pose.expand(x2.shape[0], -1, -1, -1),
                               return_dict=False)
        return unet(x2, t, encoder_hidden_states=e, down_block_additional_residuals=down,
                    mid_block_additional_residual=mid).sample

    def denoiser(x, t):
        return SM.cfg_batch(predict, x, t, 7.5)

    z0 = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    traj, _ = ddim_invert(denoiser, z0, TINY_SCHEDULER, 3)
    out = ddim_sample(denoiser, traj[-1], TINY_SCHEDULER, 3)
    assert out.shape == z0.shape and torch.isfinite(out).all() and len(traj) == 4


def test_with_patches_clones_the_model_and_replaces_a_patch_of_the_same_kind(bb):
    from comfyui_flipbook.pipelines.flipsketch.settings import FlipSketchAttention

    a, b = FlipSketchAttention(lam=0.1), FlipSketchAttention(lam=0.9)
    one = bb.with_patches(a)
    two = one.with_patches(b)
    assert bb.patches == () and one.patches == (a,) and two.patches == (b,)
    assert two.unet is bb.unet and two.vae is bb.vae and two.patch(FlipSketchAttention) is b
    assert bb.patch(FlipSketchAttention) is None
    before = {n: m.processor for n, (m, _) in A.attention_modules(bb.unet).items()}
    with two.installed():
        during = {n: m.processor for n, (m, _) in A.attention_modules(bb.unet).items()}
    after = {n: m.processor for n, (m, _) in A.attention_modules(bb.unet).items()}
    assert sum(during[n] is not before[n] for n in before) == 4 + 5 and after == before


def _loops_and_steps(run) -> tuple[int, int, int]:
    """Run ``run()`` and count: entries into the one loop, DDIM steps taken, steps taken outside it."""
    import sys

    loop_code, counts = SM.ddim_loop.__code__, {"loops": 0, "steps": 0, "outside": 0}
    real_step = DDIM.step

    def step(self, *a, **kw):
        counts["steps"] += 1
        f = sys._getframe(1)
        while f is not None and f.f_code is not loop_code:
            f = f.f_back
        counts["outside"] += f is None
        return real_step(self, *a, **kw)

    def profile(frame, event, arg):
        if event == "call" and frame.f_code is loop_code:
            counts["loops"] += 1

    DDIM.step = step
    sys.setprofile(profile)
    try:
        run()
    finally:
        sys.setprofile(None)
        DDIM.step = real_step
    return counts["loops"], counts["steps"], counts["outside"]


def test_one_loop_takes_every_step_of_every_sampler(bb):
    """The inverter, plain sampling, FlipSketch (with its reference's own steps) and Animate-X step only
    inside ddim_loop, each entering it once."""
    from comfyui_flipbook.pipelines.animatex.pipeline import Conditioning, sample as animatex_sample
    from comfyui_flipbook.pipelines.animatex.settings import TINY
    from comfyui_flipbook.pipelines.animatex.unet import build_unet
    from comfyui_flipbook.pipelines.flipsketch.pipeline import flipsketch_sample
    from comfyui_flipbook.pipelines.flipsketch.settings import FlipSketchAttention, FrameAlign

    z = torch.randn(1, 4, 2, 8, 8)
    prompt = encode_text(bb, "a cat")
    torch.manual_seed(0)
    ax = build_unet(TINY)
    g = torch.Generator().manual_seed(0)
    c = Conditioning(torch.randn(1, TINY.text_tokens, TINY.context_dim, generator=g), torch.rand(TINY.clip_dim, generator=g),
                     torch.rand(3, TINY.clip_dim, generator=g), torch.rand(3, 2, 18, generator=g),
                     torch.rand(2, 3, 64, 64, generator=g))
    runs = {
        "invert": (lambda: ddim_invert(lambda x, t: torch.zeros_like(x), z, TINY_SCHEDULER, 3), 3),
        "sample": (lambda: ddim_sample(lambda x, t: torch.zeros_like(x), z, TINY_SCHEDULER, 3), 3),
        "flipsketch": (lambda: flipsketch_sample(bb.with_patches(FlipSketchAttention(tau2=0)), prompt, z[:, :, :1],
                                                 align=FrameAlign(tau1=1, iters=1), frames=3, steps=2), 2 + 1),
        "animatex": (lambda: animatex_sample(ax, c, latent_hw=(8, 8), steps=3, context_frames=0),
                     len(released_timesteps(3))),
    }
    for name, (run, steps) in runs.items():
        assert _loops_and_steps(run) == (1, steps, 0), name
