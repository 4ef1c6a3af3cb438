"""FlexiClip's / AniClipart's video SDS optimiser: learn the Bezier trajectories from a text-to-video
model (spec flexiclip.md §1.7-1.8), with FlexiClip's temporal Jacobian corrector and flow-matching
loss as we implement them (§2.3, "FlexiClip-style").

One iteration (:class:`SDSObjective`):

1. control points from the parameters: directly (offsets of c1..c3) or through AniClipart's PointMLP
   (§1.4); ``c0`` stays the keypoint;
2. the S distinct poses on the curves, ``u = unique(frame_times)`` (AniClipart: 6 poses played
   forward-back, twice, for 24 frames, §1.4);
3. FlexiClip's Poisson solve with λ = 1 (§2.2.2; or AniClipart's ARAP, ``pose_method="arap"``), then,
   with a corrector, ``J = Jᴾ + Jᴿ`` and a Poisson solve (:func:`.corrector.corrected_vertices`);
4. the textured-mesh render at ``render_size``² (§2.5), the frames in play order, one shared random
   perspective + resized crop for every frame (§1.7 "Augmentation");
5. the VAE encoder with gradients (chunks of frames, each recomputed in the backward pass so memory
   stays one chunk's activations), one t ~ U[t_min, t_max), noise independent per frame, CFG at
   ``guidance`` with the empty prompt as the unconditional branch, ``g = w(t)(ε̂ - ε)``, w = 1 - ᾱ_t,
   and ``L_SDS = 0.5 Σ (z - (z - g).detach())²`` (∂L/∂z = g, §1.7);
6. ``+ w_skel · L_skel`` (bone lengths of every pose against the rest pose, in px of a 256² canvas,
   §1.2), and with a corrector ``+ λ_flow (term1 + term2)`` (§2.3): term2 = the area-weighted mean
   ‖Jᴿ‖², term1 the score difference between the corrected and the pose-only render, noised with the
   same t and ε: "dds" (default) ``0.5 Σ (z - (z - w(ε̂(z_t) - ε̂(zᴾ_t)))).detach())²``, which shares
   the SDS forward (zᴾ rides in the same batched UNet call: one call, 4 forwards with CFG, no UNet
   backward; the pose-only render is encoded without a graph); "exact"
   ``‖ε̂(z_t) - ε̂(zᴾ_t).detach()‖² / σ_t²`` with the UNet in the graph (GPU memory). Both terms
   have gradients; the official code's flow term has none (§2.2.5).

Adam(lr 0.005, betas (0.9, 0.9), eps 1e-6) with the delayed log-linear schedule (§1.8) runs through
:func:`..optimise.adam_minimise`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from ..bezier import Trajectory, bezier, frame_times
from ..deform import MeshDeformer
from ..diffusion.sampler import sds_gradient, t2v_denoiser
from ..diffusion.scheduler import make_scheduler
from ..diffusion.text import encode_text, null_embeds
from ..errors import check_range, describe, fail
from ..mesh import Mesh
from ..optimise import adam_minimise, delayed_log_lerp
from ..progress import Check, StepCallback, poll
from ..render import render_mesh
from .. import seeds
from .corrector import TemporalJacobianCorrector, corrected_vertices
from .pipeline import Animation
from .settings import FLEXICLIP_LAMBDA

FLOW_MODES = ("dds", "exact")
POSE_METHODS = ("poisson_bilap", "arap")


@dataclass(frozen=True)
class SDSSettings:
    """The optimiser's defaults, faithful to AniClipart/FlexiClip (spec section in each comment)."""
    iterations: int = 1000            # FlexiClip (F:scripts/run_flexiclip.sh:22); AniClipart 500 (§1.8)
    frames: int = 24                  # §1.7
    loop_num: int = 2                 # ping-pong twice: 6 distinct poses (§1.4); 0 = every frame a pose
    render_size: int = 256            # §1.7
    guidance: float = 50.0            # §1.7
    t_min: int = 50                   # randint(50, 949): t in [50, 948] (§1.7)
    t_max: int = 949
    lr: float = 0.005                 # Adam(0.005, betas (0.9, 0.9), eps 1e-6) (§1.8)
    betas: tuple[float, float] = (0.9, 0.9)
    eps: float = 1e-6
    lr_init: float = 0.002            # delayed log-linear schedule (§1.8)
    lr_final: float = 0.0008
    lr_delay_mult: float = 0.1
    lr_delay_steps: int = 100
    w_skel: float = 25.0              # the run script's (§1.2; argparse default 15)
    use_mlp: bool = True              # --opt_bezier_points_with_mlp (§1.4)
    augment: bool = True              # shared-parameter perspective + crop (§1.7)
    perspective: float = 0.5
    crop_scale: tuple[float, float] = (0.4, 1.0)
    lambda_flow: float = 15.0         # [S] (§2.1); the official code has none (§2.2.5)
    flow_mode: str = "dds"
    constraint_lambda: float = FLEXICLIP_LAMBDA
    pose_method: str = "poisson_bilap"  # FlexiClip's pose solve (§2.2.3); "arap": AniClipart's (§1.5, λ scales 3000²)
    vae_chunk: int = 8
    dedupe_encode: bool = True        # ours: encode each distinct pose once (same latents)
    fp16: bool = False                # autocast the UNet and VAE on a GPU (AniClipart runs fp16)
    seed: int = 1000                  # §4 node 11
    preview_every: int = 10


SDS = SDSSettings()
ANICLIPART = replace(SDS, iterations=500)


class PointMLP(nn.Module):
    """AniClipart's control-point MLP (§1.4; A:painter_clipart.py PointMLP): all 4K control points
    (/256) → per-point ``Linear(2,128)-LN-LeakyReLU-Linear(128,128)`` + index embedding·√128 +
    sinusoidal position → Flatten → ``Linear(4K·128,128)``-LN-LeakyReLU → 2×[Linear-LN-LeakyReLU] →
    ``Linear(128, 8K)``: a Δ (px of a 256² canvas) for every control point.

    Ours: the last layer starts at zero, so iteration 0 animates the initial trajectory exactly
    (AniClipart's starts random, around a still curve), and no dropout on the position code."""

    def __init__(self, num_points: int, width: int = 128):
        super().__init__()
        n = 4 * num_points
        self.project = nn.Sequential(nn.Linear(2, width), nn.LayerNorm(width), nn.LeakyReLU(), nn.Linear(width, width))
        self.embedding = nn.Embedding(n, width)
        pos = torch.arange(n, dtype=torch.float32)[:, None]
        div = torch.exp(torch.arange(0, width, 2, dtype=torch.float32) * (-math.log(10000.0) / width))
        pe = torch.zeros(n, width)
        pe[:, 0::2], pe[:, 1::2] = torch.sin(pos * div), torch.cos(pos * div)
        self.register_buffer("position", pe, persistent=False)
        block = lambda a, b: [nn.Linear(a, b), nn.LayerNorm(b), nn.LeakyReLU()]  # noqa: E731
        self.body = nn.Sequential(nn.Flatten(0), *block(n * width, width), *block(width, width), *block(width, width))
        self.last = nn.Linear(width, 2 * n)
        nn.init.zeros_(self.last.weight)
        nn.init.zeros_(self.last.bias)
        self.width = width

    def forward(self, points01: torch.Tensor) -> torch.Tensor:
        """[4K, 2] control points / 256 -> Δ [4K, 2]."""
        idx = torch.arange(points01.shape[0], device=points01.device)
        h = self.project(points01) + self.embedding(idx) * math.sqrt(self.width) + self.position
        return self.last(self.body(h)).view(-1, 2)


# --- augmentation -------------------------------------------------------------------------------------

def _homography(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """3x3 H with H·src_i ∝ dst_i for four point pairs [4, 2] (float64)."""
    rows, rhs = [], []
    for (x, y), (u, v) in zip(src.tolist(), dst.tolist()):
        rows += [[x, y, 1, 0, 0, 0, -u * x, -u * y], [0, 0, 0, x, y, 1, -v * x, -v * y]]
        rhs += [u, v]
    h = torch.linalg.solve(torch.tensor(rows, dtype=torch.float64), torch.tensor(rhs, dtype=torch.float64))
    return torch.cat([h, h.new_ones(1)]).view(3, 3)


def augmentation_grid(size: int, generator: torch.Generator, *, distortion: float = 0.5,
                      scale: tuple[float, float] = (0.4, 1.0)) -> torch.Tensor:
    """One sampling grid [1, size, size, 2] (grid_sample, align_corners=False) for the whole clip:
    torchvision's RandomPerspective(distortion, p=1) then RandomResizedCrop(size, scale, ratio 1)
    (AniClipart applies both once to the stacked frames, A:animate_clipart.py:143-150), drawn from
    ``generator`` and composed into one backward map: output pixel -> crop -> inverse perspective."""
    s = float(size)
    r = lambda: float(torch.rand((), generator=generator, dtype=torch.float64))  # noqa: E731
    half = distortion * s / 2
    corners = torch.tensor([[0, 0], [s - 1, 0], [s - 1, s - 1], [0, s - 1]], dtype=torch.float64)
    inward = torch.tensor([[1, 1], [-1, 1], [-1, -1], [1, -1]], dtype=torch.float64)
    moved = corners + inward * torch.tensor([[r() * half, r() * half] for _ in range(4)], dtype=torch.float64)
    h_inv = _homography(corners, moved).inverse()         # output (perspective) pixel -> source pixel
    side = s * math.sqrt(scale[0] + r() * (scale[1] - scale[0]))
    x0, y0 = r() * (s - side), r() * (s - side)
    c = (torch.arange(size, dtype=torch.float64) + 0.5) / s   # pixel centres in 0..1
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    px = torch.stack([x0 + xx * side - 0.5, y0 + yy * side - 0.5, torch.ones_like(xx)], -1)  # in the perspective image
    src = px @ h_inv.T
    src = src[..., :2] / src[..., 2:]
    return ((src + 0.5) / s * 2 - 1)[None].float()


def augment_frames(frames: torch.Tensor, grid: torch.Tensor, fill: float = 1.0) -> torch.Tensor:
    """[N,H,W,3] -> [N,S,S,3] through one shared grid; outside the picture: ``fill`` (white, as fill=1)."""
    x = frames.permute(0, 3, 1, 2)
    x = torch.cat([x, torch.ones_like(x[:, :1])], 1)
    out = nn.functional.grid_sample(x, grid.to(x).expand(x.shape[0], -1, -1, -1), mode="bilinear",
                                     padding_mode="zeros", align_corners=False)
    rgb, cover = out[:, :3], out[:, 3:]
    return (rgb + (1 - cover) * fill).permute(0, 2, 3, 1)


# --- the objective -----------------------------------------------------------------------------------

def posterior_noise(backbone, frames: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """The VAE posterior's standard-normal draw for ``frames`` frames of ``size``² (CPU generator)."""
    s, c = backbone.latent_scale, backbone.vae.config.latent_channels
    return torch.randn(frames, c, size // s, size // s, generator=generator)


def encode_with_grad(backbone, frames: torch.Tensor, noise: torch.Tensor, chunk: int = 8,
                     order: torch.Tensor | None = None) -> torch.Tensor:
    """[S,H,W,3] in 0..1 -> latents (1, C, N, h, w) = posterior sample (mean + std · ``noise`` [N,C,h,w]) ·
    scaling factor (§1.7), differentiable wrt the frames. ``order`` [N] plays the S pictures as N frames
    (AniClipart's 24 frames are 6 poses: each is encoded once, every frame keeps its own noise; None:
    S = N). Chunks are checkpointed: the backward pass re-runs one chunk's encoder at a time."""
    from torch.utils.checkpoint import checkpoint

    vae = backbone.vae
    dev = next(vae.parameters()).device
    x = (frames.permute(0, 3, 1, 2) * 2 - 1).to(dev, backbone.dtype)

    def enc(xc):
        dist = vae.encode(xc).latent_dist
        return dist.mean, dist.std

    means, stds = [], []
    for i in range(0, x.shape[0], max(1, int(chunk))):
        xc = x[i:i + chunk]
        m, s = checkpoint(enc, xc, use_reentrant=False) if xc.requires_grad else enc(xc)
        means.append(m)
        stds.append(s)
    mean, std = torch.cat(means), torch.cat(stds)
    if order is not None:
        mean, std = mean[order.to(dev)], std[order.to(dev)]
    z = mean + std * noise.to(dev, backbone.dtype)
    return (z * vae.config.scaling_factor).permute(1, 0, 2, 3)[None]


def bone_lengths(points: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """[..., K, 2] -> [..., E]."""
    return (points[..., edges[:, 0], :] - points[..., edges[:, 1], :]).norm(dim=-1)


def skeleton_loss(poses: torch.Tensor, rest: torch.Tensor, edges: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """AniClipart's bone-length loss: Σ over poses of MSE(bone lengths, rest bone lengths) (§1.2,
    A:losses.py:219-229), lengths multiplied by ``scale`` (256 / canvas: AniClipart's px)."""
    if edges.numel() == 0:
        return poses.sum() * 0
    d = (bone_lengths(poses, edges) - bone_lengths(rest, edges)) * scale
    return (d ** 2).mean(-1).sum()


@dataclass
class Step:
    """What one iteration computed (detached), for the progress preview and the tests."""
    loss: float = 0.0
    parts: dict = field(default_factory=dict)
    t: int = -1
    frames: torch.Tensor | None = None


class SDSObjective:
    """The loss of one SDS iteration as a function of the parameters (module doc).

    ``denoiser`` overrides the guided UNet (tests: a denoiser that returns the true noise).
    """

    def __init__(self, mesh: Mesh, trajectory: Trajectory, backbone, prompt: str, settings: SDSSettings = SDS, *,
                 corrector: TemporalJacobianCorrector | None = None, denoiser=None, negative: str = "",
                 check: Check | None = None, extra_loss=None):
        self.s = st = settings
        _check_settings(st)
        if not isinstance(trajectory, Trajectory) or trajectory.control is None:
            fail("trajectory", "a Bezier trajectory (Flipbook Bezier Trajectory; pose tracks have no curves to learn)",
                 describe(trajectory))
        sk = trajectory.skeleton
        if sk.num_points != len(mesh.keypoint_idx) or tuple(sk.canvas) != tuple(mesh.canvas):
            fail("trajectory", f"the mesh's {len(mesh.keypoint_idx)} keypoints on its {mesh.canvas} canvas",
                 f"{sk.num_points} keypoints on {tuple(sk.canvas)}")
        self.mesh, self.skeleton, self.backbone, self.check = mesh, sk, backbone, check
        self.extra_loss = extra_loss
        self.corrector = corrector
        self.deformer = MeshDeformer(mesh, "poisson_bilap", st.constraint_lambda)
        self.pose_deformer = MeshDeformer(mesh, "arap", st.constraint_lambda) if st.pose_method == "arap" else None
        loop, cycles = ("once", 1) if st.loop_num == 0 else ("aniclipart", st.loop_num)
        self.loop, self.cycles = loop, cycles
        u_all = frame_times(st.frames, loop, cycles)
        self.times, self.order = torch.unique(u_all, sorted=True, return_inverse=True)
        self.ctrl0 = trajectory.control.detach().double().clone()
        self.ctrl0[:, 0] = sk.points.double()
        # clones: inputs made under ComfyUI's inference mode cannot join a graph
        self.rest_points, self.edges = sk.points.detach().double().clone(), sk.edges.clone()
        self.px = max(mesh.canvas) / 256.0          # AniClipart's units are px of a 256² canvas
        self.mlp = None
        if st.use_mlp:
            with torch.random.fork_rng(devices=[]):     # seeded initial weights, global generator untouched
                torch.manual_seed(seeds.effective_seed(st.seed))
                self.mlp = PointMLP(sk.num_points)
        self.generator = seeds.generator(st.seed)
        self.scheduler = make_scheduler(backbone.scheduler_config, 1) if backbone is not None else None
        if backbone is not None and denoiser is None:
            cond = encode_text(backbone, prompt).to(backbone.device)
            uncond = encode_text(backbone, negative).to(backbone.device) if negative else null_embeds(backbone)
            denoiser = t2v_denoiser(backbone.unet, cond, uncond, st.guidance)
        self.denoiser = denoiser
        self.last = Step()
        if backbone is not None and st.render_size % backbone.latent_scale:
            fail("render_size", f"a multiple of the VAE's {backbone.latent_scale} px per latent cell", str(st.render_size))

    # -- parameters ------------------------------------------------------------------------------
    def initial_params(self) -> list[torch.Tensor]:
        first = [p.detach().clone() for p in self.mlp.parameters()] if self.mlp is not None \
            else [torch.zeros(self.ctrl0.shape[0], 3, 2, dtype=torch.float64)]
        rest = [p.detach().clone() for p in self.corrector.parameters()] if self.corrector is not None else []
        self.n_first = len(first)
        return first + rest

    def control(self, params: list[torch.Tensor]) -> torch.Tensor:
        """Control points [K, 4, 2] px (float64) from the parameters; c0 stays the keypoint."""
        if self.mlp is None:
            delta = params[0]
        else:
            names = [n for n, _ in self.mlp.named_parameters()]
            flat = (self.ctrl0 / (256.0 * self.px)).reshape(-1, 2).float()
            out = torch.func.functional_call(self.mlp, dict(zip(names, params[:self.n_first])), (flat,))
            delta = out.view(-1, 4, 2)[:, 1:].double()
        return torch.cat([self.ctrl0[:, :1], self.ctrl0[:, 1:] + delta * self.px], 1)

    def animate(self, params: list[torch.Tensor]):
        """(poses [S,K,2], V [S,V,2], V_pose, Jᴿ or None) for the parameters."""
        poses = bezier(self.control(params), self.times)              # [S,K,2] float64
        corr = None
        if self.corrector is not None:
            names = [n for n, _ in self.corrector.named_parameters()]
            values = dict(zip(names, params[self.n_first:]))
            corr = lambda jp, u: torch.func.functional_call(self.corrector, values, (jp, u))  # noqa: E731
        v, v_pose, jr = corrected_vertices(self.deformer, poses, corr, self.times, self.pose_deformer)
        return poses, v, v_pose, jr

    def render(self, vertices: torch.Tensor, play: bool = True) -> torch.Tensor:
        """Frames in play order [N, R, R, 3] from the poses' vertices (``play=False``: one per pose)."""
        r = self.s.render_size
        img, _ = render_mesh(self.mesh, vertices.float(), out_size=(r, r), return_alpha=False)
        return img[self.order] if play else img

    def encode(self, pictures: torch.Tensor) -> torch.Tensor:
        """One picture per pose (augmented) -> the clip's latents, each pose encoded once (ours) or, with
        ``dedupe_encode`` off, every frame as the official code does (same result, 4x the VAE work)."""
        st = self.s
        with self._autocast():
            if st.dedupe_encode:
                return encode_with_grad(self.backbone, pictures, self.posterior, st.vae_chunk, self.order).float()
            return encode_with_grad(self.backbone, pictures[self.order], self.posterior, st.vae_chunk).float()

    # -- the loss --------------------------------------------------------------------------------
    def _autocast(self):
        dev = self.backbone.device if self.backbone is not None else torch.device("cpu")
        return torch.autocast(dev.type, dtype=torch.float16, enabled=self.s.fp16 and dev.type == "cuda")

    def _guided(self, z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        poll(self.check)
        if self.backbone is not None:                   # a bf16/fp16 model takes latents in its dtype
            z_t = z_t.to(self.backbone.dtype)
        with self._autocast():
            return self.denoiser(z_t, t).float()

    def __call__(self, params: list[torch.Tensor]) -> torch.Tensor:
        st, g = self.s, self.generator
        poses, v, v_pose, jr = self.animate(params)
        pictures = self.render(v, play=False)
        frames = pictures[self.order]
        grid = augmentation_grid(st.render_size, g, distortion=st.perspective, scale=st.crop_scale) if st.augment else None
        x = augment_frames(pictures, grid) if grid is not None else pictures   # one shared warp: per pose = per frame
        parts = {}
        loss = skeleton_loss(poses, self.rest_points, self.edges, 1.0 / self.px) * st.w_skel
        parts["skeleton"] = float(loss.detach())
        if self.extra_loss is not None:
            extra = self.extra_loss(frames)
            parts["extra"] = float(extra.detach())
            loss = loss + extra
        t = torch.randint(st.t_min, st.t_max, (), generator=g)
        if self.backbone is not None:
            poll(self.check)
            self.posterior = posterior_noise(self.backbone, st.frames, st.render_size, g)
            z = self.encode(x)
            noise = torch.randn(z.shape, generator=g).to(z.device)
            self.noise = noise                          # tests' mock denoisers read it
            sched, tt = self.scheduler, t.to(z.device)
            flow = jr is not None and st.lambda_flow > 0
            if flow and st.flow_mode == "dds":
                # the pose-only render rides in the SDS call: one UNet call of both latents, same t and ε
                zp = self._pose_latents(v_pose, grid)
                both = sds_gradient(self._guided, torch.cat([z.detach(), zp]), tt, torch.cat([noise, noise]), sched)
                grad, grad_p = torch.nan_to_num(both).chunk(2)
            else:
                grad = torch.nan_to_num(sds_gradient(self._guided, z, tt, noise, sched))
            # (AniClipart asserts/cleans NaN, A:losses.py:156-161)
            sds = 0.5 * ((z - (z - grad).detach()) ** 2).sum()
            parts["sds"] = float(sds.detach())
            loss = loss + sds
            if flow:
                if st.flow_mode == "dds":             # w(t)(ε̂(z_t) - ε̂(zᴾ_t)): the noise cancels
                    term1 = 0.5 * ((z - (z - (grad - grad_p)).detach()) ** 2).sum()
                else:
                    term1 = self._exact_flow_score(z, self._pose_latents(v_pose, grid), tt, noise)
                term2 = self._jr_energy(jr)
                parts["flow_score"], parts["flow_jr"] = float(term1.detach()), float(term2.detach())
                loss = loss + st.lambda_flow * (term1 + term2)
        elif jr is not None and st.lambda_flow > 0:
            term2 = self._jr_energy(jr)
            parts["flow_jr"] = float(term2.detach())
            loss = loss + st.lambda_flow * term2
        self.last = Step(float(loss.detach()), parts, int(t), frames.detach())
        return loss

    def _jr_energy(self, jr: torch.Tensor) -> torch.Tensor:
        """Term 2: mean over poses of the area-weighted mean over faces of ‖Jᴿ‖_F² (§2.3)."""
        area = self.mesh.areas().to(jr)
        return ((jr ** 2).sum((-1, -2)) * area).sum(-1).mean() / area.sum()

    def _pose_latents(self, v_pose, grid) -> torch.Tensor:
        """Latents of the pose-only render (same augmentation and posterior noise), without a graph."""
        with torch.no_grad():
            xp = self.render(v_pose.detach(), play=False)
            return self.encode(augment_frames(xp, grid) if grid is not None else xp)

    def _exact_flow_score(self, z, zp, tt, noise) -> torch.Tensor:
        """Term 1, exact (§2.3 (b)): ‖ε̂(z_t) - ε̂(zᴾ_t)‖² / σ_t², the UNet in the graph."""
        sched = self.scheduler
        a = sched.alphas_cumprod[int(tt)].to(z)
        with torch.no_grad():
            zp_t = sched.add_noise(zp, noise, tt)
            _, eps_p = sched.split(self._guided(zp_t, tt), tt, zp_t)
        z_t = sched.add_noise(z, noise, tt)
        _, eps = sched.split(self._guided(z_t, tt), tt, z_t)
        return ((eps - eps_p) ** 2).sum() / (1 - a)


def _check_settings(st: SDSSettings) -> None:
    check_range("iterations", st.iterations, 0, 100000)
    check_range("frames", st.frames, 1, 256)
    check_range("render_size", st.render_size, 8, 1024)
    check_range("guidance", st.guidance, 0.0, 1000.0)
    if not 0 <= st.t_min < st.t_max <= 1000:
        fail("t_min / t_max", "0 <= t_min < t_max <= 1000", f"{st.t_min} / {st.t_max}")
    if st.pose_method not in POSE_METHODS:
        fail("pose_method", " / ".join(POSE_METHODS), repr(st.pose_method))
    if st.flow_mode not in FLOW_MODES:
        fail("flow_mode", " / ".join(FLOW_MODES), repr(st.flow_mode))
    if st.loop_num and st.frames < 2 * st.loop_num:
        fail("frames", f"at least {2 * st.loop_num} for loop_num {st.loop_num}", str(st.frames))
    for name, attr in (("lr", "lr"), ("skeleton_weight", "w_skel"), ("lambda_flow", "lambda_flow"),
                       ("constraint_lambda", "constraint_lambda")):   # named as the node's widgets
        check_range(name, float(getattr(st, attr)), 0.0, 1e9)


@dataclass
class SDSResult:
    trajectory: Trajectory
    animation: Animation
    corrector: TemporalJacobianCorrector | None
    losses: list[float]
    parts: dict


def optimise_sds(mesh: Mesh, trajectory: Trajectory, backbone, prompt: str, settings: SDSSettings = SDS, *,
                 corrector: TemporalJacobianCorrector | None = None, negative: str = "", denoiser=None,
                 check: Check | None = None, callback: StepCallback | None = None, preview=None,
                 extra_loss=None) -> SDSResult:
    """Learn the trajectory (and the corrector) by video SDS; returns the learned trajectory, the
    animation of every frame (vertices, the corrected ones with a corrector) and the losses.

    ``preview(step, frames [N,R,R,3])`` gets the current animation every ``preview_every`` iterations;
    ``callback(step, iters)`` after every iteration; ``check()`` before every model call (cancel).
    The corrector passed in is not modified: a trained copy comes back. ``extra_loss(frames)`` adds a
    loss on the rendered frames [N,R,R,3] (play order, before augmentation); with ``backbone=None``
    and no ``denoiser`` the SDS term is off (a toy objective).
    """
    import copy

    st = settings
    with torch.inference_mode(False):
        corrector = copy.deepcopy(corrector) if corrector is not None else None
        if corrector is not None:
            corrector = _fresh(corrector)
        obj = SDSObjective(mesh, trajectory, backbone, prompt, st, corrector=corrector, denoiser=denoiser,
                           negative=negative, check=check, extra_loss=extra_loss)
        x0 = obj.initial_params()

        def step_cb(k: int, n: int) -> None:
            if preview is not None and obj.last.frames is not None and (k % max(1, st.preview_every) == 1 or k == n):
                preview(k, obj.last.frames)
            if callback is not None:
                callback(k, n)

        lr_at = lambda k: st.lr * delayed_log_lerp(k, st.iterations, lr_init=st.lr_init, lr_final=st.lr_final,  # noqa: E731
                                                   delay_mult=st.lr_delay_mult, delay_steps=st.lr_delay_steps)
        params, losses = adam_minimise(x0, obj, iters=st.iterations, lr=st.lr, lr_at=lr_at, betas=st.betas,
                                       eps=st.eps, check=check, callback=step_cb)
        with torch.no_grad():
            if corrector is not None:
                for p, v in zip(corrector.parameters(), params[obj.n_first:]):
                    p.copy_(v)
            ctrl = obj.control(params).float()
            traj = Trajectory(obj.skeleton, st.frames, ctrl, obj.loop, obj.cycles)
            _, v, _, _ = obj.animate(params)
            anim = Animation(mesh, v.float()[obj.order].detach(), traj)
    return SDSResult(traj, anim, corrector, [float(x) for x in losses], obj.last.parts)


def _fresh(module: nn.Module) -> nn.Module:
    """Parameters made under ComfyUI's inference mode cannot join a graph: rebuild them as plain tensors."""
    with torch.no_grad():
        for name, p in list(module.named_parameters()):
            p.data = p.data.clone()
    return module
