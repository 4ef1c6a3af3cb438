"""What the editors write is what the nodes run: targets_json on the CPAB keypoint nodes."""
from __future__ import annotations

import json

import pytest
import torch

from comfyui_flipbook.nodes.cpab import FlipbookCPABFit, FlipbookCPABKeypointWarp
from comfyui_flipbook.pipelines.errors import FlipbookInputError
from comfyui_flipbook.pipelines.keypoints import skeleton_from_json, targets_from_json

SRC = skeleton_from_json("[[16, 16], [40, 20], [30, 44]]", "[[0, 1], [1, 2]]", (64, 64))


def test_targets_json_moves_only_the_given_keypoints():
    t = targets_from_json("[null, [44, 10]]", SRC)
    assert t.points.tolist() == [[16, 16], [44, 10], [30, 44]]
    assert t.edges.tolist() == SRC.edges.tolist() and t.root == SRC.root and t.canvas == SRC.canvas
    assert targets_from_json("  ", SRC) is None
    for bad, name in [("[[1, 2], [3, 4], [5, 6], [7, 8]]", "targets_json"), ("[[1]]", r"targets_json\[0\]"),
                      ("[[100, 2]]", "targets_json"), ("{", "targets_json"), ('{"a": 1}', "targets_json")]:
        with pytest.raises(FlipbookInputError, match=name):
            targets_from_json(bad, SRC)


def _fit_inputs():
    return dict(cells=2, zero_boundary=True, volume_preserving=False, optimizer="lm", iterations=4,
                prior_strength=0.01, fit_steps=8, warm_start=True)


def test_cpab_nodes_take_typed_targets():
    with torch.inference_mode():
        params, report = FlipbookCPABFit().fit(SRC, **_fit_inputs(), temporal_weight=0.0,
                                               targets_json=json.dumps([None, [44, 12], None]))
        same, _ = FlipbookCPABFit().fit(SRC, **_fit_inputs(), temporal_weight=0.0,
                                        target_keypoints=targets_from_json("[null, [44, 12]]", SRC))
        assert torch.equal(params.theta, same.theta)
        with pytest.raises(FlipbookInputError, match="target_keypoints / trajectory"):
            FlipbookCPABFit().fit(SRC, **_fit_inputs(), temporal_weight=0.0)
        img = torch.rand(1, 64, 64, 3)
        node = FlipbookCPABKeypointWarp()
        kw = dict(frames=3, **_fit_inputs(), flow_resolution=32, steps=10, interpolation="bilinear", padding="border")
        del kw["warm_start"]
        out = node.run(img, SRC, **kw, warm_start=True, targets_json="[null, [44, 12]]")
        assert out[0].shape == (3, 64, 64, 3)
        assert not torch.equal(out[0][0], out[0][2]), "the tween moves"
