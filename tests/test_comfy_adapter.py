"""nodes/_comfy.py outside ComfyUI: user-given names never escape the model and input folders."""
import os

import pytest

from comfyui_flipbook.nodes import _comfy
from comfyui_flipbook.pipelines.errors import FlipbookInputError


@pytest.fixture
def models(tmp_path, monkeypatch):
    monkeypatch.setenv("FLIPBOOK_MODELS_DIR", str(tmp_path / "models"))
    (tmp_path / "models" / "cpabmm").mkdir(parents=True)
    (tmp_path / "models" / "cpabmm" / "a.safetensors").write_bytes(b"x")
    (tmp_path / "secret.safetensors").write_bytes(b"s")
    os.symlink(tmp_path / "secret.safetensors", tmp_path / "models" / "cpabmm" / "link.safetensors")
    return tmp_path


def test_model_path_resolves_inside_the_folder(models):
    assert _comfy.model_path("cpabmm", "a.safetensors") == str(models / "models" / "cpabmm" / "a.safetensors")
    assert "a.safetensors" in _comfy.list_models("cpabmm")


@pytest.mark.parametrize("name", ["../secret.safetensors", "/etc/passwd", "", "sub/../../secret.safetensors",
                                  "missing.safetensors"])
def test_model_path_refuses_escapes_and_missing_files(models, name):
    with pytest.raises(FlipbookInputError, match="cpabmm model"):
        _comfy.model_path("cpabmm", name)


def test_a_symlink_the_folder_lists_is_accepted_as_comfyui_accepts_it(models):
    assert "link.safetensors" in _comfy.list_models("cpabmm")       # ComfyUI's trust boundary: what it lists
    assert _comfy.model_path("cpabmm", "link.safetensors") == str(models / "secret.safetensors")


@pytest.mark.parametrize("name", ["../pyproject.toml", "/etc/passwd", "nope.png"])
def test_input_path_refuses_escapes(name):
    with pytest.raises(FlipbookInputError, match="input folder"):
        _comfy.input_image_path(name)
    assert os.path.isfile(_comfy.input_image_path("flipbook_character.png"))


def test_progress_callback_outside_comfyui_counts_steps():
    cb = _comfy.progress_callback(3, "test")
    for i in range(1, 4):
        cb(i, 3)                                        # a tqdm bar; must not raise
    assert not _comfy.in_comfyui()
