"""Test models for the FlexiClip path (``make-test-models``), under the names the shipped
flexiclip_sds workflow loads:

- diffusers/text-to-video-ms-1.7b: a tiny random text-to-video backbone in diffusers layout (ModelScope's
  Hugging Face name, which users clone into models/diffusers); its VAE downsamples x32, so the
  workflow's 256² SDS renders give 8x8 latents and run on a CPU;
- xclip/xclip-base-patch32: a tiny random X-CLIP folder (microsoft/xclip-base-patch32's name).

The weight-free rig (keypoints, Bezier trajectories, mesh deformation, rendering) needs no model.
The CLIP vision file the metrics use is the Animate-X one (pipelines/animatex/testmodels.py).
"""
from __future__ import annotations

import os

from ..diffusion.backbone import save_t2v, tiny_t2v
from .scores import write_tiny_xclip
from .settings import T2V_MODEL, XCLIP_MODEL


def write_test_models(models_dir: str) -> list[str]:
    out = save_t2v(tiny_t2v(0, vae_downscale=32), os.path.join(models_dir, "diffusers", T2V_MODEL))
    out.append(write_tiny_xclip(os.path.join(models_dir, "xclip", XCLIP_MODEL)))
    return out
