"""Widget declarations every family shares, with one vocabulary and one set of ranges.

The words: ``frames`` (how many frames a node makes), ``max_frames`` (a cap on frames read),
``every_nth`` (keep every n-th frame read), ``steps`` (sampler or integration steps), ``guidance``
(classifier-free guidance scale), ``iterations`` (optimiser iterations), ``seed`` (0..2**64-1, as
ComfyUI's own samplers), ``dtype`` (weight precision), ``min_confidence`` (keypoint detector
confidence below which a point counts as missing). A node that needs one of these declares it here, so
that names, ranges and tooltips cannot drift between families.
"""
from __future__ import annotations

SEED_MAX = 0xFFFFFFFFFFFFFFFF           # ComfyUI's KSampler range; every seed widget takes it
DTYPES = ("auto", "bf16", "fp16", "fp32")


def seed(default: int = 0, tip: str = "Random seed.") -> tuple:
    """A seed widget (the frontend adds its 'control after generate' menu to widgets named seed)."""
    return ("INT", {"default": int(default), "min": 0, "max": SEED_MAX, "tooltip": tip})


def frames(default: int, tip: str, *, min: int = 1, max: int = 1024) -> tuple:
    return ("INT", {"default": int(default), "min": int(min), "max": int(max), "tooltip": tip})


def max_frames(tip: str = "Read at most this many frames (0: all).", *, max: int = 100000, default: int = 0) -> tuple:
    return ("INT", {"default": int(default), "min": 0, "max": int(max), "tooltip": tip})


def every_nth(tip: str = "Keep every n-th frame.", *, max: int = 100) -> tuple:
    return ("INT", {"default": 1, "min": 1, "max": int(max), "tooltip": tip})


def steps(default: int, tip: str, *, min: int = 1, max: int = 1000) -> tuple:
    return ("INT", {"default": int(default), "min": int(min), "max": int(max), "tooltip": tip})


def guidance(default: float, tip: str, *, max: float = 30.0) -> tuple:
    return ("FLOAT", {"default": float(default), "min": 0.0, "max": float(max), "step": 0.1, "tooltip": tip})


def iterations(default: int, tip: str, *, min: int = 0, max: int = 1000) -> tuple:
    return ("INT", {"default": int(default), "min": int(min), "max": int(max), "tooltip": tip})


def dtype(tip: str) -> tuple:
    """Weight precision; ``auto`` is resolved by pipelines.devices.resolve_dtype for the model's kind."""
    return (list(DTYPES), {"default": "auto", "tooltip": tip})


def min_confidence(default: float, tip: str) -> tuple:
    return ("FLOAT", {"default": float(default), "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": tip})
