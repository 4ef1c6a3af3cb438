"""Writes the CPAB/CPABMM workflows (UI format + API twin) from compact descriptions.

Run: python scripts/build_workflows_cpab.py [NAME ...]   (with the pack importable as comfyui_flipbook)
"""
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from workflow_format import build, node_specs  # noqa: E402

CHARACTER = "flipbook_character.png"
DRIVING = "cpabmm_driving.webp"
CPABMM_MODEL = "cpabmm-vox-256.safetensors"

WORKFLOWS = {
    # Weight-free: the character's keypoints follow a Bezier wave, a CPAB warp renders it (CPU, seconds).
    "cpab_keypoint_warp": [
        {"id": 1, "type": "LoadImage", "pos": [40, 120], "size": [300, 360], "widgets": {"image": CHARACTER}},
        {"id": 2, "type": "FlipbookKeypointsFromJSON", "pos": [400, 40], "size": [340, 300],
         "links": {"image": (1, 0)}},
        {"id": 3, "type": "FlipbookBezierTrajectory", "pos": [400, 400], "size": [340, 260],
         "links": {"skeleton": (2, 0)}, "widgets": {"preset": "wave", "amplitude": 0.06, "frames": 24}},
        {"id": 4, "type": "FlipbookCPABKeypointWarp", "pos": [800, 40], "size": [340, 560],
         "links": {"image": (1, 0), "source_keypoints": (2, 0), "trajectory": (3, 0), "mask": (1, 1)}},
        {"id": 5, "type": "SaveAnimatedWEBP", "pos": [1200, 40], "size": [360, 420],
         "links": {"images": (4, 0)},
         "widgets": {"filename_prefix": "flipbook/cpab", "fps": 12.0, "lossless": False, "quality": 90}},
        {"id": 6, "type": "FlipbookFlowToImage", "pos": [1200, 520], "size": [300, 90],
         "links": {"flow": (4, 2)}},
        {"id": 7, "type": "PreviewImage", "pos": [1560, 520], "size": [340, 380], "links": {"images": (6, 0)}},
    ],
    # CPABMM motion transfer with a user-trained checkpoint (tiny random one from make-test-models).
    "cpabmm_motion_transfer": [
        {"id": 1, "type": "FlipbookCPABMMLoader", "pos": [40, 40], "size": [340, 130],
         "widgets": {"checkpoint": CPABMM_MODEL}},
        {"id": 2, "type": "LoadImage", "pos": [40, 230], "size": [300, 360], "widgets": {"image": CHARACTER}},
        {"id": 3, "type": "FlipbookLoadFrames", "pos": [40, 650], "size": [340, 150],
         "widgets": {"file": DRIVING}},
        {"id": 4, "type": "FlipbookCPABMMAnimate", "pos": [440, 40], "size": [340, 300],
         "links": {"model": (1, 0), "source": (2, 0), "driving": (3, 0)}},
        {"id": 5, "type": "SaveAnimatedWEBP", "pos": [840, 40], "size": [360, 420],
         "links": {"images": (4, 0)},
         "widgets": {"filename_prefix": "flipbook/cpabmm", "fps": 12.0, "lossless": False, "quality": 90}},
    ],
}


def main(names):
    specs = node_specs()
    for name in names or WORKFLOWS:
        ui, api = build(WORKFLOWS[name], specs)
        (ROOT / "workflows" / f"{name}.json").write_text(json.dumps(ui, indent=1) + "\n")
        (ROOT / "workflows" / "api" / f"{name}.json").write_text(json.dumps(api, indent=1) + "\n")
        print(f"workflows/{name}.json")


if __name__ == "__main__":
    main(sys.argv[1:])
