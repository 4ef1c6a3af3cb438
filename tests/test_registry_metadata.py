"""pyproject.toml follows the Comfy Registry's specification (docs.comfy.org/registry/specifications),
and the wheel it builds carries every subpackage and shipped file."""
import pathlib
import re
import tomllib

from PIL import Image

ROOT = pathlib.Path(__file__).resolve().parents[1]
META = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT, COMFY = META["project"], META["tool"]["comfy"]


def test_node_id_fits_the_registry_rules():
    name = PROJECT["name"]
    assert len(name) < 100
    assert re.fullmatch(r"[A-Za-z][A-Za-z0-9]*([-_.][A-Za-z0-9]+)*", name), "alphanumerics, single - _ . between"
    assert "comfyui" not in name.lower(), "the registry asks for a node id without 'ComfyUI'"


def test_version_is_semantic_and_in_the_changelog():
    version = PROJECT["version"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", version)
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert re.search(rf"^## \[{re.escape(version)}\]", changelog, re.M) or "## [Unreleased]" in changelog


def test_licence_file_matches_the_metadata():
    assert PROJECT["license"] == {"file": "LICENSE"}
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "License :: OSI Approved :: Apache Software License" in PROJECT["classifiers"]
    assets_readme = (ROOT / "assets" / "README.md").read_text()
    for f in sorted((ROOT / "assets").iterdir()):
        if f.suffix in (".png", ".webp", ".json", ".jpg"):
            assert f.name in assets_readme, f"assets/README.md does not say where {f.name} comes from"


def test_urls_and_classifiers():
    urls = PROJECT["urls"]
    for key in ("Repository", "Issues", "Documentation"):
        assert urls[key].startswith("https://"), key
    cls = PROJECT["classifiers"]
    assert any(c.startswith("Operating System ::") for c in cls)
    assert any(c.startswith(("Environment :: GPU", "Environment :: NPU")) for c in cls)
    try:
        from trove_classifiers import classifiers as valid
    except ImportError:
        valid = None
    if valid is not None:
        assert not [c for c in cls if c not in valid]


def test_tool_comfy_section():
    assert re.fullmatch(r"[a-z0-9][a-z0-9-]*", COMFY["PublisherId"])
    assert COMFY["DisplayName"]
    icon = COMFY["Icon"]
    m = re.fullmatch(r"https://raw\.githubusercontent\.com/[^/]+/[^/]+/main/(.+\.(png|svg|jpg|gif))", icon)
    assert m, icon
    local = ROOT / m.group(1)
    assert local.is_file(), f"the icon URL points at {m.group(1)}, which is not in the repository"
    with Image.open(local) as im:
        assert im.width <= 800 and im.height <= 400
    spec = COMFY["requires-comfyui"]
    oldest = re.fullmatch(r">=(\d+\.\d+\.\d+)", spec).group(1)
    assert oldest in (ROOT / "docs" / "INTEGRATION.md").read_text(), "requires-comfyui names the oldest tested ComfyUI"
    for folder in COMFY["includes"]:
        assert (ROOT / folder).is_dir(), folder


def test_the_wheel_lists_every_subpackage():
    st = META["tool"]["setuptools"]
    listed = set(st["packages"])
    for init in ROOT.glob("**/__init__.py"):
        rel = init.parent.relative_to(ROOT)
        if rel.parts and rel.parts[0] in ("tests", "benchmarks", "scripts", "build", ".venv", "assets"):
            continue
        if any(p.startswith(".") for p in rel.parts):
            continue
        name = ".".join(("comfyui_flipbook",) + rel.parts)
        assert name in listed, f"{name} is missing from [tool.setuptools] packages: a wheel would lack it"
