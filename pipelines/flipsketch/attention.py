"""FlipSketch's dual attention composition as a name-keyed attention processor (spec §1.4).

The generation's self-attention (attn1) of spatial and temporal blocks is composed with a reference
pass: spatially, the first N frames query with the reference's queries (C^S); temporally, key frame 0
is the reference's frame-0 key, its logit scaled by (1 + lam * j / 50) for query frame j (C^T).
Roles come from module names (spec finding 4), and the math is the torch-1.13 code path's
(finding 3), spelled out with the classic processor's pieces so it works on PyTorch 2 (finding 2).
"""
from __future__ import annotations

import torch

from ..diffusion.attention import ReferenceStore, finish, project_qkv, scores


class FlipSketchPatch:
    """One run's installer: :class:`FlipSketchProcessor` on the self-attention (attn1) of spatial and
    temporal blocks, as the settings ask (``cfg``: a FlipSketchAttention)."""

    def __init__(self, cfg, store: ReferenceStore):
        self.cfg, self.store = cfg, store

    def processor(self, role, inner):
        if role.slot != "attn1" or not role.is_self:
            return None
        if (role.kind == "spatial" and not self.cfg.spatial) or (role.kind == "temporal" and not self.cfg.temporal):
            return None
        return FlipSketchProcessor(role, inner, self.store, self.cfg.lam)


class FlipSketchProcessor:
    """attn1 processor. ``store.mode``: ``off`` -> the inner processor; ``save`` (reference pass,
    batch 1) -> plain attention, keeping the reference queries (spatial) or the frame-0 keys
    (temporal); ``use`` (generation pass) -> C^S / C^T on the samples ``params['cond']``.

    Layouts (diffusers head_to_batch_dim): spatial (B*F*heads, HW, d), rows (b*F + f)*heads + h;
    temporal (B*HW*heads, F, d). ``params`` give frames F, batch B, cond (b0, b1) and copies N.
    """

    def __init__(self, role, inner, store: ReferenceStore, lam: float):
        self.role, self.inner, self.store, self.lam = role, inner, store, float(lam)

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        mode = self.store.mode
        if mode == "off":
            return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kw)
        q, k, v, ctx = project_qkv(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        name, spatial = self.role.name, self.role.kind == "spatial"
        if mode == "save":
            self.store.data[name] = q if spatial else k[:, 0]
            return finish(attn, scores(attn, q, k, ctx["mask"]), v, ctx)
        p = self.store.params
        frames, batch, (b0, b1) = p["frames"], p["batch"], p["cond"]
        if spatial:  # C^S: frames 0..N-1 of every composed sample query with the reference queries
            q_ref = self.store.data[name]
            q_ref = q_ref.view(-1, attn.heads, *q_ref.shape[1:])
            n = min(p["copies"], frames)
            q = q.view(batch, frames, attn.heads, *q.shape[1:]).clone()
            q[b0:b1, :n] = q_ref[:n] if q_ref.shape[0] >= n else q_ref[:1].expand(n, -1, -1, -1)
            q = q.flatten(0, 2)
            return finish(attn, scores(attn, q, k, ctx["mask"]), v, ctx)
        # C^T: key frame 0 becomes the reference key, its column scaled by (1 + lam * j / 50) (spec §1.4)
        s = scores(attn, q, k, ctx["mask"])
        k_ref = self.store.data[name]                                      # (rows, d)
        qc = q.view(batch, -1, frames, q.shape[-1])[b0:b1]                 # (bc, rows, F, d)
        w = 1 + self.lam * torch.arange(frames, device=q.device, dtype=torch.float32) / 50
        col = torch.einsum("brjd,rd->brj", qc.to(s.dtype), k_ref.to(s.dtype)) * (attn.scale * w.to(s.dtype))
        s = s.view(batch, -1, frames, frames).clone()
        s[b0:b1, :, :, 0] = col
        return finish(attn, s.flatten(0, 1), v, ctx)
