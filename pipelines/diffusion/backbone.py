"""Text-to-video backbones: load a diffusers-layout folder, or build a tiny seeded random one.

A folder in diffusers layout holds ``unet/ vae/ text_encoder/ tokenizer/ scheduler/`` (ModelScope
T2V, or FlipSketch's released ``checkpoint-2500``; spec §1.1). We load the models and the scheduler
*config* only: the loops are ours (the diffusers text-to-video pipeline is deprecated), and
FlipSketch's ``lora/*.pt`` pickles are never read.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import tempfile
from dataclasses import dataclass, field

import torch

from ..devices import resolve_dtype
from ..errors import FlipbookInputError
from .attention import ReferenceStore, patched

# spec §3.1: the configs of the tiny random backbone (one builder for the whole pack).
TINY_SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                      clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon")
TINY_UNET3D = dict(sample_size=8, in_channels=4, out_channels=4,
                   down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
                   up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"), block_out_channels=(32, 64),
                   layers_per_block=1, cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8)
TINY_VAE = dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(32, 64), layers_per_block=1,
                latent_channels=4, norm_num_groups=8, sample_size=16)
TINY_TEXT = dict(vocab_size=1000, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                 max_position_embeddings=77, bos_token_id=0, eos_token_id=2, pad_token_id=1)

def param_device(module: torch.nn.Module) -> torch.device:
    return next(module.parameters()).device


COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


@dataclass
class T2VBackbone:
    """A text-to-video model bundle (ComfyUI type FLIPBOOK_T2V). ``scheduler_config`` is a plain
    dict from which every loop builds its own DDIM (inverse) scheduler.

    ``patches``: the attention patches the model carries, as a ComfyUI MODEL carries its
    ``set_model_attn1_replace`` patches. :meth:`with_patches` returns a clone that shares the modules;
    every loop installs what its model carries for the length of one run (:meth:`installed`).
    """
    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    scheduler_config: dict
    dtype: torch.dtype = torch.float32
    name: str = ""
    patches: tuple = ()
    _null_embeds: dict = field(default_factory=dict, repr=False)

    def with_patches(self, *patches) -> "T2VBackbone":
        """A shallow clone (same modules, same caches) that also carries ``patches``; one of a kind the
        model already carries takes its place (one patch per kind, as ComfyUI keeps one per block)."""
        kinds = {type(p) for p in patches}
        kept = tuple(p for p in self.patches if type(p) not in kinds)
        return dataclasses.replace(self, patches=kept + tuple(patches))

    def patch(self, kind: type):
        """The carried patch of type ``kind``, or None."""
        return next((p for p in self.patches if isinstance(p, kind)), None)

    @contextlib.contextmanager
    def installed(self, store: ReferenceStore | None = None):
        """``with model.installed(store):`` the carried patches, bound to ``store`` (one run's saved
        tensors), sit on the UNet's attention modules; leaving restores the UNet exactly."""
        store = ReferenceStore() if store is None else store
        with patched(self.unet, *(p.bind(store) for p in self.patches)):
            yield store

    @property
    def device(self) -> torch.device:
        """The UNet's device. Nodes move parts separately (text encoder, VAE): code that runs one part
        asks :func:`param_device` of that part."""
        return param_device(self.unet)

    @property
    def latent_scale(self) -> int:
        """Pixels per latent cell: 2 ** (number of VAE down blocks - 1) (8 for ModelScope)."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)


def _prepare(parts: dict, dtype: torch.dtype, device) -> dict:
    for key in ("unet", "vae", "text_encoder"):
        m = parts[key].to(device)
        if next(m.parameters()).dtype != dtype:  # from_pretrained(torch_dtype=...) already cast
            m = m.to(dtype)
        parts[key] = m.eval().requires_grad_(False)
    return parts


def _variant(folder: str) -> str | None:
    """``"fp16"`` when a part ships only ``*.fp16.safetensors`` weights (ModelScope's Hugging Face layout)."""
    names = os.listdir(folder)
    plain = [n for n in names if n.endswith((".safetensors", ".bin", ".index.json")) and ".fp16." not in n]
    return "fp16" if not plain and any(".fp16." in n for n in names) else None


def load_t2v(path: str, dtype: str | torch.dtype = "auto", device=None) -> T2VBackbone:
    """Load ``unet/vae/text_encoder/tokenizer/scheduler`` from a local diffusers folder (no network)."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet3DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    missing = [c for c in COMPONENTS if not os.path.isdir(os.path.join(path, c))]
    if missing:
        raise FlipbookInputError(
            f"model_dir: expected a diffusers text-to-video folder with {'/'.join(COMPONENTS)} sub-folders "
            f"(e.g. FlipSketch's checkpoint-2500 or ModelScope text-to-video-ms-1.7b), {path!r} lacks {missing}")
    device = torch.device(device) if device is not None else torch.device("cpu")
    dtype = resolve_dtype(dtype, device) if isinstance(dtype, str) else dtype
    kw = dict(local_files_only=True)  # .bin weights, if any, load through torch.load(weights_only=True)

    def load(cls, sub):
        return cls.from_pretrained(path, subfolder=sub, torch_dtype=dtype, variant=_variant(os.path.join(path, sub)), **kw)
    parts = dict(unet=load(UNet3DConditionModel, "unet"), vae=load(AutoencoderKL, "vae"),
                 text_encoder=load(CLIPTextModel, "text_encoder"))
    tokenizer = CLIPTokenizer.from_pretrained(path, subfolder="tokenizer", **kw)
    sched = dict(DDIMScheduler.load_config(path, subfolder="scheduler", **kw))
    parts = _prepare(parts, dtype, device)
    return T2VBackbone(tokenizer=tokenizer, scheduler_config=sched, dtype=dtype,
                       name=os.path.basename(os.path.normpath(path)), **parts)


# --- tiny random backbone (tests, CI, every workflow on a CPU) -------------------------------

def write_tiny_tokenizer(folder: str) -> None:
    """An offline CLIP BPE vocabulary (spec §3.1): specials, single characters and their word-final forms."""
    os.makedirs(folder, exist_ok=True)
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789")
    vocab = {"<|startoftext|>": 0, "!": 1, "<|endoftext|>": 2}
    for c in chars:
        vocab.setdefault(c, len(vocab))
    for c in chars + ["!"]:
        vocab.setdefault(c + "</w>", len(vocab))
    with open(os.path.join(folder, "vocab.json"), "w") as f:
        json.dump(vocab, f)
    with open(os.path.join(folder, "merges.txt"), "w") as f:
        f.write("#version: 0.2\n")
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "pad_token": "!",
                   "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}, f)


def _randomise_zero_init(module: torch.nn.Module, gen: torch.Generator) -> None:
    """diffusers zero-initialises the last temporal conv and some output projections, which makes a
    fresh model ignore whole paths (e.g. temporal convolutions become the identity). Random weights
    there keep the tiny model honest about frame coupling."""
    with torch.no_grad():
        for p in module.parameters():
            if p.dim() > 1 and not p.any():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)


def tiny_vae_config(downscale: int = 2) -> dict:
    """The spec's tiny VAE (x2), or a deeper one (x8, x32) so that a 256-pixel sketch gives a latent
    grid as small as the tests' (x32 -> 8x8), which keeps full-size workflows quick on a CPU."""
    blocks = {2: 2, 8: 4, 32: 6}.get(int(downscale))
    if blocks is None:
        raise FlipbookInputError(f"vae_downscale: expected 2, 8 or 32, got {downscale!r}")
    cfg = dict(TINY_VAE)
    cfg.update(down_block_types=("DownEncoderBlock2D",) * blocks, up_block_types=("UpDecoderBlock2D",) * blocks,
               block_out_channels=((32, 64) if blocks == 2 else (16,) * (blocks - 2) + (32, 64)))
    return cfg


def tiny_t2v(seed: int = 0, device=None, dtype: torch.dtype = torch.float32, vae_downscale: int = 2) -> T2VBackbone:
    """The spec §3.1 tiny text-to-video backbone with seeded random weights (builds in ~0.1 s)."""
    from diffusers import AutoencoderKL, UNet3DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    gen = torch.Generator().manual_seed(int(seed))
    state = torch.random.get_rng_state()
    torch.manual_seed(int(seed))  # diffusers/transformers initialise from the global generator
    try:
        unet = UNet3DConditionModel(**TINY_UNET3D)
        vae = AutoencoderKL(**tiny_vae_config(vae_downscale))
        text_encoder = CLIPTextModel(CLIPTextConfig(**TINY_TEXT))
    finally:
        torch.random.set_rng_state(state)
    _randomise_zero_init(unet, gen)
    with tempfile.TemporaryDirectory() as tmp:
        write_tiny_tokenizer(tmp)
        tokenizer = CLIPTokenizer.from_pretrained(tmp)
    parts = _prepare(dict(unet=unet, vae=vae, text_encoder=text_encoder), dtype, device or "cpu")
    return T2VBackbone(tokenizer=tokenizer, scheduler_config=dict(TINY_SCHEDULER), dtype=dtype,
                       name=f"tiny-t2v-{seed}", **parts)


def save_t2v(backbone: T2VBackbone, folder: str, pipeline: str = "TextToVideoSDPipeline") -> list[str]:
    """Write a backbone in diffusers folder layout (model_index.json naming ``pipeline`` + one sub-folder
    per part; PoseAnimate's SD1.5 part writes ``StableDiffusionPipeline``)."""
    import diffusers
    from diffusers import DDIMScheduler

    os.makedirs(folder, exist_ok=True)
    backbone.unet.save_pretrained(os.path.join(folder, "unet"))
    backbone.vae.save_pretrained(os.path.join(folder, "vae"))
    backbone.text_encoder.save_pretrained(os.path.join(folder, "text_encoder"))
    backbone.tokenizer.save_pretrained(os.path.join(folder, "tokenizer"))
    DDIMScheduler(**{k: v for k, v in backbone.scheduler_config.items() if not k.startswith("_")}
                  ).save_pretrained(os.path.join(folder, "scheduler"))
    index = {"_class_name": pipeline, "_diffusers_version": diffusers.__version__,
             "scheduler": ["diffusers", "DDIMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
             "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", type(backbone.unet).__name__],
             "vae": ["diffusers", "AutoencoderKL"]}
    with open(os.path.join(folder, "model_index.json"), "w") as f:
        json.dump(index, f, indent=2)
    return [os.path.join(folder, "model_index.json")] + [os.path.join(folder, c) for c in COMPONENTS]
