"""Training throughput: data loader alone, one training step, and the machine's matmul rate.

    python benchmarks/train_throughput.py                 # EDSR-baseline x2, batch 16, HR patch 96
    python benchmarks/train_throughput.py --channels-last --amp bf16 --compile

Prints patches/s of the loader and of the training step, the step's achieved GFLOP/s (from
the model's counted fwd+bwd FLOPs) and that as a share of the measured fp32 matmul rate, and
whether the targets hold: loader >= 10x the step rate, step >= 40% of the matmul rate.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode

from srpipe.benchmark import matmul_gflops, time_runs
from srpipe.config import ModelParams
from srpipe.data import prepare
from srpipe.models import build_model
from srpipe.patches import extract, load
from srpipe.train import LOSSES, PlanDataset, epoch_plan, model_arch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="baseline", help="EDSR preset (baseline | full)")
    ap.add_argument("--scale", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--patch", type=int, default=96, help="HR patch size")
    ap.add_argument("--steps", type=int, default=5, help="timed training steps")
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--amp", choices=["none", "bf16"], default="none")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    threads = torch.get_num_threads()

    with tempfile.TemporaryDirectory() as tmp:
        prepare("sample-train", Path(tmp) / "train", args.scale)
        extract(Path(tmp) / "train", Path(tmp) / "patches", args.scale, args.patch, args.patch // 2)
        hr, lr = load(Path(tmp) / "patches")
        hr, lr = hr.copy(), lr.copy()

    # the loader alone: plan rows -> augmented tensors, batched
    batches = 40
    plan = epoch_plan(len(hr), batches * args.batch, 0, 1, 1)
    loader = DataLoader(PlanDataset(hr, lr, plan, args.scale, args.patch // args.scale), batch_size=args.batch,
                        num_workers=args.workers, pin_memory=device.type == "cuda")
    start = time.perf_counter()
    for _ in loader:
        pass
    loader_rate = batches * args.batch / (time.perf_counter() - start)

    arch = model_arch(ModelParams(name="edsr", preset=args.preset, global_skip="none"), args.scale)
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
    flops = counter.get_total_flops()
    step_s = statistics.median(time_runs(step, warmup=2, repeats=args.steps))
    step_rate = args.batch / step_s
    achieved = flops / step_s / 1e9
    peak = matmul_gflops() if device.type == "cpu" else float("nan")

    print(f"device {device} ({threads} threads), EDSR-{args.preset} x{args.scale}, batch {args.batch}, "
          f"HR patch {args.patch}, channels_last={args.channels_last}, amp={args.amp}, compile={args.compile}")
    print(f"loader alone      {loader_rate:10.1f} patches/s  ({args.workers} workers)")
    print(f"training step     {step_rate:10.1f} patches/s  ({1 / step_s:.2f} it/s, {step_s * 1e3:.0f} ms/step)")
    print(f"achieved          {achieved:10.1f} GFLOP/s  ({flops / 1e9:.1f} GFLOP per step, fwd+bwd)")
    if device.type == "cpu":
        print(f"fp32 matmul       {peak:10.1f} GFLOP/s  (torch, 2048x2048, same threads)")
        ok_loader, ok_step = loader_rate >= 10 * step_rate, achieved >= 0.4 * peak
        print(f"loader / step     {loader_rate / step_rate:10.1f} x        target >= 10x: {'PASS' if ok_loader else 'FAIL'}")
        print(f"step / matmul     {achieved / peak:10.1%}          target >= 40%: {'PASS' if ok_step else 'FAIL'}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
