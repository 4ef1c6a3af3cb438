"""The command line finds every method's test-model writer by walking pipelines/ (no list to keep)."""
from comfyui_flipbook.cli import find_test_model_writers


def test_every_method_package_with_a_testmodels_module_is_found():
    writers = find_test_model_writers()
    names = {name.split(".pipelines.")[1] for name in writers}
    assert {"animatex.testmodels", "cpabmm.testmodels", "flexiclip.testmodels", "flipsketch.testmodels"} <= names
    assert all(name.endswith(".testmodels") for name in names)


def test_the_weight_free_clipart_rig_writes_no_model(tmp_path):
    write = next(w for n, w in find_test_model_writers().items() if n.endswith("flexiclip.testmodels"))
    assert write(str(tmp_path)) == [] and not any(tmp_path.iterdir())
