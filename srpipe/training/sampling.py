"""Training samples: random HR crops of the image store, drawn so that a run can stop anywhere.

Every sample of a run has a number ``g``; sample ``g`` belongs to epoch ``g // rows + 1`` (``rows``
samples per epoch) and is row ``g % rows`` of that epoch's *plan*: (image, flip, quarter turns,
crop y, crop x), drawn from (seed, epoch) alone. Crop origins are uniform over every LR-aligned
position of every image, so large images are sampled in proportion to their area; or, with
``train.texture_sampling: p > 0``, weighted by the detail under the crop to the power ``p``
(:func:`texture_cells`), so that flat sky and walls, which a bicubic skip already restores, take
fewer of the steps (SamplingAug, Wang et al. 2021, samples informative patches). A run resumed
at step ``t`` asks for samples from ``t``'s first one on and sees exactly the batches an
uninterrupted run would have seen, with any number of loader workers or processes.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable, Iterator

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..io import SrpipeError
from ..metrics import BT601_Y
from ..patches import ImageStore
from ..progress import progress

DEGRADE_MARGIN = 8  # LR pixels of context degraded around an on-the-fly crop (blur and resize reach)
RELEASE_EVERY = 64  # crops between drops of the store's mapped pages (under 1 MB each at 96 px)
LUMA = np.array(BT601_Y, np.float32) / 255  # the metrics' luma weights (the offset cancels in a difference)
FLAT_FLOOR = 0.01  # a cell's detail is floored at this fraction of the mean: flat regions stay possible


def crop_positions(sizes: np.ndarray, crop: int, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """LR-grid crop origins per image along y and x for an HR crop of ``crop`` (0 where too small)."""
    lr_crop = crop // scale
    return (np.maximum(0, sizes[:, 0] // scale - lr_crop + 1).astype(np.int64),
            np.maximum(0, sizes[:, 1] // scale - lr_crop + 1).astype(np.int64))


def epoch_plan(ys: np.ndarray, xs: np.ndarray, rows: int, seed: int, epoch: int) -> np.ndarray:
    """``rows`` x (image, flip, quarter turns, LR crop y, LR crop x), from (seed, epoch) alone."""
    counts = ys * xs
    ends = np.cumsum(counts)
    gen = np.random.default_rng([seed, epoch])
    picks = gen.integers(0, ends[-1], rows)
    image = np.searchsorted(ends, picks, side="right")
    cy, cx = np.divmod(picks - (ends[image] - counts[image]), xs[image])
    flips, turns = gen.integers(0, 2, rows), gen.integers(0, 4, rows)
    return np.stack([image, flips, turns, cy, cx], axis=1)


def detail_energy(hr: np.ndarray, scale: int) -> np.ndarray:
    """Per LR pixel, the squared luma that an area down-resize by ``scale`` and a bicubic resize back
    lose of the HR pixels under it: the detail that a model with a bicubic skip has to restore."""
    y = hr.astype(np.float32) @ LUMA
    h, w = y.shape
    small = cv2.resize(y, (w // scale, h // scale), interpolation=cv2.INTER_AREA)
    lost = (y - cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)) ** 2
    return lost.reshape(h // scale, scale, w // scale, scale).sum(axis=(1, 3))


@dataclass
class Cells:
    """Crop origins grouped in rectangles: origins ``y .. y + h - 1`` x ``x .. x + w - 1`` of ``image``,
    drawn with probability proportional to ``weight`` (then uniformly inside the rectangle)."""

    image: np.ndarray
    y: np.ndarray
    x: np.ndarray
    h: np.ndarray
    w: np.ndarray
    weight: np.ndarray


def _image_cells(energy: np.ndarray, lr_crop: int, ny: int, nx: int) -> tuple[np.ndarray, ...]:
    """One image's cells of side ``lr_crop // 2`` over its ``ny`` x ``nx`` crop origins, and the mean
    detail of the crop at each cell's centre (a summed-area table gives each in O(1))."""
    side = max(1, lr_crop // 2)
    y0, x0 = np.arange(0, ny, side), np.arange(0, nx, side)
    h, w = np.minimum(side, ny - y0), np.minimum(side, nx - x0)
    cy, cx = np.ix_(y0 + (h - 1) // 2, x0 + (w - 1) // 2)
    table = np.pad(energy.astype(np.float64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    c = lr_crop
    detail = (table[cy + c, cx + c] - table[cy, cx + c] - table[cy + c, cx] + table[cy, cx]) / c**2
    grid = np.ones_like(detail, dtype=np.int64)
    return (y0[:, None] * grid, x0[None, :] * grid, h[:, None] * grid, w[None, :] * grid, detail)


def texture_cells(store: ImageStore, crop: int, power: float) -> Cells:
    """Every image's crop origins in cells, each weighted by its number of origins times (the
    detail of its crop / the mean detail + :data:`FLAT_FLOOR`) to the power ``power``."""
    ys, xs = crop_positions(store.sizes, crop, store.scale)
    parts = []
    for i in progress(range(len(ys)), desc="crop weights", unit="img", leave=False):
        if ys[i] * xs[i]:
            y, x, h, w, detail = _image_cells(detail_energy(store.hr(i), store.scale), crop // store.scale,
                                              int(ys[i]), int(xs[i]))
            parts.append((np.full(y.size, i, np.int32), *(a.ravel().astype(np.int32) for a in (y, x, h, w)),
                          detail.ravel()))
            store.release()
    image, y, x, h, w, detail = (np.concatenate(column) for column in zip(*parts))
    area = h.astype(np.int64) * w
    mean = max(float((detail * area).sum() / area.sum()), 1e-12)
    return Cells(image, y, x, h, w, area * (detail / mean + FLAT_FLOOR) ** power)


def weighted_plan(cells: Cells, rows: int, seed: int, epoch: int) -> np.ndarray:
    """As :func:`epoch_plan`, with origins drawn by the cells' weights."""
    ends = np.cumsum(cells.weight)
    gen = np.random.default_rng([seed, epoch])
    pick = np.minimum(np.searchsorted(ends, gen.random(rows) * ends[-1], side="right"), len(ends) - 1)
    cy = cells.y[pick] + gen.integers(0, cells.h[pick])
    cx = cells.x[pick] + gen.integers(0, cells.w[pick])
    flips, turns = gen.integers(0, 2, rows), gen.integers(0, 4, rows)
    return np.stack([cells.image[pick], flips, turns, cy, cx], axis=1)


def transform(img: np.ndarray, flip: int, turns: int) -> np.ndarray:
    """Horizontal flip then ``turns`` quarter rotations of an HxWxC array (the 8 dihedral transforms)."""
    if flip:
        img = img[:, ::-1]
    return np.rot90(img, turns, axes=(0, 1))


def to_batch(crops: list[np.ndarray]) -> torch.Tensor:
    """N H x W x C uint8 crops as one N x C x H x W float tensor in [0, 1], channels-last in
    memory (the layout the crops come in): one copy and one conversion for the whole batch."""
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float().div_(255)


def collate_crops(samples: list[tuple[np.ndarray, np.ndarray]]) -> tuple[torch.Tensor, torch.Tensor]:
    """The DataLoader's collate: a list of (LR, HR) uint8 crops as an (LR, HR) pair of batches."""
    return to_batch([lr for lr, _ in samples]), to_batch([hr for _, hr in samples])


class CropDataset(Dataset):
    """Sample ``g`` of a run as an augmented (LR, HR) pair of uint8 H x W x C crops (views of the
    store); :func:`collate_crops` makes a batch of them float tensors in [0, 1].

    With ``degrade`` (on-the-fly degradation), the LR is made from the HR crop (and its
    surroundings) by ``degrade(hr, seed_key)`` instead of being cut from the stored LR image.
    """

    def __init__(self, store: ImageStore, crop: int, rows: int, seed: int,
                 degrade: Callable[[np.ndarray, tuple[int, ...]], np.ndarray] | None = None,
                 texture: float = 0.0):
        self.store, self.crop, self.rows, self.seed, self.degrade = store, crop, rows, seed, degrade
        self.scale = store.scale
        self.ys, self.xs = crop_positions(store.sizes, crop, self.scale)
        if not (self.ys * self.xs).any():
            raise SrpipeError(f"no training image is at least {crop}x{crop} px (train.patch_size); "
                              "use a smaller patch size or larger images")
        self.cells = texture_cells(store, crop, texture) if texture else None
        self._plan: tuple[int, np.ndarray] | None = None
        self._reads = 0

    def __len__(self) -> int:
        return 2**62  # indexed by sample number; the sampler says which

    def plan(self, epoch: int) -> np.ndarray:
        if self._plan is None or self._plan[0] != epoch:
            plan = (weighted_plan(self.cells, self.rows, self.seed, epoch) if self.cells is not None
                    else epoch_plan(self.ys, self.xs, self.rows, self.seed, epoch))
            self._plan = (epoch, plan)
        return self._plan[1]

    def __getitem__(self, g: int) -> tuple[np.ndarray, np.ndarray]:
        self._reads += 1
        if self._reads % RELEASE_EVERY == 0:
            self.store.release()
        epoch, row = divmod(g, self.rows)
        image, flip, turns, cy, cx = (int(v) for v in self.plan(epoch + 1)[row])
        c, s = self.crop // self.scale, self.scale
        hr = self.store.hr(image)[cy * s : (cy + c) * s, cx * s : (cx + c) * s]
        if self.degrade is not None:
            lr = self._degraded(image, cy, cx, (self.seed, epoch + 1, row))
        else:
            lr = self.store.lr(image)[cy : cy + c, cx : cx + c]
        return transform(lr, flip, turns), transform(hr, flip, turns)

    def _degraded(self, image: int, cy: int, cx: int, key: tuple[int, ...]) -> np.ndarray:
        """The LR crop at (cy, cx), degraded on the fly with ``key``'s draws: the HR crop and up to
        :data:`DEGRADE_MARGIN` LR pixels around it are degraded, then the crop is cut out, so that
        its blur and resize see the image around it as they do on a whole image (degrading the bare
        crop would make its borders unlike any held-out image's)."""
        c, s, m = self.crop // self.scale, self.scale, DEGRADE_MARGIN
        lr_h, lr_w = self.store.sizes[image] // s
        y0, x0 = max(0, cy - m), max(0, cx - m)
        y1, x1 = min(lr_h, cy + c + m), min(lr_w, cx + c + m)
        region = np.ascontiguousarray(self.store.hr(image)[y0 * s : y1 * s, x0 * s : x1 * s])
        return self.degrade(region, key)[cy - y0 : cy - y0 + c, cx - x0 : cx - x0 + c]


def too_small(store: ImageStore, crop: int) -> list[str]:
    """Names of the images that no crop of ``crop`` px fits in (they are never sampled)."""
    ys, xs = crop_positions(store.sizes, crop, store.scale)
    return [name for name, n in zip(store.names, ys * xs) if n == 0]


def epoch_steps(store: ImageStore, crop: int, global_batch: int) -> int:
    """Optimiser steps in one pass: as many crops as fit side by side in the images, per batch."""
    tiles = int(((store.sizes[:, 0] // crop) * (store.sizes[:, 1] // crop)).sum())
    return max(1, tiles // global_batch)


class RunSampler(Sampler):
    """Sample numbers of steps ``start`` .. ``end - 1`` for one process: each step is ``accum``
    micro-batches of ``batch`` samples, of which process ``rank`` of ``world`` takes its slice."""

    def __init__(self, start: int, end: int, batch: int, accum: int, rank: int = 0, world: int = 1):
        self.start, self.end, self.batch, self.accum = start, end, batch, accum
        self.per_rank = batch // world
        self.offset = rank * self.per_rank

    def __len__(self) -> int:
        return (self.end - self.start) * self.accum * self.per_rank

    def __iter__(self) -> Iterator[int]:
        for micro in range(self.start * self.accum, self.end * self.accum):
            first = micro * self.batch + self.offset
            yield from range(first, first + self.per_rank)


def make_loader(dataset: CropDataset, sampler: RunSampler, workers: int, cuda: bool) -> DataLoader:
    """Micro-batches in sample order; on CUDA, pinned memory and workers that stay up."""
    if dataset.store.names and too_small(dataset.store, dataset.crop):
        skipped = too_small(dataset.store, dataset.crop)
        warnings.warn(f"{len(skipped)} training image(s) smaller than the {dataset.crop}px crop are never "
                      f"sampled: {', '.join(skipped[:5])}{' ...' if len(skipped) > 5 else ''}", stacklevel=2)
    return DataLoader(dataset, batch_size=sampler.per_rank, sampler=sampler, num_workers=workers,
                      collate_fn=collate_crops, pin_memory=cuda, persistent_workers=workers > 0,
                      prefetch_factor=4 if workers > 0 else None)
