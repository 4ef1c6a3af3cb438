"""The command line finds every method's test-model writer by walking pipelines/ (no list to keep)."""
from comfyui_flipbook.cli import find_test_model_writers


def test_every_method_package_with_a_testmodels_module_is_found():
    writers = find_test_model_writers()
    names = {name.split(".pipelines.")[1] for name in writers}
    assert {"cpabmm.testmodels", "flexiclip.testmodels", "animatex.testmodels"} <= names
    # FlipSketch writes its backbone either as a one-module method or from its package's testmodels
    assert names & {"flipsketch", "flipsketch.testmodels"}
    assert not names & {"coords", "bezier", "mesh", "skeleton"}          # building blocks write nothing


def test_the_weight_free_clipart_rig_writes_no_model(tmp_path):
    write = next(w for n, w in find_test_model_writers().items() if n.endswith("flexiclip.testmodels"))
    assert write(str(tmp_path)) == [] and not any(tmp_path.iterdir())
