"""The one registry of the types that travel between nodes: every FLIPBOOK_* name is declared here,
once, with the Python class it carries (ComfyUI connects sockets by type *name*, so two things must
never share one; ComfyUI's own ``io.Custom("NAME")`` is the model).

Node modules use these constants in INPUT_TYPES / RETURN_TYPES (each is the plain type-name string).
:func:`checked` wraps a node's function so that a value of the wrong kind (a wiring mistake, a
hand-written API prompt) fails with one clear error naming the input, the type expected and what came,
instead of an AttributeError deep inside a pipeline.
"""
from __future__ import annotations

import functools
import importlib
import inspect

import torch

from ..pipelines.errors import FlipbookInputError

_PACK = __name__.rsplit(".", 2)[0]       # comfyui_flipbook (or the folder name ComfyUI imports us under)


class FlipbookType(str):
    """A socket type name with what it carries: ``cls`` ("module:Class" inside the pack, resolved on
    first use, so this module imports no pipeline), a short ``doc`` and the nodes that make it."""

    def __new__(cls, name: str, carries: str, doc: str, made_by: str):
        obj = super().__new__(cls, name)
        obj.carries, obj.doc, obj.made_by = carries, doc, made_by
        obj._cls = None
        return obj

    def python_class(self) -> type:
        if self._cls is None:
            mod, _, attr = self.carries.partition(":")
            module = importlib.import_module(mod, _PACK) if mod.startswith(".") else importlib.import_module(mod)
            self._cls = getattr(module, attr)
        return self._cls

    def accepts(self, value) -> bool:
        return isinstance(value, self.python_class())


REGISTRY: dict[str, FlipbookType] = {}


def _declare(name: str, carries: str, doc: str, made_by: str) -> FlipbookType:
    if name in REGISTRY:
        raise RuntimeError(f"type {name} declared twice")
    REGISTRY[name] = t = FlipbookType(name, carries, doc, made_by)
    return t


# --- keypoints, trajectories, meshes (FlexiClip, CPAB) -------------------------------------------------
SKELETON = _declare("FLIPBOOK_SKELETON", ".pipelines.skeleton:Skeleton",
                    "keypoints in pixels with bones and a root", "Flipbook Keypoints (JSON) / Auto Keypoints / Keypoints from Pose")
TRAJECTORY = _declare("FLIPBOOK_TRAJECTORY", ".pipelines.bezier:Trajectory",
                      "per-keypoint Bezier curves or tracks over frames", "Flipbook Bezier Trajectory / Keypoints from Pose")
MESH = _declare("FLIPBOOK_MESH", ".pipelines.mesh:Mesh", "a triangle mesh of the picture", "Flipbook Mesh Builder")
ANIMATION = _declare("FLIPBOOK_ANIMATION", ".pipelines.flexiclip.pipeline:Animation",
                     "the deformed mesh of every frame", "Flipbook Mesh Deform")
CPAB_PARAMS = _declare("FLIPBOOK_CPAB_PARAMS", ".pipelines.cpab.warp:CPABParams",
                       "CPAB parameters θ per frame", "Flipbook CPAB Fit / Keypoint Warp / Random Deform")
FLOW = _declare("FLIPBOOK_FLOW", "torch:Tensor", "a backward flow [frames, H, W, 2] in pixels",
                "Flipbook CPAB Keypoint Warp / Apply / Random Deform")
CPABMM_MODEL = _declare("FLIPBOOK_CPABMM_MODEL", ".pipelines.cpabmm.model:CPABMM",
                        "a CPABMM motion-transfer model", "Flipbook CPABMM Loader")
# --- diffusion (FlipSketch, ...) --------------------------------------------------------------------
T2V = _declare("FLIPBOOK_T2V", ".pipelines.diffusion.backbone:T2VBackbone",
               "a text-to-video backbone, with the attention patches it carries",
               "Flipbook T2V Loader / Tiny T2V / FlipSketch Attention")
EMBEDS = _declare("FLIPBOOK_EMBEDS", "torch:Tensor", "prompt embeddings (1, 77, D)", "Flipbook Text Encode")
INVERSION = _declare("FLIPBOOK_INVERSION", "builtins:dict",
                     "the DDIM inversion's latents Z_0..Z_T with their timesteps", "Flipbook DDIM Invert")
ATTN_PATCH = _declare("FLIPBOOK_ATTN_PATCH", ".pipelines.flipsketch.settings:FlipSketchAttention",
                      "FlipSketch's attention-composition settings", "Flipbook FlipSketch Attention")
FRAME_ALIGN = _declare("FLIPBOOK_FRAME_ALIGN", ".pipelines.flipsketch.settings:FrameAlign",
                       "FlipSketch's frame-alignment settings", "Flipbook FlipSketch Frame Align")
CORRECTOR = _declare("FLIPBOOK_TJC", ".pipelines.flexiclip.corrector:TemporalJacobianCorrector",
                     "FlexiClip's temporal Jacobian corrector network", "Flipbook FlexiClip Corrector / SDS Optimiser")
XCLIP = _declare("FLIPBOOK_XCLIP", ".pipelines.flexiclip.scores:XCLIP", "an X-CLIP text-video model",
                 "Flipbook X-CLIP Loader")
# --- poses, Animate-X ---------------------------------------------------------------------------
POSES = _declare("FLIPBOOK_POSES", ".pipelines.pose:PoseSequence",
                 "a pose sequence (OpenPose body, feet, hands, face per frame)", "Flipbook Pose From Keypoints / Load Pose Keypoints")
ANIMATEX = _declare("FLIPBOOK_ANIMATEX", ".pipelines.animatex.pipeline:AnimateXModel",
                    "the Animate-X model", "Flipbook Animate-X Loader")
ANIMATEX_MOTION = _declare("FLIPBOOK_ANIMATEX_MOTION", ".pipelines.animatex.pipeline:Motion",
                           "Animate-X's implicit pose indicator inputs", "Flipbook Animate-X Pose Indicator")

# --- PoseAnimate (SD1.5 + ControlNet) -----------------------------------------------------------------
SDCN = _declare("FLIPBOOK_SDCN", ".pipelines.poseanimate.models:SDControlNet",
                "SD1.5 + an OpenPose ControlNet, with the attention patches it carries",
                "Flipbook PoseAnimate Loader / Tiny SD + ControlNet / PoseAnimate Attention")
POSE_EMBEDS = _declare("FLIPBOOK_POSE_EMBEDS", ".pipelines.poseanimate.pipeline:PoseEmbeddings",
                       "PoseAnimate's per-frame, per-step embeddings with the source noise and poses",
                       "Flipbook PoseAnimate Embedding Optimiser")


# --- ComfyUI's own types: checked by shape of the value ------------------------------------------------

def _is_latent(v) -> bool:
    return isinstance(v, dict) and isinstance(v.get("samples"), torch.Tensor)


CORE = {
    "IMAGE": ("an IMAGE tensor [frames, height, width, channels]", lambda v: isinstance(v, torch.Tensor)),
    "MASK": ("a MASK tensor [frames, height, width]", lambda v: isinstance(v, torch.Tensor)),
    "LATENT": ("a LATENT {'samples': tensor}", _is_latent),
    "CLIP_VISION": ("a CLIP vision model (ComfyUI's Load CLIP Vision)", lambda v: hasattr(v, "encode_image")),
    "VAE": ("a VAE (ComfyUI's Load VAE)", lambda v: hasattr(v, "decode") and hasattr(v, "encode")),
    "CLIP": ("a CLIP text encoder (ComfyUI's Load CLIP / checkpoint loader)", lambda v: hasattr(v, "tokenize")),
    "POSE_KEYPOINT": ("OpenPose keypoints (POSE_KEYPOINT: a list of frames or its JSON text)",
                      lambda v: isinstance(v, (list, dict, str, bytes))),
}


def _what(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, dict) and "samples" in value:
        return "a LATENT"
    return f"a {type(value).__name__}"


def check_value(input_name: str, type_name: str, value) -> None:
    """Raise FlipbookInputError when ``value`` is not what an input of ``type_name`` carries."""
    if value is None:
        return                                   # an optional input left unconnected
    t = REGISTRY.get(type_name)
    if t is not None:
        if not t.accepts(value):
            raise FlipbookInputError(f"{input_name}: expected {type_name} ({t.doc}, from {t.made_by}), "
                                     f"got {_what(value)}")
        return
    core = CORE.get(type_name)
    if core is not None and not core[1](value):
        raise FlipbookInputError(f"{input_name}: expected {type_name} ({core[0]}), got {_what(value)}")


def socket_types(cls, section: str | None = None, decl: dict | None = None) -> dict[str, str]:
    """``{input name: type name}`` of a node's linked (non-widget) inputs (of one section, if given);
    ``decl``: its INPUT_TYPES() when the caller has it already (some list files in input/)."""
    out = {}
    decl = cls.INPUT_TYPES() if decl is None else decl
    for sec in ("required", "optional") if section is None else (section,):
        for name, spec in (decl.get(sec) or {}).items():
            typ = spec[0]
            if isinstance(typ, str) and (typ in REGISTRY or typ in CORE):
                out[name] = str(typ)
    return out


def _missing(input_name: str, type_name: str) -> FlipbookInputError:
    t = REGISTRY.get(type_name)
    what = f"{t.doc}, from {t.made_by}" if t is not None else CORE[type_name][0]
    return FlipbookInputError(f"{input_name}: expected {type_name} ({what}), got nothing: connect it")


def checked(cls) -> type:
    """Wrap ``cls``'s FUNCTION so every linked input is type-checked, and every widget value checked
    against the node's own INPUT_TYPES (nodes/_validate.py), before it runs (once per class)."""
    from ._validate import _MISSING, check_widgets, widget_checks

    fn_name = getattr(cls, "FUNCTION", None)
    fn = getattr(cls, fn_name, None) if fn_name else None
    if fn is None or getattr(fn, "_flipbook_checked", False):
        return cls
    decl = cls.INPUT_TYPES()                             # once: Load Pose Keypoints reads input/ for it
    sockets = socket_types(cls, decl=decl)
    required = socket_types(cls, "required", decl=decl)
    widgets = {k: v for k, v in widget_checks(decl).items() if k not in sockets}
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def run(self, *args, **kwargs):
        bound = signature.bind_partial(self, *args, **kwargs)   # ComfyUI passes keywords; tests may not
        given = bound.arguments
        for name, type_name in sockets.items():
            if name in given:
                check_value(name, type_name, given[name])
        for name, value in check_widgets(widgets, given).items():
            if value is _MISSING:
                given.pop(name, None)
            else:
                given[name] = value
        for name, type_name in required.items():        # a required input sent as None (an API prompt)
            if name in given and given[name] is None:
                raise _missing(name, type_name)
        return fn(*bound.args, **bound.kwargs)

    run._flipbook_checked = True
    setattr(cls, fn_name, run)
    return cls
