"""RLFN (Kong et al., 2022): residual local feature blocks (three convolutions and enhanced
spatial attention each), the NTIRE 2022 efficient-SR winner's design, in srpipe's residual
shell (long feature skip, PixelShuffle at the end, optional bicubic skip)."""

from __future__ import annotations

from torch import nn

from .common import RLFB, SRNet, default_conv


class RLFN(SRNet):
    def __init__(
        self,
        scale: int,
        n_resblocks: int = 6,
        n_feats: int = 48,
        esa_channels: int = 16,
        global_skip: str = "bicubic",
        rgb_mean: tuple[float, ...] | None = None,
        img_range: float = 1.0,
    ):
        body = nn.Sequential(*[RLFB(n_feats, esa_channels) for _ in range(n_resblocks)], default_conv(n_feats, n_feats))
        super().__init__(scale, n_feats, body, global_skip, rgb_mean=rgb_mean, img_range=img_range)
