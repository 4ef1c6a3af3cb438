"""Trains assets/cpabmm_tiny64.safetensors, the small CPABMM model that make-test-models installs
as models/cpabmm/cpabmm-vox-256.safetensors (the name the shipped workflow loads).

Run (CPU, one thread, resumable; about 15-30 minutes on a 2-core machine):
    python assets/make_cpabmm_tiny.py [--steps 1920] [--out runs/tiny64]
It trains ``--config tiny-64 --data synthetic`` (generated clips of the pack's drawn character over
textured backgrounds, pipelines/cpabmm/train/synthetic.py) at batch 4 and stores the weights in fp16
(half the size; the Loader reads them into float32).
"""
import argparse
import json
import os

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from comfyui_flipbook.pipelines.cpabmm.train import engine

HERE = os.path.dirname(os.path.abspath(__file__))


def to_asset(weights: str, dst: str) -> str:
    with safe_open(weights, framework="pt") as fh:
        meta = fh.metadata()
    flat = {k: (v.half() if v.is_floating_point() else v) for k, v in load_file(weights).items()}
    cfg = json.loads(meta["cpabmm_config"])
    cfg["trained_on"] = "synthetic tiny-64 (assets/make_cpabmm_tiny.py)"
    save_file(flat, dst, metadata={**meta, "cpabmm_config": json.dumps(cfg)})
    return dst


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=1920)
    ap.add_argument("--out", default="runs/tiny64")
    args = ap.parse_args()
    torch.set_num_threads(1)
    summary = engine.train("tiny-64", "synthetic", args.out, steps=args.steps, batch_size=4, workers=0,
                           checkpoint_every=25)
    print(to_asset(summary["weights"], os.path.join(HERE, "cpabmm_tiny64.safetensors")))


if __name__ == "__main__":
    main()
