"""Animate-X sampling and nodes on the tiny config: schedule, determinism, windows, caching, CFG
batching, zero_y, the nodes under inference_mode, and bad inputs."""
from __future__ import annotations

import pathlib

import pytest
import torch

from comfyui_flipbook.pipelines.animatex import pipeline as S
from comfyui_flipbook.pipelines.animatex import settings, text, weights
from comfyui_flipbook.pipelines.animatex.settings import TINY
from comfyui_flipbook.pipelines.animatex.pipeline import AnimateXModel, Motion, build_motion, prepare
from comfyui_flipbook.pipelines.diffusion.sampler import context_windows
from comfyui_flipbook.pipelines.diffusion.scheduler import released_timesteps
from comfyui_flipbook.pipelines.animatex.testmodels import openclip_text_state
from comfyui_flipbook.pipelines.animatex.unet import build_unet
from comfyui_flipbook.pipelines.errors import FlipbookInputError
from comfyui_flipbook.pipelines import pose as P

ASSETS = pathlib.Path(__file__).resolve().parents[1] / "assets"
F = 3


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return AnimateXModel(build_unet(TINY), torch.randn(1, TINY.text_tokens, TINY.context_dim), "tiny")


@pytest.fixture(scope="module")
def poses():
    drv = P.poses_from_openpose((ASSETS / "animatex_dance_poses.json").read_text()).select(list(range(F)))
    ref = P.poses_from_openpose((ASSETS / "flipbook_character_pose.json").read_text())
    return P.retarget(drv, ref), ref


class StandInCLIPVision:
    """ComfyUI's CLIP_VISION interface (encode_image(IMAGE, crop) -> object with image_embeds) on a tiny
    transformers CLIPVisionModelWithProjection; 224 px without crop, CLIP mean/std as ComfyUI does."""

    def __init__(self, dim: int):
        from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection
        torch.manual_seed(0)
        cfg = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                               image_size=224, patch_size=32, projection_dim=dim)
        self.model = CLIPVisionModelWithProjection(cfg).eval()
        self.calls = 0

    def encode_image(self, image, crop=True):
        self.calls += 1
        x = torch.nn.functional.interpolate(image[..., :3].movedim(-1, 1), size=(224, 224), mode="bicubic", antialias=True)
        mean = torch.tensor([0.48145466, 0.4578275, 0.40821073])[:, None, None]
        std = torch.tensor([0.26862954, 0.26130258, 0.27577711])[:, None, None]
        return {"image_embeds": self.model(pixel_values=(x.clamp(0, 1) - mean) / std).image_embeds}


class StandInVAE:
    """ComfyUI VAE interface: encode(IMAGE) -> raw latent (B, 4, H/8, W/8)."""

    def encode(self, pixels):
        x = pixels.movedim(-1, 1)
        return torch.nn.functional.avg_pool2d(torch.cat([x, x.mean(1, keepdim=True)], 1), 8) * 4 - 2


_CLIP: list = []


def _clip() -> StandInCLIPVision:
    if not _CLIP:
        _CLIP.append(StandInCLIPVision(TINY.clip_dim))
    return _CLIP[0]


def _inputs(model, poses, **kw):
    seq, ref = poses
    clip = _clip()
    reference = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(1))
    motion = build_motion(lambda x: clip.encode_image(x, crop=False)["image_embeds"], reference, seq, reference_pose=ref)
    images = P.render_poses(seq, 64, 64)
    return prepare(model, reference, images, motion, **kw)


def test_released_timesteps_and_schedule():
    ts = released_timesteps(30)
    assert ts == list(range(991, 0, -33)) and len(ts) == 31 and ts[0] == 991 and ts[-1] == 1
    ac = settings.alphas_cumprod()
    plain = settings.alphas_cumprod(zero_terminal_snr=False)
    assert float(ac[-1]) == pytest.approx(0.0, abs=1e-12) and float(ac[0]) == pytest.approx(float(plain[0]), rel=1e-12)
    assert bool((ac[1:] < ac[:-1]).all())
    assert float(plain[0]) == pytest.approx(1 - 0.00085, rel=1e-9)


def test_the_released_scheduler_walks_the_released_list():
    """31 levels 991 ... 1 for "30 steps", each step spanning 33, the step from t = 1 landing on ᾱ_0
    (the previous index clamped at 0, spec §1.5), on the release's float64 table."""
    sched = S.released_scheduler(30)
    ac = settings.alphas_cumprod()
    assert sched.timesteps.tolist() == list(range(991, 0, -33)) and sched.stride == 33
    assert sched.prediction_type == "v_prediction" and sched.alphas_cumprod.dtype == torch.float64
    assert [float(a) for a in sched.levels(991)] == [float(ac[991]), float(ac[958])]
    assert [float(a) for a in sched.levels(1)] == [float(ac[1]), float(ac[0])]


def test_the_release_table_is_the_diffusers_zero_snr_config_in_float64():
    """settings.SCHEDULER (v_prediction, rescale_betas_zero_snr) describes the same schedule; diffusers builds
    it in float32, within 4e-5 (relative) of the release's float64 table, which the sampler keeps."""
    from diffusers import DDIMScheduler

    ac = settings.alphas_cumprod()
    d = DDIMScheduler.from_config(settings.SCHEDULER).alphas_cumprod.double()
    assert float(d[-1]) == float(ac[-1]) == 0.0
    torch.testing.assert_close(d[:-1], ac[:-1], rtol=4e-5, atol=0)


@pytest.mark.parametrize("eta", [0.0, 0.5])
def test_the_step_is_the_released_arithmetic_to_the_bit(eta):
    """Python floats from the float64 table, x0 from v, eps from x0, sigma from eta, the noise of a CPU
    generator (spec §1.5; what the sampler computed before it joined the shared core)."""
    import math

    sched, ac = S.released_scheduler(30), settings.alphas_cumprod()
    x, v = torch.randn(1, 4, 3, 8, 8), torch.randn(1, 4, 3, 8, 8)
    for t in (991, 496, 1):
        a, ap = float(ac[t]), float(ac[max(t - 33, 0)])
        x0 = math.sqrt(a) * x - math.sqrt(1 - a) * v
        eps = (x - math.sqrt(a) * x0) / math.sqrt(1 - a)
        sigma = eta * math.sqrt((1 - ap) / (1 - a) * (1 - a / ap)) if eta > 0 else 0.0
        want = math.sqrt(ap) * x0 + math.sqrt(max(1 - ap - sigma ** 2, 0.0)) * eps
        if sigma > 0:
            want = want + sigma * torch.randn(x.shape, generator=torch.Generator().manual_seed(t))
        got = sched.step(v, torch.tensor(t), x, eta=eta, generator=torch.Generator().manual_seed(t))
        assert torch.equal(got, want), t


def test_context_windows_cover_and_overlap():
    assert context_windows(10, 0, 8) == [list(range(10))]
    assert context_windows(10, 12, 8) == [list(range(10))]
    w = context_windows(120, 32, 8)
    assert w[0][0] == 0 and w[-1][-1] == 119 and all(len(x) == 32 for x in w)
    assert all(a[-8:] == b[:8] for a, b in zip(w[:-2], w[1:-1]))
    assert sorted(set(sum(w, []))) == list(range(120))
    with pytest.raises(FlipbookInputError, match="context_overlap"):
        context_windows(10, 4, 4)


def test_batched_cfg_equals_separate_branches(model, poses):
    cond, hw = _inputs(model, poses)
    both = S.branch_conditions(model.unet, cond, hw)
    x = torch.randn(1, 4, F, *hw)
    t = torch.tensor([500, 500])
    u1, c1 = S.split_branches(both, F)
    with torch.inference_mode():
        vb = model.unet(x.repeat(2, 1, 1, 1, 1), t, both)
        vc = model.unet(x, t[:1], c1)
        vu = model.unet(x, t[:1], u1)
        a = S.sample(model.unet, cond, latent_hw=hw, seed=3, steps=1)
        b = S.sample(model.unet, cond, latent_hw=hw, seed=3, steps=1, batch_cfg=False)
    assert torch.allclose(vb[1], vc[0], atol=1e-5) and torch.allclose(vb[0], vu[0], atol=1e-5)
    assert not torch.allclose(vc, vu, atol=1e-3)          # the conditioning matters
    assert torch.allclose(a, b, atol=1e-5)


def test_cfg_step_is_seeded_and_caching_changes_nothing(model, poses):
    cond, hw = _inputs(model, poses)
    with torch.inference_mode():
        a = S.sample(model.unet, cond, latent_hw=hw, seed=5, steps=1)
        b = S.sample(model.unet, cond, latent_hw=hw, seed=5, steps=1)
        c = S.sample(model.unet, cond, latent_hw=hw, seed=6, steps=1)
        d = S.sample(model.unet, cond, latent_hw=hw, seed=5, steps=1, cache_conditions=False)
    assert a.shape == (F, 4, *hw) and torch.isfinite(a).all()
    assert torch.equal(a, b) and not torch.allclose(a, c)
    assert torch.allclose(a, d, atol=1e-6)


def test_one_context_window_equals_full_sequence(model, poses):
    cond, hw = _inputs(model, poses)
    with torch.inference_mode():
        full = S.sample(model.unet, cond, latent_hw=hw, seed=2, steps=2, context_frames=0)
        one = S.sample(model.unet, cond, latent_hw=hw, seed=2, steps=2, context_frames=F)
        two = S.sample(model.unet, cond, latent_hw=hw, seed=2, steps=2, context_frames=2, context_overlap=1)
    assert torch.allclose(full, one, atol=1e-6)
    assert torch.isfinite(two).all() and not torch.allclose(full, two, atol=1e-4)


def test_latent_reference_mode_uses_the_slot(model, poses):
    with pytest.raises(FlipbookInputError, match="vae"):
        _inputs(model, poses, reference_mode="latent")
    cond, hw = _inputs(model, poses, reference_mode="latent", encode_latent=StandInVAE().encode)
    assert cond.local_image is None and cond.ref_latent.shape == (4, *hw)
    both = S.branch_conditions(model.unet, cond, hw)
    assert both["slot"][1].abs().sum() > 0 and both["slot"][0].abs().sum() == 0     # uncond first, as cfg_batch reads


def test_bad_inputs_raise_clear_errors(model, poses):
    seq, ref = poses
    cond, hw = _inputs(model, poses)
    motion = Motion(cond.clip_ref, cond.clip_frames, cond.keypoints)
    ref_img = torch.rand(1, 64, 64, 3)
    with pytest.raises(FlipbookInputError, match="pose count"):
        prepare(model, ref_img, P.render_poses(seq, 64, 64)[:2], motion)
    with pytest.raises(FlipbookInputError, match="width"):
        prepare(model, ref_img, P.render_poses(seq, 64, 64), motion, width=72)
    with pytest.raises(FlipbookInputError, match="reference"):
        prepare(model, torch.rand(64, 64), P.render_poses(seq, 64, 64), motion)
    with pytest.raises(FlipbookInputError, match="clip_vision"):
        S.sample(model.unet, S.Conditioning(cond.zero_y, cond.clip_ref[:5], cond.clip_frames[:, :5], cond.keypoints,
                                            cond.pose_images), latent_hw=hw, steps=1)
    with pytest.raises(FlipbookInputError, match="reference_mask"):
        prepare(model, ref_img, P.render_poses(seq, 64, 64), motion, reference_mask=torch.zeros(1, 32, 32))
    with pytest.raises(FlipbookInputError, match="driving_frames"):
        build_motion(lambda x: torch.zeros(x.shape[0], 32), ref_img, seq, driving_frames=torch.rand(F + 2, 32, 32, 3))


def test_zero_y_text_tower_matches_transformers_clip():
    """The plain-torch OpenCLIP text tower equals transformers' CLIPTextModel on the same weights:
    penultimate hidden states of [SOT, EOT, 0, ...] through the final LayerNorm."""
    from transformers import CLIPTextConfig, CLIPTextModel
    torch.manual_seed(0)
    cfg = CLIPTextConfig(vocab_size=49408, hidden_size=128, intermediate_size=256, num_hidden_layers=3,
                         num_attention_heads=2, max_position_embeddings=77, hidden_act="gelu")
    hf = CLIPTextModel(cfg).eval()
    h = {k.removeprefix("text_model."): v.detach() for k, v in hf.state_dict().items()}   # transformers 4 vs 5
    sd = {"token_embedding.weight": h["embeddings.token_embedding.weight"],
          "positional_embedding": h["embeddings.position_embedding.weight"],
          "ln_final.weight": h["final_layer_norm.weight"], "ln_final.bias": h["final_layer_norm.bias"]}
    for i in range(3):
        a, b = f"encoder.layers.{i}.", f"transformer.resblocks.{i}."
        sd[b + "attn.in_proj_weight"] = torch.cat([h[a + f"self_attn.{p}_proj.weight"] for p in "qkv"])
        sd[b + "attn.in_proj_bias"] = torch.cat([h[a + f"self_attn.{p}_proj.bias"] for p in "qkv"])
        for src, dst in (("self_attn.out_proj", "attn.out_proj"), ("layer_norm1", "ln_1"), ("layer_norm2", "ln_2"),
                         ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj")):
            sd[b + dst + ".weight"], sd[b + dst + ".bias"] = h[a + src + ".weight"], h[a + src + ".bias"]
    ids = torch.zeros(1, 77, dtype=torch.long)
    ids[0, 0], ids[0, 1] = text.SOT, text.EOT
    with torch.no_grad():
        out = hf(input_ids=ids, output_hidden_states=True)
        want = getattr(hf, "text_model", hf).final_layer_norm(out.hidden_states[-2])
    got = text.empty_prompt_tokens(sd)
    assert got.shape == (1, 77, 128)
    assert torch.allclose(got, want, atol=1e-4)


def test_nodes_end_to_end_under_inference_mode(tmp_path, monkeypatch, inference, poses):
    from comfyui_flipbook.nodes import animatex as N
    from comfyui_flipbook.nodes import pose as PN

    folder = tmp_path / "animatex"
    monkeypatch.setenv("FLIPBOOK_MODELS_DIR", str(tmp_path))
    torch.manual_seed(0)
    weights.save_unet(build_unet(TINY), str(folder / "animate-x_ckpt.pth"))
    torch.save(openclip_text_state(width=TINY.context_dim), folder / "open_clip_pytorch_model.bin")
    assert "animate-x_ckpt.pth" in N.FlipbookAnimateXLoader.INPUT_TYPES()["required"]["unet_name"][0]

    (model,) = N.FlipbookAnimateXLoader().load("animate-x_ckpt.pth", "fp32", "open_clip_pytorch_model.bin", True)
    assert (folder / "animate-x_ckpt.fp16.safetensors").exists() and model.zero_y.shape == (1, 77, TINY.context_dim)
    (drv, _) = PN.FlipbookLoadPoseKeypoints().load("animatex_dance_poses.json", 0, 0.3, 0, 2, F)
    (ref,) = PN.FlipbookPoseFromKeypoints().convert((ASSETS / "flipbook_character_pose.json").read_text(), 0, 0.3)
    (seq,) = PN.FlipbookPoseRetarget().retarget(drv, 1.2, 1.0, 1.0, 1.0, 1.0, 1.0, "none", 0.0, 0.0, True, 7, 1.0, 0.5, ref)
    (images,) = PN.FlipbookPoseRender().render(seq, 64, 64, "animatex", True, True, False)
    clip = _clip()
    calls = clip.calls
    reference = torch.rand(1, 64, 64, 4)
    mask = torch.zeros(1, 64, 64)
    mask[:, :8] = 1.0                                    # transparent top rows: composited on white
    (motion,) = N.FlipbookAnimateXPoseIndicator().encode(clip, reference, seq, reference_pose=ref, reference_mask=mask)
    from comfyui_flipbook.pipelines.animatex.pipeline import reference_rgb
    rgb = reference_rgb(reference, mask)
    assert (rgb[0, :8] == 1).all() and torch.equal(rgb[0, 8:], reference[0, 8:, :, :3])
    assert motion.clip_frames.shape == (F + 1, TINY.clip_dim) and clip.calls == calls + 2
    (lat,) = N.FlipbookAnimateXSampler().sample(model, reference, images, motion, 13, 2, 2.5, 0.0, 0.1,
                                                "local_image", 0, 0, 32, 8, False)
    assert lat["samples"].shape == (F, 4, 8, 8) and torch.isfinite(lat["samples"]).all()
    with pytest.raises(FlipbookInputError, match="not found"):
        N.FlipbookAnimateXLoader().load("missing.pth", "fp32", "open_clip_pytorch_model.bin", False)

    class StandInCLIP:                                    # ComfyUI CLIP: tokenize + encode_from_tokens
        def tokenize(self, text):
            return {"l": [[(49406, 1.0), (49407, 1.0)]], "prompt": text}

        def encode_from_tokens(self, tokens):
            assert tokens["prompt"] == ""
            return torch.full((1, 77, TINY.context_dim), 0.5)

    (m2,) = N.FlipbookAnimateXLoader().load("animate-x_ckpt.fp16.safetensors", "fp32", N.NO_TEXT_ENCODER, False,
                                            clip=StandInCLIP())
    assert torch.equal(m2.zero_y, torch.full((1, 77, TINY.context_dim), 0.5))
    with pytest.raises(FlipbookInputError, match="clip"):
        N.FlipbookAnimateXLoader().load("animate-x_ckpt.pth", "fp32", N.NO_TEXT_ENCODER, False)
