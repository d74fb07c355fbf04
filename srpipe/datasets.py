"""Where images come from: bundled sample photos, standard SR datasets, or any folder.

A dataset is named by ``sample-train`` / ``sample-valid`` (colour photographs that scikit-image
ships in its wheel), by the name of a standard set that ``srpipe data fetch NAME`` downloads
into ``<raw_dir>/NAME/``, or by a folder path.
"""

from __future__ import annotations

import hashlib
import http.client
import tarfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .io import IMAGE_SUFFIXES, SrpipeError, atomic_path, list_images
from .progress import progress

# scikit-image's colour photographs (file names in skimage/data): all of them, and disjoint
# training and validation splits for the demo.
_SAMPLE_TRAIN = ("chelsea.png", "hubble_deep_field.jpg", "ihc.png", "motorcycle_left.png", "retina.jpg", "rocket.jpg")
_SAMPLE_VALID = ("astronaut.png", "coffee.png")
SAMPLE_SETS: dict[str, tuple[str, ...]] = {
    "sample": tuple(sorted(_SAMPLE_TRAIN + _SAMPLE_VALID)),
    "sample-train": _SAMPLE_TRAIN,
    "sample-valid": _SAMPLE_VALID,
}


@dataclass(frozen=True)
class Archive:
    url: str
    sha256: str
    filename: str


@dataclass(frozen=True)
class StandardDataset:
    name: str
    archives: tuple[Archive, ...]
    hr_subdir: str  # folder (inside the archives and inside raw_dir/NAME) that holds the HR images
    description: str


# Checksums as published by tensorflow_datasets (DIV2K) and pinned by public SR code (benchmark.tar).
_DIV2K = "https://data.vision.ee.ethz.ch/cvl/DIV2K/"
# EDSR's benchmark.tar (250 MB) holds Set5, Set14, B100 and Urban100, HR and LR.
_BENCHMARK = Archive(
    "https://cv.snu.ac.kr/research/EDSR/benchmark.tar",
    "80c21c333bbf6ceb5308b7243761f8284478274413a97b96f1d63e9045fd93e8",
    "benchmark.tar",
)
STANDARD: dict[str, StandardDataset] = {
    d.name: d
    for d in (
        StandardDataset(
            "div2k-train",
            (Archive(_DIV2K + "DIV2K_train_HR.zip",
                     "9d0b9c463f6e35b6c62cc6a930ee2224f670b34c1df841a57670f9acf0f6c335", "DIV2K_train_HR.zip"),),
            "DIV2K_train_HR", "DIV2K training set, 800 2K photos (3.5 GB)",
        ),
        StandardDataset(
            "div2k-valid",
            (Archive(_DIV2K + "DIV2K_valid_HR.zip",
                     "20dd31fd84d777bc1cf5d6b7654a3f569c0aec74458ae094122ad1d0489900fc", "DIV2K_valid_HR.zip"),),
            "DIV2K_valid_HR", "DIV2K validation set, 100 2K photos (450 MB)",
        ),
        StandardDataset("set5", (_BENCHMARK,), "benchmark/Set5/HR", "Set5, 5 images (from EDSR's benchmark.tar)"),
        StandardDataset("set14", (_BENCHMARK,), "benchmark/Set14/HR", "Set14, 14 images (from EDSR's benchmark.tar)"),
        StandardDataset("b100", (_BENCHMARK,), "benchmark/B100/HR", "BSD100, 100 images (from EDSR's benchmark.tar)"),
        StandardDataset(
            "urban100", (_BENCHMARK,), "benchmark/Urban100/HR", "Urban100, 100 images (from EDSR's benchmark.tar)"
        ),
        StandardDataset(
            "manga109", (), "HR",
            "Manga109, 109 images; its licence forbids redistribution: request it from its authors and put "
            "the HR images in <raw_dir>/manga109/HR",
        ),
    )
}


def sample_dir() -> Path:
    import skimage

    return Path(skimage.__file__).parent / "data"


def hr_dir(dataset: StandardDataset, raw_dir: str | Path) -> Path:
    return Path(raw_dir) / dataset.name / dataset.hr_subdir


def is_present(dataset: StandardDataset, raw_dir: str | Path) -> bool:
    folder = hr_dir(dataset, raw_dir)
    return folder.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in folder.iterdir())


def dataset_files(source: str, raw_dir: str | Path = "data/raw") -> list[Path]:
    """Image files of a dataset given by name or folder, sorted."""
    if source in SAMPLE_SETS:
        return [sample_dir() / name for name in SAMPLE_SETS[source]]
    if source in STANDARD:
        dataset = STANDARD[source]
        if not is_present(dataset, raw_dir):
            raise SrpipeError(f"dataset {source!r} is not in {Path(raw_dir) / source}; run: srpipe data fetch {source}")
        return list_images(hr_dir(dataset, raw_dir))
    return list_images(source)


def dataset_key(source: str) -> str:
    """Short name for metrics: the dataset's name, or a folder's lower-cased base name."""
    if source in SAMPLE_SETS or source in STANDARD:
        return source
    return Path(source).resolve().name.lower()


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download(url: str, dest: Path, sha256: str | None = None, timeout: float = 60.0) -> None:
    """Stream ``url`` into ``dest`` with a progress bar; a short or corrupt download is an error."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, dest.open("wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            received, digest = 0, hashlib.sha256()
            with progress(total=total, unit="B", unit_scale=True, desc=dest.name) as bar:
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
    except http.client.IncompleteRead as exc:
        raise SrpipeError(f"download of {url} was cut short after {len(exc.partial)} more bytes") from None
    except (urllib.error.URLError, OSError) as exc:
        raise SrpipeError(f"cannot download {url}: {getattr(exc, 'reason', exc)}") from None
    if total is not None and received != total:
        raise SrpipeError(f"download of {url} is truncated: got {received} of {total} bytes")
    if sha256 and digest.hexdigest() != sha256.lower():
        raise SrpipeError(f"checksum mismatch for {url}: expected sha256 {sha256}, got {digest.hexdigest()}")


def _safe_members(names: list[str], target: Path) -> None:
    root = target.resolve()
    for name in names:
        if not (target / name).resolve().is_relative_to(root):
            raise SrpipeError(f"archive member escapes the target folder: {name}")


def extract(archive: Path, target: Path, prefix: str = "") -> None:
    """Unpack the members of a zip or tar archive under ``prefix`` into ``target``,
    refusing members that point outside it."""

    def wanted(name: str) -> bool:
        return name.startswith(prefix.rstrip("/") + "/") if prefix else True

    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                names = [n for n in z.namelist() if wanted(n)]
                _safe_members(names, target)
                z.extractall(target, members=names)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as t:
                members = [m for m in t.getmembers() if wanted(m.name)]
                _safe_members([m.name for m in members], target)
                t.extractall(target, members=members, filter="data")
        else:
            raise SrpipeError(f"{archive.name} is neither a zip nor a tar archive")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as exc:
        raise SrpipeError(f"cannot extract {archive.name}: {exc}") from None


def cached_archive(archive: Archive, raw_dir: str | Path) -> Path:
    """A verified copy of ``archive`` in ``raw_dir/.archives`` (downloaded once, shared by datasets)."""
    cache = Path(raw_dir) / ".archives"
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / archive.filename
    if path.is_file() and sha256_of(path) == archive.sha256:
        return path
    with atomic_path(path) as tmp:
        download(archive.url, tmp, archive.sha256)
    return path


def fetch(dataset: StandardDataset, raw_dir: str | Path) -> tuple[Path, bool]:
    """Download, verify and extract ``dataset`` into ``raw_dir/NAME`` (all or nothing).

    Returns the HR folder and whether anything was fetched (False: it was already present).
    Verified archives stay in ``raw_dir/.archives`` so that sets sharing one are downloaded once.
    """
    if is_present(dataset, raw_dir):
        return hr_dir(dataset, raw_dir), False
    if not dataset.archives:
        raise SrpipeError(f"{dataset.name} cannot be downloaded: {dataset.description}")
    with atomic_path(Path(raw_dir) / dataset.name) as tmp:
        tmp.mkdir()
        for archive in dataset.archives:
            extract(cached_archive(archive, raw_dir), tmp, prefix=dataset.hr_subdir)
        if not (tmp / dataset.hr_subdir).is_dir():
            raise SrpipeError(f"{dataset.name}: the archives hold no folder {dataset.hr_subdir!r}")
    return hr_dir(dataset, raw_dir), True
