"""PoseAnimate settings: frozen defaults that the nodes show and the pipeline uses (spec
flipsketch-poseanimate.md §2). *(inf)* marks our interpretation where the paper gives nothing."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..errors import check_range, fail

SLOTS = ("cond", "uncond")
MASK_MODES = ("multiply", "logit")
ALIGN_MODES = ("sequence", "per_frame")

# The names the shipped workflow loads (make-test-models writes tiny stand-ins under them): the Hugging
# Face repos stable-diffusion-v1-5 and lllyasviel/control_v11p_sd15_openpose cloned into ComfyUI's
# models/diffusers and models/controlnet folders (both diffusers layout).
SD_MODEL = "stable-diffusion-v1-5"
CONTROLNET_MODEL = "control_v11p_sd15_openpose"


@dataclass(frozen=True)
class PACM:
    """Pose-aware embedding optimisation (spec §2.2, PA:71-99, Alg. 1).

    guidance 7.5, 5 inner Adam iterations per step, MSE (PA:140). ``slot``: the CFG branch the
    optimised embedding fills, ``cond`` (PA:81, default) or ``uncond`` (PA:41, null-text's choice).
    *(inf)* learning rate ``lr * (1 - i / 100)`` at step index i and early stop once the loss is below
    ``early_stop + i * 2e-5`` (null-text inversion's schedule, spec §2.2); ``early_stop`` 0 = never.
    ``frame_chunk``: target poses optimised per batch (memory; the result does not change).
    ``stage2_iters``: inner iterations for the per-frame stage (Alg. 1 writes one step; 5 *(inf)*)."""
    guidance: float = 7.5
    inner_iters: int = 5
    stage2_iters: int = 5
    lr: float = 1e-2
    lr_decay: bool = True
    early_stop: float = 1e-5
    slot: str = "cond"
    frame_chunk: int = 4

    def __post_init__(self):
        if self.slot not in SLOTS:
            fail("slot", f"one of {SLOTS}", repr(self.slot))
        check_range("guidance", self.guidance, 0.0, 100.0)
        check_range("lr", self.lr, 0.0, 10.0)
        check_range("early_stop", self.early_stop, 0.0, 1.0)
        if int(self.inner_iters) < 0 or int(self.stage2_iters) < 0 or int(self.frame_chunk) < 1:
            fail("inner_iters/stage2_iters/frame_chunk", "integers >= 0, >= 0, >= 1",
                 f"{self.inner_iters}/{self.stage2_iters}/{self.frame_chunk}")

    def lr_at(self, step: int) -> float:
        return self.lr * max(0.0, 1 - step / 100) if self.lr_decay else self.lr

    def stop_at(self, step: int) -> float | None:
        return None if self.early_stop <= 0 else self.early_stop + step * 2e-5


@dataclass(frozen=True)
class PATA:
    """Pose alignment + transition (spec §2.5, all *(inf)*): total frames 16 including the source pose,
    t = 4 transition poses, one similarity from target frame 1 (``sequence``) or one per frame."""
    total_frames: int = 16
    transition: int = 4
    align_mode: str = "sequence"

    def __post_init__(self):
        if self.align_mode not in ALIGN_MODES:
            fail("align_mode", f"one of {ALIGN_MODES}", repr(self.align_mode))


@dataclass(frozen=True, eq=False)
class PoseAnimateAttention:
    """Dual consistency attention (DCAM, spec §2.3) + mask-guided decoupling (MGDM, §2.4) as a patch the
    model carries. lambdas (0.7, 0.15, 0.15) for frames 0, i-1, i (PA:113); frame 0 stays plain.
    ``source_mask`` [H, W] in 0..1 enables MGDM; frames i >= 1 take masks from the cross-attention
    maps of ``subject_word`` at the previous step (thresholded at ``threshold`` after a 3x3 max-pool
    and per-frame max normalisation, the P2P LocalBlend recipe *(inf)*), the source mask at the first
    step and without a word. ``mask_mode``: ``multiply`` K and V (Eq. 9, faithful) or a ``logit`` bias."""
    lambdas: tuple = (0.7, 0.15, 0.15)
    source_mask: torch.Tensor | None = field(default=None, repr=False)
    subject_word: str = ""
    threshold: float = 0.3
    mask_mode: str = "multiply"
    blocks: str = "up"

    def __post_init__(self):
        if len(self.lambdas) != 3:
            fail("lambdas", "three weights (frame 0, previous frame, own frame)", repr(self.lambdas))
        for i, lam in enumerate(self.lambdas):
            check_range(f"lambda{i + 1}", float(lam), 0.0, 1.0)
        if self.mask_mode not in MASK_MODES:
            fail("mask_mode", f"one of {MASK_MODES}", repr(self.mask_mode))
        if self.blocks not in ("up", "all"):
            fail("blocks", "'up' (the paper) or 'all'", repr(self.blocks))
        check_range("threshold", self.threshold, 0.0, 1.0)

    def bind(self, store):
        from .attention import DualAttentionPatch
        return DualAttentionPatch(self, store)


@dataclass(frozen=True)
class Sampling:
    """The sampler (spec §2.6): DDIM with the PACM's steps, w = 7.5, decode ``decode_chunk`` frames at a time."""
    guidance: float = 7.5
    decode_chunk: int = 8


PACM_DEFAULTS = PACM()
PATA_DEFAULTS = PATA()
SAMPLING = Sampling()
STEPS = 50           # DDIM T = 50 (PA:140)
