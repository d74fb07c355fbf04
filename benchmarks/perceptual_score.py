"""``benchmarks/perceptual.py --phase score``: bicubic, the L1 model and the GAN model side by side.

Set5 and Set14 with LR made by the run's second-order chain, fixed draws (``eval.degradation:
same``: the seed's draws per image, as prepare-degradations makes them), PSNR/SSIM on Y and
LPIPS (AlexNet) and DISTS on RGB; the LPIPS and DISTS of the GAN model against the L1 model's;
the step cost of each phase; and the picture HR | bicubic | L1 | GAN of Set14's two crops
richest in detail (the windows evaluate's image plots use).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from srpipe.cli import perceptual_metrics
from srpipe.config import Params
from srpipe.data import make_pairs
from srpipe.evaluate import evaluate, summarize
from srpipe.io import write_image
from srpipe.metrics import min_side
from srpipe.upscalers import bicubic_upscaler, load_upscaler
from srpipe.visualize import detail_strip, detail_windows

PICTURE_SET, PICTURE_CROPS = "Set14", 2
METRICS = ("psnr", "ssim", "lpips", "dists")


def upscalers(work: Path, scale: int) -> dict:
    return {"bicubic": bicubic_upscaler(scale),
            "L1 (phase 1)": load_upscaler(checkpoint=work / "phase1" / "best.pt").upscaler,
            "GAN (phase 2)": load_upscaler(checkpoint=work / "phase2" / "best.pt").upscaler}


def picture(pairs, models: dict, scale: int) -> np.ndarray:
    """HR | each model, one row per crop richest in detail, rows stacked with a white gap."""
    short = {label.split(" (")[0]: up for label, up in models.items()}  # "L1 (phase 1)" -> "L1"
    rows = [detail_strip(pairs[index][1], pairs[index][2], (y, x, side), short)
            for index, y, x, side in detail_windows(pairs, scale, PICTURE_CROPS)]
    gap = np.full((6, rows[0].shape[1], 3), 255, np.uint8)
    return np.vstack([part for row in rows for part in (row, gap)][:-1])


def markdown(scores: dict, sets: list[str]) -> str:
    lines = ["| model | " + " | ".join(f"{s} PSNR / SSIM / LPIPS / DISTS" for s in sets) + " |",
             "|---|" + "---|" * len(sets)]
    for model in next(iter(scores.values())):
        cells = " | ".join("{psnr:.2f} / {ssim:.4f} / {lpips:.4f} / {dists:.4f}".format(**scores[s][model])
                           for s in sets)
        lines.append(f"| {model} | {cells} |")
    return "\n".join(lines)


def score_all(args, p: Params) -> dict:
    crop, models = p.eval.crop(p.scale), upscalers(args.work, p.scale)
    metrics = perceptual_metrics(p.model_copy(update={"eval": p.eval.model_copy(update={"lpips": True,
                                                                                        "dists": True})}))
    scores, sets = {}, [Path(s).name for s in args.eval]
    for source, name in zip(args.eval, sets):
        pairs = make_pairs(source, p.scale, p.degradation, p.seed, p.data.raw_dir, min_side(crop))
        scores[name] = {label: summarize(evaluate(up, pairs, crop, p.eval.y_channel, metrics, desc=f"{name}: {label}"))
                        for label, up in models.items()}
        if name == PICTURE_SET:
            write_image(args.work / "comparison.png", picture(pairs, models, p.scale))
    phases = {n: json.loads((args.work / f"phase{n}" / "phase.json").read_text()) for n in ("1", "2")}
    l1, gan = "L1 (phase 1)", "GAN (phase 2)"
    result = {
        "scores": scores,
        "lpips_change": {s: scores[s][gan]["lpips"] / scores[s][l1]["lpips"] - 1 for s in sets},
        "dists_change": {s: scores[s][gan]["dists"] / scores[s][l1]["dists"] - 1 for s in sets},
        "psnr_cost_db": {s: scores[s][l1]["psnr"] - scores[s][gan]["psnr"] for s in sets},
        "s_per_step": {n: phases[n]["s_per_step"] for n in phases},
        "step_cost": phases["2"]["s_per_step"] / phases["1"]["s_per_step"],
        "crop_cost": (phases["2"]["s_per_step"] / phases["2"]["batch_size"])
                     / (phases["1"]["s_per_step"] / phases["1"]["batch_size"]),
        "iterations": {n: phases[n]["iterations"] for n in phases},
        "train_minutes": {n: phases[n]["train_seconds"] / 60 for n in phases},
    }
    (args.work / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(scores, sets)
    (args.work / "table.md").write_text(table + "\n")
    print(table)
    for s in sets:
        print(f"{s}: LPIPS {result['lpips_change'][s]:+.1%}, DISTS {result['dists_change'][s]:+.1%}, "
              f"PSNR {-result['psnr_cost_db'][s]:+.2f} dB (GAN vs L1)")
    print(f"step: {result['s_per_step']['1'] * 1000:.0f} ms (L1) vs {result['s_per_step']['2'] * 1000:.0f} ms "
          f"(GAN) = x{result['step_cost']:.1f}, x{result['crop_cost']:.1f} per crop; iterations {result['iterations']}")
    return result
