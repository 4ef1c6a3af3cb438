"""Animate-X UNet: released layout (meta device), strict round-trip loads, tiny forward properties."""
from __future__ import annotations

import os

import pytest
import torch

from comfyui_flipbook.pipelines.animatex.settings import FULL, TINY
from comfyui_flipbook.pipelines.animatex.ipi import sinusoid_table
from comfyui_flipbook.pipelines.animatex.unet import build_unet, count_parameters
from comfyui_flipbook.pipelines.animatex import weights


# --- the released key list, written out from spec §1.3 / §3.1 independently of unet.py ---------

def _lin(p, o, i, bias=True):
    d = {f"{p}.weight": (o, i)}
    if bias:
        d[f"{p}.bias"] = (o,)
    return d


def _norm(p, c):
    return {f"{p}.weight": (c,), f"{p}.bias": (c,)}


def _conv(p, o, i, k):
    return {f"{p}.weight": (o, i) + k, f"{p}.bias": (o,)}


def _block(p, c, ctx):                      # BasicTransformerBlock, inner width c
    d = {}
    for a, kv in (("attn1", c), ("attn2", ctx)):
        d.update(_lin(f"{p}.{a}.to_q", c, c, False))
        d.update(_lin(f"{p}.{a}.to_k", c, kv, False))
        d.update(_lin(f"{p}.{a}.to_v", c, kv, False))
        d.update(_lin(f"{p}.{a}.to_out.0", c, c))
    d.update(_lin(f"{p}.ff.net.0.proj", 8 * c, c))
    d.update(_lin(f"{p}.ff.net.2", c, 4 * c))
    for n in (1, 2, 3):
        d.update(_norm(f"{p}.norm{n}", c))
    return d


def _res(p, ci, co, emb):
    d = {}
    d.update(_norm(f"{p}.in_layers.0", ci))
    d.update(_conv(f"{p}.in_layers.2", co, ci, (3, 3)))
    d.update(_lin(f"{p}.emb_layers.1", co, emb))
    d.update(_norm(f"{p}.out_layers.0", co))
    d.update(_conv(f"{p}.out_layers.3", co, co, (3, 3)))
    if ci != co:
        d.update(_conv(f"{p}.skip_connection", co, ci, (1, 1)))
    for n, idx in ((1, 2), (2, 3), (3, 3), (4, 3)):
        d.update(_norm(f"{p}.temopral_conv.conv{n}.0", co))
        d.update(_conv(f"{p}.temopral_conv.conv{n}.{idx}", co, co, (3, 1, 1)))
    return d


def _spatial(p, c, ctx):
    d = {}
    d.update(_norm(f"{p}.norm", c))
    d.update(_lin(f"{p}.proj_in", c, c))
    d.update(_block(f"{p}.transformer_blocks.0", c, ctx))
    d.update(_lin(f"{p}.proj_out", c, c))
    d.update(_norm(f"{p}.pose_attention.norm_p", c))
    d.update(_lin(f"{p}.pose_attention.proj_in_p", c, c))
    d.update(_block(f"{p}.pose_attention.transformer_blocks_p.0", c, ctx))
    d.update(_lin(f"{p}.pose_attention.proj_out_p", c, c))
    return d


def _temporal(p, c, inner):
    d = {}
    d.update(_norm(f"{p}.norm", c))
    d.update(_conv(f"{p}.proj_in", inner, c, (1,)))
    d.update(_block(f"{p}.transformer_blocks.0", inner, inner))
    d.update(_conv(f"{p}.proj_out", c, inner, (1,)))
    return d


def _adapter(p, c):
    d = {}
    d.update(_norm(f"{p}.layers.0.0.norm", c))
    d.update(_lin(f"{p}.layers.0.0.fn.to_qkv", 6 * c, c, False))
    d.update(_lin(f"{p}.layers.0.0.fn.to_out.0", c, 2 * c))
    d.update(_lin(f"{p}.layers.0.1.net.0.0", 4 * c, c))
    d.update(_lin(f"{p}.layers.0.1.net.2", c, 4 * c))
    return d


def released_layout() -> dict[str, tuple[int, ...]]:
    """Key -> shape of animate-x_ckpt.pth (spec §1.3 block table, §3.1 key rules), pos_table included."""
    d: dict[str, tuple[int, ...]] = {}
    emb, ctx = 1280, 1024
    d.update(_lin("time_embed.0", emb, 320)); d.update(_lin("time_embed.2", emb, emb))
    d.update(_lin("pre_image_condition.0", ctx, ctx)); d.update(_lin("pre_image_condition.2", 4 * ctx, ctx))
    pb = "pose_embedding_before"
    d.update(_lin(f"{pb}.increase_embed_dim.0", 512, 36)); d.update(_lin(f"{pb}.increase_embed_dim.1", ctx, 512))
    for n in range(3):
        q = f"{pb}.encoder.layers.{n}"
        d[f"{q}.self_attn.in_proj_weight"] = (3 * ctx, ctx); d[f"{q}.self_attn.in_proj_bias"] = (3 * ctx,)
        d.update(_lin(f"{q}.self_attn.out_proj", ctx, ctx))
        d.update(_lin(f"{q}.linear1", ctx, ctx)); d.update(_lin(f"{q}.linear2", ctx, ctx))
        d.update(_norm(f"{q}.norm1", ctx)); d.update(_norm(f"{q}.norm2", ctx))
    d.update(_lin(f"{pb}.pre_image_condition_p.0", ctx, ctx)); d.update(_lin(f"{pb}.pre_image_condition_p.2", 4 * ctx, ctx))
    d[f"{pb}.pos_embed.pos_table"] = (1, 33, ctx)
    pa = "pose_embedding_after"
    d[f"{pa}.latents"] = (1, 4, ctx)
    d.update(_lin(f"{pa}.proj_in", ctx, ctx)); d.update(_lin(f"{pa}.proj_out", ctx, ctx)); d.update(_norm(f"{pa}.norm_out", ctx))
    for n in range(8):
        q = f"{pa}.layers.{n}"
        d.update(_norm(f"{q}.0.norm1", ctx)); d.update(_norm(f"{q}.0.norm2", ctx))
        d.update(_lin(f"{q}.0.to_q", ctx, ctx, False)); d.update(_lin(f"{q}.0.to_kv", 2 * ctx, ctx, False))
        d.update(_lin(f"{q}.0.to_out", ctx, ctx, False))
        d.update(_norm(f"{q}.1.0", ctx)); d.update(_lin(f"{q}.1.1", 4 * ctx, ctx, False)); d.update(_lin(f"{q}.1.3", ctx, 4 * ctx, False))
    for name, out in (("local_image_embedding", 8), ("dwpose_embedding", 8), ("randomref_pose2_embedding", 12)):
        d.update(_conv(f"{name}.0", 32, 3, (3, 3))); d.update(_conv(f"{name}.3", 32, 32, (3, 3)))
        d.update(_conv(f"{name}.5", out, 32, (3, 3)))
    d.update(_conv("randomref_embedding2.0", 32, 4, (3, 3))); d.update(_conv("randomref_embedding2.2", 32, 32, (3, 3)))
    d.update(_conv("randomref_embedding2.4", 12, 32, (3, 3)))
    for name, c in (("local_image_embedding_after", 8), ("dwpose_embedding_after", 8),
                    ("randomref_pose2_embedding_after", 12), ("randomref_embedding_after2", 12)):
        d.update(_adapter(name, c))
    # encoder: in 0 conv + temporal (8 heads x 64); levels 320/640/1280 with attention, 1280 without
    d.update(_conv("input_blocks.0.0", 320, 12, (3, 3))); d.update(_temporal("input_blocks.0.1", 320, 512))
    plan = [(1, 320, 320, True), (2, 320, 320, True), (4, 320, 640, True), (5, 640, 640, True),
            (7, 640, 1280, True), (8, 1280, 1280, True), (10, 1280, 1280, False), (11, 1280, 1280, False)]
    for i, ci, co, att in plan:
        d.update(_res(f"input_blocks.{i}.0", ci, co, emb))
        if att:
            d.update(_spatial(f"input_blocks.{i}.1", co, ctx)); d.update(_temporal(f"input_blocks.{i}.2", co, co))
    for i, c in ((3, 320), (6, 640), (9, 1280)):
        d.update(_conv(f"input_blocks.{i}.op", c, c, (3, 3)))
    d.update(_res("middle_block.0", 1280, 1280, emb)); d.update(_spatial("middle_block.1", 1280, ctx))
    d.update(_temporal("middle_block.2", 1280, 1280)); d.update(_res("middle_block.3", 1280, 1280, emb))
    skips = [320, 320, 320, 320, 640, 640, 640, 1280, 1280, 1280, 1280, 1280]
    outs = [1280] * 3 + [1280] * 3 + [640] * 3 + [320] * 3
    cin = 1280
    for k in range(12):
        co = outs[k]
        d.update(_res(f"output_blocks.{k}.0", cin + skips.pop(), co, emb))
        nxt = 1
        if k >= 3:
            d.update(_spatial(f"output_blocks.{k}.1", co, ctx)); d.update(_temporal(f"output_blocks.{k}.2", co, co))
            nxt = 3
        if k in (2, 5, 8):
            d.update(_conv(f"output_blocks.{k}.{nxt}.conv", co, co, (3, 3)))
        cin = co
    d.update(_norm("out.0", 320)); d.update(_conv("out.2", 4, 320, (3, 3)))
    return d


def test_full_architecture_matches_released_layout():
    model = build_unet(FULL, device="meta")
    assert round(count_parameters(model) / 1e6, 1) == 1817.7          # = 7.27 GB fp32 (spec finding 1)
    assert round(count_parameters(model.pose_embedding_before) / 1e6, 1) == 24.7
    assert round(count_parameters(model.pose_embedding_after) / 1e6, 1) == 102.8
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    want = released_layout()
    assert len(want) == 2100
    assert want.pop(weights.POS_TABLE_KEY) == (1, 33, 1024)           # rebuilt, not loaded
    assert sorted(set(want) - set(ours)) == []
    assert sorted(set(ours) - set(want)) == []
    assert {k: ours[k] for k in want if ours[k] != want[k]} == {}
    # numbers of parameters from the shape list agree too
    assert sum(torch.Size(s).numel() for s in want.values()) == count_parameters(model)


def test_released_pos_table_is_the_rebuilt_sinusoid():
    t = sinusoid_table(33, 1024)
    assert t.shape == (1, 33, 1024)
    assert torch.allclose(t[0, 0, 0::2], torch.zeros(512)) and torch.allclose(t[0, 0, 1::2], torch.ones(512))
    assert torch.isclose(t[0, 5, 2], torch.sin(torch.tensor(5.0) / 10000 ** (2 / 1024)), atol=1e-6)


@pytest.mark.parametrize("ext", [".safetensors", ".pth"])
def test_strict_round_trip_load(tmp_path, ext):
    torch.manual_seed(0)
    model = build_unet(TINY)
    path = weights.save_unet(model, str(tmp_path / f"ax{ext}"))
    loaded = weights.load_unet(path, dtype=torch.float32)
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the released file's extra pos_table key is accepted (and ignored); an unknown key is refused
    sd, cfg = weights.read_state_dict(path)
    sd[weights.POS_TABLE_KEY] = sinusoid_table(5, TINY.ipi_dim)
    sd2 = dict(sd, **{"bogus.weight": torch.zeros(1)})
    for extra, ok in ((sd, True), (sd2, False)):
        p = str(tmp_path / "x.safetensors")
        from safetensors.torch import save_file
        import json
        save_file(extra, p, metadata={weights.META_KEY: json.dumps(cfg.to_dict())})
        if ok:
            weights.load_unet(p, dtype=torch.float32)
        else:
            with pytest.raises(weights.FlipbookInputError, match="unexpected"):
                weights.load_unet(p, dtype=torch.float32)
        os.remove(p)


def test_pth_conversion_to_fp16_safetensors(tmp_path):
    model = build_unet(TINY)
    pth = weights.save_unet(model, str(tmp_path / "animate-x_ckpt.pth"))
    out = weights.convert_to_safetensors(pth)
    assert out.endswith(".fp16.safetensors") and os.path.exists(out)
    loaded = weights.load_unet(out, dtype=torch.float16)
    k = "time_embed.0.weight"
    assert loaded.state_dict()[k].dtype == torch.float16
    assert torch.equal(loaded.state_dict()[k], model.state_dict()[k].half())


def test_unconditional_zero_weights_and_tiny_forward():
    torch.manual_seed(0)
    m = build_unet(TINY)
    f = 3                                              # any frame count: positions are rebuilt
    zero_y = torch.randn(1, TINY.text_tokens, TINY.context_dim)
    with torch.inference_mode():
        u = m.conditions(batch=1, frames=f, latent_hw=(8, 8), zero_y=zero_y)
        assert u["concat"].abs().sum() == 0 and u["slot"].abs().sum() == 0
        assert u["context"][:, TINY.text_tokens:].abs().sum() == 0
        x = torch.randn(1, 4, f, 8, 8)
        v = m(x, torch.tensor([500]), u)
        assert v.shape == (1, 4, f, 8, 8) and torch.isfinite(v).all()
        # frames are coupled only through the temporal layers: cutting them out decouples frames
        v2 = m(torch.cat([x[:, :, :1], torch.randn(1, 4, f - 1, 8, 8)], 2), torch.tensor([500]), u)
        assert not torch.allclose(v[:, :, 0], v2[:, :, 0])


def test_resolution_is_a_parameter():
    """Pose and local-image encoders pool to 4x the latent size, so any multiple-of-16 size runs
    (the release hard-codes 512x768, spec finding 6)."""
    torch.manual_seed(0)
    m = build_unet(TINY)
    zero_y = torch.randn(1, TINY.text_tokens, TINY.context_dim)
    with torch.inference_mode():
        for hh, ww in ((96, 64), (64, 128)):
            hw = (hh // 8, ww // 8)
            c = m.conditions(batch=1, frames=2, latent_hw=hw, zero_y=zero_y, local_image=torch.rand(1, 3, hh, ww),
                             pose_images=torch.rand(1, 3, 2, hh, ww))
            assert c["concat"].shape == (1, TINY.concat_dim, 2, *hw)
            v = m(torch.randn(1, 4, 2, *hw), torch.tensor([10]), c)
            assert v.shape == (1, 4, 2, *hw) and torch.isfinite(v).all()
