"""Image files and atomic output: the only place that touches the file system for images."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # srpipe reports unreadable files itself


class SrpipeError(RuntimeError):
    """A user-facing failure: bad input data, missing files. The CLI prints it and exits 1."""


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly in ``folder``, sorted by name. Missing or empty folders are errors."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SrpipeError(f"image folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SrpipeError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in folder: {folder}")
    return files


def to_rgb_uint8(img: np.ndarray, name: str = "image") -> np.ndarray:
    """Any decoded image (gray, RGB, RGBA; uint8 or uint16; float in [0, 1]) as HxWx3 uint8 RGB."""
    if img.dtype == np.uint16:
        img = np.floor(img.astype(np.float64) / 257.0 + 0.5).astype(np.uint8)
    elif img.dtype != np.uint8:
        if np.issubdtype(img.dtype, np.floating):
            img = np.floor(np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        else:
            raise SrpipeError(f"{name}: unsupported pixel type {img.dtype}")
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3:
        raise SrpipeError(f"{name}: unsupported image shape {img.shape}")
    channels = img.shape[2]
    if channels == 1:
        img = np.repeat(img, 3, axis=2)
    elif channels == 4:
        warnings.warn(f"{name}: alpha channel dropped", stacklevel=2)
        img = img[:, :, :3]
    elif channels != 3:
        raise SrpipeError(f"{name}: unsupported number of channels {channels}")
    return np.ascontiguousarray(img)


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as HxWx3 uint8 RGB; an unreadable file raises SrpipeError naming it."""
    path = Path(path)
    if not path.is_file():
        raise SrpipeError(f"image not found: {path}")
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise SrpipeError(f"cannot read image (corrupt or unsupported format): {path}")
    if img.ndim == 3 and img.shape[2] >= 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA if img.shape[2] == 4 else cv2.COLOR_BGR2RGB)
    return to_rgb_uint8(img, str(path))


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    Works for files and folders: a killed or failed writer leaves the old output (or nothing),
    never a half-written one. The temporary name keeps the suffix so format-by-extension writers
    (OpenCV, ONNX) still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()
    try:
        yield tmp
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def write_image(path: str | Path, img: np.ndarray) -> None:
    """Write HxWx3 uint8 RGB atomically; the format follows the suffix."""
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), cv2.cvtColor(img, cv2.COLOR_RGB2BGR)):
            raise SrpipeError(f"cannot write image: {path}")


def write_json(path: str | Path, data: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
