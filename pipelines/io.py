"""Pictures in and animations out, for the command line and the tests (ComfyUI has its own)."""
from __future__ import annotations

import os

import numpy as np
import torch

from . import budget
from .errors import FlipbookInputError, check_image


def load_rgba(path: str) -> torch.Tensor:
    """An image file as [H, W, 4] float in 0..1 (opaque alpha when the file has none)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGBA"), dtype=np.float32) / 255.0
    except (FileNotFoundError, UnidentifiedImageError, OSError) as exc:
        raise FlipbookInputError(f"image: expected a readable picture file, got {path!r} ({exc})") from None
    return torch.from_numpy(arr.copy())


def load_frames(path: str, *, max_frames: int = 0, every_nth: int = 1, check=None) -> torch.Tensor:
    """Every frame of an animated WebP/GIF/PNG (or one still picture) as IMAGE [F, H, W, 3] in 0..1,
    at most ``max_frames`` (0: all, within the memory budget). ``check()`` runs before every frame (cancel)."""
    from PIL import Image, ImageSequence, UnidentifiedImageError

    if isinstance(every_nth, bool) or not isinstance(every_nth, int) or every_nth < 1:
        raise FlipbookInputError(f"every_nth: expected an integer >= 1, got {every_nth!r}")
    if isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 0:
        raise FlipbookInputError(f"max_frames: expected an integer >= 0 (0: all), got {max_frames!r}")
    out = []
    try:
        with Image.open(path) as im:
            n = -(-int(getattr(im, "n_frames", 1)) // every_nth)
            n = min(n, max_frames) if max_frames else n
            budget.check("max_frames", budget.frames_bytes(n, im.size[1], im.size[0]),
                         f"{n} frames of {im.size[0]}x{im.size[1]}")
            for i, fr in enumerate(ImageSequence.Iterator(im)):
                if check is not None:
                    check()
                if i % every_nth:
                    continue
                out.append(torch.from_numpy(np.asarray(fr.convert("RGB"), dtype=np.float32) / 255.0))
                if max_frames and len(out) >= max_frames:
                    break
    except (FileNotFoundError, UnidentifiedImageError, OSError) as exc:
        raise FlipbookInputError(f"file: expected an image or animation, got {os.path.basename(path)!r}: {exc}") from None
    return torch.stack(out)


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    return (frames.detach().float().clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()


def save_animation(frames: torch.Tensor, path: str, fps: float = 12.0, *, quality: int = 90) -> str:
    """Write IMAGE frames [T, H, W, 3] as an animated .webp or .gif (looping)."""
    from PIL import Image

    frames = check_image("frames", frames, channels=(3,))
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".webp", ".gif"):
        raise FlipbookInputError(f"out: expected a .webp or .gif file name, got {path!r}")
    ims = [Image.fromarray(f) for f in to_uint8(frames)]
    duration = int(round(1000 / max(fps, 0.1)))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".part" + ext
    if ext == ".gif":
        ims = [im.convert("P", palette=Image.Palette.ADAPTIVE, colors=255) for im in ims]
        ims[0].save(tmp, save_all=True, append_images=ims[1:], duration=duration, loop=0, disposal=2)
    else:
        ims[0].save(tmp, save_all=True, append_images=ims[1:], duration=duration, loop=0, quality=quality,
                    method=4)
    os.replace(tmp, path)                 # nothing half-written under the real name
    return path
