"""Dual Consistency Attention (DCAM, PA:101-115, spec §2.3) and Mask-Guided Decoupling (MGDM, PA:117-134,
§2.4) as name-keyed attention processors riding on the model.

Layout: the sampler runs all frames and both CFG branches as one batch, rows ``b * F + f`` (branch b,
frame f), and sets ``store.params`` ``frames`` = F. The self-attention (attn1) of the up blocks
(``blocks="up"``, PA:115) gets :class:`DualAttentionProcessor`: for query frame i >= 1,

    DCA_i = l1 * Attn(Q_i, K_0, V_0) + l2 * Attn(Q_i, K_{i-1}, V_{i-1}) + l3 * Attn(Q_i, K_i, V_i)   (Eq. 7-8)

frame 0 keeps plain self-attention *(inf: the formula is stated for subsequent frames)*. With masks
``store.data["masks"]`` (F, h, w) in 0..1 (MGDM, Eq. 9-10): K^c_j = M_j K_j, V^c_j = M_j V_j (``multiply``,
faithful) and K^b, V^b with 1 - M_j, DCA_i = M_i DCA^c_i + (1 - M_i) DCA^b_i; ``logit`` instead adds a
log-mask bias to the scores (a finite -1e4, so an empty mask attends uniformly instead of giving NaN).

The cross-attention (attn2) modules at the mask resolution get :class:`CrossAttnRecorder` when a
subject word is set: it records the cond branch's attention probabilities of the subject tokens, from
which :func:`masks_from_maps` makes the next step's per-frame masks (P2P LocalBlend recipe, *(inf)*).
In ``store.mode == "off"`` (inversion, PACM) every processor passes through untouched.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..diffusion.attention import ReferenceStore, output, project_qkv


class DualAttentionPatch:
    """One run's installer (``cfg``: a :class:`.settings.PoseAnimateAttention`)."""

    def __init__(self, cfg, store: ReferenceStore):
        self.cfg, self.store = cfg, store

    def processor(self, role, inner):
        if role.kind != "spatial":
            return None
        if role.slot == "attn1" and role.is_self and (self.cfg.blocks == "all" or role.block == "up"):
            return DualAttentionProcessor(role, inner, self.store, self.cfg)
        if role.slot == "attn2" and not role.is_self and self.cfg.subject_word and self.cfg.source_mask is not None:
            return CrossAttnRecorder(role, inner, self.store)
        return None


def _attend(q, k, v, scale, bias=None):
    """softmax(q k^T * scale + bias) v on (..., L, d) tensors."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale)


def _token_mask(masks: torch.Tensor, tokens: int, shape4) -> torch.Tensor:
    """(F, h, w) masks -> (F, tokens) at a module's token grid (nearest)."""
    f, h, w = masks.shape
    if shape4 is not None:
        th, tw = shape4[2], shape4[3]
    else:  # a square-ish grid with the latents' aspect
        ratio = (tokens * h / w) ** 0.5
        th = max(1, round(ratio))
        tw = tokens // th
    m = F.interpolate(masks[:, None].float(), size=(th, tw), mode="nearest")
    return m.reshape(f, -1)


class DualAttentionProcessor:
    def __init__(self, role, inner, store: ReferenceStore, cfg):
        self.role, self.inner, self.store, self.cfg = role, inner, store, cfg

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        if self.store.mode != "use" or encoder_hidden_states is not None:
            return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kw)
        frames = int(self.store.params["frames"])
        q, k, v, ctx = project_qkv(attn, hidden_states, None, attention_mask, temb)
        h = attn.heads
        nb = q.shape[0] // (h * frames)
        shape = (nb, frames, h, q.shape[1], q.shape[2])
        q, k, v = (x.view(shape) for x in (q, k, v))            # (branches, F, heads, L, d)
        masks = self.store.data.get("masks")
        if masks is not None:
            masks = _token_mask(masks.to(q.device), k.shape[3], ctx["shape4"]).to(q.dtype)   # (F, L)
        out = dual_attention(q, k, v, attn.scale, tuple(float(x) for x in self.cfg.lambdas), masks,
                             self.cfg.mask_mode)
        return output(attn, out.reshape(-1, *out.shape[3:]), ctx)


def dual_attention(q, k, v, scale: float, lambdas=(0.7, 0.15, 0.15), masks: torch.Tensor | None = None,
                   mask_mode: str = "multiply") -> torch.Tensor:
    """DCA (and MGDM with ``masks`` (F, L)) on (branches, F, heads, L, d) q/k/v; frame 0 plain."""
    frames = q.shape[1]
    idx = torch.arange(frames, device=q.device)
    refs = (torch.zeros_like(idx), (idx - 1).clamp(min=0), idx)          # key frames 0, i-1, i

    def dca(kk, vv, bias=None):
        out = 0
        for lam, j in zip(lambdas, refs):
            b = None if bias is None else bias[j][None, :, None, None, :]   # (1, F, 1, 1, L) over keys
            out = out + lam * _attend(q, kk[:, j], vv[:, j], scale, b)
        return out

    if masks is None:
        mixed = dca(k, v)
    else:
        m = masks[None, :, None, :, None]                                # (1, F, 1, L, 1)
        if mask_mode == "multiply":                                      # Eq. 9: masked keys and values
            out_c = dca(k * m, v * m)
            out_b = dca(k * (1 - m), v * (1 - m))
        else:                                                            # logit: masked keys leave the softmax
            big = torch.tensor(-1e4, dtype=q.dtype, device=q.device)
            zero = torch.zeros((), dtype=q.dtype, device=q.device)
            out_c = dca(k, v, torch.where(masks > 0.5, zero, big))
            out_b = dca(k, v, torch.where(masks > 0.5, big, zero))
        mq = masks[None, :, None, :, None]                               # Eq. 10: per query token
        mixed = mq * out_c + (1 - mq) * out_b
    plain0 = _attend(q[:, :1], k[:, :1], v[:, :1], scale)
    return torch.cat([plain0, mixed[:, 1:]], dim=1)


class CrossAttnRecorder:
    """attn2 pass-through that records the cond branch's attention probabilities of the subject
    tokens ``store.params["subject_tokens"]`` into ``store.data["maps"][tokens]`` (F, heads, L)."""

    def __init__(self, role, inner, store: ReferenceStore):
        self.role, self.inner, self.store = role, inner, store

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        out = self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kw)
        tokens = self.store.params.get("subject_tokens") if self.store.mode == "use" else None
        if tokens:
            frames = int(self.store.params["frames"])
            hs = hidden_states[-frames:]                                 # the cond branch: the last F rows
            ehs = encoder_hidden_states[-frames:]
            q, k, _, ctx = project_qkv(attn, hs, ehs, None, temb)
            probs = (torch.bmm(q.float(), k.float().transpose(1, 2)) * attn.scale).softmax(-1)
            sel = probs[..., list(tokens)].sum(-1).view(frames, attn.heads, -1)
            maps = self.store.data.setdefault("maps", {})
            maps.setdefault(sel.shape[-1], []).append((sel, ctx["shape4"]))
        return out


def masks_from_maps(maps: dict, latent_hw: tuple[int, int], threshold: float = 0.3) -> torch.Tensor | None:
    """Per-frame subject masks (F, h, w) from recorded cross-attention maps (spec §2.4 recipe): at the
    grid with a quarter of the latents' side if recorded (SD1.5: 16x16 at 512 px, the layers P2P uses),
    else the coarsest one; mean over heads and layers, 3x3 max-pool, upsampled, divided by the frame's
    maximum, thresholded."""
    if not maps:
        return None
    h, w = latent_hw
    want = max(1, h // 4) * max(1, w // 4)
    tokens = want if want in maps else min(maps)
    entries = maps[tokens]
    shape4 = entries[0][1]
    if shape4 is not None:
        gh, gw = shape4[2], shape4[3]
    else:
        gh = max(1, round((tokens * h / w) ** 0.5))
        gw = tokens // gh
    m = torch.stack([e[0].mean(1) for e in entries]).mean(0).view(-1, 1, gh, gw)     # (F, 1, gh, gw)
    m = F.max_pool2d(m, 3, stride=1, padding=1)
    m = F.interpolate(m, size=(h, w), mode="bilinear", align_corners=False)[:, 0]
    m = m / m.flatten(1).max(1).values.clamp(min=1e-12)[:, None, None]
    return (m > threshold).float()
