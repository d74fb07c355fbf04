"""Building blocks shared by the SR architectures, named after the papers (EDSR, RCAN, RLFN)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def default_conv(in_channels: int, out_channels: int, kernel_size: int = 3, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias)


class CALayer(nn.Module):
    """Channel attention (RCAN): global average pool, squeeze, excite, rescale the channels."""

    def __init__(self, n_feats: int, reduction: int = 16):
        super().__init__()
        squeezed = max(1, n_feats // reduction)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.body = nn.Sequential(
            nn.Conv2d(n_feats, squeezed, 1), nn.ReLU(inplace=True), nn.Conv2d(squeezed, n_feats, 1), nn.Sigmoid()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.body(self.pool(x))


class ResBlock(nn.Module):
    """EDSR residual block: conv-ReLU-conv, no batch norm, scaled residual. With ``attention``
    a channel-attention layer before the skip makes it RCAN's residual channel attention block (RCAB)."""

    def __init__(self, n_feats: int, res_scale: float = 1.0, attention: bool = False, reduction: int = 16):
        super().__init__()
        layers = [default_conv(n_feats, n_feats), nn.ReLU(inplace=True), default_conv(n_feats, n_feats)]
        if attention:
            layers.append(CALayer(n_feats, reduction))
        self.body = nn.Sequential(*layers)
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) * self.res_scale


def zero_init_residual(model: nn.Module) -> int:
    """SkipInit (De and Smith, 2020): zero the last convolution of every :class:`ResBlock`'s
    branch, so that each block starts as the identity and the network as its head, tail and
    skips. Returns the number of blocks changed (0 for a network without them, such as RLFN)."""
    blocks = [m for m in model.modules() if isinstance(m, ResBlock)]
    with torch.no_grad():
        for block in blocks:
            last = block.body[2]  # conv, ReLU, conv[, channel attention]
            last.weight.zero_()
            last.bias.zero_()
    return len(blocks)


class Upsampler(nn.Sequential):
    """Sub-pixel convolution (PixelShuffle) upsampling: x2, x3, and powers of two as repeated x2."""

    def __init__(self, scale: int, n_feats: int):
        layers: list[nn.Module] = []
        if scale == 3:
            layers += [default_conv(n_feats, 9 * n_feats), nn.PixelShuffle(3)]
        elif scale >= 2 and scale & (scale - 1) == 0:
            for _ in range(int(math.log2(scale))):
                layers += [default_conv(n_feats, 4 * n_feats), nn.PixelShuffle(2)]
        else:
            raise ValueError(f"unsupported scale {scale}; use 2, 3, 4 or 8")
        super().__init__(*layers)


class SRNet(nn.Module):
    """The shape every residual SR network here shares: ``head`` (conv to features) -> ``body``
    (with a long feature-space skip) -> ``tail`` (upsampler, conv back to colours), all in LR
    space until the tail. With ``global_skip='bicubic'`` the bicubic-upscaled input is added to
    the output, so the network learns only the high-frequency residual.

    ``rgb_mean`` and ``img_range`` give the input and output mean shift of EDSR and BasicSR:
    the network sees ``(x - rgb_mean) * img_range`` and its output is mapped back by
    ``/ img_range + rgb_mean`` (before any bicubic skip). The default (no mean, range 1) adds no
    operation at all. The input shift cannot be folded into the first convolution exactly: the
    convolution zero-pads the shifted image, i.e. pads ``x`` with the mean, so it is an
    operation of its own (kept as a non-persistent buffer: its value lives in the architecture
    kwargs, not in the state dict)."""

    def __init__(
        self,
        scale: int,
        n_feats: int,
        body: nn.Module,
        global_skip: str = "bicubic",
        n_colors: int = 3,
        rgb_mean: tuple[float, ...] | None = None,
        img_range: float = 1.0,
    ):
        super().__init__()
        if global_skip not in ("bicubic", "none"):
            raise ValueError(f"global_skip must be 'bicubic' or 'none', got {global_skip!r}")
        if rgb_mean is not None and len(rgb_mean) != n_colors:
            raise ValueError(f"rgb_mean needs {n_colors} values, got {len(rgb_mean)}")
        self.scale = scale
        self.global_skip = global_skip
        self.shifted = rgb_mean is not None or img_range != 1.0
        self.img_range = float(img_range)
        self.register_buffer("rgb_mean", torch.tensor(rgb_mean or [0.0] * n_colors).view(1, -1, 1, 1), persistent=False)
        self.head = default_conv(n_colors, n_feats)
        self.body = body
        self.tail = nn.Sequential(Upsampler(scale, n_feats), default_conv(n_feats, n_colors))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inp = (x - self.rgb_mean) * self.img_range if self.shifted else x
        feats = self.head(inp)
        out = self.tail(self.body(feats) + feats)
        if self.shifted:
            out = out / self.img_range + self.rgb_mean
        if self.global_skip == "bicubic":
            out = out + F.interpolate(x, scale_factor=self.scale, mode="bicubic", align_corners=False)
        return out


class ESA(nn.Module):
    """Enhanced spatial attention (RFANet, Liu et al. 2020; as RLFN uses it): squeeze the
    features to ``esa_channels``, look at a strided, max-pooled view of them (a wide receptive
    field at a fraction of the cost), upsample the map back and gate every pixel with a sigmoid.

    The strided convolution and the pooling are padded, so any input size works (the paper's
    unpadded ones need 17 LR pixels or more: a thin tile or a tiny image would fail)."""

    def __init__(self, n_feats: int, esa_channels: int = 16):
        super().__init__()
        f = esa_channels
        self.squeeze = nn.Conv2d(n_feats, f, 1)
        self.skip = nn.Conv2d(f, f, 1)
        self.down = nn.Conv2d(f, f, 3, stride=2, padding=1)
        self.pool = nn.MaxPool2d(7, stride=3, padding=3)
        self.conv = default_conv(f, f)
        self.expand = nn.Conv2d(f, n_feats, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        squeezed = self.squeeze(x)
        coarse = self.conv(self.pool(self.down(squeezed)))
        coarse = F.interpolate(coarse, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return x * torch.sigmoid(self.expand(coarse + self.skip(squeezed)))


class RLFB(nn.Module):
    """Residual local feature block (RLFN, Kong et al. 2022): three conv-LeakyReLU layers with a
    skip around them, a 1x1 convolution, then enhanced spatial attention. It drops the feature
    distillation branches of RFDN, which cost memory traffic more than multiply-adds."""

    def __init__(self, n_feats: int, esa_channels: int = 16):
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(3):
            layers += [default_conv(n_feats, n_feats), nn.LeakyReLU(0.05, inplace=True)]
        self.body = nn.Sequential(*layers)
        self.fuse = nn.Conv2d(n_feats, n_feats, 1)
        self.esa = ESA(n_feats, esa_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.esa(self.fuse(x + self.body(x)))
