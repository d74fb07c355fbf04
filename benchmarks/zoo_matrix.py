"""Every architecture through every command, for real: one table that says what works.

    python benchmarks/zoo_matrix.py                      # all ten architectures, tiny sizes (~15 min on 2 cores)
    python benchmarks/zoo_matrix.py --arch span swinir

For each architecture, at a tiny size (the sizes differ, the code paths are the architecture's),
the real command line on the sample photos, x2:

1. ``train`` under ``torchrun --nproc_per_node=2`` (DDP, gloo) with ``torch.compile``, bf16
   autocast and channels_last: 2 epochs of 4 steps;
2. ``train`` again, one process, from that ``best.pt`` through ``train.init_from``;
3. ``evaluate --hr-dir`` Set5 with the self-ensemble: PSNR alone and with the ensemble;
4. ``upscale`` tiled (32-pixel tiles, 16 of overlap) and whole, and their largest difference;
5. ``export-onnx`` fp32 and int8: ONNX Runtime against PyTorch, int8's PSNR change, and
   whether ``model.safetensors`` (spandrel's form) was written;
6. ``benchmark`` at 64x64, one thread: ONNX Runtime fp32 and PyTorch's latency.

Exact resume after SIGKILL is in the tests (``tests/test_train.py``, SPAN and Compact). The
weights are barely trained, so the PSNRs only show that each step ran on real numbers. Prints a
Markdown table and exits non-zero if any command failed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from srpipe.config import OWN_ARCHS, ZOO_ARCHS
from srpipe.data import prepare, source_files
from srpipe.io import read_image
from srpipe.patches import extract

TINY = {
    "edsr": ["--set", "model.n_resblocks=1", "--set", "model.n_feats=8"],
    "rcan": ["--set", "model.n_resgroups=1", "--set", "model.n_resblocks=1", "--set", "model.n_feats=8",
             "--set", "model.reduction=4"],
    "rlfn": ["--set", "model.n_resblocks=1", "--set", "model.n_feats=8", "--set", "model.esa_channels=4"],
    "span": "{feature_channels: 8}",
    "compact": "{num_feat: 8, num_conv: 2}",
    "esrgan": "{num_filters: 8, num_blocks: 1}",
    "safmn": "{dim: 8, n_blocks: 1}",
    "realplksr": "{dim: 16, n_blocks: 1, kernel_size: 7}",
    "omnisr": "{num_feat: 8, res_num: 1}",
    "swinir": "{embed_dim: 12, depths: [2], num_heads: [2], window_size: 4, img_size: 16}",
}
TRAIN = ["--set", "train.epochs=2", "--set", "train.steps_per_epoch=4", "--set", "train.batch_size=4",
         "--set", "train.patch_size=32", "--set", "train.threads=1", "--set", "train.feature_stats_every=0"]


def model_args(name: str) -> list[str]:
    sizes = TINY[name]
    return ["--set", f"model.name={name}", *(sizes if isinstance(sizes, list) else ["--set", f"model.kwargs={sizes}"])]


def srpipe(*args: str, torchrun: bool = False) -> tuple[bool, str]:
    """Run one srpipe command; (ok, its last line)."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"] if torchrun \
        else [sys.executable]
    done = subprocess.run([*launcher, "-m", "srpipe", *args], capture_output=True, text=True)
    lines = (done.stdout + done.stderr).strip().splitlines() or [""]
    return done.returncode == 0, lines[-1]


def check(name: str, work: Path, set5: str) -> dict:
    """The six steps for one architecture; a failed step is recorded with its last line."""
    out = work / name
    row: dict = {"arch": name, "failed": []}
    steps = [
        ("ddp+compile+bf16", dict(torchrun=True), ["train", "--patches", "store", "--valid", "valid", "--out",
         f"{out}/train", "--history", f"{out}/log.csv", "--metrics", f"{out}/train.json", *model_args(name), *TRAIN,
         "--set", "train.compile=true", "--set", "train.amp=bf16", "--set", "train.channels_last=true"]),
        ("init_from", {}, ["train", "--patches", "store", "--valid", "valid", "--out", f"{out}/tuned", "--history",
         f"{out}/tuned.csv", "--metrics", f"{out}/tuned.json", *model_args(name), *TRAIN, "--set", "train.epochs=1",
         "--set", f"train.init_from={out}/train/best.pt"]),
        ("evaluate", {}, ["evaluate", "--checkpoint", f"{out}/train/best.pt", "--hr-dir", set5, "--out",
         f"{out}/set5.json", "--set", "eval.self_ensemble=true", "--set", "eval.lpips=false"]),
        ("upscale", {}, ["upscale", "valid/lr_x2", "--model", f"{out}/train/best.pt", "--out", f"{out}/tiled",
         "--tile", "32", "--overlap", "16"]),
        ("upscale", {}, ["upscale", "valid/lr_x2", "--model", f"{out}/train/best.pt", "--out", f"{out}/whole",
         "--tile", "0"]),
        ("export-onnx", {}, ["export-onnx", "--checkpoint", f"{out}/train/best.pt", "--valid", "valid", "--out",
         f"{out}/onnx", "--metrics", f"{out}/export.json", "--set", "eval.lpips=false",
         "--set", "export.precision=[fp32,int8]"]),
        ("benchmark", {}, ["benchmark", "--checkpoint", f"{out}/train/best.pt", "--exported", f"{out}/onnx",
         "--metrics", f"{out}/bench.json", "--table", f"{out}/bench.csv", "--results", f"{out}/bench-all.csv",
         "--set", "benchmark.sizes=[[64,64]]", "--set", "benchmark.threads=[1]", "--set", "benchmark.repeats=10"]),
    ]
    start = time.perf_counter()
    for label, how, args in steps:
        ok, last = srpipe(*args, **how)
        if not ok:
            row["failed"].append(f"{label}: {last}")
            if label == "ddp+compile+bf16":
                break
    row["seconds"] = time.perf_counter() - start
    return {**row, **readings(out)}


def readings(out: Path) -> dict:
    """What the steps wrote, as numbers (missing ones stay out)."""
    got: dict = {}
    if (out / "train.json").exists():
        got["val_psnr"] = json.loads((out / "train.json").read_text()).get("best_val_psnr")
    if (out / "set5.json").exists():
        scores = json.loads((out / "set5.json").read_text())
        got["set5_psnr"], got["set5_x8"] = scores["psnr"], scores["ensemble"]["psnr"]
    tiled, whole = sorted((out / "tiled").glob("*.png")), sorted((out / "whole").glob("*.png"))
    if tiled and len(tiled) == len(whole):
        got["tile_max_diff"] = max(int(np.abs(read_image(a).astype(int) - read_image(b).astype(int)).max())
                                   for a, b in zip(tiled, whole))
    if (out / "export.json").exists():
        export = json.loads((out / "export.json").read_text())
        got["onnx_max_abs_diff"] = export["max_abs_diff"]
        got["int8_delta_psnr"] = export["int8"]["delta_psnr"]
        weights = export.get("safetensors", {})
        got["safetensors"] = "yes" if "file" in weights else "no: " + weights.get("skipped", "").split(",")[0]
    if (out / "bench.json").exists():
        got["fp32_ms"] = json.loads((out / "bench.json").read_text()).get("fp32_ms")
    return got


def table(rows: list[dict]) -> str:
    lines = ["| arch | DDP + compile + bf16 + channels_last, init_from | val PSNR | Set5 PSNR / x8 ensemble | "
             "tiled vs whole (max grey levels) | ONNX fp32 vs PyTorch | int8 ΔPSNR | spandrel .safetensors | "
             "ORT fp32 64² ms | s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        fmt = lambda k, f: f.format(r[k]) if r.get(k) is not None else "–"  # noqa: E731
        lines.append(f"| {r['arch']} | {'ok' if not r['failed'] else '; '.join(r['failed'])} | "
                     f"{fmt('val_psnr', '{:.2f}')} | {fmt('set5_psnr', '{:.2f}')} / {fmt('set5_x8', '{:.2f}')} | "
                     f"{fmt('tile_max_diff', '{}')} | {fmt('onnx_max_abs_diff', '{:.1e}')} | "
                     f"{fmt('int8_delta_psnr', '{:+.3f}')} | {r.get('safetensors', '–')} | {fmt('fp32_ms', '{:.1f}')} | "
                     f"{r['seconds']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", nargs="+", default=[*OWN_ARCHS, *ZOO_ARCHS], choices=[*OWN_ARCHS, *ZOO_ARCHS])
    ap.add_argument("--set5", default=str(Path("../shared/data/Set5").resolve()))
    ap.add_argument("--work", type=Path, default=Path("stages/zoo-matrix"), help="scratch folder")
    ap.add_argument("--out", type=Path, default=Path("docs/benchmarks/architectures/matrix.csv"))
    args = ap.parse_args()
    out = args.out.resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    os.chdir(args.work)
    Path("params.yaml").write_text("seed: 0\n")
    if not Path("store").exists():
        prepare(source_files("sample-train"), Path("train"), 2)
        prepare(source_files("sample-valid"), Path("valid"), 2)
        extract(Path("train"), Path("store"), 2)
    rows = []
    for name in args.arch:
        rows.append(check(name, Path("."), args.set5))
        print(rows[-1], flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).assign(failed=lambda f: f["failed"].map("; ".join)).to_csv(out, index=False)
    print("\n" + table(rows))
    sys.exit(1 if any(r["failed"] for r in rows) else 0)


if __name__ == "__main__":
    main()
