"""Discriminators for GAN training: the architectures only (training is srpipe.training.adversarial).

Both score RGB images in [0, 1] with a logit map (real > 0 > fake) and hold their convolutions'
scale with spectral norm (Miyato et al. 2018), whose power-iteration vectors are buffers of the
state dict, so a resumed run continues them exactly.

- ``unet_sn``: Real-ESRGAN's U-Net discriminator (Wang et al. 2021, sec. 3.3): three strided
  downsamplings, three bilinear upsamplings with skip connections, a logit per pixel, so it
  judges local texture and global structure at once. Input sides must be multiples of 8.
- ``patchgan_sn``: pix2pix's 70 x 70 PatchGAN (Isola et al. 2017) with spectral norm in place of
  batch norm: a logit per overlapping patch, about a third of the U-Net's work.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

SLOPE = 0.2  # leaky ReLU's negative slope, as in both papers


def _sn_conv(c_in: int, c_out: int, kernel: int, stride: int = 1, bias: bool = False) -> nn.Module:
    return spectral_norm(nn.Conv2d(c_in, c_out, kernel, stride, padding=1, bias=bias))


class UNetDiscriminatorSN(nn.Module):
    """U-Net discriminator with spectral norm; ``features`` channels at full resolution."""

    def __init__(self, in_channels: int = 3, features: int = 64):
        super().__init__()
        f = features
        self.head = nn.Conv2d(in_channels, f, 3, padding=1)
        self.down = nn.ModuleList([_sn_conv(f, 2 * f, 4, 2), _sn_conv(2 * f, 4 * f, 4, 2), _sn_conv(4 * f, 8 * f, 4, 2)])
        self.up = nn.ModuleList([_sn_conv(8 * f, 4 * f, 3), _sn_conv(4 * f, 2 * f, 3), _sn_conv(2 * f, f, 3)])
        self.refine = nn.ModuleList([_sn_conv(f, f, 3), _sn_conv(f, f, 3)])
        self.logit = nn.Conv2d(f, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [F.leaky_relu(self.head(x), SLOPE)]
        for conv in self.down:
            skips.append(F.leaky_relu(conv(skips[-1]), SLOPE))
        y = skips.pop()
        for conv in self.up:
            y = F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False)
            y = F.leaky_relu(conv(y), SLOPE) + skips.pop()
        for conv in self.refine:
            y = F.leaky_relu(conv(y), SLOPE)
        return self.logit(y)


class PatchDiscriminatorSN(nn.Module):
    """PatchGAN (three strided layers, receptive field 70 pixels) with spectral norm."""

    def __init__(self, in_channels: int = 3, features: int = 64):
        super().__init__()
        f = features
        self.layers = nn.Sequential(
            nn.Conv2d(in_channels, f, 4, 2, padding=1), nn.LeakyReLU(SLOPE),
            _sn_conv(f, 2 * f, 4, 2), nn.LeakyReLU(SLOPE),
            _sn_conv(2 * f, 4 * f, 4, 2), nn.LeakyReLU(SLOPE),
            _sn_conv(4 * f, 8 * f, 4, 1), nn.LeakyReLU(SLOPE),
            nn.Conv2d(8 * f, 1, 4, 1, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


DISCRIMINATORS: dict[str, type[nn.Module]] = {"unet_sn": UNetDiscriminatorSN, "patchgan_sn": PatchDiscriminatorSN}
MULTIPLE_OF = {"unet_sn": 8, "patchgan_sn": 1}  # the input side each needs
