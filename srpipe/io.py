"""Image files and atomic output: the only place that touches the file system for images."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

# The one list of image formats srpipe reads from folders and writes (`upscale --format`).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
TIFF_SUFFIXES = (".tif", ".tiff")
# What libjpeg says (on stderr, unseen by OpenCV's caller) when a file is cut short or damaged;
# OpenCV then returns the image with a grey remainder.
JPEG_DAMAGE = ("Premature end of JPEG file", "Corrupt JPEG data")

cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # srpipe reports unreadable files itself


class SrpipeError(RuntimeError):
    """A user-facing failure: bad input data, missing files. The CLI prints it and exits 1."""


class DiskFull(SrpipeError):
    """No space left where an output is written: the whole command stops (not only one image)."""


FULL_BYTES = 1 << 20  # a write that failed in a library's own words, with less free space than this: a full disk


UNFINISHED = ".unfinished"  # a folder of outputs a long run keeps until it publishes them beside it


def user_path(path: str | Path) -> Path:
    """``path`` as its user knows it: each temporary of :func:`atomic_outputs` in it (however nested)
    named as the output it becomes, ``.train.PID.RANDOM.tmp/hr/a.png`` as ``train/hr/a.png``, and
    ``out/.unfinished/best.pt`` as ``out/best.pt``."""
    parts = []
    for part in Path(path).parts:
        while (match := TEMPORARY.fullmatch(part)) is not None:
            part = match["stem"] + (match["suffix"] or "")
        if part != UNFINISHED:
            parts.append(part)
    return Path(*parts) if parts else Path(path)


# how :func:`atomic_outputs` names the temporary of an output STEM.SUFFIX: .STEM.PID.RANDOM.tmp.SUFFIX
TEMPORARY = re.compile(r"\.(?P<stem>.+)\.(?P<pid>\d+)\.[a-z0-9_]{8}\.tmp(?P<suffix>\.[^.]*)?")


def _free_bytes(path: Path) -> float:
    for folder in (path, *path.parents):
        with contextlib.suppress(OSError):
            if folder.exists():
                return shutil.disk_usage(folder).free
    return float("inf")


def disk_full_error(exc: BaseException, where: str | Path) -> DiskFull | None:
    """The one-line error for ``exc`` if it means the disk under ``where`` is full (ENOSPC, or a
    library's failed write while less than :data:`FULL_BYTES` are free); None otherwise."""
    if isinstance(exc, DiskFull):
        return exc
    if isinstance(exc, OSError):
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            return None
        where = exc.filename or where
    elif not isinstance(exc, Exception) or _free_bytes(Path(where)) >= FULL_BYTES:
        return None
    return DiskFull(f"no space left on device while writing {user_path(where)}; free some space there or write "
                    "the output elsewhere, and run again")


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly in ``folder``, sorted by name. Missing or empty folders are errors."""
    folder = Path(folder)
    if folder.is_file():
        raise SrpipeError(f"{folder} is a file, not a folder of images; give the folder that holds it")
    if not folder.is_dir():
        raise SrpipeError(f"image folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SrpipeError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in folder: {folder}")
    return files


def to_rgb_uint8(img: np.ndarray, name: str = "image") -> np.ndarray:
    """A decoded image (gray or RGB; uint8 or uint16; float in [0, 1]) as HxWx3 uint8 RGB."""
    if img.dtype == np.uint16:
        img = np.floor(img.astype(np.float64) / 257.0 + 0.5).astype(np.uint8)
    elif img.dtype != np.uint8:
        if np.issubdtype(img.dtype, np.floating):
            img = np.floor(np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        else:
            raise SrpipeError(f"{name}: unsupported pixel type {img.dtype}")
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3:
        raise SrpipeError(f"{name}: unsupported image shape {img.shape}")
    channels = img.shape[2]
    if channels == 1:
        img = np.repeat(img, 3, axis=2)
    elif channels != 3:
        raise SrpipeError(f"{name}: unsupported number of channels {channels}")
    return np.ascontiguousarray(img)


@contextlib.contextmanager
def _stderr_lines() -> Iterator[list[str]]:
    """Collect what native code writes on file descriptor 2 inside the block (libjpeg's warnings)."""
    lines: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines.extend(sink.read().decode(errors="replace").splitlines())


def imread_raw(path: str | Path) -> np.ndarray:
    """Decode an image file as OpenCV does (BGR order, any depth and channels); a missing,
    unreadable, truncated or damaged file raises SrpipeError naming it."""
    path = Path(path)
    if not path.is_file():
        raise SrpipeError(f"image not found: {path}")
    with _stderr_lines() as said:  # libjpeg's and libpng's own words, which OpenCV does not pass on
        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    damage = [line for line in said if line.startswith(JPEG_DAMAGE)]
    if img is None:
        why = f" ({said[0].strip()})" if said else ""
        raise SrpipeError(f"cannot read image (corrupt, truncated or unsupported format{why}): {path}")
    if damage:
        raise SrpipeError(f"damaged image (libjpeg: {damage[0].rstrip('.')}): {path}; "
                          "its lower part would be grey: replace or remove the file")
    if said:
        print("\n".join(said), file=sys.stderr)
    if img.ndim == 3 and img.shape[2] == 4 and img.dtype == np.uint8 and path.suffix.lower() in TIFF_SUFFIXES:
        img = _unassociated_alpha_tiff(path, img)
    return upright(img, exif_orientation(path))


# EXIF orientation (tag 274) -> the transform that makes the stored pixels upright, as viewers show them
ORIENTATIONS = {
    2: lambda a: a[:, ::-1],  # mirrored
    3: lambda a: a[::-1, ::-1],  # turned 180 degrees
    4: lambda a: a[::-1],  # flipped
    5: lambda a: a.swapaxes(0, 1),  # mirrored and turned
    6: lambda a: np.rot90(a, -1),  # turned 90 degrees (a phone held upright)
    7: lambda a: np.rot90(a, 2).swapaxes(0, 1),
    8: lambda a: np.rot90(a, 1),
}


def exif_orientation(path: Path) -> int:
    """The EXIF orientation a file records (1, upright, when none or unreadable)."""
    if path.suffix.lower() not in (".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".png"):
        return 1
    from PIL import Image

    try:
        with Image.open(path) as im:
            return int(im.getexif().get(274, 1))
    except Exception:  # noqa: BLE001: a file OpenCV decoded but Pillow cannot parse has no orientation for us
        return 1


def upright(img: np.ndarray, orientation: int) -> np.ndarray:
    """The pixels as a viewer shows them: ``img`` turned and mirrored by its EXIF ``orientation``."""
    turn = ORIENTATIONS.get(orientation)
    return img if turn is None else np.ascontiguousarray(turn(img))


def _unassociated_alpha_tiff(path: Path, bgra: np.ndarray) -> np.ndarray:
    """An 8-bit TIFF with unassociated alpha (ExtraSamples = 2: Pillow's, GIMP's, tifffile's) decoded
    by Pillow: OpenCV reads it through libtiff's RGBA interface, which multiplies the colour by
    alpha, so a half-transparent pixel came out half as bright and a transparent one black."""
    from PIL import Image

    with Image.open(path) as im:
        extra = im.tag_v2.get(338, ()) if hasattr(im, "tag_v2") else ()
        if im.mode != "RGBA" or 2 not in (extra if isinstance(extra, tuple) else (extra,)):
            return bgra
        return cv2.cvtColor(np.asarray(im), cv2.COLOR_RGBA2BGRA)


def read_image_alpha(path: str | Path) -> tuple[np.ndarray, np.ndarray | None, int]:
    """Read an image file as (HxWx3 uint8 RGB, HxW uint8 alpha or None, bits per channel in the
    file): what :func:`read_image` gives, plus what it drops, for writers that keep it."""
    img = imread_raw(path)
    bits = img.dtype.itemsize * 8
    alpha = None
    if img.ndim == 3 and img.shape[2] == 4:
        img, alpha = img[:, :, :3], np.ascontiguousarray(to_rgb_uint8(img[:, :, 3], str(path))[:, :, 0])
    if img.ndim == 3 and img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return to_rgb_uint8(img, str(path)), alpha, bits


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as HxWx3 uint8 RGB; an unreadable or damaged file raises SrpipeError naming it."""
    rgb, alpha, _ = read_image_alpha(path)
    if alpha is not None:
        warnings.warn(f"{path}: alpha channel dropped", stacklevel=2)
    return rgb


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(path: str | Path) -> list[Path]:
    """Remove the temporaries that killed writers of ``path`` left beside it (only srpipe's own,
    recognised by their name, and only those whose process is gone); returns them."""
    path = Path(path)
    return _remove_dead(path.parent, lambda m: m["stem"] == path.stem and (m["suffix"] or "") == path.suffix)


def remove_stale_in(folder: str | Path) -> list[Path]:
    """Remove every temporary that a killed srpipe writer left in ``folder`` (an output folder of
    many files, such as upscale's), whatever output it was for; returns them."""
    return _remove_dead(Path(folder), lambda match: True)


def _remove_dead(folder: Path, wanted: Callable[[re.Match], bool]) -> list[Path]:
    """Remove the temporaries (:data:`TEMPORARY`) in ``folder`` that ``wanted`` picks and whose
    writer is gone, each said in a warning."""
    stale = []
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for entry in os.scandir(folder):
            match = TEMPORARY.fullmatch(entry.name)
            if match and wanted(match) and int(match["pid"]) != os.getpid() and not _alive(int(match["pid"])):
                stale.append(Path(entry.path))
    for old in stale:
        size = sum(f.stat().st_size for f in old.rglob("*") if f.is_file()) if old.is_dir() else old.stat().st_size
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)
        warnings.warn(f"removed {old} ({size / 2**20:.1f} MiB), left by a killed run", stacklevel=4)
    return stale


LOCK_NAME = ".srpipe.lock"  # in a folder one run writes at a time; its PID in LOCK_NAME + ".pid"


@contextlib.contextmanager
def folder_lock(folder: str | Path, what: str) -> Iterator[None]:
    """Hold ``folder`` for this process while the block runs: a second run into it stops with one
    line naming the folder and the holder's PID. The lock is the operating system's (filelock,
    fcntl), so a killed holder's lock is gone with it and never blocks the next run."""
    from filelock import FileLock, Timeout

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock, pid_file = FileLock(folder / LOCK_NAME), folder / (LOCK_NAME + ".pid")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        holder = pid_file.read_text().strip() if pid_file.is_file() else "unknown"
        raise SrpipeError(f"{folder} is in use by another {what} (PID {holder}); wait for it to end, or write "
                          "into another folder") from None
    try:
        pid_file.write_text(f"{os.getpid()}\n")
        yield
    finally:
        pid_file.unlink(missing_ok=True)
        lock.release()


def _temporary_beside(path: Path) -> Path:
    """A fresh name beside ``path`` that :func:`remove_stale` recognises (nothing is created)."""
    fd, name = tempfile.mkstemp(prefix=f".{path.stem}.{os.getpid()}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    os.unlink(name)
    return Path(name)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM until the block ends (in the main thread; elsewhere, no change): a
    swap of several outputs is not cut in two."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    kept = {sig: signal.signal(sig, lambda number, frame: caught.append(number)) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in kept.items():
            signal.signal(sig, handler)
        for sig in caught[:1]:
            signal.raise_signal(sig)


def _keep_aside(path: Path, old: Path) -> None:
    """Keep ``path``'s current content under ``old`` until the swap is done: a file by a second
    link, so that it is replaced in one step and readers see the old or the new file, never none."""
    if path.is_file() and not path.is_symlink():
        try:
            os.link(path, old)
            return
        except OSError:
            pass
    os.replace(path, old)


def _swap_in(pairs: list[tuple[Path, Path]]) -> None:
    """Rename each written temporary onto its output; if one rename fails, put every old output back."""
    aside: list[tuple[Path, Path]] = []
    placed: list[Path] = []
    try:
        with _signals_deferred():
            try:
                for path, tmp in pairs:
                    if path.exists() or path.is_symlink():
                        old = _temporary_beside(path)
                        _keep_aside(path, old)
                        aside.append((path, old))
                    os.replace(tmp, path)
                    placed.append(path)
            except BaseException:
                _put_back(aside, placed)
                raise
    finally:
        for _, old in aside:  # the old outputs, once replaced (put back ones are gone from here)
            _remove(old)


def _put_back(aside: list[tuple[Path, Path]], placed: list[Path]) -> None:
    for path in placed:
        _remove(path)
    for path, old in aside:
        if path.is_file() and os.path.samefile(path, old):
            old.unlink()  # a second link of a file that was never replaced
        else:
            os.replace(old, path)


@contextlib.contextmanager
def atomic_outputs(*paths: str | Path, clean: bool = False) -> Iterator[list[Path]]:
    """Yield one temporary path beside each of ``paths``; only if the block succeeds are they all
    renamed onto their outputs, together (Ctrl-C held meanwhile; on a failed rename the old ones are
    put back). A stage's several outputs so change together or not at all: a killed or failed
    writer leaves the old set (or nothing), never a mix of two runs nor a half-written file.

    Works for files and folders. A temporary's name keeps the suffix, so format-by-extension writers
    (OpenCV, ONNX) still work, and holds the writer's process id: with ``clean`` (a stage's own
    outputs), temporaries that killed runs left beside them are removed first.
    """
    outputs = [Path(p) for p in paths]
    for path in outputs:
        path.parent.mkdir(parents=True, exist_ok=True)
        if clean:
            remove_stale(path)
    temporaries = [_temporary_beside(path) for path in outputs]
    try:
        yield temporaries
        _swap_in(list(zip(outputs, temporaries)))
    except Exception as exc:  # a full disk is said so, naming the output (not a temporary)
        fullest = min(outputs, key=lambda path: _free_bytes(path.parent))
        full = disk_full_error(exc, fullest)
        if full is None or full is exc:
            raise
        raise full from None
    finally:
        for tmp in temporaries:
            _remove(tmp)


@contextlib.contextmanager
def atomic_path(path: str | Path, clean: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds
    (:func:`atomic_outputs` for one output)."""
    with atomic_outputs(path, clean=clean) as (tmp,):
        yield tmp


def check_writable(path: str | Path, folder: bool = False) -> None:
    """Fail now, before any work, if ``path`` cannot be written: an output written whole (a file
    or a folder, through :func:`atomic_path`) needs its parent folder; with ``folder``, a folder
    to write files into needs itself (and must not be a file)."""
    path = Path(path)
    where = path if folder else path.parent
    if folder and path.exists() and not path.is_dir():
        raise SrpipeError(f"{path} is a file, not a folder; choose another output folder")
    try:
        where.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=where):
            pass
    except OSError as exc:
        raise SrpipeError(f"cannot write to {where} ({exc.strerror or exc}); choose another output path or "
                          "make it writable") from None


def write_image(path: str | Path, img: np.ndarray) -> None:
    """Write HxWx3 uint8 RGB (or HxWx4 RGBA, for formats that hold alpha: png, tiff, webp)
    atomically; the format follows the suffix."""
    to_bgr = cv2.COLOR_RGBA2BGRA if img.shape[2] == 4 else cv2.COLOR_RGB2BGR
    # encoded here and written by Python, so that a full disk is an OSError naming the file, not
    # libpng's "Write Error" on stderr and a bare False from cv2.imwrite
    ok, encoded = cv2.imencode(Path(path).suffix, cv2.cvtColor(img, to_bgr))
    if not ok:
        raise SrpipeError(f"cannot encode image as {Path(path).suffix}: {path}")
    with atomic_path(path) as tmp:
        tmp.write_bytes(encoded.tobytes())


def write_json(path: str | Path, data: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")

