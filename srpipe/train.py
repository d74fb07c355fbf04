"""The train stage: the SR recipe, resumable, on one process or many (DistributedDataParallel).

Per epoch, a *plan* of (patch, flip, rotation, crop offset) rows is drawn from ``(seed, epoch)``
alone; the DataLoader turns plan rows into augmented (LR, HR) pairs, so a run that is killed and
resumed from ``last.pt`` replays exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, SequentialSampler
from tqdm import tqdm

from . import patches as patch_store
from .config import ModelParams, TrainParams
from .data import load_pairs
from .evaluate import evaluate, summarize
from .io import SrpipeError, atomic_path
from .models import build_model, count_parameters, load_checkpoint, macs_per_output_pixel, save_checkpoint
from .progress import progress
from .upscalers import torch_upscaler

LR_WARN = 5e-4  # the EDSR paper saw training diverge above this


# ---------------------------------------------------------------- losses and schedules


def charbonnier(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    return torch.sqrt((pred - target) ** 2 + eps**2).mean()


LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "l1": F.l1_loss,
    "l2": F.mse_loss,
    "charbonnier": charbonnier,
}


def lr_lambda(cfg: TrainParams, steps_per_epoch: int) -> Callable[[int], float]:
    """Learning-rate factor per optimiser step: linear warm-up from near zero over
    ``warmup_epochs``, then cosine decay to ``min_lr_ratio`` or x``gamma`` every ``step_size`` epochs."""
    warmup = cfg.warmup_epochs * steps_per_epoch
    total = cfg.epochs * steps_per_epoch

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if cfg.schedule == "step":
            return cfg.gamma ** ((step - warmup) // (cfg.step_size * steps_per_epoch))
        done = min(1.0, (step - warmup) / max(1, total - warmup))
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * done))

    return factor


# ---------------------------------------------------------------- data


def epoch_plan(n_patches: int, rows: int, seed: int, epoch: int, crop_positions: int) -> np.ndarray:
    """``rows`` x (patch, flip, quarter turns, crop y, crop x), drawn from (seed, epoch) alone.

    Patches come from successive random permutations, so each is used once per pass.
    """
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.cat([torch.randperm(n_patches, generator=gen) for _ in range(math.ceil(rows / n_patches))])[:rows]
    flips = torch.randint(0, 2, (rows,), generator=gen)
    turns = torch.randint(0, 4, (rows,), generator=gen)
    crops = torch.randint(0, crop_positions, (rows, 2), generator=gen)
    return torch.stack([order, flips, turns, crops[:, 0], crops[:, 1]], dim=1).numpy()


def transform(img: np.ndarray, flip: int, turns: int) -> np.ndarray:
    """Horizontal flip then ``turns`` quarter rotations of an HxWxC array (the 8 dihedral transforms)."""
    if flip:
        img = img[:, ::-1]
    return np.rot90(img, turns, axes=(0, 1))


class PlanDataset(Dataset):
    """Augmented (LR, HR) float tensors in [0, 1] for the rows of an epoch plan."""

    def __init__(self, hr: np.ndarray, lr: np.ndarray, plan: np.ndarray, scale: int, lr_crop: int):
        self.hr, self.lr, self.plan, self.scale, self.lr_crop = hr, lr, plan, scale, lr_crop

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        patch, flip, turns, cy, cx = (int(v) for v in self.plan[i])
        c, s = self.lr_crop, self.scale
        lr = self.lr[patch, cy : cy + c, cx : cx + c]
        hr = self.hr[patch, cy * s : (cy + c) * s, cx * s : (cx + c) * s]

        def tensor(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(transform(a, flip, turns).copy()).permute(2, 0, 1).float().div_(255)

        return tensor(lr), tensor(hr)


# ---------------------------------------------------------------- bookkeeping


def model_arch(model_cfg: ModelParams, scale: int) -> dict:
    return {"name": model_cfg.name, "kwargs": {"scale": scale, **model_cfg.sizes()}}


def data_fingerprint(patches_dir: str | Path) -> str:
    """sha256 of the patch arrays and index (what the weights depend on)."""
    h = hashlib.sha256()
    for name in ("index.csv", "hr.npy", "lr.npy"):
        with open(Path(patches_dir) / name, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
    return h.hexdigest()


def run_fingerprint(arch: dict, cfg: TrainParams, seed: int, data: str) -> dict:
    """Everything that determines the trained weights (not threads or loader workers)."""
    train = cfg.model_dump(exclude={"workers", "threads", "feature_stats_every", "device"})
    return {"arch": arch, "train": train, "seed": seed, "data": data}


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def fingerprint_changes(old: dict, new: dict) -> list[str]:
    a, b = _flat(old), _flat(new)
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


class FeatureStats:
    """Forward hooks on every conv layer that record the mean and std of its output when armed."""

    def __init__(self, model: nn.Module):
        self.stats: dict[str, tuple[float, float]] = {}
        self.armed = False
        self.handles = [
            m.register_forward_hook(self._hook(name)) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)
        ]

    def _hook(self, name: str):
        def hook(module, inputs, output):
            if self.armed:
                out = output.detach().float()
                self.stats[name] = (out.mean().item(), out.std().item())

        return hook

    def close(self) -> None:
        for h in self.handles:
            h.remove()


class Distributed:
    """Process-group set-up for ``torchrun`` (gloo on CPU, nccl on GPU); a no-op for one process."""

    def __init__(self, device: torch.device):
        self.device = device  # nccl reduces only CUDA tensors
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.enabled = self.world > 1
        if self.enabled and not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def mean(self, value: float) -> float:
        if not self.enabled:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.item() / self.world

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


def pick_device(choice: str) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise SrpipeError("train.device is cuda but no CUDA device is available")
    if choice == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))


# ---------------------------------------------------------------- the loop


def train(
    patches_dir: str | Path,
    valid_dir: str | Path,
    out_dir: str | Path,
    log_csv: str | Path,
    scale: int,
    seed: int,
    model_cfg: ModelParams,
    cfg: TrainParams,
    crop_border: int,
) -> dict | None:
    """Train, keeping ``best.pt`` (best validation PSNR), ``last.pt`` (everything needed to resume),
    TensorBoard logs in ``out_dir/tb`` and one CSV row per epoch. Returns a summary on the main
    process (None on the others)."""
    out_dir = Path(out_dir)
    device = pick_device(cfg.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    ddp = Distributed(device)
    try:
        return _train(patches_dir, valid_dir, out_dir, Path(log_csv), scale, seed, model_cfg, cfg, crop_border,
                      device, ddp)
    finally:
        ddp.close()


def _train(patches_dir, valid_dir, out_dir, log_csv, scale, seed, model_cfg, cfg, crop_border, device, ddp):
    if cfg.lr > LR_WARN and ddp.main:
        warnings.warn(f"train.lr={cfg.lr} is above {LR_WARN}: EDSR training was seen to diverge there", stacklevel=2)
    if cfg.batch_size % ddp.world:
        raise SrpipeError(f"train.batch_size={cfg.batch_size} is not divisible by the {ddp.world} processes")
    torch.set_num_threads(cfg.threads or max(1, (os.cpu_count() or 1) // ddp.world))

    hr, lr = patch_store.load(patches_dir)
    patch_hr = hr.shape[1]
    crop_hr = cfg.patch_size or patch_hr
    if crop_hr % scale or crop_hr > patch_hr:
        raise SrpipeError(f"train.patch_size={crop_hr} must be a multiple of {scale} and at most {patch_hr}")
    lr_crop, crop_positions = crop_hr // scale, (patch_hr - crop_hr) // scale + 1
    valid = load_pairs(valid_dir, scale) if ddp.main else []
    batch = min(cfg.batch_size, len(hr))
    per_rank = batch // ddp.world
    steps = cfg.steps_per_epoch or max(1, len(hr) // (batch * cfg.grad_accum))

    arch = model_arch(model_cfg, scale)
    torch.manual_seed(seed)
    model = build_model(arch["name"], **arch["kwargs"])
    model_stats = {"params": count_parameters(model), "macs_per_output_pixel": macs_per_output_pixel(model)}
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=cfg.betas)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, steps))
    ema = (
        torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(cfg.ema))
        if cfg.ema else None
    )
    fingerprint = run_fingerprint(arch, cfg, seed, data_fingerprint(patches_dir))

    # resume from an unfinished run with the same fingerprint, else start fresh
    start_epoch, best_psnr, best_epoch, history = 1, -math.inf, 0, []
    last = out_dir / "last.pt"
    if last.is_file():
        state = load_checkpoint(last)
        changes = fingerprint_changes(state.get("fingerprint", {}), fingerprint)
        if changes:
            reason = f"it was trained with other params or data ({'; '.join(changes[:4])})"
        elif state["epoch"] >= cfg.epochs:
            reason = "that run had finished"
        else:
            reason = None
            model.load_state_dict(state["state_dict"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            if ema is not None:
                ema.load_state_dict(state["ema"])
            torch.set_rng_state(state["rng"]["torch"])
            start_epoch, best_psnr, best_epoch = state["epoch"] + 1, state["best_psnr"], state["best_epoch"]
            history = state["history"]
            if ddp.main:
                tqdm.write(f"resuming from {last} after epoch {state['epoch']} of {cfg.epochs}")
        if reason and ddp.main:
            tqdm.write(f"not resuming from {last}: {reason}; starting fresh")
    if start_epoch == 1 and ddp.main and (out_dir / "tb").exists():
        shutil.rmtree(out_dir / "tb")

    net = torch.compile(model) if cfg.compile else model
    if ddp.enabled:
        net = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    loss_fn = LOSSES[cfg.loss]
    use_bf16 = cfg.amp == "bf16"
    if use_bf16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        warnings.warn("train.amp=bf16: this GPU has no bfloat16 support; training in fp32", stacklevel=2)
        use_bf16 = False
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if use_bf16 else contextlib.nullcontext
    writer = None
    stats = None
    if ddp.main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out_dir / "tb"), purge_step=(start_epoch - 1) * steps)
        if cfg.feature_stats_every:
            stats = FeatureStats(model)

    started, global_step = time.perf_counter(), (start_epoch - 1) * steps
    for epoch in range(start_epoch, cfg.epochs + 1):
        model.train()
        plan = epoch_plan(len(hr), steps * cfg.grad_accum * batch, seed, epoch, crop_positions)
        dataset = PlanDataset(hr, lr, plan, scale, lr_crop)
        sampler = (DistributedSampler(dataset, ddp.world, ddp.rank, shuffle=False, drop_last=True)
                   if ddp.enabled else SequentialSampler(dataset))
        loader = iter(DataLoader(dataset, batch_size=per_rank, sampler=sampler, num_workers=cfg.workers,
                                 pin_memory=device.type == "cuda"))
        losses, tick = [], time.perf_counter()
        bar = progress(range(steps), desc=f"epoch {epoch}/{cfg.epochs}", unit="step", leave=False,
                       disable=None if ddp.main else True)
        for _ in bar:
            if stats is not None:
                stats.armed = global_step % cfg.feature_stats_every == 0
            optimizer.zero_grad(set_to_none=True)
            step_loss = 0.0
            for micro in range(cfg.grad_accum):
                lr_batch, hr_batch = (t.to(device, non_blocking=True) for t in next(loader))
                if cfg.channels_last:
                    lr_batch = lr_batch.contiguous(memory_format=torch.channels_last)
                sync = micro == cfg.grad_accum - 1 or not ddp.enabled
                with (contextlib.nullcontext() if sync else net.no_sync()), autocast():
                    loss = loss_fn(net(lr_batch).float(), hr_batch) / cfg.grad_accum
                loss.backward()
                step_loss += loss.item()
                if stats is not None:
                    stats.armed = False
            step_loss = ddp.mean(step_loss)
            if not math.isfinite(step_loss):
                raise SrpipeError(f"non-finite loss ({step_loss}) at step {global_step} (epoch {epoch}); "
                                  f"the last good checkpoint is kept in {last}")
            optimizer.step()
            scheduler.step()
            if ema is not None:
                ema.update_parameters(model)
            global_step += 1
            losses.append(step_loss)
            rate = batch * cfg.grad_accum / max(1e-9, time.perf_counter() - tick)
            tick = time.perf_counter()
            bar.set_postfix(loss=f"{step_loss:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}", patches_s=f"{rate:.0f}")
            if writer is not None:
                writer.add_scalar("train/loss", step_loss, global_step)
                writer.add_scalar("train/lr", scheduler.get_last_lr()[0], global_step)
                writer.add_scalar("train/patches_per_s", rate, global_step)
                if stats is not None and stats.stats:
                    for name, (mean, std) in stats.stats.items():
                        writer.add_scalar(f"features_mean/{name}", mean, global_step)
                        writer.add_scalar(f"features_std/{name}", std, global_step)
                    stats.stats.clear()

        if ddp.main:
            scored = ema.module if ema is not None else model
            scored.eval()
            val = summarize(evaluate(torch_upscaler(scored), valid, crop_border, desc="validate"))
            row = {"epoch": epoch, "loss": float(np.mean(losses)), "val_psnr": val["psnr"], "val_ssim": val["ssim"],
                   "lr": optimizer.param_groups[0]["lr"]}
            history.append(row)
            writer.add_scalar("val/psnr", val["psnr"], global_step)
            writer.add_scalar("val/ssim", val["ssim"], global_step)
            writer.flush()
            tqdm.write(f"epoch {epoch}: loss {row['loss']:.4f}  val PSNR {val['psnr']:.3f} dB  SSIM {val['ssim']:.4f}")
            if val["psnr"] > best_psnr:
                best_psnr, best_epoch = val["psnr"], epoch
                save_checkpoint(out_dir / "best.pt", scored, arch, epoch=epoch, val_psnr=val["psnr"])
            save_checkpoint(
                last, model, arch, epoch=epoch, val_psnr=val["psnr"], optimizer=optimizer.state_dict(),
                scheduler=scheduler.state_dict(), ema=ema.state_dict() if ema is not None else None,
                rng={"torch": torch.get_rng_state()}, fingerprint=fingerprint, best_psnr=best_psnr,
                best_epoch=best_epoch, history=history,
            )
            with atomic_path(log_csv) as tmp:
                pd.DataFrame(history).to_csv(tmp, index=False)
        ddp.barrier()

    if stats is not None:
        stats.close()
    if not ddp.main:
        return None
    writer.close()
    return {
        "best_val_psnr": best_psnr,
        "best_epoch": best_epoch,
        "final_loss": history[-1]["loss"],
        **model_stats,
        "steps": global_step,
        "train_seconds": round(time.perf_counter() - started, 1),
    }

