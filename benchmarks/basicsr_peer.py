"""BasicSR's own training as a peer: the same data, EDSR size and minutes, scored by srpipe.

    python benchmarks/basicsr_peer.py --minutes 30 --train ../shared/data/BSD68 ../shared/data/SunHays80 \\
        --num-feat 32 --num-block 8 --patch 64 --batch 16 --lr 5e-4

1. Prepares x2 training pairs with srpipe's MATLAB-style bicubic (``srpipe.data.prepare``), so
   BasicSR and srpipe train on byte-identical LR images; several ``--train`` folders are joined
   by hard links (names prefixed with the folder's name).
2. Writes a BasicSR options YAML: EDSR (BasicSR's, with its DIV2K mean shift), PairedImageDataset
   from those folders (random ``--patch`` HR crops, flips, rotations), L1 loss, Adam (BasicSR's
   betas 0.9, 0.99), CosineAnnealingRestartLR over all iterations down to ``lr * min_lr_ratio``,
   no validation, one checkpoint at the end, on the CPU (``num_gpu: 0``).
3. Runs BasicSR's training entry point (``basicsr.train.train_pipeline``, what ``basicsr/train.py
   -opt`` runs) in a subprocess twice: a warm-up of ``--warmup-iters`` iterations, whose log
   timestamps give the iteration rate, then the number of iterations that fills ``--minutes``.
4. Imports ``net_g_latest.pth`` with ``srpipe.models.convert`` and scores Set5 and Set14 x2 by
   srpipe's protocol (Y channel, 2-pixel border; the library calls behind ``srpipe evaluate
   --hr-dir DIR --checkpoint FILE``), printing one table row.

Needs basicsr (``make install-dev`` installs it: ``pip install --no-deps --no-build-isolation
basicsr==1.4.2``; nothing beyond srpipe's own dependencies). Two workarounds, both in the
launcher below: basicsr 1.4.2 imports ``torchvision.transforms.functional_tensor``, renamed to
``_functional_tensor`` in torchvision 0.17, so the launcher registers the old name; and
``basicsr/train.py`` as a script puts its ``experiments/`` folder beside the installed package
(site-packages), so the launcher calls ``train_pipeline`` with ``--work`` as the root instead.

``--explain-rate`` trains nothing and says where BasicSR's iteration time goes, side by side in
one process with the same threads: the bare fp32 training step (forward, L1, backward, Adam on a
random batch) of BasicSR's EDSR and of srpipe's of the same size, and the CPU time BasicSR's
loader (PairedImageDataset: whole PNGs decoded, then cropped) spends per iteration.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from srpipe.data import lr_dirname, prepare, source_files
from srpipe.parallel import resolve_workers
from srpipe.evaluate import score_source, summarize
from srpipe.io import list_images
from srpipe.models.convert import DIV2K_RGB_MEAN, import_basicsr
from srpipe.upscalers import load_upscaler

SCALE = 2
TORCHVISION_ALIAS = """
import sys
import torchvision.transforms._functional_tensor as renamed
sys.modules.setdefault("torchvision.transforms.functional_tensor", renamed)
"""
LAUNCHER = TORCHVISION_ALIAS + """
import torch
from basicsr.train import train_pipeline
if int(sys.argv[2]):
    torch.set_num_threads(int(sys.argv[2]))
root = sys.argv[1]
del sys.argv[1:3]
train_pipeline(root)
"""
LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO: (.*)$", re.M)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, required=True, help="training time to fill")
    ap.add_argument("--train", nargs="+", required=True, help="HR image folders (or srpipe dataset names)")
    ap.add_argument("--num-feat", type=int, default=32)
    ap.add_argument("--num-block", type=int, default=8)
    ap.add_argument("--res-scale", type=float, default=1.0)
    ap.add_argument("--patch", type=int, default=64, help="HR crop size")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--min-lr-ratio", type=float, default=0.01, help="final lr = lr * this (cosine)")
    ap.add_argument("--workers", type=int, default=1, help="BasicSR data loader workers")
    ap.add_argument("--threads", type=int, default=0, help="torch threads in BasicSR (0: torch's default)")
    ap.add_argument("--warmup-iters", type=int, default=60, help="iterations of the rate-measuring run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval", nargs="+", default=["../shared/data/Set5", "../shared/data/Set14"],
                    help="HR folders (or dataset names) to score")
    ap.add_argument("--work", type=Path, default=Path("stages/basicsr-peer"), help="folder for everything")
    ap.add_argument("--explain-rate", action="store_true",
                    help="train nothing: time BasicSR's and srpipe's bare fp32 steps and BasicSR's loader, side by side")
    return ap.parse_args()


def prepare_pairs(sources: list[str], work: Path) -> tuple[Path, Path, int]:
    """srpipe-made HR and LR folders, one pair of folders for all sources (hard links)."""
    joined = work / "train"
    shutil.rmtree(joined, ignore_errors=True)
    hr_dir, lr_dir = joined / "hr", joined / lr_dirname(SCALE)
    hr_dir.mkdir(parents=True)
    lr_dir.mkdir()
    for i, source in enumerate(sources):
        name = f"{i}-{Path(source).name}"
        out = work / "prepared" / name
        if not (out / "manifest.csv").is_file():
            prepare(source_files(source), out, SCALE, workers=resolve_workers(None))
        for hr in list_images(out / "hr"):
            os.link(hr, hr_dir / f"{name}_{hr.name}")
            os.link(out / lr_dirname(SCALE) / hr.name, lr_dir / f"{name}_{hr.name}")
    return hr_dir, lr_dir, len(list_images(hr_dir))


def options(args: argparse.Namespace, name: str, hr_dir: Path, lr_dir: Path, iters: int, print_freq: int) -> dict:
    """A BasicSR training options file (as a dict) for EDSR x2 on the prepared folders."""
    return {
        "name": name, "model_type": "SRModel", "scale": SCALE, "num_gpu": 0, "manual_seed": args.seed,
        "datasets": {"train": {
            "name": "peer", "type": "PairedImageDataset", "dataroot_gt": str(hr_dir.resolve()),
            "dataroot_lq": str(lr_dir.resolve()), "filename_tmpl": "{}", "io_backend": {"type": "disk"},
            "gt_size": args.patch, "use_hflip": True, "use_rot": True, "num_worker_per_gpu": args.workers,
            "batch_size_per_gpu": args.batch, "dataset_enlarge_ratio": 100, "prefetch_mode": None,
        }},
        "network_g": {"type": "EDSR", "num_in_ch": 3, "num_out_ch": 3, "num_feat": args.num_feat,
                      "num_block": args.num_block, "upscale": SCALE, "res_scale": args.res_scale,
                      "img_range": 255.0, "rgb_mean": list(DIV2K_RGB_MEAN)},
        "path": {"pretrain_network_g": None, "strict_load_g": True, "resume_state": None},
        "train": {
            "ema_decay": 0,
            "optim_g": {"type": "Adam", "lr": args.lr, "weight_decay": 0, "betas": [0.9, 0.99]},
            "scheduler": {"type": "CosineAnnealingRestartLR", "periods": [iters], "restart_weights": [1],
                          "eta_min": args.lr * args.min_lr_ratio},
            "total_iter": iters, "warmup_iter": -1,
            "pixel_opt": {"type": "L1Loss", "loss_weight": 1.0, "reduction": "mean"},
        },
        "logger": {"print_freq": print_freq, "save_checkpoint_freq": 10**9, "use_tb_logger": False,
                   "wandb": {"project": None, "resume_id": None}},
        "dist_params": {"backend": "gloo", "port": 29500},
    }


def run_basicsr(opt: dict, work: Path, threads: int) -> tuple[str, Path]:
    """Run BasicSR's training on ``opt``; (its log, the final net_g_latest.pth)."""
    experiment = work / "experiments" / opt["name"]
    shutil.rmtree(experiment, ignore_errors=True)
    opt_file = work / f"{opt['name']}.yml"
    opt_file.write_text(yaml.safe_dump(opt, sort_keys=False))
    cmd = [sys.executable, "-c", LAUNCHER, str(work.resolve()), str(threads), "-opt", str(opt_file.resolve())]
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
    log = proc.stdout + proc.stderr
    (work / f"{opt['name']}.log").write_text(log)
    if proc.returncode != 0:
        sys.exit(f"basicsr_peer: BasicSR training failed (exit {proc.returncode}); its last lines:\n"
                 + "\n".join(log.strip().splitlines()[-15:]))
    return log, experiment / "models" / "net_g_latest.pth"


def stamped(log: str, pattern: str) -> list[tuple[datetime.datetime, str]]:
    """(time, message) of BasicSR's log lines whose message matches ``pattern``."""
    return [(datetime.datetime.strptime(t, "%Y-%m-%d %H:%M:%S,%f"), msg)
            for t, msg in LOG_LINE.findall(log) if re.search(pattern, msg)]


def seconds_per_iter(log: str) -> float:
    """From the timestamps of the progress lines: first to last, so start-up is excluded."""
    lines = [(t, int(re.search(r"iter:\s*([\d,]+)", m).group(1).replace(",", ""))) for t, m in stamped(log, r"iter:")]
    if len(lines) < 2:
        sys.exit("basicsr_peer: the warm-up logged fewer than two progress lines; raise --warmup-iters")
    (t0, i0), (t1, i1) = lines[0], lines[-1]
    return (t1 - t0).total_seconds() / (i1 - i0)


def training_seconds(log: str) -> float:
    """Wall time of BasicSR's training loop: 'Start training' to 'End of training' in its log."""
    (start, _), (end, _) = stamped(log, r"^Start training")[0], stamped(log, r"^End of training")[0]
    return (end - start).total_seconds()


def score(checkpoint: Path, sources: list[str]) -> dict[str, dict[str, float]]:
    """PSNR and SSIM by srpipe's protocol (Y channel, ``SCALE`` pixels of border), per set."""
    loaded = load_upscaler(checkpoint=checkpoint)
    upscaler, scale = loaded.upscaler, loaded.scale
    return {Path(s).name: summarize(score_source(upscaler, s, scale, crop_border=scale, desc=Path(s).name))
            for s in sources}


def bare_step_ms(model, batch: int, patch: int, steps: int = 25, skip: int = 5) -> float:
    """Mean ms of a bare fp32 training step (forward, L1, backward, Adam) on a random batch."""
    import torch
    import torch.nn.functional as F

    opt = torch.optim.Adam(model.parameters(), 5e-4)
    x, y = torch.rand(batch, 3, patch // SCALE, patch // SCALE), torch.rand(batch, 3, patch, patch)
    for i in range(steps + skip):
        if i == skip:
            start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        F.l1_loss(model(x), y).backward()
        opt.step()
    return (time.perf_counter() - start) / steps * 1000


def loader_ms(opt: dict, iterations: int = 10) -> float:
    """CPU ms BasicSR's training dataset spends on the samples of one iteration."""
    from basicsr.data.paired_image_dataset import PairedImageDataset

    dataset = PairedImageDataset({**opt["datasets"]["train"], "phase": "train", "scale": SCALE})
    batch = opt["datasets"]["train"]["batch_size_per_gpu"]
    dataset[0]
    start = time.perf_counter()
    for i in range(iterations * batch):
        dataset[i % len(dataset)]
    return (time.perf_counter() - start) / iterations * 1000


def explain_rate(args: argparse.Namespace, hr_dir: Path, lr_dir: Path) -> None:
    """Print where BasicSR's iteration time goes, beside srpipe's step of the same model size."""
    import torch

    exec(TORCHVISION_ALIAS, {})  # the module name basicsr 1.4.2 imports
    from basicsr.archs.edsr_arch import EDSR

    from srpipe.models import build_model

    if args.threads:
        torch.set_num_threads(args.threads)
    opt = options(args, "explain", hr_dir, lr_dir, 1, 1)
    net = {k: v for k, v in opt["network_g"].items() if k != "type"}
    ours = dict(scale=SCALE, n_resblocks=args.num_block, n_feats=args.num_feat, res_scale=args.res_scale)
    torch.manual_seed(args.seed)
    print(f"{torch.get_num_threads()} torch threads, fp32, batch {args.batch} of {args.patch} px HR crops:")
    print(f"  BasicSR EDSR bare step:  {bare_step_ms(EDSR(**net), args.batch, args.patch):.0f} ms")
    print(f"  srpipe EDSR bare step:   {bare_step_ms(build_model('edsr', **ours), args.batch, args.patch):.0f} ms")
    print(f"  BasicSR loader per iteration (CPU time, in its worker): {loader_ms(opt):.0f} ms")


def main() -> None:
    args = parse_args()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    hr_dir, lr_dir, n_images = prepare_pairs(args.train, work)
    print(f"{n_images} training pairs (srpipe bicubic x{SCALE}) in {hr_dir.parent}", flush=True)
    if args.explain_rate:
        return explain_rate(args, hr_dir, lr_dir)

    step = max(1, args.warmup_iters // 6)
    log, _ = run_basicsr(options(args, "warmup", hr_dir, lr_dir, args.warmup_iters, step), work, args.threads)
    rate = seconds_per_iter(log)
    iters = max(1, int(args.minutes * 60 / rate))
    print(f"warm-up: {rate:.3f} s/iteration -> {iters} iterations for {args.minutes} min", flush=True)

    log, net = run_basicsr(options(args, "peer", hr_dir, lr_dir, iters, max(1, iters // 20)), work, args.threads)
    minutes = training_seconds(log) / 60
    info = import_basicsr(net, work / "peer.pt", "edsr", scale=SCALE, res_scale=args.res_scale)
    scores = score(work / "peer.pt", args.eval)
    result = {"minutes": minutes, "planned_minutes": args.minutes, "iterations": iters, "s_per_iter": rate,
              "parameters": info["parameters"], "images": n_images, "options": vars(args) | {"work": str(work)},
              "scores": scores}
    (work / "result.json").write_text(json.dumps(result, indent=2, default=str) + "\n")

    sets = " | ".join(f"{name} PSNR / SSIM" for name in scores)
    print(f"\n| trainer | minutes | iterations | params | {sets} |")
    print("|---|---|---|---|" + "---|" * len(scores))
    cells = " | ".join(f"{s['psnr']:.2f} / {s['ssim']:.4f}" for s in scores.values())
    print(f"| BasicSR {info['arch']['name'].upper()} (CPU) | {minutes:.1f} | {iters} | {info['parameters']:,} | {cells} |")


if __name__ == "__main__":
    main()
