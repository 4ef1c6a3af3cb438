"""CPABMM: official state-dict layout, tiny end-to-end runs, identity behaviour, checkpoints, nodes."""
import os

import pytest

from comfyui_flipbook.pipelines.io import load_frames
import torch

from comfyui_flipbook.nodes import _comfy
from comfyui_flipbook.nodes import cpabmm as cpabmm_nodes
from comfyui_flipbook.pipelines import cpabmm
from comfyui_flipbook.pipelines.cpabmm.pipeline import fit_cpab_grids
from comfyui_flipbook.pipelines.errors import FlipbookInputError

ASSETS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets")


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return cpabmm.CPABMM(cpabmm.tiny_config("vox")).eval()


def _set_identity(model, pick: int = 0):
    """Contribution maps select transform ``pick`` (0 = background), occlusion maps are all 1."""
    d = model.dense_motion_network
    with torch.no_grad():
        d.maps.weight.zero_()
        d.maps.bias.fill_(-30.0)
        d.maps.bias[pick] = 30.0
        for conv in d.occlusion:
            conv.weight.zero_()
            conv.bias.fill_(30.0)


def test_full_size_networks_have_the_official_layout():
    with torch.device("meta"):
        m = cpabmm.CPABMM(cpabmm.preset_config("vox"))
    dense = m.dense_motion_network.state_dict()
    assert len(dense) == 59 and len(m.inpainting_network.state_dict()) == 78        # spec §2.3
    assert tuple(dense["hourglass.encoder.down_blocks.0.conv.weight"].shape) == (128, 87, 3, 3)
    assert tuple(dense["maps.weight"].shape) == (12, 151, 7, 7)
    assert tuple(dense["down.weight"].shape) == (3, 1, 13, 13)
    assert [dense[f"occlusion.{i}.weight"].shape[1] for i in range(4)] == [256, 151, 75, 37]
    count = lambda mod: sum(p.numel() for p in mod.parameters())                      # noqa: E731
    assert round(count(m.dense_motion_network) / 1e6, 2) == 37.96
    assert round(count(m.inpainting_network) / 1e6, 2) == 24.74
    assert m.kp_detector.fg_encoder.fc.weight.shape == (100, 512)
    assert "fg_encoder.layer4.1.bn2.running_var" in m.kp_detector.state_dict()        # torchvision names
    assert m.bg_predictor.bg_encoder.conv1.weight.shape == (64, 6, 7, 7)
    assert cpabmm.preset_config("mgif")["common"]["bg"] is False
    assert cpabmm.preset_config("ted")["size"] == 384 and cpabmm.preset_config("taichi")["max_iter"] == 200
    norm = cpabmm.normalise_config({"preset": "vox", "common": {"num_tps": 7}})
    assert norm["common"]["num_cpab"] == 7                                            # official-yaml key


@pytest.mark.parametrize("mode", ["relative", "standard", "avd"])
def test_tiny_forward_gives_frames_of_the_source_size(tiny, mode):
    src = torch.rand(1, 80, 72, 3)
    drv = torch.rand(3, 50, 60, 3)
    with torch.inference_mode():
        out = cpabmm.animate(tiny, src, drv, mode=mode, batch=2)
    assert out.shape == (3, 80, 72, 3) and torch.isfinite(out).all()
    assert out.min() >= 0 and out.max() <= 1
    assert (out - out[:1]).abs().amax() > 0 or mode == "relative"                    # frames differ with the driving


def test_identity_networks_reproduce_the_source(tiny):
    model = cpabmm.CPABMM(tiny.config).eval()
    model.load_state_dict(tiny.state_dict())
    src = torch.rand(1, 64, 64, 3)                                                   # model size: no resize
    drv = src.expand(4, -1, -1, -1)
    _set_identity(model, pick=0)
    with torch.inference_mode():
        out = cpabmm.animate(model, src, drv, mode="standard", use_bg=False)
    assert (out - src).abs().max() < 1e-4
    # only the global CPAB transform: fitted on identical keypoints it stays close to the identity
    _set_identity(model, pick=model.num_cpab + 1)
    with torch.inference_mode():
        out = cpabmm.animate(model, src, drv, mode="standard", use_bg=False)
    smooth = torch.nn.functional.avg_pool2d(src.permute(0, 3, 1, 2), 5, 1, 2)
    assert (out - src).abs().mean() < 0.25 * (smooth.permute(0, 2, 3, 1) - src).abs().mean() + 0.02


def test_fitted_grids_map_driving_keypoints_to_source():
    g = torch.Generator().manual_seed(0)
    kp_s = torch.rand(1, 10, 2, generator=g) * 1.2 - 0.6
    kp_d = kp_s + 0.08 * torch.randn(1, 10, 2, generator=g)
    grids = fit_cpab_grids(kp_s, kp_d, (17, 17), num_cpab=2, max_iter=80, nsteps=10)
    assert grids.shape == (1, 3, 17, 17, 2)
    # sample the global grid at the driving keypoints: it points at the source keypoints
    at = torch.nn.functional.grid_sample(grids[:, 2].permute(0, 3, 1, 2), kp_d.view(1, 1, -1, 2), align_corners=True)
    before = (kp_d - kp_s).norm(dim=-1).mean()
    assert (at[0, :, 0].T - kp_s[0]).norm(dim=-1).mean() < 0.3 * before


def test_relative_mode_keeps_the_source_keypoints_at_the_first_frame():
    kp_s = torch.rand(1, 10, 2) - 0.5
    kp_d0 = torch.rand(1, 10, 2) - 0.5
    assert torch.equal(cpabmm.relative_keypoints(kp_s, kp_d0, kp_d0), kp_s)
    moved = cpabmm.relative_keypoints(kp_s, kp_d0 + 0.1, kp_d0)
    assert torch.allclose(moved - kp_s, torch.full_like(kp_s, 0.1) * (moved - kp_s)[0, 0, 0] / 0.1)


def test_checkpoints_round_trip_and_unsafe_pickles_are_refused(tiny, tmp_path):
    st = cpabmm.save_safetensors(tiny, str(tmp_path / "mine.safetensors"))
    again = cpabmm.load_model(st)
    for k, v in tiny.state_dict().items():
        assert torch.equal(v, again.state_dict()[k])
    # the official training checkpoint layout (plus optimiser state) through weights_only
    official = {**tiny.module_state_dicts(), "epoch": 99,
                "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0, 1]}]}}
    pth = tmp_path / "00000099-checkpoint.pth.tar"
    torch.save(official, pth)
    with pytest.raises(FlipbookInputError, match="preset"):
        cpabmm.load_model(str(pth))                                  # no stored config: preset needed
    with pytest.raises(FlipbookInputError, match="do not fit"):
        cpabmm.load_model(str(pth), "vox")                           # tiny weights, full-size preset
    converted = cpabmm.save_safetensors(tiny, str(tmp_path / "conv.safetensors"))
    assert cpabmm.read_checkpoint(converted)[1]["size"] == 64
    evil = tmp_path / "evil.pth"
    torch.save({"kp_detector": {"x": torch.zeros(1)}, "payload": ValueError("not a tensor")}, evil)
    with pytest.raises(FlipbookInputError, match="weights_only"):
        cpabmm.load_model(str(evil), "vox")


def test_convert_official_checkpoint(tmp_path):
    torch.manual_seed(1)
    model = cpabmm.CPABMM(cpabmm.tiny_config("mgif"))
    pth = tmp_path / "vox.pth.tar"
    torch.save({**model.module_state_dicts(), "epoch": 3}, pth)
    out = cpabmm.convert_to_safetensors(str(pth), None, model.config)     # the config it was trained with
    assert out.endswith("vox.safetensors")
    loaded = cpabmm.load_model(out)
    assert loaded.bg_predictor is None and loaded.config["size"] == 64
    assert torch.equal(loaded.kp_detector.fg_encoder.fc.weight, model.kp_detector.fg_encoder.fc.weight)


def test_nodes_run_the_shipped_names(tmp_path, monkeypatch, inference):
    written = cpabmm.write_test_models(str(tmp_path))
    assert written == [str(tmp_path / "cpabmm" / "cpabmm-vox-256.safetensors")]
    monkeypatch.setenv("FLIPBOOK_MODELS_DIR", str(tmp_path))
    _comfy.register_model_folder("cpabmm", cpabmm_nodes.EXTENSIONS)
    assert "cpabmm-vox-256.safetensors" in cpabmm_nodes.FlipbookCPABMMLoader.INPUT_TYPES()["required"]["checkpoint"][0]
    (model,) = cpabmm_nodes.FlipbookCPABMMLoader().load("cpabmm-vox-256.safetensors", "auto")
    frames, count = cpabmm_nodes.FlipbookLoadFrames().load("cpabmm_driving.webp", 3, 1)
    assert count == 3 and frames.shape[1:] == (128, 128, 3)
    assert load_frames(os.path.join(ASSETS, "cpabmm_driving.webp")).shape[0] == 12
    source = torch.rand(1, 96, 96, 3)
    (out,) = cpabmm_nodes.FlipbookCPABMMAnimate().animate(model, source, frames, "relative", 3, True, 2)
    assert out.shape == (3, 96, 96, 3)
    with pytest.raises(FlipbookInputError, match="cpabmm model"):
        cpabmm_nodes.FlipbookCPABMMLoader().load("../escape.safetensors", "auto")
    with pytest.raises(FlipbookInputError, match="not found"):
        cpabmm_nodes.FlipbookCPABMMLoader().load("missing.safetensors", "auto")
    with pytest.raises(FlipbookInputError, match="mode"):
        cpabmm_nodes.FlipbookCPABMMAnimate().animate(model, source, frames, "warp", 3, True, 2)
    with pytest.raises(FlipbookInputError, match="driving"):
        cpabmm_nodes.FlipbookCPABMMAnimate().animate(model, source, torch.rand(2, 8, 8), "standard", 3, True, 2)
