"""diffusers -> original (LDM / ControlNet-release) key layout, the inverse of the diffusers converters the
loader uses (``diffusers.loaders.single_file_utils``). It writes single-file checkpoints in the layout
users have (``model.diffusion_model.*``, ``first_stage_model.*``, ``cond_stage_model.transformer.*``;
``control_model.*``): the tiny stand-ins of make-test-models and the round-trip test of the loader.
"""
from __future__ import annotations

import torch

RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1", "norm2": "out_layers.0",
          "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _rename(sd: dict, src: str, dst: str, out: dict, inner: dict | None = None) -> None:
    """Copy every ``src.<rest>`` key to ``dst.<rest'>``, ``rest`` renamed by ``inner`` prefixes."""
    for k, v in sd.items():
        if not k.startswith(src + "."):
            continue
        rest = k[len(src) + 1:]
        for a, b in (inner or {}).items():
            if rest.startswith(a + "."):
                rest = b + rest[len(a):]
                break
        out[f"{dst}.{rest}"] = v


def _encoder_half(sd: dict, cfg: dict, out: dict) -> None:
    """time embedding, conv_in, down blocks and mid block (UNet and ControlNet share them)."""
    _rename(sd, "time_embedding.linear_1", "time_embed.0", out)
    _rename(sd, "time_embedding.linear_2", "time_embed.2", out)
    _rename(sd, "conv_in", "input_blocks.0.0", out)
    n, layers = len(cfg["block_out_channels"]), cfg["layers_per_block"]
    for i in range(n):
        for j in range(layers):
            b = i * (layers + 1) + j + 1
            _rename(sd, f"down_blocks.{i}.resnets.{j}", f"input_blocks.{b}.0", out, RESNET)
            _rename(sd, f"down_blocks.{i}.attentions.{j}", f"input_blocks.{b}.1", out)
        if i < n - 1:
            _rename(sd, f"down_blocks.{i}.downsamplers.0.conv", f"input_blocks.{(i + 1) * (layers + 1)}.0.op", out)
    _rename(sd, "mid_block.resnets.0", "middle_block.0", out, RESNET)
    _rename(sd, "mid_block.attentions.0", "middle_block.1", out)
    _rename(sd, "mid_block.resnets.1", "middle_block.2", out, RESNET)


def unet_to_ldm(sd: dict, cfg: dict) -> dict:
    out: dict = {}
    _encoder_half(sd, cfg, out)
    n, layers = len(cfg["block_out_channels"]), cfg["layers_per_block"]
    for i in range(n):
        has_attn = any(k.startswith(f"up_blocks.{i}.attentions.") for k in sd)
        for j in range(layers + 1):
            b = i * (layers + 1) + j
            _rename(sd, f"up_blocks.{i}.resnets.{j}", f"output_blocks.{b}.0", out, RESNET)
            _rename(sd, f"up_blocks.{i}.attentions.{j}", f"output_blocks.{b}.1", out)
        if i < n - 1:
            _rename(sd, f"up_blocks.{i}.upsamplers.0.conv",
                    f"output_blocks.{i * (layers + 1) + layers}.{2 if has_attn else 1}.conv", out)
    _rename(sd, "conv_norm_out", "out.0", out)
    _rename(sd, "conv_out", "out.2", out)
    return out


def vae_to_ldm(sd: dict, cfg: dict) -> dict:
    out: dict = {}
    n, layers = len(cfg["block_out_channels"]), cfg["layers_per_block"]
    for part in ("encoder", "decoder"):
        _rename(sd, f"{part}.conv_in", f"{part}.conv_in", out)
        _rename(sd, f"{part}.conv_out", f"{part}.conv_out", out)
        _rename(sd, f"{part}.conv_norm_out", f"{part}.norm_out", out)
        _rename(sd, f"{part}.mid_block.resnets.0", f"{part}.mid.block_1", out, {"conv_shortcut": "nin_shortcut"})
        _rename(sd, f"{part}.mid_block.resnets.1", f"{part}.mid.block_2", out, {"conv_shortcut": "nin_shortcut"})
        _rename(sd, f"{part}.mid_block.attentions.0", f"{part}.mid.attn_1", out, VAE_ATTN)
    for i in range(n):
        for j in range(layers):
            _rename(sd, f"encoder.down_blocks.{i}.resnets.{j}", f"encoder.down.{i}.block.{j}", out,
                    {"conv_shortcut": "nin_shortcut"})
        _rename(sd, f"encoder.down_blocks.{i}.downsamplers.0.conv", f"encoder.down.{i}.downsample.conv", out)
        for j in range(layers + 1):
            _rename(sd, f"decoder.up_blocks.{i}.resnets.{j}", f"decoder.up.{n - 1 - i}.block.{j}", out,
                    {"conv_shortcut": "nin_shortcut"})
        _rename(sd, f"decoder.up_blocks.{i}.upsamplers.0.conv", f"decoder.up.{n - 1 - i}.upsample.conv", out)
    for k in ("quant_conv", "post_quant_conv"):
        _rename(sd, k, k, out)
    for k, v in out.items():       # the LDM VAE's attention projections are 1x1 convolutions
        if ".mid.attn_1." in k and k.endswith(".weight") and v.dim() == 2:
            out[k] = v[:, :, None, None]
    return out


def controlnet_to_ldm(sd: dict, cfg: dict) -> dict:
    out: dict = {}
    _encoder_half(sd, cfg, out)
    blocks = len({k.split(".")[2] for k in sd if k.startswith("controlnet_cond_embedding.blocks.")})
    _rename(sd, "controlnet_cond_embedding.conv_in", "input_hint_block.0", out)
    for b in range(blocks):
        _rename(sd, f"controlnet_cond_embedding.blocks.{b}", f"input_hint_block.{2 * (b + 1)}", out)
    _rename(sd, "controlnet_cond_embedding.conv_out", f"input_hint_block.{2 * (blocks + 1)}", out)
    for k in {int(k.split(".")[1]) for k in sd if k.startswith("controlnet_down_blocks.")}:
        _rename(sd, f"controlnet_down_blocks.{k}", f"zero_convs.{k}.0", out)
    _rename(sd, "controlnet_mid_block", "middle_block_out.0", out)
    return out


def sd_single_file(model) -> dict[str, torch.Tensor]:
    """An SD bundle's unet + vae + text encoder as one LDM-layout state dict (SD1.5 .safetensors layout)."""
    out = {f"model.diffusion_model.{k}": v for k, v in unet_to_ldm(model.unet.state_dict(), dict(model.unet.config)).items()}
    out.update({f"first_stage_model.{k}": v for k, v in vae_to_ldm(model.vae.state_dict(), dict(model.vae.config)).items()})
    out.update({f"cond_stage_model.transformer.{k}": v for k, v in model.text_encoder.state_dict().items()})
    return {k: v.detach().contiguous() for k, v in out.items()}


def controlnet_single_file(model) -> dict[str, torch.Tensor]:
    """The ControlNet in the release layout (``control_model.*``, as control_sd15_openpose.pth)."""
    cn = model.controlnet
    return {f"control_model.{k}": v.detach().contiguous() for k, v in controlnet_to_ldm(cn.state_dict(), dict(cn.config)).items()}
