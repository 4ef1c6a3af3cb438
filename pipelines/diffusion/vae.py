"""VAE encode/decode between ComfyUI IMAGE frames [F,H,W,3] (0..1) and video latents (B,C,F,h,w)."""
from __future__ import annotations

import numpy as np
import torch

from ..errors import check_finite, check_image, fail
from .. import budget
from ..progress import poll, report
from .backbone import param_device

VAE_RANGES = ("-1_1", "0_1")
POSTERIORS = ("mean", "sample")


def resize_frames(image: torch.Tensor, size: int) -> torch.Tensor:
    """[F,H,W,3] -> [F,size,size,3] with PIL's LANCZOS (what FlipSketch's app does, spec §1.1)."""
    from PIL import Image

    if image.shape[1] == size and image.shape[2] == size:
        return image
    out = []
    for frame in image:
        arr = (frame.float().clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)
        pil = Image.fromarray(arr).resize((size, size), Image.LANCZOS)
        out.append(torch.from_numpy(np.asarray(pil).astype(np.float32) / 255.0))
    return torch.stack(out).to(image.device)


def encode_frames(backbone, image: torch.Tensor, *, vae_range: str = "-1_1", posterior: str = "mean",
                  generator: torch.Generator | None = None, chunk: int = 8) -> torch.Tensor:
    """IMAGE [F,H,W,3] -> scaled latents (1, C, F, H/s, W/s).

    ``vae_range="0_1"`` feeds [0,1] pixels as FlipSketch does (spec §0.7); ``posterior="sample"``
    draws from the latent distribution with ``generator`` (FlipSketch), ``"mean"`` takes its mean.
    """
    image = check_image("image", image)[..., :3]
    if vae_range not in VAE_RANGES:
        fail("vae_range", f"one of {VAE_RANGES}", repr(vae_range))
    if posterior not in POSTERIORS:
        fail("posterior", f"one of {POSTERIORS}", repr(posterior))
    s = backbone.latent_scale
    if image.shape[1] % s or image.shape[2] % s:
        fail("image", f"height and width divisible by {s}", f"{image.shape[2]}x{image.shape[1]}")
    x = image.permute(0, 3, 1, 2).to(param_device(backbone.vae), backbone.dtype)
    if vae_range == "-1_1":
        x = x * 2 - 1
    vae = backbone.vae
    parts = []
    with torch.no_grad():
        for i in range(0, x.shape[0], max(1, int(chunk))):
            dist = vae.encode(x[i:i + chunk]).latent_dist
            if posterior == "mean":
                z = dist.mean
            else:
                noise = torch.randn(dist.mean.shape, generator=generator, dtype=torch.float32)
                z = dist.mean + dist.std * noise.to(dist.mean.device, dist.mean.dtype)
            parts.append(z)
    z = torch.cat(parts) * vae.config.scaling_factor
    return z.permute(1, 0, 2, 3)[None]


def check_video_latent(name: str, latents) -> torch.Tensor:
    if not isinstance(latents, torch.Tensor) or latents.dim() not in (4, 5):
        fail(name, "a video LATENT (batch, channels, frames, height, width)",
             getattr(latents, "shape", type(latents).__name__))
    latents = latents if latents.dim() == 5 else latents[:, :, None]
    if 0 in latents.shape:
        fail(name, "a video LATENT with at least one sample, channel, frame and pixel", f"shape {tuple(latents.shape)}")
    return check_finite(name, latents)


def decode_latents(backbone, latents: torch.Tensor, *, chunk: int = 8, callback=None, check=None) -> torch.Tensor:
    """Video latents (B,C,F,h,w) -> IMAGE [B*F, H, W, 3] in 0..1, decoding ``chunk`` frames at a time
    (``check()`` before each VAE call, ``callback(done, total)`` after)."""
    latents = check_video_latent("latent", latents)
    vae = backbone.vae
    if latents.shape[1] != vae.config.latent_channels:
        fail("latent", f"{vae.config.latent_channels} channels for this VAE", f"{latents.shape[1]}")
    scale = 2 ** (len(getattr(vae.config, "block_out_channels", (0,))) - 1)
    n, h, w = latents.shape[0] * latents.shape[2], latents.shape[3] * scale, latents.shape[4] * scale
    budget.check("latent", budget.frames_bytes(n, h, w) + budget.frames_bytes(min(n, max(1, int(chunk))), h, w, 128),
                 f"{n} decoded frames of {w}x{h}")
    flat = latents.permute(0, 2, 1, 3, 4).reshape(-1, *latents.shape[1:2], *latents.shape[3:])
    out = []
    with torch.no_grad():
        for i in range(0, flat.shape[0], max(1, int(chunk))):
            poll(check)
            z = flat[i:i + chunk].to(param_device(vae), backbone.dtype) / vae.config.scaling_factor
            x = vae.decode(z).sample.float()
            out.append(((x + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1).cpu())
            report(callback, min(i + chunk, flat.shape[0]), flat.shape[0])
    return torch.cat(out)
