"""Reconstruction L1 of the release (spec cpab.md §2.6; C:reconstruction.py): for each test video, the
first frame is the source and every frame is driven with its own keypoints (standard mode, background
predictor when present); L1 = mean |prediction − driving| over all frames of all videos. The identity
baseline (copy the source frame) is reported next to it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ...errors import fail
from ...progress import StepCallback, report
from ..model import CPABMM
from ..pipeline import animate


@dataclass
class Reconstruction:
    l1: float              # mean over frames of mean |pred − driving|, in 0..1 units
    identity_l1: float     # the same for the copied source frame
    videos: int
    frames: int


def reconstruct_video(model: CPABMM, video: torch.Tensor, *, max_iter: int = 0, batch: int = 4,
                      callback: StepCallback | None = None) -> tuple[torch.Tensor, float, float]:
    """One video IMAGE [F,H,W,3]: (reconstruction [F,H,W,3], L1, identity L1), frame 0 the source."""
    with torch.no_grad():
        pred = animate(model, video[:1], video, mode="standard", max_iter=max_iter, use_bg=True, batch=batch,
                       callback=callback)
    return pred, float((pred - video).abs().mean()), float((video[:1] - video).abs().mean())


def reconstruction_l1(model: CPABMM, dataset, *, max_videos: int = 0, max_frames: int = 0, max_iter: int = 0,
                      callback: StepCallback | None = None) -> Reconstruction:
    """``dataset``: anything with ``len`` and ``video(i, max_frames) -> [F,3,H,W]`` (a test
    :class:`.data.FramesDataset` or :class:`.synthetic.SyntheticMotion`)."""
    n = len(dataset) if not max_videos else min(int(max_videos), len(dataset))
    if n < 1:
        fail("data", "at least one test video", "none")
    total = ident = 0.0
    frames = 0
    for i in range(n):
        video = dataset.video(i, max_frames).permute(0, 2, 3, 1)           # IMAGE [F,H,W,3]
        _, l1, l1_identity = reconstruct_video(model, video, max_iter=max_iter)
        total += l1 * video.shape[0]
        ident += l1_identity * video.shape[0]
        frames += video.shape[0]
        report(callback, i + 1, n)
    return Reconstruction(total / frames, ident / frames, n, frames)
