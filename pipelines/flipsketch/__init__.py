"""FlipSketch (CVPR 2025): a sketch + a motion prompt -> a sketch animation. Spec:
shared/specs/flipsketch-poseanimate.md §1. pipeline.py composes the shared diffusion core (inversion,
the one DDIM loop, attention patches); attention.py is the composition processor; settings.py holds
the defaults the nodes use; testmodels.py writes the tiny stand-in the shipped workflow loads."""
from .pipeline import align_frames, binarise_sketch, flipsketch_sample
from .settings import COPIES, FLIPSKETCH_MODEL, REFERENCES, SAMPLING, FlipSketchAttention, FrameAlign, Sampling
from .testmodels import write_test_models

__all__ = ["COPIES", "FLIPSKETCH_MODEL", "REFERENCES", "SAMPLING", "FlipSketchAttention", "FrameAlign", "Sampling",
           "align_frames", "binarise_sketch", "flipsketch_sample", "write_test_models"]
