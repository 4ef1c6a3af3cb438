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


def test_single_files_convert_offline_and_match_the_folders(tmp_path, monkeypatch):
    """SD1.5-layout checkpoint + ControlNet-release file -> the same bundle, with no network (sockets refused)."""
    import socket

    from comfyui_flipbook.pipelines.poseanimate.models import save_single_files

    def no_network(*a, **k):
        raise AssertionError("network touched")
    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    src = tiny_sdcn(1, vae_downscale=8)
    save_sd_folder(src, str(tmp_path / "sd"))
    save_controlnet_folder(src, str(tmp_path / "cn"))
    ckpt, cn = save_single_files(src, str(tmp_path / "sd.safetensors"), str(tmp_path / "cn.safetensors"))
    folder = load_sdcn(str(tmp_path / "sd"), str(tmp_path / "cn"))
    with pytest.raises(FlipbookInputError, match="tokenizer"):
        load_sdcn(ckpt, cn)                    # outside ComfyUI a single file brings no tokenizer
    from comfyui_flipbook.pipelines.poseanimate import models as M
    monkeypatch.setattr(M, "comfy_sd1_tokenizer_dir", lambda: str(tmp_path / "sd" / "tokenizer"))   # "inside ComfyUI"
    single = load_sdcn(ckpt, cn)
    for name in ("unet", "vae", "text_encoder", "controlnet"):
        ref, got = getattr(folder, name).state_dict(), getattr(single, name).state_dict()
        assert set(ref) == set(got) and all(torch.equal(got[k], ref[k]) for k in ref), name
    assert single.scheduler_config["beta_schedule"] == "scaled_linear"     # the shipped SD1.5 DDIM config


def test_shipped_sd15_configs_build_the_released_sizes():
    """The configs the single-file loader converts with are SD1.5's and the OpenPose ControlNet's (spec §2.1:
    859.5 M and 361.3 M parameters), built on the meta device (no memory)."""
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from comfyui_flipbook.pipelines.poseanimate.models import shipped_config

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(shipped_config("sd15_unet"))
        cn = ControlNetModel.from_config(shipped_config("sd15_controlnet"))
        vae = AutoencoderKL.from_config(shipped_config("sd15_vae"))
        text = CLIPTextModel(CLIPTextConfig(**shipped_config("sd15_text_encoder")))

    def count(m):
        return sum(p.numel() for p in m.parameters())
    assert round(count(unet) / 1e6, 1) == 859.5 and round(count(cn) / 1e6, 1) == 361.3
    assert round(count(vae) / 1e6, 1) == 83.7 and round(count(text) / 1e6, 1) == 123.1
    assert shipped_config("sd15_scheduler")["steps_offset"] == 1


def test_nodes_pata_and_errors(inference):
    from comfyui_flipbook.nodes.poseanimate import FlipbookPoseAlignTransition, FlipbookPoseAnimateAttention
    from comfyui_flipbook.pipelines.pose import poses_to_openpose

    src = poses_to_openpose(_pose((50, 30), (50, 70)))
    drv = poses_to_openpose(_pose((20, 10), (20, 30), canvas=(64, 64), shift=(2.0, 0.0), frames=4))
    kp, images = FlipbookPoseAlignTransition().align(src, json.dumps(drv), 6, 1, "sequence", 32, 32, True, 0.3)
    assert len(kp) == 6 and images.shape == (6, 32, 32, 3) and images.max() > 0.5
    assert kp[0]["people"][0]["pose_keypoints_2d"][3:6] == src[0]["people"][0]["pose_keypoints_2d"][3:6]
    with pytest.raises(FlipbookInputError, match="source"):
        FlipbookPoseAlignTransition().align("not json", drv, 6, 1, "sequence", 32, 32, True, 0.3)
    with pytest.raises(FlipbookInputError, match="lambda1"):
        FlipbookPoseAnimateAttention().patch(tiny_sdcn(0), float("nan"), 0.15, 0.15, "multiply", "", 0.3, "up")


def test_subject_masks_from_cross_attention_maps():
    """P2P LocalBlend recipe (spec §2.4): mean over heads and layers, 3x3 max-pool, per-frame max, threshold."""
    from comfyui_flipbook.pipelines.poseanimate.attention import masks_from_maps

    grid = torch.zeros(2, 4, 4)
    grid[0, 1, 1] = 1.0                      # frame 0: the word attends to one cell
    grid[1, 2:, 2:] = 0.2                    # frame 1: weakly, to a corner (normalised per frame)
    maps = {16: [(grid.reshape(2, 1, 16).expand(2, 3, 16), None)] * 2}
    m = masks_from_maps(maps, (8, 8), 0.3)
    assert m.shape == (2, 8, 8) and set(m.unique().tolist()) <= {0.0, 1.0}
    assert m[0, 2, 2] == 1 and m[0, 7, 7] == 0 and m[0].sum() < 40        # around the cell, dilated by the pool
    assert m[1, 7, 7] == 1 and m[1, 0, 0] == 0
    assert masks_from_maps({}, (8, 8)) is None


def test_adam_per_item_early_stop_is_each_item_alone():
    """adam_minimise(per_item=True): an item whose loss fell below the threshold is frozen, the others go
    on, so a batch gives what each item gives alone (PACM's frame chunks)."""
    from comfyui_flipbook.pipelines.optimise import adam_minimise

    target = torch.tensor([[0.05], [3.0]])

    def loss(x):
        return ((x - target) ** 2).sum(1)

    both, _ = adam_minimise(torch.zeros(2, 1), loss, iters=50, lr=0.1, stop_below=lambda k: 1e-2, per_item=True)
    for i in range(2):
        alone, _ = adam_minimise(torch.zeros(1, 1), lambda x, i=i: ((x - target[i:i + 1]) ** 2).sum(1), iters=50,
                                 lr=0.1, stop_below=lambda k: 1e-2)
        assert torch.allclose(both[i], alone[0], atol=1e-6)
    assert not torch.allclose(both[0], target[0], atol=1e-3)          # item 0 stopped early, item 1 went on


def test_bf16_bundle_runs_the_chain(scene):
    image, poses, _ = scene
    model = tiny_sdcn(0, dtype=torch.bfloat16)
    with torch.inference_mode():
        traj = invert_source(model, image, poses, "a man", steps=2)
        emb = optimise_embeddings(model, traj, poses[:2], opts=PACM(inner_iters=1, stage2_iters=1))
        lat = poseanimate_sample(model.with_patches(PoseAnimateAttention()), emb)
    assert emb.frames.dtype == torch.float32 and lat.dtype == torch.bfloat16 and torch.isfinite(lat.float()).all()


def test_adam_compact_evaluates_only_running_items():
    from comfyui_flipbook.pipelines.optimise import adam_minimise

    target = torch.tensor([[0.05], [3.0]])
    rows_seen = []

    def loss(x, rows):
        rows_seen.append(2 if rows is None else len(rows))
        t = target if rows is None else target[rows]
        return ((x - t) ** 2).sum(1)

    full, _ = adam_minimise(torch.zeros(2, 1), lambda x: ((x - target) ** 2).sum(1), iters=30, lr=0.1,
                            stop_below=lambda k: 1e-2, per_item=True)
    compact, losses = adam_minimise(torch.zeros(2, 1), loss, iters=30, lr=0.1, stop_below=lambda k: 1e-2,
                                    per_item=True, compact=True)
    assert torch.allclose(full, compact, atol=1e-6)
    assert rows_seen[0] == 2 and rows_seen[-1] == 1 and all(l.shape == (2,) for l in losses)
