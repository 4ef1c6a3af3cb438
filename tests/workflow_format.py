"""ComfyUI workflow files: the UI (litegraph) format users drag in and the API format for POST /prompt.

Checks both against node signatures (ours from NODE_CLASS_MAPPINGS, ComfyUI's core nodes from the
table below, which mirrors ComfyUI's nodes.py / comfy_extras), converts UI to API the way the
frontend does, and builds both formats from one compact description (scripts/build_workflows.py).
"""
from __future__ import annotations

import os

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN"}
SEED_NAMES = {"seed", "noise_seed"}
UI_ONLY = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
FILE_COMBO = "__FILE__"          # a combo filled from a folder at run time (input images, models)

# name -> (required inputs, optional inputs, outputs); an input is (type, options).
# Combo inputs are lists; FILE_COMBO marks lists of files that exist only on a user's machine.
CORE_NODES = {
    "LoadImage": ({"image": ([FILE_COMBO], {"image_upload": True})}, {}, ("IMAGE", "MASK")),
    "SaveImage": ({"images": ("IMAGE", {}), "filename_prefix": ("STRING", {"default": "ComfyUI"})}, {}, ()),
    "PreviewImage": ({"images": ("IMAGE", {})}, {}, ()),
    "SaveAnimatedWEBP": ({"images": ("IMAGE", {}), "filename_prefix": ("STRING", {"default": "ComfyUI"}),
                          "fps": ("FLOAT", {"default": 6.0, "min": 0.01, "max": 1000.0}),
                          "lossless": ("BOOLEAN", {"default": True}),
                          "quality": ("INT", {"default": 80, "min": 0, "max": 100}),
                          "method": (["default", "fastest", "slowest"], {})}, {}, ()),
    "SaveAnimatedPNG": ({"images": ("IMAGE", {}), "filename_prefix": ("STRING", {"default": "ComfyUI"}),
                         "fps": ("FLOAT", {"default": 6.0, "min": 0.01, "max": 1000.0}),
                         "compress_level": ("INT", {"default": 4, "min": 0, "max": 9})}, {}, ()),
    "VAEDecode": ({"samples": ("LATENT", {}), "vae": ("VAE", {})}, {}, ("IMAGE",)),
    "VAEEncode": ({"pixels": ("IMAGE", {}), "vae": ("VAE", {})}, {}, ("LATENT",)),
    "VAELoader": ({"vae_name": ([FILE_COMBO], {})}, {}, ("VAE",)),
    "CLIPVisionLoader": ({"clip_name": ([FILE_COMBO], {})}, {}, ("CLIP_VISION",)),
    "CLIPVisionEncode": ({"clip_vision": ("CLIP_VISION", {}), "image": ("IMAGE", {}),
                          "crop": (["center", "none"], {})}, {}, ("CLIP_VISION_OUTPUT",)),
    "InvertMask": ({"mask": ("MASK", {})}, {}, ("MASK",)),
    "ImageScale": ({"image": ("IMAGE", {}),
                    "upscale_method": (["nearest-exact", "bilinear", "area", "bicubic", "lanczos"], {}),
                    "width": ("INT", {"default": 512, "min": 0, "max": 16384}),
                    "height": ("INT", {"default": 512, "min": 0, "max": 16384}),
                    "crop": (["disabled", "center"], {})}, {}, ("IMAGE",)),
}

# Nodes of other packs that workflows/external/ uses (those files say which pack they need); their
# signatures as the pack declares them. Shipped top-level workflows never use these.
EXTERNAL_NODES = {
    # comfyui_controlnet_aux, node_wrappers/dwpose.py (DWPose_Preprocessor): image + optional widgets
    "DWPreprocessor": ({"image": ("IMAGE", {})},
                       {"detect_hand": (["enable", "disable"], {"default": "enable"}),
                        "detect_body": (["enable", "disable"], {"default": "enable"}),
                        "detect_face": (["enable", "disable"], {"default": "enable"}),
                        "resolution": ("INT", {"default": 512, "min": 64, "max": 16384, "step": 64}),
                        "bbox_detector": (["None", "yolox_l.torchscript.pt", "yolox_l.onnx", "yolo_nas_l_fp16.onnx",
                                           "yolo_nas_m_fp16.onnx", "yolo_nas_s_fp16.onnx"], {"default": "yolox_l.onnx"}),
                        "pose_estimator": (["dw-ll_ucoco_384_bs5.torchscript.pt", "dw-ll_ucoco_384.onnx",
                                            "dw-ll_ucoco.onnx"], {"default": "dw-ll_ucoco_384_bs5.torchscript.pt"}),
                        "scale_stick_for_xinsr_cn": (["disable", "enable"], {"default": "disable"})},
                       ("IMAGE", "POSE_KEYPOINT")),
}


def node_specs(external: bool = False) -> dict:
    """Signatures of ComfyUI's core nodes (the table above), the pack's nodes and, with ``external``,
    the other packs' nodes of EXTERNAL_NODES."""
    from comfyui_flipbook import NODE_CLASS_MAPPINGS

    specs = dict(CORE_NODES, **(EXTERNAL_NODES if external else {}))
    for name, cls in NODE_CLASS_MAPPINGS.items():
        it = cls.INPUT_TYPES()
        specs[name] = ({k: _norm(v) for k, v in it.get("required", {}).items()},
                       {k: _norm(v) for k, v in it.get("optional", {}).items()},
                       tuple(cls.RETURN_TYPES))
    return specs


def _norm(decl):
    typ = decl[0]
    opts = decl[1] if len(decl) > 1 else {}
    return (list(typ) if isinstance(typ, (list, tuple)) else typ), dict(opts)


def is_widget(typ) -> bool:
    return isinstance(typ, list) or typ in WIDGET_TYPES


def widget_names(spec) -> list[str]:
    """Names of widget_values entries in order, as the frontend stores them (seed adds a control)."""
    req, opt, _ = spec
    names = []
    for name, (typ, opts) in list(req.items()) + list(opt.items()):
        if not is_widget(typ) or opts.get("forceInput"):
            continue
        names.append(name)
        if name in SEED_NAMES or opts.get("control_after_generate"):
            names.append("control_after_generate")
        if opts.get("image_upload"):
            names.append("upload")
    return names


def check_value(where: str, name: str, typ, opts: dict, value, assets_dir: str | None) -> list[str]:
    errs = []
    if isinstance(typ, list):
        if typ == [FILE_COMBO]:
            if assets_dir and opts.get("image_upload") and not os.path.isfile(os.path.join(assets_dir, str(value))):
                errs.append(f"{where}: {name}={value!r} is not a picture shipped in assets/")
        elif value not in typ:
            errs.append(f"{where}: {name}={value!r} not among {typ}")
        return errs
    if typ == "BOOLEAN" and not isinstance(value, bool):
        errs.append(f"{where}: {name}={value!r} is not a boolean")
    elif typ == "STRING" and not isinstance(value, str):
        errs.append(f"{where}: {name}={value!r} is not a string")
    elif typ in ("INT", "FLOAT"):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (typ == "INT" and not float(value).is_integer()):
            errs.append(f"{where}: {name}={value!r} is not {typ}")
        else:
            if "min" in opts and value < opts["min"]:
                errs.append(f"{where}: {name}={value} below min {opts['min']}")
            if "max" in opts and value > opts["max"]:
                errs.append(f"{where}: {name}={value} above max {opts['max']}")
    return errs


def _types_match(out_type: str, in_type) -> bool:
    return out_type == in_type or out_type == "*" or in_type == "*"


def check_api(api: dict, specs: dict, assets_dir: str | None = None) -> list[str]:
    errs = []
    for nid, node in api.items():
        ct = node.get("class_type")
        where = f"node {nid} ({ct})"
        if ct not in specs:
            errs.append(f"{where}: unknown node type")
            continue
        req, opt, _ = specs[ct]
        inputs = node.get("inputs", {})
        for name in inputs:
            if name not in req and name not in opt:
                errs.append(f"{where}: unknown input {name!r}")
        for name, (typ, opts) in list(req.items()) + list(opt.items()):
            if name not in inputs:
                if name in req:
                    errs.append(f"{where}: required input {name!r} missing")
                continue
            v = inputs[name]
            if isinstance(v, list) and len(v) == 2 and isinstance(v[0], str):
                src = api.get(v[0])
                if src is None or src.get("class_type") not in specs:
                    errs.append(f"{where}: input {name!r} links to missing node {v[0]}")
                    continue
                outs = specs[src["class_type"]][2]
                if not 0 <= v[1] < len(outs):
                    errs.append(f"{where}: input {name!r} links to output {v[1]} of {src['class_type']}, which has {len(outs)}")
                elif not _types_match(outs[v[1]], typ if not isinstance(typ, list) else "COMBO"):
                    errs.append(f"{where}: input {name!r} wants {typ}, gets {outs[v[1]]}")
            elif not is_widget(typ):
                errs.append(f"{where}: input {name!r} of type {typ} must be linked, got value {v!r}")
            else:
                errs += check_value(where, name, typ, opts, v, assets_dir)
    return errs


def ui_to_api(ui: dict, specs: dict, *, fill_defaults: bool = False) -> dict:
    """What the frontend's graphToPrompt sends for a UI workflow (no UI-only nodes, bypassed none).

    ``fill_defaults``: a workflow saved before widgets were added holds fewer values; the frontend
    gives the missing (trailing) widgets their defaults, and so does this."""
    links = {l[0]: l for l in ui.get("links", [])}
    api = {}
    for node in ui["nodes"]:
        if node["type"] in UI_ONLY or node.get("mode", 0) in (2, 4):
            continue
        spec = specs[node["type"]]
        inputs = {}
        values = list(node.get("widgets_values") or [])
        names = widget_names(spec)
        if fill_defaults and len(values) < len(names):
            allin = {**spec[0], **spec[1]}
            for name in names[len(values):]:
                if name in ("control_after_generate", "upload"):
                    values.append(None)
                else:
                    typ, opts = allin[name]
                    values.append(opts.get("default", typ[0] if isinstance(typ, list) and typ else None))
        for name, value in zip(names, values):
            if name not in ("control_after_generate", "upload"):
                inputs[name] = value
        for inp in node.get("inputs", []):
            if inp.get("link") is not None:
                l = links[inp["link"]]
                inputs[inp["name"]] = [str(l[1]), l[2]]
        api[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return api


def check_ui(ui: dict, specs: dict, assets_dir: str | None = None) -> list[str]:
    errs = []
    nodes = {n["id"]: n for n in ui.get("nodes", [])}
    for l in ui.get("links", []):
        lid, src, sslot, dst, dslot, typ = l[:6]
        if src not in nodes or dst not in nodes:
            errs.append(f"link {lid}: connects missing nodes {src}->{dst}")
            continue
        s, d = nodes[src], nodes[dst]
        if s["type"] in specs and sslot >= len(specs[s["type"]][2]):
            errs.append(f"link {lid}: {s['type']} has no output {sslot}")
        elif s["type"] in specs and not _types_match(specs[s["type"]][2][sslot], typ):
            errs.append(f"link {lid}: declared {typ} but {s['type']} output {sslot} is {specs[s['type']][2][sslot]}")
        if dslot >= len(d.get("inputs", [])) or d["inputs"][dslot].get("link") != lid:
            errs.append(f"link {lid}: target slot {dslot} of node {dst} does not point back to it")
        if lid not in (s.get("outputs") or [{}] * (sslot + 1))[sslot].get("links", []) if sslot < len(s.get("outputs", [])) else True:
            errs.append(f"link {lid}: output {sslot} of node {src} does not list it")
    for nid, n in nodes.items():
        if n["type"] in UI_ONLY:
            continue
        where = f"node {nid} ({n['type']})"
        if n["type"] not in specs:
            errs.append(f"{where}: unknown node type")
            continue
        req, opt, outs = specs[n["type"]]
        allin = {**req, **opt}
        for inp in n.get("inputs", []):
            if inp["name"] not in allin:
                errs.append(f"{where}: unknown input {inp['name']!r}")
            elif not is_widget(allin[inp["name"]][0]) and not _types_match(inp.get("type"), allin[inp["name"]][0]):
                errs.append(f"{where}: input {inp['name']!r} declared {inp.get('type')}, node wants {allin[inp['name']][0]}")
        linked = {i["name"] for i in n.get("inputs", []) if i.get("link") is not None}
        for name, (typ, _) in req.items():
            if not is_widget(typ) and name not in linked:
                errs.append(f"{where}: required input {name!r} is not connected")
        names = widget_names(specs[n["type"]])
        values = n.get("widgets_values") or []
        if len(values) != len(names):
            errs.append(f"{where}: {len(values)} widget values for widgets {names}")
        for name, v in zip(names, values):
            if name == "control_after_generate":
                if v not in ("fixed", "increment", "decrement", "randomize"):
                    errs.append(f"{where}: control_after_generate={v!r}")
            elif name != "upload":
                errs += check_value(where, name, *allin[name], v, assets_dir)
        for i, o in enumerate(n.get("outputs", [])):
            if i < len(outs) and o.get("type") != outs[i]:
                errs.append(f"{where}: output {i} declared {o.get('type')}, node returns {outs[i]}")
    return errs


def build(nodes: list[dict], specs: dict) -> tuple[dict, dict]:
    """Both formats from a compact description.

    Each node: ``{"id": 1, "type": "LoadImage", "pos": [x, y], "widgets": {name: value},
    "links": {input_name: (src_id, src_slot)}, "size": [w, h] (optional), "title": ... (optional)}``.
    Widgets not given take their declared defaults.
    """
    ui_nodes, ui_links = [], []
    by_id = {n["id"]: n for n in nodes}
    out_links: dict[tuple[int, int], list[int]] = {}
    lid = 0
    link_of: dict[tuple[int, str], int] = {}
    for n in nodes:
        req, opt, _ = specs[n["type"]]
        allin = {**req, **opt}
        for name, (src, slot) in n.get("links", {}).items():
            lid += 1
            link_of[(n["id"], name)] = lid
            out_links.setdefault((src, slot), []).append(lid)
            src_type = specs[by_id[src]["type"]][2][slot]
            ui_links.append([lid, src, slot, n["id"], None, src_type])
    for order, n in enumerate(nodes):
        spec = specs[n["type"]]
        req, opt, outs = spec
        allin = {**req, **opt}
        inputs = []
        for name, (typ, opts) in allin.items():
            if is_widget(typ):
                continue
            if (n["id"], name) in link_of or name in req:
                inputs.append({"name": name, "type": typ, "link": link_of.get((n["id"], name))})
        for slot, inp in enumerate(inputs):
            for l in ui_links:
                if l[0] == inp["link"]:
                    l[4] = slot
        values = []
        for name in widget_names(spec):
            if name == "control_after_generate":
                values.append("fixed")
            elif name == "upload":
                values.append("image")
            else:
                typ, opts = allin[name]
                default = opts.get("default", typ[0] if isinstance(typ, list) else None)
                values.append(n.get("widgets", {}).get(name, default))
        cls_names = _return_names(n["type"])
        outputs = [{"name": cls_names[i] if cls_names else t, "type": t, "links": out_links.get((n["id"], i), []),
                    "slot_index": i} for i, t in enumerate(outs)]
        node = {"id": n["id"], "type": n["type"], "pos": n["pos"], "size": n.get("size", [320, 120]),
                "flags": {}, "order": order, "mode": 0, "inputs": inputs, "outputs": outputs,
                "properties": {"Node name for S&R": n["type"]}, "widgets_values": values}
        if "title" in n:
            node["title"] = n["title"]
        ui_nodes.append(node)
    ui = {"last_node_id": max(by_id), "last_link_id": lid, "nodes": ui_nodes, "links": ui_links,
          "groups": [], "config": {}, "extra": {"ds": {"scale": 0.8, "offset": [0, 0]}}, "version": 0.4}
    return ui, ui_to_api(ui, specs)


def fit_view(nodes: list, window: tuple[int, int] = (1540, 920), margin: float = 10.0, largest: float = 0.8,
             title: float = 30.0) -> dict:
    """The saved view (extra.ds) that shows every node, title bars included, in a browser window of
    ``window`` canvas-area pixels (a 1600x1000 window less the frontend's side bar and menu), at no more
    than ``largest`` scale: the frontend restores it when the file is opened."""
    x0 = min(n["pos"][0] for n in nodes)
    y0 = min(n["pos"][1] for n in nodes) - title
    x1 = max(n["pos"][0] + n["size"][0] for n in nodes)
    y1 = max(n["pos"][1] + n["size"][1] for n in nodes)
    scale = min(largest, (window[0] - 2 * margin) / (x1 - x0), (window[1] - 2 * margin) / (y1 - y0))
    scale = int(scale * 1000) / 1000                     # rounded down: still fits
    return {"scale": scale, "offset": [round(margin / scale - x0, 1), round(margin / scale - y0, 1)]}


def _return_names(node_type: str):
    from comfyui_flipbook import NODE_CLASS_MAPPINGS

    cls = NODE_CLASS_MAPPINGS.get(node_type)
    return list(getattr(cls, "RETURN_NAMES", []) or []) if cls else None
