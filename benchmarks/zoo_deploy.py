"""Deployment figures of every architecture at its preset: size, work, ONNX Runtime latency, int8's loss.

    python benchmarks/zoo_deploy.py                                  # every architecture, 256x256, 1 and 2 threads
    python benchmarks/zoo_deploy.py --arch span compact --repeats 10
    python benchmarks/zoo_deploy.py --arch span --checkpoint span=stages/time-to-quality/span/train/best.pt

For each architecture (x2, at the preset ``-S model.name=NAME`` gives; ``edsr``: the demo's 8x32):
its trained parameters, the parameters of the exported graph (the deploy form: SPAN fuses three
convolutions into one), multiply-adds per output pixel, and ONNX Runtime's median latency on a
``--size`` LR input for fp32 and for int8 (static QDQ, calibrated on the sample photos), each on
every ``--threads`` count, each engine in a fresh process (srpipe's benchmark code); and the
time of one training step of the 30-minute recipe's shape (batch 16, 64-pixel HR crops, bf16
where the CPU has it, channels_last; eager: ``train.compile`` is measured by time_to_quality.py)
with srpipe's own trainer on the sample photos, so that a model too slow for a CPU budget shows
it. Latency does
not depend on the weights' values, so an untrained model is timed; int8's PSNR loss does, so it is
measured only for the architectures given a trained ``--checkpoint`` (Set5 x2, srpipe's protocol).
Prints a Markdown table and writes it as CSV to ``--out``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import tempfile
from pathlib import Path

import pandas as pd
import torch

from srpipe.benchmark import measure_engine
from srpipe.config import OWN_ARCHS, ZOO_ARCHS, ModelParams, TrainParams
from srpipe.datasets import dataset_files
from srpipe.evaluate import score_source, summarize
from srpipe.export import calibration_patches, export_onnx, onnx_path, quantize_int8
from srpipe.imresize import crop_to_multiple, imresize
from srpipe.io import read_image
from srpipe.modelfile import open_model_file
from srpipe.models import build_model, count_parameters, macs_per_output_pixel
from srpipe.training import model_arch, step_seconds
from srpipe.upscalers import onnx_upscaler, ort_session

from compile_speedup import sample_store  # a sibling script in benchmarks/


def graph_parameters(path: Path) -> int:
    """Elements of the floating-point tensors (not scalars) an ONNX graph holds: the parameters of
    the deployed form (and a few constants, such as a mean)."""
    import math

    import onnx
    from onnx import TensorProto

    floats = (TensorProto.FLOAT, TensorProto.FLOAT16)
    return sum(math.prod(t.dims) for t in onnx.load(str(path)).graph.initializer if t.data_type in floats and t.dims)


def latencies(path: Path, size: int, threads: list[int], repeats: int) -> dict[int, float]:
    """ONNX Runtime's median ms per thread count, in a fresh process."""
    spec = {"onnx": str(path), "providers": ["CPUExecutionProvider"], "matmul": None}
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        measured = pool.submit(measure_engine, spec, [(size, size)], threads, 2, repeats, 2).result()
    return {t: measured[f"{size}x{size}"][f"threads{t}"]["latency_ms"] for t in threads}


def int8_loss(fp32: Path, int8: Path, set5: str) -> float:
    """Set5 x2 PSNR of the int8 file minus the fp32 file's."""
    psnr = [summarize(score_source(onnx_upscaler(ort_session(f)), set5, 2, crop_border=2, desc=f.name))["psnr"]
            for f in (fp32, int8)]
    return psnr[1] - psnr[0]


def train_step_ms(name: str, work: Path, steps: int) -> float:
    """ms of one training step of the recipe's shape, by srpipe's trainer (eager)."""
    store, valid = (work / "store", work / "valid") if (work / "store").exists() else sample_store(work)
    cfg = TrainParams(batch_size=16, patch_size=64, amp="auto", channels_last=True, feature_stats_every=0)
    with tempfile.TemporaryDirectory() as scratch:
        step, _ = step_seconds(store, valid, scratch, 2, 0, ModelParams(name=name), cfg, steps)
    return step * 1000


def model_for(name: str, checkpoint: str | None):
    if checkpoint:
        opened = open_model_file(checkpoint)
        return opened.model, opened.scale
    torch.manual_seed(0)
    arch = model_arch(ModelParams(name=name), 2)
    return build_model(arch["name"], **arch["kwargs"]).eval(), 2


def measure(name: str, checkpoint: str | None, args: argparse.Namespace, calibration) -> dict:
    model, scale = model_for(name, checkpoint)
    row = {"arch": name, "trained_params": count_parameters(model), "macs_per_output_pixel": macs_per_output_pixel(model)}
    with tempfile.TemporaryDirectory() as tmp:
        fp32, int8 = onnx_path(tmp, "fp32"), onnx_path(tmp, "int8")
        export_onnx(model, fp32, 17, scale)
        quantize_int8(fp32, int8, calibration)
        row["deploy_params"] = graph_parameters(fp32)
        for precision, path in (("fp32", fp32), ("int8", int8)):
            for t, ms in latencies(path, args.size, args.threads, args.repeats).items():
                row[f"{precision}_ms_t{t}"] = ms
        row["int8_delta_psnr_set5"] = int8_loss(fp32, int8, args.set5) if checkpoint else None
    row["train_step_ms"] = train_step_ms(name, args.work, args.train_steps)
    print(row, flush=True)
    return row


def markdown(frame: pd.DataFrame, threads: list[int]) -> str:
    cols = [f"{p} ms ({t} thr)" for p in ("fp32", "int8") for t in threads]
    lines = ["| arch | trained params | deploy params | MACs / output px | " + " | ".join(cols)
             + " | int8 ΔPSNR Set5 | train step (eager) |", "|---|---|---|---|" + "---|" * len(cols) + "---|---|"]
    for r in frame.to_dict("records"):
        ms = " | ".join(f"{r[f'{p}_ms_t{t}']:.0f}" for p in ("fp32", "int8") for t in threads)
        delta = "not measured" if pd.isna(r["int8_delta_psnr_set5"]) else f"{r['int8_delta_psnr_set5']:+.3f} dB"
        lines.append(f"| {r['arch']} | {r['trained_params'] / 1e6:.2f} M | {r['deploy_params'] / 1e6:.2f} M | "
                     f"{r['macs_per_output_pixel'] / 1e3:.0f} k | {ms} | {delta} | {r['train_step_ms']:.0f} ms |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", nargs="+", default=["edsr", *ZOO_ARCHS], choices=[*OWN_ARCHS, *ZOO_ARCHS])
    ap.add_argument("--checkpoint", nargs="*", default=[], metavar="ARCH=PATH", help="trained weights, for int8's loss")
    ap.add_argument("--size", type=int, default=256, help="LR input side")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--set5", default="../shared/data/Set5")
    ap.add_argument("--train-steps", type=int, default=5, help="timed training steps (after 3 untimed)")
    ap.add_argument("--work", type=Path, default=Path("stages/zoo-deploy"), help="scratch folder (the sample store)")
    ap.add_argument("--out", type=Path, default=Path("docs/benchmarks/architectures/deploy.csv"))
    args = ap.parse_args()
    trained = dict(item.split("=", 1) for item in args.checkpoint)
    lr_images = [imresize(crop_to_multiple(read_image(p), 2), 0.5) for p in dataset_files("sample-valid")]
    calibration = calibration_patches(lr_images, 32, 64)
    frame = pd.DataFrame([measure(name, trained.get(name), args, calibration) for name in args.arch])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(args.out, index=False)
    print("\n" + markdown(frame, args.threads))


if __name__ == "__main__":
    main()
