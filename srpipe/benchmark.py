"""benchmark: median latency of ONNX Runtime (CPU) and PyTorch eager after warm-up."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from .progress import progress
from .upscalers import ONNX_INPUT, ONNX_OUTPUT, ort_session


def time_runs(fn: Callable[[], object], warmup: int, repeats: int) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def matmul_gflops(n: int = 2048, repeats: int = 10, threads: int | None = None) -> float:
    """The machine's fp32 matrix-multiply rate (GFLOP/s) with torch, the yardstick for model speed."""
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        a, b = torch.randn(n, n), torch.randn(n, n)
        times = time_runs(lambda: a @ b, warmup=3, repeats=repeats)
    finally:
        torch.set_num_threads(previous)
    return 2 * n**3 / statistics.median(times) / 1e9


def summarize_times(times: list[float], pixels_out: int) -> dict[str, float]:
    median = statistics.median(times)
    return {
        "latency_ms": round(median * 1e3, 3),
        "latency_p90_ms": round(float(np.percentile(times, 90)) * 1e3, 3),
        "mpix_per_s": round(pixels_out / median / 1e6, 3),
    }


def run_benchmark(
    model: nn.Module, onnx_path: str | Path, scale: int, sizes: list[tuple[int, int]], threads: list[int],
    warmup: int, repeats: int,
) -> dict:
    """``{engine: {'HxW': {'threadsN': {latency_ms, latency_p90_ms, mpix_per_s}}}}`` for LR inputs of ``sizes``."""
    results: dict = {"onnxruntime": {}, "torch": {}}
    model = model.eval()
    previous_threads = torch.get_num_threads()
    jobs = [(h, w, t) for h, w in sizes for t in threads]
    try:
        for h, w, t in progress(jobs, desc="benchmark", unit="config"):
            x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0))
            key, tkey = f"{h}x{w}", f"threads{t}"
            pixels_out = h * w * scale * scale
            session = ort_session(onnx_path, threads=t)
            feed = {ONNX_INPUT: x.numpy()}
            ort_times = time_runs(lambda: session.run([ONNX_OUTPUT], feed), warmup, repeats)
            results["onnxruntime"].setdefault(key, {})[tkey] = summarize_times(ort_times, pixels_out)
            torch.set_num_threads(t)
            with torch.inference_mode():
                torch_times = time_runs(lambda: model(x), warmup, repeats)
            results["torch"].setdefault(key, {})[tkey] = summarize_times(torch_times, pixels_out)
    finally:
        torch.set_num_threads(previous_threads)
    return results
