"""Random stand-ins for the files workflows/animatex.json loads, in the formats ComfyUI's loaders read
(``python -m comfyui_flipbook make-test-models MODELS_DIR``):

- animatex/animate-x_ckpt.pth: the tiny Animate-X config (spec §3.3, CLIP width 768 to match the
  CLIP vision below), a plain tensor .pth (weights_only-loadable) carrying its config;
- animatex/open_clip_pytorch_model.bin: a 2-layer OpenCLIP text tower of width 64 (for zero_y);
- clip_vision/CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors: ComfyUI's CLIPVisionLoader picks its
  architecture from a fixed table by layer count (comfy/clip_vision.py: >= 23 layers, ViT-L/14 at
  1024 wide being the smallest entry) and builds it at full size; missing weights stay uninitialised.
  So no tiny CLIP vision file can load: this is a random ViT-L/14 (303M parameters), the smallest
  that does, with its matrices stored in float8 (0.3 GB; ComfyUI casts them to its own dtype on
  load). Its 768-d embeddings feed the tiny UNet.
- vae/vae-ft-mse-840000-ema-pruned.safetensors: ComfyUI builds SD's KL-f8 VAE at full size from
  any such file, so the stand-in uses the other SD-latent VAE ComfyUI detects by its keys, TAESD
  (taesd_encoder.* / taesd_decoder.*, 2.4M parameters), with vae_scale = 0.18215 so that it decodes
  raw SD latents like VAEDecode's KL-f8 VAE does.
All weights are random: the point is that the shipped workflow runs unchanged through the real loaders.
"""
from __future__ import annotations

import os
from dataclasses import replace

import torch

from .settings import RELEASED_CHECKPOINT, TINY
from .unet import build_unet
from .weights import save_unet

CLIP_VISION_NAME = "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors"
VAE_NAME = "vae-ft-mse-840000-ema-pruned.safetensors"
TEXT_ENCODER_NAME = "open_clip_pytorch_model.bin"
VITL = dict(width=1024, layers=24, mlp=4096, patch=14, tokens=257, proj=768)
TINY_WORKFLOW = replace(TINY, clip_dim=VITL["proj"])


def _rand(g, *shape, std=0.02):
    return (torch.randn(*shape, generator=g) * std).half()


def _norm(sd, key, n):
    sd[key + ".weight"] = torch.ones(n, dtype=torch.float16)
    sd[key + ".bias"] = torch.zeros(n, dtype=torch.float16)


def openclip_text_state(width: int = 64, layers: int = 2, context: int = 77, vocab: int = 49408, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    sd = {"token_embedding.weight": _rand(g, vocab, width), "positional_embedding": _rand(g, context, width, std=0.01)}
    for i in range(layers):
        q = f"transformer.resblocks.{i}."
        _norm(sd, q + "ln_1", width)
        _norm(sd, q + "ln_2", width)
        sd[q + "attn.in_proj_weight"] = _rand(g, 3 * width, width)
        sd[q + "attn.in_proj_bias"] = torch.zeros(3 * width, dtype=torch.float16)
        sd[q + "attn.out_proj.weight"] = _rand(g, width, width)
        sd[q + "attn.out_proj.bias"] = torch.zeros(width, dtype=torch.float16)
        sd[q + "mlp.c_fc.weight"] = _rand(g, 4 * width, width)
        sd[q + "mlp.c_fc.bias"] = torch.zeros(4 * width, dtype=torch.float16)
        sd[q + "mlp.c_proj.weight"] = _rand(g, width, 4 * width)
        sd[q + "mlp.c_proj.bias"] = torch.zeros(width, dtype=torch.float16)
    _norm(sd, "ln_final", width)
    return sd


def clip_vision_vitl_state(seed: int = 0) -> dict:
    """HF/ComfyUI CLIPVisionModelProjection keys of a ViT-L/14 (224 px)."""
    g = torch.Generator().manual_seed(seed)
    w, p = VITL["width"], "vision_model."
    sd = {p + "embeddings.class_embedding": _rand(g, w),
          p + "embeddings.patch_embedding.weight": _rand(g, w, 3, VITL["patch"], VITL["patch"]),
          p + "embeddings.position_embedding.weight": _rand(g, VITL["tokens"], w)}
    _norm(sd, p + "pre_layrnorm", w)
    for i in range(VITL["layers"]):
        q = f"{p}encoder.layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            sd[q + f"self_attn.{proj}.weight"] = _rand(g, w, w)
            sd[q + f"self_attn.{proj}.bias"] = torch.zeros(w, dtype=torch.float16)
        _norm(sd, q + "layer_norm1", w)
        _norm(sd, q + "layer_norm2", w)
        sd[q + "mlp.fc1.weight"] = _rand(g, VITL["mlp"], w)
        sd[q + "mlp.fc1.bias"] = torch.zeros(VITL["mlp"], dtype=torch.float16)
        sd[q + "mlp.fc2.weight"] = _rand(g, w, VITL["mlp"])
        sd[q + "mlp.fc2.bias"] = torch.zeros(w, dtype=torch.float16)
    _norm(sd, p + "post_layernorm", w)
    sd["visual_projection.weight"] = _rand(g, VITL["proj"], w)
    return sd


def taesd_state(seed: int = 0, latent_channels: int = 4, scale: float = 0.18215) -> dict:
    """ComfyUI's TAESD layout (comfy/taesd/taesd.py): 3x3 convs of width 64, blocks of three convs."""
    g = torch.Generator().manual_seed(seed)
    sd = {}

    def conv(key, cin, cout, bias=True):
        sd[key + ".weight"] = _rand(g, cout, cin, 3, 3, std=(2.0 / (9 * cin)) ** 0.5)
        if bias:
            sd[key + ".bias"] = torch.zeros(cout, dtype=torch.float16)

    def block(key):
        for j in (0, 2, 4):
            conv(f"{key}.conv.{j}", 64, 64)

    e = "taesd_encoder"
    conv(f"{e}.0", 3, 64)
    for i in (1, 3, 4, 5, 7, 8, 9, 11, 12, 13):
        block(f"{e}.{i}")
    for i in (2, 6, 10):
        conv(f"{e}.{i}", 64, 64, bias=False)
    conv(f"{e}.14", 64, latent_channels)
    d = "taesd_decoder"
    conv(f"{d}.1", latent_channels, 64)
    for i in (3, 4, 5, 8, 9, 10, 13, 14, 15, 18):
        block(f"{d}.{i}")
    for i in (7, 12, 17):
        conv(f"{d}.{i}", 64, 64, bias=False)
    conv(f"{d}.19", 64, 3)
    sd["vae_scale"] = torch.tensor(scale)
    sd["vae_shift"] = torch.tensor(0.0)
    return sd


def write_test_models(models_dir: str) -> list[str]:
    from safetensors.torch import save_file

    out = []
    torch.manual_seed(0)
    unet = build_unet(TINY_WORKFLOW)
    out.append(save_unet(unet, os.path.join(models_dir, "animatex", RELEASED_CHECKPOINT)))
    te = os.path.join(models_dir, "animatex", TEXT_ENCODER_NAME)
    torch.save(openclip_text_state(width=TINY_WORKFLOW.context_dim), te)
    out.append(te)
    clip = {k: (v.to(torch.float8_e4m3fn) if v.dim() >= 2 else v) for k, v in clip_vision_vitl_state().items()}
    for sub, name, sd in (("clip_vision", CLIP_VISION_NAME, clip), ("vae", VAE_NAME, taesd_state())):
        path = os.path.join(models_dir, sub, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        save_file(sd, path)
        out.append(path)
    return out
