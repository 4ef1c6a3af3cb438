"""CPABMM's configs: the four published presets (C:config/*.yaml, spec cpab.md §2.3, §2.5), a tiny
one for tests and test models, and the defaults of Flipbook CPABMM Animate.

A config is a plain dict (it travels as JSON in our safetensors files' metadata, under
:data:`METADATA_KEY`, so a file describes itself).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

from ..errors import fail

PRESETS = {
    # C:config/*.yaml (model_params, train_params.max_iter); TPSMM-derived sizes (spec §2.3, §2.5)
    "vox": {"size": 256, "max_iter": 100, "bg": True},
    "taichi": {"size": 256, "max_iter": 200, "bg": True},
    "ted": {"size": 384, "max_iter": 100, "bg": True},
    "mgif": {"size": 256, "max_iter": 100, "bg": False},
}
METADATA_KEY = "cpabmm_config"


def preset_config(name: str) -> dict:
    if name not in PRESETS:
        fail("preset", f"one of {tuple(PRESETS)}", repr(name))
    p = PRESETS[name]
    return {
        "preset": name, "size": p["size"], "max_iter": p["max_iter"], "global_iter_factor": 1.5,
        "nsteps": 50, "partial_cells": 4, "global_cells": 6, "lr": 1e-2,
        "common": {"num_cpab": 10, "num_channels": 3, "bg": p["bg"], "width": 64},
        "generator": {"block_expansion": 64, "max_features": 512, "num_down_blocks": 3},
        "dense_motion": {"block_expansion": 64, "max_features": 1024, "num_blocks": 5, "scale_factor": 0.25},
        "avd": {"id_bottle_size": 128, "pose_bottle_size": 128},
    }


def tiny_config(preset: str = "vox") -> dict:
    """A config that builds in milliseconds and runs on a CPU in a second (tests, test models)."""
    cfg = preset_config(preset)
    cfg.update(size=64, max_iter=8, nsteps=10)
    cfg["common"].update(num_cpab=2, width=8)
    cfg["generator"].update(block_expansion=8, max_features=32, num_down_blocks=3)
    cfg["dense_motion"].update(block_expansion=8, max_features=32, num_blocks=3)
    cfg["avd"].update(id_bottle_size=16, pose_bottle_size=16, hidden=[16, 32, 64])
    return cfg


def normalise_config(cfg: dict) -> dict:
    """Accept official-style keys too (``num_tps`` -> ``num_cpab``, spec §0)."""
    cfg = copy.deepcopy(cfg)
    base = preset_config(cfg.get("preset", "vox"))
    for k, v in cfg.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            base[k].update(v)
        else:
            base[k] = v
    common = base["common"]
    if "num_tps" in common:
        common["num_cpab"] = common.pop("num_tps")
    return base


@dataclass(frozen=True)
class AnimateSettings:
    """Flipbook CPABMM Animate's defaults (spec §2.7): the relative mode of the official demo,
    the preset's fit iterations (``max_iter=0``), the background predictor when present."""
    mode: str = "relative"
    max_iter: int = 0
    use_bg: bool = True
    batch: int = 4


ANIMATE = AnimateSettings()
