"""CPABMM (AAAI 2024) motion transfer, re-implemented from the spec (cpab.md §2): networks, the
published presets' configs, checkpoint I/O and inference. No official weights exist; users bring
their own (tests use :mod:`.testmodels`)."""
from .model import CPABMM, convert_to_safetensors, load_model, read_checkpoint, save_safetensors
from .pipeline import MODES, animate, fit_cpab_grids, relative_keypoints
from .settings import ANIMATE, PRESETS, AnimateSettings, normalise_config, preset_config, tiny_config
from .testmodels import write_test_models

__all__ = ["ANIMATE", "CPABMM", "MODES", "PRESETS", "AnimateSettings", "animate", "convert_to_safetensors",
           "fit_cpab_grids", "load_model", "normalise_config", "preset_config", "read_checkpoint", "relative_keypoints",
           "save_safetensors", "tiny_config", "write_test_models"]
