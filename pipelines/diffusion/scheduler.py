"""DDIM step arithmetic (Song et al. 2021, eq. 12): one step for every sampler and inverter of the pack.

A :class:`DDIM` holds a training schedule's noise levels ᾱ_t (t = 0 .. T-1), the timesteps a loop
visits and the direction. Sampling moves x from level t down to t - T/steps; inversion (FlipSketch's,
PoseAnimate's stage 0) moves it up from t - T/steps to t. Each step splits the denoiser's prediction
into x0 and eps, then

    x_next = √ᾱ_next · x0 + √(1 - ᾱ_next - σ²) · eps (+ σ z),   σ = η √((1 - ᾱ_next)/(1 - ᾱ_t) · (1 - ᾱ_t/ᾱ_next)).

:func:`make_scheduler` builds one from a model's ``scheduler_config.json`` through diffusers'
DDIMScheduler / DDIMInverseScheduler: their ᾱ table, their timesteps, their level below t = 0
(``set_alpha_to_one``), and, for eps-prediction, their step arithmetic to the bit
(tests/test_diffusion.py holds the two side by side). For v-prediction x0 comes first and eps from x0,
the order Animate-X's release computes (spec animatex.md §1.5); diffusers' v branch forms eps as
√ᾱ·v + √(1-ᾱ)·x instead, equal in exact arithmetic but an ulp apart in floats. Both stay finite at
ᾱ_t = 0 (zero terminal SNR), where an eps-prediction has no x0.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import torch

from ..errors import fail

PREDICTIONS = ("epsilon", "v_prediction")


@dataclass
class DDIM:
    """A DDIM schedule for one loop.

    alphas_cumprod: (T,) ᾱ_t of the training schedule (float32 from diffusers, or float64 where a
      release computes in float64); timesteps: (steps,) int64, the levels visited in order
      (descending to sample, ascending to invert); stride: training timesteps per step (T // steps);
      final_alpha_cumprod: the level below t = 0; prediction_type: what the denoiser returns;
      clip_sample: clamp x0 to [-clip_sample, clip_sample] (a config's ``clip_sample_range``), None = off.
    """
    alphas_cumprod: torch.Tensor = field(repr=False)
    timesteps: torch.Tensor
    stride: int
    final_alpha_cumprod: torch.Tensor = field(repr=False)
    prediction_type: str = "epsilon"
    inverse: bool = False
    clip_sample: float | None = None

    def __post_init__(self):
        if self.prediction_type not in PREDICTIONS:
            fail("prediction_type", f"one of {PREDICTIONS}", repr(self.prediction_type))

    def levels(self, t) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ᾱ_t, ᾱ_next)`` of the step taken at timestep ``t`` (diffusers' rule for each direction)."""
        t, ac = int(t), self.alphas_cumprod
        if self.inverse:
            s = min(t - self.stride, len(ac) - 1)
            return (ac[s] if s >= 0 else self.final_alpha_cumprod), ac[t]
        s = t - self.stride
        return ac[t], (ac[s] if s >= 0 else self.final_alpha_cumprod)

    def split(self, prediction: torch.Tensor, t, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x0, eps)`` implied by a prediction at the current level of timestep ``t``."""
        a = self.levels(t)[0]
        b = 1 - a
        if self.prediction_type == "epsilon":
            x0, eps = (x - b ** 0.5 * prediction) / a ** 0.5, prediction
        else:
            x0 = a ** 0.5 * x - b ** 0.5 * prediction
            eps = (x - a ** 0.5 * x0) / b ** 0.5
        if self.clip_sample is not None:          # diffusers clamps x0 and keeps eps as predicted
            x0 = x0.clamp(-self.clip_sample, self.clip_sample)
        return x0, eps

    def step(self, prediction: torch.Tensor, t, x: torch.Tensor, *, eta: float = 0.0,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """One DDIM step of ``x`` (any shape) at timestep ``t`` given the denoiser's ``prediction``
        (same shape). ``eta`` > 0 adds fresh noise from ``generator`` (a CPU generator: the draw does not
        depend on the device), sampling only."""
        a, a_next = self.levels(t)
        x0, eps = self.split(prediction, t, x)
        if eta == 0:
            return a_next ** 0.5 * x0 + (1 - a_next) ** 0.5 * eps
        if self.inverse:
            fail("eta", "0 for an inversion (it is deterministic)", repr(eta))
        sigma = eta * ((1 - a_next) / (1 - a) * (1 - a / a_next)) ** 0.5
        out = a_next ** 0.5 * x0 + (1 - a_next - sigma ** 2).clamp(min=0) ** 0.5 * eps
        return out + sigma * torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t) -> torch.Tensor:
        """x_t = √ᾱ_t x0 + √(1 - ᾱ_t) noise (the forward process; SDS noises its sample this way)."""
        a = self.alphas_cumprod[int(t)]
        return a ** 0.5 * x0 + (1 - a) ** 0.5 * noise


def released_timesteps(steps: int, num_train_timesteps: int = 1000) -> list[int]:
    """The timesteps of VideoComposer-lineage DDIM (UniAnimate, Animate-X): ``1 + arange(0, T, T // steps)``,
    clamped to T - 1, descending (spec animatex.md finding 7: "30 steps" visit 31 levels).

    >>> ts = released_timesteps(30)
    >>> len(ts), ts[:3], ts[-1]
    (31, [991, 958, 925], 1)
    >>> released_timesteps(25) == list(range(961, 0, -40))      # T divisible by steps: diffusers' leading list
    True
    """
    if not 1 <= int(steps) <= num_train_timesteps:
        fail("steps", f"between 1 and {num_train_timesteps}", str(steps))
    stride = num_train_timesteps // int(steps)
    return [min(max(t, 0), num_train_timesteps - 1) for t in range(1, num_train_timesteps + 1, stride)][::-1]


def _max_timestep(cls, config, steps: int) -> int:
    sched = cls.from_config(config)
    sched.set_timesteps(steps)
    return int(sched.timesteps.max())


def make_scheduler(config: dict, steps: int, *, inverse: bool = False, device=None) -> DDIM:
    """A :class:`DDIM` for ``steps`` steps from a diffusers scheduler config (``scheduler_config.json``).

    >>> cfg = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
    ...            set_alpha_to_one=False, steps_offset=1)                      # ModelScope T2V's (spec §1.1)
    >>> make_scheduler(cfg, 25).timesteps[:3].tolist(), make_scheduler(cfg, 25, inverse=True).timesteps[:3].tolist()
    ([961, 921, 881], [1, 41, 81])
    """
    from diffusers import DDIMInverseScheduler, DDIMScheduler

    cls = DDIMInverseScheduler if inverse else DDIMScheduler
    accepted = inspect.signature(cls.__init__).parameters   # both read one scheduler_config.json
    sched = cls.from_config({k: v for k, v in config.items() if k in accepted})
    c = sched.config
    if getattr(c, "thresholding", False):
        fail("scheduler_config", "a DDIM config without dynamic thresholding", "thresholding: true")
    sched.set_timesteps(int(steps), device=device)
    if len(sched.timesteps) and int(sched.timesteps.max()) >= c.num_train_timesteps:
        # e.g. steps = 1000 with steps_offset 1 visits t = 1000, past the schedule's last level: refuse
        # before any model call, naming the largest count this config can take
        ok = next(s for s in range(int(steps) - 1, 0, -1) if _max_timestep(cls, sched.config, s) < c.num_train_timesteps)
        fail("steps", f"at most {ok} for this model's scheduler ({c.num_train_timesteps} training timesteps, "
             f"steps_offset {getattr(c, 'steps_offset', 0)})", str(steps))
    final = sched.initial_alpha_cumprod if inverse else sched.final_alpha_cumprod
    return DDIM(sched.alphas_cumprod, sched.timesteps, c.num_train_timesteps // int(steps), final,
                c.prediction_type, inverse, float(c.clip_sample_range) if c.clip_sample else None)
