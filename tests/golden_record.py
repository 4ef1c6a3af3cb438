"""Records (or checks) the golden outputs of every shipped API workflow on the tiny test models.

    python tests/golden_record.py record [NAME ...]     # writes tests/golden/<name>.json
    python tests/golden_record.py compare [NAME ...]    # prints bitwise / close / differing counts

Goldens are fingerprints (tests/workflow_run.py) of every tensor each node returns and every image a
Save/Preview node receives. tests/test_golden.py checks today's outputs against them.
"""
from __future__ import annotations

import json
import os
import pathlib
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("FLIPBOOK_STRICT_IMPORT", "1")

import torch  # noqa: E402

from workflow_run import compare, fingerprints, prepare_models, run_api  # noqa: E402

GOLDEN = HERE / "golden"
WORKFLOWS = HERE.parent / "workflows" / "api"
MODELS = os.environ.get("FLIPBOOK_GOLDEN_MODELS") or os.path.join(tempfile.gettempdir(), "flipbook-golden-models")


def prompt_of(name: str) -> dict:
    from comfyui_flipbook.nodes.migrations import migrate_api_prompt

    return migrate_api_prompt(json.loads((WORKFLOWS / f"{name}.json").read_text()))


def current(name: str) -> dict:
    torch.set_num_threads(2)        # as recorded: float reductions (and FlipSketch's alignment) follow it
    prepare_models(MODELS)
    return fingerprints(*run_api(prompt_of(name)))


def main(argv: list[str]) -> int:
    cmd, names = argv[0], argv[1:] or sorted(p.stem for p in WORKFLOWS.glob("*.json"))
    GOLDEN.mkdir(exist_ok=True)
    bad = 0
    for name in names:
        now = current(name)
        path = GOLDEN / f"{name}.json"
        if cmd == "record":
            lines = [f"{json.dumps(k)}: {json.dumps(v)}" for k, v in sorted(now.items())]
            path.write_text("{\n" + ",\n".join(lines) + "\n}\n")
            print(f"{name}: {len(now)} tensors recorded")
        else:
            problems, summary = compare(json.loads(path.read_text()), now)
            bad += bool(problems)
            print(f"{name}: {summary}" + "".join(f"\n  {p}" for p in problems[:20]))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["compare"]))
