"""Shared diffusion building blocks: backbones (which carry their attention patches), text encoding, VAE
encode/decode, the DDIM step arithmetic (scheduler.py), the one sampling loop with its denoiser
convention, guidance, starting noise and score distillation (sampler.py), inversion, name-keyed attention
patches. FlipSketch and Animate-X use them today; PoseAnimate (a UNet2D + ControlNet denoiser) and
FlexiClip's video SDS next (spec flipsketch-poseanimate.md §3, "Shared internals")."""
