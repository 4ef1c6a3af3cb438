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
    args = ap.parse_args(argv)
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


if __name__ == "__main__":
    sys.exit(main())
