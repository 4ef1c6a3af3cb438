"""PoseAnimate (Zhu et al., IJCAI 2024): one character picture + a pose sequence -> an animation, zero-shot
on SD1.5 + an OpenPose ControlNet. The paper released no code; spec flipsketch-poseanimate.md §2.

The composition, on the shared diffusion core (the one DDIM loop, ``ddim_invert``, attention patches,
``adam_minimise``):

1. :func:`invert_source` (PACM stage 0, PA:90): DDIM inversion of the picture with w = 1 and
   ControlNet(p_s) *(inf: "ControlNet in all processes", PA:81)*, keeping Z_0..Z_T.
2. :func:`optimise_embeddings` (PACM stages 1-2, Alg. 1): per step, Adam on the text embedding so that
   one guided DDIM step lands on the inversion's Z_{t-1}; under p_s (pose-aware inversion, E_s[t]),
   then under each target pose p_i from E_s (E[i][t]). The non-optimised CFG branch is computed once
   per step (it does not depend on the embedding), frames are batched in chunks, each frame stops
   early on its own (null-text's schedule, *(inf)*).
3. :func:`poseanimate_sample` (spec §2.6): every frame from the source's Z_T, frame 0 with E_s (it
   reconstructs the picture), frame i with E[i] and p_i; one UNet + ControlNet call per step over all
   frames and both branches, with the dual consistency / mask-guided attention the model carries.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..diffusion.attention import ReferenceStore
from ..diffusion.sampler import controlnet_predict, ddim_invert, ddim_loop, guide
from ..diffusion.scheduler import make_scheduler
from ..diffusion.text import encode_text, null_embeds
from ..diffusion.vae import decode_latents, encode_frames, resize_frames
from ..errors import check_image, check_mask, fail
from ..optimise import adam_minimise
from ..progress import Check, StepCallback, poll, report
from .attention import masks_from_maps
from .settings import PACM, PACM_DEFAULTS, PoseAnimateAttention


@dataclass
class PoseEmbeddings:
    """PACM's output (type FLIPBOOK_POSE_EMBEDS), everything the sampler needs.

    frames: (F, T, 77, D), frame 0 = E_s (the source's stage-1 embeddings), frame i = E[i] under pose i.
    other: (1, 77, D), the embedding of the CFG branch that is not optimised (the empty prompt for
    ``slot="cond"``, the prompt C for ``"uncond"``). z_T: (1, C, h, w) the source's inverted noise.
    poses: (F, 3, H, W) the ControlNet images in 0..1. losses: the last inner loss per frame and step (F, T).
    """
    frames: torch.Tensor
    other: torch.Tensor
    z_T: torch.Tensor
    poses: torch.Tensor
    slot: str
    guidance: float
    steps: int
    scheduler_config: dict
    prompt: str = ""
    losses: torch.Tensor | None = field(default=None, repr=False)

    def to(self, device) -> "PoseEmbeddings":
        """A copy with every tensor on ``device`` (nodes hand it on from ComfyUI's intermediate device)."""
        moved = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in vars(self).items()}
        return PoseEmbeddings(**moved)


def pose_condition(model, poses: torch.Tensor, latent_hw, name: str = "poses") -> torch.Tensor:
    """IMAGE [F,H,W,3] -> the ControlNet's condition (F, 3, h*s, w*s) in 0..1, s = ``model.pose_scale``
    (bilinear resize when the pose images have another size)."""
    poses = check_image(name, poses)[..., :3]
    s = model.pose_scale
    size = (int(latent_hw[0]) * s, int(latent_hw[1]) * s)
    x = poses.permute(0, 3, 1, 2).float()
    if tuple(x.shape[-2:]) != size:
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    return x.to(model.device, model.dtype)


def _check_model(model):
    if getattr(model, "controlnet", None) is None:
        fail("model", "an SD1.5 + ControlNet bundle (FLIPBOOK_SDCN from Flipbook PoseAnimate Loader)",
             type(model).__name__)
    return model


def invert_source(model, image: torch.Tensor, pose: torch.Tensor, prompt: str = "", *, steps: int = 50,
                  size: int = 0, callback: StepCallback | None = None, check: Check | None = None) -> dict:
    """PACM stage 0: the picture (first frame of ``image``) VAE-encoded (posterior mean, [-1, 1]) and
    DDIM-inverted for ``steps`` steps with w = 1, the prompt and ControlNet(``pose`` frame 0).
    Returns the FLIPBOOK_INVERSION dict ``{"latents": [Z_0..Z_T] (1, C, h, w), "timesteps",
    "scheduler_config", "steps", "prompt", "embeds"}``."""
    _check_model(model)
    image = check_image("image", image)[:1, ..., :3]
    if int(steps) < 1:
        fail("steps", "an integer >= 1", repr(steps))
    if not isinstance(prompt, str):
        fail("prompt", "a prompt string", type(prompt).__name__)
    if size:
        image = resize_frames(image, int(size))
    s = model.latent_scale
    if image.shape[1] % s or image.shape[2] % s:
        fail("image", f"height and width divisible by {s} (or set size)", f"{image.shape[2]}x{image.shape[1]}")
    z0 = encode_frames(model, image).to(model.device)[:, :, 0]
    cond = pose_condition(model, pose[:1] if isinstance(pose, torch.Tensor) else pose, z0.shape[-2:], "pose")
    c = encode_text(model, prompt).to(model.device)
    traj, ts = ddim_invert(lambda x, t: controlnet_predict(model.unet, model.controlnet, x, t, c, cond), z0,
                           model.scheduler_config, int(steps), callback, check)
    return {"latents": traj, "timesteps": ts, "scheduler_config": dict(model.scheduler_config), "steps": int(steps),
            "prompt": prompt, "embeds": c}


def _check_trajectory(traj) -> list[torch.Tensor]:
    lat = traj.get("latents") if isinstance(traj, dict) else None
    if not lat or not all(isinstance(z, torch.Tensor) and z.dim() == 4 for z in lat):
        fail("trajectory", "the inversion of Flipbook PoseAnimate Invert (latents Z_0..Z_T of one picture)",
             type(traj).__name__ if not isinstance(traj, dict) else "a trajectory of video latents")
    return lat


class _Fit:
    """Per-step embedding fits along one inversion trajectory (PACM stages 1 and 2) for n items
    (frames) at once. Counts UNet+ControlNet evaluations (``forwards``, ``backwards``) for the benchmark."""

    def __init__(self, model, traj: list[torch.Tensor], sched, other: torch.Tensor, opts: PACM, check):
        self.model, self.traj, self.sched, self.opts, self.check = model, traj, sched, opts, check
        self.other = other
        self.forwards = self.backwards = 0
        self.history: list[torch.Tensor] = []          # per step: the inner losses (iterations, n)

    def predict(self, z, t, e, cond):
        self.forwards += z.shape[0]
        return controlnet_predict(self.model.unet, self.model.controlnet, z, t, e.to(z.dtype), cond)

    def combine(self, eps_opt, eps_other):
        w = self.opts.guidance
        return guide(eps_other, eps_opt, w) if self.opts.slot == "cond" else guide(eps_opt, eps_other, w)

    def run(self, cond: torch.Tensor, init: torch.Tensor, *, carry: bool, iters: int, on_step=None):
        """cond (n, 3, H, W); init (n, 77, D) carried from step to step (stage 1) or (T, n, 77, D), one
        per step (stage 2). Returns (embeddings (T, n, 77, D), last losses (T, n))."""
        n, steps = cond.shape[0], len(self.sched.timesteps)
        z = self.traj[-1].expand(n, -1, -1, -1).clone()
        other = self.other.expand(n, -1, -1)
        e, out, last = (init if carry else None), [], []
        for i, t in enumerate(self.sched.timesteps):
            poll(self.check)
            target = self.traj[steps - 1 - i].expand(n, -1, -1, -1)
            with torch.no_grad():
                eps_other = self.predict(z, t, other, cond)            # the branch PACM does not optimise: once

            def loss_fn(x, rows, z=z, t=t, eps_other=eps_other, target=target):
                zz, cc, oo, tt, ee = z, cond, other, target, eps_other     # rows: the frames still running
                if rows is not None:
                    zz, cc, oo, tt, ee = z[rows], cond[rows], other[rows], target[rows], eps_other[rows]
                self.backwards += zz.shape[0]
                if not self.opts.cache_other:                       # as written: both branches every iteration
                    with torch.no_grad():
                        ee = self.predict(zz, t, oo, cc)
                z_prev = self.sched.step(self.combine(self.predict(zz, t, x, cc), ee), t, zz)
                return ((z_prev.float() - tt.float()) ** 2).mean(dim=(1, 2, 3))

            stop = self.opts.stop_at(i)
            x, losses = adam_minimise(e if carry else init[i], loss_fn, iters=iters, lr=self.opts.lr_at(i),
                                      stop_below=None if stop is None else (lambda k, s=stop: s), per_item=True,
                                      compact=True, check=self.check)
            with torch.no_grad():
                z = self.sched.step(self.combine(self.predict(z, t, x, cond), eps_other), t, z)
            out.append(x)
            if losses:
                self.history.append(torch.stack([l.reshape(-1) for l in losses]))
            last.append(losses[-1].reshape(-1).float() if losses else torch.full((n,), float("nan")))
            e = x
            if on_step is not None:
                on_step(n)
        return torch.stack(out), torch.stack(last)


def optimise_embeddings(model, trajectory: dict, poses: torch.Tensor, *, opts: PACM = PACM_DEFAULTS,
                        callback: StepCallback | None = None, check: Check | None = None,
                        stats: dict | None = None) -> PoseEmbeddings:
    """PACM stages 1 and 2 (spec §2.2). ``poses``: IMAGE [F, H, W, 3], frame 0 the source pose p_s
    (PATA's output), frames 1.. the targets. Progress: one tick per frame and step, T * F in all.
    Runs inside ComfyUI's inference_mode (it steps out of it; inputs are cloned)."""
    _check_model(model)
    with torch.inference_mode(False):
        traj = [z.detach().clone().to(model.device, model.dtype) for z in _check_trajectory(trajectory)]
        steps = len(traj) - 1
        if steps != int(trajectory.get("steps", steps)) or steps < 1:
            fail("trajectory", "Z_0..Z_T of a DDIM inversion", f"{len(traj)} latents for {trajectory.get('steps')} steps")
        cond = pose_condition(model, poses, traj[0].shape[-2:]).clone()
        frames = cond.shape[0]
        prompt = str(trajectory.get("prompt", ""))
        c = trajectory.get("embeds")
        c = (encode_text(model, prompt) if not isinstance(c, torch.Tensor) else c).detach().clone().to(model.device, model.dtype)
        unc = null_embeds(model).detach().clone()
        other = unc if opts.slot == "cond" else c
        # the optimised branch starts from its own embedding; Adam runs on a float32 copy (fp16 weights too)
        init = (c if opts.slot == "cond" else unc).float()
        sched = make_scheduler(trajectory.get("scheduler_config", model.scheduler_config), steps, device=model.device)
        fit = _Fit(model, traj, sched, other, opts, check)
        total, done = steps * frames, [0]

        def tick(n):
            done[0] += n
            report(callback, done[0], total)

        # Stage 1: pose-aware inversion under p_s, the embedding carried from step to step.
        e_s, loss_s = fit.run(cond[:1], init, carry=True, iters=opts.inner_iters, on_step=tick)
        embeds, losses = [e_s], [loss_s]
        # Stage 2: every target pose from E_s, step by step, chunk by chunk.
        chunk = max(1, int(opts.frame_chunk))
        for f0 in range(1, frames, chunk):
            cc = cond[f0:f0 + chunk]
            e_i, loss_i = fit.run(cc, e_s.expand(-1, cc.shape[0], -1, -1), carry=False, iters=opts.stage2_iters,
                                  on_step=tick)
            embeds.append(e_i)
            losses.append(loss_i)
        if stats is not None:
            stats.update(forwards=fit.forwards, backwards=fit.backwards, history=fit.history)
        return PoseEmbeddings(frames=torch.cat(embeds, dim=1).transpose(0, 1).contiguous(), other=other, z_T=traj[-1],
                              poses=cond, slot=opts.slot, guidance=opts.guidance, steps=steps,
                              scheduler_config=dict(trajectory.get("scheduler_config", model.scheduler_config)),
                              prompt=prompt, losses=torch.cat(losses, dim=1).transpose(0, 1))


def subject_token_indices(tokenizer, prompt: str, word: str) -> list[int]:
    """Positions (in the 77-token sequence, after the start token) of ``word``'s tokens in ``prompt``."""
    if not word.strip():
        return []
    ids = tokenizer(prompt, truncation=True, max_length=tokenizer.model_max_length).input_ids
    out = []
    for w in word.strip().split():
        sub = tokenizer(w, add_special_tokens=False).input_ids
        for s in range(len(ids) - len(sub) + 1):
            if sub and ids[s:s + len(sub)] == sub:
                out += list(range(s, s + len(sub)))
    if not out:
        fail("subject_word", f"a word of the prompt {prompt!r}", repr(word))
    return sorted(set(out))


def _source_mask(mask, hw) -> torch.Tensor:
    m = check_mask("source_mask", mask)[:1].float().clamp(0, 1)
    return F.interpolate(m[:, None], size=tuple(hw), mode="area")[:, 0]


def poseanimate_sample(model, embeds: PoseEmbeddings, *, guidance: float | None = None,
                       callback: StepCallback | None = None, check: Check | None = None) -> torch.Tensor:
    """The generation (spec §2.6). Returns latents (1, C, F, h, w) (decode with :func:`decode`)."""
    _check_model(model)
    if not isinstance(embeds, PoseEmbeddings):
        fail("embeds", "PoseEmbeddings from Flipbook PoseAnimate Embedding Optimiser", type(embeds).__name__)
    dev, dt = model.device, model.dtype
    e = embeds.frames.to(dev, dt)
    frames, steps = e.shape[0], e.shape[1]
    w = embeds.guidance if guidance is None else float(guidance)
    z_t = embeds.z_T.to(dev, dt)
    x = z_t.expand(frames, -1, -1, -1).clone()
    cond = embeds.poses.to(dev, dt)
    cond2 = torch.cat([cond, cond])
    other = embeds.other.to(dev, dt).expand(frames, -1, -1)
    sched = make_scheduler(embeds.scheduler_config, steps, device=dev)
    store = ReferenceStore()
    patch = model.patch(PoseAnimateAttention)
    tokens, m_s = [], None
    if patch is not None and patch.source_mask is not None:
        m_s = _source_mask(patch.source_mask, z_t.shape[-2:]).to(dev)
        store.data["masks"] = m_s.expand(frames, -1, -1).clone()         # first step: M_s for every frame
        tokens = subject_token_indices(model.tokenizer, embeds.prompt, patch.subject_word)
    state = {"i": 0}
    mask_tokens = max(1, z_t.shape[-2] // 4) * max(1, z_t.shape[-1] // 4)    # P2P's 16x16 at 512 px

    def before(i, t, lat):
        state["i"] = i
        return lat

    def denoise(lat, t):
        ei = e[:, state["i"]]
        e2 = torch.cat([other, ei]) if embeds.slot == "cond" else torch.cat([ei, other])
        with store.phase("use", frames=frames, subject_tokens=tokens, mask_tokens=mask_tokens):
            u, c = controlnet_predict(model.unet, model.controlnet, torch.cat([lat, lat]), t, e2, cond2).chunk(2)
        return guide(u, c, w)

    def after(i, t, lat):
        maps = store.data.pop("maps", None)
        if m_s is not None and maps:
            m = masks_from_maps(maps, lat.shape[-2:], patch.threshold)
            store.data["masks"] = torch.cat([m_s, m[1:].to(m_s)])          # frame 0 keeps the source mask

    with model.installed(store):
        lat = ddim_loop(denoise, x, sched, before_step=before, after_step=after, callback=callback, check=check)
    return lat.permute(1, 0, 2, 3)[None]


def decode(model, latents: torch.Tensor, chunk: int = 8, *, callback: StepCallback | None = None,
           check: Check | None = None) -> torch.Tensor:
    """Video latents (1, C, F, h, w) -> IMAGE [F, H, W, 3] (the shared video decode, with its progress
    and cancel)."""
    return decode_latents(model, latents, chunk=chunk, callback=callback, check=check)
