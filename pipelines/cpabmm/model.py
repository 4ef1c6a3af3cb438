"""CPABMM: the model container and checkpoint I/O (spec cpab.md §2.5, §3.1); its configs are in
:mod:`.settings`.

Checkpoints: the official ``torch.save`` dict ({'kp_detector': sd, 'dense_motion_network': sd,
'inpainting_network': sd, 'bg_predictor': sd?, 'avd_network': sd?, 'optimizer': ..., 'epoch': ...},
loaded with ``torch.load(weights_only=True)`` only), or a ``.safetensors`` file with the same state
dicts under the prefixes ``kp_detector.`` etc. Our safetensors files carry the full config as JSON in
the metadata key ``cpabmm_config``, so a file is self-describing; without it the preset is used.
"""
from __future__ import annotations

import json
import os

import torch
from torch import nn

from ..errors import FlipbookInputError, fail
from .networks import AVDNetwork, BGMotionPredictor, DenseMotionNetwork, InpaintingNetwork, KPDetector
from .settings import METADATA_KEY, normalise_config, preset_config

MODULES = ("kp_detector", "dense_motion_network", "inpainting_network", "bg_predictor", "avd_network")

class CPABMM(nn.Module):
    def __init__(self, config: dict, *, with_bg: bool | None = None, with_avd: bool = True):
        super().__init__()
        self.config = cfg = normalise_config(config)
        c = cfg["common"]
        self.kp_detector = KPDetector(c["num_cpab"], c["width"])
        self.dense_motion_network = DenseMotionNetwork(num_cpab=c["num_cpab"], num_channels=c["num_channels"],
                                                       **cfg["dense_motion"])
        self.inpainting_network = InpaintingNetwork(num_channels=c["num_channels"], **cfg["generator"])
        self.bg_predictor = BGMotionPredictor(c["width"]) if (c["bg"] if with_bg is None else with_bg) else None
        avd = {**cfg["avd"], "hidden": tuple(cfg["avd"].get("hidden", (256, 512, 1024)))}
        self.avd_network = AVDNetwork(c["num_cpab"], **avd) if with_avd else None

    @property
    def num_cpab(self) -> int:
        return self.config["common"]["num_cpab"]

    def module_state_dicts(self) -> dict:
        return {name: getattr(self, name).state_dict() for name in MODULES if getattr(self, name) is not None}


# --- checkpoints ------------------------------------------------------------------------------------

def save_safetensors(model: CPABMM, path: str, metadata: dict | None = None) -> str:
    """The Loader's format; ``metadata`` adds string entries (training writes its step)."""
    from safetensors.torch import save_file

    flat = {f"{m}.{k}": v.detach().contiguous().cpu() for m, sd in model.module_state_dicts().items()
            for k, v in sd.items()}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save_file(flat, path, metadata={**(metadata or {}), METADATA_KEY: json.dumps(model.config)})
    return path


def read_checkpoint(path: str) -> tuple[dict, dict | None]:
    """(state dicts per module, config from the file or None). Never unpickles arbitrary objects."""
    if path.lower().endswith(".safetensors"):
        from safetensors import safe_open
        from safetensors.torch import load_file

        with safe_open(path, framework="pt") as fh:
            meta = fh.metadata() or {}
        flat = load_file(path)
        sds: dict = {}
        for k, v in flat.items():
            mod, _, rest = k.partition(".")
            sds.setdefault(mod, {})[rest] = v
        cfg = json.loads(meta[METADATA_KEY]) if METADATA_KEY in meta else None
        return sds, cfg
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise FlipbookInputError(
            f"checkpoint: expected a CPABMM checkpoint loadable with torch.load(weights_only=True) "
            f"(tensors, numbers and dicts only), got an error: {str(exc)[:300]}") from None
    if not isinstance(obj, dict) or "kp_detector" not in obj:
        fail("checkpoint", "a dict with 'kp_detector', 'dense_motion_network' and 'inpainting_network' "
                           "(the official training checkpoint)", f"keys {list(obj)[:8] if isinstance(obj, dict) else type(obj)}")
    return {k: v for k, v in obj.items() if k in MODULES and isinstance(v, dict)}, None


def load_model(path: str, preset: str | dict = "auto", device="cpu") -> CPABMM:
    """Build a CPABMM from a checkpoint: the config in the file wins, else the preset (a name, or
    a full config dict for checkpoints trained with other sizes)."""
    sds, cfg = read_checkpoint(path)
    missing = [m for m in ("kp_detector", "dense_motion_network", "inpainting_network") if m not in sds]
    if missing:
        fail("checkpoint", "the kp_detector, dense_motion_network and inpainting_network weights", f"missing {missing}")
    if cfg is None and isinstance(preset, dict):
        cfg = preset
    elif cfg is None:
        if preset == "auto":
            fail("preset", "one of vox/taichi/ted/mgif for a checkpoint without a stored config", "auto")
        cfg = preset_config(preset)
    if "kp_detector" in sds and "fg_encoder.fc.weight" in sds["kp_detector"]:
        cfg = normalise_config(cfg)
        cfg["common"]["num_cpab"] = int(sds["kp_detector"]["fg_encoder.fc.weight"].shape[0]) // 10
    model = CPABMM(cfg, with_bg="bg_predictor" in sds, with_avd="avd_network" in sds)
    for name, sd in sds.items():
        module = getattr(model, name, None)
        if module is None:
            continue
        try:
            module.load_state_dict(sd, strict=True)
        except RuntimeError as exc:
            raise FlipbookInputError(f"checkpoint: the {name} weights do not fit the "
                                     f"{model.config.get('preset')} config: {str(exc)[:400]}") from None
    return model.eval().to(device)


def convert_to_safetensors(src: str, dst: str | None = None, preset: str | dict = "vox") -> str:
    """Official .pth/.tar checkpoint -> .safetensors with the config stored in the metadata."""
    model = load_model(src, preset)
    if dst is None:
        base = src
        for ext in (".pth.tar", ".tar", ".pth", ".pt", ".ckpt"):
            if base.lower().endswith(ext):
                base = base[: -len(ext)]
                break
        dst = base + ".safetensors"
    return save_safetensors(model, dst)
