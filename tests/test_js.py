"""The frontend's plain JS modules (web/js) under Node's own test runner: tests/js/*.test.mjs."""
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_js_modules_pass_node_test():
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed: the web/js unit tests (node --test tests/js) need it")
    files = sorted(str(p) for p in (ROOT / "tests" / "js").glob("*.test.mjs"))
    assert files, "no JS tests"
    run = subprocess.run([node, "--test", *files], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "# fail 0" in run.stdout
