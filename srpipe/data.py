"""prepare-degradations: HR images cropped to a multiple of the scale, their LR versions, a manifest.

Images are independent, so they are prepared on ``workers`` processes (each reads, degrades and
writes its own PNGs); the files and the manifest are byte-identical whatever the number of
workers, because every draw depends on (seed, image name) alone and the manifest keeps input order.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .config import DegradationParams
from .datasets import dataset_files, sha256_of
from .degradations import Draw, degrade, manifest_row
from .imresize import crop_to_multiple, imresize
from .io import SrpipeError, atomic_path, list_images, read_image, write_image
from .parallel import ordered_map
from .progress import progress

MANIFEST = "manifest.csv"


class TooSmall(SrpipeError):
    """An image too small for its set: under what the metrics need, or under one LR pixel."""


def lr_dirname(scale: int) -> str:
    return f"lr_x{scale}"


def _copy_of(path: Path, size: float) -> str:
    """How errors name an image's copy at ``size``."""
    return f"{path}" if size == 1 else f"{path} shrunk to {size:g} (data.train_scales)"


def copy_name(stem: str, size: float) -> str:
    """The PNG name of an image's copy at ``size`` times its sides (``NAME.png`` at 1)."""
    return f"{stem}.png" if size == 1 else f"{stem}@{size:g}.png"


def degraded_pair(
    path: Path, scale: int, degradation: DegradationParams | None, seed: int, min_side: int = 0, size: float = 1.0
) -> tuple[str, np.ndarray, np.ndarray, tuple[Draw, ...]]:
    """(PNG name, HR cropped to a multiple of ``scale``, its LR version, the draws per pass) for one
    image, first shrunk to ``size`` times its sides (MATLAB-style bicubic) below 1; an image whose
    sides are under ``min_side`` (what the metrics need) is an error (:class:`TooSmall`), as is one
    without a single LR pixel."""
    hr = read_image(path)
    hr = hr if size == 1 else imresize(hr, size)
    h, w = hr.shape[:2]
    hr = crop_to_multiple(hr, scale)
    need = max(scale, min_side)
    if min(hr.shape[:2]) < need:
        fix = "remove it from the set" if size == 1 else f"remove it, or {size:g} from data.train_scales"
        cropped = f" ({hr.shape[1]}x{hr.shape[0]} cropped to a multiple of {scale})" if hr.shape[:2] != (h, w) else ""
        what = "the scores need" if min_side else f"x{scale} needs"
        raise TooSmall(f"image too small: {_copy_of(path, size)} is {w}x{h} px{cropped}, {what} at least "
                       f"{need}x{need}; {fix}")
    name = copy_name(path.stem, size)
    lr, drawn = degrade(hr, scale, degradation, seed, name.removesuffix(".png"))
    return name, hr, lr, drawn


def source_files(source: str | Sequence[str], limit: int | None = None, raw_dir: str | Path = "data/raw") -> list[Path]:
    """The image files of a dataset (name or folder), or of several joined, at most ``limit``; two
    images that would both become ``NAME.png`` are an error, found before anything is written."""
    sources = [source] if isinstance(source, str) else list(source)
    files = [path for s in sources for path in dataset_files(s, raw_dir)][:limit]
    seen: dict[str, Path] = {}
    for path in files:
        if path.stem in seen:
            raise SrpipeError(f"two images named {path.stem} in {' + '.join(sources)}: {seen[path.stem]} and {path}; "
                              "rename one")
        seen[path.stem] = path
    return files


BSD300_TEST = {"bsd68", "cbsd68", "b100", "bsd100"}  # folder names of sets drawn from BSD300's test split


def check_held_out(train_files: list[Path], scored: dict[str, list[Path]], train_sources: list[str]) -> None:
    """Stop if a scored set (validation, evaluation) holds a training image, compared by content
    (the file's bytes, under any name or folder), or is B100 while BSD68 is trained on (both are
    BSD300's test split): its scores would be inflated. ``train_sources``: data.train's entries."""
    trained_on_bsd_test = any(Path(t).name.lower() in BSD300_TEST for t in train_sources)
    seen = {sha256_of(f): f for f in train_files}
    for name, files in scored.items():
        if trained_on_bsd_test and Path(name).name.lower() in BSD300_TEST:
            raise SrpipeError(f"{name} and the training set both come from BSD300's test split; score on another "
                              f"set or train without BSD68 (or set {ALLOW_OVERLAP}: true to score it anyway)")
        for f in files:
            if (twin := seen.get(sha256_of(f))) is not None:
                raise SrpipeError(f"{f} is also a training image ({twin}, same content): {name} would score the "
                                  f"model on what it trained on; give other images, or set {ALLOW_OVERLAP}: true "
                                  "to score them anyway (evaluate's metrics then say so)")


ALLOW_OVERLAP = "data.allow_overlap"


def _prepare_one(item: tuple[Path, float], out: Path, scale: int, degradation: DegradationParams | None, seed: int,
                 min_side: int) -> dict:
    """Write one (image, size) copy's HR and LR PNGs into ``out``; return its manifest row. A
    training photo too small for even one LR pixel (``min_side`` 0: a set that is not scored) is
    skipped: its row says why (``skipped``); a shrunk copy too small stops, naming data.train_scales."""
    path, size = item
    try:
        name, hr, lr, drawn = degraded_pair(path, scale, degradation, seed, min_side, size)
    except TooSmall as exc:
        if min_side or size != 1:
            raise
        return {"skipped": f"{exc.args[0].split('; ')[0]}: skipped"}
    write_image(out / "hr" / name, hr)
    write_image(out / lr_dirname(scale) / name, lr)
    kind = degradation.kind if degradation else "bicubic"
    return {"image": name, "source": str(path), "size": size, "height": hr.shape[0], "width": hr.shape[1],
            "kind": kind, **manifest_row(drawn)}


def _copies(files: list[Path], sizes: Sequence[float]) -> list[tuple[Path, float]]:
    """Every (image, size) to prepare; two that would both be written as one PNG are an error."""
    items, seen = [(path, size) for path in files for size in sizes], {}
    for item in items:
        if (twin := seen.setdefault(name := copy_name(item[0].stem, item[1]), item)) is not item:
            raise SrpipeError(f"{_copy_of(*twin)} and {_copy_of(*item)} would both be {name}; rename one")
    return items


def prepare(
    files: list[Path],
    out_dir: str | Path,
    scale: int,
    degradation: DegradationParams | None = None,
    seed: int = 0,
    workers: int = 1,
    desc: str = "degrade",
    min_side: int = 0,
    sizes: Sequence[float] = (1.0,),
) -> pd.DataFrame:
    """Write ``out_dir/hr/*.png``, ``out_dir/lr_xS/*.png`` and ``out_dir/manifest.csv`` for ``files``
    (from :func:`source_files`), on ``workers`` processes; images with a side under ``min_side``
    (sets that are scored: :func:`srpipe.metrics.min_side`) are an error. Each image enters once
    per factor of ``sizes``, shrunk to that factor of its sides (``NAME@0.5.png``; 1: as it is):
    VDSR's scale augmentation, which also averages away a JPEG source's block artefacts.

    The manifest records, per image, the source file, size factor, sizes and every degradation
    draw. The folder appears whole or not at all. Returns the manifest.
    """
    with atomic_path(out_dir, clean=True) as tmp:
        (tmp / "hr").mkdir(parents=True)
        (tmp / lr_dirname(scale)).mkdir()
        job = functools.partial(_prepare_one, out=tmp, scale=scale, degradation=degradation, seed=seed,
                                min_side=min_side)
        items = _copies(files, sizes)
        rows = list(progress(ordered_map(job, items, workers), total=len(items), desc=desc, unit="img"))
        for row in rows:
            if "skipped" in row:
                warnings.warn(row["skipped"], stacklevel=2)
        rows = [row for row in rows if "skipped" not in row]
        if not rows:
            raise SrpipeError(f"no image of {desc} is large enough to train on (each needs at least {scale}x{scale} px)")
        manifest = pd.DataFrame(rows)
        manifest.to_csv(tmp / MANIFEST, index=False)
    return manifest


@dataclass(frozen=True)
class PrepareJob:
    """One set for :func:`prepare_all`: its folder under the output (``train``, ``eval/set5``), its
    files (found beforehand), its degradation (None: bicubic), the smallest side it accepts and the
    sizes each image enters at (:func:`prepare`)."""

    folder: str
    files: list[Path]
    degradation: DegradationParams | None
    min_side: int = 0
    sizes: tuple[float, ...] = (1.0,)


def prepare_all(jobs: list[PrepareJob], out_dir: str | Path, scale: int, seed: int = 0, workers: int = 1) -> None:
    """:func:`prepare` every job into ``out_dir``, all or nothing: each top-level folder
    (``train``, ``valid``, ``eval``) is written under a temporary name, and all are renamed into
    place only when every set is done, so a failure leaves the previous outputs as they were."""
    out_dir = Path(out_dir)
    with contextlib.ExitStack() as stack:
        tops = {job.folder.split("/")[0] for job in jobs}
        tmp = {top: stack.enter_context(atomic_path(out_dir / top, clean=True)) for top in sorted(tops)}
        for job in jobs:
            top, _, sub = job.folder.partition("/")
            tmp[top].mkdir(exist_ok=True)
            prepare(job.files, tmp[top] / sub if sub else tmp[top], scale, job.degradation, seed, workers,
                    desc=job.folder, min_side=job.min_side, sizes=job.sizes)


class Pairs(Sequence):
    """(name, HR, LR) triples read from disk one at a time, so a large set is never all in memory."""

    def __init__(self, items: list[tuple[str, Path, Path]], scale: int):
        self.items, self.scale = items, scale

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return Pairs(self.items[i], self.scale)
        name, hr_path, lr_path = self.items[i]
        hr, lr = read_image(hr_path), read_image(lr_path)
        if hr.shape[0] != lr.shape[0] * self.scale or hr.shape[1] != lr.shape[1] * self.scale:
            raise SrpipeError(f"{lr_path}: size {lr.shape[:2]} is not HR {hr.shape[:2]} / {self.scale}")
        return name, hr, lr


def prepared_pairs(prepared_dir: str | Path, scale: int, limit: int | None = None) -> Pairs:
    """The (name, HR, LR) pairs of a folder written by :func:`prepare`, the first ``limit`` by name,
    read lazily."""
    prepared_dir = Path(prepared_dir)
    items = [(p.name, p, prepared_dir / lr_dirname(scale) / p.name) for p in list_images(prepared_dir / "hr")]
    return Pairs(items[:limit], scale)


def make_pairs(
    source: str, scale: int, degradation: DegradationParams | None = None, seed: int = 0,
    raw_dir: str | Path = "data/raw", min_side: int = 0,
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, HR, LR) triples made on the fly from any dataset, as :func:`prepare` would write them
    (two images of one name, or one under ``min_side``, stop before any is scored)."""
    return [degraded_pair(path, scale, degradation, seed, min_side)[:3] for path in source_files(source, None, raw_dir)]


def load_pairs(prepared_dir: str | Path, scale: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, HR, LR) triples from a folder written by :func:`prepare`, all in memory."""
    return list(prepared_pairs(prepared_dir, scale))
