"""CPABMM training: configs, losses, gradients, one step, resume, DDP, datasets, evaluation."""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from comfyui_flipbook.pipelines import cpabmm
from comfyui_flipbook.pipelines.cpabmm.train import (FramesDataset, SyntheticMotion, dropout_p, engine, losses,
                                                     train_config)
from comfyui_flipbook.pipelines.cpabmm.train.data import augment
from comfyui_flipbook.pipelines.errors import FlipbookInputError



@pytest.fixture(autouse=True)
def one_thread():
    """Training tests run on one thread, and give the session's thread count back (other tests'
    results, the goldens among them, depend on it)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def small_config(**train):
    """tiny-64 on 4 synthetic clips, batch 2: 2 steps an epoch, every phase of the schedule early."""
    t = {"batch_size": 2, "epoch_milestones": [1, 2], "bg_start": 1, "dropout_epoch": 1, "dropout_inc_epoch": 1,
         "checkpoint_freq": 100}
    t.update(train)
    return {"base": "tiny-64", "dataset": {"synthetic_clips": 4}, "train": t}


def test_release_configs_follow_the_yaml_files():
    vox, taichi, ted, mgif = (train_config(n) for n in ("vox-256", "taichi-256", "ted-384", "mgif-256"))
    assert vox["train"]["lr_generator"] == 1e-4 and ted["train"]["lr_generator"] == 2e-4       # spec §2.4
    assert [c["train"]["num_repeats"] for c in (vox, taichi, ted, mgif)] == [75, 300, 150, 50]
    assert [c["train"]["bg_start"] for c in (vox, taichi, ted, mgif)] == [10, 0, 0, 0]
    assert [(c["train"]["dropout_startp"], c["train"]["dropout_maxp"]) for c in (vox, taichi, ted, mgif)] == \
        [(0.1, 0.3), (0.0, 0.7), (0.0, 0.5), (0.2, 0.5)]
    assert vox["train"]["epoch_milestones"] == [70, 90] and vox["train"]["betas"] == [0.5, 0.999]
    assert vox["train"]["loss_weights"]["perceptual"] == [10] * 5 and vox["train"]["scales"] == [1, 0.5, 0.25, 0.125]
    assert taichi["model"]["max_iter"] == 200 and ted["model"]["size"] == 384 and not mgif["model"]["common"]["bg"]
    assert mgif["dataset"]["augmentation_params"]["resize_param"]["ratio"] == [0.9, 1.1]
    t = vox["train"]
    assert dropout_p(t, 0) == pytest.approx(0.1) and dropout_p(t, 5) == pytest.approx(0.25)
    assert dropout_p(t, 20) == pytest.approx(0.3) and dropout_p(t, 35) == 0.0
    with pytest.raises(FlipbookInputError, match="config"):
        train_config("vox-512")


def test_losses_vanish_where_they_must():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 32, 32)
    for vgg in (None, losses.VGG19Features([8, "M", 8, "M", 8, "M", 8, "M", 8])):
        assert float(losses.PerceptualLoss([1, 0.5], [10] * 5, vgg)(x, x)) == pytest.approx(0.0, abs=1e-6)
        assert float(losses.PerceptualLoss([1, 0.5], [10] * 5, vgg)(x, x.flip(3))) > 0.01
    kp = cpabmm.CPABMM(cpabmm.tiny_config("vox")).kp_detector.eval()
    with torch.no_grad():
        ident = losses.RandomTPS(torch.arange(2), 0.0, 0.0, 5)
        assert float(losses.equivariance_loss(kp, x, kp(x)["fg_kp"], ident)) < 1e-5
        moved = losses.RandomTPS(torch.arange(2), 0.05, 0.005, 5)
        assert float(losses.equivariance_loss(kp, x, kp(x)["fg_kp"], moved)) > 1e-4
    a = torch.eye(3).repeat(2, 1, 1)
    a[:, :2, 2] = 0.3
    assert float(losses.bg_cycle_loss(a, torch.linalg.inv(a))) < 1e-6 and float(losses.bg_cycle_loss(a, a)) > 0.01
    vit = losses.ViT(dim=16, depth=2, heads=2, patch=8, grid=4)
    torch.nn.init.normal_(vit.pos_embed)
    s = losses.StructureLoss(vit, layer=1, size=32)
    assert float(s(x, x)) == pytest.approx(0.0, abs=1e-7) and float(s(x, x.flip(2))) > 0
    sem = losses.KeypointSemanticLoss(lambda img, k: torch.nn.functional.grid_sample(
        img, k.unsqueeze(2), align_corners=True).squeeze(-1).transpose(1, 2))
    k = torch.rand(2, 5, 2) * 2 - 1
    assert float(sem(x, x, k, k)) == pytest.approx(0.0, abs=1e-6)


def test_warp_loss_and_dropout_vanish_for_the_identity():
    torch.manual_seed(0)
    m = cpabmm.CPABMM(cpabmm.tiny_config("vox"))
    x = torch.rand(2, 3, 64, 64)
    grid = cpabmm.networks.coordinate_grid(16, 16).expand(2, 16, 16, 2)
    occ = [torch.ones(2, 1, r, r) for r in (8, 16, 32, 64)]
    dense = {"deformation": grid, "occlusion_map": occ}
    out = m.inpainting_network(x, dense, warped_maps=True)
    enc = m.inpainting_network.get_encode(x, occ)
    assert float(losses.warp_loss(enc, out["warped_encoder_maps"])) < 1e-5
    assert float(losses.warp_loss(m.inpainting_network.get_encode(x.flip(3), occ), out["warped_encoder_maps"])) > 1e-3
    d = m.dense_motion_network
    grids = grid.unsqueeze(1).expand(2, 4, 16, 16, 2)
    kp = torch.zeros(2, 10, 2)
    small = d.downsample(x)
    full = d(small, kp, kp, grids)["contribution_maps"]
    kept = d(small, kp, kp, grids, keep=torch.ones(2, 4))["contribution_maps"]
    torch.testing.assert_close(kept, full, atol=1e-5, rtol=0)
    only_bg = d(small, kp, kp, grids, keep=torch.tensor([[1.0, 0, 0, 0]] * 2))["contribution_maps"]
    assert float(only_bg[:, 0].min().detach()) > 0.99


def _batch(n=2, seed=0):
    ds = SyntheticMotion(8)
    items = [ds.pair(i, seed + i) for i in range(n)]
    return (torch.stack([i["source"] for i in items]), torch.stack([i["driving"] for i in items]),
            torch.arange(n) + seed)


def test_gradients_reach_every_trained_network():
    cfg = train_config("tiny-64")
    torch.manual_seed(0)
    m = cpabmm.CPABMM(cfg["model"], with_avd=False).train()
    net = engine.TrainingModel(m, cfg["train"])
    src, drv, seeds = _batch()
    out, _ = net(src, drv, seeds, epoch=0)              # dropout on, background from bg_start 0
    assert set(out) == {"perceptual", "equivariance_value", "warp_loss", "bg"}
    sum(out.values()).backward()
    for name in ("kp_detector", "dense_motion_network", "inpainting_network", "bg_predictor"):
        grads = [p.grad for p in getattr(m, name).parameters() if p.requires_grad]
        assert all(g is not None for g in grads), name
        assert sum(float(g.abs().sum()) for g in grads) > 0, name


def test_optimiser_steps_lower_the_loss_on_a_fixed_batch():
    cfg = train_config("tiny-64")
    torch.manual_seed(0)
    m = cpabmm.CPABMM(cfg["model"], with_avd=False).train()
    net = engine.TrainingModel(m, cfg["train"])
    src, drv, seeds = _batch(4)
    params = [*m.kp_detector.parameters(), *m.dense_motion_network.parameters(), *m.inpainting_network.parameters()]
    opt = torch.optim.Adam(params, lr=1e-3, betas=(0.5, 0.999), weight_decay=1e-4)
    values = []
    for _ in range(3):
        out, _ = net(src, drv, seeds, epoch=5)          # past dropout: the same objective every step
        loss = sum(out.values())
        values.append(float(loss.detach()))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert values[1] < values[0] and values[2] < values[0]


def _run(tmp, cfg, **kw):
    return engine.train(cfg, "synthetic", str(tmp), workers=0, progress=False, name="t", **kw)


def test_resume_continues_bit_for_bit(tmp_path):
    cfg = small_config()
    straight = _run(tmp_path / "a", cfg, steps=5)
    _run(tmp_path / "b", cfg, steps=3)                   # mid-epoch, after the first milestone
    resumed = _run(tmp_path / "b", cfg, steps=5)
    assert resumed["steps"] == straight["steps"] == 5
    a, b = load_file(straight["weights"]), load_file(resumed["weights"])
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    st = torch.load(resumed["state"], weights_only=True)
    assert st["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-5)     # 1e-3 · 0.1 · 0.1
    rows = open(tmp_path / "a" / "log.csv").read().splitlines()
    assert rows[0].startswith("step,epoch,lr") and len(rows) == 6
    assert open(tmp_path / "b" / "log.csv").read().splitlines() == rows      # the resumed run logs the same
    model = cpabmm.load_model(resumed["weights"])                 # the Loader's format, config inside
    assert model.config["size"] == 64 and model.bg_predictor is not None


def test_two_processes_match_one_with_the_same_global_batch(tmp_path):
    """torchrun, 2 CPU processes (gloo), batch 2 each, vs 1 process with the global batch 4 in two
    micro-batches: batch-norm statistics are per device in both, so the parameters agree. (Running
    statistics differ by design: DDP broadcasts rank 0's.)"""
    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(json.dumps(small_config(batch_size=4)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = ["-m", "comfyui_flipbook", "train-cpabmm", "--config", str(cfg_file), "--data", "synthetic",
              "--steps", "2", "--workers", "0", "--name", "t"]
    with socket.socket() as sock:                       # a free port for the rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                          f"--master_port={port}", *common, "--out", str(tmp_path / "ddp")], env=env, timeout=240,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    one = engine.train(json.loads(cfg_file.read_text()), "synthetic", str(tmp_path / "one"), workers=0,
                       progress=False, name="t", steps=2, accumulate=2)
    a, b = load_file(str(tmp_path / "ddp" / "cpabmm-t.safetensors")), load_file(one["weights"])
    params = {n for n, _ in cpabmm.CPABMM(train_config("tiny-64")["model"], with_avd=False).named_parameters()}
    assert params and params <= a.keys()
    worst = max(float((a[k] - b[k]).abs().max()) for k in params)
    assert worst < 1e-5, worst
    torch.manual_seed(0)                                  # the engine's initialisation (seed 0)
    start = dict(cpabmm.CPABMM(train_config("tiny-64")["model"], with_avd=False).named_parameters())
    moved = max(float((a[k] - start[k].detach()).abs().max()) for k in params)
    assert moved > 100 * worst                            # the runs trained, and agree far closer than that


def _strip(path, frames, size=16):
    Image.fromarray(np.concatenate(frames, 1)).save(path)


def test_dataset_layouts_pairs_videos_and_augmentations(tmp_path):
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (16, 16, 3), dtype=np.uint8) for _ in range(3)]
    (tmp_path / "dir").mkdir()
    for i, f in enumerate(frames):
        Image.fromarray(f).save(tmp_path / "dir" / f"{i:03d}.png")
    _strip(tmp_path / "strip.png", frames)
    ims = [Image.fromarray(f) for f in frames]
    ims[0].save(tmp_path / "anim.gif", save_all=True, append_images=ims[1:], duration=50)
    (tmp_path / "notes.txt").write_text("ignored")
    n_videos = 3
    try:
        import av
    except ImportError:
        av = None
    if av is not None:                                          # .mp4 through PyAV (the 'train' extra)
        with av.open(str(tmp_path / "clip.mp4"), "w") as c:
            st = c.add_stream("mpeg4", rate=10)
            st.width = st.height = 16
            st.pix_fmt = "yuv420p"
            for f in frames:
                for packet in st.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                    c.mux(packet)
            for packet in st.encode():
                c.mux(packet)
        n_videos = 4
    aug = train_config("mgif-256")["dataset"]["augmentation_params"]
    aug = {**aug, "crop_param": {"size": [16, 16]}}
    for is_train in (True, False):
        ds = FramesDataset(str(tmp_path), frame_shape=(16, 16, 3), is_train=is_train, augmentation_params=aug)
        assert len(ds) == n_videos                              # <5 videos: no random split
    ds = FramesDataset(str(tmp_path), frame_shape=(16, 16, 3), augmentation_params=aug)
    for i in range(n_videos):
        p = ds.pair(i, seed=i)
        assert p["source"].shape == (3, 16, 16) and 0 <= float(p["source"].min()) <= float(p["source"].max()) <= 1
        again = ds.pair(i, seed=i)                              # the seed decides everything
        assert torch.equal(p["source"], again["source"]) and torch.equal(p["driving"], again["driving"])
        v = ds.video(i)
        assert v.shape[0] == 3
    dir_video = ds.video(ds.groups.index(["dir"]))
    torch.testing.assert_close(dir_video[1], torch.from_numpy(frames[1]).permute(2, 0, 1).float() / 255)
    clip = torch.rand(2, 3, 16, 16)
    out = augment(clip, aug, torch.Generator().manual_seed(1))
    assert out.shape == clip.shape and float(out.min()) >= 0 and float(out.max()) <= 1


def test_bad_datasets_give_clear_errors(tmp_path):
    with pytest.raises(FlipbookInputError, match="data"):
        FramesDataset(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FlipbookInputError, match="at least one video"):
        FramesDataset(str(tmp_path / "empty"))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "clip.gif").write_bytes(b"not a gif")
    ds = FramesDataset(str(tmp_path / "bad"), frame_shape=(16, 16, 3))
    with pytest.raises(FlipbookInputError, match="clip.gif"):
        ds.pair(0, 0)
    (tmp_path / "odd").mkdir()
    _strip(tmp_path / "odd" / "strip.png", [np.zeros((16, 16, 3), np.uint8)] * 2)
    with pytest.raises(FlipbookInputError, match="whole number"):
        FramesDataset(str(tmp_path / "odd"), frame_shape=(16, 24, 3)).pair(0, 0)
    with pytest.raises(FlipbookInputError, match="batch_size"):
        engine.train(small_config(batch_size=3), "synthetic", str(tmp_path / "o"), steps=1, accumulate=2,
                     workers=0, progress=False)


def test_synthetic_clips_are_reproducible_and_move():
    ds, held = SyntheticMotion(4), SyntheticMotion(4, held_out=True)
    v = ds.video(1)
    assert v.shape == (12, 3, 64, 64) and torch.equal(v, ds.video(1))
    assert float((v[0] - v[6]).abs().mean()) > 0.01                    # there is motion
    assert not torch.equal(held.video(1), v)                             # held-out clips are others


def test_reconstruction_l1_and_identity_baseline():
    from comfyui_flipbook.pipelines.cpabmm.train.evaluate import reconstruction_l1

    torch.manual_seed(0)
    m = cpabmm.CPABMM(train_config("tiny-64")["model"]).eval()
    res = reconstruction_l1(m, SyntheticMotion(2, held_out=True), max_frames=3)
    assert res.videos == 2 and res.frames == 6 and res.l1 > 0 and res.identity_l1 > 0


def test_find_best_frame_with_a_landmark_stand_in():
    from comfyui_flipbook.pipelines.cpabmm.best_frame import find_best_frame

    drv = torch.zeros(4, 8, 8, 3)
    pts = {0: [[0, 0], [4, 0], [0, 3]], 1: [[0, 0], [2, 0], [0, 5]], 2: [[1, 1], [9, 1], [1, 7]], 3: None}
    pose = lambda img: None if int(img[0, 0, 0]) == 3 else pts[int(img[0, 0, 0])]     # noqa: E731
    for i in range(4):
        drv[i, 0, 0, 0] = i / 255
    assert find_best_frame(drv[2:3], drv, landmarks=pose) in (0, 2)      # same shape as the source's
    assert find_best_frame(drv[1:2], drv, landmarks=pose) == 1


def test_evaluate_node_runs_in_inference_mode_on_a_trained_checkpoint(tmp_path, monkeypatch):
    from comfyui_flipbook.nodes import cpabmm as nodes

    summary = _run(tmp_path / "run", small_config(), steps=1)
    folder = tmp_path / "models" / "cpabmm"
    folder.mkdir(parents=True)
    os.replace(summary["weights"], folder / "trained.safetensors")
    monkeypatch.setenv("FLIPBOOK_MODELS_DIR", str(tmp_path / "models"))
    video = SyntheticMotion(1, held_out=True).video(0, 3).permute(0, 2, 3, 1)
    with torch.inference_mode():
        (model,) = nodes.FlipbookCPABMMLoader().load("trained.safetensors", "auto")
        l1, ident, frames, report = nodes.FlipbookCPABMMEvaluate().evaluate(model, video, 0)
    assert frames.shape == video.shape and 0 < l1 < 1 and 0 < ident < 1 and "identity" in report
    with pytest.raises(FlipbookInputError, match="video"):
        nodes.FlipbookCPABMMEvaluate().evaluate(model, torch.rand(2, 3, 8), 0)


def test_relative_mode_measures_motion_from_the_chosen_initial_frame():
    torch.manual_seed(0)
    m = cpabmm.CPABMM(train_config("tiny-64")["model"]).eval()
    drv = SyntheticMotion(1).video(0, 3).permute(0, 2, 3, 1)
    run = lambda i: cpabmm.animate(m, drv[:1], drv, mode="relative", max_iter=2, initial_frame=i)   # noqa: E731
    assert torch.equal(run(0), cpabmm.animate(m, drv[:1], drv, mode="relative", max_iter=2))
    assert not torch.equal(run(2), run(0))
    with pytest.raises(FlipbookInputError, match="initial_frame"):
        run(3)


def test_an_official_yaml_layout_reads_as_the_release_config():
    y = {"dataset_params": {"root_dir": "x", "frame_shape": None, "id_sampling": True},
         "model_params": {"common_params": {"num_tps": 10, "num_channels": 3, "bg": True, "multi_mask": True},
                          "generator_params": {"block_expansion": 64, "max_features": 512, "num_down_blocks": 3},
                          "dense_motion_params": {"block_expansion": 64, "max_features": 1024, "num_blocks": 5,
                                                  "scale_factor": 0.25, "max_iter": 200},
                          "avd_network_params": {"id_bottle_size": 128, "pose_bottle_size": 128}},
         "train_params": {"num_repeats": 300, "lr_generator": 1e-4, "bg_start": 0, "dropout_maxp": 0.7,
                          "dropout_startp": 0.0, "sam_model_path": "p", "use_vit_loss": True}}
    cfg = train_config(y)
    taichi = train_config("taichi-256")
    assert cfg["model"]["max_iter"] == 200 and cfg["model"]["common"]["num_cpab"] == 10
    assert cfg["model"]["common"] == taichi["model"]["common"] and cfg["model"]["size"] == 256
    for k in ("num_repeats", "bg_start", "dropout_maxp", "dropout_startp", "loss_weights", "epoch_milestones"):
        assert cfg["train"][k] == taichi["train"][k], k


def test_the_shipped_small_model_beats_copying_the_source(tmp_path):
    from comfyui_flipbook.pipelines.cpabmm.train.evaluate import reconstruction_l1

    (path,) = cpabmm.write_test_models(str(tmp_path))            # what make-test-models installs
    model = cpabmm.load_model(path)
    assert model.config["size"] == 64 and "trained_on" in model.config and model.bg_predictor is not None
    res = reconstruction_l1(model, SyntheticMotion(4, held_out=True), max_frames=8)
    assert res.l1 < 0.9 * res.identity_l1, res
    (rand,) = cpabmm.write_test_models(str(tmp_path / "random"), trained=False)
    assert "trained_on" not in cpabmm.load_model(rand).config


def test_user_supplied_vgg19_and_dino_weights_switch_the_losses_on(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    vgg = losses.VGG19Features()
    save_file({f"features.{k}": v.contiguous() for k, v in vgg.features.state_dict().items()},
              str(tmp_path / "vgg19.safetensors"))
    loaded = losses.load_vgg19(str(tmp_path / "vgg19.safetensors"))
    assert torch.equal(loaded.features[28].weight, vgg.features[28].weight)        # torchvision indices
    vit = losses.ViT(dim=16, depth=2, heads=2, patch=8, grid=4)
    torch.save(vit.state_dict(), tmp_path / "dino.pth")
    dino = losses.load_dino(str(tmp_path / "dino.pth"), dim=16, depth=2, heads=2, patch=8, grid=4)
    assert torch.equal(dino.blocks[1].attn.qkv.weight, vit.blocks[1].attn.qkv.weight)
    with pytest.raises(FlipbookInputError, match="vgg19"):
        losses.load_vgg19(str(tmp_path / "dino.pth"))
    summary = engine.train(small_config(), "synthetic", str(tmp_path / "run"), steps=1, workers=0, progress=False,
                           vgg19=str(tmp_path / "vgg19.safetensors"))
    assert summary["perceptual"] == "vgg19" and summary["losses"]["perceptual"] > 0


def test_the_command_line_reports_a_bad_dataset_without_a_traceback(tmp_path, capsys):
    from comfyui_flipbook.cli import main

    assert main(["train-cpabmm", "--config", "tiny-64", "--data", str(tmp_path / "none"), "--out",
                 str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "data" in err and "Traceback" not in err
