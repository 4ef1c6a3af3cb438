"""Training data (spec cpab.md §2.5): the FOMM/TPSMM layouts, ``num_repeats``, the releases'
augmentations, and per-sample seeds so that any split of a batch draws the same numbers.

A dataset root holds one entry per video (or ``train/`` and ``test/`` folders of them):
a folder of frames, an .mp4/.mov/.webm (PyAV, else imageio: optional), a .gif/.webp, or a .png/.jpg
strip of frames side by side (square frames unless ``frame_shape`` says otherwise). Videos are decoded
one at a time and only the two frames an item needs are kept; nothing holds the dataset in memory.
"""
from __future__ import annotations

import os
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import FlipbookInputError, fail

VIDEO_EXT = (".mp4", ".mov", ".webm", ".avi", ".mkv")
ANIM_EXT = (".gif", ".webp")
STRIP_EXT = (".png", ".jpg", ".jpeg")
FRAME_EXT = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def _err(path, why):
    return FlipbookInputError(f"data: expected a readable video (frames folder, .mp4, .gif, .png strip), "
                              f"got {os.path.basename(str(path))!r}: {why}")


def _to_tensor(arr) -> torch.Tensor:
    a = np.asarray(arr)
    if a.ndim == 2:
        a = np.stack([a] * 3, -1)
    a = a[..., :3]
    t = torch.from_numpy(a.astype(np.float32) / (255.0 if a.dtype == np.uint8 else (65535.0 if a.dtype == np.uint16 else 1.0)))
    return t.permute(2, 0, 1).contiguous()


def _pil_frames(path, wanted=None):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            n = getattr(im, "n_frames", 1)
            if wanted is None:
                return n
            out = {}
            for i in sorted(set(wanted)):
                im.seek(min(i, n - 1))
                out[i] = _to_tensor(np.asarray(im.convert("RGB")))
            return [out[i] for i in wanted]
    except (FileNotFoundError, UnidentifiedImageError, OSError, EOFError) as exc:
        raise _err(path, exc) from None


def _video_frames(path, wanted=None):
    """Frame count (wanted None) or the wanted frames of a video file, decoding sequentially."""
    try:
        import av
    except ImportError:
        av = None
    if av is not None:
        try:
            with av.open(path) as c:
                if wanted is None:
                    n = c.streams.video[0].frames
                    return n if n > 0 else sum(1 for _ in c.decode(video=0))
                need, out = set(wanted), {}
                for i, fr in enumerate(c.decode(video=0)):
                    if i in need:
                        out[i] = _to_tensor(fr.to_ndarray(format="rgb24"))
                    if len(out) == len(need):
                        break
        except Exception as exc:          # noqa: BLE001 (PyAV raises many types)
            raise _err(path, exc) from None
    else:
        try:
            import imageio.v3 as iio
        except ImportError:
            raise _err(path, "reading videos needs the optional package av (PyAV) or imageio with a video "
                             "plugin: pip install av") from None
        try:
            if wanted is None:
                return sum(1 for _ in iio.imiter(path))
            need, out = set(wanted), {}
            for i, fr in enumerate(iio.imiter(path)):
                if i in need:
                    out[i] = _to_tensor(fr)
                if len(out) == len(need):
                    break
        except Exception as exc:          # noqa: BLE001
            raise _err(path, exc) from None
    if len(out) < len(set(wanted)):
        raise _err(path, "fewer frames than its header says")
    return [out[i] for i in wanted]


class Video:
    """One video entry; ``len`` and ``frames(indices)`` without decoding more than needed."""

    def __init__(self, path: str, frame_shape=None):
        self.path, self.frame_shape = path, frame_shape
        low = path.lower()
        if os.path.isdir(path):
            self.kind = "dir"
            self.files = sorted(f for f in os.listdir(path) if f.lower().endswith(FRAME_EXT))
        elif low.endswith(VIDEO_EXT):
            self.kind = "video"
        elif low.endswith(ANIM_EXT):
            self.kind = "anim"
        elif low.endswith(STRIP_EXT):
            self.kind = "strip"
        else:
            raise _err(path, "unknown file type")
        self._n = None

    def __len__(self):
        if self._n is None:
            if self.kind == "dir":
                self._n = len(self.files)
            else:
                try:
                    mtime = os.path.getmtime(self.path)
                except OSError as exc:
                    raise _err(self.path, exc) from None
                self._n = _count(self.path, self.kind, tuple(self.frame_shape or ()), mtime)
            if self._n < 1:
                raise _err(self.path, "no frames")
        return self._n

    def count(self) -> int:
        """Frames in the file, read from it (``len`` remembers this per file)."""
        if self.kind == "video":
            return _video_frames(self.path)
        if self.kind == "anim":
            return _pil_frames(self.path)
        from PIL import Image

        try:
            with Image.open(self.path) as im:
                w, h = im.size
        except OSError as exc:
            raise _err(self.path, exc) from None
        fw = self.frame_shape[1] if self.frame_shape else h
        if w % fw:
            raise _err(self.path, f"a strip {w} px wide is no whole number of {fw}-px frames")
        return w // fw

    def frames(self, idx) -> list[torch.Tensor]:
        if self.kind == "dir":
            return [_pil_frames(os.path.join(self.path, self.files[i]), [0])[0] for i in idx]
        if self.kind == "video":
            return _video_frames(self.path, list(idx))
        if self.kind == "anim":
            return _pil_frames(self.path, list(idx))
        strip = _pil_frames(self.path, [0])[0]
        fw = strip.shape[2] // len(self)
        return [strip[:, :, i * fw:(i + 1) * fw] for i in idx]


@lru_cache(maxsize=4096)
def _count(path: str, kind: str, frame_shape: tuple, mtime: float) -> int:
    """Frame count of a video file, remembered per (path, mtime): a container without a frame count
    is decoded once, not at every item."""
    return Video(path, frame_shape or None).count()


def _resize(t, shape):
    if shape is None or tuple(t.shape[1:]) == tuple(shape[:2]):
        return t
    return F.interpolate(t[None], size=tuple(shape[:2]), mode="bilinear", align_corners=False, antialias=True)[0]


# --- augmentations (FOMM's AllAugmentationTransform, re-done in torch with a per-sample generator) -

def _gray(x):
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


def _hue(x, shift):
    """Rotate the hue of RGB [n,3,h,w] by ``shift`` (fraction of a turn), as HSV does."""
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    mx, mn = x.max(1).values, x.min(1).values
    d = mx - mn
    safe = torch.where(d > 0, d, torch.ones_like(d))
    h = torch.where(mx == r, ((g - b) / safe) % 6, torch.where(mx == g, (b - r) / safe + 2, (r - g) / safe + 4)) / 6
    h = torch.where(d > 0, h, torch.zeros_like(h))
    h = (h + shift) % 1.0
    s = torch.where(mx > 0, d / torch.where(mx > 0, mx, torch.ones_like(mx)), torch.zeros_like(mx))
    v = mx
    k = lambda n: (n + h * 6) % 6                                                      # noqa: E731
    f = lambda n: v - v * s * torch.clamp(torch.minimum(k(n), 4 - k(n)), 0, 1)          # noqa: E731
    return torch.stack([f(5), f(3), f(1)], 1)


def augment(frames: torch.Tensor, params: dict, g: torch.Generator) -> torch.Tensor:
    """frames [n,3,h,w] of one video: random resize + crop, horizontal/time flip, colour jitter."""
    rnd = lambda: float(torch.rand((), generator=g))                                    # noqa: E731
    resize = params.get("resize_param")
    if resize:
        lo, hi = resize["ratio"]
        r = lo + (hi - lo) * rnd()
        h, w = frames.shape[2:]
        frames = F.interpolate(frames, size=(max(1, round(h * r)), max(1, round(w * r))), mode="bilinear",
                               align_corners=False)
    crop = params.get("crop_param")
    if crop:
        ch, cw = crop["size"]
        h, w = frames.shape[2:]
        if h < ch or w < cw:
            frames = F.pad(frames, (0, max(0, cw - w), 0, max(0, ch - h)))
            h, w = frames.shape[2:]
        y0, x0 = int(rnd() * (h - ch + 1)), int(rnd() * (w - cw + 1))
        frames = frames[:, :, y0:y0 + ch, x0:x0 + cw]
    flip = params.get("flip_param") or {}
    if flip.get("horizontal_flip") and rnd() < 0.5:
        frames = frames.flip(3)
    if flip.get("time_flip") and rnd() < 0.5:
        frames = frames.flip(0)
    jitter = params.get("jitter_param")
    if jitter:
        b, c, s, hu = (jitter.get(k, 0.0) for k in ("brightness", "contrast", "saturation", "hue"))
        for op in torch.randperm(4, generator=g).tolist():
            if op == 0 and b:
                frames = frames * (1 + b * (2 * rnd() - 1))
            elif op == 1 and c:
                m = _gray(frames).mean(dim=(1, 2, 3), keepdim=True)
                frames = (frames - m) * (1 + c * (2 * rnd() - 1)) + m
            elif op == 2 and s:
                frames = (frames - _gray(frames)) * (1 + s * (2 * rnd() - 1)) + _gray(frames)
            elif op == 3 and hu:
                frames = _hue(frames.clamp(0, 1), hu * (2 * rnd() - 1))
            frames = frames.clamp(0, 1)
    return frames.contiguous()


def _seed_generator(seed: int) -> torch.Generator:
    """The training code's one CPU generator from an internal seed (per-sample seeds reach 2**62, so
    they are used as they are, not through pipelines/seeds' hash above 2**32: resume and the shipped
    model's recipe depend on these draws)."""
    return torch.Generator().manual_seed(int(seed) % (2 ** 63))


class FramesDataset:
    """FOMM/TPSMM's FramesDataset: train items are (source, driving) pairs of random frames of one
    video; test items are whole videos (``video(i)``). Items are indexed by (index, seed)."""

    def __init__(self, root: str, *, frame_shape=(256, 256, 3), is_train: bool = True, id_sampling: bool = False,
                 augmentation_params: dict | None = None, test_fraction: float = 0.2, split_seed: int = 0):
        if not isinstance(root, str) or not os.path.isdir(root):
            fail("data", "a folder of videos (frame folders, .mp4, .gif or .png strips)", repr(root))
        self.frame_shape = tuple(frame_shape) if frame_shape else None
        self.augmentation = augmentation_params if is_train else None
        self.id_sampling = id_sampling
        train_dir, test_dir = os.path.join(root, "train"), os.path.join(root, "test")
        if os.path.isdir(train_dir):
            base = train_dir if is_train else test_dir
            names = sorted(self._entries(base)) if os.path.isdir(base) else []
        else:
            base = root
            names = sorted(self._entries(root))
            if len(names) >= 5:        # FOMM: a random 80/20 split when there is no train/test folder
                perm = torch.randperm(len(names), generator=_seed_generator(split_seed)).tolist()
                n_test = max(1, int(round(len(names) * test_fraction)))
                keep = perm[n_test:] if is_train else perm[:n_test]
                names = [names[i] for i in sorted(keep)]
        self.root = base
        if not names:
            fail("data", f"at least one video in {'train' if is_train else 'test'} folder "
                         "(frame folders, .mp4, .gif/.webp or .png strips)", f"none in {base!r}")
        if id_sampling and is_train:   # one entry per identity: "id#clip.mp4" names share an identity
            groups: dict[str, list[str]] = {}
            for n in names:
                groups.setdefault(n.split("#")[0], []).append(n)
            self.groups = [groups[k] for k in sorted(groups)]
        else:
            self.groups = [[n] for n in names]

    @staticmethod
    def _entries(folder):
        for n in os.listdir(folder):
            p = os.path.join(folder, n)
            if n.startswith("."):
                continue
            if os.path.isdir(p) or n.lower().endswith(VIDEO_EXT + ANIM_EXT + STRIP_EXT):
                yield n

    def __len__(self):
        return len(self.groups)

    def _video(self, i, g):
        group = self.groups[i]
        name = group[int(torch.randint(len(group), (), generator=g))] if len(group) > 1 else group[0]
        return Video(os.path.join(self.root, name), self.frame_shape), name

    def pair(self, index: int, seed: int) -> dict:
        g = _seed_generator(seed)
        video, name = self._video(index, g)
        n = len(video)
        idx = sorted(torch.randint(n, (2,), generator=g).tolist())
        frames = torch.stack([_resize(f, self.frame_shape) for f in video.frames(idx)])
        if self.augmentation:
            frames = augment(frames, self.augmentation, g)
        return {"source": frames[0], "driving": frames[1], "name": name}

    def video(self, index: int, max_frames: int = 0) -> torch.Tensor:
        """All frames [F,3,H,W] of test video ``index`` (at most ``max_frames``)."""
        video = Video(os.path.join(self.root, self.groups[index][0]), self.frame_shape)
        n = len(video) if not max_frames else min(max_frames, len(video))
        return torch.stack([_resize(f, self.frame_shape) for f in video.frames(range(n))])


class Repeated:
    """``num_repeats`` passes over a dataset per epoch (C:frames_dataset.py DatasetRepeater)."""

    def __init__(self, dataset, num_repeats: int = 1):
        self.dataset, self.num_repeats = dataset, max(1, int(num_repeats))

    def __len__(self):
        return self.num_repeats * len(self.dataset)

    def pair(self, index, seed):
        return self.dataset.pair(index % len(self.dataset), seed)


class PairLoader(torch.utils.data.Dataset):
    """Adapter for torch's DataLoader: items are (index, seed) tuples from the engine's sampler."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        index, seed = key
        item = self.dataset.pair(int(index), int(seed))
        return {"source": item["source"], "driving": item["driving"], "seed": torch.tensor(int(seed))}
