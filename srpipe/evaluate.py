"""Evaluate an upscaler on (HR, LR) pairs by the protocol in :mod:`srpipe.metrics`."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .imresize import imresize
from .io import write_image
from .metrics import LPIPS, psnr, ssim
from .progress import progress
from .upscalers import Upscaler
from .visualize import comparison_strip


def evaluate(
    upscaler: Upscaler,
    pairs: Sequence[tuple[str, np.ndarray, np.ndarray]],
    crop_border: int,
    y_channel: bool = True,
    lpips: LPIPS | None = None,
    desc: str = "evaluate",
    save_dir: str | Path | None = None,
) -> pd.DataFrame:
    """One row per image: name, psnr, ssim and (with ``lpips``) lpips.

    ``pairs`` may read its images lazily (:class:`srpipe.data.Pairs`): one image at a time is in
    memory. With ``save_dir``, also writes each SR image and a comparison strip (HR | bicubic | model).
    """
    rows = []
    for name, hr, lr in progress(pairs, total=len(pairs), desc=desc, unit="img", leave=False):
        sr = upscaler(lr)
        if sr.shape != hr.shape:
            raise ValueError(f"{name}: upscaled to {sr.shape[:2]}, HR is {hr.shape[:2]} (wrong scale?)")
        row = {
            "image": name,
            "psnr": psnr(sr, hr, crop_border, y_channel),
            "ssim": ssim(sr, hr, crop_border, y_channel),
        }
        if lpips is not None:
            row["lpips"] = lpips(sr, hr, crop_border)
        rows.append(row)
        if save_dir is not None:
            stem = Path(name).stem
            write_image(Path(save_dir) / f"{stem}_sr.png", sr)
            bicubic = imresize(lr, hr.shape[0] // lr.shape[0])
            write_image(Path(save_dir) / f"{stem}_compare.png", comparison_strip(hr, bicubic, sr))
    return pd.DataFrame(rows)


def summarize(frame: pd.DataFrame) -> dict[str, float]:
    return {col: float(frame[col].mean()) for col in frame.columns if col != "image"}
