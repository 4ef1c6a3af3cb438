"""Tiny random CPABMM under the file name the shipped workflow loads (``make-test-models``)."""
from __future__ import annotations

import os

import torch

from .model import CPABMM, save_safetensors
from .settings import tiny_config


def write_test_models(models_dir: str) -> list[str]:
    """Writes models/cpabmm/cpabmm-vox-256.safetensors (a :func:`~.settings.tiny_config` model, seed 0)."""
    torch.manual_seed(0)
    model = CPABMM(tiny_config("vox"))
    return [save_safetensors(model, os.path.join(models_dir, "cpabmm", "cpabmm-vox-256.safetensors"))]
