"""The one place that talks to ComfyUI. Everything is imported lazily, with plain fallbacks, so
the nodes import and run in plain Python and in tests without ComfyUI installed.
"""
from __future__ import annotations

import contextlib
import os

import torch

from ..pipelines.errors import FlipbookInputError
from ..pipelines.progress import StepCallback


def _try_import(name: str):
    try:
        return __import__(name, fromlist=["_"])
    except Exception:  # ComfyUI absent (plain Python, tests)
        return None


def in_comfyui() -> bool:
    return _try_import("comfy.model_management") is not None


# --- progress and cancel -------------------------------------------------------------------

# Extra cancel checks, called wherever ComfyUI's interrupt is checked: tests simulate the Cancel
# button through it (append a callable that raises once "cancelled"); empty in normal use.
INTERRUPT_HOOKS: list = []


def progress_callback(total: int, desc: str = "Flipbook") -> StepCallback:
    """A per-step callback for pipelines: ComfyUI's progress bar + cancel inside ComfyUI, a tqdm
    bar outside. The pipeline calls it as ``cb(step, total)`` after every step."""
    mm = _try_import("comfy.model_management")
    utils = _try_import("comfy.utils")
    if mm is None or utils is None:
        from ..pipelines.progress import tqdm_callback
        bar = tqdm_callback(desc, total)

        def plain(step: int, n: int) -> None:
            check_interrupted()
            bar(step, n)

        return plain
    bar = utils.ProgressBar(total)

    def cb(step: int, n: int) -> None:
        check_interrupted()
        bar.update_absolute(step, n)

    return cb


def preview_progress(total: int, desc: str = "Flipbook", max_size: int = 512):
    """``(callback, preview)`` for a loop with a live picture: ``callback(step, n)`` as
    :func:`progress_callback`; ``preview(step, image [H,W,3] 0..1)`` shows the picture on ComfyUI's
    progress bar (the sampler-preview slot), a no-op outside ComfyUI."""
    mm = _try_import("comfy.model_management")
    utils = _try_import("comfy.utils")
    if mm is None or utils is None:
        return progress_callback(total, desc), lambda step, image: None
    bar = utils.ProgressBar(total)

    def cb(step: int, n: int) -> None:
        check_interrupted()                  # ComfyUI's interrupt and the test hooks, as progress_callback
        bar.update_absolute(step, n)

    def preview(step: int, image: torch.Tensor) -> None:
        from PIL import Image

        arr = (image.detach().float().clamp(0, 1).cpu().numpy() * 255).round().astype("uint8")
        bar.update_absolute(step, total, ("JPEG", Image.fromarray(arr), max_size))

    return cb, preview


def check_interrupted() -> None:
    """Raise when the user has cancelled (ComfyUI's interrupt; the test hooks)."""
    for hook in INTERRUPT_HOOKS:
        hook()
    mm = _try_import("comfy.model_management")
    if mm is not None:
        mm.throw_exception_if_processing_interrupted()


def prompt_server():
    """ComfyUI's running PromptServer (to add routes), or None outside ComfyUI."""
    server = _try_import("server")
    return getattr(getattr(server, "PromptServer", None), "instance", None)


def executing_node_id():
    """Inside ComfyUI: the id of the node that is running now (None outside, or in an older ComfyUI)."""
    utils = _try_import("comfy_execution.utils")
    ctx = getattr(utils, "get_executing_context", lambda: None)() if utils is not None else None
    return None if ctx is None else ctx.node_id


# --- animated previews in the node ------------------------------------------------------------

PREVIEW_MAX_SIDE = 512       # px: a node preview, not an output (Save nodes write the real thing)
PREVIEW_MAX_FRAMES = 240     # longer animations are shown with every n-th frame


def with_animated_preview(result: tuple, frames, *, fps: float = 12.0):
    """A node's outputs plus, inside ComfyUI while the node runs, its frames shown in the node as an
    animation: ``{"ui": {"images": [...], "animated": (True,)}, "result": result}``, the form of core
    SaveAnimatedWEBP's preview (an animated WebP in ComfyUI's temp folder, downscaled to at most
    ``PREVIEW_MAX_SIDE``). Outside ComfyUI (plain Python, tests) ``result`` itself. The tensors are
    never changed; a preview that cannot be written is skipped with a warning."""
    fp = _try_import("folder_paths")
    if fp is None or executing_node_id() is None or not isinstance(frames, torch.Tensor) or frames.dim() != 4 \
            or frames.shape[0] < 1:
        return result
    try:
        ui = _write_preview(fp.get_temp_directory(), frames, fps)
    except Exception as exc:  # a preview must never fail the node
        import logging
        logging.getLogger("comfyui_flipbook").warning("could not write the animated preview: %s", exc)
        return result
    return {"ui": ui, "result": tuple(result)}


def _write_preview(folder: str, frames: torch.Tensor, fps: float) -> dict:
    import math
    import uuid

    from PIL import Image

    n = int(frames.shape[0])
    x = frames.detach()[::max(1, math.ceil(n / PREVIEW_MAX_FRAMES))][..., :3].float().cpu()
    h, w = x.shape[1:3]
    s = min(1.0, PREVIEW_MAX_SIDE / max(h, w))
    if s < 1.0:
        x = torch.nn.functional.interpolate(x.permute(0, 3, 1, 2), size=(max(1, round(h * s)), max(1, round(w * s))),
                                            mode="area").permute(0, 2, 3, 1)
    arr = (x.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    ims = [Image.fromarray(a) for a in arr]
    os.makedirs(folder, exist_ok=True)
    name = f"flipbook_preview_{uuid.uuid4().hex[:12]}.webp"
    ims[0].save(os.path.join(folder, name), format="WEBP", save_all=True, append_images=ims[1:], loop=0,
                duration=max(1, round(1000 / max(fps, 0.1))), quality=80, method=0)
    return {"images": [{"filename": name, "subfolder": "", "type": "temp"}], "animated": (len(ims) > 1,)}


# --- devices -------------------------------------------------------------------------------

def torch_device() -> torch.device:
    mm = _try_import("comfy.model_management")
    if mm is not None:
        return mm.get_torch_device()
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def offload_device() -> torch.device:
    mm = _try_import("comfy.model_management")
    if mm is not None:
        return mm.unet_offload_device()
    return torch.device("cpu")


def intermediate_device() -> torch.device:
    """Where node outputs (latents, embeddings) live between nodes: ComfyUI caches outputs, so
    tensors left on the GPU would pin its memory. The CPU unless ComfyUI runs --gpu-only."""
    mm = _try_import("comfy.model_management")
    if mm is not None:
        return mm.intermediate_device()
    return torch.device("cpu")


@contextlib.contextmanager
def on_compute_device(*modules: torch.nn.Module):
    """Models that live outside ComfyUI's model management: move ``modules`` to the compute device
    for the duration of a node's work (first asking ComfyUI to unload its own models to make room),
    then back to the offload device, also when the work raises (a cancel). Dtypes are kept.
    Outputs that outlive the node go to :func:`intermediate_device`."""
    device = torch_device()
    mm = _try_import("comfy.model_management")
    if mm is not None:
        size = sum(p.numel() * p.element_size() for m in modules for p in m.parameters())
        mm.free_memory(size + mm.minimum_inference_memory(), device)
    try:
        _move(modules, device)
        yield device
    finally:
        offload = offload_device()
        _move(modules, offload)
        if offload != device:
            free_memory()


def _move(modules, device) -> None:
    # Outside inference mode: moved parameters made under ComfyUI's inference_mode would be inference
    # tensors, which optimising nodes (frame alignment) cannot backpropagate through.
    with torch.inference_mode(False):
        for m in modules:
            m.to(device)


def free_memory() -> None:
    mm = _try_import("comfy.model_management")
    if mm is not None:
        mm.soft_empty_cache()
    elif torch.cuda.is_available():
        torch.cuda.empty_cache()


# --- gradients inside ComfyUI's inference_mode ------------------------------------------------

@contextlib.contextmanager
def grad_enabled():
    """ComfyUI runs every node under torch.inference_mode(); optimising nodes step out of it.
    Inputs created under inference mode must be cloned before they join a graph."""
    with torch.inference_mode(False), torch.enable_grad():
        yield


def detach_clone(x):
    """Clone tensors (recursively through dicts/lists) so they can be used outside inference mode."""
    if isinstance(x, torch.Tensor):
        return x.detach().clone()
    if isinstance(x, dict):
        return {k: detach_clone(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(detach_clone(v) for v in x)
    return x


# --- model folders -------------------------------------------------------------------------

_EXTRA_FOLDERS: dict[str, set[str]] = {}   # outside ComfyUI: folder name -> extensions


def models_root() -> str:
    """Outside ComfyUI: $FLIPBOOK_MODELS_DIR, else ./models."""
    fp = _try_import("folder_paths")
    if fp is not None:
        return fp.models_dir
    return os.path.abspath(os.environ.get("FLIPBOOK_MODELS_DIR", "models"))


def register_model_folder(name: str, extensions: set[str]) -> None:
    """Add a model folder of our own (e.g. ``cpabmm``) to ComfyUI's folder_paths registry."""
    fp = _try_import("folder_paths")
    if fp is not None:
        if name not in fp.folder_names_and_paths:
            fp.folder_names_and_paths[name] = ([os.path.join(fp.models_dir, name)], set(extensions))
        return
    _EXTRA_FOLDERS[name] = set(extensions)


def _folder(name: str) -> tuple[list[str], set[str]]:
    fp = _try_import("folder_paths")
    if fp is not None and name in fp.folder_names_and_paths:
        paths, exts = fp.folder_names_and_paths[name]
        return list(paths), set(exts)
    # resolved at call time, so $FLIPBOOK_MODELS_DIR set after import counts
    return [os.path.join(models_root(), name)], set(_EXTRA_FOLDERS.get(name, ()))


class FileList(list):
    """Combo options listed from a folder (models, input files): they differ from machine to machine,
    so the node-interface snapshot records the kind, not the names (tests/node_interface.py)."""


def list_models(name: str, *, dirs: bool = False) -> list[str]:
    """Files (or, with dirs=True, sub-folders) under a model folder; names relative to it."""
    fp = _try_import("folder_paths")
    if fp is not None and not dirs and name in fp.folder_names_and_paths:
        return FileList(sorted(fp.get_filename_list(name)))
    roots, exts = _folder(name)
    out = []
    for root in roots:
        if not os.path.isdir(root):
            continue
        if dirs:
            out += [d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))]
            continue
        for base, _, files in os.walk(root, followlinks=True):
            for f in files:
                if not exts or os.path.splitext(f)[1].lower() in exts:
                    out.append(os.path.relpath(os.path.join(base, f), root).replace(os.sep, "/"))
    return FileList(sorted(set(out)))


def model_path(folder: str, name: str, *, is_dir: bool = False) -> str:
    """Resolve a model name inside a model folder. A name that ComfyUI's folder_paths lists for that
    folder (symlinked files, extra_model_paths.yaml folders) is trusted, as ComfyUI trusts it, and resolved
    with folder_paths.get_full_path; any other name must lie inside the folder itself."""
    if (not isinstance(name, str) or not name or os.path.isabs(name)
            or ".." in name.replace("\\", "/").split("/")):
        raise FlipbookInputError(f"{folder} model: expected a name inside the '{folder}' models folder, got {name!r}")
    fp = _try_import("folder_paths")
    if fp is not None and not is_dir and folder in fp.folder_names_and_paths and name in fp.get_filename_list(folder):
        path = fp.get_full_path(folder, name)
        if path and os.path.isfile(path):
            return path
    roots, _ = _folder(folder)
    top = name.replace("\\", "/").split("/")[0]
    listed = None
    for root in roots:
        real_root = os.path.realpath(root)
        path = os.path.realpath(os.path.join(real_root, name))
        if os.path.commonpath([real_root, path]) == real_root and (os.path.isdir(path) if is_dir else os.path.isfile(path)):
            return path
        if listed is None:          # the walk only for a name that leads out of the folder (a symlink)
            listed = set(list_models(folder, dirs=is_dir))
        if name in listed or (is_dir and top in listed):      # listed: followed through symlinks
            base = os.path.join(root, top if is_dir else name)
            path = os.path.join(root, name)
            inside = (not is_dir or os.path.commonpath([os.path.realpath(base), os.path.realpath(path)])
                      == os.path.realpath(base))
            if inside and (os.path.isdir(path) if is_dir else os.path.isfile(path)):
                return os.path.realpath(path)
    raise FlipbookInputError(
        f"{folder} model: {name!r} not found in {roots}; put it in ComfyUI's models/{folder} folder "
        "(or run `python -m comfyui_flipbook make-test-models MODELS_DIR` for tiny test models)")


def input_image_path(name: str) -> str:
    """Resolve a file in ComfyUI's input folder (the pack's assets folder outside ComfyUI)."""
    fp = _try_import("folder_paths")
    root = fp.get_input_directory() if fp is not None else os.path.join(os.path.dirname(os.path.dirname(__file__)), "assets")
    root = os.path.realpath(root)
    path = os.path.realpath(os.path.join(root, name))
    if os.path.commonpath([root, path]) != root or not os.path.isfile(path):
        raise FlipbookInputError(f"file: expected a file inside the input folder {root}, got {name!r}")
    return path


def file_signature(name: str) -> str:
    """``IS_CHANGED`` key of an input file: its size and modification time (a file replaced under the
    same name re-runs); the name itself when it cannot be read (the node then reports the error)."""
    try:
        st = os.stat(input_image_path(name))
    except Exception:
        return f"missing:{name}"
    return f"{name}:{st.st_size}:{st.st_mtime_ns}"


def list_input_files(suffixes: tuple[str, ...], accept=None) -> list[str]:
    """Files with these suffixes in ComfyUI's input folder, plus the pack's assets of that kind
    (which ComfyUI copies there at start-up), sorted. ``accept(path) -> bool`` keeps only files of
    the right kind (e.g. pose files among all JSON files)."""
    fp = _try_import("folder_paths")
    assets = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets")
    roots = [assets] + ([fp.get_input_directory()] if fp is not None else [])
    names = set()
    for root in roots:
        if os.path.isdir(root):
            names.update(f for f in os.listdir(root) if f.lower().endswith(suffixes)
                         and (accept is None or accept(os.path.join(root, f))))
    return FileList(sorted(names))


# --- shipped assets (example inputs) ----------------------------------------------------------------

EXAMPLE_SUFFIXES = (".png", ".webp", ".jpg", ".json")


def install_example_inputs() -> list[str]:
    """Copy the pack's example pictures, frames and pose files into ComfyUI's input folder, so the
    shipped workflows run on a fresh ComfyUI with nothing copied by hand. Never overwrites a file."""
    import shutil

    fp = _try_import("folder_paths")
    if fp is None:
        return []
    src = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets")
    dst = fp.get_input_directory()
    copied = []
    try:
        os.makedirs(dst, exist_ok=True)
        for name in sorted(os.listdir(src)):
            target = os.path.join(dst, name)
            if name.lower().endswith(EXAMPLE_SUFFIXES) and not os.path.exists(target):
                shutil.copyfile(os.path.join(src, name), target)
                copied.append(target)
    except OSError as exc:  # a read-only input folder must not stop the pack from loading
        import logging
        logging.getLogger("comfyui_flipbook").warning("could not copy example inputs: %s", exc)
    return copied
