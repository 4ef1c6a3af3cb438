"""``make-test-models``: a tiny random text-to-video backbone under the name the shipped FlipSketch
workflow loads (models/diffusers/t2v_sketch-lora/checkpoint-2500, diffusers folder layout). Its VAE
downsamples x32, so the workflow's 256-pixel sketch gives 8x8 latents and runs on a CPU."""
from __future__ import annotations

import os

from ..diffusion.backbone import save_t2v, tiny_t2v
from .settings import FLIPSKETCH_MODEL


def write_test_models(models_dir: str) -> list[str]:
    return save_t2v(tiny_t2v(0, vae_downscale=32), os.path.join(models_dir, "diffusers", *FLIPSKETCH_MODEL.split("/")))
