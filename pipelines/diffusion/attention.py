"""Attention patches installed by module name, never by tensor shape (spec §0.4, §1.4, §3).

Every diffusers ``Attention`` module in a UNet gets an :class:`AttnRole` derived from its name:

* ``kind``: ``spatial`` (Transformer2D blocks) or ``temporal`` (``temp_attentions.*`` and
  ``transformer_in``, the UNet3D's frame-axis transformers);
* ``is_self``: self-attention (attn1; also a temporal block's attn2, which attends to its own
  frames) or cross-attention to the text (attn2 of spatial blocks);
* ``block``: ``in``/``down``/``mid``/``up`` and the block ``level``.

What a model carries (FLIPBOOK_T2V's ``patches``) is an :class:`AttentionPatch`: frozen settings that
``bind(store)`` for one run to an installer with ``processor(role, inner) -> processor | None``.
:func:`patched` asks every installer about every module, in order; one that answers wraps ``inner``
(the processor installed before it, which it may call), so patches compose, and leaving the context
restores the model exactly. Patches that pass information between UNet calls (save/use) share the
run's :class:`ReferenceStore`; the sampler that drives them sets its phases, any other loop leaves it
``off``, where a patch must pass its inner processor through untouched.
"""
from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from typing import Protocol

import torch

ROLES = ("spatial_self", "temporal_self", "cross")


@dataclass(frozen=True)
class AttnRole:
    name: str
    kind: str          # "spatial" | "temporal"
    is_self: bool
    slot: str          # "attn1" | "attn2"
    block: str         # "in" | "down" | "mid" | "up"
    level: int         # down/up block index; -1 for in/mid

    @property
    def role(self) -> str:
        return f"{self.kind}_self" if self.is_self else "cross"


_BLOCK = re.compile(r"^(down_blocks|up_blocks)\.(\d+)\.")


def attention_role(name: str, module) -> AttnRole:
    """The role of the Attention module called ``name`` (as in ``model.named_modules()``)."""
    parts = name.split(".")
    kind = "temporal" if name.startswith("transformer_in") or "temp_attentions" in parts else "spatial"
    m = _BLOCK.match(name)
    if m:
        block, level = m.group(1).split("_")[0], int(m.group(2))
    elif name.startswith("mid_block"):
        block, level = "mid", -1
    else:
        block, level = "in", -1
    slot = parts[-1]
    return AttnRole(name=name, kind=kind, is_self=not getattr(module, "is_cross_attention", False),
                    slot=slot, block=block, level=level)


def attention_modules(model: torch.nn.Module) -> dict:
    """``{name: (module, role)}`` for every diffusers Attention module of ``model``."""
    from diffusers.models.attention_processor import Attention

    return {n: (m, attention_role(n, m)) for n, m in model.named_modules() if isinstance(m, Attention)}


@contextlib.contextmanager
def patched(model: torch.nn.Module, *patches):
    """Install ``patches`` (in order; later ones wrap earlier ones) and restore on exit."""
    mods = attention_modules(model)
    saved = {n: m.processor for n, (m, _) in mods.items()}
    try:
        for name, (module, role) in mods.items():
            proc = saved[name]
            for patch in patches:
                if patch is None:
                    continue
                new = patch.processor(role, proc)
                if new is not None:
                    proc = new
            if proc is not saved[name]:
                module.set_processor(proc)
        yield mods
    finally:
        for name, (module, _) in mods.items():
            if module.processor is not saved[name]:
                module.set_processor(saved[name])


class Installer(Protocol):
    def processor(self, role: AttnRole, inner): ...


class AttentionPatch(Protocol):
    """A patch as a model carries it (e.g. FlipSketch's composition settings)."""
    def bind(self, store: "ReferenceStore") -> Installer: ...


@dataclass
class ReferenceStore:
    """State shared by the processors of one patch between UNet calls: a ``mode`` (``off`` = the
    inner processors run untouched, ``save`` = store per-module tensors, ``use`` = compose with
    them), per-call ``params`` set by the sampler, and ``data[name]`` the saved tensors."""
    mode: str = "off"
    params: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)

    @contextlib.contextmanager
    def phase(self, mode: str, **params):
        prev_mode, prev_params = self.mode, self.params
        self.mode, self.params = mode, {**prev_params, **params}
        try:
            yield self
        finally:
            self.mode, self.params = prev_mode, prev_params


# --- classic attention arithmetic (diffusers AttnProcessor, spelled out so patches can edit it) ---

def project_qkv(attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None):
    """Norms + projections of diffusers' classic processor. Returns ``(q, k, v, ctx)`` with q/k/v in
    the (batch*heads, tokens, head_dim) layout and ``ctx`` what :func:`finish` needs."""
    residual = hidden_states
    if attn.spatial_norm is not None:
        hidden_states = attn.spatial_norm(hidden_states, temb)
    shape4 = None
    if hidden_states.ndim == 4:
        shape4 = hidden_states.shape
        b, c, h, w = shape4
        hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
    batch, seq, _ = hidden_states.shape if encoder_hidden_states is None else encoder_hidden_states.shape
    mask = attn.prepare_attention_mask(attention_mask, seq, batch)
    if attn.group_norm is not None:
        hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
    query = attn.to_q(hidden_states)
    if encoder_hidden_states is None:
        encoder_hidden_states = hidden_states
    elif attn.norm_cross:
        encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
    key = attn.to_k(encoder_hidden_states)
    value = attn.to_v(encoder_hidden_states)
    q, k, v = (attn.head_to_batch_dim(x) for x in (query, key, value))
    return q, k, v, dict(residual=residual, shape4=shape4, mask=mask)


def scores(attn, q, k, mask=None):
    """Pre-softmax scores ``q k^T * scale`` (+ mask), as diffusers' ``get_attention_scores``."""
    if attn.upcast_attention:
        q, k = q.float(), k.float()
    if mask is None:
        base = torch.empty(q.shape[0], q.shape[1], k.shape[1], dtype=q.dtype, device=q.device)
        return torch.baddbmm(base, q, k.transpose(-1, -2), beta=0, alpha=attn.scale)
    return torch.baddbmm(mask, q, k.transpose(-1, -2), beta=1, alpha=attn.scale)


def finish(attn, s, v, ctx):
    """softmax(scores) @ v, then the output projection, residual and rescale of the classic processor."""
    if attn.upcast_softmax:
        s = s.float()
    probs = s.softmax(dim=-1).to(v.dtype)
    return output(attn, torch.bmm(probs, v), ctx)


def output(attn, heads_out, ctx):
    """The classic processor's tail from the per-head attention output (batch*heads, tokens, head_dim):
    heads merged, output projection, 4-D reshape, residual, rescale (patches that mix several
    attention results, e.g. PoseAnimate's dual consistency attention, finish through it)."""
    out = attn.batch_to_head_dim(heads_out)
    out = attn.to_out[1](attn.to_out[0](out))
    if ctx["shape4"] is not None:
        b, c, h, w = ctx["shape4"]
        out = out.transpose(-1, -2).reshape(b, c, h, w)
    if attn.residual_connection:
        out = out + ctx["residual"]
    return out / attn.rescale_output_factor


class ClassicAttnProcessor:
    """diffusers' classic AttnProcessor built from the helpers above (the torch-1.13 code path)."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        q, k, v, ctx = project_qkv(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        return finish(attn, scores(attn, q, k, ctx["mask"]), v, ctx)
