"""extract-patches: aligned HR/LR patch pairs in two compact arrays plus an index.

``out_dir/hr.npy`` (N x P x P x 3 uint8), ``out_dir/lr.npy`` (N x P/s x P/s x 3 uint8) and
``out_dir/index.csv`` (patch, image, y, x of the HR patch's top-left corner). The arrays can be
memory-mapped, so training reads patches without loading everything.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from .data import load_pairs
from .io import SrpipeError, atomic_path
from .progress import progress


def grid(length: int, size: int, stride: int) -> list[int]:
    """Top-left offsets of a grid of windows that covers ``length`` (the last one flush with the end)."""
    if length < size:
        return []
    starts = list(range(0, length - size + 1, stride))
    if starts[-1] != length - size:
        starts.append(length - size)
    return starts


def extract(prepared_dir: str | Path, out_dir: str | Path, scale: int, hr_size: int, stride: int) -> int:
    """Cut every training image into HR/LR patch pairs; returns the number of patches."""
    if hr_size % scale:
        raise SrpipeError(f"patch size {hr_size} is not divisible by scale {scale}")
    lr_size, lr_stride = hr_size // scale, max(1, stride // scale)
    hr_patches, lr_patches, rows = [], [], []
    for name, hr, lr in progress(load_pairs(prepared_dir, scale), desc="patches", unit="img"):
        ys, xs = grid(lr.shape[0], lr_size, lr_stride), grid(lr.shape[1], lr_size, lr_stride)
        if not ys or not xs:
            warnings.warn(f"{name}: smaller than one {hr_size}px patch, skipped", stacklevel=2)
            continue
        for y in ys:
            for x in xs:
                lr_patches.append(lr[y : y + lr_size, x : x + lr_size])
                hr_patches.append(hr[y * scale : (y + lr_size) * scale, x * scale : (x + lr_size) * scale])
                rows.append((name, y * scale, x * scale))
    if not rows:
        raise SrpipeError(f"no image in {prepared_dir} is at least {hr_size}px on both sides")
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        np.save(tmp / "hr.npy", np.stack(hr_patches))
        np.save(tmp / "lr.npy", np.stack(lr_patches))
        index = pd.DataFrame(rows, columns=["image", "y", "x"])
        index.index.name = "patch"
        index.to_csv(tmp / "index.csv")
    return len(rows)


def load(patches_dir: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Memory-mapped (hr, lr) patch arrays."""
    patches_dir = Path(patches_dir)
    try:
        return np.load(patches_dir / "hr.npy", mmap_mode="r"), np.load(patches_dir / "lr.npy", mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise SrpipeError(f"cannot read patches in {patches_dir}: {exc}") from None
