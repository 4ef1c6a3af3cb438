"""Precision: one name -> torch dtype rule for every model the pack loads."""
from __future__ import annotations

import torch

from .errors import fail

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_dtype(name: str | torch.dtype, device: torch.device | str, *, half: str = "bf16") -> torch.dtype:
    """``auto`` is fp32 on a CPU and the model's preferred half precision on a GPU: ``half="bf16"``
    (FlipSketch ran in bf16) falls back to fp16 where bf16 is unsupported; ``half="fp16"`` (Animate-X
    was released for fp16) is fp16. Other names map directly.

    >>> resolve_dtype("auto", "cpu"), resolve_dtype("fp16", "cpu")
    (torch.float32, torch.float16)
    """
    if isinstance(name, torch.dtype):
        return name
    if name == "auto":
        if torch.device(device).type != "cuda":
            return torch.float32
        if half == "bf16" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float16
    if name not in DTYPES:
        fail("dtype", f"one of auto/{'/'.join(DTYPES)}", repr(name))
    return DTYPES[name]
