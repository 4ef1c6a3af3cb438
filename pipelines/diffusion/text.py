"""Text encoding: tokenizer padded to its max length (77 for CLIP) -> last hidden state."""
from __future__ import annotations

import torch

from ..errors import fail
from .backbone import param_device


def encode_text(backbone, prompts: str | list[str]) -> torch.Tensor:
    """Prompt(s) -> embeddings (B, 77, D) on the backbone's device and dtype (type FLIPBOOK_EMBEDS)."""
    if isinstance(prompts, str):
        prompts = [prompts]
    if not prompts or not all(isinstance(p, str) for p in prompts):
        fail("text", "a prompt string", repr(prompts)[:80])
    tok = backbone.tokenizer
    ids = tok(prompts, padding="max_length", max_length=tok.model_max_length, truncation=True,
              return_tensors="pt").input_ids.to(param_device(backbone.text_encoder))
    with torch.no_grad():
        return backbone.text_encoder(ids)[0].to(backbone.dtype)


def null_embeds(backbone) -> torch.Tensor:
    """The empty-prompt embedding P_null on the UNet's device (cached on the backbone per text-encoder
    device; FlipSketch's reference pass uses it)."""
    key = str(param_device(backbone.text_encoder))
    if key not in backbone._null_embeds:
        backbone._null_embeds[key] = encode_text(backbone, "")
    return backbone._null_embeds[key].to(backbone.device)
