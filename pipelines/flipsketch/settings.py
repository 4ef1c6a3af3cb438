"""FlipSketch settings: the frozen defaults that the nodes show and the pipeline uses (spec
flipsketch-poseanimate.md §1.1 "Defaults as run", §1.3-§1.4)."""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import check_range, fail
from .attention import FlipSketchPatch

COPIES = ("shrinking", "all", "one")
REFERENCES = ("copies", "single")

# The folder a FlipSketch user has: the Hugging Face repo Hmrishav/t2v_sketch-lora cloned into
# ComfyUI's models/diffusers, whose checkpoint-2500/ is a full diffusers text-to-video folder (spec §1.1).
FLIPSKETCH_MODEL = "t2v_sketch-lora/checkpoint-2500"


@dataclass(frozen=True)
class FlipSketchAttention:
    """Dual attention composition settings (type FLIPBOOK_ATTN_PATCH; a FLIPBOOK_T2V can carry it).

    lam: temporal weight of the reference key, column 0 scaled by (1 + lam * j / 50) for query frame
      j (official code; the paper writes 1 + lam * 2e-2). The app's "motion" slider m gives lam = 1 - m
      (spec §1.1: slider 0.5 -> lam 0.5).
    tau2: the composition runs for step indices i <= tau2 (official TAU_2 = 15 of 25, spec §1.1).
    copies: how many leading frames take the reference queries: ``shrinking`` max(1, M - i)
      (official), ``all`` M, ``one`` 1.
    reference: ``copies`` denoises N copies of x_T^r as an N-frame clip (official code);
      ``single`` denoises x_T^r as one frame and repeats its queries (the paper's wording; N-fold
      cheaper, equal to ``copies`` only when the backbone keeps identical frames identical).
    """
    lam: float = 0.5
    tau2: int = 15
    copies: str = "shrinking"
    spatial: bool = True
    temporal: bool = True
    reference: str = "copies"

    def __post_init__(self):
        check_range("lambda", float(self.lam), 0.0, 10.0)
        if self.copies not in COPIES:
            fail("copies", f"one of {COPIES}", repr(self.copies))
        if self.reference not in REFERENCES:
            fail("reference", f"one of {REFERENCES}", repr(self.reference))

    def n_copies(self, step: int, frames: int) -> int:
        if self.copies == "all":
            return frames
        if self.copies == "one":
            return 1
        return max(1, frames - step)

    def bind(self, store):
        """The installer for one run, sharing ``store`` (an attention ReferenceStore) with the sampler."""
        return FlipSketchPatch(self, store)


@dataclass(frozen=True)
class FrameAlign:
    """Iterative frame alignment (paper §4.2; spec §1.3): for step indices i < tau1, Adam on the
    noise of frames 1..M-1 so that the joint (prompted) prediction for frame 0 matches the reference's
    null-prompt prediction. Official TAU_1 = 10, 10 iterations, lr 1e-3 (spec §1.3).
    ``official_quirks``: return the latents before the last update, as the official code does.
    ``chunk``: samples per backward pass (bounds activation memory; exact)."""
    enabled: bool = True
    tau1: int = 10
    iters: int = 10
    lr: float = 1e-3
    official_quirks: bool = True
    chunk: int = 1

    def __post_init__(self):
        for name, value, lo in (("tau1", self.tau1, 0), ("iterations", self.iters, 0), ("chunk", self.chunk, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < lo:
                fail(name, f"an integer >= {lo}", repr(value))
        check_range("lr", float(self.lr), 0.0, 1.0)


@dataclass(frozen=True)
class Sampling:
    """The sampler's defaults, as the app runs it (spec §1.1): 10 frames, 25 DDIM steps, guidance 9,
    seeds 0..n-1 (one animation per seed)."""
    frames: int = 10
    steps: int = 25
    guidance: float = 9.0
    seeds: int = 1
    seed: int = 0


SAMPLING = Sampling()
