"""EDSR (Lim et al., 2017): residual blocks without batch norm, upsampling only at the end.

With ``attention`` every block gets RCAN-style channel attention. With ``global_skip='bicubic'``
the bicubic-upscaled input is added to the output, so the network learns only the residual.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import ResBlock, Upsampler, default_conv


class EDSR(nn.Module):
    def __init__(
        self,
        scale: int,
        n_resblocks: int = 16,
        n_feats: int = 64,
        res_scale: float = 1.0,
        attention: bool = False,
        reduction: int = 16,
        global_skip: str = "bicubic",
        n_colors: int = 3,
    ):
        super().__init__()
        if global_skip not in ("bicubic", "none"):
            raise ValueError(f"global_skip must be 'bicubic' or 'none', got {global_skip!r}")
        self.scale = scale
        self.global_skip = global_skip
        self.head = default_conv(n_colors, n_feats)
        self.body = nn.Sequential(
            *[ResBlock(n_feats, res_scale, attention, reduction) for _ in range(n_resblocks)],
            default_conv(n_feats, n_feats),
        )
        self.tail = nn.Sequential(Upsampler(scale, n_feats), default_conv(n_feats, n_colors))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.head(x)
        out = self.tail(self.body(feats) + feats)
        if self.global_skip == "bicubic":
            out = out + F.interpolate(x, scale_factor=self.scale, mode="bicubic", align_corners=False)
        return out
