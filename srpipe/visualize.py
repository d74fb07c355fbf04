"""Pictures for people: side-by-side crops that show what a model changed."""

from __future__ import annotations

import cv2
import numpy as np


def worst_window(hr: np.ndarray, baseline: np.ndarray, size: int) -> tuple[int, int]:
    """Top-left corner of the ``size`` window where ``baseline`` is furthest from ``hr``."""
    err = np.abs(hr.astype(np.float32) - baseline.astype(np.float32)).mean(axis=2)
    mean = cv2.boxFilter(err, -1, (size, size), normalize=True, borderType=cv2.BORDER_CONSTANT)
    half = size // 2
    h, w = err.shape
    inner = mean[half : h - size + half + 1, half : w - size + half + 1]
    y, x = np.unravel_index(np.argmax(inner), inner.shape)
    return int(y), int(x)


def comparison_strip(
    hr: np.ndarray, bicubic: np.ndarray, sr: np.ndarray, size: int = 128, zoom: int = 2, gap: int = 6
) -> np.ndarray:
    """HR crop | bicubic | model, labelled, around the region where bicubic does worst."""
    size = min(size, hr.shape[0], hr.shape[1])
    y, x = worst_window(hr, bicubic, size)
    tiles = []
    for img, label in ((hr, "HR"), (bicubic, "bicubic"), (sr, "model")):
        crop = img[y : y + size, x : x + size]
        crop = cv2.resize(crop, (size * zoom, size * zoom), interpolation=cv2.INTER_NEAREST)
        crop = np.ascontiguousarray(crop)
        cv2.putText(crop, label, (6, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(crop, label, (6, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(crop)
    spacer = np.full((size * zoom, gap, 3), 255, np.uint8)
    return np.hstack([tiles[0], spacer, tiles[1], spacer, tiles[2]])
