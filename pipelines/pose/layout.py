"""The OpenPose keypoint layout of a pose track, and :class:`PoseSequence` (spec animatex.md §1.4).

====== ================================================================================
0..17  nose, neck, R shoulder/elbow/wrist, L shoulder/elbow/wrist, R hip/knee/ankle,
       L hip/knee/ankle, R eye, L eye, R ear, L ear (OpenPose-18, as DWPose remaps COCO-WholeBody)
18, 19 L foot, R foot (midpoint of big and small toe, as Animate-X's process_data adds)
20..40 left hand (21 points, OpenPose hand order), 41..61 right hand
62..   face landmarks (0, 68 or 70)
====== ================================================================================

:data:`LIMBS` is the pack's one table of body bones: the 17 OpenPose limbs and then ankle -> foot, in
the order Animate-X's ``draw_pose`` draws them; :data:`COLORS` is indexed by that order (limb i and
joint i take colour i), so the order must stay exactly as released.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..coords import pixel_to_fraction
from ..errors import fail
from ..skeleton import KeypointTrack

BODY = 18                       # OpenPose-18 body joints
LFOOT, RFOOT = 18, 19
BODY_FEET = 20                  # body + the two foot points
LHAND = slice(20, 41)
RHAND = slice(41, 62)
FACE0 = 62                      # first face landmark
NOSE, NECK = 0, 1
FACE_JOINTS = (0, 14, 15, 16, 17)   # nose, eyes, ears: AniClipart's merged "head" (spec flexiclip.md §1.2)

BODY_NAMES = ["nose", "neck", "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow", "l_wrist",
              "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "r_eye", "l_eye", "r_ear", "l_ear",
              "l_foot", "r_foot"]

# Drawing order of Animate-X's body-and-foot skeleton (spec §1.4): the 17 OpenPose limbs, then
# ankle -> foot. Colours are ControlNet's (RGB), limb i and joint i take COLORS[i].
LIMBS = [(1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13),
         (1, 0), (0, 14), (14, 16), (0, 15), (15, 17), (13, 18), (10, 19)]
COLORS = [(255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
          (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
          (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85), (170, 255, 255), (255, 255, 0)]
HAND_EDGES = [(0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (0, 9), (9, 10), (10, 11), (11, 12),
              (0, 13), (13, 14), (14, 15), (15, 16), (0, 17), (17, 18), (18, 19), (19, 20)]


@dataclass
class PoseSequence(KeypointTrack):
    """A pose track in the layout above: a :class:`~..skeleton.KeypointTrack` whose K >= 62 points
    are OpenPose body, feet, hands (and face), with a confidence per point. ComfyUI type
    ``FLIPBOOK_POSES``.

    points: [F, K, 2] float32 canvas pixels (x, y), K = 62 + face landmarks.
    conf: [F, K] float32, 0 = missing (required).
    canvas: (H, W).

    Converters: :func:`.openpose.poses_from_openpose` / :func:`.openpose.poses_to_openpose` (POSE_KEYPOINT),
    :func:`.openpose.pose_skeleton` (the pack's Skeleton).

    >>> seq = PoseSequence(torch.zeros(2, 62, 2), torch.ones(2, 62), (64, 48))
    >>> seq.frames, seq.normalized_body().shape
    (2, torch.Size([2, 2, 18]))
    """

    _kind = "poses"

    def __post_init__(self):
        points = torch.as_tensor(self.points)
        if points.dim() != 3 or points.shape[-1] != 2 or points.shape[1] < FACE0:
            fail("poses", f"keypoints [frames, >= {FACE0}, 2]", f"{tuple(points.shape)}")
        if self.conf is None or tuple(torch.as_tensor(self.conf).shape) != tuple(points.shape[:2]):
            got = None if self.conf is None else tuple(torch.as_tensor(self.conf).shape)
            fail("poses", f"one confidence per keypoint {tuple(points.shape[:2])}", f"{got}")
        super().__post_init__()

    def normalized_body(self) -> torch.Tensor:
        """(F, 2, 18): x's then y's as fractions of the canvas (:func:`..coords.pixel_to_fraction`,
        the release's x / W rule), -1 where missing: the IPI's keypoint input (spec §1.2)."""
        xy = pixel_to_fraction(self.points[:, :BODY], self.canvas)
        xy = torch.where(self.present[:, :BODY, None], xy, torch.full_like(xy, -1.0))
        return xy.transpose(1, 2).contiguous()
