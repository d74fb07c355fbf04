"""EDSR (Lim et al., 2017): residual blocks without batch norm, upsampling only at the end.

With ``attention`` every block gets RCAN-style channel attention.
"""

from __future__ import annotations

from torch import nn

from .common import ResBlock, SRNet, default_conv


class EDSR(SRNet):
    def __init__(
        self,
        scale: int,
        n_resblocks: int = 16,
        n_feats: int = 64,
        res_scale: float = 1.0,
        attention: bool = False,
        reduction: int = 16,
        global_skip: str = "bicubic",
        rgb_mean: tuple[float, ...] | None = None,
        img_range: float = 1.0,
    ):
        body = nn.Sequential(
            *[ResBlock(n_feats, res_scale, attention, reduction) for _ in range(n_resblocks)],
            default_conv(n_feats, n_feats),
        )
        super().__init__(scale, n_feats, body, global_skip, rgb_mean=rgb_mean, img_range=img_range)
