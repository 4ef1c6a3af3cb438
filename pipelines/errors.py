"""One error type for bad input, and the small checks every entry point runs first.

Messages name the input and say what was expected, so that a ComfyUI user can fix the wiring
without reading a traceback (DESIGN.md, "Bad input").
"""
from __future__ import annotations

import contextlib
import math
import os

import torch


class FlipbookInputError(ValueError):
    """An input that does not fit: the message names the input and what was expected."""


def fail(name: str, expected: str, got: str | None = None) -> None:
    msg = f"{name}: expected {expected}"
    if got is not None:
        msg += f", got {got}"
    raise FlipbookInputError(msg)


def describe(x) -> str:
    if isinstance(x, torch.Tensor):
        return f"tensor of shape {tuple(x.shape)} ({x.dtype})"
    return f"{type(x).__name__} {x!r}"[:200]


def check_finite(name: str, x: torch.Tensor) -> torch.Tensor:
    if not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).sum())
        fail(name, "finite values", f"{bad} NaN/inf entries")
    return x


def check_image(name: str, image, *, channels: tuple[int, ...] = (3, 4)) -> torch.Tensor:
    """ComfyUI IMAGE: [F,H,W,C] float in 0..1 (a single [H,W,C] picture is accepted too)."""
    if not isinstance(image, torch.Tensor):
        fail(name, "an IMAGE tensor [frames, height, width, 3]", describe(image))
    if image.dim() == 3:
        image = image[None]
    if image.dim() != 4 or image.shape[-1] not in channels or image.shape[1] < 2 or image.shape[2] < 2:
        fail(name, f"an IMAGE tensor [frames, height, width, {'/'.join(map(str, channels))}]",
             describe(image))
    if image.shape[0] == 0:
        fail(name, "at least one frame", "an empty batch")
    if not image.is_floating_point():
        fail(name, "a float IMAGE with values in 0..1", describe(image))
    return check_finite(name, image)


def check_mask(name: str, mask) -> torch.Tensor:
    """ComfyUI MASK: [F,H,W] (or [H,W]) float in 0..1."""
    if not isinstance(mask, torch.Tensor):
        fail(name, "a MASK tensor [frames, height, width]", describe(mask))
    if mask.dim() == 2:
        mask = mask[None]
    if mask.dim() == 4 and mask.shape[-1] == 1:
        mask = mask[..., 0]
    if mask.dim() != 3 or mask.shape[0] == 0:
        fail(name, "a MASK tensor [frames, height, width]", describe(mask))
    return check_finite(name, mask.float())


def check_points(name: str, pts, *, min_count: int = 1, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Points [K,2] in pixels (x, y). With size=(H, W), every point must lie on the canvas."""
    if not isinstance(pts, torch.Tensor):
        pts = torch.as_tensor(pts, dtype=torch.float32)
    if pts.dim() != 2 or pts.shape[-1] != 2:
        fail(name, "a list of [x, y] points", describe(pts))
    if pts.shape[0] < min_count:
        fail(name, f"at least {min_count} points", f"{pts.shape[0]}")
    check_finite(name, pts)
    if size is not None:
        h, w = size
        out = (pts[:, 0] < 0) | (pts[:, 0] > w - 1) | (pts[:, 1] < 0) | (pts[:, 1] > h - 1)
        if out.any():
            i = int(out.nonzero()[0])
            x, y = pts[i].tolist()
            fail(name, f"points inside the {w}x{h} image",
                 f"point {i} at ({x:.1f}, {y:.1f}) ({int(out.sum())} outside)")
    return pts


@contextlib.contextmanager
def reading(name: str, path: str, expected: str):
    """``with reading("unet_name", path, "an Animate-X checkpoint"):`` around the code that reads a user's
    file: a file of the wrong kind or a damaged one (a bad safetensors header, a pickle, a truncated
    archive) fails as one FlipbookInputError naming the input, not as the reader's own exception."""
    try:
        yield
    except FlipbookInputError:
        raise
    except Exception as exc:  # any reader's error: the file is not what the input takes
        raise FlipbookInputError(f"{name}: expected {expected}, got {os.path.basename(str(path))!r}, which could "
                                 f"not be read ({type(exc).__name__}: {str(exc)[:160]})") from None


def check_range(name: str, value: float, lo: float = -math.inf, hi: float = math.inf) -> float:
    if not (lo <= value <= hi) or value != value:
        fail(name, f"a value in [{lo}, {hi}]", f"{value}")
    return value
