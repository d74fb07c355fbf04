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
