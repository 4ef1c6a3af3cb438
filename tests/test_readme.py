"""README.md's node reference lists exactly the registered nodes (regenerate: scripts/node_reference.py)."""
import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_readme_node_reference_is_current():
    spec = importlib.util.spec_from_file_location("node_reference", ROOT / "scripts" / "node_reference.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    text = (ROOT / "README.md").read_text()
    assert mod.START in text, "README.md has no generated node reference"
    assert mod.update(text) == text, "README.md node reference is stale: run python scripts/node_reference.py"


def test_readme_names_the_two_commands_and_ci_runs_one():
    text = (ROOT / "README.md").read_text()
    assert "make demo" in text and "make test" in text
    assert "make test" in (ROOT / ".ci" / "run").read_text()
