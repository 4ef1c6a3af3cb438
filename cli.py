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
    d.add_argument("--preset", default=DEMO_MOTION.preset, choices=list(PRESETS))
    d.add_argument("--amplitude", type=float, default=DEMO_MOTION.amplitude)
    d.add_argument("--fps", type=float, default=12.0)
    d.add_argument("--seed", type=int, default=DEMO_MOTION.seed)
    m = sub.add_parser("make-test-models", help="write tiny random models for the shipped workflows")
    m.add_argument("models_dir")
    args = ap.parse_args(argv)
    if args.cmd == "make-test-models":
        for path in make_test_models(args.models_dir):
            print(path)
        return 0
    from .pipelines.flexiclip import run_demo
    run_demo(args.out, image=args.image, frames=args.frames, preset=args.preset,
             amplitude=args.amplitude, fps=args.fps, seed=args.seed)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
