"""The perceptual track, measured: an L1 model, then its perceptual + GAN fine-tune, scored by
LPIPS and DISTS beside PSNR/SSIM, at x4 on second-order degradations.

    python benchmarks/perceptual.py --phase 1 --minutes 20    # L1 (the PSNR-oriented model)
    python benchmarks/perceptual.py --phase 2 --minutes 20    # VGG16 perceptual + U-Net GAN from it
    python benchmarks/perceptual.py --phase score             # the table and the picture

The recipe (``RECIPE``): x4, ``degradation.kind: realistic`` with ``passes: 2`` drawn anew for
every crop while training (``on_the_fly``), Compact (spandrel's, Real-ESRGAN's small model),
128-pixel HR crops, trained on ``--train`` (BSD68 + SunHays80 of ../shared/data). Each phase's
iterations are fixed from its measured step time (``srpipe.training.step_seconds``, as
benchmarks/time_to_quality.py does), so a phase is deterministic and resumes exactly.

Phase 2 (``PHASE2``) is Real-ESRGAN's fine-tune: the generator starts from phase 1's
``best.pt`` (``train.init_from``), L1 1.0 + VGG16 perceptual 1.0 + GAN 0.1 against the U-Net
discriminator with spectral norm, Adam 1e-4 with betas (0.9, 0.99) for both, and ``best.pt``
picked by validation LPIPS; batches of 8 crops instead of 16, so that the budget holds twice the
steps (VGG16 and the discriminator make a step ten times dearer). Not Real-ESRGAN's EMA of 0.999:
over the budget's 800 steps it would keep 0.999^800 = 45% of the starting weights (a first run
with it: validation LPIPS 0.4151 after epoch 1, 0.4153 after epoch 2, the EMA weights barely moved).

The score: Set5 and Set14, LR made with the run's second-order chain and fixed draws
(``eval.degradation: same``), PSNR/SSIM on Y and LPIPS (AlexNet) and DISTS on RGB, for bicubic,
phase 1 and phase 2; the step time of each phase; ``--work``/result.json, table.md, and the
picture HR | bicubic | L1 | GAN (``comparison.png``) of the detail crops evaluate writes.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


from srpipe.cli import read  # noqa: E402
from srpipe.config import Params  # noqa: E402
from srpipe.data import PrepareJob, check_held_out, prepare_all, source_files  # noqa: E402
from srpipe.io import SrpipeError  # noqa: E402
from srpipe.parallel import resolve_workers  # noqa: E402
from srpipe.patches import extract  # noqa: E402
from srpipe.training import step_seconds, train  # noqa: E402

RECIPE = ["scale=4", "degradation.kind=realistic", "degradation.passes=2", "degradation.on_the_fly=true",
          "model.name=compact", "train.patch_size=128", "train.lr=0.001", "eval.dists=true"]
PHASE2 = ["train.batch_size=8", "train.perceptual_weight=1.0", "train.gan_weight=0.1", "train.lr=0.0001", "train.betas=[0.9,0.99]",
          "train.best_metric=lpips", "train.warmup_epochs=0", "train.schedule=step",
          "train.step_size=1000", "discriminator.lr=0.0001", "discriminator.betas=[0.9,0.99]"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--phase", choices=["1", "2", "score"], required=True)
    ap.add_argument("--minutes", type=float, default=20.0, help="the phase's training budget, minutes of this machine")
    ap.add_argument("--epochs", type=int, default=10, help="epochs of a phase (one validation each)")
    ap.add_argument("--iterations", type=int, default=None,
                    help="train exactly this many iterations instead of measuring the step (to compare a lever with "
                         "an earlier run at equal work, free of the machine's load)")
    ap.add_argument("--train", nargs="+", default=["../shared/data/BSD68", "../shared/data/SunHays80"])
    ap.add_argument("--eval", nargs="+", default=["../shared/data/Set5", "../shared/data/Set14"])
    ap.add_argument("--valid", default="sample-valid", help="the trainer's validation set (not scored here)")
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a param of both phases (repeatable)")
    ap.add_argument("--work", type=Path, default=Path("stages/perceptual"))
    return ap.parse_args(argv)


def phase_params(args: argparse.Namespace, phase: str) -> Params:
    extra = PHASE2 + [f"train.init_from={args.work / 'phase1' / 'best.pt'}"] if phase == "2" else []
    return read(args.params, [*RECIPE, *extra, *args.overrides], missing_ok=True)


def prepare_data(args: argparse.Namespace, p: Params) -> tuple[Path, Path]:
    """(image store of the HR training photos, validation set degraded by the run's chain)."""
    data, files = args.work / "data", source_files(args.train, None, p.data.raw_dir)
    check_held_out(files, {s: source_files(s, None, p.data.raw_dir) for s in args.eval}, args.train)
    if not (data / "store").is_dir():
        workers = resolve_workers(p.data.workers)
        jobs = [PrepareJob("train", files, None), PrepareJob("valid", source_files(args.valid, None, p.data.raw_dir),
                                                            p.degradation)]
        prepare_all(jobs, data, p.scale, p.seed, workers)
        extract(data / "train", data / "store", p.scale, workers)
    return data / "store", data / "valid"


def run_phase(args: argparse.Namespace) -> dict:
    p = phase_params(args, args.phase)
    store, valid = prepare_data(args, p)
    out = args.work / f"phase{args.phase}"
    if args.iterations:
        per_epoch = args.iterations // args.epochs
        step, validation = args.minutes * 60 / (per_epoch * args.epochs), 0.0
    else:
        with tempfile.TemporaryDirectory() as scratch:
            step, validation = step_seconds(store, valid, scratch, p.scale, p.seed, p.model, p.train, 10,
                                            p.degradation, p.discriminator)
        per_epoch = max(1, int((args.minutes * 60 / args.epochs - validation) / step))
    t = p.train.model_copy(update={"epochs": args.epochs, "steps_per_epoch": per_epoch})
    print(f"phase {args.phase}: {step * 1000:.0f} ms per step, {validation:.1f} s per validation -> "
          f"{args.epochs} epochs x {per_epoch} steps for {args.minutes:g} min", flush=True)
    summary = train(store, valid, out, out / "train_log.csv", p.scale, p.seed, p.model, t, p.eval.crop(p.scale),
                    p.degradation, p.eval.lpips_backbone, p.discriminator)
    result = {"phase": args.phase, "s_per_step": step, "batch_size": t.batch_size, "s_per_validation": validation, "iterations": summary["steps"],
              "train_seconds": summary["train_seconds"], "summary": summary, "overrides": args.overrides}
    (out / "phase.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    return result


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.phase == "score":
        from perceptual_score import score_all

        return score_all(args, phase_params(args, "1"))
    return run_phase(args)


if __name__ == "__main__":
    try:
        main()
    except SrpipeError as exc:
        sys.exit(f"perceptual: {exc}")
