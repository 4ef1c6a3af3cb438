"""One registry of socket types (nodes/types.py): every FLIPBOOK_* name is declared once, with the class
it carries, and a value of the wrong type fails with a clear error before a node runs."""
import pathlib
import re

import pytest
import torch

from comfyui_flipbook import NODE_CLASS_MAPPINGS
from comfyui_flipbook.nodes import types as T
from comfyui_flipbook.pipelines.errors import FlipbookInputError

ROOT = pathlib.Path(__file__).resolve().parents[1]
ENV_VARS = {"FLIPBOOK_STRICT_IMPORT", "FLIPBOOK_MODELS_DIR"}


def test_every_type_name_is_written_once_in_the_registry():
    for path in sorted((ROOT / "nodes").glob("*.py")):
        if path.name == "types.py":
            continue
        literals = set(re.findall(r'"(FLIPBOOK_[A-Z0-9_]+)"', path.read_text())) - ENV_VARS
        assert not literals, f"{path.name} spells type names itself ({sorted(literals)}): use nodes/types.py"
    names = [m for m in re.findall(r'_declare\("(FLIPBOOK_[A-Z0-9_]+)"', (ROOT / "nodes" / "types.py").read_text())]
    assert len(names) == len(set(names)) == len(T.REGISTRY)


def test_every_flipbook_socket_of_every_node_is_registered():
    seen = set()
    for name, cls in NODE_CLASS_MAPPINGS.items():
        decl = cls.INPUT_TYPES()
        types = [spec[0] for section in ("required", "optional") for spec in (decl.get(section) or {}).values()]
        types += list(cls.RETURN_TYPES)
        for t in types:
            if isinstance(t, str) and t.startswith("FLIPBOOK_"):
                assert t in T.REGISTRY, f"{name}: {t} is not in nodes/types.py"
                seen.add(t)
    assert seen == set(T.REGISTRY), f"declared but unused: {set(T.REGISTRY) - seen}"
    for t in T.REGISTRY.values():
        assert isinstance(t.python_class(), type)


def test_a_wrongly_wired_value_names_the_input_and_both_types(inference):
    deform = NODE_CLASS_MAPPINGS["FlipbookMeshDeform"]()
    inversion = {"latents": [torch.zeros(1)], "timesteps": torch.zeros(1)}    # what DDIM Invert's second output carries
    with pytest.raises(FlipbookInputError) as err:
        getattr(deform, deform.FUNCTION)(mesh=inversion, trajectory=inversion, method="poisson_bilap", constraint_lambda=1.0)
    msg = str(err.value)
    assert msg.startswith("mesh: expected FLIPBOOK_MESH") and "got a dict" in msg
    save = NODE_CLASS_MAPPINGS["FlipbookVideoDecode"]()
    with pytest.raises(FlipbookInputError, match=r"latent: expected LATENT .* got a tensor of shape \(1, 4\)"):
        getattr(save, save.FUNCTION)(model=None, latent=torch.zeros(1, 4), chunk=1)


def test_checks_are_installed_once_and_keep_the_signature():
    cls = NODE_CLASS_MAPPINGS["FlipbookMeshDeform"]
    fn = getattr(cls, cls.FUNCTION)
    assert fn._flipbook_checked and T.checked(cls) is cls and getattr(cls, cls.FUNCTION) is fn
    import inspect
    assert "mesh" in inspect.signature(fn).parameters
