"""FlexiClip's learned half (issue 11, spec flexiclip.md §1.7-1.8, §2.3): the weight-free rig's
constraints, the video SDS optimiser, the temporal Jacobian corrector, the flow-matching loss."""
import pytest
import torch

from comfyui_flipbook.pipelines.bezier import preset_trajectory
from comfyui_flipbook.pipelines.flexiclip import DEFORM, FLEXICLIP_LAMBDA, deform_animation
from comfyui_flipbook.pipelines.mesh import build_mesh
from comfyui_flipbook.pipelines.synthetic import synthetic_character


@pytest.fixture(scope="module")
def rig():
    image, skeleton = synthetic_character(64)
    mesh = build_mesh(image, None, skeleton, max_area=40.0)
    return image, skeleton, mesh


@pytest.mark.parametrize("preset,seed", [("sway", 0), ("wave", 0), ("random", 1), ("random", 2)])
def test_weight_free_default_lands_keypoints_on_trajectory(rig, preset, seed):
    """Item 4: the rig's default pins the keypoints (< 0.5 px); FlexiClip's λ = 1 does not."""
    _, skeleton, mesh = rig
    traj = preset_trajectory(skeleton, preset, n_frames=12, amplitude=0.1, seed=seed)
    target = traj.frames()
    move = (target - skeleton.points).norm(dim=-1).max()
    assert move > 3.0                                      # a real move, on a 64 px canvas
    pinned = deform_animation(mesh, traj).vertices[:, mesh.keypoint_idx]
    assert (pinned - target).norm(dim=-1).max() < 0.5
    soft = deform_animation(mesh, traj, constraint_lambda=FLEXICLIP_LAMBDA).vertices[:, mesh.keypoint_idx]
    assert (soft - target).norm(dim=-1).max() > 0.5        # the faithful option stays available, and soft
    assert DEFORM.constraint_lambda > FLEXICLIP_LAMBDA == 1.0


# --- the video SDS optimiser, the corrector, the flow loss (items 1-3, 7; spec §4.1-4.2) -------------

from dataclasses import replace  # noqa: E402
from types import SimpleNamespace  # noqa: E402

from comfyui_flipbook.pipelines.deform import MeshDeformer  # noqa: E402
from comfyui_flipbook.pipelines.diffusion.sampler import sds_gradient, t2v_denoiser  # noqa: E402
from comfyui_flipbook.pipelines.diffusion.scheduler import make_scheduler  # noqa: E402
from comfyui_flipbook.pipelines.errors import FlipbookInputError  # noqa: E402
from comfyui_flipbook.pipelines.flexiclip.corrector import (TemporalJacobianCorrector, corrected_vertices,  # noqa: E402
                                                            load_corrector, save_corrector)
from comfyui_flipbook.pipelines.flexiclip.sds import SDS, SDSObjective, optimise_sds  # noqa: E402

TINY = replace(SDS, iterations=2, frames=4, loop_num=0, render_size=32, vae_chunk=2)


@pytest.fixture(scope="module")
def backbone():
    from comfyui_flipbook.pipelines.diffusion.backbone import tiny_t2v
    return tiny_t2v(0, vae_downscale=8)


@pytest.fixture(scope="module")
def sway(rig):
    return preset_trajectory(rig[1], "sway", n_frames=4, amplitude=0.05)


def _randomised(corrector, scale=0.05, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in corrector.f_r[-1].parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return corrector


def _grads(obj):
    with torch.enable_grad():
        params = [p.requires_grad_(True) for p in obj.initial_params()]
        loss = obj(params)
        loss.backward()
    return loss, [p.grad for p in params]


@pytest.mark.parametrize("use_mlp", [False, True])
def test_sds_gradients_reach_control_points_and_are_finite(rig, sway, backbone, use_mlp):
    obj = SDSObjective(rig[2], sway, backbone, "a person dancing", replace(TINY, use_mlp=use_mlp),
                       corrector=TemporalJacobianCorrector())
    loss, grads = _grads(obj)
    assert torch.isfinite(loss) and obj.last.parts["sds"] > 0
    first = grads[:obj.n_first]
    assert all(g is not None and torch.isfinite(g).all() for g in first)
    assert sum(float(g.abs().sum()) for g in first) > 0
    if not use_mlp:                                       # offsets of c1..c3 of every keypoint
        assert grads[0].shape == (rig[1].num_points, 3, 2) and grads[0].abs().sum(-1).gt(0).any()
    corr = [g for g in grads[obj.n_first:] if g is not None]
    assert corr and all(torch.isfinite(g).all() for g in corr)


def test_sds_gradient_is_zero_for_true_noise_at_guidance_one(rig, sway, backbone):
    obj = SDSObjective(rig[2], sway, backbone, "x", replace(TINY, guidance=1.0, use_mlp=False, w_skel=0.0))

    def unet(x, t, encoder_hidden_states):                # both branches predict the true noise
        return SimpleNamespace(sample=obj.noise.expand(x.shape[0], *obj.noise.shape[1:]))
    cond = torch.randn(1, 77, 32)
    obj.denoiser = t2v_denoiser(unet, cond, torch.zeros_like(cond), 1.0)
    loss, grads = _grads(obj)
    assert obj.last.parts["sds"] == 0.0 and float(loss.detach()) == 0.0
    assert torch.equal(grads[0], torch.zeros_like(grads[0]))
    # the sampler core alone: g = w (eps_hat - eps) is exactly zero
    sched = make_scheduler(backbone.scheduler_config, 1)
    z, noise = torch.randn(1, 4, 3, 4, 4), torch.randn(1, 4, 3, 4, 4)
    den = t2v_denoiser(lambda x, t, encoder_hidden_states: SimpleNamespace(sample=noise.expand(x.shape[0], -1, -1, -1, -1)),
                       cond, torch.zeros_like(cond), 1.0)
    assert torch.equal(sds_gradient(den, z, torch.tensor(500), noise, sched), torch.zeros_like(z))


def test_sds_timesteps_stay_in_range(rig, sway, backbone):
    obj = SDSObjective(rig[2], sway, backbone, "x", replace(TINY, t_min=10, t_max=12, use_mlp=False))
    seen = set()
    with torch.no_grad():
        for _ in range(8):
            obj(obj.initial_params())
            seen.add(obj.last.t)
    assert seen == {10, 11}                               # randint(t_min, t_max): t_max excluded (§1.7)
    with pytest.raises(FlipbookInputError, match="t_min"):
        SDSObjective(rig[2], sway, backbone, "x", replace(TINY, t_min=500, t_max=400))


def test_fixed_seed_gives_the_same_loss(rig, sway, backbone):
    run = lambda seed: optimise_sds(rig[2], sway, backbone, "x", replace(TINY, seed=seed),  # noqa: E731
                                    corrector=TemporalJacobianCorrector()).losses
    a, b, c = run(3), run(3), run(4)
    assert a == b and a != c


def test_corrector_at_initialisation_returns_the_pose_only_animation_exactly(rig, sway):
    mesh = rig[2]
    deformer = MeshDeformer(mesh, constraint_lambda=1.0)
    poses = sway.frames().double()
    v, v_pose, jr = corrected_vertices(deformer, poses, TemporalJacobianCorrector(window=2))
    assert torch.equal(jr, torch.zeros_like(jr)) and torch.equal(v, v_pose)
    assert (v - deformer.deform(poses)).abs().max() > 0     # it is the J = Jᴾ solve, not solve(I, T)
    for solver in ("euler", "rk4"):                           # a trained corrector moves it
        c = _randomised(TemporalJacobianCorrector(window=2, solver=solver))
        v2, v_pose2, jr2 = corrected_vertices(deformer, poses, c)
        assert torch.equal(v_pose2, v_pose) and jr2[1:].abs().max() > 0 and (v2 - v_pose).abs().max() > 0
        assert torch.equal(jr2[0], torch.zeros_like(jr2[0]))  # Jᴿ(u_0) = 0


def test_corrector_windows_are_causal(rig):
    mesh = rig[2]
    s, w = 8, 4
    g = torch.Generator().manual_seed(0)
    jp = torch.eye(2, dtype=torch.float64) + 0.1 * torch.randn(s, mesh.num_faces, 2, 2, generator=g, dtype=torch.float64)
    c = _randomised(TemporalJacobianCorrector(window=w), scale=0.2)
    later = jp.clone()
    later[w:] += 0.3 * torch.randn(s - w, mesh.num_faces, 2, 2, generator=g, dtype=torch.float64)
    with torch.no_grad():
        a, b = c(jp), c(later)
    # pose t <= w integrates only over intervals that start in window 0, which sees poses 0..w-1
    assert torch.equal(a[:w + 1], b[:w + 1])
    assert (a[w + 1:] - b[w + 1:]).abs().max() > 1e-6


def test_corrector_state_saves_and_reloads(tmp_path, rig):
    c = _randomised(TemporalJacobianCorrector(window=3, substeps=1, solver="euler"))
    path = save_corrector(c, str(tmp_path / "tjc.safetensors"))
    back = load_corrector(path)
    assert back.config == c.config
    jp = torch.eye(2).repeat(5, rig[2].num_faces, 1, 1) + 0.05
    with torch.no_grad():
        assert torch.equal(back(jp), c(jp))


def test_flow_loss_is_zero_when_the_correction_is_zero(rig, sway, backbone):
    obj = SDSObjective(rig[2], sway, backbone, "x", replace(TINY, use_mlp=False), corrector=TemporalJacobianCorrector())
    with torch.no_grad():
        obj(obj.initial_params())
    assert obj.last.parts["flow_score"] == 0.0 and obj.last.parts["flow_jr"] == 0.0


@pytest.mark.parametrize("mode", ["dds", "exact"])
def test_flow_terms_have_gradients(rig, sway, backbone, mode):
    """Unlike the official code's flow term (a constant, spec §2.2.5), both of ours move the corrector."""
    def corrector_grads(lam):
        obj = SDSObjective(rig[2], sway, backbone, "x", replace(TINY, use_mlp=False, lambda_flow=lam, flow_mode=mode),
                           corrector=_randomised(TemporalJacobianCorrector(window=2), scale=0.2))
        _, grads = _grads(obj)
        return obj.last.parts, torch.cat([g.flatten() for g in grads[obj.n_first:] if g is not None])
    parts, with_flow = corrector_grads(15.0)
    _, without = corrector_grads(0.0)
    assert parts["flow_score"] > 0 and parts["flow_jr"] > 0
    assert torch.isfinite(with_flow).all() and (with_flow - without).abs().max() > 0


def test_toy_objective_moves_the_trajectory_towards_the_target(rig):
    """No model: an image loss against the render of a known trajectory pulls the control points there."""
    image, skeleton, mesh = rig
    start = preset_trajectory(skeleton, "still", n_frames=4)
    target = preset_trajectory(skeleton, "sway", n_frames=4, amplitude=0.04)
    st = replace(TINY, iterations=40, use_mlp=False, w_skel=0.0, augment=False, render_size=64, lr=0.5,
                 lr_delay_steps=0, lr_init=1.0, lr_final=1.0)
    goal = SDSObjective(mesh, target, None, "", st)
    with torch.no_grad():
        target_frames = goal.render(goal.animate([torch.zeros(skeleton.num_points, 3, 2, dtype=torch.float64)])[1])
    res = optimise_sds(mesh, start, None, "", st, extra_loss=lambda f: ((f - target_frames) ** 2).sum())
    before = (start.control - target.control).norm(dim=-1).mean()
    after = (res.trajectory.control - target.control).norm(dim=-1).mean()
    assert res.losses[-1] < 0.5 * res.losses[0] and after < 0.7 * before


def test_preview_and_cancel(rig, sway, backbone):
    shown, polls = [], []
    res = optimise_sds(rig[2], sway, backbone, "x", replace(TINY, iterations=3, preview_every=2),
                       preview=lambda k, f: shown.append((k, tuple(f.shape))), check=lambda: polls.append(1))
    assert [k for k, _ in shown] == [1, 3] and shown[0][1] == (4, 32, 32, 3)
    assert len(polls) >= 3 * 3                        # every iteration, before every model call
    assert res.animation.n_frames == 4 and len(res.losses) == 3

    class Cancelled(Exception):
        pass

    def cancel():
        if len(polls) > 2:
            raise Cancelled
        polls.append(1)
    polls.clear()
    with pytest.raises(Cancelled):
        optimise_sds(rig[2], sway, backbone, "x", replace(TINY, iterations=50), check=cancel)


# --- scores (item 5) -----------------------------------------------------------------------------------

class StandInCLIPVision:
    """ComfyUI CLIP_VISION's interface: encode_image(IMAGE) -> {"image_embeds": [B, D]}."""

    def __init__(self):
        self.proj = torch.randn(3 * 8 * 8, 16, generator=torch.Generator().manual_seed(0))

    def encode_image(self, image, crop=True):
        x = torch.nn.functional.adaptive_avg_pool2d(image[..., :3].movedim(-1, 1).float(), 8)
        return {"image_embeds": x.flatten(1) @ self.proj}


def test_clip_image_similarity():
    from comfyui_flipbook.pipelines.flexiclip.scores import clip_image_similarity
    image, _ = synthetic_character(64)
    ref = image[None, ..., :3]
    same, per = clip_image_similarity(StandInCLIPVision(), ref.repeat(5, 1, 1, 1), ref, max_frames=3)
    assert same == pytest.approx(1.0, abs=1e-6) and len(per) == 3
    other, _ = clip_image_similarity(StandInCLIPVision(), torch.rand(4, 64, 64, 3), ref)
    assert other < same
    with pytest.raises(FlipbookInputError, match="clip_vision"):
        clip_image_similarity(object(), ref, ref)


def test_xclip_similarity_on_a_tiny_random_model(tmp_path):
    from comfyui_flipbook.pipelines.flexiclip.scores import load_xclip, write_tiny_xclip, xclip_similarity
    xc = load_xclip(write_tiny_xclip(str(tmp_path / "xclip")))
    frames = torch.rand(24, 48, 48, 3, generator=torch.Generator().manual_seed(0))
    a, b = xclip_similarity(xc, frames, "a man is dancing"), xclip_similarity(xc, frames, "a cat")
    assert -1 <= a <= 1 and a != b and a == xclip_similarity(xc, frames, "a man is dancing")
    assert -1 <= xclip_similarity(xc, frames[:3], "a cat") <= 1      # fewer frames than the model takes
    with pytest.raises(FlipbookInputError, match="xclip"):
        load_xclip(str(tmp_path))


# --- nodes (item 6), as ComfyUI runs them: inside torch.inference_mode() --------------------------------

def _node(node_type, **kw):
    from comfyui_flipbook import NODE_CLASS_MAPPINGS as N
    cls = N[node_type]
    out = getattr(cls(), cls.FUNCTION)(**kw)
    return out["result"] if isinstance(out, dict) else out


def test_nodes_run_inside_inference_mode(inference, rig, tmp_path, monkeypatch):
    import json
    monkeypatch.setenv("FLIPBOOK_MODELS_DIR", str(tmp_path))
    from comfyui_flipbook.pipelines.flexiclip.scores import write_tiny_xclip
    write_tiny_xclip(str(tmp_path / "xclip" / "tiny"))
    image, skeleton, _ = rig
    picture = image[None]
    points = json.dumps(skeleton.points.tolist())
    edges = json.dumps(skeleton.edges.tolist())
    (sk,) = _node("FlipbookKeypointsFromJSON", image=picture, points_json=points, edges_json=edges, normalized=False, root=0)
    (mesh,) = _node("FlipbookMeshBuilder", image=picture, skeleton=sk, max_triangle_area=40.0 * 16, min_angle=20.0,
                    margin_px=2.0, backend="scipy", invert_mask=True)
    (traj,) = _node("FlipbookBezierTrajectory", skeleton=sk, frames=4, preset="wave", amplitude=0.05, loop="loop",
                    cycles=1, seed=0)
    (model,) = _node("FlipbookTinyT2V", seed=0, vae_downscale="8")
    (corr,) = _node("FlipbookFlexiClipCorrector", window=2, substeps=1, solver="rk4", structure="pfode", seed=0)
    traj2, anim, corr2, frames = _node(
        "FlipbookFlexiClipSDS", mesh=mesh, trajectory=traj, model=model, prompt="a figure waves", iterations=2,
        guidance=50.0, frames=4, loop_num=0, render_size=32, skeleton_weight=25.0, use_mlp=True, lambda_flow=15.0,
        flow_mode="dds", augment=True, lr=0.005, constraint_lambda=1.0, fp16=False, seed=1000, corrector=corr)
    assert frames.shape == (4, 32, 32, 3) and anim.n_frames == 4 and traj2.n_frames == 4
    assert torch.isfinite(anim.vertices).all() and corr2 is not corr
    assert any((a != b).any() for a, b in zip(corr2.state_dict().values(), corr.state_dict().values()))
    (again,) = _node("FlipbookFlexiClipApplyCorrector", mesh=mesh, trajectory=traj2, corrector=corr2, constraint_lambda=1.0)
    assert torch.allclose(again.vertices, anim.vertices, atol=1e-4)
    rendered, _ = _node("FlipbookMeshRender", animation=anim, background="white", scale=1.0)
    _node("FlipbookFlexiClipCorrectorSave", corrector=corr2, name="trained")
    (back,) = _node("FlipbookFlexiClipCorrector", window=4, substeps=2, solver="euler", structure="plain", seed=1,
                    state="trained.safetensors")
    assert back.config == corr2.config
    sim, text = _node("FlipbookCLIPImageSimilarity", clip_vision=StandInCLIPVision(), frames=rendered, reference=picture,
                      max_frames=0)
    assert 0 < sim <= 1 + 1e-6 and len(json.loads(text)["per_frame"]) == 4
    (xc,) = _node("FlipbookXCLIPLoader", model_dir="tiny")
    (score,) = _node("FlipbookXCLIPSimilarity", xclip=xc, frames=rendered, text="a figure waves")
    assert -1 <= score <= 1
    with pytest.raises(FlipbookInputError, match="name"):
        _node("FlipbookFlexiClipCorrectorSave", corrector=corr2, name="../escape")


def test_each_pose_is_encoded_once_with_the_same_latents(rig, backbone):
    """AniClipart's 24 frames are 6 poses: encoding each pose once gives the latents of encoding every frame."""
    traj = preset_trajectory(rig[1], "sway", n_frames=8, amplitude=0.05)
    st = replace(TINY, frames=8, loop_num=2, use_mlp=False)
    losses = []
    for dedupe in (True, False):
        obj = SDSObjective(rig[2], traj, backbone, "x", replace(st, dedupe_encode=dedupe))
        assert len(obj.times) == 2 and len(obj.order) == 8
        with torch.no_grad():
            losses.append(float(obj(obj.initial_params())))
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)


def test_a_low_precision_model_gets_latents_in_its_dtype(rig, sway):
    """A T2V loaded in bf16 (the loader's GPU default): the UNet and VAE see bf16, gradients still arrive."""
    from comfyui_flipbook.pipelines.diffusion.backbone import tiny_t2v
    bb = tiny_t2v(0, vae_downscale=8, dtype=torch.bfloat16)
    obj = SDSObjective(rig[2], sway, bb, "x", replace(TINY, use_mlp=False), corrector=TemporalJacobianCorrector())
    loss, grads = _grads(obj)
    assert torch.isfinite(loss) and torch.isfinite(grads[0]).all() and grads[0].abs().sum() > 0


@pytest.mark.parametrize("field,name", [("guidance", "guidance"), ("w_skel", "skeleton_weight"), ("lr", "lr"),
                                        ("lambda_flow", "lambda_flow"), ("constraint_lambda", "constraint_lambda")])
def test_bad_settings_name_the_input(rig, sway, field, name):
    for bad in (float("nan"), float("inf"), -1.0):
        with pytest.raises(FlipbookInputError, match=name):
            SDSObjective(rig[2], sway, None, "", replace(TINY, **{field: bad}))
    with pytest.raises(FlipbookInputError, match="flow_mode"):
        SDSObjective(rig[2], sway, None, "", replace(TINY, flow_mode="fast"))


def test_tracks_and_foreign_trajectories_are_refused(rig, sway):
    from comfyui_flipbook.pipelines.bezier import Trajectory
    from comfyui_flipbook.pipelines.skeleton import KeypointTrack
    sk = rig[1]
    tracks = Trajectory(sk, 4, tracks=KeypointTrack(sway.frames(), None, sk.canvas))
    with pytest.raises(FlipbookInputError, match="trajectory"):
        SDSObjective(rig[2], tracks, None, "", TINY)
    other = preset_trajectory(sk.scaled_to((128, 128)), "sway", n_frames=4)
    with pytest.raises(FlipbookInputError, match="trajectory"):
        SDSObjective(rig[2], other, None, "", TINY)


def test_preview_reaches_comfyui_progress_bar_as_a_jpeg_preview(monkeypatch):
    """Inside ComfyUI the optimiser's picture goes to ProgressBar.update_absolute(step, total, ("JPEG", PIL, size)),
    the format ComfyUI's sampler previews use; outside it the preview is a no-op."""
    import sys
    import types as pytypes

    from PIL import Image

    from comfyui_flipbook.nodes._comfy import preview_progress
    cb, show = preview_progress(3)
    show(1, torch.zeros(8, 8, 3))                       # plain Python: nothing to show, no error
    calls, interrupted = [], []

    class Bar:
        def __init__(self, total):
            self.total = total

        def update_absolute(self, value, total=None, preview=None):
            calls.append((value, total, preview))
    comfy = pytypes.ModuleType("comfy")
    mm = pytypes.ModuleType("comfy.model_management")
    mm.throw_exception_if_processing_interrupted = lambda: interrupted.append(1)
    utils = pytypes.ModuleType("comfy.utils")
    utils.ProgressBar = Bar
    monkeypatch.setitem(sys.modules, "comfy", comfy)
    monkeypatch.setitem(sys.modules, "comfy.model_management", mm)
    monkeypatch.setitem(sys.modules, "comfy.utils", utils)
    cb, show = preview_progress(3)
    cb(1, 3)
    show(2, torch.rand(8, 16, 3))
    assert interrupted == [1] and calls[0] == (1, 3, None)
    value, total, (fmt, picture, size) = calls[1]
    assert (value, total, fmt, size) == (2, 3, "JPEG", 512)
    assert isinstance(picture, Image.Image) and picture.size == (16, 8)


def test_aniclipart_pose_method_poses_with_arap(rig, sway, backbone):
    """pose_method="arap" (AniClipart, spec §1.5): the poses come from the ARAP solve; gradients still reach
    the control points; with a corrector the untrained correction still returns its pose-only animation."""
    st = replace(TINY, use_mlp=False, pose_method="arap")
    obj = SDSObjective(rig[2], sway, backbone, "x", st, corrector=TemporalJacobianCorrector())
    poses, v, v_pose, jr = obj.animate(obj.initial_params())
    arap = MeshDeformer(rig[2], "arap").deform(poses)
    flexiclip = MeshDeformer(rig[2], "poisson_bilap").deform(poses)
    assert torch.equal(v, v_pose) and torch.equal(jr, torch.zeros_like(jr))
    assert not torch.equal(arap, flexiclip)
    plain = SDSObjective(rig[2], sway, backbone, "x", st)
    assert torch.equal(plain.animate(plain.initial_params())[1], arap)
    loss, grads = _grads(obj)
    assert torch.isfinite(loss) and grads[0].abs().sum() > 0
    with pytest.raises(FlipbookInputError, match="pose_method"):
        SDSObjective(rig[2], sway, None, "", replace(TINY, pose_method="harmonic"))
