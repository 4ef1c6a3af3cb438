"""Every node takes anything a user or an API client can send (property-based, Hypothesis).

For every node in NODE_CLASS_MAPPINGS (found at run time: a new node is covered with no edit here),
inputs are generated from the node's own INPUT_TYPES: a cheap valid baseline (widget defaults, small
pictures, tiny models from `make-test-models`, values of custom types made by the nodes that produce
them), then one to three inputs replaced by a value at its bounds, just beyond them, NaN / inf, the
wrong Python type, an empty or wrongly shaped tensor, empty / garbage / huge / deeply nested JSON, a
value of another socket type, a file name with `..`, an absolute path or a symlink leading out of its
folder. Each call must return outputs of the declared types or raise FlipbookInputError, under
torch.inference_mode(), within a memory budget ($FLIPBOOK_MEMORY_BUDGET_GB 1 GiB and a cap on the
process size) and a work budget: a valid but long run (1000 sampler steps) is cancelled through the
adapter's hook after WORK_CHECKS progress checks, which it must honour. Derandomised with a fixed number of examples, so CI
sees the same cases every run; a failure names the node (the test id) and the inputs (Hypothesis'
falsifying example).
"""
from __future__ import annotations

import math
import os
import pathlib
import resource
import signal

import pytest
import torch
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from comfyui_flipbook import NODE_CLASS_MAPPINGS
from comfyui_flipbook.nodes import _comfy
from comfyui_flipbook.nodes import types as T
from comfyui_flipbook.nodes._comfy import FileList
from comfyui_flipbook.pipelines.errors import FlipbookInputError

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLES = int(os.environ.get("FLIPBOOK_PROPERTY_EXAMPLES", "12"))
BUDGET_GB = 1.0                   # $FLIPBOOK_MEMORY_BUDGET_GB while the property test runs
RSS_LIMIT_GB = 6.0                # the process must stay below this (the budget plus models and slack)
SIZE = 48                         # pictures of the baseline
# Makers that fit the baseline together (the trajectory of the baseline skeleton, not a pose track's).
PREFERRED_MAKERS = {"FLIPBOOK_TRAJECTORY": "FlipbookBezierTrajectory"}
# Nodes whose every call loads or samples a model: fewer examples, so that the whole test stays < 3 min.
EXAMPLES_FOR = {"FlipbookAnimateXLoader": 4, "FlipbookAnimateXSampler": 5, "FlipbookCPABMMAnimate": 6}


# --- the environment: tiny models, a symlink out of the models folder, a small budget ----------------

@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from comfyui_flipbook.cli import make_test_models
    base = tmp_path_factory.mktemp("every_input")
    models = base / "models"
    make_test_models(str(models))
    outside = base / "outside.safetensors"
    outside.write_bytes(b"not a safetensors file")
    for folder in ("cpabmm", "animatex"):
        (models / folder).mkdir(parents=True, exist_ok=True)
        os.symlink(outside, models / folder / "evil.safetensors")
    saved = {k: os.environ.get(k) for k in ("FLIPBOOK_MODELS_DIR", "FLIPBOOK_MEMORY_BUDGET_GB")}
    os.environ["FLIPBOOK_MODELS_DIR"] = str(models)
    os.environ["FLIPBOOK_MEMORY_BUDGET_GB"] = str(BUDGET_GB)
    yield base
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


# --- valid values of every socket type ------------------------------------------------------------

def _figure(size=SIZE, channels=3):
    """A dark figure (a thick cross) on white: every keypoint / mesh node finds something in it."""
    img = torch.ones(1, size, size, channels)
    a, b = size // 4, 3 * size // 4
    img[0, a:b, size // 2 - 4:size // 2 + 4, :3] = 0.2
    img[0, size // 2 - 4:size // 2 + 4, a:b, :3] = 0.2
    return img


class StandInVAE:
    def encode(self, pixels):
        x = pixels[..., :3].movedim(-1, 1)
        return torch.nn.functional.avg_pool2d(torch.cat([x, x.mean(1, keepdim=True)], 1), 8)

    def decode(self, z):
        return torch.nn.functional.interpolate(z[:, :3], scale_factor=8).movedim(1, -1).clamp(0, 1)


class StandInCLIP:
    def tokenize(self, text):
        return {"l": [[(49406, 1.0), (49407, 1.0)]]}

    def encode_from_tokens(self, tokens):
        from comfyui_flipbook.pipelines.animatex.testmodels import TINY_WORKFLOW
        return torch.zeros(1, 77, TINY_WORKFLOW.context_dim)


def _core_values():
    import workflow_run
    from comfyui_flipbook.pipelines.animatex.testmodels import TINY_WORKFLOW
    pose_text = (ROOT / "assets" / "flipbook_character_pose.json").read_text()
    from comfyui_flipbook.pipelines.skeleton import Skeleton
    a, m, b = SIZE // 4 + 1, SIZE // 2, 3 * SIZE // 4 - 2
    skeleton = Skeleton(torch.tensor([[m, a], [m, m], [m, b], [a, m], [b, m]], dtype=torch.float32),
                        [(1, 0), (1, 2), (1, 3), (1, 4)], (SIZE, SIZE), root=1)     # the cross's ends and centre
    return {
        "FLIPBOOK_SKELETON": skeleton,                   # on the baseline picture's canvas
        "IMAGE": _figure(),
        "MASK": 1.0 - (_figure()[..., 0] < 0.5).float(),
        "LATENT": {"samples": torch.randn(1, 4, 2, 2, 2, generator=torch.Generator().manual_seed(0))},
        "CLIP_VISION": workflow_run.StandInCLIPVision(TINY_WORKFLOW.clip_dim),
        "VAE": StandInVAE(),
        "CLIP": StandInCLIP(),
        "POSE_KEYPOINT": pose_text,
    }


def _spec(cls) -> list[tuple[str, str, object, dict]]:
    """(section, input name, type or options, options dict) of every input."""
    decl = cls.INPUT_TYPES()
    out = []
    for section in ("required", "optional"):
        for name, spec in (decl.get(section) or {}).items():
            out.append((section, name, spec[0], spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}))
    return out


def _cheap_widget(typ, opts):
    """A widget's default, with counts (steps, frames, iterations, sizes) brought down to a few."""
    if isinstance(typ, (list, tuple)):
        return opts.get("default", list(typ)[0])
    d = opts.get("default")
    if typ == "INT":
        lo, hi = opts.get("min", 0), opts.get("max", d)
        if d > 4 and lo <= 4 and hi <= 2 ** 31:        # not seeds
            step = int(opts.get("step", 1))
            d = max(lo, step * -(-4 // step))
        return d
    return d


class Values:
    """Valid values of every socket type, built once: ComfyUI's types directly, the pack's by running
    the node that makes them (cheapest first) on valid values."""

    def __init__(self):
        self.cache = dict(_core_values())
        self.making: set[str] = set()

    def get(self, type_name: str):
        if type_name not in self.cache:
            self.cache[type_name] = self._make(type_name)
        return self.cache[type_name]

    def baseline(self, cls) -> dict:
        kw = {}
        for section, name, typ, opts in _spec(cls):
            if isinstance(typ, str) and (typ in T.REGISTRY or typ in T.CORE):
                value = self.get(typ)
                if value is None and section == "required":
                    raise LookupError(f"no value of {typ}")
                if value is not None and (section == "required" or typ in T.REGISTRY):
                    kw[name] = value
            elif isinstance(typ, (list, tuple)) or typ in ("INT", "FLOAT", "BOOLEAN", "STRING"):
                kw[name] = _cheap_widget(typ, opts)
        return kw

    def _make(self, type_name: str):
        if type_name in self.making:
            return None
        self.making.add(type_name)
        try:
            makers = [(n, c) for n, c in NODE_CLASS_MAPPINGS.items() if type_name in c.RETURN_TYPES]
            makers.sort(key=lambda nc: (nc[0] != PREFERRED_MAKERS.get(type_name), "tiny" not in nc[0].lower(), sum(
                1 for s, _, t, _ in _spec(nc[1]) if s == "required" and isinstance(t, str) and t in T.REGISTRY)))
            for name, cls in makers:
                try:
                    kw = self.baseline(cls)
                    with torch.inference_mode():
                        out = getattr(cls(), cls.FUNCTION)(**kw)
                except (FlipbookInputError, LookupError):
                    continue
                out = out["result"] if isinstance(out, dict) else out
                return out[list(cls.RETURN_TYPES).index(type_name)]
            return None
        finally:
            self.making.discard(type_name)


@pytest.fixture(scope="module")
def values(env):
    return Values()


# --- bad and edge values, from the input's own declaration -------------------------------------------

def _number_values(typ, opts):
    lo, hi = opts.get("min"), opts.get("max")
    step = 1 if typ == "INT" else (opts.get("step") or 0.01)
    edge = [v for v in (lo, hi) if v is not None]
    beyond = ([lo - step] if lo is not None else []) + ([hi + step] if hi is not None else [])
    junk = [float("nan"), float("inf"), float("-inf"), "3", None, [1], 2 ** 70, -2 ** 70]
    if typ == "INT":
        junk += [1.5, True]
        inside = st.integers(lo if lo is not None else -2 ** 31, min(hi, 2 ** 31) if hi is not None else 2 ** 31)
    else:
        inside = st.floats(lo if lo is not None else -1e6, hi if hi is not None else 1e6, allow_nan=False)
    return st.one_of(st.sampled_from(edge + beyond + junk), inside)


_JSON = ["", " ", "{", "]", "null", "true", "0", "[]", "{}", "[[]]", '{"points": 5}', '{"people": "x"}',
         "[[1e309, 0]]", "[[NaN, 1], [2, 3]]", "[[1, 2], [3, 4]]", "[[-5, -5], [1e6, 1e6]]", '[{"people": []}]',
         '[[0, 1], [1, 9]]', '"text"', "[" * 50000 + "]" * 50000, "[" + "0," * 100000 + "0]", "x" * 20000,
         "\x00\xff", "../../etc/passwd", "/etc/passwd", "[1, 2, 3]"]
_NAMES = ["", "nope", "../pyproject.toml", "../../etc/passwd", "/etc/passwd", "evil.safetensors", "a/../../b",
          "x" * 300, 3, None]


def _other_type_values(values: Values, not_this: str):
    names = sorted(t for t in list(T.CORE) + list(T.REGISTRY) if t != not_this)
    return st.sampled_from(names).map(values.get)


def _tensor_variants(type_name, valid):
    v = valid
    if type_name == "IMAGE":
        return [v[:0], v[0], v[..., :1], torch.cat([v, v[..., :2]], -1), v[:, :1, :1], v.double(), v[None],
                (v * 255).to(torch.uint8), torch.full_like(v, float("nan")), v.expand(3, -1, -1, -1) * 2 - 0.5,
                torch.ones(1, 2, 4000, 3)]
    if type_name == "MASK":
        return [v[:0], v[0], torch.zeros(1, 64, 64), torch.zeros(1, v.shape[1] + 1, v.shape[2]), v[..., None],
                torch.full_like(v, float("nan")), v.expand(5, -1, -1), v[None, None], v.long()]
    if type_name == "LATENT":
        s = v["samples"]
        return [{"samples": s[:0]}, {"samples": s[0]}, {"samples": s[:, :, :0]}, {"samples": torch.randn(1, 4, 4, 4)},
                {"samples": s.expand(2, -1, -1, -1, -1)}, {"samples": s * float("nan")}, {"x": 1}, {"samples": "s"}]
    if type_name == "FLIPBOOK_FLOW":
        return [v[:0], v[..., :1], v[0], v * float("nan"), v * 1e9]
    if type_name == "POSE_KEYPOINT":
        return _JSON + [[], [{}], [{"people": None}], {"people": [{"pose_keypoints_2d": [1, 2]}]}, b"\xff\xfe"]
    return []


def _socket_values(values: Values, type_name: str):
    valid = values.get(type_name)
    options = [st.just(valid), st.just(None), st.sampled_from([{}, "text", 3, [1, 2]]), _other_type_values(values, type_name)]
    variants = _tensor_variants(type_name, valid) if valid is not None else []
    if variants:
        options.append(st.sampled_from(variants))
    return st.one_of(*options)


def _input_values(values: Values, typ, opts):
    if isinstance(typ, (list, tuple)):
        opts_list = list(typ)
        extra = _NAMES if isinstance(typ, FileList) else ["nope", "", 3, None, True]
        return st.sampled_from(opts_list[:1] + opts_list[-1:] + extra)
    if typ in ("INT", "FLOAT"):
        return _number_values(typ, opts)
    if typ == "BOOLEAN":
        return st.sampled_from([True, False, 0, 1, 2, "false", None, float("nan")])
    if typ == "STRING":
        return st.one_of(st.sampled_from(_JSON + [None, 5, ["a"]]), st.text(max_size=40))
    return _socket_values(values, typ)


# --- the property ---------------------------------------------------------------------------------

def _check_outputs(node: str, cls, out):
    if isinstance(out, dict):
        assert "result" in out or "ui" in out, f"{node}: a dict output without 'result'"
        out = out.get("result", ())
    assert isinstance(out, tuple) and len(out) == len(cls.RETURN_TYPES), f"{node}: {type(out)} of {len(out)}"
    for i, (typ, value) in enumerate(zip(cls.RETURN_TYPES, out)):
        if typ in T.REGISTRY or typ in T.CORE:
            if value is None:                 # an optional output left empty (a node downstream says so)
                continue
            T.check_value(f"{node} output {i}", typ, value)
            if isinstance(value, torch.Tensor) and value.is_floating_point() and typ in ("IMAGE", "MASK"):
                assert bool(torch.isfinite(value).all()), f"{node} output {i}: NaN/inf in {typ}"
        elif typ == "INT":
            assert isinstance(value, int) and not isinstance(value, bool), f"{node} output {i}: {value!r}"
        elif typ == "FLOAT":
            assert isinstance(value, float) and math.isfinite(value), f"{node} output {i}: {value!r}"
        elif typ == "STRING":
            assert isinstance(value, str), f"{node} output {i}: {value!r}"


def _rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2


NODES = sorted(NODE_CLASS_MAPPINGS)
WORK_CHECKS = 40                  # progress / cancel checks a call may pass before it is cancelled
SECONDS_PER_CALL = 60             # a call that neither ends nor reaches a cancel check by then hangs


class WorkBudgetSpent(Exception):
    """Raised through the adapter's cancel hook: stands in for the user pressing Cancel."""


def _too_slow(signum, frame):
    raise TimeoutError(f"a call ran {SECONDS_PER_CALL} s without ending or checking for cancel")


@pytest.mark.parametrize("node", NODES)
def test_every_input_gives_a_result_or_a_clear_error(node, values):
    cls = NODE_CLASS_MAPPINGS[node]
    try:
        base = values.baseline(cls)
    except LookupError as exc:
        pytest.fail(f"{node}: no valid value could be made for an input ({exc}): give its type a maker node")
    spec = {name: (section, typ, opts) for section, name, typ, opts in _spec(cls)}
    names = sorted(spec)

    @settings(max_examples=min(EXAMPLES, EXAMPLES_FOR.get(node, EXAMPLES)), derandomize=True, deadline=None, database=None, print_blob=False,
              suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def run(data):
        picked = data.draw(st.lists(st.sampled_from(names), min_size=1, max_size=min(3, len(names)), unique=True),
                           label="inputs changed") if names else []
        kw = dict(base)
        for name in picked:
            section, typ, opts = spec[name]
            value = data.draw(_input_values(values, typ, opts), label=name)
            if value is None and section == "optional" and data.draw(st.booleans(), label=f"{name} left out"):
                kw.pop(name, None)
            else:
                kw[name] = value
        note(f"node {node}: {sorted(picked)}")
        checks = [0]

        def work_budget():                        # a long valid run is cancelled, as a user would
            checks[0] += 1
            if checks[0] > WORK_CHECKS:
                raise WorkBudgetSpent

        _comfy.INTERRUPT_HOOKS.append(work_budget)
        signal.signal(signal.SIGALRM, _too_slow)
        signal.alarm(SECONDS_PER_CALL)
        try:
            with torch.inference_mode():
                out = getattr(cls(), cls.FUNCTION)(**kw)
        except FlipbookInputError as exc:
            assert str(exc).strip(), f"{node}: an empty error message"
            return
        except WorkBudgetSpent:                   # it honoured the cancel after WORK_CHECKS steps
            return
        finally:
            signal.alarm(0)
            _comfy.INTERRUPT_HOOKS.remove(work_budget)
        _check_outputs(node, cls, out)
        assert _rss_gb() < RSS_LIMIT_GB, f"{node}: the process grew to {_rss_gb():.1f} GB"

    run()


def test_the_property_covers_every_node_and_can_fail(values):
    assert len(NODE_CLASS_MAPPINGS) >= 30
    with pytest.raises((AssertionError, FlipbookInputError)):
        _check_outputs("FlipbookSketchBinarise", NODE_CLASS_MAPPINGS["FlipbookSketchBinarise"], ("not an image",))
