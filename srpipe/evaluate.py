"""Evaluate an upscaler on (HR, LR) pairs by the protocol in :mod:`srpipe.metrics`."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from .config import DegradationParams
from .data import make_pairs
from .imresize import imresize
from .io import SrpipeError, write_image
from .metrics import min_side, psnr, ssim
from .progress import progress
from .upscalers import Upscaler
from .visualize import comparison_strip


def evaluate(
    upscaler: Upscaler,
    pairs: Sequence[tuple[str, np.ndarray, np.ndarray]],
    crop_border: int,
    y_channel: bool = True,
    perceptual: Mapping[str, Callable[[np.ndarray, np.ndarray, int], float]] | None = None,
    desc: str = "evaluate",
    save_dir: str | Path | None = None,
) -> pd.DataFrame:
    """One row per image: name, psnr, ssim and each metric of ``perceptual`` (name -> metric of
    ``(sr, hr, crop_border)``: ``{"lpips": LPIPS(), "dists": DISTS()}``) under its name.

    ``pairs`` may read its images lazily (:class:`srpipe.data.Pairs`): one image at a time is in
    memory. With ``save_dir``, also writes each SR image and a comparison strip (HR | bicubic | model).
    """
    rows = []
    for name, hr, lr in progress(pairs, total=len(pairs), desc=desc, unit="img", leave=False):
        if min(hr.shape[:2]) < min_side(crop_border):
            warnings.warn(f"{name} skipped: {hr.shape[1]}x{hr.shape[0]} px is too small to score (at least "
                          f"{min_side(crop_border)} px a side with {crop_border} px cropped at each border)")
            continue
        sr = upscaler(lr)
        if sr.shape != hr.shape:
            raise SrpipeError(f"{name}: upscaled to {sr.shape[1]}x{sr.shape[0]}, the HR image is "
                              f"{hr.shape[1]}x{hr.shape[0]}: the model's scale does not fit the data; "
                              "prepare the data at the model's scale")
        row = {
            "image": name,
            "psnr": psnr(sr, hr, crop_border, y_channel),
            "ssim": ssim(sr, hr, crop_border, y_channel),
        }
        for metric_name, metric in (perceptual or {}).items():
            row[metric_name] = metric(sr, hr, crop_border)
        rows.append(row)
        if save_dir is not None:
            stem = Path(name).stem
            write_image(Path(save_dir) / f"{stem}_sr.png", sr)
            bicubic = imresize(lr, hr.shape[0] // lr.shape[0])
            write_image(Path(save_dir) / f"{stem}_compare.png", comparison_strip(hr, bicubic, sr))
    return pd.DataFrame(rows)


def summarize(frame: pd.DataFrame) -> dict[str, float]:
    if frame.empty:
        raise SrpipeError("no image could be scored (all were too small); use larger images")
    return {col: float(frame[col].mean()) for col in frame.columns if col != "image"}


def score_source(
    upscaler: Upscaler, source: str, scale: int, crop_border: int, y_channel: bool = True,
    perceptual: Mapping | None = None, degradation: DegradationParams | None = None, seed: int = 0,
    raw_dir: str | Path = "data/raw", desc: str | None = None, save_dir: str | Path | None = None,
) -> pd.DataFrame:
    """:func:`evaluate` on any dataset (name or folder of HR images), its LR made as
    prepare-degradations would (``degradation`` None: bicubic): what ``srpipe evaluate --hr-dir``
    scores, and the time-to-quality benchmark with it."""
    pairs = make_pairs(source, scale, degradation, seed, raw_dir, min_side(crop_border))
    return evaluate(upscaler, pairs, crop_border, y_channel, perceptual, desc or str(source), save_dir)
