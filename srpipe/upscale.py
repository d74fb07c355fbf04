"""``srpipe upscale``: a model (ONNX or PyTorch) applied to any images, tile by tile.

Large images are cut into LR tiles of ``tile`` pixels; each tile is upscaled with ``overlap``
pixels of context on every side and only its centre is kept, so memory stays bounded and the
seams vanish: the result equals the untiled one to within one grey level.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .io import IMAGE_SUFFIXES, SrpipeError, list_images, read_image, write_image
from .progress import progress

if TYPE_CHECKING:  # the CLI imports this module for FORMATS; torch loads only when a model does
    from .upscalers import Upscaler

FORMATS = ("png", "jpg", "jpeg", "bmp", "tif", "tiff", "webp")


def tile_grid(length: int, tile: int) -> list[tuple[int, int]]:
    return [(start, min(start + tile, length)) for start in range(0, length, tile)]


def upscale_tiled(upscaler: Upscaler, lr: np.ndarray, scale: int, tile: int | None, overlap: int,
                  desc: str = "tiles") -> np.ndarray:
    """Upscale ``lr`` through tiles of ``tile`` LR pixels with ``overlap`` pixels of context."""
    h, w = lr.shape[:2]
    if not tile or (h <= tile and w <= tile):
        return upscaler(lr)
    out = np.empty((h * scale, w * scale, 3), np.uint8)
    cells = [(y, x) for y in tile_grid(h, tile) for x in tile_grid(w, tile)]
    for (y0, y1), (x0, x1) in progress(cells, desc=desc, unit="tile", leave=False):
        cy0, cx0 = max(0, y0 - overlap), max(0, x0 - overlap)
        cy1, cx1 = min(h, y1 + overlap), min(w, x1 + overlap)
        sr = upscaler(np.ascontiguousarray(lr[cy0:cy1, cx0:cx1]))
        out[y0 * scale : y1 * scale, x0 * scale : x1 * scale] = sr[
            (y0 - cy0) * scale : (y1 - cy0) * scale, (x0 - cx0) * scale : (x1 - cx0) * scale
        ]
    return out


def tiled_upscaler(upscaler: Upscaler, scale: int, tile: int | None, overlap: int) -> Upscaler:
    """``upscaler`` applied through tiles (see :func:`upscale_tiled`), as an upscaler itself."""
    return lambda lr: upscale_tiled(upscaler, lr, scale, tile, overlap)


def expand_inputs(inputs: list[Path]) -> list[Path]:
    """Files as given, folders as their images; a missing path is kept so that it is reported."""
    files: list[Path] = []
    for item in inputs:
        files.extend(list_images(item) if item.is_dir() else [item])
    return files


def output_path(src: Path, out_dir: Path, scale: int, fmt: str | None) -> Path:
    suffix = f".{fmt.lower()}" if fmt else (src.suffix.lower() if src.suffix.lower() in IMAGE_SUFFIXES else ".png")
    return out_dir / f"{src.stem}_x{scale}{suffix}"


def upscale_files(
    inputs: list[Path], upscaler: Upscaler, scale: int, out_dir: Path, tile: int | None = 256, overlap: int = 16,
    fmt: str | None = None,
) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Upscale every input image into ``out_dir``; returns (written, [(failed input, why)])."""
    files = expand_inputs(inputs)
    sources = {f.resolve() for f in files if f.exists()}
    written, failed = [], []
    for src in progress(files, desc="images", unit="img"):
        dest = output_path(src, out_dir, scale, fmt)
        try:
            if dest.resolve() in sources:
                raise SrpipeError(f"output {dest} would overwrite an input; choose another --out")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # an alpha channel is dropped, as the docs say
                lr = read_image(src)
            write_image(dest, upscale_tiled(upscaler, lr, scale, tile, overlap, desc=src.name))
            written.append(dest)
        except SrpipeError as exc:
            failed.append((src, str(exc)))
    return written, failed
