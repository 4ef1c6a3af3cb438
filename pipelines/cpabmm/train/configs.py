"""Training configs: the four releases' (C:config/*.yaml, spec cpab.md §2.4-2.5) and ``tiny-64`` for
the synthetic 64² data that trains on a CPU in minutes.

A training config is ``{"model": <CPABMM config, see ..settings>, "train": {...}, "dataset": {...}}``;
``model`` is what the checkpoint stores, the rest only drives training.
"""
from __future__ import annotations

import copy

from ...errors import fail
from ..settings import normalise_config, preset_config, tiny_config

_JITTER = {"brightness": 0.1, "contrast": 0.1, "saturation": 0.1, "hue": 0.1}


def _train(**over) -> dict:
    """train_params shared by the releases (C:config/vox-256.yaml), with ``over`` on top."""
    base = {
        "num_epochs": 100, "num_repeats": 75, "epoch_milestones": [70, 90], "lr_generator": 1e-4,
        "batch_size": 8, "scales": [1, 0.5, 0.25, 0.125], "checkpoint_freq": 50,
        "dropout_epoch": 35, "dropout_maxp": 0.3, "dropout_startp": 0.1, "dropout_inc_epoch": 10, "bg_start": 10,
        "transform_params": {"sigma_affine": 0.05, "sigma_tps": 0.005, "points_tps": 5},
        "loss_weights": {"perceptual": [10, 10, 10, 10, 10], "equivariance_value": 10, "warp_loss": 10, "bg": 10,
                         "sam": 1, "structure": 0.1},     # structure: the DINO loss's lambda_str (C:model.py)
        # C:train.py: Adam betas (0.5, 0.999), weight decay 1e-4, MultiStepLR γ 0.1, ∞-norm clipping at 10
        "betas": [0.5, 0.999], "weight_decay": 1e-4, "gamma": 0.1, "clip_norm": 10.0,
        "dataloader_workers": 4,
    }
    for k, v in over.items():
        base[k] = {**base[k], **v} if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return base


def _dataset(size: int, id_sampling: bool = True, **aug) -> dict:
    """The release's dataset_params. frame_shape: the release's ``null`` reads frames as stored (its
    datasets come pre-sized); ours resizes any video to the model's size."""
    augmentation = {"flip_param": {"horizontal_flip": True, "time_flip": True}, "jitter_param": dict(_JITTER)}
    augmentation.update(aug)
    return {"frame_shape": [size, size, 3], "id_sampling": id_sampling, "augmentation_params": augmentation}


def _release(preset: str, train: dict, dataset: dict) -> dict:
    return {"model": preset_config(preset), "train": train, "dataset": dataset}


TRAIN_CONFIGS = {
    "vox-256": lambda: _release("vox", _train(), _dataset(256)),
    "taichi-256": lambda: _release("taichi", _train(num_repeats=300, checkpoint_freq=25, dropout_maxp=0.7,
                                                    dropout_startp=0.0, bg_start=0), _dataset(256)),
    "ted-384": lambda: _release("ted", _train(num_repeats=150, lr_generator=2e-4, checkpoint_freq=25,
                                              dropout_maxp=0.5, dropout_startp=0.0, bg_start=0), _dataset(384)),
    "mgif-256": lambda: _release("mgif", _train(num_repeats=50, dropout_maxp=0.5, dropout_startp=0.2, bg_start=0),
                                 _dataset(256, id_sampling=False, crop_param={"size": [256, 256]},
                                          resize_param={"ratio": [0.9, 1.1]}, jitter_param={"hue": 0.5})),
    # Ours: 64², tiny networks (settings.tiny_config), a schedule counted in short epochs of the
    # synthetic data (train.synthetic); the weight-free perceptual stand-in unless VGG19 is given;
    # lr 1e-3 (ours: tiny networks learn in a few hundred CPU steps; the releases use 1e-4).
    "tiny-64": lambda: {"model": tiny_config("vox"),
                        "train": _train(num_epochs=12, num_repeats=1, epoch_milestones=[9, 11], lr_generator=1e-3,
                                        batch_size=8, checkpoint_freq=2, dropout_epoch=2, dropout_inc_epoch=1,
                                        bg_start=0, dataloader_workers=0),
                        "dataset": {**_dataset(64, id_sampling=False), "synthetic_clips": 640}},
}


def train_config(name_or_cfg) -> dict:
    """A deep copy of a named training config, or a user dict completed from vox-256's defaults."""
    if isinstance(name_or_cfg, dict):
        cfg = from_release_yaml(name_or_cfg) if "model_params" in name_or_cfg else copy.deepcopy(name_or_cfg)
        base = TRAIN_CONFIGS.get(cfg.get("base", "vox-256"), TRAIN_CONFIGS["vox-256"])()
        base["model"] = normalise_config(cfg.get("model", base["model"]))
        base["train"] = _merge(base["train"], cfg.get("train", {}))
        base["dataset"] = _merge(base["dataset"], cfg.get("dataset", {}))
        return base
    if name_or_cfg not in TRAIN_CONFIGS:
        fail("config", f"one of {tuple(TRAIN_CONFIGS)} (or a JSON/YAML file)", repr(name_or_cfg))
    return TRAIN_CONFIGS[name_or_cfg]()


def from_release_yaml(y: dict) -> dict:
    """An official config/*.yaml (model_params / train_params / dataset_params) in our layout."""
    mp = y["model_params"]
    dense = dict(mp.get("dense_motion_params", {}))
    model = {"common": dict(mp.get("common_params", {})), "generator": dict(mp.get("generator_params", {})),
             "dense_motion": dense, "avd": dict(mp.get("avd_network_params", {}))}
    if "max_iter" in dense:
        model["max_iter"] = dense.pop("max_iter")
    model["common"].pop("multi_mask", None)
    ds = {k: v for k, v in y.get("dataset_params", {}).items() if k != "root_dir"}
    shape = ds.get("frame_shape")
    model["size"] = int(shape[0]) if shape else 256
    preset = "mgif" if not model["common"].get("bg", True) else ("ted" if model["size"] == 384 else "vox")
    model["preset"] = preset
    train = {k: v for k, v in y.get("train_params", {}).items() if k not in ("sam_model_path", "use_vit_loss")}
    return {"base": {"vox": "vox-256", "ted": "ted-384", "mgif": "mgif-256"}[preset], "model": model,
            "train": train, "dataset": {k: v for k, v in ds.items() if v is not None}}


def _merge(a: dict, b: dict) -> dict:
    out = copy.deepcopy(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def dropout_p(train: dict, epoch: int) -> float:
    """Transform dropout probability (C:model.py): min(epoch/inc·maxp + startp, maxp) before
    ``dropout_epoch``, then 0."""
    if epoch >= train["dropout_epoch"]:
        return 0.0
    return min(epoch / max(train["dropout_inc_epoch"], 1) * train["dropout_maxp"] + train["dropout_startp"],
               train["dropout_maxp"])
