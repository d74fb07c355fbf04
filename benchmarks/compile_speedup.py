"""What ``train.compile`` (torch.compile) buys per training step, with and without channel attention.

    python benchmarks/compile_speedup.py                      # the 30-minute recipe's step: 8x32, batch 16, 64 px
    python benchmarks/compile_speedup.py --set model.n_feats=48 --rounds 3

Builds the image store of the bundled training photos, then measures the real training step
(``srpipe.training.step_seconds``: a throwaway trainer's loader, bf16 autocast where
``train.amp: auto`` picks it, channels_last, forward, L1, backward, Adam) for each of
eager/compiled x attention off/on, in rounds that alternate the four, so that the machine's
drift falls on all of them alike. Prints the median ms per step of each, its spread over the
rounds, and compiled / eager. The compile itself (about 20 s on 2 cores, once per start of a
run) falls in the untimed warm-up steps.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

from srpipe.cli import read
from srpipe.data import prepare, source_files
from srpipe.patches import extract
from srpipe.training import step_seconds


def measure(store: Path, valid: Path, args: argparse.Namespace) -> dict[tuple[bool, bool], list[float]]:
    """ms per step of every (attention, compile), ``args.rounds`` alternating measurements each."""
    base = read(args.params, ["train.patch_size=64", "train.batch_size=16", *args.overrides], missing_ok=True)
    times: dict[tuple[bool, bool], list[float]] = {(a, c): [] for a in (False, True) for c in (False, True)}
    for _ in range(args.rounds):
        for attention, compiled in times:
            model = base.model.model_copy(update={"attention": attention})
            cfg = base.train.model_copy(update={"compile": compiled})
            with tempfile.TemporaryDirectory() as scratch:
                step, _ = step_seconds(store, valid, scratch, base.scale, base.seed, model, cfg, args.steps)
            times[attention, compiled].append(step * 1e3)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5, help="alternating measurements of each configuration")
    ap.add_argument("--steps", type=int, default=30, help="timed steps per measurement")
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        prepare(source_files("sample-train"), data / "train", 2, workers=2)
        prepare(source_files("sample-valid", limit=1), data / "valid", 2)
        extract(data / "train", data / "store", 2, workers=2)
        times = measure(data / "store", data / "valid", args)
    print(f"ms per training step, median of {args.rounds} alternating measurements of {args.steps} steps (min-max)")
    print("| attention | eager | compiled | compiled / eager |\n|---|---|---|---|")
    for attention in (False, True):
        eager, comp = times[attention, False], times[attention, True]
        print(f"| {'on' if attention else 'off'} | {statistics.median(eager):.1f} ({min(eager):.1f}-{max(eager):.1f}) | "
              f"{statistics.median(comp):.1f} ({min(comp):.1f}-{max(comp):.1f}) | "
              f"{statistics.median(comp) / statistics.median(eager):.2f} |")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
