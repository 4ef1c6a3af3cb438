"""Runs an API-format workflow in this process, the way ComfyUI's executor does, with no ComfyUI:
our nodes from NODE_CLASS_MAPPINGS, ComfyUI's core nodes as small stand-ins (Load Image exactly as
ComfyUI's, deterministic CLIP vision / VAE stand-ins, Save/Preview recording their images). Every
node runs inside torch.inference_mode(). Used by the golden-output test (tests/test_golden.py).

Golden fingerprints (:func:`fingerprint`) keep what is needed to tell "bitwise the same" (sha256 of
the bytes) from "the same within a tolerance" (sums and an evenly spaced sample of values), small
enough to commit.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib

import numpy as np
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
ASSETS = ROOT / "assets"


# --- ComfyUI core nodes ------------------------------------------------------------------------

def load_image(name: str):
    """ComfyUI's LoadImage (nodes.py): EXIF-transposed RGB in 0..1, MASK = 1 - alpha, or a 64x64
    zero MASK when the picture has no alpha."""
    from PIL import Image, ImageOps, ImageSequence

    images, masks = [], []
    with Image.open(ASSETS / name) as img:
        for frame in ImageSequence.Iterator(img):
            frame = ImageOps.exif_transpose(frame)
            rgb = torch.from_numpy(np.array(frame.convert("RGB")).astype(np.float32) / 255.0)[None]
            if "A" in frame.getbands():
                mask = 1.0 - torch.from_numpy(np.array(frame.getchannel("A")).astype(np.float32) / 255.0)
            else:
                mask = torch.zeros((64, 64), dtype=torch.float32)
            images.append(rgb)
            masks.append(mask[None])
            if img.format == "MPO":
                break
    if len(images) > 1:
        return torch.cat(images), torch.cat(masks)
    return images[0], masks[0]


class StandInCLIPVision:
    """CLIP_VISION: encode_image(IMAGE, crop) -> {"image_embeds": (N, dim)}; a fixed random projection
    of 16x16-pooled pixels (deterministic, no weights)."""

    def __init__(self, dim: int = 768):
        g = torch.Generator().manual_seed(1234)
        self.proj = torch.randn(3 * 16 * 16, dim, generator=g) / 16

    def encode_image(self, image, crop=True):
        x = torch.nn.functional.adaptive_avg_pool2d(image[..., :3].movedim(-1, 1).float(), 16)
        return {"image_embeds": x.flatten(1) @ self.proj}


class StandInVAE:
    """VAE: decode(raw latent (B, 4, h, w)) -> IMAGE (B, 8h, 8w, 3); encode the reverse shape."""

    def __init__(self):
        g = torch.Generator().manual_seed(4321)
        self.mix = torch.randn(4, 3, generator=g)

    def decode(self, z):
        x = torch.einsum("bchw,cd->bhwd", z.float(), self.mix).sigmoid()
        return x.repeat_interleave(8, 1).repeat_interleave(8, 2)

    def encode(self, pixels):
        x = pixels[..., :3].movedim(-1, 1).float()
        return torch.nn.functional.avg_pool2d(torch.cat([x, x.mean(1, keepdim=True)], 1), 8) * 4 - 2


def core_node(class_type: str, inputs: dict, record: dict, nid: str):
    if class_type == "LoadImage":
        return load_image(inputs["image"])
    if class_type in ("SaveAnimatedWEBP", "SaveAnimatedPNG", "SaveImage", "PreviewImage"):
        record[nid] = inputs["images"]
        return ()
    if class_type == "CLIPVisionLoader":
        return (StandInCLIPVision(),)
    if class_type == "VAELoader":
        return (StandInVAE(),)
    if class_type == "VAEDecode":
        return (inputs["vae"].decode(inputs["samples"]["samples"]),)
    raise KeyError(f"no stand-in for core node {class_type}")


# --- the executor ------------------------------------------------------------------------------

def _is_link(v) -> bool:
    return isinstance(v, list) and len(v) == 2 and isinstance(v[0], str)


def run_api(prompt: dict) -> tuple[dict, dict]:
    """Execute every node (dependencies first). Returns ``(outputs, saved)``: outputs[node id] is the
    node's output tuple, saved[node id] the images a Save/Preview node received."""
    from comfyui_flipbook import NODE_CLASS_MAPPINGS

    outputs: dict = {}
    saved: dict = {}

    def run(nid: str):
        if nid in outputs:
            return outputs[nid]
        node = prompt[nid]
        inputs = {}
        for name, v in node["inputs"].items():
            inputs[name] = run(v[0])[v[1]] if _is_link(v) else v
        ct = node["class_type"]
        with torch.inference_mode():
            if ct in NODE_CLASS_MAPPINGS:
                cls = NODE_CLASS_MAPPINGS[ct]
                declared = {**cls.INPUT_TYPES().get("required", {}), **cls.INPUT_TYPES().get("optional", {})}
                inputs = {k: v for k, v in inputs.items() if k in declared}   # ComfyUI drops unknown inputs
                out = getattr(cls(), cls.FUNCTION)(**inputs)
                if isinstance(out, dict):
                    out = out.get("result", ())
                from comfyui_flipbook.nodes.types import check_value
                for i, (typ, value) in enumerate(zip(cls.RETURN_TYPES, out)):   # values match their declared types
                    check_value(f"{ct} output {i}", typ, value)
            else:
                out = core_node(ct, inputs, saved, nid)
        outputs[nid] = tuple(out)
        return outputs[nid]

    for nid in prompt:
        run(nid)
    return outputs, saved


# --- fingerprints ------------------------------------------------------------------------------

SAMPLES = 256


def tensor_print(t: torch.Tensor) -> dict:
    t = t.detach().cpu().contiguous()
    flat = t.reshape(-1).double() if t.is_floating_point() or not t.dtype.is_complex else t.reshape(-1).abs().double()
    n = flat.numel()
    m = min(SAMPLES, n)
    idx = torch.arange(m) * (n - 1) // max(m - 1, 1)
    raw = t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.view(torch.int16).numpy().tobytes()
    return {"shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", ""),
            "sha256": hashlib.sha256(raw).hexdigest(),
            "sum": float(flat.sum()) if n else 0.0, "abs_sum": float(flat.abs().sum()) if n else 0.0,
            "sample": [float(f"{float(v):.9g}") for v in flat[idx]]}


def walk(obj, path: str, out: dict, depth: int = 0) -> None:
    """Every tensor reachable from a node output (dataclass fields, dicts, lists), by path; models skipped."""
    if depth > 5 or obj is None:
        return
    if isinstance(obj, torch.Tensor):
        out[path] = tensor_print(obj)
    elif isinstance(obj, torch.nn.Module):
        return
    elif isinstance(obj, dict):
        for k in sorted(obj, key=str):
            if not str(k).startswith("_"):
                walk(obj[k], f"{path}.{k}", out, depth + 1)
    elif isinstance(obj, (list, tuple)) and obj and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                        for v in obj):
        out[path] = tensor_print(torch.tensor(obj, dtype=torch.float64))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            walk(v, f"{path}[{i}]", out, depth + 1)
    elif dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            if not f.name.startswith("_"):
                walk(getattr(obj, f.name), f"{path}.{f.name}", out, depth + 1)
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        out[path] = {"value": float(obj)}


def fingerprints(outputs: dict, saved: dict) -> dict:
    out: dict = {}
    for nid, outs in outputs.items():
        for i, v in enumerate(outs):
            walk(v, f"{nid}:{i}", out)
    for nid, images in saved.items():
        walk(images, f"{nid}:saved", out)
    return out


def compare(golden: dict, now: dict, *, atol: float = 1e-5, rtol: float = 1e-5) -> tuple[list[str], dict]:
    """``(problems, summary)``: a problem is a golden tensor missing now, a shape change, or values
    beyond ``atol + rtol * |golden|`` (on the sample, and on the sums scaled by their size). The
    summary counts bitwise-equal, close and differing entries and the largest sample difference."""
    problems: list[str] = []
    summary = {"bitwise": 0, "close": 0, "missing": 0, "max_abs_diff": 0.0}
    for path, g in golden.items():
        n = now.get(path)
        if n is None:
            problems.append(f"{path}: missing now")
            summary["missing"] += 1
            continue
        if "value" in g:
            d = abs(g["value"] - n.get("value", float("nan")))
            if not d <= atol + rtol * abs(g["value"]):
                problems.append(f"{path}: {g['value']} -> {n.get('value')}")
            else:
                summary["bitwise" if d == 0 else "close"] += 1
            continue
        if g["shape"] != n.get("shape"):
            problems.append(f"{path}: shape {g['shape']} -> {n.get('shape')}")
            continue
        if g["sha256"] == n["sha256"]:
            summary["bitwise"] += 1
            continue
        a, b = np.array(g["sample"]), np.array(n["sample"])
        d = float(np.abs(a - b).max()) if a.size else 0.0
        summary["max_abs_diff"] = max(summary["max_abs_diff"], d)
        numel = max(int(np.prod(g["shape"])), 1)
        sums_ok = abs(g["sum"] - n["sum"]) <= (atol + rtol * g["abs_sum"] / numel) * numel
        if not (np.all(np.abs(a - b) <= atol + rtol * np.abs(a)) and sums_ok):
            problems.append(f"{path}: differs (max sample diff {d:.3g}, sum {g['sum']:.6g} -> {n['sum']:.6g})")
        else:
            summary["close"] += 1
    return problems, summary


def prepare_models(models_dir: str) -> None:
    """Tiny random models under the shipped workflows' file names (make-test-models), for the loaders
    of this process (FLIPBOOK_MODELS_DIR)."""
    from comfyui_flipbook.cli import make_test_models

    if not os.path.isdir(os.path.join(models_dir, "diffusers")):
        make_test_models(models_dir)
    else:          # a cached folder follows the shipped CPABMM model (a file copy)
        from comfyui_flipbook.pipelines.cpabmm.testmodels import write_test_models
        write_test_models(models_dir)
    os.environ["FLIPBOOK_MODELS_DIR"] = models_dir
