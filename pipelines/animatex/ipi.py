"""Implicit pose indicator (IPI, paper §3.2): keypoints + CLIP features of the driving frames -> f_i.

Two networks whose attribute names mirror the released checkpoint (spec §1.3, §3.1):

- :class:`PoseSequenceEncoder` (checkpoint prefix ``pose_embedding_before``): per-frame keypoints
  (B, L, 2*18) -> two linear layers -> + sinusoidal frame positions (added once) -> post-norm
  transformer encoder over frames -> 4 query tokens per frame q_p (B*L, 4, C).
- :class:`MotionResampler` (``pose_embedding_after``): a Perceiver whose queries are learnable
  latents q_l + q_p and whose keys/values are one projected CLIP token per frame plus the queries;
  gives the motion tokens f_i (B*L, 4, C) that the UNet's motion-attention blocks read.

Neither depends on the diffusion timestep, so the sampler computes f_i once per guidance branch
(spec finding 8).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def sinusoid_table(length: int, dim: int) -> torch.Tensor:
    """(1, length, dim) table: sin on even, cos on odd channels of pos / 10000^(2*(i//2)/dim)."""
    pos = torch.arange(length, dtype=torch.float64)[:, None]
    i = torch.arange(dim, dtype=torch.float64)[None]
    angle = pos / torch.pow(10000.0, 2 * torch.div(i, 2, rounding_mode="floor") / dim)
    table = torch.where(i.long() % 2 == 0, torch.sin(angle), torch.cos(angle))
    return table.float()[None]


class FramePositions(nn.Module):
    """Sinusoidal frame positions. The table is rebuilt for any length rather than loaded: the
    released ``pos_table`` (1, 33, 1024) is exactly this table (spec §1.6), so nothing is lost."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, length: int, like: torch.Tensor) -> torch.Tensor:
        return sinusoid_table(length, self.dim).to(device=like.device, dtype=like.dtype)


class EncoderLayer(nn.Module):
    """Post-norm transformer layer: x = LN(x + MHA(x)); x = LN(x + W2 relu(W1 x))."""

    def __init__(self, dim: int, heads: int, ff: int):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.linear1 = nn.Linear(dim, ff)
        self.linear2 = nn.Linear(ff, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.self_attn(x, x, x, need_weights=False)[0])
        return self.norm2(x + self.linear2(F.relu(self.linear1(x))))


class _Layers(nn.Module):
    def __init__(self, layers: list[nn.Module]):
        super().__init__()
        self.layers = nn.ModuleList(layers)


class PoseSequenceEncoder(nn.Module):
    """Keypoints (B, L, 2*K) with x's then y's per frame, -1 where missing -> q_p (B*L, tokens, dim).

    Frames are kept batch-major, which fixes the release's frame/batch mix-up for B > 1 (spec §1.3)."""

    def __init__(self, in_dim: int, dim: int, heads: int, layers: int, ff: int, tokens: int):
        super().__init__()
        self.dim, self.tokens = dim, tokens
        self.increase_embed_dim = nn.Sequential(nn.Linear(in_dim, dim // 2), nn.Linear(dim // 2, dim))
        self.pos_embed = FramePositions(dim)
        self.encoder = _Layers([EncoderLayer(dim, heads, ff) for _ in range(layers)])
        self.pre_image_condition_p = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim * tokens))

    def forward(self, keypoints: torch.Tensor) -> torch.Tensor:
        b, length, _ = keypoints.shape
        x = self.increase_embed_dim(keypoints)
        x = x + self.pos_embed(length, x)
        for layer in self.encoder.layers:
            x = layer(x)
        return self.pre_image_condition_p(x).reshape(b * length, self.tokens, self.dim)


class PerceiverAttention(nn.Module):
    """Queries attend to [context tokens, queries]; LayerNorms on both, bias-free projections,
    softmax in fp32 (spec §2, numerics)."""

    def __init__(self, dim: int, dim_head: int, heads: int):
        super().__init__()
        self.heads, self.dim_head = heads, dim_head
        inner = dim_head * heads
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, x: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        x, latents = self.norm1(x), self.norm2(latents)
        b, n, _ = latents.shape
        q = self.to_q(latents)
        k, v = self.to_kv(torch.cat([x, latents], dim=1)).chunk(2, dim=-1)
        q, k, v = (t.reshape(b, t.shape[1], self.heads, self.dim_head).transpose(1, 2) for t in (q, k, v))
        s = 1.0 / math.sqrt(math.sqrt(self.dim_head))
        w = torch.softmax(((q * s) @ (k * s).transpose(-2, -1)).float(), dim=-1).to(q.dtype)
        return self.to_out((w @ v).transpose(1, 2).reshape(b, n, -1))


def _perceiver_ff(dim: int, mult: int) -> nn.Sequential:
    return nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim * mult, bias=False), nn.GELU(),
                         nn.Linear(dim * mult, dim, bias=False))


class MotionResampler(nn.Module):
    """(clip tokens (N, 1, clip_dim), q_p (N, tokens, dim)) -> f_i (N, tokens, out_dim)."""

    def __init__(self, dim: int, depth: int, dim_head: int, heads: int, clip_dim: int, out_dim: int,
                 ff_mult: int, tokens: int):
        super().__init__()
        self.latents = nn.Parameter(torch.randn(1, tokens, dim) / dim ** 0.5)
        self.proj_in = nn.Linear(clip_dim, dim)
        self.proj_out = nn.Linear(dim, out_dim)
        self.norm_out = nn.LayerNorm(out_dim)
        self.layers = nn.ModuleList(
            nn.ModuleList([PerceiverAttention(dim, dim_head, heads), _perceiver_ff(dim, ff_mult)])
            for _ in range(depth))

    def forward(self, clip_tokens: torch.Tensor, pose_queries: torch.Tensor) -> torch.Tensor:
        latents = self.latents + pose_queries
        x = self.proj_in(clip_tokens)
        for attn, ff in self.layers:
            latents = attn(x, latents) + latents
            latents = ff(latents) + latents
        return self.norm_out(self.proj_out(latents))
