"""The `>>>` examples in pipelines/ docstrings run (doctest over every module of the package)."""
import doctest
import importlib
import pkgutil

import pytest

import comfyui_flipbook.pipelines as P

MODULES = sorted(m.name for m in pkgutil.walk_packages(P.__path__, P.__name__ + "."))


def test_there_are_examples():
    finder = doctest.DocTestFinder()
    found = sum(len(t.examples) for m in MODULES for t in finder.find(importlib.import_module(m)))
    assert found >= 1


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} examples failed"
