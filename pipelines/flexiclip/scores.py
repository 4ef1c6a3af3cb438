"""The two model-based numbers FlexiClip and FlipSketch report (spec flexiclip.md §3, "inferred"):

- CLIP image similarity: mean over frames of cos(CLIP(frame), CLIP(input picture)), identity
  preservation (FlexiClip .9563). The CLIP vision model is ComfyUI's CLIP_VISION (Load CLIP Vision):
  anything with ``encode_image(IMAGE [B,H,W,3]) -> {"image_embeds": [B, D]}`` (it resizes and
  normalises itself).
- X-CLIP text-video similarity: cos(video embedding, prompt embedding) of a transformers
  ``XCLIPModel`` folder (e.g. microsoft/xclip-base-patch32 cloned into models/xclip), FlexiClip .2102.

No download: models come from local folders only.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

import torch

from ..errors import check_image, fail

# X-CLIP's image processor (VideoMAE's): ImageNet mean/std, unless the folder's preprocessor_config says otherwise.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def even_frames(n: int, at_most: int) -> torch.Tensor:
    """Indices of ``at_most`` evenly spaced frames out of n (all when at_most <= 0 or >= n)."""
    if at_most <= 0 or at_most >= n:
        return torch.arange(n)
    return torch.linspace(0, n - 1, at_most).round().long()


def clip_image_similarity(clip_vision, frames: torch.Tensor, reference: torch.Tensor, *, max_frames: int = 0,
                          batch: int = 8) -> tuple[float, list[float]]:
    """(mean, per-frame) cosine between each frame's CLIP image embedding and the reference's."""
    if not hasattr(clip_vision, "encode_image"):
        fail("clip_vision", "a CLIP_VISION model (Load CLIP Vision)", type(clip_vision).__name__)
    frames = check_image("frames", frames)[..., :3]
    reference = check_image("reference", reference)[:1, ..., :3]
    frames = frames[even_frames(frames.shape[0], max_frames)]

    def embed(x):
        out = clip_vision.encode_image(x)
        e = out["image_embeds"]
        return torch.nn.functional.normalize(e.float().reshape(e.shape[0], -1), dim=-1)
    ref = embed(reference)
    per = torch.cat([embed(frames[i:i + batch]) @ ref[0].to(frames.device) for i in range(0, len(frames), batch)])
    per = per.cpu().tolist()
    return float(sum(per) / len(per)), per


@dataclass
class XCLIP:
    """A loaded X-CLIP (ComfyUI type FLIPBOOK_XCLIP)."""
    model: torch.nn.Module
    tokenizer: object
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    name: str = ""

    @property
    def num_frames(self) -> int:
        return int(self.model.config.vision_config.num_frames)

    @property
    def image_size(self) -> int:
        return int(self.model.config.vision_config.image_size)


def load_xclip(path: str, device=None) -> XCLIP:
    """A transformers X-CLIP folder (config.json + weights + tokenizer files), offline."""
    from transformers import AutoTokenizer, XCLIPModel

    if not os.path.isfile(os.path.join(path, "config.json")):
        fail("xclip", "a transformers XCLIPModel folder with config.json (e.g. microsoft/xclip-base-patch32)",
             repr(os.path.basename(path)))
    model = XCLIPModel.from_pretrained(path, local_files_only=True, use_safetensors=None).eval().requires_grad_(False)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    pre = os.path.join(path, "preprocessor_config.json")
    if os.path.isfile(pre):
        with open(pre) as f:
            cfg = json.load(f)
        mean, std = tuple(cfg.get("image_mean", mean)), tuple(cfg.get("image_std", std))
    return XCLIP(model.to(device or "cpu"), tokenizer, mean, std, os.path.basename(os.path.normpath(path)))


def xclip_similarity(xclip: XCLIP, frames: torch.Tensor, text: str) -> float:
    """cos(X-CLIP video embedding of ``num_frames`` evenly spaced frames, embedding of ``text``)."""
    if not isinstance(xclip, XCLIP):
        fail("xclip", "an X-CLIP model (Flipbook X-CLIP Loader)", type(xclip).__name__)
    if not isinstance(text, str) or not text.strip():
        fail("text", "the prompt the animation should show", repr(text))
    frames = check_image("frames", frames)[..., :3]
    x = frames[even_frames(frames.shape[0], xclip.num_frames)]
    if x.shape[0] < xclip.num_frames:                 # fewer frames than the model takes: repeat evenly
        x = x[torch.linspace(0, x.shape[0] - 1, xclip.num_frames).round().long()]
    size = xclip.image_size
    x = torch.nn.functional.interpolate(x.permute(0, 3, 1, 2).float(), size=(size, size), mode="bicubic",
                                        align_corners=False, antialias=True).clamp(0, 1)
    mean, std = torch.tensor(xclip.mean).view(1, 3, 1, 1), torch.tensor(xclip.std).view(1, 3, 1, 1)
    dev = next(xclip.model.parameters()).device
    pixels = ((x - mean) / std)[None].to(dev)
    tok = xclip.tokenizer([text], padding="max_length", truncation=True,
                          max_length=min(77, xclip.model.config.text_config.max_position_embeddings), return_tensors="pt")
    with torch.no_grad():
        out = xclip.model(input_ids=tok.input_ids.to(dev), attention_mask=tok.attention_mask.to(dev), pixel_values=pixels)
    v = torch.nn.functional.normalize(out.video_embeds.float(), dim=-1)
    t = torch.nn.functional.normalize(out.text_embeds.float(), dim=-1)
    return float(torch.einsum("bd,bkd->bk", v, t)[0, 0])


def tiny_xclip_config(num_frames: int = 8):
    """A 0.1M-parameter random X-CLIP (tests, make-test-models)."""
    from transformers import XCLIPConfig

    return XCLIPConfig(
        text_config=dict(vocab_size=1000, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                         max_position_embeddings=77, bos_token_id=0, eos_token_id=2, pad_token_id=1),
        vision_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, image_size=32,
                           patch_size=8, num_frames=num_frames, mit_hidden_size=32, mit_intermediate_size=37,
                           mit_num_hidden_layers=1, mit_num_attention_heads=4),
        projection_dim=32, prompt_layers=1, prompt_num_attention_heads=4, prompt_attention_mlp_ratio=2)


def write_tiny_xclip(folder: str, seed: int = 0) -> str:
    """A random tiny X-CLIP folder in transformers layout, with an offline CLIP tokenizer."""
    from transformers import XCLIPModel

    from ..diffusion.backbone import write_tiny_tokenizer

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = XCLIPModel(tiny_xclip_config())
    os.makedirs(folder, exist_ok=True)
    model.save_pretrained(folder)
    write_tiny_tokenizer(folder)
    return folder
