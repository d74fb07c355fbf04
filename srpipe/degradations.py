"""LR images from HR images: the clean bicubic protocol or a realistic chain.

``realistic`` applies, in ``order`` (default blur, resize, noise, jpeg), a Gaussian blur, the
MATLAB-style bicubic downscale, additive Gaussian noise and a JPEG round trip, each with its
own probability and a parameter drawn from a range.

``passes: 2`` is Real-ESRGAN's second-order model: the chain runs twice. In the first pass the
``resize`` step scales by a random factor from ``resize_range`` with a random mode from
``resize_modes`` (area, bilinear, bicubic); in the second pass, drawn from the ranges of
``second``, the ``resize`` step lands on the LR size (HR / scale) with a random mode. With the
defaults: pass 1 blur sigma 0.8-1.2, resize x0.5-1.5, noise 0-10, JPEG 85; pass 2 blur sigma
0.2-1.5 (probability 0.8), noise 1-25, JPEG 30-95.

Where the draws come from: ``prepare-degradations`` draws once per image from (seed, image name)
(:func:`degrade`), so the same seed gives byte-identical LR images on any machine; on-the-fly
degradation in training (:class:`CropDegrader`) draws anew for every crop from (seed, epoch,
row of the epoch's plan), i.e. (seed, iteration, sample), so a resumed run is still exact. The
work is done on NumPy float64 arrays with OpenCV (blur, JPEG, the random resizes) and srpipe's
sparse MATLAB resize, in the DataLoader's workers: a 96 px crop takes well under a millisecond
per step, far below a training step, and no GPU memory or time is taken from the model.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass
from typing import Callable, Optional

import cv2
import numpy as np

from .config import DegradationParams
from .imresize import imresize, round_uint8

RESIZE_MODES = {"area": cv2.INTER_AREA, "bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC}


@dataclass(frozen=True)
class Draw:
    """What was applied in one pass; None where a step was skipped or does not apply."""

    blur_sigma: Optional[float] = None
    noise_sigma: Optional[float] = None
    jpeg_quality: Optional[int] = None
    resize_factor: Optional[float] = None  # passes 2, first pass: the random scale factor
    resize_mode: Optional[str] = None  # passes 2: area | bilinear | bicubic

    def as_row(self, suffix: str = "") -> dict:
        row = asdict(self)
        if not suffix:  # one pass: the manifest keeps its original columns
            row = {k: v for k, v in row.items() if not k.startswith("resize") or v is not None}
        return {f"{k}{suffix}": v for k, v in row.items()}


def manifest_row(draws: tuple[Draw, ...]) -> dict:
    return {k: v for i, d in enumerate(draws) for k, v in d.as_row("" if i == 0 else f"_{i + 1}").items()}


def image_rng(seed: int, name: str) -> np.random.Generator:
    """A generator seeded by (seed, name) alone: independent of image order and platform."""
    digest = hashlib.sha256(f"{seed}/{name}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def draw(cfg, rng: np.random.Generator, resize_range: tuple[float, float] | None = None,
         modes: tuple[str, ...] = ()) -> Draw:
    """Draw one pass's parameters from ``cfg`` (the first pass's fields of DegradationParams, or
    its ``second`` section), always in the same sequence whatever the order of steps; with
    ``modes``, a random resize mode (and, with ``resize_range``, factor) too."""
    use_blur, use_noise, use_jpeg = (rng.random() < p for p in (cfg.blur_prob, cfg.noise_prob, cfg.jpeg_prob))
    blur = float(rng.uniform(*cfg.blur_sigma))
    noise = float(rng.uniform(*cfg.noise_sigma))
    quality = int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1))
    factor = round(float(rng.uniform(*resize_range)), 6) if resize_range else None
    mode = modes[int(rng.integers(len(modes)))] if modes else None
    return Draw(
        blur_sigma=round(blur, 6) if use_blur else None,
        noise_sigma=round(noise, 6) if use_noise else None,
        jpeg_quality=quality if use_jpeg else None,
        resize_factor=factor,
        resize_mode=mode,
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


def resize_to(img: np.ndarray, size: tuple[int, int], mode: str) -> np.ndarray:
    """Resize a float image to (height, width) with OpenCV's ``mode`` interpolation."""
    return cv2.resize(img, (size[1], size[0]), interpolation=RESIZE_MODES[mode])


def run_pass(img: np.ndarray, d: Draw, order: list[str], rng: np.random.Generator,
             resize: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    for step in order:
        if step == "blur" and d.blur_sigma:
            img = gaussian_blur(img, d.blur_sigma)
        elif step == "resize":
            img = resize(img)
        elif step == "noise" and d.noise_sigma:
            img = add_noise(img, d.noise_sigma, rng)
        elif step == "jpeg" and d.jpeg_quality is not None:
            img = jpeg(img, d.jpeg_quality)
    return img


def degrade_with(hr: np.ndarray, scale: int, cfg: DegradationParams,
                 rng: np.random.Generator) -> tuple[np.ndarray, tuple[Draw, ...]]:
    """The realistic chain (one or two passes) on a uint8 HR image, with draws from ``rng``."""
    img = hr.astype(np.float64)
    target = (hr.shape[0] // scale, hr.shape[1] // scale)
    if cfg.passes == 1:
        d = draw(cfg, rng)
        return round_uint8(run_pass(img, d, cfg.order, rng, lambda x: imresize(x, 1.0 / scale))), (d,)
    modes = tuple(cfg.resize_modes)
    first, second = draw(cfg, rng, cfg.resize_range, modes), draw(cfg.second, rng, None, modes)

    def random_resize(x: np.ndarray) -> np.ndarray:
        size = (max(1, round(x.shape[0] * first.resize_factor)), max(1, round(x.shape[1] * first.resize_factor)))
        return resize_to(x, size, first.resize_mode)

    img = run_pass(img, first, cfg.order, rng, random_resize)
    img = run_pass(img, second, cfg.order, rng, lambda x: resize_to(x, target, second.resize_mode))
    return round_uint8(img), (first, second)


def degrade(
    hr: np.ndarray, scale: int, cfg: DegradationParams | None = None, seed: int = 0, name: str = ""
) -> tuple[np.ndarray, tuple[Draw, ...]]:
    """LR version of a uint8 HR image whose sides are multiples of ``scale``, and what was drawn
    (one :class:`Draw` per pass), from (``seed``, ``name``) alone.

    ``cfg`` None or ``kind: bicubic`` is the clean protocol: LR = imresize(HR, 1/scale).
    """
    if cfg is None or cfg.kind == "bicubic":
        return imresize(hr, 1.0 / scale), (Draw(),)
    return degrade_with(hr, scale, cfg, image_rng(seed, name))


class CropDegrader:
    """On-the-fly degradation for training: the LR of an HR crop, drawn anew from ``key``
    ((seed, epoch, row) of the epoch plan). Picklable, for DataLoader workers."""

    def __init__(self, cfg: DegradationParams, scale: int):
        self.cfg, self.scale = cfg, scale

    def __call__(self, hr: np.ndarray, key: tuple[int, ...]) -> np.ndarray:
        return degrade_with(hr, self.scale, self.cfg, np.random.default_rng(key))[0]
