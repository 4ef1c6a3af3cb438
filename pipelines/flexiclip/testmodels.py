"""Test models for the FlexiClip path (``make-test-models``): none today.

The weight-free rig (keypoints, Bezier trajectories, mesh deformation, rendering) needs no model.
The FlexiClip video-SDS step, when it comes, adds its tiny text-to-video writer here.
"""
from __future__ import annotations


def write_test_models(models_dir: str) -> list[str]:
    """Files written under ``models_dir``: none (nothing of this method loads a model yet)."""
    return []
