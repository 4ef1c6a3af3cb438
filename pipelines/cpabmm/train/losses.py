"""CPABMM's training losses (spec cpab.md §2.4; C:modules/model.py), written for this pack.

- multi-scale perceptual loss: VGG19 (torchvision's layer layout, relu1_1..relu5_1) on an image
  pyramid, when the user supplies VGG19 weights; otherwise **ours**: a weight-free multi-scale
  L1 + SSIM pyramid (``perceptual_kind == "l1+ssim"``), since nothing is ever downloaded;
- equivariance under a random TPS (σ_affine, σ_tps, 5×5 control points; FOMM's TPS);
- warp loss (driving encoder maps vs the warped source maps), background cycle loss ‖I − P_sd P_ds‖₁;
- the DINO structure loss (layer-11 key self-similarity of a ViT-B/8) with user-supplied weights;
- the SAM keypoint semantic loss: **our interpretation** (the release has no code, spec §2.4), only
  with a user-supplied extractor.

Every random draw comes from a per-sample seed, so a batch split over processes (DDP) or
micro-batches draws the same numbers as the whole batch in one process.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import FlipbookInputError, fail
from ..networks import AntiAliasInterpolation2d, coordinate_grid
from .data import _seed_generator


def sample_generators(seeds: torch.Tensor, salt: int) -> list[torch.Generator]:
    """One CPU generator per sample, from its seed and a salt naming the draw."""
    return [_seed_generator(int(s) * 1_000_003 + salt) for s in seeds.tolist()]


class ImagePyramid(nn.Module):
    def __init__(self, scales, channels: int = 3):
        super().__init__()
        self.scales = [float(s) for s in scales]
        self.downs = nn.ModuleList([AntiAliasInterpolation2d(channels, s) for s in self.scales])

    def forward(self, x):
        return [d(x) for d in self.downs]


# --- VGG19 (torchvision's `features` indices, so its state dict loads as it is) --------------------

_VGG19 = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512]
_SLICES = (2, 7, 12, 21, 30)            # relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 (C:model.py Vgg19)


class VGG19Features(nn.Module):
    def __init__(self, widths=None):
        super().__init__()
        layers, cin = [], 3
        for v in (widths or _VGG19):
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU(inplace=False)]
                cin = v
        self.features = nn.Sequential(*layers[:_SLICES[-1]])
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        self.requires_grad_(False)

    def forward(self, x):
        x = (x - self.mean) / self.std
        outs, start = [], 0
        for end in _SLICES:
            for layer in self.features[start:end]:
                x = layer(x)
            outs.append(x)
            start = end
        return outs


def _read_weights(path: str, what: str) -> dict:
    if path.lower().endswith(".safetensors"):
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except Exception as exc:
            raise FlipbookInputError(f"{what}: expected a readable .safetensors file, got {path!r}: {exc}") from None
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise FlipbookInputError(f"{what}: expected weights loadable with torch.load(weights_only=True), "
                                 f"got {path!r}: {str(exc)[:200]}") from None
    return sd.get("state_dict", sd.get("model", sd)) if isinstance(sd, dict) else sd


def load_vgg19(path: str) -> VGG19Features:
    """torchvision's vgg19 weights (``features.N.*``; the classifier is ignored), .safetensors or .pth."""
    sd = _read_weights(path, "vgg19")
    feats = {k[len("features."):]: v for k, v in sd.items() if k.startswith("features.")}
    net = VGG19Features()
    wanted = net.features.state_dict()
    missing = [k for k in wanted if k not in feats]
    if missing:
        fail("vgg19", "torchvision VGG19 weights with keys features.0.weight ... features.28.bias",
             f"missing {missing[:4]}")
    net.features.load_state_dict({k: feats[k] for k in wanted})
    return net.eval()


def ssim(x, y, window: int = 7):
    """Mean-filter SSIM map (constants of Wang et al. 2004 for a 0..1 range)."""
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    pad = window // 2
    pool = lambda t: F.avg_pool2d(F.pad(t, (pad,) * 4, mode="reflect"), window, 1)     # noqa: E731
    mx, my = pool(x), pool(y)
    vx, vy, cxy = pool(x * x) - mx * mx, pool(y * y) - my * my, pool(x * y) - mx * my
    return ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))


class PerceptualLoss(nn.Module):
    """Σ_scales Σ_layers w_l·|φ_l(pred) − φ_l(real)|₁ (VGG19, C:model.py), or with ``vgg=None`` ours:
    Σ_scales w₀·(|pred − real|₁ + (1 − SSIM)/2), with w₀ the first layer weight."""

    def __init__(self, scales, weights, vgg: VGG19Features | None = None):
        super().__init__()
        self.pyramid = ImagePyramid(scales)
        self.weights = [float(w) for w in weights]
        self.vgg = vgg
        self.kind = "vgg19" if vgg is not None else "l1+ssim"

    def forward(self, pred, real):
        total = pred.new_zeros(())
        for p, r in zip(self.pyramid(pred), self.pyramid(real)):
            if self.vgg is None:
                dssim = (1 - ssim(p, r.detach())).mean() / 2 if min(p.shape[2:]) >= 7 else 0.0
                total = total + self.weights[0] * ((p - r.detach()).abs().mean() + dssim)
                continue
            if min(p.shape[2:]) < 16:        # relu5_1 lies behind 4 poolings (only tiny inputs get here)
                continue
            for w, a, b in zip(self.weights, self.vgg(p), self.vgg(r)):
                total = total + w * (a - b.detach()).abs().mean()
        return total


# --- random TPS (FOMM/TPSMM's equivariance transform) ---------------------------------------------


class RandomTPS:
    """Per sample: an affine I + N(0, σ_affine²) and a thin-plate spline on a p×p control grid with
    N(0, σ_tps²) weights, radial basis r² log r of the L1 distance (FOMM's TPS, mode 'random')."""

    def __init__(self, seeds: torch.Tensor, sigma_affine: float, sigma_tps: float, points_tps: int,
                 device=None, dtype=torch.float32):
        gens = sample_generators(seeds, salt=17)
        n = points_tps ** 2
        theta = torch.stack([torch.randn(2, 3, generator=g) for g in gens]) * sigma_affine
        self.theta = (theta + torch.eye(2, 3)).to(device, dtype)
        self.params = (torch.stack([torch.randn(n, generator=g) for g in gens]) * sigma_tps).to(device, dtype)
        self.control = coordinate_grid(points_tps, points_tps, dtype=dtype, device=device).view(-1, 2)

    def warp_coordinates(self, coords):
        """coords [bs, K, 2] in [-1, 1] -> [bs, K, 2]."""
        c = coords.to(self.theta.dtype)
        out = torch.einsum("bij,bkj->bki", self.theta[:, :, :2], c) + self.theta[:, None, :, 2]
        dist = (c[:, :, None, :] - self.control[None, None]).abs().sum(-1)          # [bs, K, n]
        rbf = dist ** 2 * torch.log(dist + 1e-6)
        return out + (rbf * self.params[:, None, :]).sum(-1, keepdim=True)

    def transform_frame(self, frame):
        bs, _, h, w = frame.shape
        grid = coordinate_grid(h, w, dtype=frame.dtype, device=frame.device).view(1, -1, 2).expand(bs, -1, -1)
        return self.warp_coordinates(grid).view(bs, h, w, 2)


def equivariance_loss(kp_detector, driving, kp_driving, tps: RandomTPS):
    """|kp_d − T(kp(T⁻¹-warped driving))|₁ (C:model.py): the keypoints follow a random warp."""
    warped = F.grid_sample(driving, tps.transform_frame(driving), padding_mode="reflection", align_corners=True)
    return (kp_driving - tps.warp_coordinates(kp_detector(warped)["fg_kp"])).abs().mean()


def warp_loss(encoded_driving, warped_maps):
    """Σ_levels |enc_l(driving)·occ − warp(enc_l(source))·occ|₁, shallowest against shallowest."""
    return sum((e - warped_maps[-i - 1]).abs().mean() for i, e in enumerate(encoded_driving))


def bg_cycle_loss(p_sd, p_ds):
    """|I − P_sd·P_ds|₁ over the 3×3 entries (C:model.py)."""
    eye = torch.eye(3, dtype=p_sd.dtype, device=p_sd.device)
    return (eye - p_sd @ p_ds).abs().mean()


# --- DINO structure loss (Splice-style key self-similarity) -----------------------------------------


class _Block(nn.Module):
    def __init__(self, dim, heads, mlp_ratio=4.0):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = nn.Module()
        self.attn.qkv = nn.Linear(dim, 3 * dim)
        self.attn.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Module()
        self.mlp.fc1 = nn.Linear(dim, int(dim * mlp_ratio))
        self.mlp.fc2 = nn.Linear(int(dim * mlp_ratio), dim)

    def qkv(self, x):
        b, n, d = x.shape
        return self.attn.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)

    def forward(self, x):
        q, k, v = self.qkv(x)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(x.shape)
        x = x + self.attn.proj(a)
        return x + self.mlp.fc2(F.gelu(self.mlp.fc1(self.norm2(x))))


class ViT(nn.Module):
    """DINO's ViT (facebookresearch/dino state-dict names: patch_embed.proj, cls_token, pos_embed,
    blocks.N.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}, norm). ViT-B/8: dim 768, 12 blocks,
    12 heads, patch 8."""

    def __init__(self, dim=768, depth=12, heads=12, patch=8, grid=28):
        super().__init__()
        self.patch = patch
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + 1, dim))
        self.blocks = nn.ModuleList([_Block(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.requires_grad_(False)

    def _pos(self, h, w):
        pos = self.pos_embed[:, 1:]
        g = int(math.sqrt(pos.shape[1]))
        if (h, w) != (g, g):
            pos = F.interpolate(pos.reshape(1, g, g, -1).permute(0, 3, 1, 2), size=(h, w), mode="bicubic",
                                align_corners=False).permute(0, 2, 3, 1).reshape(1, h * w, -1)
        return torch.cat([self.pos_embed[:, :1], pos], 1)

    def keys(self, x, layer: int = 11):
        """The keys of block ``layer``, heads concatenated: [b, 1 + tokens, dim]."""
        t = self.patch_embed.proj(x)
        b, d, h, w = t.shape
        t = torch.cat([self.cls_token.expand(b, -1, -1), t.flatten(2).transpose(1, 2)], 1) + self._pos(h, w)
        for i, blk in enumerate(self.blocks):
            if i == layer:
                k = blk.qkv(t)[1]
                return k.transpose(1, 2).reshape(b, k.shape[2], -1)
            t = blk(t)
        fail("layer", f"a block index < {len(self.blocks)}", str(layer))


def load_dino(path: str, **kw) -> ViT:
    sd = _read_weights(path, "dino")
    sd = {k.removeprefix("module.").removeprefix("backbone."): v for k, v in sd.items()}
    net = ViT(**kw) if kw else ViT(grid=int(math.sqrt(sd["pos_embed"].shape[1] - 1)) if "pos_embed" in sd else 28)
    try:
        wanted = net.state_dict()
        net.load_state_dict({k: v for k, v in sd.items() if k in wanted}, strict=True)
    except RuntimeError as exc:
        raise FlipbookInputError(f"dino: expected DINO ViT-B/8 weights, got {path!r}: {str(exc)[:300]}") from None
    return net.eval()


class StructureLoss(nn.Module):
    """MSE between the cosine self-similarity matrices of the ViT keys of generated and driving
    frames, each resized to short side 224 (long side ≤ 480) and ImageNet-normalised (C:model.py)."""

    def __init__(self, vit: ViT, layer: int = 11, size: int = 224):
        super().__init__()
        self.vit, self.layer, self.size = vit, layer, size
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def _self_sim(self, x):
        h, w = x.shape[2:]
        s = self.size / min(h, w)
        size = (min(480, round(h * s)), min(480, round(w * s)))
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        k = F.normalize(self.vit.keys((x - self.mean) / self.std, self.layer), dim=-1)
        return k @ k.transpose(1, 2)

    def forward(self, generated, driving):
        with torch.no_grad():
            target = self._self_sim(driving)
        sim = self._self_sim(generated)
        return ((sim - target) ** 2).mean(dim=(1, 2)).sum()      # the release sums per-sample MSEs


class KeypointSemanticLoss(nn.Module):
    """**Ours** (the release has no SAM code, spec §2.4): ``extractor(image, kp) -> [bs, K, D]``
    semantic features at the keypoints (e.g. SAM's image embedding sampled at each point); the loss
    is mean(1 − cos) between corresponding source and driving keypoints, so a keypoint keeps its
    meaning across frames."""

    def __init__(self, extractor):
        super().__init__()
        self.extractor = extractor

    def forward(self, source, driving, kp_source, kp_driving):
        fs = self.extractor(source, kp_source)
        fd = self.extractor(driving, kp_driving)
        return (1 - F.cosine_similarity(fs, fd, dim=-1)).mean()


def sam_extractor(path: str, model_type: str = "vit_b"):
    """SAM's image encoder, sampled at the keypoints (our interpretation). Needs the optional
    ``segment_anything`` package; the weights are read with safetensors or weights_only=True."""
    try:
        from segment_anything import sam_model_registry
    except ImportError:
        raise FlipbookInputError("sam: the SAM keypoint loss needs the optional package segment_anything "
                                 "(pip install segment-anything); got it missing") from None
    sam = sam_model_registry[model_type]()
    sam.load_state_dict(_read_weights(path, "sam"))
    sam.eval().requires_grad_(False)

    def extract(image, kp):
        x = F.interpolate(image, size=(1024, 1024), mode="bilinear", align_corners=False)
        emb = sam.image_encoder((x * 255 - sam.pixel_mean) / sam.pixel_std)
        return F.grid_sample(emb, kp.unsqueeze(2), align_corners=True).squeeze(-1).transpose(1, 2)

    return KeypointSemanticLoss(extract)
