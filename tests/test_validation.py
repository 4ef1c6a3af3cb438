"""Every widget value is checked against the node's own INPUT_TYPES before the node runs
(nodes/_validate.py, installed by nodes/types.py checked()): API clients skip the frontend, and
ComfyUI's range check lets NaN through."""
import math

import pytest
import torch

from comfyui_flipbook import NODE_CLASS_MAPPINGS
from comfyui_flipbook.nodes import _validate as V
from comfyui_flipbook.pipelines.errors import FlipbookInputError


def _call(node, **kw):
    obj = NODE_CLASS_MAPPINGS[node]()
    return getattr(obj, obj.FUNCTION)(**kw)


def _bezier_kwargs(**over):
    from comfyui_flipbook.pipelines.skeleton import Skeleton
    sk = Skeleton(torch.tensor([[10.0, 10.0], [20.0, 20.0], [30.0, 12.0]]), [(0, 1), (1, 2)], (40, 40), root=1)
    kw = dict(skeleton=sk, frames=4, preset="sway", amplitude=0.1, loop="loop", cycles=1, seed=0)
    kw.update(over)
    return kw


@pytest.mark.parametrize("name,value,word", [
    ("amplitude", float("nan"), "finite"), ("amplitude", math.inf, "finite"), ("amplitude", 0.6, "[0.0, 0.5]"),
    ("amplitude", "0.1", "a number"), ("frames", 0, "[1, 1024]"), ("frames", 2.5, "integer"),
    ("frames", None, "a value"), ("cycles", 0, "[1, 64]"), ("seed", -1, "integer"), ("seed", 2 ** 64, "integer"),
    ("preset", "dance", "one of"), ("loop", 3, "one of"),
])
def test_a_widget_value_that_does_not_fit_names_the_input_expected_and_got(inference, name, value, word):
    with pytest.raises(FlipbookInputError) as err:
        _call("FlipbookBezierTrajectory", **_bezier_kwargs(**{name: value}))
    msg = str(err.value)
    assert msg.startswith(f"{name}: expected") and word in msg and "got" in msg


def test_values_in_range_pass_converted_to_their_widget_type(inference):
    traj, = _call("FlipbookBezierTrajectory", **_bezier_kwargs(frames=4.0, amplitude=0, seed=2 ** 64 - 1))
    assert traj.n_frames == 4


def test_nan_guidance_is_refused_before_any_model_call(inference):
    with pytest.raises(FlipbookInputError, match=r"^guidance: expected a finite number"):
        _call("FlipbookFlipSketchSampler", model=None, positive=None, reference=None, frames=4, steps=2,
              guidance=float("nan"), seeds=1, seed=0, seed_chunk=0, frame_align=False)
    with pytest.raises(FlipbookInputError, match=r"^guidance: expected"):
        _call("FlipbookAnimateXSampler", model=None, reference=None, pose_images=None, motion=None, seed=0, steps=2,
              guidance=float("inf"), eta=0.0, noise_offset=0.0, reference_mode="local_image", width=0, height=0,
              context_frames=0, context_overlap=0)


def test_booleans_refuse_text():
    with pytest.raises(FlipbookInputError, match="expected true or false"):
        V.check_bool("on", "false", {})
    assert V.check_bool("on", 1, {}) is True


def test_every_numeric_widget_of_every_node_has_bounds_the_check_can_use():
    for node, cls in NODE_CLASS_MAPPINGS.items():
        decl = cls.INPUT_TYPES()
        for section in ("required", "optional"):
            for name, spec in (decl.get(section) or {}).items():
                if spec[0] in ("INT", "FLOAT"):
                    opts = spec[1]
                    assert "min" in opts and "max" in opts, f"{node}.{name}: no min/max"
                    assert opts["min"] <= opts["default"] <= opts["max"], f"{node}.{name}: default out of range"
