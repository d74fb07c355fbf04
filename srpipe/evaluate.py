"""Evaluate an upscaler on (HR, LR) pairs by the protocol in :mod:`srpipe.metrics`."""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np
import pandas as pd
import torch
from torch import nn
from .progress import progress

from .imresize import imresize
from .metrics import LPIPS, psnr, ssim

Upscaler = Callable[[np.ndarray], np.ndarray]


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 RGB -> 1x3xHxW float in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float().div_(255.0)


def to_uint8(t: torch.Tensor) -> np.ndarray:
    """1x3xHxW float in [0, 1] -> HxWx3 uint8 RGB, rounded."""
    return t[0].clamp(0, 1).mul(255.0).round().byte().permute(1, 2, 0).cpu().numpy()


def torch_upscaler(model: nn.Module) -> Upscaler:
    @torch.inference_mode()
    def run(lr: np.ndarray) -> np.ndarray:
        return to_uint8(model(to_tensor(lr)))

    return run


def bicubic_upscaler(scale: int) -> Upscaler:
    return lambda lr: imresize(lr, scale)


def evaluate(
    upscaler: Upscaler,
    pairs: Iterable[tuple[str, np.ndarray, np.ndarray]],
    crop_border: int,
    y_channel: bool = True,
    lpips: LPIPS | None = None,
    desc: str = "evaluate",
) -> pd.DataFrame:
    """One row per image: name, psnr, ssim and (with ``lpips``) lpips."""
    rows = []
    for name, hr, lr in progress(list(pairs), desc=desc, unit="img", leave=False):
        sr = upscaler(lr)
        row = {
            "image": name,
            "psnr": psnr(sr, hr, crop_border, y_channel),
            "ssim": ssim(sr, hr, crop_border, y_channel),
        }
        if lpips is not None:
            row["lpips"] = lpips(sr, hr, crop_border)
        rows.append(row)
    return pd.DataFrame(rows)


def summarize(frame: pd.DataFrame) -> dict[str, float]:
    return {col: float(frame[col].mean()) for col in frame.columns if col != "image"}
