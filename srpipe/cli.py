"""The ``srpipe`` command line: one thin command per DVC stage.

Each command reads ``--params`` (default params.yaml) with ``--set key.sub=value`` overrides,
validates them, calls the library and writes its outputs. Default paths match dvc.yaml, so
every stage also runs on its own, outside DVC.
"""

from __future__ import annotations

import functools
import os
import sys
import warnings
from enum import Enum
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer

from .config import SOURCES, Params, ParamsError, apply_overrides, load_params, validate_params
from .hardware import HALF
from .io import SrpipeError, check_writable, write_json
from .upscale import FORMATS

app = typer.Typer(
    help="srpipe: train, evaluate, export and benchmark image super-resolution models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",  # docstrings reflow to the terminal's width instead of breaking where the source does
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
EXPORT_DIR = Path("stages/export-onnx")


DEBUG_ENV = "SRPIPE_DEBUG"
# what Typer reports itself (bad usage): the base class of typer.BadParameter, whichever version
USAGE_ERRORS = tuple(c for c in typer.BadParameter.__mro__ if c.__name__ in ("ClickException", "TyperException"))


def fail(message: str, code: int) -> None:
    typer.echo(f"srpipe: error: {message}", err=True)
    raise typer.Exit(code)


_debug = {"flag": False}  # --debug of the running command


def debugging() -> bool:
    return _debug["flag"] or os.environ.get(DEBUG_ENV, "").lower() not in ("", "0", "false", "no")


def os_error_message(exc: OSError) -> str:
    """One line for a file-system failure: the path, what went wrong, what to do."""
    from .io import disk_full_error, user_path

    full = disk_full_error(exc, exc.filename or "an output")
    if full is not None:
        return str(full)
    where = f"{user_path(exc.filename)}: " if exc.filename else ""
    return f"{where}{exc.strerror or exc}; check that the path exists, is writable and that the disk has room"


def stage(fn: Callable) -> Callable:
    """Turn every failure into one line: params errors exit 2, data and file errors 1; anything
    else is a bug in srpipe, reported in one line (the traceback with --debug or SRPIPE_DEBUG=1)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ParamsError as exc:
            fail(str(exc), 2)
        except SrpipeError as exc:
            fail(str(exc), 1)
        except (*USAGE_ERRORS, typer.Exit, typer.Abort):
            raise  # usage errors and exits: Typer reports them
        except OSError as exc:
            if debugging():
                raise
            fail(os_error_message(exc), 1)
        except KeyboardInterrupt:
            fail("interrupted; unfinished outputs were removed", 130)
        except Exception as exc:  # noqa: BLE001: the last line of defence
            if debugging():
                raise
            fail(f"unexpected {type(exc).__name__}: {exc}. This is a bug in srpipe: run again with --debug "
                 f"(or {DEBUG_ENV}=1) for the traceback and report it", 1)

    return wrapper


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one readable line (no source line, no category), between progress bars."""
    from tqdm import tqdm

    tqdm.write(f"srpipe: warning: {message}", file=sys.stderr)


def show_version(value: bool) -> None:
    if value:
        from . import __version__

        typer.echo(f"srpipe {__version__}")
        raise typer.Exit()


@app.callback()
def options(
    debug: Annotated[bool, typer.Option("--debug", help=f"show the traceback of an unexpected failure (also: {DEBUG_ENV}=1).")] = False,
    version: Annotated[bool, typer.Option("--version", callback=show_version, is_eager=True, help="show srpipe's version and exit.")] = False,
) -> None:
    """srpipe: train, evaluate, export and benchmark image super-resolution models.

    Each stage of the DVC pipeline (dvc.yaml) is one command; `dvc repro` runs them all with
    params.yaml (every key: docs/params.md), and each runs alone too. `srpipe COMMAND --help`
    shows a command's options and an example.

    Example: srpipe upscale photo.jpg --model 4x-UltraSharp.pth --out upscaled
    """
    _debug["flag"] = debug


def read(params: Path, overrides: list[str] | None, missing_ok: bool = False) -> Params:
    """Validated params; with ``missing_ok`` an absent default params.yaml means all defaults."""
    if missing_ok and params == Path("params.yaml") and not params.exists():
        return validate_params(apply_overrides({}, overrides or []), "defaults")
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
    `eval.degradation: bicubic`. Every input is found before anything is written; images are
    prepared on `data.workers` processes. Validation and evaluation images that are also training
    images (by content) are refused unless `data.allow_overlap: true`.

    Example: srpipe prepare-degradations --set data.train=photos/ --set data.valid=held-out/
    """
    from .data import PrepareJob, check_held_out, prepare_all, source_files
    from .datasets import dataset_key
    from .metrics import min_side
    from .parallel import resolve_workers

    p = read(params, set_)
    held_out = p.degradation if p.eval.degradation == "same" else None
    keys = [dataset_key(d) for d in p.eval.datasets]
    if len(set(keys)) != len(keys):
        raise SrpipeError(f"eval.datasets has two datasets with one name: {keys}")
    scored = min_side(p.eval.crop(p.scale))
    sets = [("train", p.data.train, p.degradation, 0, tuple(p.data.train_scales)),
            ("valid", p.data.valid, held_out, scored, (1.0,)),
            *((f"eval/{key}", source, held_out, scored, (1.0,)) for key, source in zip(keys, p.eval.datasets))]
    check_writable(out, folder=True)
    jobs = [PrepareJob(folder, source_files(source, p.data.limit, p.data.raw_dir), degradation, least, sizes)
            for folder, source, degradation, least, sizes in sets]  # every input is found before anything is written
    if p.data.allow_overlap:
        warnings.warn("data.allow_overlap: validation and evaluation images are not checked against the training "
                      "images; scores of images the model trained on are inflated")
    else:
        train_sources = [p.data.train] if isinstance(p.data.train, str) else p.data.train
        check_held_out(jobs[0].files, {str(source): job.files for (_, source, *_), job in zip(sets[1:], jobs[1:])},
                       train_sources)
    prepare_all(jobs, out, p.scale, p.seed, resolve_workers(p.data.workers))
    for (folder, source, *_), job in zip(sets, jobs):
        typer.echo(f"{folder}: {len(job.files)} images from {source} -> {out / folder}")


@app.command("extract-patches")
@stage
def extract_patches(
    params: ParamsPath = Path("params.yaml"),
    set_: Overrides = None,
    prepared: Annotated[Path, typer.Option(help="prepared training images.")] = PREPARED / "train",
    out: Annotated[Path, typer.Option(help="folder for the image store: hr.bin, lr.bin and index.csv.")] = PATCHES,
) -> None:
    """Pack the prepared training images into one memory-mappable store (random crops are cut
    from it while training, so the crop size can change without re-running this stage).

    Example: srpipe extract-patches
    """
    from .parallel import resolve_workers
    from .patches import extract

    p = read(params, set_)
    check_writable(out)
    index = extract(prepared, out, p.scale, resolve_workers(p.data.workers))
    size = sum((out / f).stat().st_size for f in ("hr.bin", "lr.bin"))
    typer.echo(f"{len(index)} images ({size / 2**20:.1f} MiB of pixels) -> {out}")


ARCHITECTURES_HELP = "\n\n".join(f"{name}: {source}." for name, source in SOURCES.items())


@app.command(help=f"""Train the configured model on random crops of the image store; keep the best-validation-PSNR
checkpoint.

Saves last.pt every `train.save_every` steps and at every epoch's end, and resumes from it when
an unfinished run with the same params and data is there. Under
`torchrun --nproc_per_node=N -m srpipe train` it trains with DistributedDataParallel.

model.name picks the architecture (model.preset its size, model.kwargs spandrel's constructor
arguments). Example: srpipe train --set model.name=span

{ARCHITECTURES_HELP}
""")
@stage
def train(
    params: ParamsPath = Path("params.yaml"),
    set_: Overrides = None,
    patches: Annotated[Path, typer.Option(help="image store from extract-patches.")] = PATCHES,
    valid: Annotated[Path, typer.Option(help="prepared validation images.")] = PREPARED / "valid",
    out: Annotated[Path, typer.Option(help="folder for best.pt, last.pt and TensorBoard logs (tb/).")] = TRAIN_DIR,
    history: Annotated[Path, typer.Option(help="per-epoch CSV for dvc plots.")] = Path("metrics/train_log.csv"),
    metrics: Annotated[Path, typer.Option(help="training summary JSON.")] = Path("metrics/train.json"),
) -> None:
    from .training import train as run_train

    p = read(params, set_)
    for path in (out / "last.pt", history, metrics):
        check_writable(path)
    summary = run_train(patches, valid, out, history, p.scale, p.seed, p.model, p.train, p.eval.crop(p.scale),
                        p.degradation, p.eval.lpips_backbone, p.discriminator, metrics)
    if summary is not None:  # the main process
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
    crops: Annotated[Path, typer.Option(help="folder of eval.detail_crops pictures, one subfolder per dataset (pipeline mode).")] = Path("stages/evaluate/crops"),
    device: Annotated[Optional[Device], typer.Option(help="where a PyTorch model runs (eval.device): auto takes CUDA when present.")] = None,
    precision: Annotated[Optional[Precision], typer.Option(help="also score the model in fp16 or bf16 on CUDA (eval.precision), its own entry beside fp32.")] = None,
) -> None:
    """PSNR / SSIM (Y channel, border cropped) and LPIPS by the SR evaluation protocol.

    In the pipeline: the model on every dataset of `eval.datasets`, beside bicubic upscaling,
    nested per dataset in metrics/evaluate.json. With --hr-dir: any folder of HR images, with
    exactly one of --checkpoint, --onnx or --baseline bicubic, into --out.

    Example: srpipe evaluate --hr-dir set5 --checkpoint stages/train/best.pt --out set5.json
    """
    p = read(params, [*(set_ or []), *inference_overrides(device, precision)], missing_ok=hr_dir is not None)
    chosen = [x for x in (checkpoint, onnx, baseline) if x is not None]
    if len(chosen) > 1 or (hr_dir is not None and not chosen):
        raise typer.BadParameter("give exactly one of --checkpoint, --onnx, --baseline bicubic")
    if hr_dir is not None and out is None:
        raise typer.BadParameter("--hr-dir needs --out FILE.json")
    for path in (out, out.with_suffix(".csv")) if hr_dir is not None else (metrics, per_image, crops):
        check_writable(path)
    if save_dir is not None:
        check_writable(save_dir, folder=True)
    explicit_scale = params.is_file() or any(o.replace(" ", "").startswith("scale=") for o in set_ or [])
    from .hardware import pick_device

    model, device = checkpoint if chosen else BEST, pick_device(p.eval.device, "eval.device")
    upscaler, model_scale, label = evaluated(p, model, onnx, baseline, scale, explicit_scale, device)
    extras = extra_upscalers(p, model if baseline is None else None, onnx, device)
    if hr_dir is not None:
        score_folder(p, upscaler, model_scale, label, hr_dir, out, save_dir, extras)
    else:
        score_pipeline(p, upscaler, model_scale, label, prepared, (metrics, per_image, crops), save_dir, extras)


def param_choices(key: str) -> type[Enum]:
    """The values ``eval.<key>`` takes, as a CLI option's choices: params' schema is their one list."""
    from typing import get_args

    from .config import EvalParams

    return Enum(key.capitalize(), {v: v for v in get_args(EvalParams.model_fields[key].annotation)}, type=str)


Device, Precision = param_choices("device"), param_choices("precision")  # --device, --precision


def inference_overrides(device: Device | None, precision: Precision | None) -> list[str]:
    """--device and --precision as the params they stand for (eval.device, eval.precision)."""
    return [*([f"eval.device={device.value}"] if device else []), *([f"eval.precision={precision.value}"] if precision else [])]


def extra_upscalers(p: Params, model: Path | None, onnx: Path | None, device) -> dict:
    """What evaluate scores beside the model, by entry name: its x8 self-ensemble
    (``eval.self_ensemble``) and, for a PyTorch model, its half-precision run (``eval.precision``)."""
    from .upscalers import load_upscaler

    extras = {}
    if p.eval.self_ensemble and (model or onnx):
        extras["ensemble"] = load_upscaler(model if onnx is None else None, onnx, ensemble=True, device=device).upscaler
    if p.eval.precision != "fp32" and model and onnx is None:
        extras[p.eval.precision] = load_upscaler(model, device=device, precision=p.eval.precision).upscaler
    return extras


def evaluated(p: Params, checkpoint: Path | None, onnx: Path | None, baseline: Baseline | None,
              scale: int | None, explicit_scale: bool, device):
    """(upscaler, scale, label) of what evaluate scores on ``device``; a model's own scale wins over params."""
    from .upscalers import load_upscaler

    loaded = load_upscaler(checkpoint, onnx, baseline and baseline.value, scale or p.scale, device=device)
    upscaler, model_scale, label = loaded.upscaler, loaded.scale, loaded.label
    typer.echo(f"scoring {loaded.description}", err=True)
    if scale is not None and scale != model_scale:
        raise SrpipeError(f"--scale {scale} does not match the model's scale {model_scale}")
    if scale is None and explicit_scale and p.scale != model_scale:
        warnings.warn(f"params say scale={p.scale}, the {label} is x{model_scale}: the {label}'s scale wins")
    return upscaler, model_scale, label


def protocol(p: Params, scale: int) -> dict:
    """evaluate()'s keyword arguments: the border crop, the channel and the perceptual metrics, from params."""
    return dict(crop_border=p.eval.crop(scale), y_channel=p.eval.y_channel, perceptual=perceptual_metrics(p))


def perceptual_metrics(p: Params) -> dict:
    """The perceptual metrics eval turns on, by name: LPIPS (AlexNet) and DISTS (VGG16)."""
    from .metrics import perceptual_scorers

    return perceptual_scorers(p.eval.lpips, p.eval.dists, p.eval.lpips_backbone, p.eval.vgg16_backbone)


def score_folder(p: Params, upscaler, scale: int, label: str, hr_dir: str, out: Path, save_dir: Path | None,
                 extras: dict) -> None:
    """evaluate --hr-dir: one folder or dataset, made into pairs as prepare-degradations would
    (with ``extras``, their scores too, each under its name: :func:`extra_upscalers`)."""
    from .evaluate import score_source, summarize
    from .io import atomic_outputs

    held_out = dict(degradation=p.degradation if p.eval.degradation == "same" else None, seed=p.seed,
                    raw_dir=p.data.raw_dir, **protocol(p, scale))
    frame = score_source(upscaler, hr_dir, scale, desc=label, save_dir=save_dir, **held_out)
    scores = summarize(frame)
    extra = {name: extra_entry(name, summarize(score_source(up, hr_dir, scale, desc=f"{label} {name}", **held_out)),
                               scores) for name, up in extras.items()}
    with atomic_outputs(out, out.with_suffix(".csv"), clean=True) as (json_tmp, csv_tmp):
        write_json(json_tmp, {"dataset": hr_dir, "scale": scale, "upscaler": label, "images": len(frame), **scores,
                              **extra})
        frame.to_csv(csv_tmp, index=False)
    shown = {label: scores, **{f"{label} {EXTRA_LABEL.get(name, name)}": s for name, s in extra.items()}}
    for name, scores in shown.items():
        typer.echo(f"{name} on {hr_dir} x{scale}: " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items()))


EXTRA_LABEL = {"ensemble": "x8 ensemble"}  # how the console names an extra entry


def extra_entry(name: str, scores: dict[str, float], fp32: dict[str, float]) -> dict[str, float]:
    """An extra entry's scores; a half-precision run's with its PSNR difference from fp32's."""
    return {**scores, "delta_psnr": scores["psnr"] - fp32["psnr"]} if name in HALF else scores


def score_pipeline(p: Params, upscaler, scale: int, label: str, prepared: Path, outs: tuple[Path, Path, Path],
                   save_dir: Path | None, extras: dict) -> None:
    """The pipeline's evaluate: every dataset of eval.datasets, the model beside bicubic (and
    ``extras``, each under its name: :func:`extra_upscalers`); ``outs``: the metrics JSON, the
    per-image CSV and the folder of detail crops (HR | bicubic | model, eval.detail_crops per dataset)."""
    import pandas as pd

    from .data import load_pairs
    from .datasets import dataset_key
    from .evaluate import evaluate as run_eval, summarize
    from .io import atomic_outputs
    from .upscalers import bicubic_upscaler
    from .visualize import write_detail_crops

    metrics, per_image, crops = outs
    kwargs = protocol(p, scale)
    result, tables, rows = {}, [], {}
    with atomic_outputs(metrics, per_image, crops, clean=True) as (metrics_tmp, per_image_tmp, crops_tmp):
        crops_tmp.mkdir()
        for key in (dataset_key(d) for d in p.eval.datasets):
            pairs = load_pairs(prepared / key, scale)
            ours = run_eval(upscaler, pairs, desc=f"{key}: {label}", save_dir=save_dir and save_dir / key, **kwargs)
            bicubic = run_eval(bicubic_upscaler(scale), pairs, desc=f"{key}: bicubic", **kwargs)
            rows[(key, label)], rows[(key, "bicubic")] = scores, base = summarize(ours), summarize(bicubic)
            result[key] = {**scores, "bicubic": base, "psnr_gain_db": scores["psnr"] - base["psnr"]}
            for name, extra in extras.items():
                result[key][name] = rows[(key, f"{label} {name}")] = extra_entry(
                    name, summarize(run_eval(extra, pairs, desc=f"{key}: {label} {name}", **kwargs)), scores)
            tables.append(ours.merge(bicubic, on="image", suffixes=("", "_bicubic")).assign(dataset=key))
            write_detail_crops({"bicubic": bicubic_upscaler(scale), label: upscaler}, pairs, scale,
                               p.eval.detail_crops, crops_tmp / key)
        if p.data.allow_overlap:  # the scores may be of images the model trained on (prepare-degradations)
            result["allow_overlap"] = True
        write_json(metrics_tmp, result)
        pd.concat(tables).to_csv(per_image_tmp, index=False)
    typer.echo(pd.DataFrame(rows).T.to_string(float_format="%.4f"))


@app.command("export-onnx")
@stage
def export_onnx(
    params: ParamsPath = Path("params.yaml"),
    set_: Overrides = None,
    checkpoint: Annotated[Path, typer.Option(help="trained checkpoint, or any model file spandrel opens.")] = BEST,
    valid: Annotated[Path, typer.Option(help="prepared validation images (parity, calibration, scores).")] = PREPARED / "valid",
    out: Annotated[Path, typer.Option(help="folder for model.onnx, model.<precision>.onnx and model.safetensors.")] = EXPORT_DIR,
    metrics: Annotated[Path, typer.Option(help="export metrics JSON.")] = Path("metrics/export.json"),
) -> None:
    """Export to ONNX in every export.precision, checked against PyTorch and scored, and the weights
    as model.safetensors where spandrel (chaiNNer, ComfyUI) runs the architecture.

    Dynamic batch, height and width; fp32 is compared with PyTorch, int8 is calibrated on
    validation patches, and each file is scored by the evaluation protocol.

    Example: srpipe export-onnx --set 'export.precision=[fp32, int8, fp16]'
    """
    from .data import load_pairs
    from .export import export_precisions
    from .io import atomic_outputs
    from .modelfile import open_model_file

    p = read(params, set_)
    for path in (out, metrics):
        check_writable(path)
    opened = open_model_file(checkpoint)
    typer.echo(f"exporting {opened.description}", err=True)
    scale, e = opened.scale, p.export
    with atomic_outputs(out, metrics, clean=True) as (out_tmp, metrics_tmp):  # the files of one export, or none
        result = export_precisions(
            opened.model, scale, out_tmp, e.precision, e.opset, load_pairs(valid, scale), e.check_images,
            e.calibration_patches, e.calibration_size, p.eval.crop(scale), p.eval.y_channel,
            perceptual_metrics(p), e.int8_reduce_range, opened.arch,
        )
        write_json(metrics_tmp, result)
    typer.echo(f"max |onnxruntime - torch| = {result['max_abs_diff']:.2e} (fp32)")
    for precision in e.precision:
        r = result[precision]
        delta = f"  ({r['delta_psnr']:+.3f} dB vs fp32)" if "delta_psnr" in r else ""
        typer.echo(f"{precision:5s} {r['size_mb']:8.3f} MB  PSNR {r['psnr']:.3f} dB{delta}")
    weights = result["safetensors"]
    typer.echo(f"weights for spandrel: {out / weights['file']} (checked: max |spandrel - srpipe| "
               f"{weights['max_abs_diff_spandrel']:.1e})" if "file" in weights else f"no .safetensors: {weights['skipped']}")


@app.command()
@stage
def benchmark(
    params: ParamsPath = Path("params.yaml"),
    set_: Overrides = None,
    checkpoint: Annotated[Path, typer.Option(help="trained checkpoint (PyTorch eager).")] = BEST,
    exported: Annotated[Path, typer.Option(help="folder with the exported ONNX files.")] = EXPORT_DIR,
    metrics: Annotated[Path, typer.Option(help="headline metrics JSON: each engine's latency at the largest size and thread count.")] = Path("metrics/benchmark.json"),
    table: Annotated[Path, typer.Option(help="latency per input size, for dvc plots.")] = Path("metrics/benchmark_latency.csv"),
    results: Annotated[Path, typer.Option(help="every measurement: one row per engine, input size and thread count.")] = Path("stages/benchmark/results.csv"),
    device: Annotated[Optional[Device], typer.Option(help="eval.device: on cuda, PyTorch on the GPU in fp32, bf16 and fp16 and ONNX Runtime's GPU providers too.")] = None,
) -> None:
    """Latency, throughput, memory and GFLOP/s of ONNX Runtime and PyTorch eager.

    Median and p90 latency, megapixels/s, peak memory and achieved GFLOP/s of ONNX Runtime per
    exported precision and of PyTorch eager, per input size and thread count, beside the matmul
    rate of each engine's arithmetic (fp32, bf16, int8) measured in the same run.

    Example: srpipe benchmark --set 'benchmark.sizes=[[256, 256]]' --set 'benchmark.threads=[2]'
    """
    from .benchmark import engines, headline, latency_table, report_lines, results_table, run_benchmark
    from .export import PRECISIONS, onnx_path
    from .hardware import pick_device
    from .io import atomic_outputs
    from .modelfile import open_model_file
    from .models import macs_per_output_pixel

    p = read(params, [*(set_ or []), *inference_overrides(device, None)])
    for path in (metrics, table, results):
        check_writable(path)
    opened = open_model_file(checkpoint)
    typer.echo(f"benchmarking {opened.description}", err=True)
    onnx_files = {q: onnx_path(exported, q) for q in PRECISIONS if onnx_path(exported, q).is_file()}
    if "fp32" not in onnx_files:
        raise SrpipeError(f"ONNX file not found: {onnx_path(exported, 'fp32')} (run export-onnx first)")
    b = p.benchmark
    found, skipped = engines(checkpoint, onnx_files, pick_device(p.eval.device, "eval.device").type == "cuda")
    if skipped:
        typer.echo(f"skipped: {'; '.join(skipped)}", err=True)
    measured = run_benchmark(checkpoint, onnx_files, opened.scale, macs_per_output_pixel(opened.model),
                             b.sizes, b.threads, b.warmup, b.repeats, found)
    with atomic_outputs(metrics, table, results, clean=True) as (metrics_tmp, table_tmp, results_tmp):
        write_json(metrics_tmp, headline(measured))
        latency_table(measured).to_csv(table_tmp, index=False)
        results_table(measured).to_csv(results_tmp, index=False)
    for line in report_lines(measured):
        typer.echo(line)


@app.command()
@stage
def upscale(
    inputs: Annotated[list[Path], typer.Argument(help="image files and/or folders of images.", show_default=False)],
    model: Annotated[Optional[Path], typer.Option(help="a model: .onnx (ONNX Runtime), an srpipe checkpoint (.pt), or a .pth / .safetensors file spandrel opens (chaiNNer's and ComfyUI's upscalers); default in a project: its pipeline's model (stages/export-onnx/model.onnx, else stages/train/best.pt).", show_default=False)] = None,
    out: Annotated[Path, typer.Option(help="folder for the upscaled images (NAME_xS.EXT).")] = Path("upscaled"),
    tile: Annotated[int, typer.Option(min=0, help="LR tile size in pixels; 0: whole images at once.")] = 256,
    overlap: Annotated[int, typer.Option(min=0, help="LR pixels of context around each tile.")] = 16,
    scale: Annotated[Optional[int], typer.Option(help="expected scale; checked against the model.")] = None,
    fmt: Annotated[Optional[str], typer.Option("--format", help=f"output format ({', '.join(FORMATS)}); default: the input's.")] = None,
    ensemble: Annotated[bool, typer.Option("--ensemble", help="average the model over the 8 flips and rotations of each tile (EDSR+: a little sharper, 8x the time).")] = False,
    device: Annotated[Device, typer.Option(help="where a PyTorch model runs; auto: CUDA when present (tiles then fit the GPU's free memory). ONNX models run on the CPU.")] = Device.auto,
    precision: Annotated[Precision, typer.Option(help="a PyTorch model's arithmetic: fp16 and bf16 on CUDA only.")] = Precision.fp32,
) -> None:
    """Upscale images with a trained model, tile by tile so that memory stays bounded.

    Any ONNX model that maps an N x 3 x H x W image to an upscaled one works. Never overwrites an
    input, nor one output with another: that is checked before any work. Alpha is kept (png,
    tiff, webp). A file that cannot be read, or an image too large for the memory at this
    --tile, is reported and skipped; the command exits 1 at the end if any image failed. Inside a
    project, without --model, the pipeline's own model upscales.

    Example: srpipe upscale photo.jpg holiday/ --model 4x-UltraSharp.pth --out upscaled
    """
    from .upscale import upscale_files
    from .upscalers import open_model

    if fmt is not None and fmt.lower() not in FORMATS:
        raise typer.BadParameter(f"{fmt!r}; choose from {', '.join(FORMATS)}", param_hint="--format")
    from .hardware import inference_dtype, pick_device
    from .modelfile import TORCH_SUFFIXES

    where = pick_device(device.value, "--device")
    model = pipeline_model(model, where)
    if model.suffix.lower() not in (".onnx", *TORCH_SUFFIXES):
        raise typer.BadParameter(f"{model}: expected a .onnx, .pt, .pth, .ckpt or .safetensors file", param_hint="--model")
    inference_dtype(precision.value, where, "--precision")  # half precision off CUDA stops here, named
    check_writable(out, folder=True)
    loaded = open_model(model, ensemble, device=where, precision=precision.value)
    typer.echo(f"upscaling with {loaded.description}", err=True)
    if scale is not None and scale != loaded.scale:
        raise SrpipeError(f"--scale {scale} does not match the model's scale {loaded.scale}")
    written, failed = upscale_files(list(inputs), loaded, out, tile, overlap, fmt)
    for src, why in failed:
        typer.echo(f"srpipe: error: {why}", err=True)
    typer.echo(f"{len(written)} image(s) upscaled x{loaded.scale} into {out}")
    if failed:
        fail(f"{len(failed)} of {len(written) + len(failed)} image(s) failed", 1)


PIPELINE_MODELS = (EXPORT_DIR / "model.onnx", BEST)  # what upscale takes without --model, on a CPU, in this order


def pipeline_model(model: Path | None, device) -> Path:
    """--model, or in a project its pipeline's own model, said so: the exported ONNX file, or best.pt
    (first on a GPU ``device``, where PyTorch runs on it and ONNX Runtime on the CPU)."""
    if model is not None:
        return model
    order = PIPELINE_MODELS[::-1] if device.type == "cuda" else PIPELINE_MODELS
    found = next((path for path in order if path.is_file()), None)
    if found is None:
        raise SrpipeError(f"no --model given, and no pipeline model here ({' or '.join(map(str, PIPELINE_MODELS))}, "
                          "which `dvc repro` writes in a project); give --model FILE: an .onnx, an srpipe checkpoint "
                          "(.pt), or a .pth / .safetensors file spandrel opens")
    typer.echo(f"no --model given: the pipeline's {found} (--model to choose another)", err=True)
    return found


class Framework(str, Enum):
    auto = "auto"
    spandrel = "spandrel"
    basicsr = "basicsr"


class Arch(str, Enum):
    edsr = "edsr"
    rcan = "rcan"


class ParamKey(str, Enum):
    params = "params"
    params_ema = "params_ema"


@app.command("import-weights")
@stage
def import_weights(
    file: Annotated[Path, typer.Argument(help="a model file: any .pth, .pt, .ckpt or .safetensors spandrel recognises, or a BasicSR EDSR/RCAN checkpoint.", show_default=False)],
    out: Annotated[Path, typer.Option(help="srpipe checkpoint to write.")],
    framework: Annotated[Framework, typer.Option("--from", help="spandrel, basicsr, or auto: basicsr for BasicSR's EDSR/RCAN files (or with --arch), spandrel otherwise.")] = Framework.auto,
    arch: Annotated[Optional[Arch], typer.Option(help="basicsr: the checkpoint's architecture (default: read from its tensors).")] = None,
    scale: Annotated[Optional[int], typer.Option(help="expected scale; checked against the model (default: the model's).")] = None,
    param_key: Annotated[Optional[ParamKey], typer.Option(help="basicsr: which weights to take (default: params_ema when present, else params).")] = None,
    res_scale: Annotated[float, typer.Option(help="basicsr: residual scaling, not stored in the weights (BasicSR's EDSR-L options use 0.1).")] = 1.0,
    rgb_mean: Annotated[Optional[tuple[float, float, float]], typer.Option(help="basicsr: the model's input mean R G B (default: BasicSR's, DIV2K's mean).")] = None,
    img_range: Annotated[Optional[float], typer.Option(help="basicsr: the model's pixel range (default: BasicSR's, 255).")] = None,
) -> None:
    """Turn a published model file into an srpipe checkpoint, without running anything in it.

    Any file spandrel recognises (the upscalers chaiNNer and ComfyUI run: ESRGAN, Compact, SPAN,
    SwinIR, HAT, DAT, ... ) keeps its architecture and tensor names; a BasicSR EDSR or RCAN becomes
    srpipe's EDSR/RCAN (global_skip none, BasicSR's mean shift as rgb_mean/img_range) and computes
    what BasicSR's network does. evaluate, export-onnx, benchmark, upscale and train.init_from take
    the result. Example: srpipe import-weights 4x-UltraSharp.pth --out ultrasharp.pt
    """
    from .models.convert import import_basicsr, import_spandrel, looks_like_basicsr
    from .modelfile import read_weights

    kind, found = framework.value, arch and arch.value
    if found is None and kind != "spandrel":
        found = looks_like_basicsr(read_weights(file))  # EDSR or RCAN as BasicSR writes them, or None
    if kind == "auto":
        kind = "basicsr" if found else "spandrel"
    if kind == "spandrel":
        info = import_spandrel(file, out, scale)
        typer.echo(f"{file} -> {out}: {info['architecture']} x{info['arch']['kwargs']['scale']} "
                   f"({', '.join(info['tags'])}), {info['parameters']:,} parameters, found by spandrel")
        if info["arch"]["name"] != "spandrel":
            typer.echo(f"fine-tune it with: {fine_tune_overrides(info['arch'], out)}")
        return
    shift = {k: v for k, v in (("rgb_mean", rgb_mean), ("img_range", img_range)) if v is not None}
    chosen = found or "edsr"
    info = import_basicsr(file, out, chosen, param_key and param_key.value, scale=scale, res_scale=res_scale, **shift)
    kw = info["arch"]["kwargs"]
    sizes = ", ".join(f"{k} {kw[k]}" for k in ("n_resgroups", "n_resblocks", "n_feats", "reduction") if k in kw)
    typer.echo(f"{file} ['{info['param_key']}'] -> {out}: {chosen} x{kw['scale']}, {sizes}, "
               f"{info['parameters']:,} parameters")
    if chosen == "edsr" and kw["n_feats"] >= 256 and res_scale == 1.0:
        typer.echo("note: BasicSR trains EDSR-L (256 features) with res_scale 0.1; if so, import with --res-scale 0.1")


def fine_tune_overrides(arch: dict, checkpoint: Path) -> str:
    """The `dvc exp run` overrides that train an imported model further: its architecture and the
    constructor arguments that differ from that architecture's default preset."""
    import yaml

    from .config import PRESETS
    from .models.zoo import kwargs_over_default

    name = arch["name"]
    extra = kwargs_over_default(name, arch["kwargs"]["ctor"], next(iter(PRESETS[name].values())))
    kwargs = f" -S 'model.kwargs={yaml.safe_dump(extra, default_flow_style=True, width=1000).strip()}'" if extra else ""
    return f"-S scale={arch['kwargs']['scale']} -S model.name={name}{kwargs} -S train.init_from={checkpoint}"


@app.command("export-weights")
@stage
def export_weights(
    checkpoint: Annotated[Path, typer.Argument(help="an srpipe checkpoint (e.g. stages/train/best.pt) or any model file spandrel opens.", show_default=False)],
    out: Annotated[Path, typer.Option(help="weights file to write: .safetensors (or .pth).")],
) -> None:
    """Write a model's weights as the bare state dict that spandrel, and so chaiNNer, ComfyUI,
    AUTOMATIC1111 and InvokeAI, load and run as srpipe does (checked by running spandrel on the file).

    spandrel's architectures keep their tensor names; srpipe's RCAN is converted to its authors'
    layout. spandrel has no EDSR or RLFN: their portable form is the ONNX file (export-onnx).
    Example: srpipe export-weights stages/train/best.pt --out my-span-x2.safetensors
    """
    from .modelfile import open_model_file
    from .models.portable import write_portable

    opened = open_model_file(checkpoint)
    check_writable(out)
    result = write_portable(opened.model, opened.arch, out)
    typer.echo(f"{opened.description} -> {out}: {result['tensors']} tensors; spandrel opens it and computes the "
               f"same (max difference {result['max_abs_diff_spandrel']:.1e})")


data_app = typer.Typer(help="Datasets: list them, fetch the standard ones.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("list")
@stage
def data_list(params: ParamsPath = Path("params.yaml"), set_: Overrides = None) -> None:
    """Show the bundled and standard datasets, and which are present under data.raw_dir.

    Example: srpipe data list
    """
    from .datasets import SAMPLE_SETS, STANDARD, hr_dir, is_present

    p = read(params, set_, missing_ok=True)
    typer.echo(f"{'name':13s} {'status':10s} description")
    for name, files in SAMPLE_SETS.items():
        typer.echo(f"{name:13s} {'bundled':10s} {len(files)} scikit-image photos: {', '.join(files)}")
    for name, d in STANDARD.items():
        status = "present" if is_present(d, p.data.raw_dir) else "absent"
        where = f" [{hr_dir(d, p.data.raw_dir)}]" if status == "present" else ""
        typer.echo(f"{name:13s} {status:10s} {d.description.replace('<raw_dir>', str(p.data.raw_dir))}{where}")


@data_app.command("fetch")
@stage
def data_fetch(
    name: Annotated[str, typer.Argument(help="a standard dataset, see `srpipe data list`.")],
    params: ParamsPath = Path("params.yaml"),
    set_: Overrides = None,
) -> None:
    """Download a standard dataset, verify its checksum and extract it into data.raw_dir/NAME.

    All or nothing: a failed or interrupted fetch leaves no partial folder. A no-op when present.

    Example: srpipe data fetch set5
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
    warnings.showwarning = show_warning
    app(prog_name="srpipe")


if __name__ == "__main__":
    sys.exit(main())
