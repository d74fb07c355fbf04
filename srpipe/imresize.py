"""MATLAB-compatible bicubic ``imresize``.

Matches MATLAB's ``imresize(img, scale, 'bicubic')`` (with its default antialiasing): cubic
kernel with a = -0.5, the kernel widened by 1/scale when shrinking, symmetric border handling,
the dimension that shrinks most resized first, and uint8 results rounded half away from zero.
This is the resize that the published SR tables (EDSR, RCAN, ...) use for LR images and for the
bicubic baseline.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import scipy.sparse


def cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5."""
    ax = np.abs(x)
    ax2, ax3 = ax**2, ax**3
    near = (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2))
    return near + far


def contributions(in_length: int, out_length: int, scale: float, antialias: bool = True):
    """Weights (out_length x taps) and 0-based source indices for one dimension, as MATLAB computes them."""
    kernel_width = 4.0
    shrink = scale < 1 and antialias
    if shrink:
        kernel_width /= scale
    x = np.arange(1, out_length + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)
    left = np.floor(u - kernel_width / 2.0)
    taps = int(math.ceil(kernel_width)) + 2
    indices = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]
    distance = u[:, None] - indices
    weights = scale * cubic(distance * scale) if shrink else cubic(distance)
    weights /= weights.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(in_length), np.arange(in_length - 1, -1, -1)])
    indices = mirror[np.mod(indices.astype(np.int64) - 1, 2 * in_length)]
    used = np.any(weights != 0, axis=0)
    return weights[:, used], indices[:, used]


@functools.lru_cache(maxsize=64)
def resize_matrix(in_length: int, out_length: int, scale: float, antialias: bool) -> scipy.sparse.csr_matrix:
    """One dimension's resize as a sparse (out_length x in_length) matrix (cached: training crops
    and photo collections repeat the same sizes)."""
    weights, indices = contributions(in_length, out_length, scale, antialias)
    rows = np.repeat(np.arange(out_length), weights.shape[1])
    return scipy.sparse.csr_matrix((weights.ravel(), (rows, indices.ravel())), shape=(out_length, in_length))


def _resize_axis(img: np.ndarray, axis: int, out_length: int, scale: float, antialias: bool) -> np.ndarray:
    """One separable pass as a sparse matrix product: memory stays at the size of the input and
    output, whatever the kernel width."""
    matrix = resize_matrix(img.shape[axis], out_length, scale, antialias)
    moved = np.moveaxis(img, axis, 0)
    out = (matrix @ moved.reshape(moved.shape[0], -1)).reshape((out_length, *moved.shape[1:]))
    return np.moveaxis(out, 0, axis)


def output_size(shape: tuple[int, int], scale: float) -> tuple[int, int]:
    return int(math.ceil(shape[0] * scale)), int(math.ceil(shape[1] * scale))


def round_uint8(img: np.ndarray) -> np.ndarray:
    """Clip to [0, 255] and round half away from zero to uint8, as MATLAB converts to uint8."""
    return np.floor(np.clip(img, 0, 255) + 0.5).astype(np.uint8)


def imresize(img: np.ndarray, scale: float, antialias: bool = True) -> np.ndarray:
    """Resize an HxW or HxWxC image by ``scale`` like MATLAB's bicubic ``imresize``.

    uint8 input gives uint8 output (rounded, clipped); float input gives float64 output, unclipped.
    """
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    is_uint8 = img.dtype == np.uint8
    out = img.astype(np.float64)
    out_h, out_w = output_size(img.shape[:2], scale)
    # MATLAB resizes along the dimension with the smallest scale first; both scales are equal
    # here, so the order is rows then columns.
    out = _resize_axis(out, 0, out_h, scale, antialias)
    out = _resize_axis(out, 1, out_w, scale, antialias)
    if is_uint8:
        return round_uint8(out)
    return out


def crop_to_multiple(img: np.ndarray, scale: int) -> np.ndarray:
    """Crop the bottom/right so that height and width are multiples of ``scale`` (the SR protocol)."""
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale]
