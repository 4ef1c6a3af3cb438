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
