"""Writes the shipped workflows (UI format + API twin) from compact descriptions.

Run: python scripts/build_workflows.py [NAME ...]   (with the pack importable as comfyui_flipbook)
The UI files are what users drag into ComfyUI; tests/test_workflows.py checks both formats.
"""
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from workflow_format import build, node_specs  # noqa: E402

from comfyui_flipbook.pipelines.flipsketch.settings import FLIPSKETCH_MODEL  # noqa: E402

CHARACTER = "flipbook_character.png"
DRIVING = "cpabmm_driving.webp"
CPABMM_MODEL = "cpabmm-vox-256.safetensors"

WORKFLOWS = {
    # Foundation: the weight-free FlexiClip path, LoadImage → ... → SaveAnimatedWEBP.
    "clipart_bezier": [
        {"id": 1, "type": "LoadImage", "pos": [40, 120], "size": [300, 360], "widgets": {"image": CHARACTER}},
        {"id": 2, "type": "FlipbookKeypointsFromJSON", "pos": [380, 40], "size": [600, 520],
         "links": {"image": (1, 0)}},
        {"id": 3, "type": "FlipbookMeshBuilder", "pos": [1020, 40], "size": [320, 200],
         "links": {"image": (1, 0), "skeleton": (2, 0), "mask": (1, 1)}},
        {"id": 4, "type": "FlipbookBezierTrajectory", "pos": [380, 600], "size": [600, 580],
         "links": {"skeleton": (2, 0)}, "widgets": {"preset": "wave", "amplitude": 0.08, "frames": 24}},
        {"id": 5, "type": "FlipbookMeshDeform", "pos": [1020, 280], "size": [320, 130],
         "links": {"mesh": (3, 0), "trajectory": (4, 0)}},
        {"id": 6, "type": "FlipbookMeshRender", "pos": [1020, 450], "size": [320, 420],
         "links": {"animation": (5, 0)}},
        {"id": 7, "type": "SaveAnimatedWEBP", "pos": [1380, 40], "size": [360, 420],
         "links": {"images": (6, 0)},
         "widgets": {"filename_prefix": "flipbook/clipart", "fps": 12.0, "lossless": False, "quality": 90}},
        {"id": 8, "type": "FlipbookPreviewKeypoints", "pos": [1020, 1150], "size": [320, 140],
         "links": {"image": (1, 0), "skeleton": (2, 0), "mesh": (3, 0), "trajectory": (4, 0), "mask": (1, 1)}},
        {"id": 9, "type": "PreviewImage", "pos": [1380, 520], "size": [340, 380], "links": {"images": (8, 0)}},
        {"id": 10, "type": "FlipbookAnimationMetrics", "pos": [1020, 910], "size": [320, 200],
         "links": {"animation": (5, 0)}},
    ],
}

# Animate-X: a dance (OpenPose JSON) retargeted to the character's proportions drives the character.
WORKFLOWS.update({
    # Weight-free: the character's keypoints follow a Bezier wave, a CPAB warp renders it (CPU, seconds).
    "cpab_keypoint_warp": [
        {"id": 1, "type": "LoadImage", "pos": [40, 120], "size": [300, 360], "widgets": {"image": CHARACTER}},
        {"id": 2, "type": "FlipbookKeypointsFromJSON", "pos": [380, 40], "size": [600, 520],
         "links": {"image": (1, 0)}},
        {"id": 3, "type": "FlipbookBezierTrajectory", "pos": [380, 600], "size": [600, 580],
         "links": {"skeleton": (2, 0)}, "widgets": {"preset": "wave", "amplitude": 0.06, "frames": 24}},
        {"id": 4, "type": "FlipbookCPABKeypointWarp", "pos": [1020, 40], "size": [600, 1150],
         "links": {"image": (1, 0), "source_keypoints": (2, 0), "trajectory": (3, 0), "mask": (1, 1)}},
        {"id": 8, "type": "FlipbookCompositeBackground", "pos": [1660, 40], "size": [320, 130],
         "links": {"frames": (4, 0), "mask": (4, 1)}},
        {"id": 5, "type": "SaveAnimatedWEBP", "pos": [1660, 220], "size": [360, 420],
         "links": {"images": (8, 0)},
         "widgets": {"filename_prefix": "flipbook/cpab", "fps": 12.0, "lossless": False, "quality": 90}},
        {"id": 6, "type": "FlipbookFlowToImage", "pos": [1660, 700], "size": [300, 90],
         "links": {"flow": (4, 2)}},
        {"id": 7, "type": "PreviewImage", "pos": [1660, 830], "size": [340, 380], "links": {"images": (6, 0)}},
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
})

WORKFLOWS["animatex"] = [
    {"id": 1, "type": "LoadImage", "pos": [40, 40], "size": [300, 360], "widgets": {"image": CHARACTER},
     "title": "Character (reference)"},
    {"id": 2, "type": "FlipbookLoadPoseKeypoints", "pos": [40, 460], "size": [320, 200],
     "widgets": {"file": "animatex_dance_poses.json"}, "title": "Driving poses (dance)"},
    {"id": 3, "type": "FlipbookLoadPoseKeypoints", "pos": [40, 720], "size": [320, 200],
     "widgets": {"file": "flipbook_character_pose.json"}, "title": "Character pose"},
    {"id": 4, "type": "FlipbookPoseRetarget", "pos": [420, 460], "size": [320, 420],
     "links": {"poses": (2, 0), "reference_pose": (3, 0)}},
    {"id": 5, "type": "FlipbookPoseRender", "pos": [800, 620], "size": [320, 220], "links": {"poses": (4, 0)}},
    {"id": 6, "type": "PreviewImage", "pos": [1160, 620], "size": [300, 360], "links": {"images": (5, 0)}},
    {"id": 7, "type": "CLIPVisionLoader", "pos": [420, 40], "size": [320, 80],
     "widgets": {"clip_name": "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors"}},
    {"id": 8, "type": "FlipbookAnimateXPoseIndicator", "pos": [800, 40], "size": [320, 140],
     "links": {"clip_vision": (7, 0), "reference": (1, 0), "poses": (4, 0), "reference_pose": (3, 0),
               "reference_mask": (1, 1)}},
    {"id": 9, "type": "FlipbookAnimateXLoader", "pos": [420, 180], "size": [320, 160],
     "widgets": {"unet_name": "animate-x_ckpt.pth", "text_encoder": "open_clip_pytorch_model.bin"}},
    {"id": 10, "type": "FlipbookAnimateXSampler", "pos": [1160, 40], "size": [340, 460],
     "links": {"model": (9, 0), "reference": (1, 0), "pose_images": (5, 0), "motion": (8, 0),
               "reference_mask": (1, 1)}},
    {"id": 11, "type": "VAELoader", "pos": [1160, 520], "size": [320, 80],
     "widgets": {"vae_name": "vae-ft-mse-840000-ema-pruned.safetensors"}},
    {"id": 12, "type": "VAEDecode", "pos": [1540, 40], "size": [220, 60], "links": {"samples": (10, 0), "vae": (11, 0)}},
    {"id": 13, "type": "SaveAnimatedWEBP", "pos": [1800, 40], "size": [360, 420], "links": {"images": (12, 0)},
     "widgets": {"filename_prefix": "flipbook/animatex", "fps": 8.0, "lossless": False, "quality": 90}},
]

# FlipSketch: a sketch + a motion prompt -> a sketch animation (make-test-models writes a tiny random
# backbone under the checkpoint's name, so the file also runs on a CPU).
WORKFLOWS["flipsketch"] = [
    {"id": 1, "type": "LoadImage", "pos": [40, 420], "size": [340, 112], "title": "Sketch",
     "widgets": {"image": "flipsketch_cat_sketch.png"}},
    {"id": 2, "type": "FlipbookT2VLoader", "pos": [40, 80], "size": [340, 112], "title": "FlipSketch checkpoint",
     "widgets": {"model_dir": FLIPSKETCH_MODEL, "dtype": "auto"}},
    {"id": 3, "type": "FlipbookTextEncode", "pos": [420, 80], "size": [340, 112], "title": "Motion prompt",
     "links": {"model": (2, 0)}, "widgets": {"text": "a cat is walking"}},
    {"id": 4, "type": "FlipbookDDIMInvert", "pos": [420, 300], "size": [340, 346], "title": "Invert the sketch (x_T^r)",
     "links": {"model": (2, 0), "image": (1, 0)},
     "widgets": {"steps": 25, "guidance": 1.0, "repeat_frames": 5, "reduce": "mean_frames", "vae_range": "0_1",
                 "posterior": "sample", "size": 256, "seed": 0}},
    {"id": 5, "type": "FlipbookFlipSketchAttention", "pos": [420, 640], "size": [340, 216],
     "title": "Attention composition", "links": {"model": (2, 0)}},
    {"id": 6, "type": "FlipbookFlipSketchAlign", "pos": [420, 880], "size": [340, 216], "title": "Frame alignment"},
    {"id": 7, "type": "FlipbookFlipSketchSampler", "pos": [820, 200], "size": [340, 398], "title": "FlipSketch sampler",
     "links": {"model": (5, 1), "positive": (3, 0), "reference": (4, 0), "align": (6, 0)},
     "widgets": {"frames": 10, "steps": 25, "guidance": 9.0, "seeds": 1, "seed": 0}},
    {"id": 8, "type": "FlipbookVideoDecode", "pos": [1200, 200], "size": [340, 138], "title": "Decode frames",
     "links": {"model": (2, 0), "latent": (7, 0)}},
    {"id": 9, "type": "FlipbookSketchBinarise", "pos": [1200, 400], "size": [340, 138], "title": "Clean strokes (Otsu)",
     "links": {"frames": (8, 0)}},
    {"id": 10, "type": "SaveAnimatedWEBP", "pos": [1560, 200], "size": [340, 216], "title": "Save animation",
     "links": {"images": (9, 0)},
     "widgets": {"filename_prefix": "flipsketch", "fps": 8.0, "lossless": True, "quality": 80}},
]

# Shown in the UI file's "extra" (where a workflow's model comes from).
INFO = {
    "flipsketch": "FlipSketch: sketch + text -> sketch animation. Model: clone Hugging Face Hmrishav/t2v_sketch-lora "
                  "into ComfyUI/models/diffusers (the loader reads its checkpoint-2500 folder).",
}


def main(names):
    specs = node_specs()
    for name in names or WORKFLOWS:
        ui, api = build(WORKFLOWS[name], specs)
        if name in INFO:
            ui["extra"]["info"] = INFO[name]
        (ROOT / "workflows" / f"{name}.json").write_text(json.dumps(ui, indent=1) + "\n")
        (ROOT / "workflows" / "api" / f"{name}.json").write_text(json.dumps(api, indent=1) + "\n")
        print(f"workflows/{name}.json")


if __name__ == "__main__":
    main(sys.argv[1:])
