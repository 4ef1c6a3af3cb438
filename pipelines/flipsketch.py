"""FlipSketch (Bandyopadhyay & Song 2024): a sketch + a text prompt -> a sketch animation.

Composes the shared diffusion blocks: the sketch's DDIM-inverted noise x_T^r starts frame 0 of every
sample; a null-prompt *reference* denoising of x_T^r runs beside the generation and lends its
attention queries/keys to the generation's self-attention (dual attention composition, spec §1.4);
during the first steps the other frames' noise is optimised so that the joint denoising of frame 0
matches the reference (iterative frame alignment, spec §1.3).

Differences from the official code (spec §0), all by design:
* the composition runs in a name-keyed processor, so it works with PyTorch 2 and any frame count;
* the temporal composition indexes the key column of every query frame (not heads of query 0);
* the reference's unconditional pass is skipped when the negative prompt is empty (it equals the
  null-prompt pass) and is never run after tau2, where it was unused;
* the reference pass is shared by all seeds, and the CFG branches run as one batched call;
* frame alignment is on by default, as in the paper, and its memory is bounded by ``chunk``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .diffusion.attention import ReferenceStore, finish, patched, project_qkv, scores
from .diffusion.ddim import ddim_step, guide, make_scheduler
from .optimise import adam_minimise
from .diffusion.text import null_embeds
from .diffusion.vae import check_video_latent
from .errors import check_image, check_range, fail
from .progress import Check, StepCallback, poll, report

COPIES = ("shrinking", "all", "one")
REFERENCES = ("copies", "single")


@dataclass(frozen=True)
class FlipSketchAttention:
    """Dual attention composition settings (type FLIPBOOK_ATTN_PATCH).

    lam: temporal weight of the reference key, column 0 scaled by (1 + lam * j / 50) for query frame
      j (official code; the paper writes 1 + lam * 2e-2). The app's "motion" slider m gives lam = 1 - m.
    tau2: the composition runs for step indices i <= tau2 (official 15 of 25).
    copies: how many leading frames take the reference queries: ``shrinking`` max(1, M - i)
      (official), ``all`` M, ``one`` 1.
    reference: ``copies`` denoises N copies of x_T^r as an N-frame clip (official code);
      ``single`` denoises x_T^r as one frame and repeats its queries (the paper's wording; N-fold
      cheaper, equal to ``copies`` only when the backbone keeps identical frames identical).
    """
    lam: float = 0.5
    tau2: int = 15
    copies: str = "shrinking"
    spatial: bool = True
    temporal: bool = True
    reference: str = "copies"

    def __post_init__(self):
        check_range("lambda", float(self.lam), 0.0, 10.0)
        if self.copies not in COPIES:
            fail("copies", f"one of {COPIES}", repr(self.copies))
        if self.reference not in REFERENCES:
            fail("reference", f"one of {REFERENCES}", repr(self.reference))

    def n_copies(self, step: int, frames: int) -> int:
        if self.copies == "all":
            return frames
        if self.copies == "one":
            return 1
        return max(1, frames - step)

    def bind(self, store: ReferenceStore) -> "_FlipSketchPatch":
        return _FlipSketchPatch(self, store)


class _FlipSketchPatch:
    """Installs :class:`FlipSketchProcessor` on the self-attention (attn1) of spatial and temporal blocks."""

    def __init__(self, cfg: FlipSketchAttention, store: ReferenceStore):
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
        # C^T: key frame 0 becomes the reference key, its column scaled by (1 + lam * j / 50)
        s = scores(attn, q, k, ctx["mask"])
        k_ref = self.store.data[name]                                      # (rows, d)
        qc = q.view(batch, -1, frames, q.shape[-1])[b0:b1]                 # (bc, rows, F, d)
        w = 1 + self.lam * torch.arange(frames, device=q.device, dtype=torch.float32) / 50
        col = torch.einsum("brjd,rd->brj", qc.to(s.dtype), k_ref.to(s.dtype)) * (attn.scale * w.to(s.dtype))
        s = s.view(batch, -1, frames, frames).clone()
        s[b0:b1, :, :, 0] = col
        return finish(attn, s.flatten(0, 1), v, ctx)


@dataclass(frozen=True)
class FrameAlign:
    """Iterative frame alignment (paper §4.2; spec §1.3): for step indices i < tau1, Adam on the
    noise of frames 1..M-1 so that the joint (prompted) prediction for frame 0 matches the reference's
    null-prompt prediction. ``official_quirks``: return the latents before the last update, as the
    official code does. ``chunk``: samples per backward pass (bounds activation memory; exact)."""
    enabled: bool = True
    tau1: int = 10
    iters: int = 10
    lr: float = 1e-3
    official_quirks: bool = True
    chunk: int = 1


def align_frames(unet, lat: torch.Tensor, ref0: torch.Tensor, target: torch.Tensor, t, cond: torch.Tensor,
                 opts: FrameAlign, check: Check | None = None) -> tuple[torch.Tensor, list[float]]:
    """One alignment step. lat (B,C,M,h,w); ref0, target (1,C,1,h,w). Returns (latents, mean losses).
    Frame 0 of the result is the reference latent (as in the paper's [x_t^r, f_t^train]). Each sample's
    loss is its own MSE (what a one-seed official run minimises), so ``chunk`` does not change results.
    ``check()`` runs before every Adam iteration (cancel)."""
    out, history = [], []
    chunk = max(1, int(opts.chunk))
    with torch.inference_mode(False):
        tgt, r0_all, c_all = target[:, :, 0].clone().float(), ref0.clone(), cond.clone()
    for s0 in range(0, lat.shape[0], chunk):
        n = min(chunk, lat.shape[0] - s0)
        r0, c = r0_all.expand(n, -1, -1, -1, -1), c_all.expand(n, -1, -1)

        def loss_fn(x):
            e0 = unet(torch.cat([r0, x], dim=2), t, encoder_hidden_states=c).sample[:, :, 0].float()
            return ((e0 - tgt) ** 2).mean(dim=(1, 2, 3))

        x, losses = adam_minimise(lat[s0:s0 + n, :, 1:], loss_fn, iters=opts.iters, lr=opts.lr,
                                  before_last=opts.official_quirks, check=check)
        out.append(torch.cat([r0, x], dim=2))
        history.append(torch.stack(losses) if losses else torch.zeros(0, n))
    return torch.cat(out), torch.cat(history, dim=1).mean(dim=1).tolist()


def initial_noise(seed: int, shape: tuple, device, dtype) -> torch.Tensor:
    """Per-seed starting noise (one CPU generator per seed, so results do not depend on the device)."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(int(seed))).to(device, dtype)


def flipsketch_sample(backbone, positive: torch.Tensor, reference: torch.Tensor, *,
                      negative: torch.Tensor | None = None, attention: FlipSketchAttention | None = None,
                      align: FrameAlign | None = None, frames: int = 10, steps: int = 25, guidance: float = 9.0,
                      seeds: int = 1, seed: int = 0, seed_chunk: int = 0,
                      callback: StepCallback | None = None, check: Check | None = None) -> torch.Tensor:
    """The FlipSketch sampling loop (spec §1.3). Returns latents (seeds, C, frames, h, w).

    positive/negative: prompt embeddings (1, 77, D); negative defaults to the empty prompt.
    reference: x_T^r, the inverted sketch noise (1, C, 1, h, w). Sample s starts from the noise of
    seed ``seed + s`` with frame 0 replaced by x_T^r. ``seed_chunk`` samples per UNet call (0 = all).
    ``check()`` runs before every UNet call and alignment iteration: raising there (a cancel) stops
    the loop at once, and the attention patches are removed on the way out.
    """
    reference = check_video_latent("reference", reference)
    if reference.shape[0] != 1:
        fail("reference", "one inverted latent (1, C, 1, h, w)", f"batch {reference.shape[0]}")
    if int(frames) < 2:
        fail("frames", "at least 2 frames", repr(frames))
    if int(steps) < 1 or int(seeds) < 1:
        fail("steps/seeds", "integers >= 1", f"{steps}/{seeds}")
    unet, dev, dt = backbone.unet, backbone.device, backbone.dtype
    frames, steps, seeds, g = int(frames), int(steps), int(seeds), float(guidance)
    x_r = reference[:, :, :1].to(dev, dt)
    if x_r.shape[1] != unet.config.in_channels:
        fail("reference", f"{unet.config.in_channels} latent channels", f"{x_r.shape[1]}")
    null = null_embeds(backbone)
    for name, e in (("positive", positive), ("negative", negative)):
        if e is not None and (not isinstance(e, torch.Tensor) or e.dim() != 3 or e.shape[0] != 1
                              or e.shape[-1] != null.shape[-1]):
            fail(name, f"prompt embeddings (1, tokens, {null.shape[-1]}) from Flipbook Text Encode", str(
                getattr(e, "shape", type(e).__name__)))
    pos = positive.to(dev, dt)
    neg = null if negative is None else negative.to(dev, dt)
    neg_is_null = neg.shape == null.shape and torch.equal(neg, null)
    sched = make_scheduler(backbone.scheduler_config, steps, device=dev)

    shape = (1, x_r.shape[1], frames, *x_r.shape[3:])
    lat = torch.cat([initial_noise(seed + s, shape, dev, dt) for s in range(seeds)])
    lat[:, :, 0] = x_r[:, :, 0]
    single = attention is None or attention.reference == "single"
    ref = x_r if single else x_r.repeat(1, 1, frames, 1, 1)
    chunk = seeds if int(seed_chunk) <= 0 else int(seed_chunk)
    store = ReferenceStore()
    align = align if align is not None and align.enabled and align.iters > 0 else None

    def eps(x, t, e):
        poll(check)
        return unet(x, t, encoder_hidden_states=e.expand(x.shape[0], -1, -1)).sample

    with patched(unet, attention.bind(store) if attention is not None else None), torch.no_grad():
        for i, t in enumerate(sched.timesteps):
            compose = attention is not None and i <= attention.tau2
            do_align = align is not None and i < align.tau1
            n = attention.n_copies(i, frames) if attention is not None else 1
            e_r = None
            if compose or do_align:
                if not single:
                    ref = ref[:, :, :n]
                with store.phase("save" if compose else "off"):
                    e_r = eps(ref, t, null)      # the reference pass P_null, saving its q/k
            if do_align:  # the target is the 1-frame null-prompt pass: free when the reference has one frame
                target = e_r if ref.shape[2] == 1 else eps(ref[:, :, :1], t, null)
                lat, _ = align_frames(unet, lat, ref[:, :, :1], target, t, pos, align, check)
            if compose:  # advance the reference (its uncond pass only matters for a non-empty negative)
                e_ref = e_r if neg_is_null else guide(eps(ref, t, neg), e_r, g)
                ref = ddim_step(sched, e_ref, t, ref)
            for c0 in range(0, seeds, chunk):
                x = lat[c0:c0 + chunk]
                b = x.shape[0]
                e = torch.cat([neg.expand(b, -1, -1), pos.expand(b, -1, -1)])
                poll(check)
                with store.phase("use" if compose else "off", frames=frames, batch=2 * b, cond=(b, 2 * b), copies=n):
                    eu, ec = unet(torch.cat([x, x]), t, encoder_hidden_states=e).sample.chunk(2)
                lat[c0:c0 + chunk] = ddim_step(sched, guide(eu, ec, g), t, x)
            store.data.clear()
            report(callback, i + 1, steps)
    return lat


def binarise_sketch(image: torch.Tensor, *, size: int = 0, invert: bool = False) -> torch.Tensor:
    """Otsu-binarise sketch frames (FlipSketch's post-processing, spec §1.5): IMAGE -> IMAGE with black
    strokes on white (``invert`` for white on black). ``size`` > 0 resizes (LANCZOS) first."""
    from skimage.filters import threshold_otsu

    from .diffusion.vae import resize_frames

    image = check_image("image", image)[..., :3]
    if size:
        image = resize_frames(image, int(size))
    out = []
    for frame in image.float().cpu():
        gray = frame.mean(dim=-1).numpy()
        thr = threshold_otsu(gray) if np.ptp(gray) > 0 else 0.5
        ink = torch.from_numpy(gray <= thr if np.ptp(gray) > 0 else gray < 0.5)
        out.append((ink if invert else ~ink).float())
    return torch.stack(out)[..., None].expand(-1, -1, -1, 3).contiguous()


# The folder a FlipSketch user has: the Hugging Face repo Hmrishav/t2v_sketch-lora cloned into
# ComfyUI's models/diffusers, whose checkpoint-2500/ is a full diffusers text-to-video folder (spec §1.1).
FLIPSKETCH_MODEL = "t2v_sketch-lora/checkpoint-2500"


def write_test_models(models_dir: str) -> list[str]:
    """``make-test-models``: a tiny random backbone under the name the shipped workflow loads. Its VAE
    downsamples x32, so the workflow's 256-pixel sketch gives 8x8 latents and runs on a CPU."""
    import os

    from .diffusion.backbone import save_t2v, tiny_t2v

    return save_t2v(tiny_t2v(0, vae_downscale=32), os.path.join(models_dir, "diffusers", *FLIPSKETCH_MODEL.split("/")))
