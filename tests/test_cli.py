"""The command line finds every method's test-model writer by walking pipelines/ (no list to keep)."""
from comfyui_flipbook.cli import find_test_model_writers


def test_every_method_package_with_a_testmodels_module_is_found():
    writers = find_test_model_writers()
    names = {name.split(".pipelines.")[1] for name in writers}
    assert {"animatex.testmodels", "cpabmm.testmodels", "flexiclip.testmodels", "flipsketch.testmodels"} <= names
    assert all(name.endswith(".testmodels") for name in names)


def test_flexiclip_writes_only_the_sds_workflow_models(tmp_path):
    """The weight-free rig needs none; the SDS workflow loads a T2V folder and an X-CLIP folder."""
    from comfyui_flipbook.pipelines.flexiclip.settings import T2V_MODEL, XCLIP_MODEL

    write = next(w for n, w in find_test_model_writers().items() if n.endswith("flexiclip.testmodels"))
    write(str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["diffusers", "xclip"]
    assert [p.name for p in (tmp_path / "diffusers").iterdir()] == [T2V_MODEL]
    assert [p.name for p in (tmp_path / "xclip").iterdir()] == [XCLIP_MODEL]
