"""Writes workflows/poseanimate.jpg, the template card's thumbnail: the shipped character beside three of
the pose images PATA makes from the shipped dance (run with the pack importable as comfyui_flipbook)."""
import json
import pathlib

import numpy as np
from PIL import Image

from comfyui_flipbook.nodes.poseanimate import FlipbookPoseAlignTransition

ROOT = pathlib.Path(__file__).resolve().parents[1]


def main():
    src = json.loads((ROOT / "assets" / "flipbook_character_pose.json").read_text())
    drv = json.loads((ROOT / "assets" / "animatex_dance_poses.json").read_text())
    _, poses = FlipbookPoseAlignTransition().align(src, drv, 8, 2, "sequence", 128, 128, True, 0.3)
    tiles = [Image.open(ROOT / "assets" / "flipbook_character.png").convert("RGBA").resize((128, 128))]
    tiles += [Image.fromarray((poses[i].numpy() * 255).astype(np.uint8)) for i in (2, 4, 6)]
    card = Image.new("RGB", (256, 256), "white")
    for k, tile in enumerate(tiles):
        card.paste(tile, ((k % 2) * 128, (k // 2) * 128), tile if tile.mode == "RGBA" else None)
    card.save(ROOT / "workflows" / "poseanimate.jpg", quality=85)


if __name__ == "__main__":
    main()
