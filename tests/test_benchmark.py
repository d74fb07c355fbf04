"""The benchmark's yardsticks and what it writes: int8 engines against the int8 matmul rate, the
headline metrics that dvc compares, and the whole grid as a table."""

import numpy as np
import pytest
import torch

from srpipe import benchmark
from srpipe.benchmark import headline, int8_matmul_gops, report_lines, results_table, run_benchmark
from srpipe.export import calibration_patches, export_onnx, onnx_path, quantize_int8
from srpipe.models import build_model, macs_per_output_pixel, save_checkpoint

# stand-in matmul rates, far apart, so that a share shows which one it was taken against
RATES = {"fp32": 100.0, "bf16": 200.0, "int8": 400.0}


def cell(ms, **extra):
    return {"latency_ms": ms, "latency_p90_ms": ms, "mpix_per_s": 1.0, "peak_rss_mb": 10.0, "run_rss_mb": 1.0, **extra}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A tiny x2 EDSR as a checkpoint and as fp32 and int8 ONNX files."""
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("bench")
    arch = {"name": "edsr", "kwargs": {"scale": 2, "n_resblocks": 1, "n_feats": 8}}
    model = build_model(arch["name"], **arch["kwargs"]).eval()
    save_checkpoint(out / "model.pt", model, arch)
    export_onnx(model, onnx_path(out, "fp32"), opset=17, scale=model.scale)
    images = [np.random.default_rng(i).integers(0, 256, (24, 24, 3), dtype=np.uint8) for i in range(2)]
    quantize_int8(onnx_path(out, "fp32"), onnx_path(out, "int8"), calibration_patches(images, 4, 16))
    return model, out


def test_each_engine_is_measured_against_the_matmul_rate_of_its_own_arithmetic(tiny_model, monkeypatch):
    model, out = tiny_model
    monkeypatch.setattr(benchmark, "matmul_gflops", lambda threads=None, dtype=torch.float32:
                        RATES["bf16" if dtype == torch.bfloat16 else "fp32"])
    monkeypatch.setattr(benchmark, "int8_matmul_gops", lambda threads=None: RATES["int8"])
    results = run_benchmark(out / "model.pt", {q: onnx_path(out, q) for q in ("fp32", "int8")}, 2,
                            macs_per_output_pixel(model), [(16, 16)], [1], warmup=1, repeats=10)
    assert results["matmul_gflops"] == {"threads1": 100.0} and results["matmul_int8_gops"] == {"threads1": 400.0}
    expected = {"onnxruntime-fp32": "fp32", "onnxruntime-int8": "int8", "torch-fp32": "fp32", "torch-bf16": "bf16"}
    assert set(benchmark.engine_results(results)) <= set(expected) and "onnxruntime-int8" in results
    for engine, by_size in benchmark.engine_results(results).items():
        r = by_size["16x16"]["threads1"]
        assert r["matmul"] == expected[engine]
        assert r["share_of_matmul"] == pytest.approx(r["gflops"] / RATES[expected[engine]], rel=0.02, abs=1e-4)


def test_the_int8_matmul_rate_is_measured():
    assert 0.1 < int8_matmul_gops(n=256, repeats=3, threads=1) < 1e5


RESULTS = {
    "matmul_gflops": {"threads1": 50.0, "threads2": 100.0},
    "matmul_int8_gops": {"threads1": 200.0, "threads2": 400.0},
    "onnxruntime-fp32": {size: {"threads1": cell(8.0, gflops=20.0, matmul="fp32", share_of_matmul=0.4),
                                "threads2": cell(4.0, gflops=40.0, matmul="fp32", share_of_matmul=0.4)}
                         for size in ("32x32", "64x48")},
    "onnxruntime-int8": {size: {"threads1": cell(2.0, gflops=80.0, matmul="int8", share_of_matmul=0.4),
                                "threads2": cell(1.5, gflops=106.7, matmul="int8", share_of_matmul=0.2667)}
                         for size in ("32x32", "64x48")},
    "speedup": {"int8_over_fp32": {"64x48": {"threads2": 2.667}}},
}


def test_the_headline_is_one_latency_per_precision_at_the_largest_size_and_thread_count():
    assert headline(RESULTS) == {"fp32_ms": 4.0, "int8_ms": 1.5, "input": "64x48", "threads": 2}


def test_the_results_table_holds_every_measurement_with_its_yardstick():
    table = results_table(RESULTS)
    assert len(table) == 8  # 2 engines x 2 sizes x 2 thread counts
    row = table[(table.engine == "onnxruntime-int8") & (table["size"] == "64x48") & (table.threads == 2)].iloc[0]
    assert (row.input_pixels, row.latency_ms, row.matmul, row.matmul_gops, row.share_of_matmul) == \
        (3072, 1.5, "int8", 400.0, 0.2667)
    assert set(table[table.engine == "onnxruntime-fp32"].matmul_gops) == {50.0, 100.0}
    lines = report_lines(RESULTS)
    assert lines[:2] == ["fp32 matmul: {'threads1': 50.0, 'threads2': 100.0} GFLOP/s",
                         "int8 matmul: {'threads1': 200.0, 'threads2': 400.0} GOP/s"]
    assert "27% of int8 matmul" in lines[-2]


def test_the_engine_list_follows_the_device_and_names_what_it_skipped(tiny_model, monkeypatch):
    """On this CPU machine (and with eval.device cpu): CPU engines, and one line on the GPU ones.
    On a CUDA machine: PyTorch on the GPU in fp32, bf16 and fp16, and ONNX Runtime's CUDA and
    TensorRT providers where installed, each against the GPU's matmul rate of its arithmetic."""
    import onnxruntime as ort

    _, out = tiny_model
    files = {q: onnx_path(out, q) for q in ("fp32", "int8")}
    found, skipped = benchmark.engines(out / "model.pt", files)
    assert not [e for e in found if "cuda" in e or "tensorrt" in e]
    assert skipped == ["torch-cuda-* and onnxruntime-cuda-* (no CUDA device: eval.device is cpu, or none here)"]

    monkeypatch.setattr(benchmark, "bf16_supported", lambda device="cpu": True)
    found, skipped = benchmark.engines(out / "model.pt", files, cuda=True)  # onnxruntime without GPU providers
    assert {e: s["matmul"] for e, s in found.items() if e.startswith("torch-cuda")} == \
        {"torch-cuda-fp32": "cuda-fp32", "torch-cuda-bf16": "cuda-bf16", "torch-cuda-fp16": "cuda-fp16"}
    assert [s.split(" (")[0] for s in skipped] == ["onnxruntime-cuda-*", "onnxruntime-tensorrt"]
    assert all("pip install 'srpipe[gpu]'" in s for s in skipped)
    monkeypatch.setattr(ort, "get_available_providers",
                        lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])
    found, skipped = benchmark.engines(out / "model.pt", files, cuda=True)
    assert skipped == []
    assert {e: s["matmul"] for e, s in found.items() if e.startswith("onnxruntime-")} == {
        "onnxruntime-fp32": "fp32", "onnxruntime-int8": "int8", "onnxruntime-cuda-fp32": "cuda-fp32",
        "onnxruntime-cuda-int8": None, "onnxruntime-tensorrt": "cuda-fp32"}
    assert found["onnxruntime-cuda-fp32"]["providers"] == ["CUDAExecutionProvider"]
    assert set(benchmark.MATMUL) >= {s["matmul"] for s in found.values()} - {None}


def test_gpu_check_plans_every_check_and_dry_runs_without_a_gpu(tmp_path):
    """benchmarks/gpu_check.py --dry-run: the plan, on any machine; and without CUDA, the real run
    stops at once with one line (its CPU run: --device cpu, run by hand, see its docstring)."""
    import subprocess
    import sys

    from .conftest import ROOT

    script = ROOT / "benchmarks" / "gpu_check.py"
    dry = subprocess.run([sys.executable, str(script), "--dry-run", "--work", str(tmp_path / "w")],
                         capture_output=True, text=True, timeout=120)
    assert dry.returncode == 0, dry.stderr
    checks = [line[2:] for line in dry.stdout.splitlines() if line.startswith("# ")]
    assert checks == ["prepare-degradations", "extract-patches", "train (bf16, channels_last, compile, workers)",
                      "SIGKILL and resume", "torchrun x1 (NCCL on CUDA)", "evaluate", "evaluate fp16", "evaluate bf16",
                      "upscale", "train_throughput EDSR-baseline", "train_throughput RCAN", "export-onnx", "benchmark"]
    assert "train.device=cuda" in dry.stdout and "train.compile=true" in dry.stdout and "train.workers=8" in dry.stdout
    assert not (tmp_path / "w").exists()
    if not torch.cuda.is_available():
        real = subprocess.run([sys.executable, str(script), "--work", str(tmp_path / "w")], capture_output=True,
                              text=True, timeout=120)
        assert real.returncode == 2 and real.stderr.strip() == (
            "gpu_check: no CUDA device here; run it on a GPU machine, or with --device cpu")
