"""What the training step's loader and optimiser cost, and what batching and fusing them buy.

    python benchmarks/step_parts.py                    # the 30-minute recipe's step (8x32 with attention, compiled)
    python benchmarks/step_parts.py --rounds 10 --set train.compile=false

Builds the image store of the bundled training photos, then runs one throwaway trainer of the
recipe (``params.yaml``, 64 px crops in batches of 16, attention, compiled, crops by detail,
then ``--set``) and measures, in one process and in rounds that alternate all of them so that
the machine's drift falls on all alike, blocks of real training steps with each pair of:

- loader: ``per crop`` (each crop made a float tensor, then the tensors stacked: srpipe before
  :func:`srpipe.training.sampling.collate_crops`) or ``batched`` (the uint8 crops stacked, then
  one conversion: what the trainer uses);
- Adam: ``single-tensor`` (PyTorch's default on a CPU) or ``fused`` (what the trainer uses).

Prints the median ms per step of each pair, its spread and its ratio to the per-crop,
single-tensor step, and the loader's and the optimiser's own ms (alone, the same rounds).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from compile_speedup import sample_store, step_arguments  # a sibling script in benchmarks/
from srpipe.cli import read
from srpipe.hardware import pick_device
from srpipe.training.loop import Distributed, Trainer
from srpipe.training.sampling import RunSampler, make_loader

RECIPE = ["train.patch_size=64", "train.batch_size=16", "model.attention=true", "train.compile=true",
          "train.texture_sampling=0.5", "train.feature_stats_every=0"]
LOADERS, OPTIMISERS = ("per crop", "batched"), ("single-tensor", "fused")


class PerCrop(Dataset):
    """The crops of ``dataset`` made float tensors one by one (DataLoader's default collate stacks them)."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, g: int) -> tuple[torch.Tensor, torch.Tensor]:
        return tuple(torch.from_numpy(np.ascontiguousarray(c)).permute(2, 0, 1).float().div_(255)
                     for c in self.dataset[g])


def trainer_of(store: Path, valid: Path, scratch: Path, p) -> Trainer:
    device = pick_device(p.train.device)
    cfg = p.train.model_copy(update={"epochs": 1, "steps_per_epoch": 10**6})
    return Trainer(store, valid, scratch, scratch / "log.csv", p.scale, p.seed, p.model, cfg, 0, device,
                   Distributed(device), None)


def parts(trainer: Trainer) -> tuple[dict, dict]:
    """The loaders (endless iterators of batches) and the optimisers, by name, over the trainer's model."""
    batch, end = trainer.cfg.batch_size, 10**6
    loaders = {"per crop": iter(DataLoader(PerCrop(trainer.dataset), batch_size=batch,
                                           sampler=RunSampler(0, end, batch, 1))),
               "batched": iter(make_loader(trainer.dataset, RunSampler(0, end, batch, 1), 0, False))}
    params = list(trainer.model.parameters())
    optimisers = {"single-tensor": torch.optim.Adam(params, lr=trainer.cfg.lr, foreach=False),
                  "fused": torch.optim.Adam(params, lr=trainer.cfg.lr, fused=True)}
    return loaders, optimisers


def timed(fn, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e3


def measure(trainer: Trainer, args: argparse.Namespace) -> dict[str, list[float]]:
    """ms per step of every (loader, Adam) pair, and ms of each loader and Adam alone; ``args.rounds`` each."""
    loaders, optimisers = parts(trainer)
    pairs = [(loader, opt) for loader in LOADERS for opt in OPTIMISERS]
    times: dict[str, list[float]] = {f"{a}, {b}": [] for a, b in pairs} | {n: [] for n in (*LOADERS, *OPTIMISERS)}
    for loader, opt in pairs:  # warm-up: the compile, the allocations
        trainer.optimizer = optimisers[opt]
        timed(lambda: trainer.step(loaders[loader]), 5)
    for r in range(args.rounds):
        for loader, opt in pairs if r % 2 == 0 else pairs[::-1]:
            trainer.optimizer = optimisers[opt]
            times[f"{loader}, {opt}"].append(timed(lambda: trainer.step(loaders[loader]), args.steps))
        for loader in LOADERS:
            times[loader].append(timed(lambda: next(loaders[loader]), args.steps))
        for opt in OPTIMISERS:
            times[opt].append(timed(optimisers[opt].step, args.steps))
    return times


def print_table(times: dict[str, list[float]], args: argparse.Namespace) -> None:
    base = statistics.median(times[f"{LOADERS[0]}, {OPTIMISERS[0]}"])
    print(f"ms, median of {args.rounds} alternating measurements of {args.steps} steps (min-max)")
    print("| part | ms | / the per-crop, single-tensor step |")
    print("|---|---|---|")
    for name, t in times.items():
        what = f"step: {name}" if "," in name else f"{name} alone"
        print(f"| {what} | {statistics.median(t):.1f} ({min(t):.1f}-{max(t):.1f}) | {statistics.median(t) / base:.3f} |")


def main() -> None:
    args = step_arguments(__doc__, rounds=10, steps=40).parse_args()
    p = read(args.params, [*RECIPE, *args.overrides], missing_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        times = measure(trainer_of(*sample_store(Path(tmp)), Path(tmp), p), args)
    print_table(times, args)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    warnings.simplefilter("ignore")
    main()
