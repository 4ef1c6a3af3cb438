"""Cancel lands promptly in every long node: ComfyUI's interrupt is simulated through the adapter's
hook (nodes/_comfy.py INTERRUPT_HOOKS, called wherever ComfyUI's interrupt is checked). Each test
counts the node's units of work (UNet calls, CLIP calls, optimiser iterations, VAE calls, frames),
presses Cancel inside unit k and asserts that the node stops with at most one more unit started:
each unit is well under a second, so the interrupt lands within a second (steps, not seconds)."""
import pathlib

import pytest
import torch

from comfyui_flipbook import NODE_CLASS_MAPPINGS
from comfyui_flipbook.nodes import _comfy

ROOT = pathlib.Path(__file__).resolve().parents[1]


class Interrupted(Exception):
    """Stands in for ComfyUI's InterruptProcessingException."""


class Cancel:
    def __init__(self, after: int):
        self.after, self.done, self.pressed = after, 0, False

    def unit(self):
        self.done += 1
        if self.done >= self.after:
            self.pressed = True                   # the user presses Cancel during unit ``after``

    def hook(self):
        if self.pressed:
            raise Interrupted

    def counting(self, fn):
        def wrapped(*a, **k):
            self.unit()
            return fn(*a, **k)
        return wrapped


@pytest.fixture
def cancel():
    made = []

    def make(after):
        c = Cancel(after)
        _comfy.INTERRUPT_HOOKS.append(c.hook)
        made.append(c)
        return c
    yield make
    for c in made:
        _comfy.INTERRUPT_HOOKS.remove(c.hook)


def _node(name):
    obj = NODE_CLASS_MAPPINGS[name]()
    return getattr(obj, obj.FUNCTION)


def _stops(c: Cancel, total: int, call):
    with pytest.raises(Interrupted):
        call()
    assert c.after <= c.done <= c.after + 1 < total, (c.done, total)


def _dance():
    text = (ROOT / "assets" / "animatex_dance_poses.json").read_text()
    poses, = _node("FlipbookPoseFromKeypoints")(pose_keypoint=text, person=0, min_confidence=0.3)
    return poses


# --- Animate-X -----------------------------------------------------------------------------------

def test_pose_indicator_stops_between_clip_calls(inference, cancel):
    import test_animatex_sampler as AX
    import workflow_run
    clip = workflow_run.StandInCLIPVision(AX.TINY.clip_dim)      # not AX._clip(): made here, under inference mode
    c = cancel(1)
    clip_encode = clip.encode_image
    poses = _dance()
    total = 1 + -(-poses.frames // 4)                      # reference + chunks of 4 driving images

    class CountingClip:
        def encode_image(self, image, crop=True):
            c.unit()
            return clip_encode(image, crop=crop)
    _stops(c, total, lambda: _node("FlipbookAnimateXPoseIndicator")(clip_vision=CountingClip(),
                                                                    reference=torch.rand(1, 32, 32, 3), poses=poses,
                                                                    driving_frames=torch.rand(poses.frames, 32, 32, 3)))


def test_animatex_sampler_stops_between_unet_calls(inference, cancel, monkeypatch):
    import test_animatex_sampler as AX
    from comfyui_flipbook.pipelines.animatex.pipeline import AnimateXModel, build_motion
    from comfyui_flipbook.pipelines.animatex.unet import build_unet
    from comfyui_flipbook.pipelines import pose as P
    torch.manual_seed(0)
    model = AnimateXModel(build_unet(AX.TINY), torch.randn(1, AX.TINY.text_tokens, AX.TINY.context_dim), "tiny")
    import workflow_run
    poses = _dance().select([0, 1, 2])
    clip = workflow_run.StandInCLIPVision(AX.TINY.clip_dim)
    reference = torch.rand(1, 64, 64, 3)
    motion = build_motion(lambda x: clip.encode_image(x, crop=False)["image_embeds"], reference, poses)
    images = P.render_poses(poses, 64, 64)
    c = cancel(2)
    monkeypatch.setattr(model.unet, "forward", c.counting(model.unet.forward))
    _stops(c, 11, lambda: _node("FlipbookAnimateXSampler")(
        model=model, reference=reference, pose_images=images, motion=motion, seed=0, steps=10, guidance=2.5, eta=0.0,
        noise_offset=0.1, reference_mode="local_image", width=0, height=0, context_frames=0, context_overlap=0,
        batch_cfg=True))


# --- diffusion (FlipSketch, DDIM inversion, video decode) --------------------------------------------

@pytest.fixture
def t2v():
    model, = _node("FlipbookTinyT2V")(seed=0, vae_downscale="2")
    return model


def test_ddim_invert_stops_between_unet_calls(inference, cancel, monkeypatch, t2v):
    c = cancel(2)
    monkeypatch.setattr(t2v.unet, "forward", c.counting(t2v.unet.forward))
    _stops(c, 8, lambda: _node("FlipbookDDIMInvert")(model=t2v, image=torch.rand(1, 16, 16, 3), steps=8, guidance=1.0,
                                                     repeat_frames=1, reduce="none", vae_range="-1_1",
                                                     posterior="mean", size=0, seed=0))


def test_flipsketch_sampler_stops_between_unet_calls(inference, cancel, monkeypatch, t2v):
    pos, = _node("FlipbookTextEncode")(model=t2v, text="a cat")
    c = cancel(2)
    monkeypatch.setattr(t2v.unet, "forward", c.counting(t2v.unet.forward))
    ref = {"samples": torch.randn(1, 4, 1, 8, 8)}
    _stops(c, 8, lambda: _node("FlipbookFlipSketchSampler")(model=t2v, positive=pos, reference=ref, frames=3, steps=8,
                                                            guidance=2.0, seeds=1, seed=0, seed_chunk=0,
                                                            frame_align=False))


def test_video_decode_stops_between_vae_calls(inference, cancel, monkeypatch, t2v):
    c = cancel(2)
    monkeypatch.setattr(t2v.vae, "decode", c.counting(t2v.vae.decode))
    _stops(c, 6, lambda: _node("FlipbookVideoDecode")(model=t2v, latent={"samples": torch.randn(1, 4, 6, 8, 8)}, chunk=1))


# --- CPAB, CPABMM ----------------------------------------------------------------------------------

def _skeleton_and_track(frames=6):
    from comfyui_flipbook.pipelines import bezier
    from comfyui_flipbook.pipelines.skeleton import Skeleton
    sk = Skeleton(torch.tensor([[20.0, 12.0], [32.0, 30.0], [44.0, 50.0], [20.0, 48.0]]), [(0, 1), (1, 2), (1, 3)],
                  (64, 64), root=1)
    return sk, bezier.preset_trajectory(sk, "wave", n_frames=frames, amplitude=0.08)


def test_cpab_keypoint_warp_stops_inside_a_frames_fit(inference, cancel, monkeypatch):
    from comfyui_flipbook.pipelines.cpab import fit
    sk, track = _skeleton_and_track()
    c = cancel(3)
    monkeypatch.setattr(fit, "transform_jacobian", c.counting(fit.transform_jacobian))
    _stops(c, 6 * 2, lambda: _node("FlipbookCPABKeypointWarp")(
        image=torch.rand(1, 64, 64, 3), source_keypoints=sk, frames=4, cells=4, zero_boundary=True,
        volume_preserving=False, optimizer="lm", iterations=10, prior_strength=0.01, fit_steps=10,
        flow_resolution=32, steps=10, interpolation="bilinear", padding="border", warm_start=True, trajectory=track))


def test_cpab_fit_with_adam_stops_inside_a_frame(inference, cancel, monkeypatch):
    from comfyui_flipbook.pipelines import optimise
    sk, track = _skeleton_and_track(frames=3)
    c = cancel(5)
    real = optimise.adam_minimise

    def counted(*a, callback=None, **k):
        def cb(step, n):
            c.unit()
            if callback is not None:
                callback(step, n)
        return real(*a, callback=cb, **k)
    monkeypatch.setattr("comfyui_flipbook.pipelines.cpab.fit.adam_minimise", counted)
    _stops(c, 3 * 100, lambda: _node("FlipbookCPABFit")(
        source_keypoints=sk, cells=4, zero_boundary=True, volume_preserving=False, optimizer="adam", iterations=0,
        prior_strength=0.01, fit_steps=10, warm_start=True, temporal_weight=0.0, trajectory=track))


def test_cpabmm_animate_stops_between_frames(inference, cancel, monkeypatch):
    from comfyui_flipbook.pipelines import cpabmm
    torch.manual_seed(0)
    model = cpabmm.CPABMM(cpabmm.tiny_config("vox")).eval()
    c = cancel(2)
    monkeypatch.setattr(model.kp_detector, "forward", c.counting(model.kp_detector.forward))
    _stops(c, 7, lambda: _node("FlipbookCPABMMAnimate")(model=model, source=torch.rand(1, 64, 64, 3),
                                                        driving=torch.rand(6, 64, 64, 3), mode="standard",
                                                        max_iter=2, use_bg=False, batch=1))


# --- frames and pictures ---------------------------------------------------------------------------

def test_mesh_render_stops_between_chunks(inference, cancel, monkeypatch):
    from comfyui_flipbook.pipelines.flexiclip import pipeline as FP
    sk, _ = _skeleton_and_track()
    image = torch.ones(1, 64, 64, 4)
    image[0, 8:56, 12:52, :3] = 0.2
    image[..., 3] = 0
    image[0, 8:56, 12:52, 3] = 1
    mesh, = _node("FlipbookMeshBuilder")(image=image, skeleton=sk, max_triangle_area=200.0, min_angle=20.0,
                                         margin_px=1.0, backend="scipy", invert_mask=True)
    traj, = _node("FlipbookBezierTrajectory")(skeleton=sk, frames=40, preset="sway", amplitude=0.05, loop="loop",
                                              cycles=1, seed=0)
    anim, = _node("FlipbookMeshDeform")(mesh=mesh, trajectory=traj, method="poisson_bilap", constraint_lambda=1.0)
    c = cancel(2)
    monkeypatch.setattr(FP, "render_mesh", c.counting(FP.render_mesh))
    _stops(c, 5, lambda: _node("FlipbookMeshRender")(animation=anim, background="white", scale=1.0))


def test_pose_render_and_load_frames_check_every_frame(inference, cancel):
    poses = _dance()
    c = cancel(3)
    _comfy.INTERRUPT_HOOKS.insert(0, c.unit)                 # count the checks themselves: one per frame
    try:
        _stops(c, poses.frames, lambda: _node("FlipbookPoseRender")(poses=poses, width=64, height=64,
                                                                     colors="animatex", hands=True, feet=True, face=False))
        c.done, c.pressed = 0, False
        _stops(c, 12, lambda: _node("FlipbookLoadFrames")(file="cpabmm_driving.webp", max_frames=0, every_nth=1))
    finally:
        _comfy.INTERRUPT_HOOKS.remove(c.unit)


def test_no_interrupt_hook_is_left_behind():
    assert _comfy.INTERRUPT_HOOKS == []
