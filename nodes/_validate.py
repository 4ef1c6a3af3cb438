"""Widget values checked against the node's own INPUT_TYPES before it runs.

ComfyUI's frontend keeps widgets inside their ranges, but API clients skip it, and ComfyUI's own
range check (``val < min`` / ``val > max``) lets NaN through. So every INT / FLOAT / BOOLEAN / STRING /
COMBO value that reaches a Flipbook node is checked here: the right Python type, finite, inside
min..max, one of the combo's options. A value that does not fit raises FlipbookInputError naming the
input, what was expected and what came. Values are passed on in their canonical type (an INT sent as
``5.0`` arrives as ``5``), as ComfyUI's own validation converts them.
"""
from __future__ import annotations

import math
import numbers

from ..pipelines.errors import FlipbookInputError

_MISSING = object()


def _got(value) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _bounds(opts: dict) -> str:
    lo, hi = opts.get("min"), opts.get("max")
    if lo is not None and hi is not None:
        return f" in [{lo}, {hi}]"
    if lo is not None:
        return f" >= {lo}"
    if hi is not None:
        return f" <= {hi}"
    return ""


def _check_range(name: str, kind: str, value, opts: dict):
    lo, hi = opts.get("min"), opts.get("max")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise FlipbookInputError(f"{name}: expected {kind}{_bounds(opts)}, got {value}")
    return value


def check_int(name: str, value, opts: dict) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise FlipbookInputError(f"{name}: expected an integer{_bounds(opts)}, got {_got(value)}")
    if not isinstance(value, numbers.Integral):
        f = float(value)
        if not math.isfinite(f) or not f.is_integer():
            raise FlipbookInputError(f"{name}: expected an integer{_bounds(opts)}, got {value!r}")
        value = int(f)
    return _check_range(name, "an integer", int(value), opts)


def check_float(name: str, value, opts: dict) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise FlipbookInputError(f"{name}: expected a number{_bounds(opts)}, got {_got(value)}")
    value = float(value)
    if not math.isfinite(value):
        raise FlipbookInputError(f"{name}: expected a finite number{_bounds(opts)}, got {value}")
    return _check_range(name, "a number", value, opts)


def check_bool(name: str, value, opts: dict) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, numbers.Integral) and value in (0, 1):
        return bool(value)
    raise FlipbookInputError(f"{name}: expected true or false, got {_got(value)}")


def check_string(name: str, value, opts: dict) -> str:
    if not isinstance(value, str):
        raise FlipbookInputError(f"{name}: expected a text (STRING), got {_got(value)}")
    return value


def check_combo(name: str, value, options, *, listed_files: bool) -> str:
    if not isinstance(value, str):
        raise FlipbookInputError(f"{name}: expected one of the listed names, got {_got(value)}")
    if listed_files:            # machine-dependent lists: the loaders resolve (and refuse) names themselves
        return value
    if value not in options:
        shown = ", ".join(map(repr, list(options)[:12])) + (", ..." if len(options) > 12 else "")
        raise FlipbookInputError(f"{name}: expected one of {shown}, got {value!r}")
    return value


_SCALARS = {"INT": check_int, "FLOAT": check_float, "BOOLEAN": check_bool, "STRING": check_string}


def widget_checks(decl: dict) -> dict:
    """``{input name: (required?, check(name, value) -> value)}`` for the widgets in an INPUT_TYPES dict."""
    from ._comfy import FileList

    out = {}
    for section in ("required", "optional"):
        for name, spec in (decl.get(section) or {}).items():
            if not isinstance(spec, (tuple, list)) or not spec:
                continue
            typ = spec[0]
            opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            if isinstance(typ, (list, tuple)):
                options = tuple(typ)
                listed = isinstance(typ, FileList)
                out[name] = (section == "required",
                             lambda n, v, o=options, f=listed: check_combo(n, v, o, listed_files=f))
            elif isinstance(typ, str) and typ in _SCALARS:
                fn = _SCALARS[typ]
                out[name] = (section == "required", lambda n, v, f=fn, o=opts: f(n, v, o))
    return out


def check_widgets(checks: dict, given: dict) -> dict:
    """The widget values of ``given`` checked (and converted); an optional widget sent as None is dropped
    so the node's own default applies."""
    fixed = {}
    for name, (required, check) in checks.items():
        value = given.get(name, _MISSING)
        if value is _MISSING:
            continue
        if value is None:
            if required:
                raise FlipbookInputError(f"{name}: expected a value, got None")
            fixed[name] = _MISSING
            continue
        fixed[name] = check(name, value)
    return fixed
