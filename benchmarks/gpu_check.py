"""One GPU check: what a user runs, on CUDA, in at most 8 minutes; one table, non-zero on any failure.

    python benchmarks/gpu_check.py                  # on the GPU (needs CUDA)
    python benchmarks/gpu_check.py --dry-run        # print the plan: every command, nothing run
    python benchmarks/gpu_check.py --device cpu     # the same checks on the CPU, small (CI-sized)

Each check is srpipe's real CLI (or a benchmark script) in a subprocess, on a copy of the demo
project in ``--work``, with ``train.device``/``eval.device`` set to ``--device``:

1. the demo pipeline's data stages, then ``train`` with bf16, channels_last, compile and 8 loader
   workers for ``--steps`` steps (a few hundred);
2. a SIGKILL of that training mid-run and its resume to the end (the log must say "resuming");
3. ``torchrun --nproc_per_node=1`` training (NCCL on CUDA, gloo on the CPU);
4. ``evaluate`` on the device, and with ``--precision`` fp16 and bf16 (CUDA only);
5. ``upscale`` on the device;
6. ``benchmarks/train_throughput.py`` on the device: EDSR-baseline and RCAN x2, batch 16, crop
   96 (iterations/s and whether the loader keeps up);
7. ``export-onnx`` and ``benchmark --device`` (PyTorch CUDA fp32/bf16/fp16 rows, ONNX Runtime's
   GPU providers where installed).

On a GPU machine without srpipe's other packages and without network: copy the wheels beside the
repository, and install them without an index before running::

    pip download -d wheels dvc==3.* typer pydantic pyyaml pandas tqdm tensorboard opencv-python-headless \\
        scikit-image lpips onnx onnxruntime onnxscript spandrel==0.4.2 safetensors filelock psutil \\
        dists-pytorch pooch                             # on a machine with network, same Python
    pip install --no-index --find-links wheels -e . --no-deps && pip install --no-index --find-links wheels \\
        typer pydantic pyyaml pandas tqdm tensorboard opencv-python-headless scikit-image lpips onnx \\
        onnxruntime onnxscript spandrel safetensors filelock psutil dists-pytorch pooch

(torch and torchvision come with the machine's CUDA build and are not replaced.) LPIPS and the
VGG losses need ``SRPIPE_LPIPS_BACKBONE`` (and ``SRPIPE_VGG16_BACKBONE``) pointing at local files.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROJECT = ["dvc.yaml", "params.yaml", "srpipe"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument("--dry-run", action="store_true", help="print every command, run none")
    ap.add_argument("--steps", type=int, default=None, help="training steps (default: 400 on CUDA, 12 on the CPU)")
    ap.add_argument("--work", type=Path, default=Path("stages/gpu-check"))
    args = ap.parse_args(argv)
    args.steps = args.steps or (400 if args.device == "cuda" else 12)
    return args


def train_overrides(args: argparse.Namespace) -> list[str]:
    """The training of the check: the GPU recipe (bf16, channels_last, compile, 8 workers) in two
    epochs, saving every 10 steps so that a kill loses little."""
    gpu = args.device == "cuda"
    return [f"train.device={args.device}", f"eval.device={args.device}", "train.epochs=2",
            f"train.steps_per_epoch={args.steps // 2}", "train.save_every=10", "train.channels_last=true",
            f"train.amp={'bf16' if gpu else 'none'}", f"train.compile={'true' if gpu else 'false'}",
            f"train.workers={8 if gpu else 0}", "data.limit=4", "export.calibration_patches=4",
            "benchmark.sizes=[[64,64]]", "benchmark.threads=[1]", "benchmark.repeats=10"]


def plan(args: argparse.Namespace) -> list[tuple[str, list[str]]]:
    """(check, command) in order; commands run in ``--work``."""
    py, sets = sys.executable, [x for o in train_overrides(args) for x in ("--set", o)]
    srpipe = [py, "-m", "srpipe"]
    precisions = ["fp16", "bf16"] if args.device == "cuda" else []
    steps = [("prepare-degradations", [*srpipe, "prepare-degradations", *sets]),
             ("extract-patches", [*srpipe, "extract-patches", *sets]),
             ("train (bf16, channels_last, compile, workers)", [*srpipe, "train", *sets]),
             ("SIGKILL and resume", [*srpipe, "train", *sets, "--out", "stages/train-killed",
                                     "--history", "metrics/killed.csv", "--metrics", "metrics/killed.json"]),
             ("torchrun x1 (NCCL on CUDA)", [py, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
                                             "-m", "srpipe", "train", *sets, "--out", "stages/train-torchrun",
                                             "--history", "metrics/torchrun.csv", "--metrics", "metrics/torchrun.json"]),
             ("evaluate", [*srpipe, "evaluate", *sets, "--device", args.device])]
    steps += [(f"evaluate {q}", [*srpipe, "evaluate", *sets, "--precision", q, "--metrics", f"metrics/eval-{q}.json"])
              for q in precisions]
    steps += [("upscale", [*srpipe, "upscale", "data/prepared/valid/lr_x2", "--model", "stages/train/best.pt",
                           "--out", "upscaled", "--device", args.device])]
    size = ["--batch", "16", "--patch", "96", "--workers", "0", "8"] if args.device == "cuda" else \
        ["--batch", "2", "--patch", "48", "--workers", "0"]  # the CPU's check: that it runs, not its rate
    throughput = [py, str(ROOT / "benchmarks" / "train_throughput.py"), "--device", args.device, *size]
    steps += [(f"train_throughput {name}", [*throughput, *extra, "--steps", "20" if args.device == "cuda" else "2"])
              for name, extra in (("EDSR-baseline", ["--model", "edsr"]), ("RCAN", ["--model", "rcan"]))]
    steps += [("export-onnx", [*srpipe, "export-onnx", *sets]),
              ("benchmark", [*srpipe, "benchmark", *sets, "--device", args.device])]
    return steps


def killed_and_resumed(command: list[str], work: Path, env: dict) -> tuple[bool, str]:
    """Run ``command``, SIGKILL it once its last.pt holds a mid-run step, run it again: it must resume."""
    import torch

    last = work / "stages/train-killed/last.pt"
    proc = subprocess.Popen(command, cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        try:
            if torch.load(last, weights_only=True)["progress"]["step"] >= 10:
                break
        except (FileNotFoundError, EOFError, RuntimeError, KeyError):
            pass
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    again = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True)
    output = again.stdout + again.stderr
    return again.returncode == 0 and "resuming from" in output, output


def run_checks(args: argparse.Namespace) -> list[tuple[str, bool, float, str]]:
    if args.work.exists():
        shutil.rmtree(args.work)
    args.work.mkdir(parents=True)
    for name in PROJECT:
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(ROOT / name, args.work / name)
    env = {**os.environ, "PYTHONPATH": str(args.work.resolve()), "DVC_NO_ANALYTICS": "1"}
    rows = []
    for name, command in plan(args):
        start = time.perf_counter()
        if name == "SIGKILL and resume":
            ok, output = killed_and_resumed(command, args.work, env)
        else:
            proc = subprocess.run(command, cwd=args.work, env=env, capture_output=True, text=True)
            ok, output = proc.returncode == 0, proc.stdout + proc.stderr
        tail = (output.strip().splitlines() or [""])[-1][:100]
        rows.append((name, ok, time.perf_counter() - start, tail))
        print(f"{'ok  ' if ok else 'FAIL'} {name:48s} {rows[-1][2]:7.1f} s  {tail}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.dry_run:
        for name, command in plan(args):
            print(f"# {name}\n{' '.join(command)}")
        return 0
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print("gpu_check: no CUDA device here; run it on a GPU machine, or with --device cpu", file=sys.stderr)
            return 2
    rows = run_checks(args)
    print("\n| check | result | seconds | last line |\n|---|---|---|---|")
    for name, ok, seconds, tail in rows:
        print(f"| {name} | {'ok' if ok else 'FAILED'} | {seconds:.1f} | {tail.replace('|', '/')} |")
    return 0 if all(ok for _, ok, _, _ in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
