"""Pictures for people: side-by-side crops that show what a model changed.

- :func:`comparison_strip`: HR | bicubic | model around the region where bicubic does worst
  (``evaluate --save-dir``: per image, for one model).
- :func:`detail_windows` and :func:`write_detail_crops`: a few fixed crops per dataset, the
  windows richest in detail of its HR images, chosen from the HR images alone, so every
  experiment shows the same regions (the evaluate stage's image plots, which ``dvc plots diff``
  puts side by side).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np

TILE = 256  # target side of a zoomed crop in a picture, in screen pixels


def _window_means(values: np.ndarray, size: int) -> np.ndarray:
    """Mean of ``values`` over every ``size`` x ``size`` window, indexed by its top-left corner."""
    mean = cv2.boxFilter(values, -1, (size, size), normalize=True, borderType=cv2.BORDER_CONSTANT)
    half, (h, w) = size // 2, values.shape
    return mean[half : h - size + half + 1, half : w - size + half + 1]


def worst_window(hr: np.ndarray, baseline: np.ndarray, size: int) -> tuple[int, int]:
    """Top-left corner of the ``size`` window where ``baseline`` is furthest from ``hr``."""
    err = np.abs(hr.astype(np.float32) - baseline.astype(np.float32)).mean(axis=2)
    inner = _window_means(err, size)
    y, x = np.unravel_index(np.argmax(inner), inner.shape)
    return int(y), int(x)


def richest_window(hr: np.ndarray, size: int) -> tuple[float, int, int]:
    """(detail, y, x): the ``size`` window of ``hr`` with the most gradient energy (mean Sobel
    magnitude of its luma): texture and edges, where smooth and sharp models differ most."""
    grey = cv2.cvtColor(hr, cv2.COLOR_RGB2GRAY).astype(np.float32)
    energy = cv2.magnitude(cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1))
    inner = _window_means(energy, size)
    y, x = np.unravel_index(np.argmax(inner), inner.shape)
    return float(inner[y, x]), int(y), int(x)


def labelled_tile(img: np.ndarray, y: int, x: int, size: int, zoom: int, label: str) -> np.ndarray:
    """The ``size`` crop of ``img`` at (y, x), enlarged ``zoom`` times (nearest: pixels stay
    visible), with ``label`` written in its corner."""
    crop = img[y : y + size, x : x + size]
    crop = np.ascontiguousarray(cv2.resize(crop, (size * zoom, size * zoom), interpolation=cv2.INTER_NEAREST))
    cv2.putText(crop, label, (6, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(crop, label, (6, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1, cv2.LINE_AA)
    return crop


def strip(tiles: Sequence[np.ndarray], gap: int = 6) -> np.ndarray:
    """Tiles of one height side by side, white gaps between them."""
    spacer = np.full((tiles[0].shape[0], gap, 3), 255, np.uint8)
    parts = [part for tile in tiles for part in (tile, spacer)][:-1]
    return np.hstack(parts)


def comparison_strip(
    hr: np.ndarray, bicubic: np.ndarray, sr: np.ndarray, size: int = 128, zoom: int = 2, gap: int = 6
) -> np.ndarray:
    """HR crop | bicubic | model, labelled, around the region where bicubic does worst."""
    size = min(size, hr.shape[0], hr.shape[1])
    y, x = worst_window(hr, bicubic, size)
    return strip([labelled_tile(img, y, x, size, zoom, label)
                  for img, label in ((hr, "HR"), (bicubic, "bicubic"), (sr, "model"))], gap)


def crop_side(scale: int, hr_shape: tuple[int, ...]) -> int:
    """HR side of a detail crop: 32 LR pixels (so the model works from the same input at any scale),
    smaller only for an image smaller than that."""
    return min(32 * scale, hr_shape[0], hr_shape[1])


def detail_windows(pairs: Sequence[tuple[str, np.ndarray, np.ndarray]], scale: int,
                   count: int) -> list[tuple[int, int, int, int]]:
    """The ``count`` crops of a dataset richest in detail, one per image at most: (index into
    ``pairs``, y, x, side), in the pairs' order. A function of the HR images alone."""
    found = []
    for index, (_, hr, _) in enumerate(pairs):
        side = crop_side(scale, hr.shape)
        detail, y, x = richest_window(hr, side)
        found.append((detail, index, y, x, side))
    richest = sorted(found, key=lambda f: (-f[0], f[1]))[:count]
    return [(index, y, x, side) for _, index, y, x, side in sorted(richest, key=lambda f: f[1])]


def detail_strip(hr: np.ndarray, lr: np.ndarray, window: tuple[int, int, int],
                 upscalers: dict[str, Callable[[np.ndarray], np.ndarray]]) -> np.ndarray:
    """HR | each upscaler's output (label -> upscaler) at ``window`` (y, x, side), zoomed to about
    :data:`TILE` pixels and labelled."""
    y, x, side = window
    zoom = max(1, TILE // side)
    tiles = [labelled_tile(hr, y, x, side, zoom, "HR")]
    tiles += [labelled_tile(up(lr), y, x, side, zoom, label) for label, up in upscalers.items()]
    return strip(tiles)


def write_detail_crops(upscalers: dict[str, Callable[[np.ndarray], np.ndarray]],
                       pairs: Sequence[tuple[str, np.ndarray, np.ndarray]], scale: int, count: int,
                       out_dir: Path) -> list[Path]:
    """For each of :func:`detail_windows`: ``out_dir/<image>.png``, HR | each upscaler's output
    (label -> upscaler, e.g. bicubic and the model), labelled. Returns the files written."""
    from .io import write_image

    written = []
    for index, y, x, side in detail_windows(pairs, scale, count):
        name, hr, lr = pairs[index]
        path = Path(out_dir) / f"{Path(name).stem}.png"
        write_image(path, detail_strip(hr, lr, (y, x, side), upscalers))
        written.append(path)
    return written
