"""CPABMM's networks, rebuilt from the spec (cpab.md §2.2-2.3) with the official state-dict keys.

All TPSMM-derived: a ResNet-18 keypoint detector, a dense-motion hourglass that mixes N local CPAB
transforms + 1 global CPAB + the background affine, an occlusion-aware inpainting generator, and the
AVD MLP. Key names and shapes match a checkpoint trained with the official code (59 dense-motion
tensors, 78 inpainting tensors); the CPAB transforms hold no parameters. ``width`` (ResNet base
channels) is ours, 64 being the official; smaller values only serve tiny test models.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..coords import pixel_to_ndc

# --- ResNet-18 with torchvision's key names (torchvision is not a dependency) --------------------


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet18(nn.Module):
    def __init__(self, in_channels: int = 3, num_outputs: int = 1000, width: int = 64):
        super().__init__()
        w = width
        self.conv1 = nn.Conv2d(in_channels, w, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = nn.Sequential(BasicBlock(w, w), BasicBlock(w, w))
        self.layer2 = nn.Sequential(BasicBlock(w, 2 * w, 2), BasicBlock(2 * w, 2 * w))
        self.layer3 = nn.Sequential(BasicBlock(2 * w, 4 * w, 2), BasicBlock(4 * w, 4 * w))
        self.layer4 = nn.Sequential(BasicBlock(4 * w, 8 * w, 2), BasicBlock(8 * w, 8 * w))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8 * w, num_outputs)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class KPDetector(nn.Module):
    """Image -> {'fg_kp': [bs, 5·num_cpab, 2]} in [-1,1] (x, y)."""

    def __init__(self, num_cpab: int, width: int = 64):
        super().__init__()
        self.num_cpab = num_cpab
        self.fg_encoder = ResNet18(3, num_cpab * 5 * 2, width)

    def forward(self, image):
        kp = torch.sigmoid(self.fg_encoder(image)) * 2 - 1
        return {"fg_kp": kp.view(image.shape[0], self.num_cpab * 5, 2)}


class BGMotionPredictor(nn.Module):
    """(source, driving) -> background affine [bs, 3, 3], initialised to the identity."""

    def __init__(self, width: int = 64):
        super().__init__()
        self.bg_encoder = ResNet18(6, 6, width)
        with torch.no_grad():
            self.bg_encoder.fc.weight.zero_()
            self.bg_encoder.fc.bias.copy_(torch.tensor([1.0, 0, 0, 0, 1, 0]))

    def forward(self, source, driving):
        bs = source.shape[0]
        out = torch.eye(3, dtype=source.dtype, device=source.device).repeat(bs, 1, 1)
        out[:, :2, :] = self.bg_encoder(torch.cat([source, driving], 1)).view(bs, 2, 3)
        return out


class AVDNetwork(nn.Module):
    """Animation via disentanglement: identity from the source keypoints, pose from the driving ones."""

    def __init__(self, num_cpab: int, id_bottle_size: int = 128, pose_bottle_size: int = 128,
                 hidden: tuple[int, int, int] = (256, 512, 1024)):
        super().__init__()
        n = 5 * 2 * num_cpab
        self.num_cpab = num_cpab
        h1, h2, h3 = hidden

        def mlp(sizes, inplace):
            layers = []
            for a, b in zip(sizes[:-2], sizes[1:-1]):
                layers += [nn.Linear(a, b), nn.BatchNorm1d(b), nn.ReLU(inplace=inplace)]
            return nn.Sequential(*layers, nn.Linear(sizes[-2], sizes[-1]))

        self.id_encoder = mlp([n, h1, h2, h3, id_bottle_size], True)
        self.pose_encoder = mlp([n, h1, h2, h3, pose_bottle_size], True)
        self.decoder = mlp([pose_bottle_size + id_bottle_size, h3, h2, h1, n], False)

    def forward(self, kp_source, kp_driving):
        bs = kp_source["fg_kp"].shape[0]
        pose = self.pose_encoder(kp_driving["fg_kp"].reshape(bs, -1))
        ident = self.id_encoder(kp_source["fg_kp"].reshape(bs, -1))
        return {"fg_kp": self.decoder(torch.cat([pose, ident], 1)).view(bs, self.num_cpab * 5, 2)}


# --- hourglass blocks ------------------------------------------------------------------------------


class UpBlock2d(nn.Module):
    def __init__(self, cin, cout, kernel_size=3, padding=1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, padding=padding)
        self.norm = nn.InstanceNorm2d(cout, affine=True)

    def forward(self, x):
        return F.relu(self.norm(self.conv(F.interpolate(x, scale_factor=2))))


class DownBlock2d(nn.Module):
    def __init__(self, cin, cout, kernel_size=3, padding=1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, padding=padding)
        self.norm = nn.InstanceNorm2d(cout, affine=True)
        self.pool = nn.AvgPool2d(2)

    def forward(self, x):
        return self.pool(F.relu(self.norm(self.conv(x))))


class SameBlock2d(nn.Module):
    def __init__(self, cin, cout, kernel_size=3, padding=1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, padding=padding)
        self.norm = nn.InstanceNorm2d(cout, affine=True)

    def forward(self, x):
        return F.relu(self.norm(self.conv(x)))


class ResBlock2d(nn.Module):
    def __init__(self, features, kernel_size=3, padding=1):
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, kernel_size, padding=padding)
        self.conv2 = nn.Conv2d(features, features, kernel_size, padding=padding)
        self.norm1 = nn.InstanceNorm2d(features, affine=True)
        self.norm2 = nn.InstanceNorm2d(features, affine=True)

    def forward(self, x):
        out = self.conv1(F.relu(self.norm1(x)))
        return self.conv2(F.relu(self.norm2(out))) + x


class Encoder(nn.Module):
    def __init__(self, block_expansion, in_features, num_blocks=3, max_features=256):
        super().__init__()
        self.down_blocks = nn.ModuleList([
            DownBlock2d(in_features if i == 0 else min(max_features, block_expansion * 2 ** i),
                        min(max_features, block_expansion * 2 ** (i + 1))) for i in range(num_blocks)])

    def forward(self, x):
        outs = [x]
        for block in self.down_blocks:
            outs.append(block(outs[-1]))
        return outs


class Decoder(nn.Module):
    def __init__(self, block_expansion, in_features, num_blocks=3, max_features=256):
        super().__init__()
        blocks, self.out_channels = [], []
        for i in range(num_blocks)[::-1]:
            cin = (1 if i == num_blocks - 1 else 2) * min(max_features, block_expansion * 2 ** (i + 1))
            self.out_channels.append(cin)
            blocks.append(UpBlock2d(cin, min(max_features, block_expansion * 2 ** i)))
        self.up_blocks = nn.ModuleList(blocks)
        self.out_channels.append(block_expansion + in_features)

    def forward(self, skips):
        skips = list(skips)
        out = skips.pop()
        outs = []
        for block in self.up_blocks:
            out = torch.cat([block(out), skips.pop()], 1)
            outs.append(out)
        return outs


class Hourglass(nn.Module):
    def __init__(self, block_expansion, in_features, num_blocks=3, max_features=256):
        super().__init__()
        self.encoder = Encoder(block_expansion, in_features, num_blocks, max_features)
        self.decoder = Decoder(block_expansion, in_features, num_blocks, max_features)
        self.out_channels = self.decoder.out_channels

    def forward(self, x):
        return self.decoder(self.encoder(x))


class AntiAliasInterpolation2d(nn.Module):
    """Gaussian blur then downsample by ``scale`` (buffer ``weight`` [C,1,k,k], k = 13 at 0.25)."""

    def __init__(self, channels: int, scale: float):
        super().__init__()
        sigma = (1 / scale - 1) / 2
        k = 2 * round(sigma * 4) + 1
        self.ka = k // 2
        self.kb = self.ka - 1 if k % 2 == 0 else self.ka
        ax = torch.arange(k, dtype=torch.float32)
        g = torch.exp(-(ax - (k - 1) / 2) ** 2 / (2 * sigma ** 2))
        kernel = g[:, None] * g[None, :]
        kernel = kernel / kernel.sum()
        self.register_buffer("weight", kernel.expand(channels, 1, k, k).clone())
        self.groups = channels
        self.scale = scale

    def forward(self, x):
        if self.scale == 1.0:
            return x
        out = F.conv2d(F.pad(x, (self.ka, self.kb, self.ka, self.kb)), self.weight, groups=self.groups)
        return F.interpolate(out, scale_factor=(self.scale, self.scale))


def coordinate_grid(h: int, w: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """[h, w, 2] (x, y) pixel centres in [-1, 1] with align_corners (TPSMM's make_coordinate_grid)."""
    x = torch.arange(w, dtype=dtype, device=device)
    y = torch.arange(h, dtype=dtype, device=device)
    pixels = torch.stack([x.view(1, -1).expand(h, w), y.view(-1, 1).expand(h, w)], -1)
    return pixel_to_ndc(pixels, (h, w), align_corners=True)


def kp2gaussian(kp: torch.Tensor, size, variance: float) -> torch.Tensor:
    """kp [bs, K, 2] -> [bs, K, h, w] Gaussians exp(-|p - kp|² / (2 var))."""
    grid = coordinate_grid(*size, dtype=kp.dtype, device=kp.device)
    d = grid.view(1, 1, *size, 2) - kp.view(*kp.shape[:2], 1, 1, 2)
    return torch.exp(-0.5 * (d ** 2).sum(-1) / variance)


class DenseMotionNetwork(nn.Module):
    """Mixes N+2 backward grids (background, N local CPAB, 1 global CPAB) into one deformation and
    predicts 4 occlusion maps (C:modules/dense_motion.py:146-238). The grids come from outside
    (:func:`~.model.cpab_grids`), since the θ fit is an optimisation, not a layer."""

    def __init__(self, block_expansion, num_blocks, max_features, num_cpab, num_channels, scale_factor=0.25,
                 kp_variance=0.01, **_):
        super().__init__()
        self.down = AntiAliasInterpolation2d(num_channels, scale_factor) if scale_factor != 1 else None
        self.scale_factor = scale_factor
        self.num_cpab = num_cpab
        self.kp_variance = kp_variance
        n_transforms = num_cpab + 2
        self.hourglass = Hourglass(block_expansion, num_channels * n_transforms + num_cpab * 5 + 1,
                                   num_blocks, max_features)
        ch = self.hourglass.out_channels
        self.maps = nn.Conv2d(ch[-1], n_transforms, 7, padding=3)
        self.up_nums = int(math.log(1 / scale_factor, 2))
        self.occlusion_num = 4
        widths = [ch[-1] // 2 ** i for i in range(self.up_nums)]
        self.up = nn.ModuleList([UpBlock2d(c, c // 2) for c in widths])
        occ_in = [ch[-i - 1] for i in range(self.occlusion_num - self.up_nums)[::-1]]
        occ_in += [ch[-1] // 2 ** (i + 1) for i in range(self.up_nums)]
        self.occlusion = nn.ModuleList([nn.Conv2d(c, 1, 7, padding=3) for c in occ_in])

    def downsample(self, image):
        return image if self.down is None else self.down(image)

    def forward(self, source_small, kp_driving, kp_source, grids, keep=None):
        """source_small [bs,3,h,w] (already downsampled); grids [bs, N+2, h, w, 2] in [-1,1];
        keep [bs, N+2] (training's transform dropout, spec §2.2): 0 drops a transform from the softmax."""
        bs, _, h, w = source_small.shape
        heat = kp2gaussian(kp_driving, (h, w), self.kp_variance) - kp2gaussian(kp_source, (h, w), self.kp_variance)
        heat = torch.cat([heat.new_zeros(bs, 1, h, w), heat], 1)
        n = grids.shape[1]
        rep = source_small.unsqueeze(1).expand(-1, n, -1, -1, -1).reshape(bs * n, -1, h, w)
        deformed = F.grid_sample(rep, grids.reshape(bs * n, h, w, 2), align_corners=True).view(bs, n, -1, h, w)
        pred = self.hourglass(torch.cat([heat, deformed.reshape(bs, -1, h, w)], 1))
        logits = self.maps(pred[-1])
        if keep is None:
            maps = F.softmax(logits, dim=1)
        else:           # C:dense_motion.py dropout_softmax: a masked softmax, the background never dropped
            e = (logits - logits.amax(1, keepdim=True)).exp() * keep.to(logits.dtype).view(bs, n, 1, 1)
            maps = e / (e.sum(1, keepdim=True) + 1e-6)
        deformation = (grids.permute(0, 1, 4, 2, 3) * maps.unsqueeze(2)).sum(1).permute(0, 2, 3, 1)
        occ = [torch.sigmoid(self.occlusion[i](pred[self.up_nums - self.occlusion_num + i]))
               for i in range(self.occlusion_num - self.up_nums)]
        x = pred[-1]
        for i in range(self.up_nums):
            x = self.up[i](x)
            occ.append(torch.sigmoid(self.occlusion[i + self.occlusion_num - self.up_nums](x)))
        return {"contribution_maps": maps, "deformed_source": deformed, "deformation": deformation,
                "occlusion_map": occ}


class InpaintingNetwork(nn.Module):
    """Encoder features warped by the deformation and masked by the occlusion maps, decoded."""

    def __init__(self, num_channels, block_expansion, max_features, num_down_blocks, **_):
        super().__init__()
        self.first = SameBlock2d(num_channels, block_expansion, kernel_size=7, padding=3)
        down, up, res = [], [], []
        for i in range(num_down_blocks):
            cin = min(max_features, block_expansion * 2 ** i)
            cout = min(max_features, block_expansion * 2 ** (i + 1))
            down.append(DownBlock2d(cin, cout))
            dec_in = cout if i == num_down_blocks - 1 else cout * 2
            up.append(UpBlock2d(dec_in, cin))
            res += [ResBlock2d(dec_in), ResBlock2d(dec_in)]
        self.down_blocks = nn.ModuleList(down)
        self.up_blocks = nn.ModuleList(up[::-1])
        self.resblock = nn.ModuleList(res[::-1])
        self.final = nn.Conv2d(block_expansion, num_channels, 7, padding=3)
        self.num_down_blocks = num_down_blocks

    @staticmethod
    def deform(x, deformation):
        h, w = x.shape[2:]
        if deformation.shape[1:3] != (h, w):
            deformation = F.interpolate(deformation.permute(0, 3, 1, 2), size=(h, w), mode="bilinear",
                                        align_corners=True).permute(0, 2, 3, 1)
        return F.grid_sample(x, deformation, align_corners=True)

    @staticmethod
    def occlude(x, occ):
        if occ.shape[2:] != x.shape[2:]:
            occ = F.interpolate(occ, size=x.shape[2:], mode="bilinear", align_corners=True)
        return x * occ

    def forward(self, source, dense, warped_maps: bool = False):
        """warped_maps (training): also the warped, occluded encoder maps of the detached features
        (deepest first) that the warp loss compares with :meth:`get_encode` (spec §2.4)."""
        out = self.first(source)
        skips = [out]
        for block in self.down_blocks:
            out = block(out)
            skips.append(out)
        deformation, occ = dense["deformation"], dense["occlusion_map"]
        maps = [self.occlude(self.deform(out.detach(), deformation), occ[0].detach())] if warped_maps else None
        out = self.occlude(self.deform(out, deformation), occ[0])
        enc = out
        for i in range(self.num_down_blocks):
            out = self.up_blocks[i](self.resblock[2 * i + 1](self.resblock[2 * i](out)))
            skip = skips[-(i + 2)]
            enc = self.occlude(self.deform(skip, deformation), occ[i + 1])
            if warped_maps:
                maps.append(self.occlude(self.deform(skip.detach(), deformation), occ[i + 1].detach()))
            if i == self.num_down_blocks - 1:
                break
            out = torch.cat([out, enc], 1)
        warped = self.deform(source, deformation)
        last = occ[-1]
        out = torch.sigmoid(self.final(out * (1 - last) + enc))
        result = {"prediction": out * (1 - last) + warped * last, "deformed": warped}
        if warped_maps:
            result["warped_encoder_maps"] = maps
        return result

    @torch.no_grad()
    def get_encode(self, driving, occ):
        """The driving frame's encoder maps (shallowest first), each masked by the occlusion map of
        its resolution: the warp loss's targets (no gradient)."""
        out = self.first(driving)
        maps = [self.occlude(out, occ[-1])]
        for i, block in enumerate(self.down_blocks):
            out = block(out)
            maps.append(self.occlude(out, occ[self.num_down_blocks - 1 - i]))
        return maps
