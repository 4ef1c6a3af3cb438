"""A memory budget: nodes estimate the bytes they will allocate *before* allocating, and refuse above
the budget with an error that names the input to lower (a 600-frame GIF at 512², an 8192² pose render
of many frames, a CPAB deform at the frames maximum), instead of failing in the allocator or swapping.

The budget is ``$FLIPBOOK_MEMORY_BUDGET_GB`` (GiB), default 8: a third of a 24 GB machine for one node's
outputs and working buffers, leaving the rest to ComfyUI, its models and the outputs it caches.
Estimates count the large buffers only (frames, grids, flows), not Python overhead.
"""
from __future__ import annotations

import math
import os

from .errors import FlipbookInputError

DEFAULT_GB = 8.0
ENV = "FLIPBOOK_MEMORY_BUDGET_GB"
GIB = 1024 ** 3


def budget_bytes() -> int:
    """The budget in bytes, from ``$FLIPBOOK_MEMORY_BUDGET_GB`` (a positive number of GiB) or the default."""
    raw = os.environ.get(ENV, "").strip()
    if not raw:
        return int(DEFAULT_GB * GIB)
    try:
        gb = float(raw)
    except ValueError:
        gb = float("nan")
    if not math.isfinite(gb) or gb <= 0:
        raise FlipbookInputError(f"{ENV}: expected a positive number of GiB, got {raw!r}")
    return int(gb * GIB)


def check(name: str, nbytes: float, what: str) -> int:
    """Raise FlipbookInputError when ``nbytes`` (the estimate for ``what``) exceeds the budget; the
    message names ``name``, the input(s) to lower. Returns the estimate."""
    limit = budget_bytes()
    if nbytes > limit:
        raise FlipbookInputError(
            f"{name}: expected settings that fit the memory budget of {limit / GIB:.1f} GiB "
            f"(${ENV}), got {what} needing about {nbytes / GIB:.1f} GiB")
    return int(nbytes)


def frames_bytes(frames: int, height: int, width: int, channels: int = 3, itemsize: int = 4) -> int:
    """Bytes of an IMAGE-like [frames, height, width, channels] float32 buffer."""
    return int(frames) * int(height) * int(width) * int(channels) * int(itemsize)
