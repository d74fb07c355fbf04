"""The train stage: L1 loss, Adam with linear warm-up then cosine decay, best-PSNR checkpoint."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from .progress import progress

from . import patches as patch_store
from .config import ModelParams, TrainParams
from .data import load_pairs
from .evaluate import evaluate, summarize
from .upscalers import torch_upscaler
from .io import SrpipeError, atomic_path
from .models import build_model, count_parameters, save_checkpoint


class PatchDataset(Dataset):
    """(LR, HR) float tensors in [0, 1] from memory-mapped patch arrays."""

    def __init__(self, hr: np.ndarray, lr: np.ndarray):
        self.hr, self.lr = hr, lr

    def __len__(self) -> int:
        return len(self.hr)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        def tensor(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.array(a)).permute(2, 0, 1).float().div_(255.0)

        return tensor(self.lr[i]), tensor(self.hr[i])


def augment(lr: torch.Tensor, hr: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random horizontal flip and 90-degree rotation per sample (the 8 dihedral transforms)."""
    flips = torch.randint(0, 2, (lr.shape[0],), generator=gen).tolist()
    turns = torch.randint(0, 4, (lr.shape[0],), generator=gen).tolist()
    lrs, hrs = [], []
    for a, b, f, k in zip(lr, hr, flips, turns):
        if f:
            a, b = a.flip(-1), b.flip(-1)
        lrs.append(torch.rot90(a, k, (-2, -1)))
        hrs.append(torch.rot90(b, k, (-2, -1)))
    return torch.stack(lrs), torch.stack(hrs)


def lr_lambda(warmup_steps: int, total_steps: int, min_ratio: float):
    """Learning-rate factor per step: linear warm-up from near zero, then cosine to ``min_ratio``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        done = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, done)))

    return factor


def epoch_indices(n: int, steps: int, batch: int, gen: torch.Generator) -> list[list[int]]:
    """``steps`` batches drawn without replacement from successive random permutations of ``n``."""
    need = steps * batch
    order = torch.cat([torch.randperm(n, generator=gen) for _ in range(math.ceil(need / n))])[:need]
    return order.view(steps, batch).tolist()


def model_arch(model_cfg: ModelParams, scale: int) -> dict:
    kwargs = model_cfg.model_dump(exclude={"name"})
    return {"name": model_cfg.name, "kwargs": {"scale": scale, **kwargs}}


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
) -> dict:
    """Train, writing ``best.pt`` and ``last.pt`` into ``out_dir`` and one CSV row per epoch."""
    out_dir = Path(out_dir)
    torch.manual_seed(seed)
    torch.set_num_threads(cfg.threads or os.cpu_count() or 1)
    gen = torch.Generator().manual_seed(seed)

    hr, lr = patch_store.load(patches_dir)
    valid = load_pairs(valid_dir, scale)
    dataset = PatchDataset(hr, lr)
    batch = min(cfg.batch_size, len(dataset))
    steps = cfg.steps_per_epoch or max(1, len(dataset) // batch)

    arch = model_arch(model_cfg, scale)
    model = build_model(arch["name"], **arch["kwargs"])
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=cfg.betas)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(cfg.warmup_epochs * steps, cfg.epochs * steps, cfg.min_lr_ratio)
    )
    loss_fn = torch.nn.L1Loss()

    history: list[dict] = []
    best_psnr, best_epoch, global_step = -math.inf, 0, 0
    started = time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        loader = DataLoader(dataset, batch_sampler=epoch_indices(len(dataset), steps, batch, gen),
                            num_workers=cfg.workers)
        losses = []
        bar = progress(loader, desc=f"epoch {epoch}/{cfg.epochs}", unit="step", leave=False)
        for lr_batch, hr_batch in bar:
            lr_batch, hr_batch = augment(lr_batch, hr_batch, gen)
            loss = loss_fn(model(lr_batch), hr_batch)
            if not torch.isfinite(loss):
                raise SrpipeError(f"non-finite loss {loss.item()} at step {global_step} (epoch {epoch}); "
                                  f"last good checkpoint kept in {out_dir}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            global_step += 1
            losses.append(loss.item())
            bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")

        model.eval()
        val = summarize(evaluate(torch_upscaler(model), valid, crop_border, desc="validate"))
        row = {"epoch": epoch, "loss": float(np.mean(losses)), "val_psnr": val["psnr"], "val_ssim": val["ssim"],
               "lr": optimizer.param_groups[0]["lr"]}
        history.append(row)
        tqdm.write(f"epoch {epoch}: loss {row['loss']:.4f}  val PSNR {val['psnr']:.3f} dB  SSIM {val['ssim']:.4f}")
        if val["psnr"] > best_psnr:
            best_psnr, best_epoch = val["psnr"], epoch
            save_checkpoint(out_dir / "best.pt", model, arch, epoch=epoch, val_psnr=val["psnr"])
        save_checkpoint(out_dir / "last.pt", model, arch, epoch=epoch, val_psnr=val["psnr"],
                        optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict())
        with atomic_path(log_csv) as tmp:
            pd.DataFrame(history).to_csv(tmp, index=False)

    return {
        "best_val_psnr": best_psnr,
        "best_epoch": best_epoch,
        "final_loss": history[-1]["loss"],
        "params": count_parameters(model),
        "steps": global_step,
        "train_seconds": round(time.perf_counter() - started, 1),
    }
