"""extract-patches: the prepared training images packed into one memory-mappable store.

Design: whole images, not patches. ``hr.bin`` and ``lr.bin`` hold the raw H x W x 3 uint8 pixels
of every training image one after another, and ``index.csv`` gives each image's name, HR and LR
sizes, byte offsets and the sha256 of its pixels. Random HR crops of ``train.patch_size`` are
cut from it at training time (:mod:`srpipe.training.sampling`). Why this and not the others:

- it does not multiply the data: the store is exactly the decoded HR + LR bytes plus a small
  index, where overlapping patches multiply them by (patch / stride)^2 (2.45x at 64 px / stride
  40), and fix the crop size in the data;
- every crop position of every image can be drawn, of any size, so changing the crop size does
  not re-run the data stages (BasicSR's 480 px sub-images lose the crops that straddle two
  sub-images and still bake a size into the data);
- nothing is decoded while training: a crop reads only its rows of a memory map, and DataLoader
  workers share the operating system's page cache instead of holding copies. The map is
  advised for random access (no read-ahead of pages a crop does not need) and the process drops
  its mapped pages every few hundred crops (:meth:`ImageStore.release`; they stay in the page
  cache), so a training process's resident memory stays flat however large the store is;
- three files: one compact DVC output, not thousands of small ones.

Packing streams: image sizes are known in advance (prepare-degradations' manifest), so every
image's offsets are too; each worker decodes one image pair and writes it at its offsets. Memory
holds a few images whatever their number, and the bytes do not depend on the number of workers.
"""

from __future__ import annotations

import functools
import hashlib
import mmap
import os
from pathlib import Path

import numpy as np
import pandas as pd

from .data import MANIFEST, lr_dirname
from .io import SrpipeError, atomic_path, read_image
from .parallel import ordered_map
from .progress import progress

INDEX, HR_FILE, LR_FILE = "index.csv", "hr.bin", "lr.bin"


def plan_store(prepared_dir: Path, scale: int) -> pd.DataFrame:
    """Name, HR and LR sizes and byte offsets of every image, from prepare-degradations' manifest."""
    try:
        manifest = pd.read_csv(prepared_dir / MANIFEST)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise SrpipeError(f"cannot read {prepared_dir / MANIFEST} ({exc}); run prepare-degradations first") from None
    index = manifest[["image", "height", "width"]].copy()
    if (index["height"] % scale).any() or (index["width"] % scale).any():
        raise SrpipeError(f"{prepared_dir / MANIFEST}: image sizes are not multiples of scale {scale}; "
                          "run prepare-degradations with this scale")
    index["lr_height"], index["lr_width"] = index["height"] // scale, index["width"] // scale
    hr_bytes = index["height"] * index["width"] * 3
    lr_bytes = index["lr_height"] * index["lr_width"] * 3
    index["hr_offset"] = hr_bytes.cumsum() - hr_bytes
    index["lr_offset"] = lr_bytes.cumsum() - lr_bytes
    return index


def _write_at(path: Path, offset: int, img: np.ndarray) -> None:
    data = memoryview(np.ascontiguousarray(img)).cast("B")
    fd = os.open(path, os.O_WRONLY)
    try:
        while data:
            written = os.pwrite(fd, data, offset)
            data, offset = data[written:], offset + written
    finally:
        os.close(fd)


def _pack_one(row: dict, prepared_dir: Path, out: Path, scale: int) -> str:
    """Decode one HR/LR pair, write it at its offsets, return the sha256 of its pixels."""
    digest = hashlib.sha256()
    for folder, file, h, w, offset in (("hr", HR_FILE, row["height"], row["width"], row["hr_offset"]),
                                       (lr_dirname(scale), LR_FILE, row["lr_height"], row["lr_width"],
                                        row["lr_offset"])):
        path = prepared_dir / folder / row["image"]
        img = read_image(path)
        if img.shape != (h, w, 3):
            raise SrpipeError(f"{path}: {img.shape[1]}x{img.shape[0]}, the manifest says {w}x{h}; "
                              "run prepare-degradations again")
        _write_at(out / file, int(offset), img)
        digest.update(img.data)
    return digest.hexdigest()


def extract(prepared_dir: str | Path, out_dir: str | Path, scale: int, workers: int = 1) -> pd.DataFrame:
    """Pack every prepared training image (HR and LR) into ``out_dir``; returns the index."""
    prepared_dir = Path(prepared_dir)
    index = plan_store(prepared_dir, scale)
    if index.empty:
        raise SrpipeError(f"no images in {prepared_dir}")
    with atomic_path(out_dir, clean=True) as tmp:
        tmp.mkdir()
        for file, column, size in ((HR_FILE, "hr_offset", index["height"] * index["width"]),
                                   (LR_FILE, "lr_offset", index["lr_height"] * index["lr_width"])):
            with open(tmp / file, "wb") as f:
                f.truncate(int(index[column].iloc[-1] + size.iloc[-1] * 3))
        job = functools.partial(_pack_one, prepared_dir=prepared_dir, out=tmp, scale=scale)
        rows = index.to_dict("records")
        index["sha256"] = list(progress(ordered_map(job, rows, workers), total=len(rows), desc="pack", unit="img"))
        index.to_csv(tmp / INDEX, index=False)
    return index


class ImageStore:
    """Read access to a store written by :func:`extract`: ``hr(i)`` and ``lr(i)`` are
    H x W x 3 uint8 views of a memory map. Picklable: each process maps the files itself."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        try:
            self.index = pd.read_csv(self.folder / INDEX)
        except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
            raise SrpipeError(f"cannot read the image store in {self.folder} ({exc}); run extract-patches") from None
        wanted = {"image", "height", "width", "lr_height", "lr_width", "hr_offset", "lr_offset", "sha256"}
        if not wanted <= set(self.index.columns):
            raise SrpipeError(f"{self.folder / INDEX} is not an image store index; run extract-patches again")
        self.names = self.index["image"].tolist()
        self.sizes = self.index[["height", "width"]].to_numpy()
        self.scale = int(self.index["height"].iloc[0] // self.index["lr_height"].iloc[0])
        self._rows = self.index[["height", "width", "lr_height", "lr_width", "hr_offset", "lr_offset"]].to_numpy()
        self._maps: dict[str, tuple[mmap.mmap, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.names)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_maps": {}}

    def _map(self, file: str) -> np.ndarray:
        if file not in self._maps:
            try:
                with open(self.folder / file, "rb") as f:
                    mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            except (OSError, ValueError) as exc:
                raise SrpipeError(f"cannot read {self.folder / file}: {exc}; run extract-patches again") from None
            if hasattr(mmap, "MADV_RANDOM"):
                mapped.madvise(mmap.MADV_RANDOM)  # a crop needs a few rows: no read-ahead around them
            self._maps[file] = (mapped, np.frombuffer(mapped, np.uint8))
        return self._maps[file][1]

    def release(self) -> None:
        """Unmap the pages this process has touched (the page cache keeps them, so the next read is
        still a memory copy): resident memory stays at what recent crops used, not the store's size."""
        for mapped, _ in self._maps.values():
            if hasattr(mmap, "MADV_DONTNEED"):
                mapped.madvise(mmap.MADV_DONTNEED)

    def hr(self, i: int) -> np.ndarray:
        h, w, _, _, offset, _ = self._rows[i]
        return self._map(HR_FILE)[offset : offset + h * w * 3].reshape(h, w, 3)

    def lr(self, i: int) -> np.ndarray:
        _, _, h, w, _, offset = self._rows[i]
        return self._map(LR_FILE)[offset : offset + h * w * 3].reshape(h, w, 3)

    def fingerprint(self) -> str:
        """sha256 of the index, which holds every image's pixel checksum: what the weights depend on."""
        return hashlib.sha256((self.folder / INDEX).read_bytes()).hexdigest()


def load(patches_dir: str | Path) -> ImageStore:
    return ImageStore(patches_dir)
