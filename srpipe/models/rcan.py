"""RCAN (Zhang et al., 2018): residual groups of residual channel attention blocks (RCABs)."""

from __future__ import annotations

import torch
from torch import nn

from .common import ResBlock, SRNet, default_conv


class ResidualGroup(nn.Module):
    """``n_resblocks`` RCABs and a conv, with a short skip around them."""

    def __init__(self, n_feats: int, n_resblocks: int, reduction: int, res_scale: float):
        super().__init__()
        self.body = nn.Sequential(
            *[ResBlock(n_feats, res_scale, attention=True, reduction=reduction) for _ in range(n_resblocks)],
            default_conv(n_feats, n_feats),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class RCAN(SRNet):
    def __init__(
        self,
        scale: int,
        n_resgroups: int = 10,
        n_resblocks: int = 20,
        n_feats: int = 64,
        reduction: int = 16,
        res_scale: float = 1.0,
        global_skip: str = "bicubic",
        rgb_mean: tuple[float, ...] | None = None,
        img_range: float = 1.0,
    ):
        body = nn.Sequential(
            *[ResidualGroup(n_feats, n_resblocks, reduction, res_scale) for _ in range(n_resgroups)],
            default_conv(n_feats, n_feats),
        )
        super().__init__(scale, n_feats, body, global_skip, rgb_mean=rgb_mean, img_range=img_range)
