"""FlipSketch's official algorithm (hmrishavbandy/FlipSketch @971b26d, torch-1.13 code path), written
from the spec (flipsketch-poseanimate.md §1.2-§1.4), not copied: the baseline for the benchmark and
the test that our composition reproduces it.

What it keeps on purpose: the classic attention processor everywhere, the composition inside
``get_attention_scores`` dispatched by tensor shape (``query.shape[1] == num_frames``), one seed per
call, the two identical null-prompt branches of the inversion, the reference's unconditional pass
at every step, N copies of the reference denoised as an N-frame clip, the alignment quirks.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


class OfficialComposition:
    """Monkeypatches every attn1's ``get_attention_scores`` (classic processors installed)."""

    def __init__(self, unet, lam: float):
        from diffusers.models.attention_processor import AttnProcessor

        self.unet, self.lam, self.mode, self.num_frames, self.data = unet, float(lam), "off", 0, {}
        self.saved = unet.attn_processors
        unet.set_attn_processor(AttnProcessor())
        self.mods = [m for n, m in unet.named_modules() if n.endswith("attn1")]
        for m in self.mods:
            m.get_attention_scores = self._make(m)

    def remove(self):
        for m in self.mods:
            del m.get_attention_scores
        self.unet.set_attn_processor(self.saved)

    def _make(self, mod):
        orig = type(mod).get_attention_scores.__get__(mod)

        def get_attention_scores(query, key, attention_mask=None):
            if self.mode == "save":
                self.data[id(mod)] = (query, key)
                return orig(query, key, attention_mask)
            if self.mode != "use":
                return orig(query, key, attention_mask)
            q_r, k_r = self.data[id(mod)]
            if query.shape[1] == self.num_frames:          # "temporal" (shape dispatch, as official)
                s = torch.baddbmm(torch.empty(query.shape[0], query.shape[1], key.shape[1], dtype=query.dtype),
                                  query, key.transpose(-1, -2), beta=0, alpha=mod.scale)
                for j in range(query.shape[1]):
                    s[:, j, 0] = (query[:, j] * k_r[:, 0]).sum(-1) * mod.scale * (1 + self.lam * j / 50)
                return s.softmax(dim=-1)
            query = query.clone()                          # "spatial": leading rows take the reference queries
            query[:q_r.shape[0]] = q_r
            return orig(query, key, attention_mask)

        return get_attention_scores


def next_step(sched, eps, t, x, steps):
    """Official ``next_step``: alpha at t - 1000/steps (or alphas_cumprod[0]) -> alpha at t."""
    t_prev = t - sched.config.num_train_timesteps // steps
    a = sched.alphas_cumprod[t_prev] if t_prev >= 0 else sched.final_alpha_cumprod
    a_next = sched.alphas_cumprod[t]
    x0 = (x - (1 - a) ** 0.5 * eps) / a ** 0.5
    return a_next ** 0.5 * x0 + (1 - a_next) ** 0.5 * eps


def official_invert(unet, scheduler_config, z0, null, steps=25, guidance=9.0):
    """ddim_loop(prompt=""): both branches on the empty prompt, combined as unc + g (unc - cond)."""
    from diffusers import DDIMScheduler

    sched = DDIMScheduler.from_config(scheduler_config)
    sched.set_timesteps(steps)
    x = z0
    with torch.no_grad():
        for i in range(steps):
            t = int(sched.timesteps[steps - 1 - i])
            unc = unet(x, t, encoder_hidden_states=null).sample
            cond = unet(x, t, encoder_hidden_states=null).sample
            x = next_step(sched, unc + guidance * (unc - cond), t, x, steps)
    return x.mean(dim=2, keepdim=True)


def _optimize_latents(unet, lat, ref, t, cond, null, iters, lr):
    with torch.no_grad():
        target = unet(ref[:, :, 0:1], t, encoder_hidden_states=null).sample
    with torch.enable_grad():
        x = lat[:, :, 1:].clone().requires_grad_(True)
        opt = torch.optim.Adam([x], lr=lr)
        for _ in range(iters):
            inp = torch.cat([ref[:, :, 0:1], x], dim=2)
            loss = F.mse_loss(unet(inp, t, encoder_hidden_states=cond).sample[:, :, 0], target[:, :, 0])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return inp.detach()


def official_sample(unet, scheduler_config, x_r, cond, neg, null, *, seed=0, frames=10, steps=25,
                    guidance=9.0, lam=0.5, tau2=15, tau1=0, iters=10, lr=1e-3):
    """One seed of text2vid_modded(_full).py's loop (spec §1.3). tau1 = 0: no alignment (the app)."""
    from diffusers import DDIMScheduler

    sched = DDIMScheduler.from_config(scheduler_config)
    sched.set_timesteps(steps)
    shape = (1, x_r.shape[1], frames, *x_r.shape[3:])
    lat = torch.randn(shape, generator=torch.Generator().manual_seed(int(seed))).to(x_r.dtype)
    lat[:, :, 0] = x_r[:, :, 0]
    ref = x_r.repeat(1, 1, frames, 1, 1)
    comp = OfficialComposition(unet, lam)
    comp.num_frames = frames
    try:
        for i, t in enumerate(sched.timesteps):
            ref = ref[:, :, :max(1, frames - i)]
            if i < tau1:
                lat = _optimize_latents(unet, lat, ref, t, cond, null, iters, lr)
            with torch.no_grad():
                e_u = unet(lat, t, encoder_hidden_states=neg).sample
                e_ru = unet(ref, t, encoder_hidden_states=neg).sample
                if i <= tau2:
                    comp.mode = "save"
                    e_r = unet(ref, t, encoder_hidden_states=null).sample
                    comp.mode = "off"
                    ref = sched.step(e_ru + guidance * (e_r - e_ru), t, ref).prev_sample
                    comp.mode = "use"
                    e_c = unet(lat, t, encoder_hidden_states=cond).sample
                    comp.mode = "off"
                else:
                    e_c = unet(lat, t, encoder_hidden_states=cond).sample
                lat = sched.step(e_u + guidance * (e_c - e_u), t, lat).prev_sample
    finally:
        comp.remove()
    return lat
