"""Where training crops are drawn: one photo, its crops drawn uniformly and by their detail.

    python benchmarks/crop_weights_figure.py ../shared/data/SunHays80/aqueduct_sun_ancegghzusmmvzjn.jpg \\
        --power 0.5 --out docs/texture_sampling.png

Three panels: the crops of one epoch plan drawn uniformly over the positions (``train.
texture_sampling: 0``), the same number drawn with ``--power`` (srpipe's own
:func:`~srpipe.training.sampling.texture_cells` and ``weighted_plan``), and the detail under
each cell's crop relative to the photo's mean, the quantity the weights raise to the power.
Drawn with matplotlib (``make install-dev`` installs it).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from srpipe.io import read_image
from srpipe.training.sampling import crop_positions, epoch_plan, texture_cells, weighted_plan


class OneImage:
    """The image store's interface (sizes, scale, hr, release) for one photo in memory."""

    def __init__(self, hr: np.ndarray, scale: int):
        self.scale = scale
        self._hr = hr[: hr.shape[0] // scale * scale, : hr.shape[1] // scale * scale]
        self.sizes = np.array([self._hr.shape[:2]])

    def hr(self, i: int) -> np.ndarray:
        return self._hr

    def release(self) -> None:
        pass


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("image", type=Path, help="a training photo")
    ap.add_argument("--out", type=Path, required=True, help="image to write (.png, .svg)")
    ap.add_argument("--power", type=float, default=0.5, help="train.texture_sampling of the weighted panel")
    ap.add_argument("--crop", type=int, default=64, help="HR crop side (train.patch_size)")
    ap.add_argument("--scale", type=int, default=2)
    ap.add_argument("--crops", type=int, default=120, help="crops drawn in each panel")
    return ap.parse_args()


def boxes(ax, plan: np.ndarray, crop: int, scale: int, color: str) -> None:
    from matplotlib.patches import Rectangle

    for _, _, _, cy, cx in plan:
        ax.add_patch(Rectangle((cx * scale, cy * scale), crop, crop, fill=False, lw=0.8, ec=color))


def main() -> None:
    args = parse_args()
    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    store = OneImage(read_image(args.image), args.scale)
    ys, xs = crop_positions(store.sizes, args.crop, args.scale)
    cells = texture_cells(store, args.crop, args.power)
    detail = (cells.weight / (cells.h * cells.w)) ** (1 / args.power) if args.power else None
    panels = [("uniform (texture_sampling: 0)", epoch_plan(ys, xs, args.crops, 0, 1), "tab:blue"),
              (f"texture_sampling: {args.power:g}", weighted_plan(cells, args.crops, 0, 1), "tab:orange")]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), constrained_layout=True)
    for ax, (title, plan, color) in zip(axes, panels):
        ax.imshow(store.hr(0))
        boxes(ax, plan, args.crop, args.scale, color)
        ax.set_title(f"{args.crops} crops of {args.crop} px, {title}")
    if detail is not None:
        grid = np.zeros((cells.y.max() + 1, cells.x.max() + 1))
        for y, x, h, w, d in zip(cells.y, cells.x, cells.h, cells.w, detail):
            grid[y : y + h, x : x + w] = d
        shown = axes[2].imshow(grid, norm=LogNorm(vmin=0.01, vmax=max(grid.max(), 0.1)), cmap="magma")
        fig.colorbar(shown, ax=axes[2], label="detail under the crop / mean (+ 0.01 floor)")
    axes[2].set_title("detail of the crop at each position (LR grid)")
    for ax in axes:
        ax.set_axis_off()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=90)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
