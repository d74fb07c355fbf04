"""What this machine offers (usable CPU cores, native bfloat16) and what a command takes of it."""

from __future__ import annotations

import os
import subprocess
import threading
import time


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. a container's share)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def bf16_supported(device_type: str = "cpu") -> bool:
    """Whether ``device_type`` computes bfloat16 natively (CPU: oneDNN's check for AVX512-BF16 or AMX)."""
    import torch

    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def pick_device(choice: str, key: str = "train.device"):
    """The torch device of a setting ``auto | cpu | cuda`` (``key`` names it in the error): auto
    takes CUDA when present (this process's ``LOCAL_RANK`` GPU under torchrun); an explicit cuda
    without CUDA stops with one line."""
    import torch

    from .io import SrpipeError

    if choice == "cuda" and not torch.cuda.is_available():
        raise SrpipeError(f"{key} is cuda but no CUDA device is available here; use {key}=cpu or auto")
    if choice == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))


HALF = {"fp16": "float16", "bf16": "bfloat16"}  # inference precisions beside fp32, by name


def inference_dtype(precision: str, device, key: str = "eval.precision"):
    """The torch dtype PyTorch inference runs in: float32 for fp32, float16 or bfloat16 on CUDA;
    half precision on a CPU stops with one line (slower than fp32 there, and not what srpipe measures)."""
    import torch

    from .io import SrpipeError

    if precision == "fp32":
        return torch.float32
    if device.type != "cuda":
        raise SrpipeError(f"{key}={precision} needs a CUDA device (this run is on the {device.type.upper()}); "
                          f"use {key}=fp32 here")
    return getattr(torch, HALF[precision])


def run_watched(cmd: list[str], cwd: str | os.PathLike | None = None, interval: float = 0.05) -> dict:
    """Run ``cmd`` to its end; its output, exit code, wall seconds and peak resident memory (MiB):
    of its largest process, and of its whole process tree summed (workers included; pages they
    share are counted in each, so this is an upper bound)."""
    import psutil

    start = time.perf_counter()
    proc = psutil.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peaks = {"largest": 0, "tree": 0}

    def poll() -> None:
        while proc.poll() is None:
            try:
                rss = [p.memory_info().rss for p in [proc, *proc.children(recursive=True)]]
            except psutil.Error:
                continue
            peaks["largest"], peaks["tree"] = max(peaks["largest"], *rss), max(peaks["tree"], sum(rss))
            time.sleep(interval)

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    output = proc.communicate()[0]
    watcher.join()
    return {"output": output, "returncode": proc.returncode, "seconds": time.perf_counter() - start,
            "largest_mb": peaks["largest"] / 2**20, "tree_mb": peaks["tree"] / 2**20}
