"""How the data stages and training scale with the number of training photos (DIV2K-shaped).

    python benchmarks/data_scale.py --sources ../shared/data/BSD68 ../shared/data/SunHays80
    python benchmarks/data_scale.py --sizes 50 200 800 --work /big/disk/scale --preset baseline

Builds N photos of 2040x1356 (DIV2K's usual size) from real photographs: each is a mosaic of
resized, flipped crops of the bundled sample photos and of the ``--sources`` folders, never noise.
Then, for every N of ``--sizes`` (the first N of those photos, ``data.limit``), runs the real
``srpipe prepare-degradations``, ``srpipe extract-patches`` and ``srpipe train`` for
``--iterations`` steps, each in a fresh process, and prints for each stage: wall time, images/s,
peak memory (the largest process, and the whole process tree summed, shared pages counted in
each process) and bytes on disk. Memory should stay flat and time grow linearly with N.
"""

from __future__ import annotations

import argparse
import functools
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import yaml

from srpipe.datasets import dataset_files
from srpipe.hardware import run_watched
from srpipe.io import list_images, read_image
from srpipe.parallel import ordered_map, resolve_workers

SIZE = (1356, 2040)  # DIV2K's usual HR height, width


def mosaic(i: int, sources: list[Path], size: tuple[int, int] = SIZE) -> np.ndarray:
    """Photo ``i``: a 2x3 grid of real photographs, each resized, cropped and maybe flipped."""
    rng = np.random.default_rng(i)
    h, w = size
    rows, cols = 2, 3
    out = np.empty((h, w, 3), np.uint8)
    ys, xs = np.linspace(0, h, rows + 1).astype(int), np.linspace(0, w, cols + 1).astype(int)
    for r in range(rows):
        for c in range(cols):
            th, tw = ys[r + 1] - ys[r], xs[c + 1] - xs[c]
            img = read_image(sources[rng.integers(len(sources))])
            factor = max(th / img.shape[0], tw / img.shape[1]) * rng.uniform(1.0, 1.5)
            img = cv2.resize(img, None, fx=factor, fy=factor, interpolation=cv2.INTER_CUBIC)
            y, x = rng.integers(img.shape[0] - th + 1), rng.integers(img.shape[1] - tw + 1)
            tile = img[y : y + th, x : x + tw]
            out[ys[r] : ys[r + 1], xs[c] : xs[c + 1]] = tile[:, ::-1] if rng.random() < 0.5 else tile
    return out


def _write_photo(i: int, sources: list[Path], folder: Path) -> None:
    path = folder / f"{i:04d}.png"
    if not path.exists():
        cv2.imwrite(str(path), cv2.cvtColor(mosaic(i, sources), cv2.COLOR_RGB2BGR))


def make_photos(folder: Path, n: int, sources: list[Path], first: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    job = functools.partial(_write_photo, sources=sources, folder=folder)
    for _ in ordered_map(job, range(first, first + n), resolve_workers(None)):
        pass
    return folder


def run_measured(cmd: list[str], cwd: Path) -> dict:
    r = run_watched(cmd, cwd)
    if r["returncode"]:
        sys.exit(f"{' '.join(cmd)} failed:\n{r['output']}")
    return r


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def measure(n: int, photos: Path, valid: Path, work: Path, args) -> list[dict]:
    """The three stages on the first ``n`` photos, in a fresh project folder."""
    project = work / f"n{n}"
    shutil.rmtree(project, ignore_errors=True)
    project.mkdir(parents=True)
    params = {"data": {"train": str(photos), "valid": str(valid), "limit": n},
              "eval": {"datasets": [str(valid)], "lpips": False},
              "model": {"preset": args.preset} if args.preset != "custom" else {},
              "train": {"epochs": 1, "steps_per_epoch": args.iterations, "patch_size": 96, "save_every": 0,
                        "amp": args.amp, "channels_last": True, "val_images": 2}}
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    srpipe = [sys.executable, "-m", "srpipe"]
    rows = []
    for stage, extra, output, unit in (("prepare-degradations", [], "data/prepared", n),
                                       ("extract-patches", [], "data/patches", n),
                                       ("train", [], "stages/train", args.iterations)):
        r = run_measured([*srpipe, stage, *extra], project)
        rows.append({"N": n, "stage": stage, **r, "per_s": unit / r["seconds"],
                     "disk_mb": du(project / output) / 2**20})
        print(f"N={n:5d} {stage:21s} {r['seconds']:8.1f} s  {unit / r['seconds']:7.2f} {'it' if stage == 'train' else 'img'}/s  "
              f"peak {r['largest_mb']:7.0f} MB (tree {r['tree_mb']:7.0f} MB)  disk {rows[-1]['disk_mb']:9.0f} MB",
              flush=True)
    if not args.keep:
        shutil.rmtree(project)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[50, 200, 800], help="numbers of training photos")
    ap.add_argument("--sources", type=Path, nargs="*", default=[], help="folders of real photos to build from")
    ap.add_argument("--work", type=Path, default=None, help="working folder (default: a temporary one)")
    ap.add_argument("--iterations", type=int, default=200, help="training steps per size")
    ap.add_argument("--preset", default="custom", help="EDSR preset for the training part (custom: the demo's)")
    ap.add_argument("--amp", default="auto", help="train.amp for the training part")
    ap.add_argument("--keep", action="store_true", help="keep each size's project folder")
    args = ap.parse_args()
    sources = list(dataset_files("sample")) + [p for folder in args.sources for p in list_images(folder)]
    work = args.work or Path(tempfile.mkdtemp(prefix="srpipe-scale-"))
    started = time.perf_counter()
    photos = make_photos(work / "photos", max(args.sizes), sources)
    valid = make_photos(work / "valid", 4, sources, first=100_000)
    print(f"{max(args.sizes)} DIV2K-shaped photos ({SIZE[1]}x{SIZE[0]}, {du(photos) / 2**30:.2f} GiB of PNG) from "
          f"{len(sources)} real photographs in {time.perf_counter() - started:.0f} s; workers: {resolve_workers(None)}")
    rows = [row for n in sorted(args.sizes) for row in measure(n, photos, valid, work, args)]
    small, large = min(args.sizes), max(args.sizes)
    print(f"\nfrom N={small} to N={large} ({large / small:.0f}x the photos):")
    for stage in ("prepare-degradations", "extract-patches", "train"):
        a, b = (next(r for r in rows if r["N"] == n and r["stage"] == stage) for n in (small, large))
        print(f"{stage:21s} time x{b['seconds'] / a['seconds']:5.2f}   peak memory x{b['largest_mb'] / a['largest_mb']:5.2f}"
              f"   disk x{b['disk_mb'] / max(a['disk_mb'], 1e-9):6.2f}")
    if args.work is None:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
