"""The ``srpipe`` command line: one thin command per DVC stage.

Each command reads ``--params`` (default params.yaml) with ``--set key.sub=value`` overrides,
validates them, calls the library and writes its outputs. Default paths match dvc.yaml, so
every stage also runs on its own, outside DVC.
"""

from __future__ import annotations

import functools
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer

from .config import Params, ParamsError, apply_overrides, load_params, validate_params
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
        except KeyboardInterrupt:
            fail("interrupted; unfinished outputs were removed", 130)

    return wrapper


def load_params_from(raw: dict, overrides: list[str]) -> Params:
    return validate_params(apply_overrides(raw, overrides), "defaults")


def read(params: Path, overrides: list[str] | None, missing_ok: bool = False) -> Params:
    """Validated params; with ``missing_ok`` an absent default params.yaml means all defaults."""
    if missing_ok and params == Path("params.yaml") and not params.exists():
        return load_params_from({}, overrides or [])
    return load_params(params, overrides or [])


@app.command("prepare-degradations")
@stage
def prepare_degradations(
    params: ParamsPath = Path("params.yaml"),
    set_: Overrides = None,
    out: Annotated[Path, typer.Option(help="folder for train/, valid/ and eval/<dataset>/ HR and LR images.")] = PREPARED,
) -> None:
    """Crop HR images to a multiple of the scale and make their LR versions (PNG) and a manifest.

    Training images get `degradation`; validation and evaluation sets get it too unless
    `eval.degradation: bicubic`.
    """
    from .data import prepare
    from .datasets import dataset_key
    from .io import atomic_path

    p = read(params, set_)
    held_out = p.degradation if p.eval.degradation == "same" else None
    keys = [dataset_key(d) for d in p.eval.datasets]
    if len(set(keys)) != len(keys):
        raise SrpipeError(f"eval.datasets has two datasets with one name: {keys}")
    common = dict(scale=p.scale, seed=p.seed, limit=p.data.limit, raw_dir=p.data.raw_dir)
    for split, source, degradation in (("train", p.data.train, p.degradation), ("valid", p.data.valid, held_out)):
        n = len(prepare(source, out / split, degradation=degradation, **common))
        typer.echo(f"{split}: {n} images from {source} -> {out / split}")
    with atomic_path(out / "eval") as tmp:
        tmp.mkdir()
        for key, source in zip(keys, p.eval.datasets):
            n = len(prepare(source, tmp / key, degradation=held_out, **common))
            typer.echo(f"eval/{key}: {n} images from {source}")


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
    out: Annotated[Path, typer.Option(help="folder for best.pt, last.pt and TensorBoard logs (tb/).")] = TRAIN_DIR,
    history: Annotated[Path, typer.Option(help="per-epoch CSV for dvc plots.")] = Path("metrics/train_log.csv"),
    metrics: Annotated[Path, typer.Option(help="training summary JSON.")] = Path("metrics/train.json"),
) -> None:
    """Train the configured model on the patches; keep the best-validation-PSNR checkpoint.

    Resumes from last.pt when an unfinished run with the same params and data is there. Under
    `torchrun --nproc_per_node=N -m srpipe train` it trains with DistributedDataParallel.
    """
    from .train import train as run_train

    p = read(params, set_)
    summary = run_train(patches, valid, out, history, p.scale, p.seed, p.model, p.train, p.crop_border)
    if summary is not None:  # only the main process writes
        write_json(metrics, summary)
        typer.echo(f"best validation PSNR {summary['best_val_psnr']:.3f} dB at epoch {summary['best_epoch']}")


class Baseline(str, Enum):
    bicubic = "bicubic"


@app.command()
@stage
def evaluate(
    params: ParamsPath = Path("params.yaml"),
    set_: Overrides = None,
    checkpoint: Annotated[Optional[Path], typer.Option(help="PyTorch checkpoint to evaluate (pipeline default: stages/train/best.pt).")] = None,
    onnx: Annotated[Optional[Path], typer.Option(help="ONNX model to evaluate instead.")] = None,
    baseline: Annotated[Optional[Baseline], typer.Option(help="evaluate a baseline instead of a model.")] = None,
    hr_dir: Annotated[Optional[str], typer.Option(help="evaluate this folder (or dataset name) of HR images instead of the pipeline's eval.datasets.")] = None,
    scale: Annotated[Optional[int], typer.Option(help="scale for --hr-dir (default: the model's; params' scale for --baseline).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="metrics JSON (with --hr-dir); the per-image CSV goes beside it.")] = None,
    save_dir: Annotated[Optional[Path], typer.Option(help="also write each SR image and an HR | bicubic | model comparison strip here.")] = None,
    prepared: Annotated[Path, typer.Option(help="prepared evaluation sets (pipeline mode).")] = PREPARED / "eval",
    metrics: Annotated[Path, typer.Option(help="metrics JSON (pipeline mode).")] = Path("metrics/evaluate.json"),
    per_image: Annotated[Path, typer.Option(help="per-image CSV (pipeline mode).")] = Path("stages/evaluate/per_image.csv"),
) -> None:
    """PSNR / SSIM (Y channel, border cropped) and LPIPS by the SR evaluation protocol.

    In the pipeline: the model on every dataset of `eval.datasets`, beside bicubic upscaling,
    nested per dataset in metrics/evaluate.json. With --hr-dir: any folder of HR images, with
    exactly one of --checkpoint, --onnx or --baseline bicubic, into --out.
    """
    import pandas as pd

    from .data import load_pairs
    from .datasets import dataset_key
    from .evaluate import evaluate as run_eval, summarize
    from .io import atomic_path
    from .metrics import LPIPS
    from .upscalers import bicubic_upscaler, load_upscaler

    p = read(params, set_)
    chosen = [x for x in (checkpoint, onnx, baseline) if x is not None]
    if len(chosen) > 1 or (hr_dir is not None and not chosen):
        raise typer.BadParameter("give exactly one of --checkpoint, --onnx, --baseline bicubic")
    if hr_dir is None and checkpoint is None and not chosen:
        checkpoint = BEST
    upscaler, model_scale, label = load_upscaler(checkpoint, onnx, baseline and baseline.value, scale or p.scale)
    if scale is not None and scale != model_scale:
        raise SrpipeError(f"--scale {scale} does not match the model's scale {model_scale}")
    lpips = LPIPS(p.eval.lpips_backbone) if p.eval.lpips else None
    kwargs = dict(crop_border=p.eval.crop_border if p.eval.crop_border is not None else model_scale,
                  y_channel=p.eval.y_channel, lpips=lpips)

    if hr_dir is not None:
        from .data import make_pairs

        if out is None:
            raise typer.BadParameter("--hr-dir needs --out FILE.json")
        held_out = p.degradation if p.eval.degradation == "same" else None
        pairs = make_pairs(hr_dir, model_scale, held_out, p.seed, p.data.raw_dir)
        frame = run_eval(upscaler, pairs, desc=label, save_dir=save_dir, **kwargs)
        write_json(out, {"dataset": hr_dir, "scale": model_scale, "upscaler": label, "images": len(frame),
                         **summarize(frame)})
        with atomic_path(out.with_suffix(".csv")) as tmp:
            frame.to_csv(tmp, index=False)
        typer.echo(f"{label} on {hr_dir} x{model_scale}: " + ", ".join(f"{k} {v:.4f}" for k, v in summarize(frame).items()))
        return

    result, tables, rows = {}, [], {}
    for key in (dataset_key(d) for d in p.eval.datasets):
        pairs = load_pairs(prepared / key, model_scale)
        ours = run_eval(upscaler, pairs, desc=f"{key}: {label}", save_dir=save_dir and save_dir / key, **kwargs)
        bicubic = run_eval(bicubic_upscaler(model_scale), pairs, desc=f"{key}: bicubic", **kwargs)
        result[key] = {**summarize(ours), "bicubic": summarize(bicubic)}
        result[key]["psnr_gain_db"] = result[key]["psnr"] - result[key]["bicubic"]["psnr"]
        tables.append(ours.merge(bicubic, on="image", suffixes=("", "_bicubic")).assign(dataset=key))
        rows[(key, label)], rows[(key, "bicubic")] = summarize(ours), summarize(bicubic)
    write_json(metrics, result)
    with atomic_path(per_image) as tmp:
        pd.concat(tables).to_csv(tmp, index=False)
    typer.echo(pd.DataFrame(rows).T.to_string(float_format="%.4f"))


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


data_app = typer.Typer(help="Datasets: list them, fetch the standard ones.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("list")
@stage
def data_list(params: ParamsPath = Path("params.yaml"), set_: Overrides = None) -> None:
    """Show the bundled and standard datasets, and which are present under data.raw_dir."""
    from .datasets import SAMPLE_SETS, STANDARD, hr_dir, is_present

    p = read(params, set_, missing_ok=True)
    typer.echo(f"{'name':13s} {'status':10s} description")
    for name, files in SAMPLE_SETS.items():
        typer.echo(f"{name:13s} {'bundled':10s} {len(files)} scikit-image photos: {', '.join(files)}")
    for name, d in STANDARD.items():
        status = "present" if is_present(d, p.data.raw_dir) else "absent"
        where = f" [{hr_dir(d, p.data.raw_dir)}]" if status == "present" else ""
        typer.echo(f"{name:13s} {status:10s} {d.description}{where}")


@data_app.command("fetch")
@stage
def data_fetch(
    name: Annotated[str, typer.Argument(help="a standard dataset, see `srpipe data list`.")],
    params: ParamsPath = Path("params.yaml"),
    set_: Overrides = None,
) -> None:
    """Download a standard dataset, verify its checksum and extract it into data.raw_dir/NAME.

    All or nothing: a failed or interrupted fetch leaves no partial folder. A no-op when present.
    """
    from .datasets import STANDARD, fetch
    from .io import list_images

    p = read(params, set_, missing_ok=True)
    if name not in STANDARD:
        raise typer.BadParameter(f"unknown dataset {name!r}; choose from {', '.join(STANDARD)}", param_hint="NAME")
    folder, fetched = fetch(STANDARD[name], p.data.raw_dir)
    state = "fetched" if fetched else "already present, nothing to do"
    typer.echo(f"{name}: {state}; {len(list_images(folder))} HR images in {folder}")


def main() -> None:
    app(prog_name="srpipe")


if __name__ == "__main__":
    sys.exit(main())
