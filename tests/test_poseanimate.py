"""PoseAnimate on the tiny SD + ControlNet (spec flipsketch-poseanimate.md §2, §3.2 items 5-7)."""
import json
import os

import pytest
import torch

from comfyui_flipbook.pipelines.diffusion.attention import ReferenceStore
from comfyui_flipbook.pipelines.diffusion.sampler import controlnet_predict
from comfyui_flipbook.pipelines.errors import FlipbookInputError
from comfyui_flipbook.pipelines.pose import PoseSequence
from comfyui_flipbook.pipelines.poseanimate import (PACM, PoseAnimateAttention, decode, invert_source, load_sdcn,
                                                    optimise_embeddings, pata, poseanimate_sample, tiny_sdcn)
from comfyui_flipbook.pipelines.poseanimate.attention import dual_attention
from comfyui_flipbook.pipelines.poseanimate.models import save_controlnet_folder, save_sd_folder
from comfyui_flipbook.pipelines.poseanimate.pata import align_poses

SIZE = 16          # tiny bundle: x2 VAE, 8x8 latents, 16-pixel pose images


@pytest.fixture(scope="module")
def model():
    return tiny_sdcn(0)


@pytest.fixture(scope="module")
def scene(model):
    g = torch.Generator().manual_seed(1)
    image = torch.rand(1, SIZE, SIZE, 3, generator=g)
    poses = torch.rand(3, SIZE, SIZE, 3, generator=g)
    traj = invert_source(model, image, poses, "a man", steps=3)
    return image, poses, traj


# --- DCAM / MGDM --------------------------------------------------------------------------------

def _plain(q, k, v, scale):
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=scale)


def test_dca_of_identical_frames_is_plain_self_attention():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 1, 2, 6, 4, generator=g).expand(2, 4, -1, -1, -1) for _ in range(3))
    out = dual_attention(q, k, v, 0.5)
    assert torch.allclose(out, _plain(q, k, v, 0.5), atol=1e-6)


def test_dca_frame0_passes_through_and_mixes_other_frames():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 2, 6, 4, generator=g) for _ in range(3))
    out = dual_attention(q, k, v, 0.5)
    plain = _plain(q, k, v, 0.5)
    assert torch.allclose(out[:, 0], plain[:, 0], atol=1e-6)
    assert not torch.allclose(out[:, 2], plain[:, 2], atol=1e-3)
    want = 0.7 * _plain(q[:, 2], k[:, 0], v[:, 0], 0.5) + 0.15 * _plain(q[:, 2], k[:, 1], v[:, 1], 0.5) \
        + 0.15 * plain[:, 2]
    assert torch.allclose(out[:, 2], want, atol=1e-6)


@pytest.mark.parametrize("mode", ["multiply", "logit"])
def test_mgdm_with_all_ones_masks_is_dca(mode):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 2, 6, 4, generator=g) for _ in range(3))
    ones = torch.ones(3, 6)
    assert torch.allclose(dual_attention(q, k, v, 0.5, masks=ones, mask_mode=mode), dual_attention(q, k, v, 0.5),
                          atol=1e-6)
    half = (torch.arange(6) < 3).float().expand(3, -1)
    assert not torch.allclose(dual_attention(q, k, v, 0.5, masks=half, mask_mode=mode), dual_attention(q, k, v, 0.5),
                              atol=1e-3)


def _eps(model, x, t, e, cond, store=None, frames=None):
    store = store or ReferenceStore()
    with model.installed(store), store.phase("use" if frames else "off", frames=frames or 1):
        return controlnet_predict(model.unet, model.controlnet, x, t, e, cond)


def test_dcam_on_the_unet_identical_frames_and_frame0(model):
    g = torch.Generator().manual_seed(2)
    patched = model.with_patches(PoseAnimateAttention())
    x = torch.randn(1, 4, 8, 8, generator=g)
    e = torch.randn(1, 77, 32, generator=g)
    cond = torch.rand(1, 3, SIZE, SIZE, generator=g)
    t = torch.tensor(500)
    with torch.no_grad():
        same = _eps(patched, x.expand(3, -1, -1, -1), t, e.expand(3, -1, -1), cond.expand(3, -1, -1, -1), frames=3)
        alone = _eps(model, x, t, e, cond)
        assert torch.allclose(same, alone.expand(3, -1, -1, -1), atol=1e-4)
        xs = torch.cat([x, torch.randn(2, 4, 8, 8, generator=g)])
        mixed = _eps(patched, xs, t, e.expand(3, -1, -1), cond.expand(3, -1, -1, -1), frames=3)
        assert torch.allclose(mixed[:1], alone, atol=1e-4)                     # frame 0 passes through
        plain = _eps(model, xs, t, e.expand(3, -1, -1), cond.expand(3, -1, -1, -1))
        assert (mixed[1:] - plain[1:]).abs().max() > 1e-3                      # frames 1.. attend to frame 0
    names = {n for n, (m, r) in _roles(patched).items()}
    assert names and all(n.startswith("up_blocks.") and n.endswith("attn1") for n in names)


def _roles(model):
    from comfyui_flipbook.pipelines.diffusion.attention import patched
    from comfyui_flipbook.pipelines.poseanimate.attention import DualAttentionProcessor
    store = ReferenceStore()
    with patched(model.unet, *(p.bind(store) for p in model.patches)) as mods:
        return {n: (m, r) for n, (m, r) in mods.items() if isinstance(m.processor, DualAttentionProcessor)}


# --- PACM ---------------------------------------------------------------------------------------

def test_zero_iterations_return_the_text_embedding(model, scene):
    _, poses, traj = scene
    out = optimise_embeddings(model, traj, poses, opts=PACM(inner_iters=0, stage2_iters=0))
    assert out.frames.shape == (3, 3, 77, 32)
    assert torch.equal(out.frames, traj["embeds"].expand(3, 3, -1, -1))


def test_pacm_loss_is_non_increasing_over_inner_iterations(model, scene):
    _, poses, traj = scene
    stats = {}
    optimise_embeddings(model, traj, poses[:1], opts=PACM(inner_iters=6, lr=1e-3, lr_decay=False, early_stop=0),
                        stats=stats)
    for h in stats["history"]:
        assert h.shape[0] == 6
        assert (h[1:] <= h[:-1] * (1 + 1e-4) + 1e-9).all(), h.flatten().tolist()
        assert h[-1].item() < h[0].item()


def test_chunked_and_unchunked_pacm_agree(model, scene):
    _, poses, traj = scene
    a = optimise_embeddings(model, traj, poses, opts=PACM(inner_iters=2, stage2_iters=2, frame_chunk=1))
    b = optimise_embeddings(model, traj, poses, opts=PACM(inner_iters=2, stage2_iters=2, frame_chunk=4))
    # batched convolutions round differently; Adam's normalised step turns that into < 1 % of one lr step
    assert torch.allclose(a.frames, b.frames, atol=1e-3)
    assert not torch.equal(a.frames[1], a.frames[2])          # different poses, different embeddings


def test_stage1_reconstructs_the_source_better_than_plain_inversion(model):
    g = torch.Generator().manual_seed(3)
    image = torch.rand(1, SIZE, SIZE, 3, generator=g)
    pose = torch.rand(1, SIZE, SIZE, 3, generator=g)
    traj = invert_source(model, image, pose, "a man", steps=4)
    z0 = traj["latents"][0]
    opt = optimise_embeddings(model, traj, pose, opts=PACM(inner_iters=10, early_stop=0))
    plain = optimise_embeddings(model, traj, pose, opts=PACM(inner_iters=0))
    err_opt = (poseanimate_sample(model, opt)[:, :, 0] - z0).pow(2).mean()
    err_plain = (poseanimate_sample(model, plain)[:, :, 0] - z0).pow(2).mean()
    assert err_opt < 0.5 * err_plain, (err_opt, err_plain)


def test_uncond_slot_runs_and_differs(model, scene):
    _, poses, traj = scene
    a = optimise_embeddings(model, traj, poses[:2], opts=PACM(inner_iters=1, stage2_iters=1, slot="uncond"))
    assert torch.allclose(a.other, traj["embeds"])
    assert poseanimate_sample(model, a).shape == (1, 4, 2, 8, 8)


def test_pacm_inside_inference_mode(model, scene):
    _, poses, traj = scene
    with torch.inference_mode():
        out = optimise_embeddings(model, traj, poses[:2], opts=PACM(inner_iters=1, stage2_iters=1))
    assert out.frames.shape == (2, 3, 77, 32) and torch.isfinite(out.frames).all()


def test_pacm_cancel_stops(model, scene):
    _, poses, traj = scene
    calls = []

    def check():
        calls.append(1)
        if len(calls) > 3:
            raise InterruptedError

    with pytest.raises(InterruptedError):
        optimise_embeddings(model, traj, poses, opts=PACM(inner_iters=2), check=check)


# --- sampler ------------------------------------------------------------------------------------

def test_sampler_with_mgdm_and_subject_masks(model, scene):
    image, poses, traj = scene
    emb = optimise_embeddings(model, traj, poses, opts=PACM(inner_iters=1, stage2_iters=1))
    mask = torch.zeros(1, SIZE, SIZE)
    mask[:, 4:12, 4:12] = 1
    patched = model.with_patches(PoseAnimateAttention(source_mask=mask, subject_word="man"))
    with torch.inference_mode():
        lat = poseanimate_sample(patched, emb)
        plain = poseanimate_sample(model, emb)
        frames = decode(patched, lat)
    assert lat.shape == (1, 4, 3, 8, 8) and frames.shape == (3, SIZE, SIZE, 3)
    assert torch.allclose(lat[:, :, 0], plain[:, :, 0], atol=1e-4)      # frame 0 reconstructs as without the patch
    assert (lat[:, :, 1:] - plain[:, :, 1:]).abs().max() > 1e-4


# --- PATA ---------------------------------------------------------------------------------------

def _pose(neck, hip_mid, canvas=(100, 100), shift=(0.0, 0.0), frames=1):
    pts = torch.zeros(frames, 62, 2)
    conf = torch.zeros(frames, 62)
    for f in range(frames):
        n = torch.tensor(neck) + torch.tensor(shift) * f
        h = torch.tensor(hip_mid) + torch.tensor(shift) * f
        pts[f, 1] = n
        pts[f, 8] = h + torch.tensor([-5.0, 0])
        pts[f, 11] = h + torch.tensor([5.0, 0])
        pts[f, 0] = n + torch.tensor([0.0, -10])
        pts[f, 4] = n + torch.tensor([20.0, 5 * f])
        conf[f, [0, 1, 4, 8, 11]] = 1
    return PoseSequence(pts, conf, canvas)


def test_pata_t0_is_pure_alignment_with_scale_and_translation_invariants():
    src = _pose((50, 30), (50, 70))                                   # neck -> mid-hip 40 px
    drv = _pose((20, 10), (20, 30), canvas=(64, 64), shift=(3.0, 1.0), frames=5)      # 20 px, moving
    out = pata(src, drv, total_frames=6, t=0)
    assert out.frames == 6 and out.canvas == src.canvas
    assert torch.equal(out.points[0], src.points[0])
    p = out.points[1:]
    assert torch.allclose(p[0, 1], src.points[0, 1])                   # necks coincide
    mid = (p[0, 8] + p[0, 11]) / 2
    assert torch.allclose((p[0, 1] - mid).norm(), torch.tensor(40.0))  # scale from neck -> mid-hip
    assert torch.allclose(p[3] - p[0], 2 * (drv.points[3] - drv.points[0]) * drv.present[3, :, None], atol=1e-5)
    per = align_poses(src, drv, "per_frame")
    assert torch.allclose(per.points[:, 1], src.points[0, 1].expand(5, -1))   # every neck on the source's


def test_pata_transition_endpoints_and_length():
    src = _pose((50, 30), (50, 70))
    drv = _pose((20, 10), (20, 30), canvas=(64, 64), frames=3)
    out = pata(src, drv, total_frames=8, t=3, align_mode="sequence")
    aligned = align_poses(src, drv)
    assert out.frames == 8
    assert torch.equal(out.points[0], src.points[0])
    assert torch.allclose(out.points[4], aligned.points[0])           # first driving pose right after t = 3
    k = 2 / 4
    assert torch.allclose(out.points[2, :2], (1 - k) * src.points[0, :2] + k * aligned.points[0, :2])
    assert torch.allclose(out.points[7], aligned.points[2])           # 8 - 1 - 3 = 4 > 3 frames: the last is held
    one_sided = _pose((50, 30), (50, 70))
    one_sided.conf[0, 4] = 0
    held = pata(one_sided, drv, total_frames=6, t=1)
    assert torch.allclose(held.points[1, 4], aligned.points[0, 4])   # a joint missing at one end is held


def test_pata_bad_inputs():
    src = _pose((50, 30), (50, 70))
    with pytest.raises(FlipbookInputError, match="total_frames"):
        pata(src, src, total_frames=3, t=4)
    empty = PoseSequence(torch.zeros(1, 62, 2), torch.zeros(1, 62), (10, 10))
    with pytest.raises(FlipbookInputError, match="sequence"):
        pata(src, empty)


# --- models ------------------------------------------------------------------------------------

def test_diffusers_folders_load_back_offline(model, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    save_sd_folder(model, str(tmp_path / "sd"))
    save_controlnet_folder(model, str(tmp_path / "cn"))
    back = load_sdcn(str(tmp_path / "sd"), str(tmp_path / "cn"), dtype="fp32")
    g = torch.Generator().manual_seed(0)
    x, e, c = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 77, 32, generator=g), torch.rand(1, 3, 16, 16, generator=g)
    with torch.no_grad():
        assert torch.allclose(_eps(model, x, 10, e, c), _eps(back, x, 10, e, c), atol=1e-5)
    assert back.tokenizer("a man").input_ids == model.tokenizer("a man").input_ids
    half = load_sdcn(str(tmp_path / "sd"), str(tmp_path / "cn"), dtype="bf16")
    assert half.dtype == torch.bfloat16 and next(half.controlnet.parameters()).dtype == torch.bfloat16


def test_bad_inputs_give_clear_errors(model, scene, tmp_path):
    image, poses, traj = scene
    with pytest.raises(FlipbookInputError, match="slot"):
        PACM(slot="both")
    with pytest.raises(FlipbookInputError, match="lr"):
        PACM(lr=float("nan"))
    with pytest.raises(FlipbookInputError, match="model"):
        invert_source(object(), image, poses, "a man")
    with pytest.raises(FlipbookInputError, match="trajectory"):
        optimise_embeddings(model, {"latents": []}, poses)
    with pytest.raises(FlipbookInputError, match="image"):
        invert_source(model, torch.rand(1, 15, 15, 3), poses, "a man", steps=1)
    with pytest.raises(FlipbookInputError, match="lambdas|lambda"):
        PoseAnimateAttention(lambdas=(0.7, 0.3))
    with pytest.raises(FlipbookInputError, match="checkpoint"):
        load_sdcn(str(tmp_path), str(tmp_path))
    with pytest.raises(FlipbookInputError, match="subject_word"):
        emb = optimise_embeddings(model, traj, poses[:2], opts=PACM(inner_iters=0, stage2_iters=0))
        poseanimate_sample(model.with_patches(PoseAnimateAttention(source_mask=torch.ones(1, SIZE, SIZE),
                                                                   subject_word="zebra")), emb)
