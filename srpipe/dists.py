"""DISTS (Ding et al., 2020: structure and texture similarity of VGG16 features), between uint8
RGB images, as the authors' ``DISTS_pytorch`` 0.1 computes it (0: the same image; lower is closer).

The image and five VGG16 stages (relu1_2, relu2_2, relu3_3, relu4_3, relu5_3; the max-pools
replaced by an L2 pooling over a 3x3 Hann window) are compared channel by channel: the
similarity of their spatial means ("texture") and of their covariance ("structure"), weighted by
the authors' learnt alpha and beta, which ship in the ``dists-pytorch`` package (read as tensors,
never unpickled). The backbone comes from :func:`srpipe.vgg.vgg16_features`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .io import SrpipeError
from .metrics import cropped_pair
from .vgg import IMAGENET_MEAN, IMAGENET_STD

STAGE_ENDS = (4, 9, 16, 23, 30)  # VGG16 features: the max-pools at 4, 9, 16, 23 end a stage
CHANNELS = (3, 64, 128, 256, 512, 512)  # the image, then each stage's output


def dists_weights() -> tuple:
    """(alpha, beta) of the authors' package: 1 x 1475 x 1 x 1 each."""
    import importlib.resources

    import torch

    try:
        path = importlib.resources.files("DISTS_pytorch") / "weights.pt"
        with importlib.resources.as_file(path) as local:
            weights = torch.load(local, map_location="cpu", weights_only=True)
    except (ModuleNotFoundError, FileNotFoundError):
        raise SrpipeError("DISTS: its alpha/beta weights come with the dists-pytorch package, which is not "
                          "installed; pip install dists-pytorch==0.1, or set eval.dists=false") from None
    return weights["alpha"], weights["beta"]


class DISTS:
    """DISTS distance between uint8 RGB images (``backbone``: a local VGG16 file, see srpipe.vgg)."""

    def __init__(self, backbone: str | Path | None = None, device: str = "cpu"):
        import torch

        from .vgg import vgg16_features

        features = vgg16_features(backbone, why="DISTS").to(device)
        starts = (0, *(end + 1 for end in STAGE_ENDS[:-1]))
        self.stages = [features[start:end] for start, end in zip(starts, STAGE_ENDS)]
        self.pools = [self._hann(c).to(device) for c in CHANNELS[1:-1]]
        alpha, beta = dists_weights()
        total = alpha.sum() + beta.sum()
        self.alpha = [a.to(device) for a in torch.split(alpha / total, CHANNELS, dim=1)]
        self.beta = [b.to(device) for b in torch.split(beta / total, CHANNELS, dim=1)]
        self.mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
        self.device = device

    @staticmethod
    def _hann(channels: int):
        """The L2 pooling's kernel: the outer product of a 3-tap Hann window, normalised, per channel."""
        import torch

        window = torch.tensor(np.hanning(5)[1:-1], dtype=torch.float32)
        kernel = window[:, None] * window[None, :]
        return (kernel / kernel.sum()).expand(channels, 1, 3, 3).contiguous()

    def features(self, x) -> list:
        """The image and the five stages' outputs; each stage after the first starts with L2 pooling."""
        import torch.nn.functional as F

        out, h = [x], (x - self.mean) / self.std
        for i, stage in enumerate(self.stages):
            if i:
                kernel = self.pools[i - 1]
                h = (F.conv2d(h * h, kernel, stride=2, padding=1, groups=h.shape[1]) + 1e-12).sqrt()
            h = stage(h)
            out.append(h)
        return out

    def distance(self, x, y):
        """DISTS of two N x 3 x H x W tensors in [0, 1]: one value per image."""
        c1 = c2 = 1e-6
        texture = structure = 0
        for fx, fy, a, b in zip(self.features(x), self.features(y), self.alpha, self.beta):
            mx, my = fx.mean([2, 3], keepdim=True), fy.mean([2, 3], keepdim=True)
            vx, vy = ((fx - mx) ** 2).mean([2, 3], keepdim=True), ((fy - my) ** 2).mean([2, 3], keepdim=True)
            cov = (fx * fy).mean([2, 3], keepdim=True) - mx * my
            texture = texture + (a * (2 * mx * my + c1) / (mx**2 + my**2 + c1)).sum(1)
            structure = structure + (b * (2 * cov + c2) / (vx + vy + c2)).sum(1)
        return 1 - (texture + structure).flatten()

    def to_tensor(self, img: np.ndarray):
        import torch

        return (torch.from_numpy(img.astype(np.float32) / 255.0).permute(2, 0, 1)[None]).to(self.device)

    def __call__(self, sr: np.ndarray, hr: np.ndarray, crop_border: int = 0) -> float:
        import torch

        sr, hr = cropped_pair(sr, hr, crop_border)
        with torch.no_grad():
            return float(self.distance(self.to_tensor(sr), self.to_tensor(hr)).item())
