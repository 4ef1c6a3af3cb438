"""Shared diffusion blocks: DDIM arithmetic and inversion, name-keyed attention patches, backbones,
text encoding, VAE round trips, the shared nodes (spec flipsketch-poseanimate.md §3, §3.2)."""

import pytest
import torch

from comfyui_flipbook.pipelines.diffusion import attention as A
from comfyui_flipbook.pipelines.diffusion.backbone import TINY_SCHEDULER, load_t2v, save_t2v, tiny_t2v
from comfyui_flipbook.pipelines.diffusion.ddim import cfg_eps, ddim_invert, ddim_sample, ddim_step, make_scheduler, t2v_eps
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
        torch.testing.assert_close(ddim_step(inv, eps, t, x), want, rtol=1e-5, atol=1e-6)


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
    eps = t2v_eps(bb.unet, null_embeds(bb))
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
        got = cfg_eps(bb.unet, c, u, 3.0)(x, 100)
        eu, ec = t2v_eps(bb.unet, u)(x, 100), t2v_eps(bb.unet, c)(x, 100)
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
    from comfyui_flipbook.pipelines.flipsketch import FLIPSKETCH_MODEL, write_test_models

    monkeypatch.setenv("FLIPBOOK_MODELS_DIR", str(tmp_path))
    assert t2v_folders() == [FLIPSKETCH_MODEL]          # nothing installed: the name the workflow uses
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
