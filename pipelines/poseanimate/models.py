"""SD1.5 + OpenPose ControlNet bundles (spec §2.1, §3 node 2): from diffusers folders, from single files
converted offline with the configs shipped in ``configs/``, or tiny and random (tests, CPU workflows).

Where the files come from (ComfyUI's folders, never the hub):

* ``models/diffusers/<folder>``: a diffusers Stable Diffusion folder (unet/ vae/ text_encoder/
  tokenizer/ scheduler/), e.g. the Hugging Face repo stable-diffusion-v1-5 cloned there;
* ``models/checkpoints/<file>``: an SD1.5 single file (``.safetensors``; ``.ckpt`` only through
  ``torch.load(weights_only=True)``), its keys converted by diffusers' own LDM converters
  (``diffusers.loaders.single_file_utils``) with the diffusers configs shipped here, so nothing is
  fetched: the converters are plain key renames, and no ``from_single_file`` (which may look a
  config up on the hub) is called;
* ``models/controlnet/<file or folder>``: an OpenPose ControlNet (``control_v11p_sd15_openpose``
  as .safetensors/.pth, or its diffusers folder with config.json).

Tokenizer: inside ComfyUI, ComfyUI's bundled SD1 tokenizer (``comfy/sd1_tokenizer``) whenever the text
encoder has its 49408-token vocabulary; otherwise the diffusers folder's ``tokenizer/``.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass

import torch

from .. import seeds
from ..devices import resolve_dtype
from ..diffusion.backbone import (TINY_SCHEDULER, TINY_TEXT, T2VBackbone, _prepare, _randomise_zero_init,
                                  _variant, save_t2v, tiny_vae_config, write_tiny_tokenizer)
from ..errors import FlipbookInputError, fail

CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
SD_PARTS = ("unet", "vae", "text_encoder", "scheduler")
SINGLE_FILE_EXTS = (".safetensors", ".ckpt", ".pth", ".pt", ".bin")

# spec §3.1 tiny configs (UNet2D + ControlNet). The ControlNet's conditioning embedding has one
# stride-2 conv per doubling of the VAE, so its pose image is the picture's size, as SD1.5's (x8).
TINY_UNET2D = dict(sample_size=8, in_channels=4, out_channels=4, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                   up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), block_out_channels=(32, 64), layers_per_block=1,
                   cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8)
TINY_CONTROLNET = dict(in_channels=4, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), block_out_channels=(32, 64),
                       layers_per_block=1, cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8,
                       conditioning_embedding_out_channels=(16, 32))
SD1_VOCAB = 49408


def shipped_config(name: str) -> dict:
    """One of the diffusers configs shipped in ``configs/`` (sd15_unet, sd15_vae, sd15_text_encoder,
    sd15_scheduler, sd15_controlnet)."""
    with open(os.path.join(CONFIGS, f"{name}.json")) as f:
        return {k: v for k, v in json.load(f).items() if not k.startswith("_")}


@dataclass
class SDControlNet(T2VBackbone):
    """A FLIPBOOK_SDCN bundle: a FLIPBOOK_T2V-shaped backbone (text encoding, VAE, attention patches
    riding on it) whose ``unet`` is a UNet2DConditionModel, plus the OpenPose ``controlnet``."""
    controlnet: torch.nn.Module | None = None

    @property
    def pose_scale(self) -> int:
        """Pixels of the ControlNet's condition image per latent cell (8 for SD1.5)."""
        return 2 ** (len(self.controlnet.config.conditioning_embedding_out_channels) - 1)


def _finish(parts: dict, controlnet, tokenizer, sched: dict, dtype, device, name: str) -> SDControlNet:
    parts = _prepare(parts, dtype, device)
    cn = controlnet.to(device)
    if next(cn.parameters()).dtype != dtype:
        cn = cn.to(dtype)
    return SDControlNet(tokenizer=tokenizer, scheduler_config=sched, dtype=dtype, name=name,
                        controlnet=cn.eval().requires_grad_(False), **parts)


# --- tokenizer ------------------------------------------------------------------------------------

def comfy_sd1_tokenizer_dir() -> str | None:
    """ComfyUI's bundled SD1 CLIP tokenizer folder, when running inside ComfyUI."""
    try:
        import comfy.sd1_clip as sd1
    except Exception:
        return None
    path = os.path.join(os.path.dirname(os.path.abspath(sd1.__file__)), "sd1_tokenizer")
    return path if os.path.isfile(os.path.join(path, "vocab.json")) else None


def load_tokenizer(text_encoder, folder: str | None, source: str):
    from transformers import CLIPTokenizer

    comfy_dir = comfy_sd1_tokenizer_dir()
    if comfy_dir is not None and text_encoder.config.vocab_size == SD1_VOCAB:
        return CLIPTokenizer.from_pretrained(comfy_dir, local_files_only=True, model_max_length=77)
    if folder is not None and os.path.isdir(folder):
        return CLIPTokenizer.from_pretrained(folder, local_files_only=True)
    raise FlipbookInputError(
        f"{source}: a single-file checkpoint brings no tokenizer; inside ComfyUI its bundled SD1 tokenizer is used, "
        "outside ComfyUI load a diffusers folder (with tokenizer/) from models/diffusers instead")


# --- loading --------------------------------------------------------------------------------------

def read_state_dict(path: str, source: str) -> dict:
    """A single-file checkpoint's tensors: safetensors, or torch.load(weights_only=True) for .ckpt/.pth."""
    ext = os.path.splitext(path)[1].lower()
    if ext == ".safetensors":
        from safetensors.torch import load_file
        return load_file(path)
    if ext not in SINGLE_FILE_EXTS:
        fail(source, f"a {'/'.join(SINGLE_FILE_EXTS)} file", repr(os.path.basename(path)))
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise FlipbookInputError(f"{source}: {os.path.basename(path)} could not be read with "
                                 f"torch.load(weights_only=True) (pickled code is refused): {exc}") from exc
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        fail(source, "a checkpoint holding a state dict", type(sd).__name__)
    return sd


META_KEY = "flipbook_configs"      # our own single files carry their diffusers configs (tiny stand-ins)


def file_configs(path: str) -> dict | None:
    """The diffusers configs a .safetensors file of ours carries in its metadata, else None (a real SD1.5
    or ControlNet file: the shipped configs apply)."""
    if not path.lower().endswith(".safetensors"):
        return None
    from safetensors import safe_open
    with safe_open(path, "pt") as f:
        meta = f.metadata() or {}
    return json.loads(meta[META_KEY]) if META_KEY in meta else None


def save_single_files(model: SDControlNet, checkpoint: str, controlnet: str) -> list[str]:
    """The bundle as an SD1.5-layout checkpoint + a ControlNet-release-layout file (.safetensors, with
    their configs in the metadata)."""
    from safetensors.torch import save_file

    from .ldm import controlnet_single_file, sd_single_file

    cfg = {k: dict(getattr(model, k).config) for k in ("unet", "vae", "controlnet")}
    cfg["text_encoder"] = {k: v for k, v in model.text_encoder.config.to_dict().items()
                           if k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                                    "num_attention_heads", "max_position_embeddings", "bos_token_id", "eos_token_id",
                                    "pad_token_id", "hidden_act", "projection_dim", "layer_norm_eps")}
    cfg = json.loads(json.dumps(cfg, default=list))
    for path, sd, keys in ((checkpoint, sd_single_file(model), ("unet", "vae", "text_encoder")),
                           (controlnet, controlnet_single_file(model), ("controlnet",))):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        save_file(sd, path, metadata={META_KEY: json.dumps({k: cfg[k] for k in keys})})
    return [checkpoint, controlnet]


def _load_converted(cls, config: dict, state: dict, source: str, dtype):
    model = cls.from_config(config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing:
        raise FlipbookInputError(f"{source}: expected {cls.__name__} weights of the shipped SD1.5 configuration, "
                                 f"{len(missing)} are missing (e.g. {missing[:3]})")
    return model.to(dtype)


def load_sd_single_file(path: str, *, dtype=torch.float32, configs: dict | None = None, source: str = "checkpoint"):
    """unet, vae, text encoder from an SD1.5 single file (LDM keys), converted offline.
    ``configs`` (unet/vae/text_encoder diffusers configs) default to the shipped SD1.5 ones."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import (convert_ldm_clip_checkpoint, convert_ldm_unet_checkpoint,
                                                     convert_ldm_vae_checkpoint)
    from transformers import CLIPTextConfig, CLIPTextModel

    configs = configs or file_configs(path) or {k: shipped_config(f"sd15_{k}") for k in ("unet", "vae", "text_encoder")}
    sd = read_state_dict(path, source)
    if not any(k.startswith("model.diffusion_model.") for k in sd):
        fail(source, "an SD1.5 checkpoint (model.diffusion_model.* keys)", f"{os.path.basename(path)} without them")
    unet = _load_converted(UNet2DConditionModel, configs["unet"], convert_ldm_unet_checkpoint(sd, configs["unet"]),
                           source, dtype)
    vae = _load_converted(AutoencoderKL, configs["vae"], convert_ldm_vae_checkpoint(sd, configs["vae"]), source, dtype)
    text = CLIPTextModel(CLIPTextConfig(**configs["text_encoder"]))
    missing, _ = text.load_state_dict(convert_ldm_clip_checkpoint(sd), strict=False)
    if [k for k in missing if not k.endswith("position_ids")]:
        fail(source, "the CLIP text encoder (cond_stage_model.transformer.*)", f"{len(missing)} weights missing")
    return dict(unet=unet, vae=vae, text_encoder=text.to(dtype))


def load_controlnet(path: str, *, dtype=torch.float32, config: dict | None = None, source: str = "controlnet"):
    """An OpenPose ControlNet: a diffusers folder (config.json) or a single file (LDM ``control_model.*``
    keys or bare ones, as lllyasviel's .pth/.safetensors), the latter with the shipped SD1.5 config."""
    from diffusers import ControlNetModel
    from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint

    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "config.json")):
            fail(source, "a diffusers ControlNet folder with config.json", repr(os.path.basename(path)))
        return ControlNetModel.from_pretrained(path, torch_dtype=dtype, local_files_only=True, variant=_variant(path))
    config = config or (file_configs(path) or {}).get("controlnet") or shipped_config("sd15_controlnet")
    sd = read_state_dict(path, source)
    return _load_converted(ControlNetModel, config, convert_controlnet_checkpoint(sd, config), source, dtype)


def load_sdcn(sd_path: str, controlnet_path: str, *, dtype: str | torch.dtype = "auto", device=None,
              configs: dict | None = None) -> SDControlNet:
    """The bundle from an SD1.5 diffusers folder or single file and a ControlNet folder or file (no network)."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel

    device = torch.device(device) if device is not None else torch.device("cpu")
    dtype = resolve_dtype(dtype, device) if isinstance(dtype, str) else dtype
    kw = dict(local_files_only=True)
    if os.path.isdir(sd_path):
        missing = [c for c in SD_PARTS if not os.path.isdir(os.path.join(sd_path, c))]
        if missing:
            fail("checkpoint", f"a diffusers Stable Diffusion folder with {'/'.join(SD_PARTS)} sub-folders "
                 "(e.g. stable-diffusion-v1-5)", f"{os.path.basename(sd_path)!r} without {missing}")

        def load(cls, sub):
            return cls.from_pretrained(sd_path, subfolder=sub, torch_dtype=dtype,
                                       variant=_variant(os.path.join(sd_path, sub)), **kw)
        parts = dict(unet=load(UNet2DConditionModel, "unet"), vae=load(AutoencoderKL, "vae"),
                     text_encoder=load(CLIPTextModel, "text_encoder"))
        sched = dict(DDIMScheduler.load_config(sd_path, subfolder="scheduler", **kw))
        tok_dir = os.path.join(sd_path, "tokenizer")
    else:
        parts = load_sd_single_file(sd_path, dtype=dtype, configs=configs)
        sched, tok_dir = shipped_config("sd15_scheduler"), None
    if parts["unet"].__class__.__name__ != "UNet2DConditionModel":
        fail("checkpoint", "an SD1.5 UNet2DConditionModel", parts["unet"].__class__.__name__)
    tokenizer = load_tokenizer(parts["text_encoder"], tok_dir, "checkpoint")
    controlnet = load_controlnet(controlnet_path, dtype=dtype, config=(configs or {}).get("controlnet"))
    if controlnet.config.cross_attention_dim != parts["unet"].config.cross_attention_dim:
        fail("controlnet", f"a ControlNet for this UNet (cross_attention_dim {parts['unet'].config.cross_attention_dim})",
             f"cross_attention_dim {controlnet.config.cross_attention_dim}")
    name = os.path.basename(os.path.normpath(sd_path))
    return _finish(parts, controlnet, tokenizer, sched, dtype, device, name)


# --- tiny random bundle ---------------------------------------------------------------------------

def tiny_configs(vae_downscale: int = 2) -> dict:
    """Diffusers configs of the tiny bundle (spec §3.1); vae_downscale 2 (unit tests) or 8 (SD1.5's
    geometry, the shipped workflow's stand-in). The text encoder keeps SD1's 49408-token vocabulary so
    that ComfyUI's SD1 tokenizer fits it too."""
    vae = tiny_vae_config(vae_downscale)
    doublings = len(vae["block_out_channels"]) - 1
    cn = dict(TINY_CONTROLNET, conditioning_embedding_out_channels=(16,) * doublings + (32,))
    return dict(unet=dict(TINY_UNET2D), vae=vae, controlnet=cn, text_encoder=dict(TINY_TEXT, vocab_size=SD1_VOCAB))


def tiny_sdcn(seed: int = 0, device=None, dtype: torch.dtype = torch.float32, vae_downscale: int = 2) -> SDControlNet:
    """A tiny SD + ControlNet bundle with seeded random weights (ControlNet zero convs randomised, so
    the pose matters)."""
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    cfg = tiny_configs(vae_downscale)
    gen = seeds.generator(seed)                  # 64-bit seeds, as tiny_t2v (pipelines/seeds.py)
    state = torch.random.get_rng_state()
    torch.manual_seed(seeds.effective_seed(seed))
    try:
        unet = UNet2DConditionModel(**cfg["unet"])
        vae = AutoencoderKL(**cfg["vae"])
        text_encoder = CLIPTextModel(CLIPTextConfig(**cfg["text_encoder"]))
        controlnet = ControlNetModel(**cfg["controlnet"])
    finally:
        torch.random.set_rng_state(state)
    _randomise_zero_init(unet, gen)
    _randomise_zero_init(controlnet, gen)
    with tempfile.TemporaryDirectory() as tmp:
        write_tiny_tokenizer(tmp)
        tokenizer = CLIPTokenizer.from_pretrained(tmp)
    return _finish(dict(unet=unet, vae=vae, text_encoder=text_encoder), controlnet, tokenizer, dict(TINY_SCHEDULER),
                   dtype, device or "cpu", f"tiny-sdcn-{seed}")


def save_sd_folder(model: SDControlNet, folder: str) -> list[str]:
    """The SD part in diffusers Stable Diffusion folder layout (model_index.json + sub-folders)."""
    return save_t2v(model, folder, pipeline="StableDiffusionPipeline")


def save_controlnet_folder(model: SDControlNet, folder: str) -> list[str]:
    model.controlnet.save_pretrained(folder)
    return [folder]
