"""Reading and writing Animate-X checkpoints (spec §1.7, §3.1).

- ``.safetensors``: loaded directly; our files carry the network config as JSON metadata.
- ``.pth``/``.ckpt``: only through ``torch.load(weights_only=True)`` (the released file is a plain
  OrderedDict of fp32 tensors, so this works). :func:`convert_to_safetensors` writes a one-off fp16
  safetensors copy next to it.
- The released layout is recognised by its shapes (the full config); tiny test checkpoints carry
  their config (as metadata, or in a .pth as a uint8 tensor holding the JSON).
- ``pose_embedding_before.pos_embed.pos_table`` is dropped: it is rebuilt for any frame count.
Every other key must match: the load is strict.
"""
from __future__ import annotations

import json
import os

import torch

from ..errors import FlipbookInputError
from .settings import FULL, AnimateXConfig
from .unet import AnimateXUNet, build_unet

POS_TABLE_KEY = "pose_embedding_before.pos_embed.pos_table"
CONFIG_KEY = "__animatex_config__"        # uint8 JSON tensor inside test .pth files
META_KEY = "animatex_config"              # safetensors metadata


def read_state_dict(path: str) -> tuple[dict[str, torch.Tensor], AnimateXConfig | None]:
    """Tensors of a checkpoint file and, when it carries one, its config."""
    ext = os.path.splitext(path)[1].lower()
    cfg = None
    if ext == ".safetensors":
        from safetensors import safe_open
        from safetensors.torch import load_file
        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
        sd = load_file(path)
        if META_KEY in meta:
            cfg = AnimateXConfig.from_dict(json.loads(meta[META_KEY]))
    elif ext in (".pth", ".pt", ".ckpt", ".bin"):
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as exc:
            raise FlipbookInputError(
                f"unet_name: {os.path.basename(path)} could not be read with torch.load(weights_only=True) "
                f"(only plain tensor checkpoints are accepted): {exc}") from exc
        if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
            sd = sd["state_dict"]
        if not isinstance(sd, dict):
            raise FlipbookInputError(f"unet_name: expected a state dict in {os.path.basename(path)}, got {type(sd).__name__}")
        if CONFIG_KEY in sd:
            cfg = AnimateXConfig.from_dict(json.loads(bytes(sd.pop(CONFIG_KEY).tolist()).decode()))
    else:
        raise FlipbookInputError(f"unet_name: expected a .safetensors or .pth file, got {os.path.basename(path)!r}")
    sd = {(k[7:] if k.startswith("module.") else k): v for k, v in sd.items()}
    return sd, cfg


def detect_config(sd: dict[str, torch.Tensor]) -> AnimateXConfig:
    """The released checkpoint's config, after checking that the shapes are the released ones."""
    w = sd.get("time_embed.0.weight")
    ctx = sd.get("pre_image_condition.0.weight")
    if w is None or ctx is None:
        raise FlipbookInputError("unet_name: not an Animate-X checkpoint (no time_embed / pre_image_condition weights)")
    if tuple(w.shape) != (FULL.dim * 4, FULL.dim) or tuple(ctx.shape) != (FULL.context_dim, FULL.clip_dim):
        raise FlipbookInputError(
            f"unet_name: unknown Animate-X layout (time_embed {tuple(w.shape)}, context {tuple(ctx.shape)}); "
            "expected the released checkpoint or a file written by this pack")
    return FULL


def load_unet(path: str, *, dtype: torch.dtype = torch.float16, device: str | torch.device = "cpu") -> AnimateXUNet:
    """Build the UNet for a checkpoint and load it strictly (pos_table aside)."""
    sd, cfg = read_state_dict(path)
    cfg = cfg or detect_config(sd)
    sd.pop(POS_TABLE_KEY, None)
    model = build_unet(cfg, device="meta")
    missing, unexpected = _check_keys(model, sd)
    if missing or unexpected:
        raise FlipbookInputError(
            f"unet_name: {os.path.basename(path)} does not match the Animate-X layout: "
            f"{len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})")
    model.load_state_dict({k: v.to(dtype) for k, v in sd.items()}, strict=True, assign=True)
    return model.to(device).eval()


def _check_keys(model: torch.nn.Module, sd: dict) -> tuple[list[str], list[str]]:
    want = model.state_dict()
    missing = sorted(k for k in want if k not in sd)
    unexpected = sorted(k for k in sd if k not in want)
    bad = sorted(k for k in want if k in sd and tuple(sd[k].shape) != tuple(want[k].shape))
    return missing + [f"{k} (shape)" for k in bad], unexpected


def save_unet(model: AnimateXUNet, path: str, *, dtype: torch.dtype | None = None) -> str:
    """Write a checkpoint our loader reads: .safetensors (config in metadata) or .pth (plain tensors,
    config as a JSON tensor, loadable with weights_only=True)."""
    sd = {k: (v.to(dtype) if dtype is not None else v).detach().contiguous().cpu() for k, v in model.state_dict().items()}
    cfg = json.dumps(model.cfg.to_dict())
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if path.lower().endswith(".safetensors"):
        from safetensors.torch import save_file
        save_file(sd, path, metadata={META_KEY: cfg})
    else:
        sd[CONFIG_KEY] = torch.tensor(list(cfg.encode()), dtype=torch.uint8)
        torch.save(sd, path)
    return path


def converted_path(path: str) -> str:
    return os.path.splitext(path)[0] + ".fp16.safetensors"


def convert_to_safetensors(path: str, out_path: str | None = None) -> str:
    """One-off conversion of a .pth checkpoint to fp16 safetensors (3.6 GB instead of 7.3 GB for
    the released file). Returns the written path; an existing copy is kept."""
    out_path = out_path or converted_path(path)
    if os.path.exists(out_path):
        return out_path
    sd, cfg = read_state_dict(path)
    cfg = cfg or detect_config(sd)
    sd.pop(POS_TABLE_KEY, None)
    from safetensors.torch import save_file
    tmp = out_path + ".part"
    save_file({k: v.to(torch.float16).contiguous() if v.is_floating_point() else v.contiguous() for k, v in sd.items()},
              tmp, metadata={META_KEY: json.dumps(cfg.to_dict())})
    os.replace(tmp, out_path)           # nothing half-written under the final name
    return out_path
