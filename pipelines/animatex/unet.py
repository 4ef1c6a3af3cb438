"""The Animate-X 3D UNet, re-implemented in plain torch (spec §1.3, §3.1).

UniAnimate backbone (ResBlocks with temporal convolutions, spatial transformers with cross-attention
to [zero_y, 4 CLIP tokens], temporal transformers over frames) plus Animate-X's motion attention
after every spatial transformer (reading the IPI tokens f_i) and the pose / local-image / reference
encoders. Attribute names mirror the released checkpoint so that its state dict loads strictly,
without a key map; ``pose_embedding_before.pos_embed.pos_table`` is rebuilt, not loaded.

Time layout: the UNet runs on F+1 frames, a leading reference slot (12 channels, all zero in the
release's "local_image" mode, the embedded reference latent in the paper's "latent" mode) followed
by the F noisy frames, and returns the F frames (spec §1.3, pose path).

Everything that does not depend on the timestep is computed by :meth:`AnimateXUNet.conditions`
once per guidance branch; :meth:`AnimateXUNet.forward` then only runs the backbone (finding 8).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .settings import AnimateXConfig
from .ipi import MotionResampler, PoseSequenceEncoder

# Torch's fused attention kernels limit the batch dimension on some devices; temporal attention
# has batch = pixels x frames-batch, so it is cut into chunks of this many sequences.
ATTN_MAX_BATCH = 32768


def attention(q, k, v, heads: int) -> torch.Tensor:
    """Multi-head scaled dot-product attention of (N, Lq, H*D) queries on (N, Lk, H*D) keys/values."""
    n = q.shape[0]
    q, k, v = (rearrange(t, "n l (h d) -> n h l d", h=heads) for t in (q, k, v))
    if n <= ATTN_MAX_BATCH:
        out = F.scaled_dot_product_attention(q, k, v)
    else:
        out = torch.cat([F.scaled_dot_product_attention(q[i:i + ATTN_MAX_BATCH], k[i:i + ATTN_MAX_BATCH],
                                                        v[i:i + ATTN_MAX_BATCH])
                         for i in range(0, n, ATTN_MAX_BATCH)])
    return rearrange(out, "n h l d -> n l (h d)")


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """[cos, sin] of t * 10000^(-i/(dim/2)) (spec §1.3; diffusers Timesteps with flip_sin_to_cos)."""
    half = dim // 2
    freqs = torch.pow(10000.0, -torch.arange(half, device=t.device, dtype=torch.float32) / half)
    arg = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(arg), torch.sin(arg)], dim=1)


# --- transformer pieces -----------------------------------------------------------------------

class CrossAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int, context_dim: int | None = None):
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim or dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim or dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, dim))

    def forward(self, x, context=None):
        c = x if context is None else context
        return self.to_out(attention(self.to_q(x), self.to_k(c), self.to_v(c), self.heads))


class GEGLU(nn.Module):
    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x):
        x, gate = self.proj(x).chunk(2, dim=-1)
        return x * F.gelu(gate)


class GatedFeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        self.net = nn.Sequential(GEGLU(dim, dim * mult), nn.Identity(), nn.Linear(dim * mult, dim))

    def forward(self, x):
        return self.net(x)


class BasicTransformerBlock(nn.Module):
    """Self-attention, cross-attention (self-attention again when context_dim is None), GEGLU FF."""

    def __init__(self, dim: int, heads: int, dim_head: int, context_dim: int | None):
        super().__init__()
        self.attn1 = CrossAttention(dim, heads, dim_head)
        self.attn2 = CrossAttention(dim, heads, dim_head, context_dim)
        self.ff = GatedFeedForward(dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x, context=None):
        x = self.attn1(self.norm1(x)) + x
        x = self.attn2(self.norm2(x), context) + x
        return self.ff(self.norm3(x)) + x


def _group_norm(ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, ch, eps=1e-6)


class MotionAttention(nn.Module):
    """Animate-X's pose attention (the IPI sink): x + alpha * proj(block(x, f_i)), alpha = 1."""

    def __init__(self, ch: int, heads: int, dim_head: int, context_dim: int, weight: float = 1.0):
        super().__init__()
        self.weight = weight
        self.norm_p = _group_norm(ch)
        self.proj_in_p = nn.Linear(ch, heads * dim_head)
        self.transformer_blocks_p = nn.ModuleList([BasicTransformerBlock(heads * dim_head, heads, dim_head, context_dim)])
        self.proj_out_p = nn.Linear(heads * dim_head, ch)

    def forward(self, x, motion):
        h, w = x.shape[-2:]
        y = self.proj_in_p(rearrange(self.norm_p(x), "n c h w -> n (h w) c"))
        for block in self.transformer_blocks_p:
            y = block(y, motion)
        y = rearrange(self.proj_out_p(y), "n (h w) c -> n c h w", h=h, w=w)
        return x + self.weight * y


class SpatialTransformer(nn.Module):
    """Per-frame transformer over pixels with cross-attention to the context tokens, followed by
    the motion attention on f_i."""

    def __init__(self, ch: int, heads: int, dim_head: int, context_dim: int):
        super().__init__()
        inner = heads * dim_head
        self.norm = _group_norm(ch)
        self.proj_in = nn.Linear(ch, inner)
        self.transformer_blocks = nn.ModuleList([BasicTransformerBlock(inner, heads, dim_head, context_dim)])
        self.proj_out = nn.Linear(inner, ch)
        self.pose_attention = MotionAttention(ch, heads, dim_head, context_dim)

    def forward(self, x, context, motion):
        h, w = x.shape[-2:]
        y = self.proj_in(rearrange(self.norm(x), "n c h w -> n (h w) c"))
        for block in self.transformer_blocks:
            y = block(y, context)
        x = x + rearrange(self.proj_out(y), "n (h w) c -> n c h w", h=h, w=w)
        return self.pose_attention(x, motion)


class TemporalTransformer(nn.Module):
    """Per-pixel transformer over frames (two self-attentions + FF), Conv1d projections, residual.
    No positional encoding (spec §1.3)."""

    def __init__(self, ch: int, heads: int, dim_head: int):
        super().__init__()
        inner = heads * dim_head
        self.norm = _group_norm(ch)
        self.proj_in = nn.Conv1d(ch, inner, 1)
        self.transformer_blocks = nn.ModuleList([BasicTransformerBlock(inner, heads, dim_head, None)])
        self.proj_out = nn.Conv1d(inner, ch, 1)

    def forward(self, x, frames: int):
        b = x.shape[0] // frames
        h, w = x.shape[-2:]
        y = rearrange(x, "(b f) c h w -> b c f h w", f=frames)
        y = rearrange(self.norm(y), "b c f h w -> (b h w) c f")
        y = self.proj_in(y).transpose(1, 2)
        for block in self.transformer_blocks:
            y = block(y)
        y = self.proj_out(y.transpose(1, 2))
        return x + rearrange(y, "(b h w) c f -> (b f) c h w", b=b, h=h, w=w)


# --- convolutional pieces ---------------------------------------------------------------------

class TemporalConv(nn.Module):
    """Four [GroupNorm, SiLU, (Dropout), Conv3d (3,1,1)] over frames, residual."""

    def __init__(self, ch: int):
        super().__init__()

        def conv(first: bool) -> nn.Sequential:
            layers = [_gn32(ch), nn.SiLU()] + ([] if first else [nn.Identity()])
            return nn.Sequential(*layers, nn.Conv3d(ch, ch, (3, 1, 1), padding=(1, 0, 0)))

        self.conv1, self.conv2, self.conv3, self.conv4 = conv(True), conv(False), conv(False), conv(False)

    def forward(self, x, frames: int):
        y = rearrange(x, "(b f) c h w -> b c f h w", f=frames)
        y = self.conv4(self.conv3(self.conv2(self.conv1(y))))
        return x + rearrange(y, "b c f h w -> (b f) c h w")


def _gn32(ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, ch)


class ResBlock(nn.Module):
    """GN, SiLU, conv, + time embedding, GN, SiLU, conv, skip; then the temporal convolution.
    The checkpoint spells the last attribute ``temopral_conv``."""

    def __init__(self, ch: int, emb_dim: int, out_ch: int):
        super().__init__()
        self.in_layers = nn.Sequential(_gn32(ch), nn.SiLU(), nn.Conv2d(ch, out_ch, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, out_ch))
        self.out_layers = nn.Sequential(_gn32(out_ch), nn.SiLU(), nn.Identity(), nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip_connection = nn.Identity() if ch == out_ch else nn.Conv2d(ch, out_ch, 1)
        self.temopral_conv = TemporalConv(out_ch)

    def forward(self, x, emb, frames: int):
        h = self.in_layers(x) + self.emb_layers(emb).to(x.dtype)[:, :, None, None]
        h = self.skip_connection(x) + self.out_layers(h)
        return self.temopral_conv(h, frames)


class Downsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.op = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x):
        return self.op(x)


class Upsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class PixelEncoder(nn.Module):
    """STC-style image encoder: conv at full size, pool to 4x the latent size, two stride-2 convs.
    The release pools to a fixed (384, 256); pooling to the latent size x 4 is the same at
    512x768 and works at any size (spec finding 6)."""

    def __init__(self, in_ch: int, mid: int, out_ch: int):
        super().__init__()
        self.add_module("0", nn.Conv2d(in_ch, mid, 3, padding=1))
        self.add_module("3", nn.Conv2d(mid, mid, 3, stride=2, padding=1))
        self.add_module("5", nn.Conv2d(mid, out_ch, 3, stride=2, padding=1))

    def forward(self, x, latent_hw: tuple[int, int]):
        x = F.adaptive_avg_pool2d(F.silu(self._modules["0"](x)), (latent_hw[0] * 4, latent_hw[1] * 4))
        return self._modules["5"](F.silu(self._modules["3"](x)))


class FrameAttention(nn.Module):
    """Bias-free qkv attention + output projection, the attention of the adapters below."""

    def __init__(self, dim: int, heads: int, dim_head: int):
        super().__init__()
        self.heads = heads
        self.to_qkv = nn.Linear(dim, heads * dim_head * 3, bias=False)
        self.to_out = nn.Sequential(nn.Linear(heads * dim_head, dim))

    def forward(self, x):
        return self.to_out(attention(*self.to_qkv(x).chunk(3, dim=-1), self.heads))


class PreNorm(nn.Module):
    def __init__(self, dim: int, fn: nn.Module):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fn = fn

    def forward(self, x):
        return self.fn(self.norm(x)) + x


class PlainFeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        self.net = nn.Sequential(nn.Sequential(nn.Linear(dim, dim * mult), nn.GELU()), nn.Identity(),
                                 nn.Linear(dim * mult, dim))

    def forward(self, x):
        return self.net(x)


class FrameAdapter(nn.Module):
    """One pre-norm transformer layer over frames, per latent pixel (2 heads of width = channels)."""

    def __init__(self, dim: int):
        super().__init__()
        self.layers = nn.ModuleList([nn.ModuleList([PreNorm(dim, FrameAttention(dim, 2, dim)), PlainFeedForward(dim)])])

    def forward(self, x):
        """(B, C, F, h, w) -> same."""
        b, _, _, h, w = x.shape
        y = rearrange(x, "b c f h w -> (b h w) f c")
        for attn, ff in self.layers:
            y = attn(y)
            y = ff(y) + y
        return rearrange(y, "(b h w) f c -> b c f h w", b=b, h=h, w=w)


# --- the UNet ---------------------------------------------------------------------------------

class AnimateXUNet(nn.Module):
    def __init__(self, cfg: AnimateXConfig):
        super().__init__()
        self.cfg = cfg
        dim, ctx, cd = cfg.dim, cfg.context_dim, cfg.concat_dim
        emb = dim * 4
        hd = cfg.head_dim

        self.time_embed = nn.Sequential(nn.Linear(dim, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.pre_image_condition = nn.Sequential(nn.Linear(cfg.clip_dim, ctx), nn.SiLU(),
                                                 nn.Linear(ctx, ctx * cfg.num_tokens))
        self.pose_embedding_before = PoseSequenceEncoder(2 * cfg.pose_points, cfg.ipi_dim, cfg.ipi_heads,
                                                         cfg.ipi_layers, cfg.ipi_ff, cfg.num_tokens)
        self.pose_embedding_after = MotionResampler(cfg.ipi_dim, cfg.resampler_depth, cfg.resampler_dim_head,
                                                    cfg.resampler_heads, cfg.clip_dim, ctx,
                                                    cfg.resampler_ff_mult, cfg.num_tokens)
        self.local_image_embedding = PixelEncoder(3, cd * 4, cd)
        self.local_image_embedding_after = FrameAdapter(cd)
        self.dwpose_embedding = PixelEncoder(3, cd * 4, cd)
        self.dwpose_embedding_after = FrameAdapter(cd)
        # paper mode (reference latent in the leading slot); ~0.03M parameters
        self.randomref_pose2_embedding = PixelEncoder(3, cd * 4, cd + 4)
        self.randomref_pose2_embedding_after = FrameAdapter(cd + 4)
        self.randomref_embedding2 = nn.Sequential(
            nn.Conv2d(cfg.in_dim, cd * 4, 3, padding=1), nn.SiLU(), nn.Conv2d(cd * 4, cd * 4, 3, padding=1),
            nn.SiLU(), nn.Conv2d(cd * 4, cd + 4, 3, padding=1))
        self.randomref_embedding_after2 = FrameAdapter(cd + 4)

        def st(ch):
            return SpatialTransformer(ch, ch // hd, hd, ctx)

        def tt(ch):
            return TemporalTransformer(ch, ch // hd, hd)

        enc = [dim * m for m in (1,) + tuple(cfg.dim_mult)]
        dec = [dim * cfg.dim_mult[-1]] + [dim * m for m in reversed(cfg.dim_mult)]
        skips = [dim]
        scale = 1.0
        self.input_blocks = nn.ModuleList([nn.ModuleList([
            nn.Conv2d(cfg.in_dim + cd, dim, 3, padding=1), TemporalTransformer(dim, cfg.num_heads, hd)])])
        levels = len(cfg.dim_mult)
        for i, (cin, cout) in enumerate(zip(enc[:-1], enc[1:])):
            for j in range(cfg.num_res_blocks):
                block = nn.ModuleList([ResBlock(cin, emb, cout)])
                if scale in cfg.attn_scales:
                    block.extend([st(cout), tt(cout)])
                cin = cout
                self.input_blocks.append(block)
                skips.append(cout)
                if i != levels - 1 and j == cfg.num_res_blocks - 1:
                    self.input_blocks.append(Downsample(cout))
                    skips.append(cout)
                    scale /= 2.0
        c = enc[-1]
        self.middle_block = nn.ModuleList([ResBlock(c, emb, c), st(c), tt(c), ResBlock(c, emb, c)])
        self.output_blocks = nn.ModuleList()
        for i, (cin, cout) in enumerate(zip(dec[:-1], dec[1:])):
            for j in range(cfg.num_res_blocks + 1):
                block = nn.ModuleList([ResBlock(cin + skips.pop(), emb, cout)])
                if scale in cfg.attn_scales:
                    block.extend([st(cout), tt(cout)])
                cin = cout
                if i != levels - 1 and j == cfg.num_res_blocks:
                    block.append(Upsample(cout))
                    scale *= 2.0
                self.output_blocks.append(block)
        self.out = nn.Sequential(_gn32(dim), nn.SiLU(), nn.Conv2d(dim, cfg.out_dim, 3, padding=1))

    # -- conditioning (timestep-independent; computed once per guidance branch) ------------------

    @property
    def dtype(self) -> torch.dtype:
        return self.time_embed[0].weight.dtype

    @property
    def device(self) -> torch.device:
        return self.time_embed[0].weight.device

    def conditions(self, *, batch: int, frames: int, latent_hw: tuple[int, int], zero_y: torch.Tensor,
                   clip_ref: torch.Tensor | None = None, local_image: torch.Tensor | None = None,
                   pose_images: torch.Tensor | None = None, keypoints: torch.Tensor | None = None,
                   clip_frames: torch.Tensor | None = None, ref_latent: torch.Tensor | None = None,
                   ref_pose_image: torch.Tensor | None = None) -> dict:
        """Everything the UNet reads besides x_t and t. None = the unconditional branch's zeros.

        zero_y (1, T, C) text tokens of ""; clip_ref (B, clip_dim) reference CLIP embedding;
        local_image (B, 3, H, W) reference pixels in 0..1; pose_images (B, 3, F, H, W) rendered
        skeletons in 0..1; keypoints (B, F+1, 2, K) normalised, reference first, -1 missing;
        clip_frames (B, F+1, clip_dim) CLIP embeddings, reference first; ref_latent (B, 4, h, w)
        scaled VAE latent of the reference (paper mode); ref_pose_image (B, 3, H, W).
        """
        cfg, dt, dev = self.cfg, self.dtype, self.device
        h, w = latent_hw
        concat = torch.zeros(batch, cfg.concat_dim, frames, h, w, device=dev, dtype=dt)
        if local_image is not None:
            # The release repeats the reference over all frames; attention over identical frames
            # equals attention over one, so one frame is embedded and broadcast.
            e = self.local_image_embedding(local_image.to(dev, dt), latent_hw)
            concat = concat + self.local_image_embedding_after(e[:, :, None])
        if pose_images is not None:
            p = rearrange(pose_images.to(dev, dt), "b c f hh ww -> (b f) c hh ww")
            p = rearrange(self.dwpose_embedding(p, latent_hw), "(b f) c h w -> b c f h w", b=batch)
            concat = concat + self.dwpose_embedding_after(p)
        slot = torch.zeros(batch, cfg.concat_dim + 4, 1, h, w, device=dev, dtype=dt)
        if ref_latent is not None:
            # Release order: latent and reference-pose image are embedded and adapted separately, then summed.
            r = self.randomref_embedding_after2(self.randomref_embedding2(ref_latent.to(dev, dt))[:, :, None])
            if ref_pose_image is not None:
                r = r + self.randomref_pose2_embedding_after(
                    self.randomref_pose2_embedding(ref_pose_image.to(dev, dt), latent_hw)[:, :, None])
            slot = slot + r
        y = zero_y.to(dev, dt).expand(batch, -1, -1)
        if clip_ref is not None:
            img = self.pre_image_condition(clip_ref.to(dev, dt)).reshape(batch, cfg.num_tokens, cfg.context_dim)
        else:
            img = torch.zeros(batch, cfg.num_tokens, cfg.context_dim, device=dev, dtype=dt)
        context = torch.cat([y, img], dim=1)
        if keypoints is None:
            keypoints = torch.zeros(batch, frames + 1, 2, cfg.pose_points, device=dev, dtype=dt)
        if clip_frames is None:
            clip_frames = torch.zeros(batch, frames + 1, cfg.clip_dim, device=dev, dtype=dt)
        q_p = self.pose_embedding_before(keypoints.to(dev, dt).flatten(2))
        motion = self.pose_embedding_after(clip_frames.to(dev, dt).reshape(-1, 1, cfg.clip_dim), q_p)
        return {"concat": concat, "slot": slot, "context": context, "motion": motion}

    # -- backbone --------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: dict) -> torch.Tensor:
        """x (B, 4, F, h, w) noisy latents, t (B,) timesteps, cond from :meth:`conditions` -> v (B, 4, F, h, w)."""
        b, _, f, h, w = x.shape
        frames = f + 1
        x = torch.cat([cond["slot"], torch.cat([x.to(self.dtype), cond["concat"]], dim=1)], dim=2)
        x = rearrange(x, "b c f h w -> (b f) c h w")
        e = self.time_embed(timestep_embedding(t.reshape(-1).expand(b), self.cfg.dim).to(self.dtype))
        e = e.repeat_interleave(frames, dim=0)
        context = cond["context"].repeat_interleave(frames, dim=0)
        motion = cond["motion"]
        skips = []
        for block in self.input_blocks:
            x = self._run(block, x, e, context, motion, frames)
            skips.append(x)
        x = self._run(self.middle_block, x, e, context, motion, frames)
        for block in self.output_blocks:
            x = self._run(block, torch.cat([x, skips.pop()], dim=1), e, context, motion, frames)
        x = rearrange(self.out(x), "(b f) c h w -> b c f h w", b=b)
        return x[:, :, 1:]

    @staticmethod
    def _run(block, x, e, context, motion, frames):
        for m in (block if isinstance(block, nn.ModuleList) else [block]):
            if isinstance(m, ResBlock):
                x = m(x, e, frames)
            elif isinstance(m, SpatialTransformer):
                x = m(x, context, motion)
            elif isinstance(m, TemporalTransformer):
                x = m(x, frames)
            else:
                x = m(x)
        return x


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def build_unet(cfg: AnimateXConfig, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> AnimateXUNet:
    """Build the UNet (``device="meta"`` allocates nothing: for key/shape checks)."""
    with torch.device(device):
        model = AnimateXUNet(cfg)
    return model.to(dtype=dtype).eval()


