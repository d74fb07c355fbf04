"""``srpipe upscale``: a model (ONNX or PyTorch) applied to any images, tile by tile.

Large images are cut into LR tiles of ``tile`` pixels; each tile is upscaled with ``overlap``
pixels of context on every side and only its centre is kept, so memory stays bounded and the
seams vanish: the result equals the untiled one to within one grey level.

Nothing is lost on the way: every output is decided before any work (two inputs never write one
output, an input is never overwritten), an image too large for the memory is refused with a
tile size that fits, and an alpha channel is upscaled bicubically and kept where the format
holds it (a warning says when it cannot, or when a 16-bit image becomes 8-bit).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .imresize import imresize
from .io import IMAGE_SUFFIXES, DiskFull, SrpipeError, list_images, read_image_alpha, remove_stale_in, write_image
from .progress import progress

if TYPE_CHECKING:  # the CLI imports this module for FORMATS; torch loads only when a model does
    from .upscalers import Footprint, LoadedModel, Upscaler

FORMATS = tuple(suffix[1:] for suffix in IMAGE_SUFFIXES)
ALPHA_SUFFIXES = (".png", ".tif", ".tiff", ".webp")  # the formats that hold an alpha channel
DEFAULT_OVERLAP = 16  # LR pixels of context: tiled equals untiled within one level for EDSR-baseline
ALPHA_OVERLAP = 4  # bicubic reads 2 LR pixels around each one: tiled alpha equals untiled exactly
TILE_CHOICES = (1024, 512, 256, 128, 64)  # what the memory check suggests, largest that fits first
# Float32 copies of a model's widest activation alive at once in a forward pass (3.3-3.4 measured
# for EDSR in PyTorch and ONNX Runtime, x2 and x4, including the output's conversion), plus margin.
WORK_COPIES = 4


def tile_grid(length: int, tile: int) -> list[tuple[int, int]]:
    return [(start, min(start + tile, length)) for start in range(0, length, tile)]


def upscale_tiled(upscaler: Upscaler, lr: np.ndarray, scale: int, tile: int | None, overlap: int,
                  desc: str = "tiles") -> np.ndarray:
    """Upscale ``lr`` (HxW or HxWxC) through tiles of ``tile`` LR pixels with ``overlap`` pixels of context."""
    h, w = lr.shape[:2]
    if not tile or (h <= tile and w <= tile):
        return upscaler(lr)
    out = np.empty((h * scale, w * scale, *lr.shape[2:]), lr.dtype)
    cells = [(y, x) for y in tile_grid(h, tile) for x in tile_grid(w, tile)]
    for (y0, y1), (x0, x1) in progress(cells, desc=desc, unit="tile", leave=False):
        cy0, cx0 = max(0, y0 - overlap), max(0, x0 - overlap)
        cy1, cx1 = min(h, y1 + overlap), min(w, x1 + overlap)
        sr = upscaler(np.ascontiguousarray(lr[cy0:cy1, cx0:cx1]))
        out[y0 * scale : y1 * scale, x0 * scale : x1 * scale] = sr[
            (y0 - cy0) * scale : (y1 - cy0) * scale, (x0 - cx0) * scale : (x1 - cx0) * scale
        ]
    return out


def tiled_upscaler(upscaler: Upscaler, scale: int, tile: int | None, overlap: int) -> Upscaler:
    """``upscaler`` applied through tiles (see :func:`upscale_tiled`), as an upscaler itself."""
    return lambda lr: upscale_tiled(upscaler, lr, scale, tile, overlap)


def expand_inputs(inputs: list[Path]) -> list[Path]:
    """Files as given, folders as their images; a missing path is kept so that it is reported."""
    files: list[Path] = []
    for item in inputs:
        try:
            item.resolve()
        except (RuntimeError, OSError):  # Python 3.11 raises RuntimeError for a loop, later ones OSError
            raise SrpipeError(f"{item} is a symbolic link that leads back to itself (a loop); give an image file or "
                              "a folder of images") from None
        files.extend(list_images(item) if item.is_dir() else [item])
    return files


def output_path(src: Path, out_dir: Path, scale: int, fmt: str | None) -> Path:
    suffix = f".{fmt.lower()}" if fmt else (src.suffix.lower() if src.suffix.lower() in IMAGE_SUFFIXES else ".png")
    return out_dir / f"{src.stem}_x{scale}{suffix}"


def _key(path: Path) -> str:
    """One spelling per file: resolved, and case-folded (names that differ only in case are one
    file on macOS and Windows file systems)."""
    return str(path.resolve()).casefold()


def plan_outputs(inputs: list[Path], out_dir: Path, scale: int, fmt: str | None) -> list[tuple[Path, Path]]:
    """(input, output) for every image, decided before any work. An input given twice is done
    once; an output that is an input, or that two inputs would write, stops the run naming both."""
    files = expand_inputs(inputs)
    sources = {_key(f): f for f in files if f.exists()}
    plan: list[tuple[Path, Path]] = []
    done: set[Path] = set()
    taken: dict[str, tuple[Path, Path]] = {}
    for src in files:
        if src.resolve() in done:
            continue
        done.add(src.resolve())
        dest = output_path(src, out_dir, scale, fmt)
        if _key(dest) in sources:
            raise SrpipeError(f"output {dest} would overwrite an input ({sources[_key(dest)]}); choose another --out")
        if _key(dest) in taken:
            first, first_dest = taken[_key(dest)]
            where = dest if first_dest == dest else f"{first_dest} and {dest} (one file where case does not count)"
            raise SrpipeError(f"{first} and {src} would both be written to {where}; upscale them into different "
                              "--out folders or rename one")
        taken[_key(dest)] = (src, dest)
        plan.append((src, dest))
    return plan


def good_overlap(footprint: Footprint) -> int:
    """Enough context for tiles: the model's reach, up to :data:`DEFAULT_OVERLAP` (beyond it a
    pixel's influence has faded below one grey level in the models measured)."""
    return min(footprint.reach, DEFAULT_OVERLAP)


def check_overlap(footprint: Footprint, tile: int | None, overlap: int) -> None:
    """Warn when tiles get less context than the model needs: the seams would show."""
    need = good_overlap(footprint)
    if tile and overlap < need:
        why = (f"the model's reach ({need} LR pixels)" if need == footprint.reach else
               f"{need} LR pixels (the model's convolutions reach {footprint.reach}, but a pixel's influence fades "
               f"below one grey level within {need})")
        warnings.warn(f"--overlap {overlap} is less than {why}: seams between tiles will show; use --overlap {need}",
                      stacklevel=2)


def available_memory(device: str = "cpu") -> int:
    """Bytes this process can still allocate: on CUDA the GPU's free memory; else the system's
    available memory, or less where a cgroup (a container) limits it."""
    import psutil

    if device == "cuda":
        import torch

        return torch.cuda.mem_get_info()[0]

    free = psutil.virtual_memory().available
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text())
    except (OSError, ValueError):
        return free
    return min(free, int(limit) - used) if limit.isdigit() else free


def memory_needed(footprint: Footprint, scale: int, shape: tuple[int, int], tile: int | None, overlap: int,
                  channels: int = 3) -> int:
    """Bytes to upscale an LR image of ``shape``: the model's work on one tile (with its context)
    or the whole image, plus the output image and the copy its encoder gets."""
    h, w = shape
    region = h * w if not tile else min(h, tile + 2 * overlap) * min(w, tile + 2 * overlap)
    work = WORK_COPIES * 4 * footprint.widest * region
    return int(work + 2 * channels * h * w * scale * scale)


def check_memory(name: Path, footprint: Footprint, scale: int, shape: tuple[int, int], tile: int | None,
                 overlap: int, channels: int = 3, device: str = "cpu") -> None:
    """Refuse, before a run that the kernel (or CUDA) would kill, an image that does not fit in the
    memory of ``device`` at this tile size, suggesting one that does."""
    need, free = memory_needed(footprint, scale, shape, tile, overlap, channels), available_memory(device)
    if need <= free:
        return
    how = f"in {tile}-pixel tiles" if tile else "whole (--tile 0)"
    fits = [t for t in TILE_CHOICES if memory_needed(footprint, scale, shape, t, overlap, channels) <= free]
    hint = (f"use --tile {fits[0]}" if fits else
            f"even the {shape[1] * scale}x{shape[0] * scale} output does not fit: free memory or split the image")
    raise SrpipeError(f"{name}: upscaling {shape[1]}x{shape[0]} x{scale} {how} needs about {need / 2**30:.1f} GiB, "
                      f"{free / 2**30:.1f} GiB is available{' on the GPU' if device == 'cuda' else ''}; {hint}")


def upscale_image(src: Path, dest: Path, model: LoadedModel, tile: int | None, overlap: int) -> None:
    """Upscale one image file into ``dest``, with its alpha channel where ``dest``'s format holds one."""
    rgb, alpha, bits = read_image_alpha(src)
    keep_alpha = alpha is not None and dest.suffix.lower() in ALPHA_SUFFIXES
    if bits > 8:
        warnings.warn(f"{src}: {bits}-bit image, written as 8-bit (models run on 8-bit images)", stacklevel=2)
    if alpha is not None and not keep_alpha:
        warnings.warn(f"{src}: alpha channel dropped: {dest.suffix} cannot hold it; use --format png, tiff or webp "
                      "to keep it", stacklevel=2)
    check_memory(src, model.footprint, model.scale, rgb.shape[:2], tile, overlap, 4 if keep_alpha else 3,
                 model.device)
    sr = upscale_tiled(model.upscaler, rgb, model.scale, tile, overlap, desc=src.name)
    if not keep_alpha:
        write_image(dest, sr)
        return
    bicubic = lambda a: imresize(a, model.scale)  # noqa: E731
    big_alpha = upscale_tiled(bicubic, alpha, model.scale, tile or TILE_CHOICES[0], ALPHA_OVERLAP)
    write_image(dest, np.dstack([sr, big_alpha]))


def upscale_files(
    inputs: list[Path], model: LoadedModel, out_dir: Path, tile: int | None = 256, overlap: int = DEFAULT_OVERLAP,
    fmt: str | None = None,
) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Upscale every input image into ``out_dir``; returns (written, [(failed input, why)]).

    Every output is decided first (see :func:`plan_outputs`); an image that cannot be read, or
    that would not fit in memory, is reported and skipped; a full disk stops them all."""
    plan = plan_outputs(inputs, out_dir, model.scale, fmt)
    check_overlap(model.footprint, tile, overlap)
    remove_stale_in(out_dir)  # what a killed upscale left there, half-written
    written, failed = [], []
    for src, dest in progress(plan, desc="images", unit="img"):
        try:
            upscale_image(src, dest, model, tile, overlap)
            written.append(dest)
        except DiskFull:
            raise  # every image after it would fail the same way
        except SrpipeError as exc:
            failed.append((src, str(exc)))
    return written, failed
