"""prepare-degradations: HR images cropped to a multiple of the scale, their LR versions, a manifest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .config import DegradationParams
from .datasets import dataset_files
from .degradations import Draw, degrade
from .imresize import crop_to_multiple
from .io import SrpipeError, atomic_path, list_images, read_image, write_image
from .progress import progress

MANIFEST = "manifest.csv"


def lr_dirname(scale: int) -> str:
    return f"lr_x{scale}"


def degraded_pair(
    path: Path, scale: int, degradation: DegradationParams | None, seed: int
) -> tuple[str, np.ndarray, np.ndarray, Draw]:
    """(PNG name, HR cropped to a multiple of ``scale``, its LR version, the draws) for one image."""
    hr = crop_to_multiple(read_image(path), scale)
    if min(hr.shape[:2]) < scale:
        raise SrpipeError(f"image smaller than the scale factor: {path}")
    lr, drawn = degrade(hr, scale, degradation, seed, path.stem)
    return path.stem + ".png", hr, lr, drawn


def prepare(
    source: str,
    out_dir: str | Path,
    scale: int,
    degradation: DegradationParams | None = None,
    seed: int = 0,
    limit: int | None = None,
    raw_dir: str | Path = "data/raw",
) -> pd.DataFrame:
    """Write ``out_dir/hr/*.png``, ``out_dir/lr_xS/*.png`` and ``out_dir/manifest.csv``.

    The manifest records, per image, the source file, sizes and every degradation draw. The
    folder appears whole or not at all. Returns the manifest.
    """
    files = dataset_files(source, raw_dir)[:limit]
    rows: list[dict] = []
    with atomic_path(out_dir) as tmp:
        (tmp / "hr").mkdir(parents=True)
        (tmp / lr_dirname(scale)).mkdir()
        for path in progress(files, desc=f"degrade {source}", unit="img"):
            name, hr, lr, drawn = degraded_pair(path, scale, degradation, seed)
            if any(r["image"] == name for r in rows):
                raise SrpipeError(f"two images named {path.stem} in {source}")
            write_image(tmp / "hr" / name, hr)
            write_image(tmp / lr_dirname(scale) / name, lr)
            kind = degradation.kind if degradation else "bicubic"
            rows.append({"image": name, "source": str(path), "height": hr.shape[0], "width": hr.shape[1],
                         "kind": kind, **drawn.as_row()})
        manifest = pd.DataFrame(rows)
        manifest.to_csv(tmp / MANIFEST, index=False)
    return manifest


def make_pairs(
    source: str, scale: int, degradation: DegradationParams | None = None, seed: int = 0,
    raw_dir: str | Path = "data/raw",
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, HR, LR) triples made on the fly from any dataset, as :func:`prepare` would write them."""
    return [degraded_pair(path, scale, degradation, seed)[:3] for path in dataset_files(source, raw_dir)]


def load_pairs(prepared_dir: str | Path, scale: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, HR, LR) triples from a folder written by :func:`prepare`."""
    prepared_dir = Path(prepared_dir)
    pairs = []
    for hr_path in list_images(prepared_dir / "hr"):
        lr_path = prepared_dir / lr_dirname(scale) / hr_path.name
        hr, lr = read_image(hr_path), read_image(lr_path)
        if hr.shape[0] != lr.shape[0] * scale or hr.shape[1] != lr.shape[1] * scale:
            raise SrpipeError(f"{lr_path}: size {lr.shape[:2]} is not HR {hr.shape[:2]} / {scale}")
        pairs.append((hr_path.name, hr, lr))
    return pairs
