"""Command line: ``python -m comfyui_flipbook demo|make-test-models ...``."""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import pkgutil
import sys
from typing import Callable


def find_test_model_writers() -> dict[str, Callable[[str], list[str]]]:
    """Every method's tiny-random-model writer, found the way nodes/__init__.py finds node families:
    ``write_test_models`` in the ``testmodels`` module of each package under pipelines/. Each writes,
    under a ComfyUI models folder, exactly the files and layouts that the shipped workflows name in
    their loaders."""
    from . import pipelines

    writers = {}
    for info in sorted(pkgutil.iter_modules(pipelines.__path__), key=lambda m: m.name):
        name = f"{pipelines.__name__}.{info.name}.testmodels"
        if info.ispkg and importlib.util.find_spec(name) is not None:
            writers[name] = importlib.import_module(name).write_test_models
    return writers


def make_test_models(models_dir: str) -> list[str]:
    written: list[str] = []
    for write in find_test_model_writers().values():
        written += write(models_dir)
    return written


def main(argv: list[str] | None = None) -> int:
    from .pipelines.bezier import PRESETS
    from .pipelines.flexiclip.settings import DEMO_MOTION

    ap = argparse.ArgumentParser(prog="python -m comfyui_flipbook", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("demo", help="animate the shipped clipart on the CPU, no model needed")
    d.add_argument("--out", default="flipbook_demo.webp", help="output .webp or .gif")
    d.add_argument("--image", default=None, help="another RGBA picture to animate")
    d.add_argument("--frames", type=int, default=DEMO_MOTION.frames)
    d.add_argument("--preset", default=DEMO_MOTION.preset, choices=list(PRESETS),
                   help="motion preset; 'still' has no motion, so the file holds one frame "
                        "(WebP and GIF merge identical frames), shown for the whole duration")
    d.add_argument("--amplitude", type=float, default=DEMO_MOTION.amplitude)
    d.add_argument("--fps", type=float, default=12.0)
    d.add_argument("--seed", type=int, default=DEMO_MOTION.seed)
    m = sub.add_parser("make-test-models", help="write tiny random models for the shipped workflows")
    m.add_argument("models_dir")
    _add_cpabmm_training(sub)
    args = ap.parse_args(argv)
    if args.cmd in ("train-cpabmm", "evaluate-cpabmm"):
        from .pipelines.errors import FlipbookInputError

        try:
            return _run_cpabmm_training(args)
        except FlipbookInputError as exc:        # a bad dataset, config or file: the message, no traceback
            print(f"{args.cmd}: {exc}", file=sys.stderr)
            return 2
    if args.cmd == "make-test-models":
        for path in make_test_models(args.models_dir):
            print(path)
        return 0
    import os

    from .pipelines.errors import FlipbookInputError
    from .pipelines.flexiclip import run_demo

    try:                                         # a bad argument: one line, no traceback, nothing computed
        if os.path.splitext(args.out)[1].lower() not in (".webp", ".gif"):
            raise FlipbookInputError(f"--out: expected a .webp or .gif file name, got {args.out!r}")
        if args.frames < 1 or args.frames > 1024:
            raise FlipbookInputError(f"--frames: expected an integer in [1, 1024], got {args.frames}")
        if not (args.fps > 0 and args.fps <= 240):
            raise FlipbookInputError(f"--fps: expected a number in (0, 240], got {args.fps}")
        if not 0 <= args.amplitude <= 0.5:
            raise FlipbookInputError(f"--amplitude: expected a number in [0, 0.5], got {args.amplitude}")
        if not 0 <= args.seed < 2 ** 64:
            raise FlipbookInputError(f"--seed: expected an integer in [0, 2**64 - 1], got {args.seed}")
        run_demo(args.out, image=args.image, frames=args.frames, preset=args.preset,
                 amplitude=args.amplitude, fps=args.fps, seed=args.seed)
    except FlipbookInputError as exc:
        print(f"{ap.prog} demo: error: {exc}", file=sys.stderr)
        return 2
    if args.preset == "still":
        print("note: preset still has no motion; the file holds one frame", file=sys.stderr)
    print(args.out)
    return 0


# --- CPABMM training and evaluation (pipelines/cpabmm/train) --------------------------------------

def _add_cpabmm_training(sub) -> None:
    t = sub.add_parser("train-cpabmm", help="train CPABMM on a folder of videos (or 'synthetic'); "
                                            "multi-GPU: torchrun --nproc_per_node=N -m comfyui_flipbook train-cpabmm ...")
    t.add_argument("--config", default="vox-256",
                   help="vox-256, taichi-256, ted-384, mgif-256, tiny-64, or a .json/.yaml training config")
    t.add_argument("--data", required=True, help="dataset folder (FOMM/TPSMM layout) or 'synthetic'")
    t.add_argument("--out", required=True, help="folder for the checkpoint, its training state and log.csv")
    t.add_argument("--steps", type=int, default=0, help="stop after this many steps (0: the config's epochs)")
    t.add_argument("--epochs", type=int, default=0, help="override the config's num_epochs")
    t.add_argument("--batch-size", type=int, default=0, help="global batch over all processes (0: the config's)")
    t.add_argument("--accumulate", type=int, default=1, help="micro-batches per step per process")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--workers", type=int, default=-1, help="DataLoader workers (-1: the config's)")
    t.add_argument("--checkpoint-every", type=int, default=0, help="also save every N steps")
    t.add_argument("--device", default="auto")
    t.add_argument("--vgg19", default=None, help="torchvision VGG19 weights (.safetensors/.pth) for the perceptual "
                                                "loss; without: the weight-free L1+SSIM pyramid")
    t.add_argument("--dino", default=None, help="DINO ViT-B/8 weights: enables the structure loss")
    t.add_argument("--sam", default=None, help="SAM ViT-B weights: enables our keypoint semantic loss")
    t.add_argument("--tensorboard", action="store_true")
    t.add_argument("--no-resume", action="store_true", help="start afresh even if --out holds a run")
    t.add_argument("--name", default="", help="checkpoint name (cpabmm-<name>.safetensors)")
    e = sub.add_parser("evaluate-cpabmm", help="reconstruction L1 of a CPABMM checkpoint (spec cpab.md §2.6)")
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--data", required=True, help="dataset folder (its test split) or 'synthetic' (held-out clips)")
    e.add_argument("--preset", default="auto")
    e.add_argument("--max-videos", type=int, default=0)
    e.add_argument("--max-frames", type=int, default=0)


def _load_config_arg(value: str):
    import json
    import os

    if not os.path.isfile(value):
        return value
    with open(value, encoding="utf-8") as fh:
        if value.lower().endswith((".yaml", ".yml")):     # ours, or an official config/*.yaml
            try:
                import yaml
            except ImportError:
                from .pipelines.errors import FlipbookInputError

                raise FlipbookInputError("config: a .yaml file needs PyYAML (pip install pyyaml), or give "
                                         "a .json file; got PyYAML missing") from None
            return yaml.safe_load(fh)
        return json.load(fh)


def _run_cpabmm_training(args) -> int:
    from .pipelines.cpabmm import load_model
    from .pipelines.cpabmm.train import engine, evaluate, train_config

    if args.cmd == "train-cpabmm":
        summary = engine.train(_load_config_arg(args.config), args.data, args.out, engine.TrainOptions(
            steps=args.steps, epochs=args.epochs, batch_size=args.batch_size, accumulate=args.accumulate,
            seed=args.seed, workers=args.workers, checkpoint_every=args.checkpoint_every, device=args.device,
            vgg19=args.vgg19, dino=args.dino, sam=args.sam, tensorboard=args.tensorboard,
            resume=not args.no_resume, name=args.name))
        if summary["world_size"] == 1 or int(__import__("os").environ.get("RANK", "0")) == 0:
            print(f"{summary['weights']} steps={summary['steps']} perceptual={summary['perceptual']}")
        return 0
    model = load_model(args.checkpoint, args.preset)
    cfg = train_config("tiny-64" if args.data == "synthetic" else "vox-256")
    cfg["model"] = model.config
    res = evaluate.reconstruction_l1(model, engine.build_dataset(cfg, args.data, is_train=False),
                                     max_videos=args.max_videos, max_frames=args.max_frames)
    print(f"reconstruction L1 {res.l1:.5f} (identity {res.identity_l1:.5f}) over {res.videos} videos, "
          f"{res.frames} frames")
    return 0


if __name__ == "__main__":
    sys.exit(main())
