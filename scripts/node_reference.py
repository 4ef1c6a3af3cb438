"""Writes README.md's node reference from the registered nodes (names, types, descriptions).

Run: python scripts/node_reference.py   (tests/test_readme.py checks that README.md is current)
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
START, END = "<!-- node-reference:start -->", "<!-- node-reference:end -->"


def _first_sentence(text: str) -> str:
    text = " ".join(text.split())
    m = re.match(r"(.+?[.!?])(\s|$)", text)
    return (m.group(1) if m else text).replace("|", "\\|")


def _inputs(cls) -> str:
    it = cls.INPUT_TYPES()
    out = []
    for section in ("required", "optional"):
        for name, decl in it.get(section, {}).items():
            typ = decl[0]
            if isinstance(typ, (list, tuple)) or typ in ("INT", "FLOAT", "STRING", "BOOLEAN"):
                continue
            out.append(f"{typ}" + ("?" if section == "optional" else ""))
    return ", ".join(out) or "—"


def reference() -> str:
    from comfyui_flipbook import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

    by_cat: dict[str, list] = {}
    for name, cls in NODE_CLASS_MAPPINGS.items():
        by_cat.setdefault(cls.CATEGORY, []).append((NODE_DISPLAY_NAME_MAPPINGS.get(name, name), cls))
    lines = [START, f"{len(NODE_CLASS_MAPPINGS)} nodes. Inputs list the linked types (? = optional); "
             "widgets, defaults and ranges are in each node's tooltips.", ""]
    for cat in sorted(by_cat):
        lines += [f"#### {cat}", "", "| node | inputs → outputs | what it does |", "|---|---|---|"]
        for disp, cls in sorted(by_cat[cat], key=lambda t: t[0]):
            outs = ", ".join(cls.RETURN_TYPES) or "(saves / shows)"
            lines.append(f"| {disp} | {_inputs(cls)} → {outs} | {_first_sentence(cls.DESCRIPTION)} |")
        lines.append("")
    lines.append(END)
    return "\n".join(lines)


def update(text: str) -> str:
    block = reference()
    if START in text:
        return re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    return text + "\n" + block + "\n"


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT.parent))
    readme = ROOT / "README.md"
    readme.write_text(update(readme.read_text()))
    print("README.md node reference updated")
