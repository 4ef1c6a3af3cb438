"""CPABMM under the file name the shipped workflow loads (``make-test-models``): the small model
trained on the synthetic motion data (``assets/cpabmm_tiny64.safetensors``, made by
``assets/make_cpabmm_tiny.py``), or a tiny random one where that file is absent."""
from __future__ import annotations

import os
import shutil

import torch

from .model import CPABMM, save_safetensors
from .settings import tiny_config

TRAINED = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "assets",
                       "cpabmm_tiny64.safetensors")


def write_test_models(models_dir: str, *, trained: bool = True) -> list[str]:
    """Writes models/cpabmm/cpabmm-vox-256.safetensors: the shipped trained tiny-64 model, or
    (``trained=False`` or no asset) a :func:`~.settings.tiny_config` random model, seed 0."""
    path = os.path.join(models_dir, "cpabmm", "cpabmm-vox-256.safetensors")
    if trained and os.path.isfile(TRAINED):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        shutil.copyfile(TRAINED, path)
        return [path]
    torch.manual_seed(0)
    model = CPABMM(tiny_config("vox"))
    return [save_safetensors(model, path)]
