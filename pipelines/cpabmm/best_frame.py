"""``find_best_frame`` for the relative mode (C:demo.py --find_best_frame; FOMM's recipe): the driving
frame whose face landmarks, centred and scaled by the square root of their hull area, are closest to
the source's. Needs the optional ``face_alignment`` package (it fetches its own landmark model on
first use, outside this pack)."""
from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import FlipbookInputError, check_image
from .pipeline import _hull_area


def _normalise(kp: np.ndarray) -> np.ndarray:
    kp = kp - kp.mean(0, keepdims=True)
    area = _hull_area(torch.from_numpy(np.ascontiguousarray(kp[:, :2])))       # the pipeline's keypoint area
    return kp / math.sqrt(area) if area > 0 else kp


def find_best_frame(source: torch.Tensor, driving: torch.Tensor, *, landmarks=None, device: str = "cpu") -> int:
    """Index of the driving frame (IMAGE [F,H,W,3]) whose pose is closest to source (IMAGE [1,H,W,3]).

    ``landmarks(image_uint8 [H,W,3]) -> [K,2] array or None`` replaces face_alignment (tests, other
    detectors). Frames without a face are skipped; 0 when none has one.
    """
    source = check_image("source", source, channels=(3,))
    driving = check_image("driving", driving, channels=(3,))
    if landmarks is None:
        try:
            import face_alignment
        except ImportError:
            raise FlipbookInputError("find_best_frame: expected the optional package face_alignment "
                                     "(pip install face-alignment), got it missing; use another mode or "
                                     "pick the frame yourself") from None
        kind = getattr(face_alignment.LandmarksType, "TWO_D", None) or face_alignment.LandmarksType._2D
        fa = face_alignment.FaceAlignment(kind, flip_input=True, device=device)

        def landmarks(img):
            found = fa.get_landmarks(img)
            return None if not found else found[0]

    to8 = lambda x: (x.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()     # noqa: E731
    ref = landmarks(to8(source[0]))
    if ref is None:
        return 0
    ref = _normalise(np.asarray(ref, dtype=np.float64))
    best, best_d = 0, math.inf
    for i in range(driving.shape[0]):
        kp = landmarks(to8(driving[i]))
        if kp is None:
            continue
        d = float(((ref - _normalise(np.asarray(kp, dtype=np.float64))) ** 2).sum())
        if d < best_d:
            best, best_d = i, d
    return best
