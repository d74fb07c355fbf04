"""The perceptual loss: L1 between VGG16 features of the output and of the HR image.

Real-ESRGAN's recipe (L1 on five pre-ReLU layers weighted 0.1, 0.1, 1, 1, 1, on ImageNet-normalised
input) on VGG16, the backbone srpipe has locally, mapped onto its conv1_2, conv2_2, conv3_3,
conv4_3 and conv5_3 (``train.perceptual_layers``). VGG16 comes from :func:`srpipe.vgg.vgg16_features`.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..vgg import IMAGENET_MEAN, IMAGENET_STD, VGG16_CONVS, vgg16_features


class PerceptualLoss(nn.Module):
    """sum over ``layers`` (name -> weight) of weight x mean |VGG16(pred) - VGG16(target)| at that
    layer, before its ReLU; images in [0, 1], RGB. The target's features carry no gradient."""

    def __init__(self, layers: dict[str, float], backbone: str | Path | None = None):
        super().__init__()
        features = vgg16_features(backbone, why="train.perceptual_weight")
        for module in features:
            if isinstance(module, nn.ReLU):
                module.inplace = False  # the pre-ReLU feature a loss term holds must stay as it was
        self.taps = {VGG16_CONVS[name]: weight for name, weight in layers.items()}
        self.features = features[: max(self.taps) + 1]
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        x, y = (pred - self.mean) / self.std, (target - self.mean) / self.std
        total = pred.new_zeros(())
        for index, layer in enumerate(self.features):
            x = layer(x)
            with torch.no_grad():
                y = layer(y)
            if index in self.taps:
                total = total + self.taps[index] * F.l1_loss(x.float(), y.float())
        return total


class WeightedLoss:
    """``pixel_weight`` x the pixel loss + ``perceptual_weight`` x the perceptual loss; ``terms``
    holds the last call's weighted terms (for the logs)."""

    def __init__(self, pixel, pixel_weight: float, perceptual: PerceptualLoss | None, perceptual_weight: float):
        self.pixel, self.pixel_weight = pixel, pixel_weight
        self.perceptual, self.perceptual_weight = perceptual, perceptual_weight
        self.terms: dict[str, float] = {}

    def __call__(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pixel = self.pixel_weight * self.pixel(pred, target)
        terms = {"pixel": pixel}
        if self.perceptual is not None:
            terms["perceptual"] = self.perceptual_weight * self.perceptual(pred, target)
        self.terms = {name: float(term.detach()) for name, term in terms.items()}
        return sum(terms.values())
