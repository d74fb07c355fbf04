"""Training throughput: the data loader alone, one training step, and the machine's matmul rate.

    python benchmarks/train_throughput.py                 # EDSR-baseline x2, batch 16, HR crop 96
    python benchmarks/train_throughput.py --channels-last --amp bf16 --compile
    python benchmarks/train_throughput.py --workers 0 2 8 --device cuda
    python benchmarks/train_throughput.py --model rcan --device cuda       # RCAN's default size

Builds the image store of the bundled training photos (prepare-degradations + extract-patches),
then prints, side by side in one run: patches/s of the loader alone (random crops from the
store, flips and rotations, batched tensors) for each number of DataLoader workers, with the
stored LR crops and with on-the-fly degradation (one and two passes); patches/s
of the training step; the step's achieved GFLOP/s (from the model's counted fwd+bwd FLOPs) and
that as a share of the measured fp32 matmul rate; and whether the targets hold: loader >= 2,000
patches/s (stored LR) and >= 10x the step rate (all), step >= 40% of the matmul rate.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from srpipe.benchmark import matmul_gflops, time_runs
from srpipe.config import DegradationParams, ModelParams
from srpipe.data import prepare, source_files
from srpipe.degradations import CropDegrader
from srpipe.models import build_model
from srpipe.patches import ImageStore, extract
from srpipe.training import LOSSES, model_arch
from srpipe.training.sampling import CropDataset, RunSampler, make_loader


LOADERS = {  # name -> on-the-fly degradation (None: LR crops from the store)
    "stored LR": None,
    "on the fly": DegradationParams(kind="realistic", on_the_fly=True),
    "on the fly, 2 passes": DegradationParams(kind="realistic", on_the_fly=True, passes=2),
}


def loader_rate(store: ImageStore, crop: int, batch: int, workers: int, cuda: bool, degradation=None,
                batches: int = 200) -> float:
    """Patches/s of the loader alone, after its workers are up and a few batches are out."""
    degrade = CropDegrader(degradation, store.scale) if degradation is not None else None
    dataset = CropDataset(store, crop, rows=batches * batch * 4, seed=0, degrade=degrade)
    loader = iter(make_loader(dataset, RunSampler(0, batches + 10, batch, 1), workers, cuda))
    for _ in range(10):
        next(loader)
    start = time.perf_counter()
    for _ in range(batches):
        next(loader)
    return batches * batch / (time.perf_counter() - start)


def step_rate(args, device: torch.device) -> tuple[float, float]:
    """(seconds per training step, FLOPs per step) of the model (EDSR or RCAN) on random data."""
    arch = model_arch(ModelParams(name=args.model, preset=args.preset, global_skip="none"), args.scale)
    model = build_model(arch["name"], **arch["kwargs"]).to(device)
    x = torch.rand(args.batch, 3, args.patch // args.scale, args.patch // args.scale, device=device)
    y = torch.rand(args.batch, 3, args.patch, args.patch, device=device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    net = torch.compile(model) if args.compile else model
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp == "bf16"):
            loss = LOSSES["l1"](net(x).float(), y)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    with FlopCounterMode(display=False) as counter:
        LOSSES["l1"](model(x), y).backward()
    return statistics.median(time_runs(step, warmup=2, repeats=args.steps)), counter.get_total_flops()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=["edsr", "rcan"], default="edsr")
    ap.add_argument("--preset", default=None, help="the model's preset (EDSR: baseline (default) | full; RCAN: default)")
    ap.add_argument("--scale", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--patch", type=int, default=96, help="HR crop size")
    ap.add_argument("--steps", type=int, default=5, help="timed training steps")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="DataLoader workers to measure")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--amp", choices=["none", "bf16"], default="none")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    args.preset = args.preset or {"edsr": "baseline", "rcan": "default"}[args.model]
    device = torch.device(args.device)
    threads = torch.get_num_threads()

    with tempfile.TemporaryDirectory() as tmp:
        prepare(source_files("sample-train"), Path(tmp) / "train", args.scale, workers=2)
        extract(Path(tmp) / "train", Path(tmp) / "store", args.scale, workers=2)
        store = ImageStore(Path(tmp) / "store")
        loaders = {(name, w): loader_rate(store, args.patch, args.batch, w, device.type == "cuda", degradation)
                   for name, degradation in LOADERS.items() for w in args.workers}
    torch.set_num_threads(threads)
    step_s, flops = step_rate(args, device)
    step_patches = args.batch / step_s
    achieved = flops / step_s / 1e9

    print(f"device {device} ({threads} threads), {args.model.upper()}-{args.preset} x{args.scale}, batch {args.batch}, "
          f"HR crop {args.patch}, channels_last={args.channels_last}, amp={args.amp}, compile={args.compile}")
    for (name, w), rate in loaders.items():
        target = 2000 if name == "stored LR" else 0  # on the fly: >= 10x the step
        ok = rate >= target and rate >= 10 * step_patches
        print(f"loader, {name:20s} {rate:8.1f} patches/s  ({w} workers)  {rate / step_patches:7.1f}x the step   "
              f"target >= {f'{target} and ' if target else ''}10x: {'PASS' if ok else 'FAIL'}")
    print(f"training step     {step_patches:10.1f} patches/s  ({1 / step_s:.2f} it/s, {step_s * 1e3:.0f} ms/step)")
    print(f"achieved          {achieved:10.1f} GFLOP/s  ({flops / 1e9:.1f} GFLOP per step, fwd+bwd)")
    if device.type == "cpu":
        peak = matmul_gflops()
        print(f"fp32 matmul       {peak:10.1f} GFLOP/s  (torch, 2048x2048, same threads)")
        print(f"step / matmul     {achieved / peak:10.1%}          target >= 40%: {'PASS' if achieved >= 0.4 * peak else 'FAIL'}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
