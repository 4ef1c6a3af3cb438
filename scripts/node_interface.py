"""Writes tests/interface/nodes.json, the snapshot of every node's public interface, ON PURPOSE.

Run: python scripts/node_interface.py [--check]   (with the pack importable as comfyui_flipbook)
--check prints the differences to the snapshot (breaking ones first) and writes nothing.
tests/test_node_interface.py fails on a breaking difference that no migration covers; additions pass.
Regenerate after a release, or after a change whose migration and CHANGELOG line are in place.
"""
import os
import pathlib
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
# the interface must not depend on the models a machine happens to have
os.environ["FLIPBOOK_MODELS_DIR"] = tempfile.mkdtemp(prefix="flipbook-interface-")

from node_interface import SNAPSHOT, current_interface, diff, load_snapshot, write_snapshot  # noqa: E402

from comfyui_flipbook.nodes.migrations import renames  # noqa: E402

if __name__ == "__main__":
    if "--check" in sys.argv[1:]:
        changes = sorted(diff(load_snapshot(), current_interface(), renames()), key=lambda c: not c.breaking)
        for c in changes:
            print(c)
        print(f"{sum(c.breaking for c in changes)} breaking, {sum(not c.breaking for c in changes)} other")
    else:
        data = write_snapshot()
        print(f"wrote {SNAPSHOT.relative_to(ROOT)}: {len(data)} nodes")
