"""benchmark: how fast and how big each way of running the model is.

Every engine (ONNX Runtime per exported precision, PyTorch eager in fp32 and, where the CPU
supports it, bf16; on a CUDA machine also PyTorch on the GPU in fp32, bf16 and fp16, and ONNX
Runtime's CUDA and TensorRT providers where onnxruntime-gpu is installed) runs in a fresh process
of its own; GPU runs are timed with CUDA events after warm-up, synchronised. For every input size and thread count:
median and p90 latency after warm-up, output megapixels/s, peak resident memory (and how much
running added to it), achieved GFLOP/s (from the model's multiply-adds: integer operations for
int8) and that as a share of the machine's matrix-multiply rate in the engine's own arithmetic,
measured in the same run: fp32 (torch), bf16 (torch) and int8 (ONNX Runtime MatMulInteger on
uint8 x int8, the arithmetic of a QDQ-quantized model).

``run_benchmark`` returns everything, nested; ``headline`` is the little that ``dvc exp show``
and ``dvc metrics diff`` compare, ``results_table`` the whole grid, one row per measurement.
"""

from __future__ import annotations

import concurrent.futures
import functools
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
from .upscalers import onnx_io, ort_session


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


def time_cuda_runs(fn: Callable[[], object], warmup: int, repeats: int) -> list[float]:
    """GPU seconds of ``repeats`` calls of ``fn`` after ``warmup``, each between two CUDA events
    and synchronised: the GPU's time, not the launch's."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return times


def matmul_gflops(n: int = 2048, repeats: int = 10, threads: int | None = None,
                  dtype: torch.dtype = torch.float32, device: str = "cpu") -> float:
    """The machine's matrix-multiply rate (GFLOP/s) with torch in ``dtype`` on ``device``, the
    yardstick for model speed."""
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        a, b = (torch.randn(n, n, dtype=dtype, device=device) for _ in range(2))
        timer = time_cuda_runs if device == "cuda" else time_runs
        times = timer(lambda: a @ b, warmup=3, repeats=repeats)
    finally:
        torch.set_num_threads(previous)
    return 2 * n**3 / statistics.median(times) / 1e9


def int8_matmul_gops(n: int = 2048, repeats: int = 10, threads: int | None = None) -> float:
    """The machine's int8 matrix-multiply rate (GOP/s): ONNX Runtime's MatMulInteger on uint8 x int8
    matrices, the kernels that run a QDQ-quantized model (uint8 activations, int8 weights). The int8
    matrix is a constant, which ONNX Runtime packs once, as it does a model's weights."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = numpy_helper.from_array(rng.integers(-128, 128, (n, n), dtype=np.int8), "b")
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["y"])], "int8_matmul",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [n, n])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [n, n])], initializer=[weights],
    )
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feeds = {"a": rng.integers(0, 256, (n, n), dtype=np.uint8)}
    times = time_runs(lambda: session.run(None, feeds), warmup=3, repeats=repeats)
    return 2 * n**3 / statistics.median(times) / 1e9


# The matmul rate each engine is measured against, by the arithmetic it runs in; results keys
MATMUL = {"fp32": "matmul_gflops", "bf16": "matmul_bf16_gflops", "int8": "matmul_int8_gops",
          "cuda-fp32": "matmul_cuda_gflops", "cuda-bf16": "matmul_cuda_bf16_gflops",
          "cuda-fp16": "matmul_cuda_fp16_gflops"}
GPU_EXTRA = "pip install 'srpipe[gpu]' (onnxruntime-gpu)"


def matmul_rates(arithmetic: set[str], threads: list[int]) -> dict:
    """``{'matmul_gflops': {'threadsN': rate}, ...}`` for each arithmetic in ``arithmetic`` (fp32 always);
    a GPU's rate is one figure, repeated under each thread count."""
    cuda = functools.partial(matmul_gflops, n=4096, device="cuda")
    measure = {"fp32": matmul_gflops, "bf16": functools.partial(matmul_gflops, dtype=torch.bfloat16),
               "int8": int8_matmul_gops, "cuda-fp32": cuda,
               "cuda-bf16": functools.partial(cuda, dtype=torch.bfloat16),
               "cuda-fp16": functools.partial(cuda, dtype=torch.float16)}
    return {MATMUL[a]: {f"threads{t}": round(measure[a](threads=t), 2) for t in threads}
            for a in MATMUL if a in arithmetic | {"fp32"}}


def engines(checkpoint: Path, onnx_files: dict[str, Path], cuda: bool = False) -> tuple[dict[str, dict], list[str]]:
    """(engine name -> what the worker needs to build it, and ``matmul``: the arithmetic it runs
    in, whose matmul rate it is compared with; the engines left out, each with why). ``cuda``: the
    benchmark's device is a CUDA GPU (``eval.device``)."""
    import onnxruntime as ort

    found: dict[str, dict] = {}
    providers = ort.get_available_providers()
    gpu_onnx = cuda and "CUDAExecutionProvider" in providers
    for precision, path in onnx_files.items():
        if precision != "fp16":  # fp16 is for GPU providers
            found[f"onnxruntime-{precision}"] = {"onnx": str(path), "providers": ["CPUExecutionProvider"],
                                                 "matmul": precision}
        if gpu_onnx:
            found[f"onnxruntime-cuda-{precision}"] = {"onnx": str(path), "providers": ["CUDAExecutionProvider"],
                                                      "matmul": f"cuda-{precision}" if precision != "int8" else None}
    if cuda and "TensorrtExecutionProvider" in providers and "fp32" in onnx_files:
        found["onnxruntime-tensorrt"] = {"onnx": str(onnx_files["fp32"]), "providers": ["TensorrtExecutionProvider"],
                                         "matmul": "cuda-fp32"}
    found["torch-fp32"] = {"checkpoint": str(checkpoint), "dtype": "fp32", "device": "cpu", "matmul": "fp32"}
    if bf16_supported():
        found["torch-bf16"] = {"checkpoint": str(checkpoint), "dtype": "bf16", "device": "cpu", "matmul": "bf16"}
    for dtype in ("fp32", "bf16", "fp16") if cuda else ():
        if dtype != "bf16" or bf16_supported("cuda"):
            found[f"torch-cuda-{dtype}"] = {"checkpoint": str(checkpoint), "dtype": dtype, "device": "cuda",
                                            "matmul": f"cuda-{dtype}"}
    skipped = [] if cuda else ["torch-cuda-* and onnxruntime-cuda-* (no CUDA device: eval.device is cpu, or none here)"]
    if cuda and not gpu_onnx:
        skipped.append(f"onnxruntime-cuda-* (onnxruntime has no CUDA provider: {GPU_EXTRA})")
    if cuda and "TensorrtExecutionProvider" not in providers:
        skipped.append(f"onnxruntime-tensorrt (no TensorRT provider: {GPU_EXTRA} with TensorRT)")
    return found, skipped


def _runner(spec: dict, threads: int) -> Callable[[np.ndarray], object]:
    if "onnx" in spec:
        import onnxruntime as ort

        if spec["providers"] == ["CPUExecutionProvider"]:
            session = ort_session(spec["onnx"], threads)
        else:
            session = ort.InferenceSession(spec["onnx"], providers=spec["providers"])
        inp, out = onnx_io(session, spec["onnx"])  # srpipe's names, or another tool's
        return lambda x: session.run([out], {inp: x})
    from .modelfile import open_model_file

    model = open_model_file(spec["checkpoint"]).model
    torch.set_num_threads(threads)
    if spec["device"] == "cuda":  # the weights in the engine's dtype; the input's copy to the GPU is timed
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[spec["dtype"]]
        model = model.to("cuda", dtype)

        @torch.inference_mode()
        def run_gpu(x: np.ndarray):
            return model(torch.from_numpy(x).to("cuda", dtype))

        return run_gpu

    def run(x: np.ndarray):
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=spec["dtype"] == "bf16"):
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
    timer = time_cuda_runs if spec.get("device") == "cuda" else time_runs  # ONNX Runtime's run returns synchronised
    for h, w in sorted(sizes, key=lambda s: s[0] * s[1]):
        x = np.random.default_rng(0).random((1, 3, h, w), dtype=np.float32)
        for t in threads:
            run = _runner(spec, t)
            reset = _reset_peak()
            before = _memory_kb()["VmRSS"]
            times = timer(lambda: run(x), warmup, repeats)
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
    sizes: list[tuple[int, int]], threads: list[int], warmup: int, repeats: int, found: dict[str, dict] | None = None,
) -> dict:
    """``{engine: {'HxW': {'threadsN': {...}}}, 'matmul_gflops': {'threadsN': rate}, ..., 'speedup': {...}}``:
    every engine (``found``, default :func:`engines` on the CPU) in a fresh process, beside the matmul
    rates of the arithmetic the engines run in."""
    found = found if found is not None else engines(checkpoint, onnx_files)[0]
    results: dict = matmul_rates({spec["matmul"] for spec in found.values()} - {None}, threads)
    context = multiprocessing.get_context("spawn")
    for name, spec in progress(list(found.items()), desc="benchmark", unit="engine"):
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
            measured = pool.submit(measure_engine, spec, sizes, threads, warmup, repeats, scale).result()
        results[name] = with_throughput(measured, macs_per_pixel, scale, spec["matmul"], results)
    results["speedup"] = speedups(results)
    return results


def with_throughput(measured: dict, macs_per_pixel: float, scale: int, arithmetic: str | None, rates: dict) -> dict:
    """Add to each cell ``gflops`` (2 x multiply-adds per second; integer operations for int8),
    ``matmul`` (the engine's arithmetic) and ``share_of_matmul``: ``gflops`` over that arithmetic's
    matmul rate in ``rates`` at the same thread count (None without a yardstick: GPU engines)."""
    for size, by_threads in measured.items():
        for tkey, r in by_threads.items():
            gflops = 2 * macs_per_pixel * pixels(size) * scale * scale / (r["latency_ms"] / 1e3) / 1e9
            share = round(gflops / rates[MATMUL[arithmetic]][tkey], 4) if arithmetic else None
            r.update(gflops=round(gflops, 2), matmul=arithmetic, share_of_matmul=share)
    return measured


def pixels(size: str) -> int:
    """Pixels of an ``'HxW'`` size key."""
    h, w = map(int, size.split("x"))
    return h * w


def thread_count(key: str) -> int:
    """The number in a ``'threadsN'`` key."""
    return int(key.removeprefix("threads"))


def engine_results(results: dict) -> dict:
    """The engines' entries of ``run_benchmark``'s results, without the matmul rates and speedups."""
    return {k: v for k, v in results.items() if not k.startswith(("matmul", "speedup"))}


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
    for engine, by_size in engine_results(results).items():
        for size, by_threads in by_size.items():
            t = max(by_threads, key=thread_count)
            rows.setdefault(size, {"size": size, "input_pixels": pixels(size)})[engine] = by_threads[t]["latency_ms"]
    return pd.DataFrame(sorted(rows.values(), key=lambda r: r["input_pixels"]))


def results_table(results: dict) -> "pd.DataFrame":
    """The whole grid: one row per engine, input size and thread count, with the matmul rate
    (``matmul_gops``) of the arithmetic (``matmul``) that ``share_of_matmul`` compares with."""
    import pandas as pd

    rows = []
    for engine, by_size in engine_results(results).items():
        for size, by_threads in by_size.items():
            for tkey, r in by_threads.items():
                rate = results[MATMUL[r["matmul"]]][tkey] if r.get("matmul") else None
                rows.append({"engine": engine, "size": size, "input_pixels": pixels(size),
                             "threads": thread_count(tkey), **r, "matmul_gops": rate})
    return pd.DataFrame(rows)


def headline(results: dict) -> dict:
    """What ``dvc exp show`` and ``dvc metrics diff`` compare: one latency per exported precision,
    ONNX Runtime's median on the CPU at the largest input size and thread count (``fp32_ms``,
    ``int8_ms``); every engine's every measurement is in ``results_table``."""
    grid = engine_results(results)
    size = max((size for by_size in grid.values() for size in by_size), key=pixels)
    tkey = max((t for by_size in grid.values() for t in by_size[size]), key=thread_count)
    ort = {engine.removeprefix("onnxruntime-"): by_size for engine, by_size in grid.items()
           if engine.startswith("onnxruntime-") and engine.count("-") == 1}  # not -cuda-, -tensorrt
    return {**{f"{precision}_ms": by_size[size][tkey]["latency_ms"] for precision, by_size in ort.items()},
            "input": size, "threads": thread_count(tkey)}


def report_lines(results: dict) -> list[str]:
    """``run_benchmark``'s results as lines for the terminal: the matmul rates, every measurement, the speedups."""
    units = {arithmetic: "GOP/s" if arithmetic == "int8" else "GFLOP/s" for arithmetic in MATMUL}
    lines = [f"{arithmetic} matmul: {results[key]} {units[arithmetic]}" for arithmetic, key in MATMUL.items()
             if key in results]
    for engine, by_size in engine_results(results).items():
        for size, by_threads in by_size.items():
            for threads, r in by_threads.items():
                share = f" = {r['share_of_matmul']:5.0%} of {r['matmul']} matmul" if r.get("matmul") else ""
                lines.append(f"{engine:18s} {size:>9s} {threads:9s} {r['latency_ms']:9.2f} ms  "
                             f"{r['mpix_per_s']:6.2f} MP/s  {r['gflops']:6.1f} GOP/s{share}  "
                             f"peak {r['peak_rss_mb']:7.1f} MB (+{r['run_rss_mb']:.1f} MB running)")
    lines += [f"{key}: {by_size}" for key, by_size in results["speedup"].items()]
    return lines
