"""Draws assets/cpabmm_driving.webp, the driving clip of the CPABMM workflow (12 frames, 128²).

Run: python assets/make_cpabmm_driving.py (with the pack importable as comfyui_flipbook). The clip is
ours: the demo character, shrunk, swaying left and right under a smooth random CPAB deformation.
"""
import os

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from comfyui_flipbook.pipelines import cpab

HERE = os.path.dirname(os.path.abspath(__file__))


def main(frames: int = 12, size: int = 128) -> str:
    rgba = np.asarray(Image.open(os.path.join(HERE, "flipbook_character.png")).convert("RGBA"), dtype=np.float32) / 255
    rgb = rgba[..., :3] * rgba[..., 3:] + (1 - rgba[..., 3:])            # on white
    img = F.interpolate(torch.from_numpy(rgb).permute(2, 0, 1)[None], size=(size, size), mode="bilinear",
                        antialias=True, align_corners=False)
    params = cpab.random_params((4, 4), frames, strength=0.5, length_scale=0.3, mode="wiggle", seed=3)
    out = cpab.warp(img, cpab.sampling_grid(params, (size, size), flow_resolution=size))
    pics = [Image.fromarray((f.permute(1, 2, 0).clamp(0, 1).numpy() * 255).round().astype(np.uint8)) for f in out]
    path = os.path.join(HERE, "cpabmm_driving.webp")
    pics[0].save(path, save_all=True, append_images=pics[1:], duration=83, loop=0, lossless=False, quality=80)
    return path


if __name__ == "__main__":
    print(main())
