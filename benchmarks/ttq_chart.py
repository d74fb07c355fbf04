"""PSNR against training minutes: time-to-quality curves, single runs and published references in one chart.

    python benchmarks/ttq_chart.py stages/time-to-quality/*/curve.csv --out docs/time_to_quality.png \\
        --point "BasicSR EDSR=27.7,36.88" --line "VDSR (published)=37.53"

Each CURVE is a ``curve.csv`` of ``benchmarks/time_to_quality.py`` (named by its folder; ``dvc
plots show CURVE -x minutes -y set5_psnr`` draws one alone); a ``--point NAME=MINUTES,PSNR`` is
a single run's final score (e.g. the BasicSR peer's row) and a ``--line NAME=PSNR`` a published
reference across the chart. With ``--highlight GLOB`` (repeatable) only the curves whose folder
name matches are drawn in colour and named in the legend; the others are drawn thin and grey
under one legend entry, so a chart of thirty runs stays readable. Drawn with matplotlib (``make
install-dev`` installs it).
"""

from __future__ import annotations

import argparse
import fnmatch
import os
from pathlib import Path

import pandas as pd

def named(numbers: int):
    """argparse type of ``NAME=X[,Y]``: (name, floats)."""
    def parse(item: str) -> tuple[str, list[float]]:
        name, _, value = item.partition("=")
        try:
            values = [float(v) for v in value.split(",")]
        except ValueError:
            values = []
        if not name or len(values) != numbers:
            raise argparse.ArgumentTypeError(f"{item!r}: expected NAME=" + ",".join(["NUMBER"] * numbers))
        return name, values
    return parse


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("curves", nargs="+", type=Path, help="curve.csv files of time_to_quality.py")
    ap.add_argument("--out", type=Path, required=True, help="image to write (.png, .svg)")
    ap.add_argument("--metric", default="set5_psnr", help="column to plot (set14_psnr, set5_ssim, ...)")
    ap.add_argument("--point", type=named(2), action="append", default=[], help="NAME=MINUTES,PSNR: one run's final score")
    ap.add_argument("--line", type=named(1), action="append", default=[], help="NAME=PSNR: a published reference")
    ap.add_argument("--ymin", type=float, default=None, help="lowest value shown (zooms in on the curves' ends)")
    ap.add_argument("--highlight", action="append", default=[], metavar="GLOB",
                    help="draw only the curves whose folder name matches in colour (the rest grey)")
    return ap.parse_args()


def curve_name(csv: Path) -> str:
    """A curve's name in the legend and for ``--highlight``: its run's folder."""
    return csv.parent.name


def series(args: argparse.Namespace) -> dict[str, pd.DataFrame]:
    """name -> (minutes, metric) rows of every curve (without its "without EMA" row), point and line."""
    out = {}
    for csv in args.curves:
        table = pd.read_csv(csv)
        out[curve_name(csv)] = table[~table["run"].str.endswith("without EMA")][["minutes", args.metric]]
    for name, (minutes, score) in args.point:
        out[name] = pd.DataFrame({"minutes": [minutes], args.metric: [score], "point": [True]})
    for name, (score,) in args.line:
        out[name] = pd.DataFrame({"minutes": [None], args.metric: [score]})
    return out


def muted(names: list[str], highlight: list[str]) -> frozenset[str]:
    """The curve names drawn grey: none without ``highlight``, else those matching none of its globs."""
    if not highlight:
        return frozenset()
    return frozenset(n for n in names if not any(fnmatch.fnmatchcase(n, pattern) for pattern in highlight))


def render(lines: dict[str, pd.DataFrame], metric: str, out: Path, ymin: float | None = None,
           grey: frozenset[str] = frozenset()) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.8), dpi=120)
    colours, markers = plt.get_cmap("tab20").colors, "osD^v<>p"
    for k, name in enumerate(sorted(grey)):
        table = lines[name]
        label = f"other runs ({len(grey)})" if k == 0 else None
        ax.plot(table["minutes"], table[metric], "-", color="0.75", linewidth=0.8, label=label, zorder=1)
    coloured = [(name, table) for name, table in lines.items() if name not in grey]
    for i, (name, table) in enumerate(coloured):
        if table["minutes"].isna().all():  # a published reference
            ax.axhline(table[metric].iloc[0], color="grey", linestyle="--", linewidth=1)
            ax.annotate(name, (0, table[metric].iloc[0]), xycoords=("axes fraction", "data"), xytext=(4, 3),
                        textcoords="offset points", color="grey", fontsize=8)
        elif "point" in table:
            ax.plot(table["minutes"].iloc[-1], table[metric].iloc[-1], "s", markersize=7, label=name)
        else:
            ax.plot(table["minutes"], table[metric], "-", marker=markers[i % len(markers)], markersize=4,
                    color=colours[i % len(colours)], label=name)
    ax.set_xlabel("training minutes")
    ax.set_ylabel(metric.replace("_", " ").replace("psnr", "PSNR (dB)").replace("set", "Set"))
    values = pd.concat([t[metric] for t in lines.values()])
    low = values.min() if ymin is None else ymin
    ax.set_ylim(bottom=low, top=values.max() + 0.06 * (values.max() - low))  # room for the reference labels
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp{out.suffix}")
    fig.savefig(tmp)
    tmp.replace(out)


def main() -> None:
    args = parse_args()
    grey = muted([curve_name(csv) for csv in args.curves], args.highlight)
    render(series(args), args.metric, args.out, args.ymin, grey)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
