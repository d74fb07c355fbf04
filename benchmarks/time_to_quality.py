"""Time to quality: train from scratch for M minutes of this machine, score the model as it goes.

    python benchmarks/time_to_quality.py --minutes 30 --train ../shared/data/BSD68 ../shared/data/SunHays80
    python benchmarks/time_to_quality.py --minutes 10 --train ... --label wide --set model.n_feats=48

1. Prepares the ``--train`` folders (srpipe's MATLAB-style bicubic x2, as prepare-degradations
   does) into one image store (extract-patches), and ``--valid`` (default: scikit-image's
   sample-valid photos, neither trained on nor scored) for the trainer's per-epoch validation.
2. Refuses to score a set it trains on: any image file shared by a training and a scored set,
   or BSD68 (the BSD300 test split) trained on and B100 (the same split) scored.
3. Measures the step time and the validation time of the configuration
   (``srpipe.training.step_seconds``: real steps and one validation of a throwaway trainer), then
   fixes the iterations that, with one validation per epoch, fill ``--minutes``: the budget is a
   number of iterations, so the run is deterministic and resumes exactly. The schedule (warm-up
   of one epoch, cosine decay) ends at the last iteration.
4. Trains with srpipe's own train stage: ``--points`` x ``--epochs-per-point`` epochs, a
   snapshot every ``--epochs-per-point`` epochs (every 5 minutes of a 30-minute budget).
5. Scores bicubic and every snapshot (with ``train.ema``: the EMA weights, and at the end the
   last step's own weights too, as "LABEL without EMA") on ``--eval`` (default Set5 and Set14) with the code
   behind ``srpipe evaluate --hr-dir DIR --checkpoint FILE`` (``srpipe.evaluate.score_source``:
   Y channel, ``scale`` border pixels), and prints the time-to-quality table, the model's
   parameters and multiply-adds per output pixel.

Params come from ``--params`` (params.yaml: the demo's recipe) with ``--set`` overrides, as for
any stage; the data and degradation are the benchmark's (bicubic, the published protocol).
Writes to ``--work`` (default stages/time-to-quality/LABEL): ``curve.csv`` (minutes, step and
PSNR/SSIM per set: ``dvc plots show stages/time-to-quality/LABEL/curve.csv -x minutes -y
set5_psnr``), ``result.json`` and the run's folder (``train/``: snapshots, train_log.csv).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import pandas as pd

from srpipe.cli import read
from srpipe.config import Params
from srpipe.data import PrepareJob, check_held_out, prepare_all, source_files
from srpipe.evaluate import score_source, summarize
from srpipe.io import SrpipeError
from srpipe.parallel import resolve_workers
from srpipe.patches import extract
from srpipe.training import step_seconds, train
from srpipe.upscalers import bicubic_upscaler, load_upscaler



def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, required=True, help="training budget, minutes of this machine")
    ap.add_argument("--train", nargs="+", required=True, help="HR image folders (or srpipe dataset names)")
    ap.add_argument("--eval", nargs="+", default=["../shared/data/Set5", "../shared/data/Set14"],
                    help="HR folders (or dataset names) to score")
    ap.add_argument("--valid", default="sample-valid", help="validation set of the train stage (not scored here)")
    ap.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (absent params.yaml: the defaults)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a param, e.g. model.n_feats=48 (repeatable)")
    ap.add_argument("--points", type=int, default=None, help="scored snapshots (default: one per 5 minutes)")
    ap.add_argument("--epochs-per-point", type=int, default=5, help="epochs between snapshots")
    ap.add_argument("--iterations", type=int, default=None,
                    help="train exactly this many iterations instead of measuring the step rate (to compare a "
                         "lever with an earlier run at equal work, free of the machine's drift)")
    ap.add_argument("--rate-steps", type=int, default=20, help="timed steps of the rate measurement")
    ap.add_argument("--label", default="srpipe", help="the run's name in the table and its folder")
    ap.add_argument("--work", type=Path, default=None, help="folder (default stages/time-to-quality/LABEL)")
    args = ap.parse_args(argv)
    args.points = args.points or max(1, round(args.minutes / 5))
    args.work = args.work or Path("stages/time-to-quality") / args.label
    return args


def benchmark_params(args: argparse.Namespace) -> Params:
    """The params of the run: ``--params`` (absent params.yaml: the defaults) and ``--set``, as any
    stage reads them, with bicubic data (the published protocol)."""
    return read(args.params, [*args.overrides, "degradation.kind=bicubic", "degradation.on_the_fly=false"],
                missing_ok=True)


def prepare_data(args: argparse.Namespace, p: Params, files: list[Path]) -> tuple[Path, Path]:
    """(image store, prepared validation folder) of the run, in ``--work``."""
    data = args.work / "data"
    workers = resolve_workers(p.data.workers)
    jobs = [PrepareJob("train", files, None, sizes=tuple(p.data.train_scales)),
            PrepareJob("valid", source_files(args.valid, None, p.data.raw_dir), None)]
    prepare_all(jobs, data, p.scale, p.seed, workers)
    extract(data / "train", data / "store", p.scale, workers)
    return data / "store", data / "valid"


def plan(args: argparse.Namespace, p: Params, store: Path, valid: Path) -> tuple[Params, float]:
    """The params of the run, its iterations fixed from the measured step rate and the time its
    per-epoch validations take out of the budget (or from ``--iterations``); and that step time
    (with ``--iterations``: the budget's minutes per iteration)."""
    epochs = args.points * args.epochs_per_point
    if args.iterations:
        if args.iterations % epochs:
            raise SrpipeError(f"--iterations {args.iterations} is not a multiple of the {epochs} epochs "
                              "(--points x --epochs-per-point)")
        step, per_epoch = args.minutes * 60 / args.iterations, args.iterations // epochs
    else:
        with tempfile.TemporaryDirectory() as scratch:
            step, validation = step_seconds(store, valid, scratch, p.scale, p.seed, p.model, p.train,
                                            args.rate_steps)
        per_epoch = max(1, int((args.minutes * 60 / epochs - validation) / step))
    update = {"epochs": epochs, "steps_per_epoch": per_epoch, "snapshot_every": args.epochs_per_point}
    return p.model_copy(update={"train": p.train.model_copy(update=update)}), step


def score(upscaler, evals: list[str], p: Params, label: str) -> dict[str, dict[str, float]]:
    """PSNR and SSIM per scored set, by ``srpipe evaluate --hr-dir``'s code and protocol (bicubic LR)."""
    return {Path(s).name: summarize(score_source(upscaler, s, p.scale, p.eval.crop(p.scale), p.eval.y_channel,
                                                 raw_dir=p.data.raw_dir, desc=f"{label}: {Path(s).name}"))
            for s in evals}


def curve(args: argparse.Namespace, p: Params, run_dir: Path) -> pd.DataFrame:
    """One row per snapshot (and bicubic at minute 0): minutes, step, PSNR and SSIM per set."""
    history = pd.read_csv(run_dir / "train_log.csv").set_index("epoch")
    rows = [{"run": "bicubic", "minutes": 0.0, "step": 0,
             **flat(score(bicubic_upscaler(p.scale), args.eval, p, "bicubic"))}]
    for snapshot in sorted((run_dir / "snapshots").glob("epoch_*.pt")):
        epoch = int(snapshot.stem.split("_")[1])
        upscaler = load_upscaler(checkpoint=snapshot).upscaler
        rows.append({"run": args.label, "minutes": float(history.loc[epoch, "minutes"]),
                     "step": int(history.loc[epoch, "step"]), **flat(score(upscaler, args.eval, p, snapshot.stem))})
    if p.train.ema:  # the snapshots hold the EMA weights; the last step's own weights are in last.pt
        raw = load_upscaler(checkpoint=run_dir / "last.pt").upscaler
        rows.append({**rows[-1], "run": f"{args.label} without EMA", **flat(score(raw, args.eval, p, "last.pt"))})
    return pd.DataFrame(rows)


def flat(scores: dict[str, dict[str, float]]) -> dict[str, float]:
    return {f"{name.lower()}_{metric}": value for name, s in scores.items() for metric, value in s.items()}


def markdown(table: pd.DataFrame, sets: list[str]) -> str:
    head = "| run | minutes | iterations | " + " | ".join(f"{s} PSNR / SSIM" for s in sets) + " |"
    lines = [head, "|---|---|---|" + "---|" * len(sets)]
    for row in table.itertuples(index=False):
        cells = " | ".join(f"{getattr(row, f'{s.lower()}_psnr'):.2f} / {getattr(row, f'{s.lower()}_ssim'):.4f}"
                           for s in sets)
        lines.append(f"| {row.run} | {row.minutes:.1f} | {row.step:,} | {cells} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    p = benchmark_params(args)
    files = source_files(args.train, None, p.data.raw_dir)
    check_held_out(files, {s: source_files(s, None, p.data.raw_dir) for s in args.eval}, args.train)
    store, valid = prepare_data(args, p, files)
    p, seconds = plan(args, p, store, valid)
    t = p.train
    print(f"{len(files)} training images x {len(p.data.train_scales)} sizes; {seconds * 1000:.0f} ms per step -> "
          f"{t.epochs} epochs x {t.steps_per_epoch} steps = {t.epochs * t.steps_per_epoch} iterations "
          f"for {args.minutes:g} min", flush=True)
    run_dir = args.work / "train"
    summary = train(store, valid, run_dir, run_dir / "train_log.csv", p.scale, p.seed, p.model, t,
                    p.eval.crop(p.scale))
    table = curve(args, p, run_dir)
    table.to_csv(args.work / "curve.csv", index=False)
    result = {"label": args.label, "minutes_budget": args.minutes, "s_per_step": seconds,
              "iterations": t.epochs * t.steps_per_epoch, "train_seconds": summary["train_seconds"],
              "params": summary["params"], "macs_per_output_pixel": summary["macs_per_output_pixel"],
              "precision": summary["precision"], "images": len(files), "train": args.train, "eval": args.eval,
              "overrides": args.overrides, "final": table.iloc[-1].to_dict()}
    (args.work / "result.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    print("\n" + markdown(table, [Path(s).name for s in args.eval]))
    print(f"\n{args.label}: {summary['params']:,} parameters, {summary['macs_per_output_pixel']:,.0f} multiply-adds "
          f"per output pixel, {summary['precision']}; {summary['train_seconds'] / 60:.1f} min of training "
          f"({result['iterations']:,} iterations)")
    return result


if __name__ == "__main__":
    try:
        main()
    except SrpipeError as exc:
        sys.exit(f"time_to_quality: {exc}")
