"""``make-test-models``: tiny random SD1.5 + OpenPose ControlNet stand-ins under the names the shipped
PoseAnimate workflow loads, in the layouts users have (diffusers folders): models/diffusers/
stable-diffusion-v1-5 and models/controlnet/control_v11p_sd15_openpose. The VAE downsamples x8 and the
ControlNet's pose image is the picture's size, as SD1.5's, so the workflow's 128-pixel character gives
16x16 latents and runs on a CPU."""
from __future__ import annotations

import os

from .models import save_controlnet_folder, save_sd_folder, tiny_sdcn
from .settings import CONTROLNET_MODEL, SD_MODEL


def write_test_models(models_dir: str) -> list[str]:
    model = tiny_sdcn(0, vae_downscale=8)
    return (save_sd_folder(model, os.path.join(models_dir, "diffusers", SD_MODEL))
            + save_controlnet_folder(model, os.path.join(models_dir, "controlnet", CONTROLNET_MODEL)))
