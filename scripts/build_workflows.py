"""Writes the shipped workflows (UI format + API twin) from compact descriptions.

Run: python scripts/build_workflows.py [NAME ...]   (with the pack importable as comfyui_flipbook)
The UI files are what users drag into ComfyUI; tests/test_workflows.py checks both formats.
"""
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from workflow_format import build, fit_view, node_specs  # noqa: E402

from comfyui_flipbook.pipelines.animatex.testmodels import CLIP_VISION_NAME as CLIP_VISION  # noqa: E402
from comfyui_flipbook.pipelines.flexiclip.settings import T2V_MODEL as FLEXICLIP_T2V  # noqa: E402
from comfyui_flipbook.pipelines.flexiclip.settings import XCLIP_MODEL as FLEXICLIP_XCLIP  # noqa: E402
from comfyui_flipbook.pipelines.flipsketch.settings import FLIPSKETCH_MODEL  # noqa: E402
from comfyui_flipbook.pipelines.poseanimate.settings import (CONTROLNET_FILE as PA_CN_FILE,  # noqa: E402
                                                            CONTROLNET_MODEL as PA_CN, SD_FILE as PA_SD_FILE,
                                                            SD_MODEL as PA_SD)

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
        {"id": 9, "type": "PreviewImage", "pos": [1380, 640], "size": [340, 380], "links": {"images": (8, 0)}},
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
        {"id": 6, "type": "FlipbookFlowToImage", "pos": [1660, 780], "size": [300, 90],
         "links": {"flow": (4, 2)}},
        {"id": 7, "type": "PreviewImage", "pos": [1660, 910], "size": [340, 380], "links": {"images": (6, 0)}},
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
    {"id": 4, "type": "FlipbookPoseRetarget", "pos": [400, 460], "size": [320, 420],
     "links": {"poses": (2, 0), "reference_pose": (3, 0)}},
    {"id": 5, "type": "FlipbookPoseRender", "pos": [760, 460], "size": [320, 220], "links": {"poses": (4, 0)}},
    {"id": 6, "type": "PreviewImage", "pos": [1120, 580], "size": [300, 360], "links": {"images": (5, 0)}},
    {"id": 7, "type": "CLIPVisionLoader", "pos": [400, 40], "size": [320, 80],
     "widgets": {"clip_name": "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors"}},
    {"id": 8, "type": "FlipbookAnimateXPoseIndicator", "pos": [760, 40], "size": [320, 140],
     "links": {"clip_vision": (7, 0), "reference": (1, 0), "poses": (4, 0), "reference_pose": (3, 0),
               "reference_mask": (1, 1)}},
    {"id": 9, "type": "FlipbookAnimateXLoader", "pos": [400, 180], "size": [320, 160],
     "widgets": {"unet_name": "animate-x_ckpt.pth", "text_encoder": "open_clip_pytorch_model.bin"}},
    {"id": 10, "type": "FlipbookAnimateXSampler", "pos": [1120, 40], "size": [340, 460],
     "links": {"model": (9, 0), "reference": (1, 0), "pose_images": (5, 0), "motion": (8, 0),
               "reference_mask": (1, 1)}},
    {"id": 11, "type": "VAELoader", "pos": [760, 260], "size": [320, 80],
     "widgets": {"vae_name": "vae-ft-mse-840000-ema-pruned.safetensors"}},
    {"id": 12, "type": "VAEDecode", "pos": [1500, 40], "size": [220, 60], "links": {"samples": (10, 0), "vae": (11, 0)}},
    {"id": 13, "type": "SaveAnimatedWEBP", "pos": [1500, 180], "size": [360, 420], "links": {"images": (12, 0)},
     "widgets": {"filename_prefix": "flipbook/animatex", "fps": 8.0, "lossless": False, "quality": 90}},
]

# FlipSketch: a sketch + a motion prompt -> a sketch animation (make-test-models writes a tiny random
# backbone under the checkpoint's name, so the file also runs on a CPU).
WORKFLOWS["flipsketch"] = [
    {"id": 1, "type": "LoadImage", "pos": [40, 220], "size": [340, 420], "title": "Sketch",
     "widgets": {"image": "flipsketch_cat_sketch.png"}},
    {"id": 2, "type": "FlipbookT2VLoader", "pos": [40, 40], "size": [340, 112], "title": "FlipSketch checkpoint",
     "widgets": {"model_dir": FLIPSKETCH_MODEL, "dtype": "auto"}},
    {"id": 3, "type": "FlipbookTextEncode", "pos": [420, 40], "size": [340, 112], "title": "Motion prompt",
     "links": {"model": (2, 0)}, "widgets": {"text": "a cat is walking"}},
    {"id": 4, "type": "FlipbookDDIMInvert", "pos": [420, 220], "size": [340, 346], "title": "Invert the sketch (x_T^r)",
     "links": {"model": (2, 0), "image": (1, 0)},
     "widgets": {"steps": 25, "guidance": 1.0, "repeat_frames": 5, "reduce": "mean_frames", "vae_range": "0_1",
                 "posterior": "sample", "size": 256, "seed": 0}},
    {"id": 5, "type": "FlipbookFlipSketchAttention", "pos": [420, 630], "size": [340, 216],
     "title": "Attention composition", "links": {"model": (2, 0)}},
    {"id": 6, "type": "FlipbookFlipSketchAlign", "pos": [800, 630], "size": [340, 216], "title": "Frame alignment"},
    {"id": 7, "type": "FlipbookFlipSketchSampler", "pos": [800, 40], "size": [340, 398], "title": "FlipSketch sampler",
     "links": {"model": (5, 1), "positive": (3, 0), "reference": (4, 0), "align": (6, 0)},
     "widgets": {"frames": 10, "steps": 25, "guidance": 9.0, "seeds": 1, "seed": 0}},
    {"id": 8, "type": "FlipbookVideoDecode", "pos": [1180, 40], "size": [340, 138], "title": "Decode frames",
     "links": {"model": (2, 0), "latent": (7, 0)}},
    {"id": 9, "type": "FlipbookSketchBinarise", "pos": [1180, 240], "size": [340, 138], "title": "Clean strokes (Otsu)",
     "links": {"frames": (8, 0)}},
    {"id": 10, "type": "SaveAnimatedWEBP", "pos": [1560, 40], "size": [340, 216], "title": "Save animation",
     "links": {"images": (9, 0)},
     "widgets": {"filename_prefix": "flipsketch", "fps": 8.0, "lossless": True, "quality": 80}},
]

# FlexiClip's learned half: the character's keypoints, a wave preset as the initial curves, the video SDS
# optimiser (ModelScope T2V, corrector on) -> render -> WEBP, and the two scores. A few iterations only:
# the Note says how many the papers run.
WORKFLOWS["flexiclip_sds"] = [
    {"id": 1, "type": "LoadImage", "pos": [40, 120], "size": [300, 360], "widgets": {"image": CHARACTER},
     "title": "Clipart"},
    {"id": 2, "type": "FlipbookKeypointsFromJSON", "pos": [400, 40], "size": [340, 300], "links": {"image": (1, 0)}},
    {"id": 3, "type": "FlipbookMeshBuilder", "pos": [800, 40], "size": [320, 200],
     "links": {"image": (1, 0), "skeleton": (2, 0), "mask": (1, 1)}},
    {"id": 4, "type": "FlipbookBezierTrajectory", "pos": [800, 320], "size": [320, 260], "title": "Initial curves (preset)",
     "links": {"skeleton": (2, 0)},
     "widgets": {"preset": "wave", "amplitude": 0.06, "frames": 24, "loop": "aniclipart", "cycles": 2}},
    {"id": 5, "type": "FlipbookT2VLoader", "pos": [400, 420], "size": [340, 112], "title": "ModelScope T2V",
     "widgets": {"model_dir": FLEXICLIP_T2V, "dtype": "auto"}},
    {"id": 6, "type": "FlipbookFlexiClipCorrector", "pos": [400, 600], "size": [340, 200]},
    {"id": 7, "type": "FlipbookFlexiClipSDS", "pos": [1180, 40], "size": [360, 620], "title": "Video SDS optimiser",
     "links": {"mesh": (3, 0), "trajectory": (4, 0), "model": (5, 0), "corrector": (6, 0)},
     "widgets": {"prompt": "a cartoon character is dancing", "iterations": 3}},
    {"id": 8, "type": "FlipbookMeshRender", "pos": [1600, 40], "size": [320, 110], "links": {"animation": (7, 1)}},
    {"id": 9, "type": "SaveAnimatedWEBP", "pos": [1980, 40], "size": [360, 420], "links": {"images": (8, 0)},
     "widgets": {"filename_prefix": "flipbook/flexiclip_sds", "fps": 8.0, "lossless": False, "quality": 90}},
    {"id": 10, "type": "CLIPVisionLoader", "pos": [1180, 720], "size": [320, 80], "widgets": {"clip_name": CLIP_VISION}},
    {"id": 11, "type": "FlipbookCLIPImageSimilarity", "pos": [1600, 520], "size": [320, 130],
     "links": {"clip_vision": (10, 0), "frames": (8, 0), "reference": (1, 0)}, "widgets": {"max_frames": 8}},
    {"id": 12, "type": "FlipbookXCLIPLoader", "pos": [1180, 860], "size": [320, 80], "widgets": {"model_dir": FLEXICLIP_XCLIP}},
    {"id": 13, "type": "FlipbookXCLIPSimilarity", "pos": [1600, 720], "size": [320, 130],
     "links": {"xclip": (12, 0), "frames": (8, 0)}, "widgets": {"text": "a cartoon character is dancing"}},
]

# Note nodes (UI file only), placed with the workflow.
NOTES = {
    "flexiclip_sds": ([40, 560], [320, 260],
                      "FlexiClip video SDS. The optimiser is set to 3 iterations so that this workflow runs in a "
                      "minute on a CPU with the tiny test models (make-test-models). For real results set iterations "
                      "to 1000 (FlexiClip) or 500 (AniClipart) and load ModelScope text-to-video-ms-1.7b (clone "
                      "ali-vilab/text-to-video-ms-1.7b into models/diffusers; CC BY-NC weights) on a GPU. The X-CLIP "
                      "score wants microsoft/xclip-base-patch32 in models/xclip."),
}

# PoseAnimate: the character + a dance (OpenPose JSON), PATA -> inversion -> PACM -> DCAM/MGDM -> sampler
# (make-test-models writes tiny SD1.5 + ControlNet stand-ins under the names the loader shows; the
# widgets are small, 4 steps on 128 px, so the file also runs on a CPU).
WORKFLOWS["poseanimate"] = [
    {"id": 1, "type": "FlipbookPoseAnimateLoader", "pos": [40, 40], "size": [340, 130], "title": "SD1.5 + OpenPose ControlNet",
     "widgets": {"checkpoint": PA_SD, "controlnet": PA_CN, "dtype": "auto"}},
    {"id": 2, "type": "LoadImage", "pos": [40, 230], "size": [300, 360], "title": "Character",
     "widgets": {"image": CHARACTER}},
    {"id": 3, "type": "FlipbookLoadPoseKeypoints", "pos": [40, 650], "size": [320, 200], "title": "Character pose",
     "widgets": {"file": "flipbook_character_pose.json"}},
    {"id": 4, "type": "FlipbookLoadPoseKeypoints", "pos": [40, 900], "size": [320, 200], "title": "Driving poses",
     "widgets": {"file": "animatex_dance_poses.json"}},
    {"id": 5, "type": "FlipbookPoseAlignTransition", "pos": [420, 650], "size": [340, 280], "title": "PATA",
     "links": {"source": (3, 1), "sequence": (4, 1)},
     "widgets": {"total_frames": 6, "t": 2, "align_mode": "sequence", "width": 128, "height": 128}},
    {"id": 6, "type": "FlipbookPoseAnimateInvert", "pos": [420, 40], "size": [340, 260], "title": "Invert (PACM stage 0)",
     "links": {"model": (1, 0), "image": (2, 0), "poses": (5, 1)},
     "widgets": {"prompt": "a cartoon character", "steps": 4, "size": 128}},
    {"id": 7, "type": "FlipbookPoseAnimateOptimise", "pos": [820, 40], "size": [340, 330], "title": "PACM",
     "links": {"model": (1, 0), "trajectory": (6, 0), "poses": (5, 1)},
     "widgets": {"inner_iterations": 2, "stage2_iterations": 2, "frame_chunk": 4}},
    {"id": 8, "type": "InvertMask", "pos": [420, 360], "size": [220, 30], "title": "Character mask (alpha)",
     "links": {"mask": (2, 1)}},
    {"id": 9, "type": "FlipbookPoseAnimateAttention", "pos": [820, 430], "size": [340, 300], "title": "DCAM / MGDM",
     "links": {"model": (1, 0), "source_mask": (8, 0)}, "widgets": {"subject_word": "character"}},
    {"id": 10, "type": "FlipbookPoseAnimateSampler", "pos": [1220, 40], "size": [340, 130], "title": "PoseAnimate sampler",
     "links": {"model": (9, 0), "embeds": (7, 0)}},
    {"id": 11, "type": "SaveAnimatedWEBP", "pos": [1600, 40], "size": [360, 420], "links": {"images": (10, 0)},
     "widgets": {"filename_prefix": "flipbook/poseanimate", "fps": 8.0, "lossless": False, "quality": 90}},
    {"id": 12, "type": "PreviewImage", "pos": [820, 790], "size": [300, 360], "title": "Pose images",
     "links": {"images": (5, 1)}},
]

# Needs another pack (comfyui_controlnet_aux, for DWPose): written to workflows/external/, which the pack's
# template list and the real-ComfyUI tests leave out; tests/test_workflows.py checks it statically.
EXTERNAL = {"poseanimate_dwpose"}
WORKFLOWS["poseanimate_dwpose"] = [
    {"id": 1, "type": "FlipbookPoseAnimateLoader", "pos": [40, 40], "size": [340, 130], "title": "SD1.5 + OpenPose ControlNet",
     "widgets": {"checkpoint": PA_SD_FILE, "controlnet": PA_CN_FILE, "dtype": "auto"}},
    {"id": 2, "type": "LoadImage", "pos": [40, 230], "size": [300, 360], "title": "Character",
     "widgets": {"image": CHARACTER}},
    {"id": 3, "type": "FlipbookLoadFrames", "pos": [40, 650], "size": [340, 150], "title": "Driving video",
     "widgets": {"file": DRIVING}},
    {"id": 4, "type": "DWPreprocessor", "pos": [420, 230], "size": [340, 250], "title": "DWPose (character)",
     "links": {"image": (2, 0)}, "widgets": {"detect_face": "disable", "resolution": 512}},
    {"id": 5, "type": "DWPreprocessor", "pos": [420, 520], "size": [340, 250], "title": "DWPose (driving video)",
     "links": {"image": (3, 0)}, "widgets": {"detect_face": "disable", "resolution": 512}},
    {"id": 6, "type": "FlipbookPoseAlignTransition", "pos": [820, 520], "size": [340, 280], "title": "PATA",
     "links": {"source": (4, 1), "sequence": (5, 1)},
     "widgets": {"total_frames": 16, "t": 4, "align_mode": "sequence", "width": 512, "height": 512}},
    {"id": 7, "type": "FlipbookPoseAnimateInvert", "pos": [820, 40], "size": [340, 260], "title": "Invert (PACM stage 0)",
     "links": {"model": (1, 0), "image": (2, 0), "poses": (6, 1)},
     "widgets": {"prompt": "a cartoon character", "steps": 50, "size": 512}},
    {"id": 8, "type": "FlipbookPoseAnimateOptimise", "pos": [1220, 40], "size": [340, 330], "title": "PACM",
     "links": {"model": (1, 0), "trajectory": (7, 0), "poses": (6, 1)}},
    {"id": 9, "type": "InvertMask", "pos": [420, 820], "size": [220, 30], "title": "Character mask (alpha)",
     "links": {"mask": (2, 1)}},
    {"id": 10, "type": "FlipbookPoseAnimateAttention", "pos": [1220, 430], "size": [340, 300], "title": "DCAM / MGDM",
     "links": {"model": (1, 0), "source_mask": (9, 0)}, "widgets": {"subject_word": "character"}},
    {"id": 11, "type": "FlipbookPoseAnimateSampler", "pos": [1620, 40], "size": [340, 130], "title": "PoseAnimate sampler",
     "links": {"model": (10, 0), "embeds": (8, 0)}},
    {"id": 12, "type": "SaveAnimatedWEBP", "pos": [2000, 40], "size": [360, 420], "links": {"images": (11, 0)},
     "widgets": {"filename_prefix": "flipbook/poseanimate_dwpose", "fps": 8.0, "lossless": False, "quality": 90}},
    {"id": 13, "type": "PreviewImage", "pos": [1220, 790], "size": [300, 360], "title": "Pose images",
     "links": {"images": (6, 1)}},
]

# Shown in the UI file's "extra" (where a workflow's model comes from).
INFO = {
    "poseanimate_dwpose": "PoseAnimate with poses from a driving video. NEEDS the comfyui_controlnet_aux pack "
                          "(DWPose Estimator; it downloads its own detector weights). Paper settings: 16 frames, "
                          "512 px, 50 steps, 5 inner iterations. Models: v1-5-pruned-emaonly.safetensors in "
                          "models/checkpoints, control_v11p_sd15_openpose (.safetensors/.pth) in models/controlnet.",
    "poseanimate": "PoseAnimate: character picture + pose sequence -> animation. Models: clone Hugging Face "
                   "stable-diffusion-v1-5 into ComfyUI/models/diffusers and lllyasviel/control_v11p_sd15_openpose "
                   "into ComfyUI/models/controlnet (or pick single files). Small step counts here: raise steps to 50, "
                   "iterations to 5, frames to 16 and size to 512 for the paper's settings.",
    "flexiclip_sds": "FlexiClip video SDS: clipart + keypoints + text -> learned Bezier motion. Model: ModelScope "
                     "text-to-video-ms-1.7b in ComfyUI/models/diffusers (GPU); X-CLIP in models/xclip.",
    "flipsketch": "FlipSketch: sketch + text -> sketch animation. Model: clone Hugging Face Hmrishav/t2v_sketch-lora "
                  "into ComfyUI/models/diffusers (the loader reads its checkpoint-2500 folder).",
}


def main(names):
    specs = node_specs(external=True)
    for name in names or WORKFLOWS:
        ui, api = build(WORKFLOWS[name], specs)
        if name in INFO:
            ui["extra"]["info"] = INFO[name]
        if name in NOTES:
            pos, size, text = NOTES[name]
            ui["last_node_id"] += 1
            ui["nodes"].append({"id": ui["last_node_id"], "type": "Note", "pos": pos, "size": size, "flags": {},
                                "order": len(ui["nodes"]), "mode": 0, "inputs": [], "outputs": [],
                                "properties": {}, "widgets_values": [text]})
        ui["extra"]["ds"] = fit_view(ui["nodes"])
        folder = ROOT / "workflows" / ("external" if name in EXTERNAL else "")
        (folder / "api").mkdir(parents=True, exist_ok=True)
        (folder / f"{name}.json").write_text(json.dumps(ui, indent=1) + "\n")
        (folder / "api" / f"{name}.json").write_text(json.dumps(api, indent=1) + "\n")
        print(f"{folder.relative_to(ROOT)}/{name}.json")


if __name__ == "__main__":
    main(sys.argv[1:])
