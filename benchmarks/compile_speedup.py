"""What ``train.compile`` (torch.compile) buys per training step, and what a model's step costs.

    python benchmarks/compile_speedup.py                      # the 30-minute recipe's step: 8x32, batch 16, 64 px
    python benchmarks/compile_speedup.py --set model.n_feats=48 --rounds 3
    python benchmarks/compile_speedup.py --set train.batch_size=8 --compile on \\
        --variant "edsr 8x32 ca: model.attention=true" --variant "rlfn 5x32: model.name=rlfn model.n_resblocks=5"

Builds the image store of the bundled training photos, then measures the real training step
(``srpipe.training.step_seconds``: a throwaway trainer's loader, bf16 autocast where
``train.amp: auto`` picks it, channels_last, forward, L1, backward, Adam) for each variant
(default: channel attention off and on) eager and compiled (``--compile`` both, on or off),
in rounds that alternate all of them, so that the machine's drift falls on all alike. Prints
each variant's multiply-adds per output pixel, the median ms per step, its spread over the
rounds, compiled / eager, and the faster mode's ms per billion forward multiply-adds of the
step's batch (what a multiply-add costs in that model's step: forward, backward and update).
The compile itself (about 20 s on 2 cores, once per start of a run) falls in the untimed
warm-up steps.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

from srpipe.cli import read
from srpipe.data import prepare, source_files
from srpipe.models import build_model, macs_per_output_pixel
from srpipe.patches import extract
from srpipe.training import model_arch, step_seconds

DEFAULT_VARIANTS = ["attention off: model.attention=false", "attention on: model.attention=true"]
MODES = {"both": (False, True), "on": (True,), "off": (False,)}


def parse_variant(text: str) -> tuple[str, list[str]]:
    """``"NAME: KEY=VALUE KEY=VALUE"`` -> (NAME, [KEY=VALUE, ...])."""
    name, sep, sets = text.partition(":")
    if not sep or not name.strip():
        raise SystemExit(f"--variant {text!r}: write it as 'NAME: KEY=VALUE ...'")
    return name.strip(), sets.split()


def read_variants(args: argparse.Namespace) -> dict:
    """The params of every variant: the recipe's step (64 px, batch 16), ``--set``, then the variant's own."""
    return {name: read(args.params, ["train.patch_size=64", "train.batch_size=16", *args.overrides, *sets],
                       missing_ok=True) for name, sets in args.variants}


def measure(store: Path, valid: Path, configs: dict, args: argparse.Namespace) -> dict[tuple[str, bool], list[float]]:
    """ms per step of every (variant, compiled), ``args.rounds`` alternating measurements each."""
    times: dict[tuple[str, bool], list[float]] = {(n, c): [] for n in configs for c in MODES[args.compile]}
    for _ in range(args.rounds):
        for name, compiled in times:
            base = configs[name]
            cfg = base.train.model_copy(update={"compile": compiled})
            with tempfile.TemporaryDirectory() as scratch:
                step, _ = step_seconds(store, valid, scratch, base.scale, base.seed, base.model, cfg, args.steps)
            times[name, compiled].append(step * 1e3)
    return times


def model_macs(p) -> tuple[float, float]:
    """Multiply-adds of one forward pass per output pixel, and over one step's batch of crops."""
    arch = model_arch(p.model, p.scale)
    per_pixel = macs_per_output_pixel(build_model(arch["name"], **arch["kwargs"]))
    return per_pixel, per_pixel * p.train.patch_size ** 2 * p.train.batch_size


def print_table(times: dict[tuple[str, bool], list[float]], configs: dict, args: argparse.Namespace) -> None:
    print(f"ms per training step, median of {args.rounds} alternating measurements of {args.steps} steps (min-max)")
    print("| variant | multiply-adds per pixel | eager | compiled | compiled / eager | ms per G forward multiply-adds of the step |")
    print("|---|---|---|---|---|---|")
    cell = lambda t: f"{statistics.median(t):.1f} ({min(t):.1f}-{max(t):.1f})" if t else ""  # noqa: E731
    for name, p in configs.items():
        eager, comp = times.get((name, False), []), times.get((name, True), [])
        per_pixel, per_step = model_macs(p)
        ratio = f"{statistics.median(comp) / statistics.median(eager):.2f}" if eager and comp else ""
        fastest = min(statistics.median(t) for t in (eager, comp) if t)
        print(f"| {name} | {per_pixel:,.0f} | {cell(eager)} | {cell(comp)} | {ratio} | {fastest / (per_step / 1e9):.1f} |")


def step_arguments(doc: str, rounds: int, steps: int) -> argparse.ArgumentParser:
    """The arguments of a benchmark that times training steps in alternating rounds."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=rounds, help="alternating measurements of each configuration")
    ap.add_argument("--steps", type=int, default=steps, help="timed steps per measurement")
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    return ap


def sample_store(data: Path) -> tuple[Path, Path]:
    """(image store, validation folder) of the bundled photos at x2, built in ``data``."""
    prepare(source_files("sample-train"), data / "train", 2, workers=2)
    prepare(source_files("sample-valid", limit=1), data / "valid", 2)
    extract(data / "train", data / "store", 2, workers=2)
    return data / "store", data / "valid"


def main() -> None:
    ap = step_arguments(__doc__, rounds=5, steps=30)
    ap.add_argument("--variant", action="append", default=[], metavar="'NAME: KEY=VALUE ...'",
                    help="a configuration to measure (repeatable; default: attention off and on)")
    ap.add_argument("--compile", choices=list(MODES), default="both", help="measure eager, compiled or both")
    args = ap.parse_args()
    args.variants = [parse_variant(v) for v in args.variant or DEFAULT_VARIANTS]
    configs = read_variants(args)
    with tempfile.TemporaryDirectory() as tmp:
        times = measure(*sample_store(Path(tmp)), configs, args)
    print_table(times, configs, args)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
