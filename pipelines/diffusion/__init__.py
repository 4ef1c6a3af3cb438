"""Shared diffusion building blocks: backbones, text encoding, DDIM steps and inversion, attention
patches, VAE encode/decode. FlipSketch uses them today; PoseAnimate and FlexiClip's video SDS next
(spec flipsketch-poseanimate.md §3, "Shared internals")."""
