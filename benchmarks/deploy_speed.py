"""Deployment speed targets: EDSR-baseline x2, ONNX Runtime fp32 / int8 against PyTorch eager.

    python benchmarks/deploy_speed.py                     # 256x256 input, 1 and 2 threads
    python benchmarks/deploy_speed.py --size 512 --threads 2

Builds EDSR-baseline x2 (speed does not depend on the weights' values, so it is not trained),
exports it to ONNX, quantizes it to int8 calibrated on the bundled sample photos, and runs the
pipeline's own benchmark (every engine in a fresh process). Prints the figures and whether the
targets hold: ONNX Runtime fp32 >= 1.2x faster than PyTorch eager, int8 >= 2.5x faster than
ONNX Runtime fp32. Last, the cost of the x8 self-ensemble (EDSR+: ``eval.self_ensemble``,
``upscale --ensemble``) against the plain model, PyTorch fp32 on all threads.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from srpipe.benchmark import run_benchmark, time_runs
from srpipe.config import ModelParams
from srpipe.datasets import dataset_files
from srpipe.export import calibration_patches, export_onnx, onnx_path, quantize_int8
from srpipe.imresize import crop_to_multiple, imresize
from srpipe.io import read_image
from srpipe.models import build_model, macs_per_output_pixel, save_checkpoint
from srpipe.training import model_arch
from srpipe.upscalers import torch_upscaler


def ensemble_cost(model: torch.nn.Module, lr, repeats: int = 3) -> tuple[float, float]:
    """Median seconds of the plain model and of its x8 self-ensemble on one LR image."""
    import statistics

    return tuple(statistics.median(time_runs(lambda up=torch_upscaler(model, ensemble): up(lr), 1, repeats))
                 for ensemble in (False, True))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="baseline")
    ap.add_argument("--size", type=int, default=256, help="LR input side")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()

    torch.manual_seed(0)
    arch = model_arch(ModelParams(name="edsr", preset=args.preset), scale=2)
    model = build_model(arch["name"], **arch["kwargs"]).eval()
    lr_images = [imresize(crop_to_multiple(read_image(p), 2), 0.5) for p in dataset_files("sample-valid")]
    crop = lr_images[0][: args.size, : args.size].copy()
    plain, ensemble = ensemble_cost(model, crop)
    with tempfile.TemporaryDirectory() as tmp:
        save_checkpoint(Path(tmp) / "model.pt", model, arch)
        export_onnx(model, onnx_path(tmp, "fp32"), opset=17, scale=model.scale)
        quantize_int8(onnx_path(tmp, "fp32"), onnx_path(tmp, "int8"), calibration_patches(lr_images, 32, 64))
        results = run_benchmark(
            Path(tmp) / "model.pt", {q: onnx_path(tmp, q) for q in ("fp32", "int8")}, 2,
            macs_per_output_pixel(model), [(args.size, args.size)], args.threads, warmup=2, repeats=args.repeats,
        )

    size = f"{args.size}x{args.size}"
    print(f"EDSR-{args.preset} x2, {size} input; fp32 matmul {results['matmul_gflops']} GFLOP/s")
    for engine in ("torch-fp32", "torch-bf16", "onnxruntime-fp32", "onnxruntime-int8"):
        for t, r in results.get(engine, {}).get(size, {}).items():
            print(f"{engine:18s} {t:9s} {r['latency_ms']:9.1f} ms (p90 {r['latency_p90_ms']:.1f})  "
                  f"{r['gflops']:6.1f} GFLOP/s = {r['share_of_matmul']:6.1%} of matmul  peak {r['peak_rss_mb']:.0f} MB")
    for key, target in (("ort_fp32_over_torch", 1.2), ("int8_over_fp32", 2.5)):
        for t, x in results["speedup"][key][size].items():
            print(f"{key:20s} {t:9s} {x:5.2f}x  target >= {target}x: {'PASS' if x >= target else 'FAIL'}")
    print(f"self-ensemble x8, torch fp32, {crop.shape[1]}x{crop.shape[0]}: {plain * 1e3:.0f} ms -> "
          f"{ensemble * 1e3:.0f} ms ({ensemble / plain:.1f}x)")


if __name__ == "__main__":
    main()
