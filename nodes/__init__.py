"""Thin ComfyUI adapters, one module per family of nodes.

Every public module here (no leading underscore) that exports NODE_CLASS_MAPPINGS and
NODE_DISPLAY_NAME_MAPPINGS is a family of nodes; they are collected automatically, so a new family
needs no edit here. Each node's function is wrapped by :func:`.types.checked`: a linked input of the
wrong type fails with a clear error before the node runs.
"""
from __future__ import annotations

import importlib
import logging
import os
import pkgutil

from . import types

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}
IMPORT_ERRORS: dict[str, str] = {}

_log = logging.getLogger("comfyui_flipbook")

for _info in sorted(pkgutil.iter_modules([os.path.dirname(__file__)]), key=lambda m: m.name):
    if _info.name.startswith("_"):
        continue
    try:
        _mod = importlib.import_module(f".{_info.name}", __name__)
    except Exception as exc:  # one broken family must not hide the others in ComfyUI
        if os.environ.get("FLIPBOOK_STRICT_IMPORT"):
            raise
        IMPORT_ERRORS[_info.name] = repr(exc)
        _log.exception("ComfyUI-Flipbook: could not load nodes.%s", _info.name)
        continue
    NODE_CLASS_MAPPINGS.update({k: types.checked(v) for k, v in getattr(_mod, "NODE_CLASS_MAPPINGS", {}).items()})
    NODE_DISPLAY_NAME_MAPPINGS.update(getattr(_mod, "NODE_DISPLAY_NAME_MAPPINGS", {}))
