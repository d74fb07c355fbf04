"""The ``srpipe`` command line: one thin command per DVC stage.

Each command reads ``--params`` (default params.yaml) with ``--set key.sub=value`` overrides,
validates them, calls the library and writes its outputs. Default paths match dvc.yaml, so
every stage also runs on its own, outside DVC.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer

from .config import Params, ParamsError, load_params
from .io import SrpipeError, write_json

app = typer.Typer(
    help="srpipe: train, evaluate, export and benchmark image super-resolution models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ParamsPath = Annotated[Path, typer.Option("--params", help="params file to read.")]
Overrides = Annotated[
    Optional[list[str]],
    typer.Option("--set", help="override a param, e.g. --set model.attention=true (repeatable)."),
]
PREPARED = Path("data/prepared")
PATCHES = Path("data/patches")
TRAIN_DIR = Path("stages/train")
BEST = TRAIN_DIR / "best.pt"
ONNX = Path("stages/export-onnx/model.onnx")


def fail(message: str, code: int) -> None:
    typer.echo(f"srpipe: error: {message}", err=True)
    raise typer.Exit(code)


def stage(fn: Callable) -> Callable:
    """Turn params and data errors into one-line messages and exit codes 2 and 1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ParamsError as exc:
            fail(str(exc), 2)
        except SrpipeError as exc:
            fail(str(exc), 1)

    return wrapper


def read(params: Path, overrides: list[str] | None) -> Params:
    return load_params(params, overrides or [])


@app.command("prepare-degradations")
@stage
def prepare_degradations(
    params: ParamsPath = Path("params.yaml"),
    set_: Overrides = None,
    out: Annotated[Path, typer.Option(help="folder for train/ and valid/ HR and LR images.")] = PREPARED,
) -> None:
    """Crop HR images to a multiple of the scale and make their LR versions (PNG)."""
    from .data import prepare

    p = read(params, set_)
    for split, source in (("train", p.data.train), ("valid", p.data.valid)):
        names = prepare(source, out / split, p.scale, p.data.limit)
        typer.echo(f"{split}: {len(names)} images from {source} -> {out / split}")


@app.command("extract-patches")
@stage
def extract_patches(
    params: ParamsPath = Path("params.yaml"),
    set_: Overrides = None,
    prepared: Annotated[Path, typer.Option(help="prepared training images.")] = PREPARED / "train",
    out: Annotated[Path, typer.Option(help="folder for hr.npy, lr.npy and index.csv.")] = PATCHES,
) -> None:
    """Cut the training images into aligned HR/LR patch pairs."""
    from .patches import extract

    p = read(params, set_)
    n = extract(prepared, out, p.scale, p.patches.hr_size, p.patches.stride)
    typer.echo(f"{n} patch pairs of {p.patches.hr_size}px -> {out}")


@app.command()
@stage
def train(
    params: ParamsPath = Path("params.yaml"),
    set_: Overrides = None,
    patches: Annotated[Path, typer.Option(help="patch folder from extract-patches.")] = PATCHES,
    valid: Annotated[Path, typer.Option(help="prepared validation images.")] = PREPARED / "valid",
    out: Annotated[Path, typer.Option(help="folder for best.pt and last.pt.")] = TRAIN_DIR,
    log: Annotated[Path, typer.Option(help="per-epoch CSV for dvc plots.")] = Path("metrics/train_log.csv"),
    metrics: Annotated[Path, typer.Option(help="training summary JSON.")] = Path("metrics/train.json"),
) -> None:
    """Train the configured model on the patches; keep the best-validation-PSNR checkpoint."""
    from .train import train as run_train

    p = read(params, set_)
    summary = run_train(patches, valid, out, log, p.scale, p.seed, p.model, p.train, p.crop_border)
    write_json(metrics, summary)
    typer.echo(f"best validation PSNR {summary['best_val_psnr']:.3f} dB at epoch {summary['best_epoch']}")


@app.command()
@stage
def evaluate(
    params: ParamsPath = Path("params.yaml"),
    set_: Overrides = None,
    checkpoint: Annotated[Path, typer.Option(help="trained checkpoint.")] = BEST,
    valid: Annotated[Path, typer.Option(help="prepared validation images.")] = PREPARED / "valid",
    metrics: Annotated[Path, typer.Option(help="metrics JSON.")] = Path("metrics/evaluate.json"),
    per_image: Annotated[Path, typer.Option(help="per-image CSV.")] = Path("stages/evaluate/per_image.csv"),
) -> None:
    """PSNR / SSIM (Y channel, border cropped) and LPIPS of the model and of bicubic upscaling."""
    import pandas as pd

    from .data import load_pairs
    from .evaluate import bicubic_upscaler, evaluate as run_eval, summarize, torch_upscaler
    from .io import atomic_path
    from .metrics import LPIPS
    from .models import load_model

    p = read(params, set_)
    model, _ = load_model(checkpoint)
    pairs = load_pairs(valid, p.scale)
    lpips = LPIPS(p.eval.lpips_backbone) if p.eval.lpips else None
    kwargs = dict(crop_border=p.crop_border, y_channel=p.eval.y_channel, lpips=lpips)
    ours = run_eval(torch_upscaler(model), pairs, desc="model", **kwargs)
    bicubic = run_eval(bicubic_upscaler(p.scale), pairs, desc="bicubic", **kwargs)
    result = {**summarize(ours), "bicubic": summarize(bicubic)}
    result["psnr_gain_db"] = result["psnr"] - result["bicubic"]["psnr"]
    write_json(metrics, result)
    table = ours.merge(bicubic, on="image", suffixes=("", "_bicubic"))
    with atomic_path(per_image) as tmp:
        table.to_csv(tmp, index=False)
    typer.echo(pd.DataFrame({"model": summarize(ours), "bicubic": summarize(bicubic)}).T.to_string(float_format="%.4f"))


@app.command("export-onnx")
@stage
def export_onnx(
    params: ParamsPath = Path("params.yaml"),
    set_: Overrides = None,
    checkpoint: Annotated[Path, typer.Option(help="trained checkpoint.")] = BEST,
    valid: Annotated[Path, typer.Option(help="prepared validation images for the parity check.")] = PREPARED / "valid",
    out: Annotated[Path, typer.Option(help="ONNX file to write.")] = ONNX,
    metrics: Annotated[Path, typer.Option(help="export metrics JSON.")] = Path("metrics/export.json"),
) -> None:
    """Export to ONNX (dynamic batch/height/width), check it, compare with PyTorch."""
    from .data import load_pairs
    from .export import export_onnx as run_export, max_abs_difference
    from .models import load_model

    p = read(params, set_)
    model, _ = load_model(checkpoint)
    run_export(model, out, p.export.opset)
    images = [lr for _, _, lr in load_pairs(valid, p.scale)[: p.export.check_images]]
    diff = max_abs_difference(model, out, images)
    write_json(metrics, {"opset": p.export.opset, "max_abs_diff": diff, "size_mb": out.stat().st_size / 2**20})
    typer.echo(f"{out}: max |onnxruntime - torch| = {diff:.2e}")


@app.command()
@stage
def benchmark(
    params: ParamsPath = Path("params.yaml"),
    set_: Overrides = None,
    checkpoint: Annotated[Path, typer.Option(help="trained checkpoint.")] = BEST,
    onnx: Annotated[Path, typer.Option(help="exported ONNX file.")] = ONNX,
    metrics: Annotated[Path, typer.Option(help="benchmark metrics JSON.")] = Path("metrics/benchmark.json"),
) -> None:
    """Median latency of ONNX Runtime (CPU) and PyTorch eager per input size and thread count."""
    from .benchmark import run_benchmark
    from .models import load_model

    p = read(params, set_)
    model, ckpt = load_model(checkpoint)
    if not onnx.is_file():
        raise SrpipeError(f"ONNX file not found: {onnx} (run export-onnx first)")
    b = p.benchmark
    results = run_benchmark(model, onnx, ckpt["arch"]["kwargs"]["scale"], b.sizes, b.threads, b.warmup, b.repeats)
    write_json(metrics, results)
    for engine, by_size in results.items():
        for size, by_threads in by_size.items():
            for threads, r in by_threads.items():
                typer.echo(f"{engine:12s} {size:>9s} {threads:9s} {r['latency_ms']:9.2f} ms  {r['mpix_per_s']:.2f} MP/s")


def main() -> None:
    app(prog_name="srpipe")


if __name__ == "__main__":
    sys.exit(main())
