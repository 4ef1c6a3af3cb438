"""CPABMM (AAAI 2024) motion transfer, re-implemented from the spec (cpab.md §2): networks, configs of
the published presets, checkpoint I/O and inference. No official weights exist; users bring their own."""
from .animate import MODES, animate, fit_cpab_grids, relative_keypoints
from .model import (CPABMM, PRESETS, convert_to_safetensors, load_model, preset_config, read_checkpoint,
                    save_safetensors, tiny_config, write_test_models)

__all__ = ["CPABMM", "MODES", "PRESETS", "animate", "convert_to_safetensors", "fit_cpab_grids", "load_model",
           "preset_config", "read_checkpoint", "relative_keypoints", "save_safetensors", "tiny_config",
           "write_test_models"]
