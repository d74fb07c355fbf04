"""benchmark: how fast and how big each way of running the model is.

Every engine (ONNX Runtime per exported precision, PyTorch eager in fp32 and, where the CPU
supports it, bf16) runs in a fresh process of its own. For every input size and thread count:
median and p90 latency after warm-up, output megapixels/s, peak resident memory (and how much
running added to it), achieved GFLOP/s (from the model's multiply-adds) and that as a share of
the machine's fp32 matmul rate, measured in the same run.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import resource
import statistics
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .hardware import bf16_supported
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


def engines(checkpoint: Path, onnx_files: dict[str, Path]) -> dict[str, dict]:
    """Engine name -> what the worker needs to build it."""
    import onnxruntime as ort

    found: dict[str, dict] = {}
    gpu = "CUDAExecutionProvider" in ort.get_available_providers()
    for precision, path in onnx_files.items():
        if precision != "fp16":  # fp16 is for GPU providers
            found[f"onnxruntime-{precision}"] = {"onnx": str(path), "providers": ["CPUExecutionProvider"]}
        if gpu:
            found[f"onnxruntime-cuda-{precision}"] = {"onnx": str(path), "providers": ["CUDAExecutionProvider"]}
    if "TensorrtExecutionProvider" in ort.get_available_providers() and "fp32" in onnx_files:
        found["onnxruntime-tensorrt"] = {"onnx": str(onnx_files["fp32"]), "providers": ["TensorrtExecutionProvider"]}
    found["torch-fp32"] = {"checkpoint": str(checkpoint), "bf16": False}
    if bf16_supported():
        found["torch-bf16"] = {"checkpoint": str(checkpoint), "bf16": True}
    return found


def _runner(spec: dict, threads: int) -> Callable[[np.ndarray], object]:
    if "onnx" in spec:
        import onnxruntime as ort

        if spec["providers"] == ["CPUExecutionProvider"]:
            session = ort_session(spec["onnx"], threads)
        else:
            session = ort.InferenceSession(spec["onnx"], providers=spec["providers"])
        return lambda x: session.run([ONNX_OUTPUT], {ONNX_INPUT: x})
    from .models import load_model

    model, _ = load_model(spec["checkpoint"])
    torch.set_num_threads(threads)

    def run(x: np.ndarray):
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=spec["bf16"]):
            return model(torch.from_numpy(x))

    return run


def _memory_kb() -> dict[str, int]:
    """Current (VmRSS) and peak (VmHWM) resident memory of this process, in kB (Linux)."""
    with open("/proc/self/status") as f:
        return {line.split(":")[0]: int(line.split()[1]) for line in f if line.startswith(("VmRSS", "VmHWM"))}


def _reset_peak() -> bool:
    """Restart the peak-RSS counter (Linux clear_refs); False where that is not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def measure_engine(spec: dict, sizes: list[tuple[int, int]], threads: list[int], warmup: int, repeats: int,
                   scale: int) -> dict:
    """Latency, throughput and peak RSS of one engine (run it in a fresh process)."""
    out: dict = {}
    for h, w in sorted(sizes, key=lambda s: s[0] * s[1]):
        x = np.random.default_rng(0).random((1, 3, h, w), dtype=np.float32)
        for t in threads:
            run = _runner(spec, t)
            reset = _reset_peak()
            before = _memory_kb()["VmRSS"]
            times = time_runs(lambda: run(x), warmup, repeats)
            peak = _memory_kb()["VmHWM"] if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            median = statistics.median(times)
            out.setdefault(f"{h}x{w}", {})[f"threads{t}"] = {
                "latency_ms": round(median * 1e3, 3),
                "latency_p90_ms": round(float(np.percentile(times, 90)) * 1e3, 3),
                "mpix_per_s": round(h * w * scale * scale / median / 1e6, 4),
                # the process's peak while running (runtime and model included), and what running added
                "peak_rss_mb": round(peak / 1024, 1),
                "run_rss_mb": round(max(0, peak - before) / 1024, 1),
            }
    return out


def run_benchmark(
    checkpoint: Path, onnx_files: dict[str, Path], scale: int, macs_per_pixel: float,
    sizes: list[tuple[int, int]], threads: list[int], warmup: int, repeats: int,
) -> dict:
    """``{engine: {'HxW': {'threadsN': {...}}}, 'matmul_gflops': {...}, 'speedup': {...}}``."""
    results: dict = {"matmul_gflops": {f"threads{t}": round(matmul_gflops(threads=t), 2) for t in threads}}
    found = engines(checkpoint, onnx_files)
    context = multiprocessing.get_context("spawn")
    for name, spec in progress(list(found.items()), desc="benchmark", unit="engine"):
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
            measured = pool.submit(measure_engine, spec, sizes, threads, warmup, repeats, scale).result()
        for size, by_threads in measured.items():
            h, w = map(int, size.split("x"))
            for tkey, r in by_threads.items():
                gflops = 2 * macs_per_pixel * h * w * scale * scale / (r["latency_ms"] / 1e3) / 1e9
                r["gflops"] = round(gflops, 2)
                r["share_of_matmul"] = round(gflops / results["matmul_gflops"][tkey], 4)
        results[name] = measured
    results["speedup"] = speedups(results)
    return results


def speedups(results: dict) -> dict:
    """ONNX Runtime fp32 over PyTorch eager, and int8 over fp32, per size and thread count."""
    pairs = {"ort_fp32_over_torch": ("onnxruntime-fp32", "torch-fp32"),
             "int8_over_fp32": ("onnxruntime-int8", "onnxruntime-fp32")}
    out: dict = {}
    for key, (fast, slow) in pairs.items():
        if fast in results and slow in results:
            out[key] = {
                size: {t: round(results[slow][size][t]["latency_ms"] / r["latency_ms"], 3) for t, r in by_t.items()}
                for size, by_t in results[fast].items()
            }
    return out


def latency_table(results: dict) -> "pd.DataFrame":
    """One row per input size, one latency column per engine, at the largest thread count (for dvc plots)."""
    import pandas as pd

    rows: dict[str, dict] = {}
    for engine, by_size in results.items():
        if engine in ("matmul_gflops", "speedup"):
            continue
        for size, by_threads in by_size.items():
            t = max(by_threads, key=lambda k: int(k.removeprefix("threads")))
            h, w = map(int, size.split("x"))
            rows.setdefault(size, {"size": size, "input_pixels": h * w})[engine] = by_threads[t]["latency_ms"]
    return pd.DataFrame(sorted(rows.values(), key=lambda r: r["input_pixels"]))
