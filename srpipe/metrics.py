"""The evaluation protocol of the SR literature, in one place.

An image under test is rounded to uint8, converted to the BT.601 Y channel (16-235 range),
``crop_border`` pixels are removed at each border, then PSNR (peak 255) and SSIM (11x11
Gaussian window, sigma 1.5, K1 0.01, K2 0.03, as in Wang et al. 2004) are computed. LPIPS
(AlexNet, v0.1) is computed on the RGB images with the same crop, scaled to [-1, 1].
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from .io import SrpipeError

BACKBONE_ENV = "SRPIPE_LPIPS_BACKBONE"
SSIM_WINDOW = 11  # the side of SSIM's Gaussian window (sigma 1.5, cut at 3.5 sigma)


def min_side(crop_border: int) -> int:
    """The smallest HR side the protocol can score: SSIM's window plus the border cropped at each side."""
    return SSIM_WINDOW + 2 * crop_border


BT601_Y = (65.481, 128.553, 24.966)  # MATLAB rgb2ycbcr's Y weights of R, G, B (8-bit range)
BT601_CBCR = ((-37.797, -74.203, 112.0), (112.0, -93.786, -18.214))  # its Cb and Cr weights


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """BT.601 luma of a uint8 RGB image, as float64 in [16, 235] (MATLAB ``rgb2ycbcr``'s Y, unrounded)."""
    rgb = img.astype(np.float64)
    r, g, b = BT601_Y
    return 16.0 + (r * rgb[..., 0] + g * rgb[..., 1] + b * rgb[..., 2]) / 255.0


def _prepare(img: np.ndarray, crop_border: int, y_channel: bool) -> np.ndarray:
    if img.dtype != np.uint8:
        raise TypeError(f"metrics expect uint8 images, got {img.dtype}")
    out = rgb_to_y(img) if y_channel else img.astype(np.float64)
    if crop_border:
        out = out[crop_border:-crop_border, crop_border:-crop_border]
    return out


def _check_pair(sr: np.ndarray, hr: np.ndarray) -> None:
    if sr.shape != hr.shape:
        raise ValueError(f"image shapes differ: {sr.shape} vs {hr.shape}")


def cropped_pair(sr: np.ndarray, hr: np.ndarray, crop_border: int) -> tuple[np.ndarray, np.ndarray]:
    """The two RGB images of one shape, ``crop_border`` pixels removed at each border (the
    perceptual metrics' input)."""
    _check_pair(sr, hr)
    if not crop_border:
        return sr, hr
    inner = (slice(crop_border, -crop_border), slice(crop_border, -crop_border))
    return sr[inner], hr[inner]


def psnr(sr: np.ndarray, hr: np.ndarray, crop_border: int = 0, y_channel: bool = True) -> float:
    _check_pair(sr, hr)
    a, b = _prepare(sr, crop_border, y_channel), _prepare(hr, crop_border, y_channel)
    if np.array_equal(a, b):
        return float("inf")
    return float(peak_signal_noise_ratio(b, a, data_range=255.0))


def ssim(sr: np.ndarray, hr: np.ndarray, crop_border: int = 0, y_channel: bool = True) -> float:
    _check_pair(sr, hr)
    a, b = _prepare(sr, crop_border, y_channel), _prepare(hr, crop_border, y_channel)
    return float(
        structural_similarity(
            a, b, data_range=255.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
            K1=0.01, K2=0.03, channel_axis=None if a.ndim == 2 else 2,
        )
    )


BACKBONE_FIX = (f"give a local AlexNet file with eval.lpips_backbone or {BACKBONE_ENV} (docs/evaluation.md: 'LPIPS without "
                "internet'), or turn LPIPS off with eval.lpips=false")


def load_lpips_backbone(model, backbone: str | Path) -> None:
    """Load torchvision-style ``features.N.*`` AlexNet weights into an ``lpips.LPIPS`` model."""
    import torch

    path = Path(backbone)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001: torch.load raises pickle's, zipfile's and its own errors
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not a PyTorch weights file"
        raise SrpipeError(f"cannot load the LPIPS backbone {path} ({why}); {BACKBONE_FIX}") from None
    target = {}
    for name in ("slice1", "slice2", "slice3", "slice4", "slice5"):
        for key, value in getattr(model.net, name).state_dict().items():
            target[f"features.{key}"] = (name, key, value)
    missing = sorted(set(target) - set(state)) if isinstance(state, dict) else sorted(target)
    wrong = [k for k in sorted(set(target) - set(missing)) if tuple(state[k].shape) != tuple(target[k][2].shape)]
    if missing or wrong:
        what = f"lacks {', '.join(missing)}" if missing else f"has other shapes for {', '.join(wrong)}"
        raise SrpipeError(f"the LPIPS backbone {path} is not AlexNet's features: it {what}; {BACKBONE_FIX}")
    with torch.no_grad():
        for full_key, (name, key, value) in target.items():
            getattr(model.net, name).state_dict()[key].copy_(state[full_key])


def _lpips_model(pretrained_backbone: bool):
    """lpips's AlexNet v0.1; without a local backbone, torchvision downloads AlexNet's weights."""
    import warnings

    import lpips

    try:
        with warnings.catch_warnings():  # torchvision's deprecation notice about lpips's `pretrained=` call
            warnings.simplefilter("ignore", UserWarning)
            return lpips.LPIPS(net="alex", version="0.1", pnet_rand=not pretrained_backbone, verbose=False)
    except (OSError, RuntimeError) as exc:  # urllib's URLError is an OSError
        raise SrpipeError(f"LPIPS: its AlexNet backbone could not be downloaded ({getattr(exc, 'reason', exc)}); "
                          f"{BACKBONE_FIX}") from None


class LPIPS:
    """LPIPS distance (lpips package, AlexNet v0.1) between uint8 RGB images.

    ``backbone`` is a local AlexNet-features file for air-gapped machines; when it is None the
    ``SRPIPE_LPIPS_BACKBONE`` environment variable is used, else torchvision downloads it.
    """

    def __init__(self, backbone: str | Path | None = None, device: str = "cpu"):
        backbone = backbone or os.environ.get(BACKBONE_ENV) or None
        self.model = _lpips_model(pretrained_backbone=backbone is None)
        if backbone is not None:
            load_lpips_backbone(self.model, backbone)
        self.model.eval().to(device)
        self.device = device

    def to_tensor(self, img: np.ndarray):
        import torch

        t = torch.from_numpy(img.astype(np.float32) / 127.5 - 1.0).permute(2, 0, 1)[None]
        return t.to(self.device)

    def __call__(self, sr: np.ndarray, hr: np.ndarray, crop_border: int = 0) -> float:
        import torch

        sr, hr = cropped_pair(sr, hr, crop_border)
        with torch.no_grad():
            return float(self.model(self.to_tensor(sr), self.to_tensor(hr)).item())


def perceptual_scorers(lpips: bool, dists: bool, lpips_backbone: str | Path | None = None,
                       vgg16_backbone: str | Path | None = None, device: str = "cpu") -> dict:
    """The perceptual metrics turned on, by name, for :func:`srpipe.evaluate.evaluate`: LPIPS
    (AlexNet) and DISTS (VGG16), each from its local backbone file (or its environment variable,
    or a download). The one place evaluate, export-onnx and the trainer's validation build them."""
    from .dists import DISTS

    return {**({"lpips": LPIPS(lpips_backbone, device)} if lpips else {}),
            **({"dists": DISTS(vgg16_backbone, device)} if dists else {})}
