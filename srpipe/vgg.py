"""ImageNet VGG16's convolutions, the backbone of DISTS (and of VGG perceptual losses), from a
local file or, without one, from torchvision's download.

The file is torchvision's ``vgg16().features`` state dict (``features.0.weight`` ... ``features.28.bias``),
read with ``torch.load(weights_only=True)``: air-gapped machines name it with a param or
``SRPIPE_VGG16_BACKBONE`` (docs/evaluation.md: 'LPIPS without internet'), as they do LPIPS's AlexNet.
"""

from __future__ import annotations

import os
from pathlib import Path

from .io import SrpipeError

VGG16_ENV = "SRPIPE_VGG16_BACKBONE"
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # VGG16's input normalisation
# torchvision's vgg16().features: the index of each convolution (its output is the layer's pre-ReLU feature)
VGG16_CONVS = {"conv1_1": 0, "conv1_2": 2, "conv2_1": 5, "conv2_2": 7, "conv3_1": 10, "conv3_2": 12, "conv3_3": 14,
               "conv4_1": 17, "conv4_2": 19, "conv4_3": 21, "conv5_1": 24, "conv5_2": 26, "conv5_3": 28}
VGG16_FIX = (f"give a local VGG16 file (torchvision's vgg16().features state dict) with eval.vgg16_backbone or "
             f"{VGG16_ENV}")


def vgg16_features(backbone: str | Path | None = None, why: str = "DISTS"):
    """``torchvision.models.vgg16().features`` with ImageNet weights, in eval mode, frozen:
    from ``backbone``, else ``$SRPIPE_VGG16_BACKBONE``, else torchvision's download. ``why`` names
    the user in errors (and the param that turns it off)."""
    import torchvision

    backbone = backbone or os.environ.get(VGG16_ENV) or None
    if backbone is None:
        try:
            features = torchvision.models.vgg16(weights="IMAGENET1K_V1").features
        except (OSError, RuntimeError) as exc:  # urllib's URLError is an OSError
            raise SrpipeError(f"{why}: its VGG16 backbone could not be downloaded ({getattr(exc, 'reason', exc)}); "
                              f"{VGG16_FIX}") from None
    else:
        features = torchvision.models.vgg16(weights=None).features
        features.load_state_dict(_read(Path(backbone), features.state_dict(), why))
    for p in features.parameters():
        p.requires_grad_(False)
    return features.eval()


def _read(path: Path, expected: dict, why: str) -> dict:
    """The ``features.N.*`` tensors of ``path`` under ``features``' own names, checked."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001: torch.load raises pickle's, zipfile's and its own errors
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not a PyTorch weights file"
        raise SrpipeError(f"{why}: cannot load the VGG16 backbone {path} ({reason}); {VGG16_FIX}") from None
    state = {k.removeprefix("features."): v for k, v in state.items()} if isinstance(state, dict) else {}
    missing = sorted(set(expected) - set(state), key=_order)
    wrong = [k for k in sorted(set(expected) - set(missing), key=_order)
             if tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or wrong:
        what = f"lacks {_few(missing, len(expected))}" if missing else f"has other shapes for {_few(wrong, len(expected))}"
        raise SrpipeError(f"{why}: the VGG16 backbone {path} is not VGG16's features: it {what}; {VGG16_FIX}")
    return {k: state[k].float() for k in expected}


def _few(keys: list[str], total: int) -> str:
    """Up to four tensor names, and how many of ``total`` there are in all."""
    shown = ", ".join(f"features.{k}" for k in keys[:4])
    return shown if len(keys) <= 4 else f"{shown}, ... ({len(keys)} of its {total} tensors)"


def _order(key: str) -> tuple[int, str]:
    index, _, rest = key.partition(".")
    return int(index), rest
