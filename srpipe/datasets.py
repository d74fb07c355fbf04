"""Where images come from: bundled sample photos, standard SR datasets, or any folder.

A dataset is named by ``sample-train`` / ``sample-valid`` (colour photographs that scikit-image
ships in its wheel), by the name of a standard set that ``srpipe data fetch NAME`` downloads
into ``<raw_dir>/NAME/`` (or that the user puts there by hand), or by a folder path.
"""

from __future__ import annotations

import hashlib
import tarfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .io import IMAGE_SUFFIXES, SrpipeError, atomic_path, check_writable, list_images
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
    # (a set put in place by hand may instead have its HR images directly in raw_dir/NAME)
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
            "the HR images in <raw_dir>/manga109/",
        ),
    )
}


def sample_dir() -> Path:
    import skimage

    return Path(skimage.__file__).parent / "data"


def _holds_images(folder: Path) -> bool:
    return folder.is_dir() and any(p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES for p in folder.iterdir())


def hr_dir(dataset: StandardDataset, raw_dir: str | Path) -> Path | None:
    """The folder that holds ``dataset``'s HR images: the archive's layout that ``fetch`` writes
    (``raw_dir/NAME/<hr_subdir>``) or, put in place by hand, ``raw_dir/NAME`` itself; None if absent."""
    root = Path(raw_dir) / dataset.name
    return next((folder for folder in (root / dataset.hr_subdir, root) if _holds_images(folder)), None)


def is_present(dataset: StandardDataset, raw_dir: str | Path) -> bool:
    return hr_dir(dataset, raw_dir) is not None


def _absent(dataset: StandardDataset, raw_dir: str | Path) -> str:
    root = Path(raw_dir) / dataset.name
    how = f"run `srpipe data fetch {dataset.name}`, or" if dataset.archives else "request it from its authors and"
    return f"dataset {dataset.name!r} is not in {root}/: {how} put its HR images in {root}/ by hand"


def dataset_files(source: str, raw_dir: str | Path = "data/raw") -> list[Path]:
    """Image files of a dataset given by name or folder, sorted."""
    if source in SAMPLE_SETS:
        return [sample_dir() / name for name in SAMPLE_SETS[source]]
    if source in STANDARD:
        folder = hr_dir(STANDARD[source], raw_dir)
        if folder is None:
            raise SrpipeError(_absent(STANDARD[source], raw_dir))
        return list_images(folder)
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


class _Bar:
    """srpipe's progress bar behind pooch's protocol (total, update, reset, close), shown once pooch
    knows the size (a tqdm bar handed to pooch directly would show a dummy total while connecting)."""

    def __init__(self, desc: str):
        self.desc, self.bar = desc, None

    @property
    def total(self) -> int | None:
        return self.bar.total if self.bar else None

    @total.setter
    def total(self, size: int) -> None:
        self.bar = progress(total=size or None, unit="B", unit_scale=True, desc=self.desc)

    def update(self, n: int) -> None:
        self.bar.update(n)

    def reset(self) -> None:
        self.bar.reset()

    def close(self) -> None:
        if self.bar:
            self.bar.close()


def _download(url: str, output_file: str, pooch_: object) -> None:
    """pooch's HTTP download, in 1 MiB chunks (its 1 KiB default is 6x slower), with srpipe's bar."""
    import pooch

    bar = _Bar(url.rsplit("/", 1)[-1])
    try:
        pooch.HTTPDownloader(progressbar=bar, chunk_size=1 << 20, timeout=60)(url, output_file, pooch_)
    finally:
        bar.close()


def _cause(exc: BaseException) -> str:
    """The innermost reason of a requests/urllib3 failure, in a few words ("Connection refused")."""
    reason: BaseException = exc
    while reason.__cause__ or reason.__context__:
        reason = reason.__cause__ or reason.__context__
        if isinstance(reason, OSError) and reason.strerror:
            return reason.strerror
    return "timed out" if isinstance(reason, TimeoutError) else str(reason)


@contextmanager
def _download_errors(archive: Archive, by_hand: Path) -> Iterator[None]:
    """pooch's and requests' exceptions as one-line SrpipeErrors naming the URL and what to do."""
    import requests

    offline = f"put the HR images in {by_hand}/ by hand"
    try:
        yield
    except requests.HTTPError as exc:
        answer = f"{exc.response.status_code} {exc.response.reason}"
        raise SrpipeError(f"cannot download {archive.url}: the server answered {answer}; {offline}") from None
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise SrpipeError(f"cannot reach {archive.url} ({_cause(exc)}): no network? Fetch again when online, "
                          f"or {offline}") from None
    except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError) as exc:
        raise SrpipeError(f"download of {archive.url} was cut short ({_cause(exc)}); fetch again") from None
    except requests.RequestException as exc:
        raise SrpipeError(f"cannot download {archive.url} ({_cause(exc)}); {offline}") from None


def cached_archive(archive: Archive, raw_dir: str | Path, by_hand: Path) -> Path:
    """A verified copy of ``archive`` in ``raw_dir/.archives``, shared by the datasets it holds.

    Downloaded once (pooch's HTTP downloader) to :func:`~srpipe.io.atomic_path`'s temporary name,
    renamed only when its SHA-256 matches, and again if the copy there is corrupt; what a killed
    download left (SIGKILL, power loss) is removed by the next fetch. Failures name ``by_hand``:
    where the user may put the images instead.
    """
    import pooch

    cache = Path(raw_dir) / ".archives"
    check_writable(cache, folder=True)
    target = cache / archive.filename
    if target.is_file() and pooch.file_hash(str(target)) == archive.sha256.lower():
        return target
    with _download_errors(archive, by_hand), atomic_path(target, clean=True) as tmp:
        _download(archive.url, str(tmp), None)
        got = pooch.file_hash(str(tmp))
        if got != archive.sha256.lower():
            raise SrpipeError(f"checksum mismatch for {archive.url}: expected sha256 {archive.sha256}, got {got}; "
                              "the download is corrupt or the file changed on the server: fetch again, or "
                              f"put the HR images in {by_hand}/ by hand")
    return target


def fetch(dataset: StandardDataset, raw_dir: str | Path) -> tuple[Path, bool]:
    """Download, verify and extract ``dataset`` into ``raw_dir/NAME`` (all or nothing).

    Returns the HR folder and whether anything was fetched (False: it was already present,
    fetched or put there by hand). Verified archives stay in ``raw_dir/.archives`` so that sets
    sharing one are downloaded once.
    """
    found = hr_dir(dataset, raw_dir)
    if found is not None:
        return found, False
    root = Path(raw_dir) / dataset.name
    if not dataset.archives:
        why = dataset.description.replace("<raw_dir>", str(raw_dir))
        raise SrpipeError(f"{dataset.name} cannot be downloaded: {why}")
    if root.is_dir() and any(root.iterdir()):
        raise SrpipeError(f"{root}/ holds no images (directly or in {dataset.hr_subdir}/) but is not empty; fetching "
                          f"would replace it: move it away, or put the HR images directly in {root}/")
    archives = [cached_archive(archive, raw_dir, root) for archive in dataset.archives]
    with atomic_path(root) as tmp:
        tmp.mkdir()
        for archive in archives:
            extract(archive, tmp, prefix=dataset.hr_subdir)
        if not (tmp / dataset.hr_subdir).is_dir():
            raise SrpipeError(f"{dataset.name}: the archives hold no folder {dataset.hr_subdir!r}")
    return root / dataset.hr_subdir, True
