"""Animate-X settings: network sizes (the released checkpoint's and a tiny one for CPU tests, spec §1.1,
§3.3), the release's noise schedule and the sampler's defaults, which the nodes use.

The released yaml merges ``attn_scales: [1, 1/2, 1/4]`` over the class default (spec finding 1), so
attention sits at the three finest levels, as in SD 2. The pixel size is a parameter (finding 6):
the pose and local-image encoders pool to half the pixel size at run time.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

# The file name the released weights carry on the model page and in the official config.
RELEASED_CHECKPOINT = "animate-x_ckpt.pth"


@dataclass(frozen=True)
class AnimateXConfig:
    # 3D UNet (UniAnimate backbone)
    dim: int = 320
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    head_dim: int = 64
    num_heads: int = 8                     # heads of the first temporal transformer only
    attn_scales: tuple[float, ...] = (1.0, 0.5, 0.25)
    in_dim: int = 4
    out_dim: int = 4
    concat_dim: int = 8
    context_dim: int = 1024
    num_tokens: int = 4                    # CLIP image tokens appended to zero_y
    text_tokens: int = 77                  # length of zero_y
    clip_dim: int = 1024                   # CLIP image embedding width (ViT-H-14: 1024)
    pose_points: int = 18                  # OpenPose-18 body (no_hand)
    # implicit pose indicator: DwposeEncoder (pose transformer) ...
    ipi_dim: int = 1024
    ipi_heads: int = 8
    ipi_layers: int = 3
    ipi_ff: int = 1024
    # ... and Resampler (Perceiver)
    resampler_depth: int = 8
    resampler_heads: int = 16
    resampler_dim_head: int = 64
    resampler_ff_mult: int = 4
    # data
    max_frames: int = 32
    width: int = 512
    height: int = 768
    vae_scale: float = 0.18215

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "AnimateXConfig":
        d = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**d)


FULL = AnimateXConfig()

# Spec §3.3: 2.45M parameters, every width a multiple of 32 (GroupNorm(32)); 64x64 pixels, 4 frames.
TINY = AnimateXConfig(
    dim=32, dim_mult=(1, 2), num_res_blocks=1, head_dim=16, num_heads=2, attn_scales=(1.0, 0.5),
    context_dim=64, text_tokens=8, clip_dim=32,
    ipi_dim=64, ipi_heads=2, ipi_layers=1, ipi_ff=64,
    resampler_depth=1, resampler_heads=2, resampler_dim_head=32,
    max_frames=4, width=64, height=64,
)

CONFIGS = {"full": FULL, "tiny": TINY}


# The release's noise schedule (spec §1.1 "Diffusion", §1.5): DiffusionDDIM with `linear_sd` betas
# 0.00085 -> 0.012 linear in √β over 1000 steps, rescaled to zero terminal SNR, v-prediction; DDIM over
# 1 + k * (1000 // steps) (finding 7), the previous level clamped at t = 0.
NUM_TIMESTEPS = 1000
BETA_START, BETA_END = 0.00085, 0.012
# The same schedule as a diffusers scheduler config (what a ComfyUI MODEL wrapper would declare). diffusers
# builds its table in float32, 4e-5 (relative) off the release's float64 one at some levels, so the
# sampler uses :func:`alphas_cumprod` (tests/test_animatex_sampler.py holds the two side by side).
SCHEDULER = dict(num_train_timesteps=NUM_TIMESTEPS, beta_start=BETA_START, beta_end=BETA_END,
                 beta_schedule="scaled_linear", rescale_betas_zero_snr=True, prediction_type="v_prediction",
                 set_alpha_to_one=False, clip_sample=False)


def alphas_cumprod(zero_terminal_snr: bool = True) -> torch.Tensor:
    """ᾱ_t (float64, as the release's schedules.py computes it) of ``linear_sd``, rescaled to zero
    terminal SNR (Lin et al. 2024: shift √ᾱ so the last is 0, scale so the first is unchanged)."""
    betas = torch.linspace(BETA_START ** 0.5, BETA_END ** 0.5, NUM_TIMESTEPS, dtype=torch.float64) ** 2
    ac = torch.cumprod(1 - betas, 0)
    if zero_terminal_snr:
        s = ac.sqrt()
        s0, s_t = s[0].clone(), s[-1].clone()
        s = (s - s_t) * s0 / (s0 - s_t)
        ac = s ** 2
    return ac


@dataclass(frozen=True)
class Sampling:
    """The sampler's defaults, as released (spec §1.1, §1.5): seed 13, "30" DDIM steps (31 levels),
    guidance 2.5, eta 0, offset noise 0.1; context windows of 32 frames (the training length) with
    overlap 8 for longer sequences (spec §1.6, ours); both guidance branches in one batch."""
    seed: int = 13
    steps: int = 30
    guidance: float = 2.5
    eta: float = 0.0
    noise_offset: float = 0.1
    reference_mode: str = "local_image"
    context_frames: int = 32
    context_overlap: int = 8
    batch_cfg: bool = True


SAMPLING = Sampling()
