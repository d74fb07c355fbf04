"""LR images from HR images: the clean bicubic protocol or a realistic chain.

``realistic`` applies, in ``order`` (default blur, resize, noise, jpeg), a Gaussian blur, the
MATLAB-style bicubic downscale, additive Gaussian noise and a JPEG round trip, each with its
own probability and a parameter drawn from a range. Every draw is deterministic from
``(seed, image name)``, so the same seed gives byte-identical LR images on any machine.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass
from typing import Optional

import cv2
import numpy as np

from .config import DegradationParams
from .imresize import imresize, round_uint8


@dataclass(frozen=True)
class Draw:
    """What was applied to one image; None where a step was skipped."""

    blur_sigma: Optional[float] = None
    noise_sigma: Optional[float] = None
    jpeg_quality: Optional[int] = None

    def as_row(self) -> dict:
        return asdict(self)


def image_rng(seed: int, name: str) -> np.random.Generator:
    """A generator seeded by (seed, name) alone: independent of image order and platform."""
    digest = hashlib.sha256(f"{seed}/{name}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def draw(cfg: DegradationParams, rng: np.random.Generator) -> Draw:
    """Draw every step's parameter (always in the same sequence, whatever the order of steps)."""
    use_blur, use_noise, use_jpeg = (rng.random() < p for p in (cfg.blur_prob, cfg.noise_prob, cfg.jpeg_prob))
    blur = float(rng.uniform(*cfg.blur_sigma))
    noise = float(rng.uniform(*cfg.noise_sigma))
    quality = int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1))
    return Draw(
        blur_sigma=round(blur, 6) if use_blur else None,
        noise_sigma=round(noise, 6) if use_noise else None,
        jpeg_quality=quality if use_jpeg else None,
    )


def gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Isotropic Gaussian blur (kernel +-3 sigma, reflected borders) of a float image."""
    size = 2 * math.ceil(3 * sigma) + 1
    return cv2.GaussianBlur(img, (size, size), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)


def add_noise(img: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Additive white Gaussian noise; ``sigma`` in 8-bit grey levels."""
    return img + rng.normal(0.0, sigma, img.shape)


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    """JPEG round trip (OpenCV/libjpeg, 4:2:0) of an RGB image at ``quality``; returns float."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(round_uint8(img), cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB).astype(np.float64)


def degrade(
    hr: np.ndarray, scale: int, cfg: DegradationParams | None = None, seed: int = 0, name: str = ""
) -> tuple[np.ndarray, Draw]:
    """LR version of a uint8 HR image whose sides are multiples of ``scale``, and what was drawn.

    ``cfg`` None or ``kind: bicubic`` is the clean protocol: LR = imresize(HR, 1/scale).
    """
    if cfg is None or cfg.kind == "bicubic":
        return imresize(hr, 1.0 / scale), Draw()
    rng = image_rng(seed, name)
    d = draw(cfg, rng)
    img = hr.astype(np.float64)
    for step in cfg.order:
        if step == "blur" and d.blur_sigma:
            img = gaussian_blur(img, d.blur_sigma)
        elif step == "resize":
            img = imresize(img, 1.0 / scale)
        elif step == "noise" and d.noise_sigma:
            img = add_noise(img, d.noise_sigma, rng)
        elif step == "jpeg" and d.jpeg_quality is not None:
            img = jpeg(img, d.jpeg_quality)
    return round_uint8(img), d
