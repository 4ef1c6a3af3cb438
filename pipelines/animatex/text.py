"""zero_y: the text tokens of the empty prompt that Animate-X always uses (spec §1.2, "Text").

The release encodes "" with OpenCLIP ViT-H-14's text tower: token embedding + positions, causal
transformer up to the penultimate block, then ``ln_final``: (1, 77, 1024). The released files
include that tower (``open_clip_pytorch_model.bin``), so this module runs it directly in plain
torch from the state dict (read with weights_only=True). The empty prompt needs no tokenizer:
[start-of-text, end-of-text, 0, 0, ...] (open_clip pads with 0).
"""
from __future__ import annotations

import os
from functools import lru_cache

import torch
import torch.nn.functional as F

from ..errors import FlipbookInputError

SOT, EOT = 49406, 49407
HEAD_WIDTH = 64          # OpenCLIP text towers use 64-wide heads (ViT-H-14: 1024 / 16)


def _tower(sd: dict[str, torch.Tensor]) -> tuple[str, int]:
    for prefix in ("", "text.", "model."):
        if f"{prefix}token_embedding.weight" in sd:
            n = 0
            while f"{prefix}transformer.resblocks.{n}.ln_1.weight" in sd:
                n += 1
            if n:
                return prefix, n
    raise FlipbookInputError("text_encoder: not an OpenCLIP model (no token_embedding / transformer.resblocks); "
                             "expected open_clip_pytorch_model.bin of CLIP-ViT-H-14")


@torch.no_grad()
def empty_prompt_tokens(sd: dict[str, torch.Tensor], *, penultimate: bool = True) -> torch.Tensor:
    """(1, context, width) float32 text tokens of "" from an OpenCLIP state dict."""
    p, layers = _tower(sd)
    emb = sd[f"{p}token_embedding.weight"].float()
    pos = sd[f"{p}positional_embedding"].float()
    n, width = pos.shape
    heads = max(width // HEAD_WIDTH, 1)
    tokens = torch.zeros(n, dtype=torch.long)
    tokens[0], tokens[1] = SOT, EOT
    x = (emb[tokens] + pos)[None]
    mask = torch.full((n, n), float("-inf")).triu(1)
    for i in range(layers - 1 if penultimate else layers):
        q = f"{p}transformer.resblocks.{i}."
        h = F.layer_norm(x, (width,), sd[q + "ln_1.weight"].float(), sd[q + "ln_1.bias"].float())
        qkv = F.linear(h, sd[q + "attn.in_proj_weight"].float(), sd[q + "attn.in_proj_bias"].float())
        qh, kh, vh = (t.reshape(1, n, heads, -1).transpose(1, 2) for t in qkv.chunk(3, -1))
        a = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask).transpose(1, 2).reshape(1, n, width)
        x = x + F.linear(a, sd[q + "attn.out_proj.weight"].float(), sd[q + "attn.out_proj.bias"].float())
        h = F.layer_norm(x, (width,), sd[q + "ln_2.weight"].float(), sd[q + "ln_2.bias"].float())
        h = F.gelu(F.linear(h, sd[q + "mlp.c_fc.weight"].float(), sd[q + "mlp.c_fc.bias"].float()))
        x = x + F.linear(h, sd[q + "mlp.c_proj.weight"].float(), sd[q + "mlp.c_proj.bias"].float())
    return F.layer_norm(x, (width,), sd[f"{p}ln_final.weight"].float(), sd[f"{p}ln_final.bias"].float())


@lru_cache(maxsize=4)
def _zero_y_cached(path: str, mtime: float) -> torch.Tensor:
    if path.lower().endswith(".safetensors"):
        from safetensors.torch import load_file
        sd = load_file(path)
    else:
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as exc:
            raise FlipbookInputError(f"text_encoder: {os.path.basename(path)} could not be read with "
                                     f"torch.load(weights_only=True): {exc}") from exc
    if isinstance(sd, dict) and "state_dict" in sd:
        sd = sd["state_dict"]
    return empty_prompt_tokens(sd)


def zero_y_from_file(path: str) -> torch.Tensor:
    """zero_y of an OpenCLIP checkpoint file, computed once per file version."""
    return _zero_y_cached(os.path.realpath(path), os.path.getmtime(path)).clone()
