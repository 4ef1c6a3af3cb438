"""FlipSketch (Bandyopadhyay & Song 2024): a sketch + a text prompt -> a sketch animation.

Composes the shared diffusion blocks: the sketch's DDIM-inverted noise x_T^r starts frame 0 of every
sample; a null-prompt *reference* denoising of x_T^r runs beside the generation and lends its
attention queries/keys to the generation's self-attention (dual attention composition, spec §1.4,
carried by the model as a patch); during the first steps the other frames' noise is optimised so that
the joint denoising of frame 0 matches the reference (iterative frame alignment, spec §1.3).

Differences from the official code (spec §0), all by design:
* the composition runs in a name-keyed processor, so it works with PyTorch 2 and any frame count;
* the temporal composition indexes the key column of every query frame (not heads of query 0);
* the reference's unconditional pass is skipped when the negative prompt is empty (it equals the
  null-prompt pass) and is never run after tau2, where it was unused;
* the reference pass is shared by all seeds, and the CFG branches run as one batched call;
* frame alignment is on by default, as in the paper, and its memory is bounded by ``chunk``.
"""
from __future__ import annotations

import numpy as np
import torch

from ..diffusion.attention import ReferenceStore
from ..diffusion.sampler import ddim_loop, guide, initial_noise, t2v_denoiser
from ..diffusion.scheduler import make_scheduler
from ..diffusion.text import null_embeds
from ..diffusion.vae import check_video_latent, resize_frames
from ..errors import check_image, fail
from ..optimise import adam_minimise
from ..progress import Check, StepCallback, poll
from .settings import SAMPLING, FlipSketchAttention, FrameAlign


def flipsketch_sample(backbone, positive: torch.Tensor, reference: torch.Tensor, *,
                      negative: torch.Tensor | None = None, attention: FlipSketchAttention | None = None,
                      align: FrameAlign | None = None, frames: int = SAMPLING.frames, steps: int = SAMPLING.steps,
                      guidance: float = SAMPLING.guidance, seeds: int = SAMPLING.seeds, seed: int = SAMPLING.seed,
                      seed_chunk: int = 0, callback: StepCallback | None = None,
                      check: Check | None = None) -> torch.Tensor:
    """The FlipSketch sampling loop (spec §1.3). Returns latents (seeds, C, frames, h, w).

    backbone: a FLIPBOOK_T2V; the FlipSketchAttention it carries drives the composition, and an
    ``attention`` given here takes its place (the sampler's older input). positive/negative: prompt
    embeddings (1, 77, D); negative defaults to the empty prompt. reference: x_T^r, the inverted
    sketch noise (1, C, 1, h, w). Sample s starts from the noise of seed ``seed + s`` with frame 0
    replaced by x_T^r. ``seed_chunk`` samples per UNet call (0 = all). ``check()`` runs before every
    UNet call and alignment iteration: raising there (a cancel) stops the loop at once, and the
    attention patches are removed on the way out.
    """
    # 1. Check inputs
    reference = check_video_latent("reference", reference)
    if reference.shape[0] != 1:
        fail("reference", "one inverted latent (1, C, 1, h, w)", f"batch {reference.shape[0]}")
    if int(frames) < 2:
        fail("frames", "at least 2 frames", repr(frames))
    if int(steps) < 1 or int(seeds) < 1:
        fail("steps/seeds", "integers >= 1", f"{steps}/{seeds}")
    unet, dev, dt = backbone.unet, backbone.device, backbone.dtype
    x_r = reference[:, :, :1].to(dev, dt)
    if x_r.shape[1] != unet.config.in_channels:
        fail("reference", f"{unet.config.in_channels} latent channels", f"{x_r.shape[1]}")
    null = null_embeds(backbone)
    for name, e in (("positive", positive), ("negative", negative)):
        if e is not None and (not isinstance(e, torch.Tensor) or e.dim() != 3 or e.shape[0] != 1
                              or e.shape[-1] != null.shape[-1]):
            fail(name, f"prompt embeddings (1, tokens, {null.shape[-1]}) from Flipbook Text Encode", str(
                getattr(e, "shape", type(e).__name__)))

    # 2. Timesteps, and the starting latents: per-seed noise with frame 0 replaced by x_T^r (spec §1.3)
    scheduler = make_scheduler(backbone.scheduler_config, int(steps), device=dev)
    lat = initial_noise((x_r.shape[1], int(frames), *x_r.shape[3:]), seed, count=int(seeds), device=dev, dtype=dt)
    lat[:, :, 0] = x_r[:, :, 0]

    # 3. The composition the model carries (a wired `attention` takes its place), the reference, the alignment
    model = backbone if attention is None else backbone.with_patches(attention)
    align = align if align is not None and align.enabled and align.iters > 0 else None
    chunk = int(seeds) if int(seed_chunk) <= 0 else int(seed_chunk)
    run = _FlipSketchRun(model, scheduler, positive.to(dev, dt), null if negative is None else negative.to(dev, dt),
                         null, x_r, int(frames), float(guidance), chunk, align, check)

    # 4. Denoising loop, the reference running beside it in the hooks
    with model.installed(run.store):
        return ddim_loop(run.generate, lat, scheduler, before_step=run.before_step, after_step=run.after_step,
                         callback=callback, check=check)


class _FlipSketchRun:
    """One sampling run: the reference denoising of x_T^r that runs beside the generation (spec §1.3).

    ``before_step`` runs the reference pass P_null (saving its attention for the composition),
    aligns the frames and advances the reference by its own DDIM step; ``generate`` is the guided
    generation denoiser, composed while the reference's attention is saved; ``after_step`` drops it.
    """

    def __init__(self, model, scheduler, pos, neg, null, x_r, frames, guidance, chunk, align, check):
        self.attention: FlipSketchAttention | None = model.patch(FlipSketchAttention)
        self.unet, self.scheduler, self.pos, self.frames, self.guidance = model.unet, scheduler, pos, frames, guidance
        self.chunk, self.align, self.check = chunk, align, check
        self.store = ReferenceStore()
        self.single = self.attention is None or self.attention.reference == "single"
        self.ref = x_r if self.single else x_r.repeat(1, 1, frames, 1, 1)
        self.null_eps = t2v_denoiser(self.unet, null)
        # the reference's unconditional pass only matters for a non-empty negative prompt (spec §1.3)
        self.neg_eps = None if neg.shape == null.shape and torch.equal(neg, null) else t2v_denoiser(self.unet, neg)
        self.guided_eps = t2v_denoiser(self.unet, pos, neg, guidance)
        self.compose, self.copies = False, 1

    def _unet(self, eps, x, t):
        poll(self.check)
        return eps(x, t)

    def before_step(self, i: int, t, lat: torch.Tensor) -> torch.Tensor:
        a = self.attention
        self.compose = a is not None and i <= a.tau2
        self.copies = a.n_copies(i, self.frames) if a is not None else 1
        do_align = self.align is not None and i < self.align.tau1
        if not (self.compose or do_align):
            return lat
        if not self.single:
            self.ref = self.ref[:, :, :self.copies]
        with self.store.phase("save" if self.compose else "off"):
            e_r = self._unet(self.null_eps, self.ref, t)        # the reference pass P_null, saving its q/k
        if do_align:  # the target is the 1-frame null-prompt pass: free when the reference has one frame
            ref0 = self.ref[:, :, :1]
            target = e_r if self.ref.shape[2] == 1 else self._unet(self.null_eps, ref0, t)
            lat, _ = align_frames(self.unet, lat, ref0, target, t, self.pos, self.align, self.check)
        if self.compose:
            e_ref = e_r if self.neg_eps is None else guide(self._unet(self.neg_eps, self.ref, t), e_r, self.guidance)
            self.ref = self.scheduler.step(e_ref, t, self.ref)
        return lat

    def generate(self, lat: torch.Tensor, t) -> torch.Tensor:
        out = []
        for k, c0 in enumerate(range(0, lat.shape[0], self.chunk)):
            if k:
                poll(self.check)                                 # the loop checked before the first chunk
            x = lat[c0:c0 + self.chunk]
            b = x.shape[0]
            with self.store.phase("use" if self.compose else "off", frames=self.frames, batch=2 * b, cond=(b, 2 * b),
                                  copies=self.copies):
                out.append(self.guided_eps(x, t))
        return torch.cat(out)

    def after_step(self, i: int, t, lat: torch.Tensor) -> None:
        self.store.data.clear()


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


def binarise_sketch(image: torch.Tensor, *, size: int = 0, invert: bool = False) -> torch.Tensor:
    """Otsu-binarise sketch frames (FlipSketch's post-processing, spec §1.5): IMAGE -> IMAGE with black
    strokes on white (``invert`` for white on black). ``size`` > 0 resizes (LANCZOS) first."""
    from skimage.filters import threshold_otsu

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
