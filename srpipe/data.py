"""Datasets and the prepare-degradations step.

A dataset is either a bundled name (``sample-train`` / ``sample-valid``: colour photographs that
scikit-image ships in its wheel, so the demo needs no download) or a folder of images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from .progress import progress

from .imresize import crop_to_multiple, imresize
from .io import SrpipeError, atomic_path, list_images, read_image, write_image

# Disjoint splits of scikit-image's colour photographs (file names in skimage/data).
SAMPLE_SETS: dict[str, tuple[str, ...]] = {
    "sample-train": (
        "chelsea.png", "hubble_deep_field.jpg", "ihc.png", "motorcycle_left.png", "retina.jpg", "rocket.jpg",
    ),
    "sample-valid": ("astronaut.png", "coffee.png"),
}


def sample_dir() -> Path:
    import skimage

    return Path(skimage.__file__).parent / "data"


def dataset_files(source: str) -> list[Path]:
    """Image files of a dataset given by name or folder."""
    if source in SAMPLE_SETS:
        return [sample_dir() / name for name in SAMPLE_SETS[source]]
    return list_images(source)


def lr_dirname(scale: int) -> str:
    return f"lr_x{scale}"


def degrade(hr: np.ndarray, scale: int) -> np.ndarray:
    """LR image from a HR image whose sides are multiples of ``scale``."""
    return imresize(hr, 1.0 / scale)


def prepare(source: str, out_dir: str | Path, scale: int, limit: int | None = None) -> list[str]:
    """Write ``out_dir/hr/*.png`` (cropped to a multiple of scale) and ``out_dir/lr_xS/*.png``.

    The folder appears whole or not at all. Returns the image names written.
    """
    files = dataset_files(source)[:limit]
    names: list[str] = []
    with atomic_path(out_dir) as tmp:
        (tmp / "hr").mkdir(parents=True)
        (tmp / lr_dirname(scale)).mkdir()
        for path in progress(files, desc=f"degrade {source}", unit="img"):
            hr = crop_to_multiple(read_image(path), scale)
            if min(hr.shape[:2]) < scale:
                raise SrpipeError(f"image smaller than the scale factor: {path}")
            name = path.stem + ".png"
            if name in names:
                raise SrpipeError(f"two images named {path.stem} in {source}")
            write_image(tmp / "hr" / name, hr)
            write_image(tmp / lr_dirname(scale) / name, degrade(hr, scale))
            names.append(name)
    return names


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
