"""The training recipe's pieces: losses, the learning-rate schedule, mixed precision."""

from __future__ import annotations

import math
import warnings
from typing import Callable

import torch
import torch.nn.functional as F

from ..config import PRESETS, TrainParams
from ..hardware import bf16_supported
from ..metrics import BT601_CBCR, BT601_Y

LR_WARN = 5e-4  # the EDSR paper saw its wide models' training diverge above this
# (residual blocks, features, lr): srpipe measured training stable up to this lr for models no
# deeper and no wider (docs/training.md: time to quality; 8x32 diverged at 4e-3, 16x32 at 2e-3)
MEASURED_STABLE = ((8, 32, 2e-3), (12, 48, 1e-3))
# spandrel's architectures at their default preset: the highest lr the 30-minute recipe trained
# stably (docs/benchmarks/architectures.md: SPAN diverged at 2e-3, Compact and SAFMN did not)
MEASURED_ZOO = {"span": 1e-3, "compact": 2e-3, "safmn": 2e-3}


def charbonnier(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    return torch.sqrt((pred - target) ** 2 + eps**2).mean()


LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "l1": F.l1_loss,
    "l2": F.mse_loss,
    "charbonnier": charbonnier,
}


def training_loss(cfg: TrainParams) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``train.loss`` on R, G, B; with ``train.chroma_weight``, on BT.601 Y (the channel the
    protocol scores, as SRCNN and VDSR were trained) plus that weight times the loss on Cb and Cr,
    so that a small model spends less of itself on colour than on luma."""
    loss = LOSSES[cfg.loss]
    if cfg.chroma_weight is None:
        return loss
    weight, to_ycbcr = cfg.chroma_weight, torch.tensor([BT601_Y, *BT601_CBCR], dtype=torch.float64) / 255

    def on_ycbcr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        m = to_ycbcr.to(pred.device, pred.dtype)
        p, t = (torch.einsum("oc,bchw->bohw", m, x) for x in (pred, target))
        return loss(p[:, :1], t[:, :1]) + weight * loss(p[:, 1:], t[:, 1:])

    return on_ycbcr


def objective(cfg: TrainParams, device: torch.device) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """What a step minimises: ``train.loss`` alone (the default, the very same function), or
    ``pixel_weight`` times it plus ``perceptual_weight`` times the VGG16 perceptual loss, whose
    terms are logged (a GAN run's adversarial term is added by the trainer)."""
    pixel = training_loss(cfg)
    if cfg.perceptual_weight == 0 and cfg.pixel_weight == 1 and cfg.gan_weight == 0:
        return pixel
    from .perceptual import PerceptualLoss, WeightedLoss

    perceptual = None
    if cfg.perceptual_weight:
        perceptual = PerceptualLoss(cfg.perceptual_layers, cfg.vgg16_backbone).to(device)
    return WeightedLoss(pixel, cfg.pixel_weight, perceptual, cfg.perceptual_weight)


def lr_lambda(cfg: TrainParams, steps_per_epoch: int) -> Callable[[int], float]:
    """Learning-rate factor per optimiser step: linear warm-up from near zero over
    ``warmup_epochs``, then cosine or linear decay that reaches ``min_lr_ratio`` at the last
    step, or x``gamma`` every ``step_size`` epochs."""
    warmup = cfg.warmup_epochs * steps_per_epoch
    total = cfg.epochs * steps_per_epoch

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if cfg.schedule == "step":
            return cfg.gamma ** ((step - warmup) // (cfg.step_size * steps_per_epoch))
        done = min(1.0, (step - warmup) / max(1, total - 1 - warmup))
        left = 1 - done if cfg.schedule == "linear" else 0.5 * (1 + math.cos(math.pi * done))
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * left

    return factor


def lr_warning(lr: float, sizes: dict, name: str | None = None) -> str | None:
    """Why ``lr`` is risky for a model of these sizes (``ModelParams.sizes()``; its depth counts
    RCAN's groups x blocks) and architecture, or None: above the highest lr srpipe measured stable
    for a model no deeper and no wider (:data:`MEASURED_STABLE`) or for spandrel's architecture at
    its default preset (:data:`MEASURED_ZOO`), above 5e-4 for the others."""
    if "n_resblocks" not in sizes:
        default = name in MEASURED_ZOO and sizes["ctor"] == next(iter(PRESETS[name].values()))
        limit = MEASURED_ZOO[name] if default else LR_WARN
        if lr <= limit:
            return None
        if default:
            return (f"train.lr={lr} is above {limit} for {name} at its preset: srpipe measured training stable up to "
                    "there (docs/benchmarks/architectures.md)")
        return (f"train.lr={lr} is above {LR_WARN} for one of spandrel's architectures: EDSR training was seen to "
                "diverge there, and srpipe has not measured this architecture at this size and lr")
    blocks, n_feats = sizes["n_resblocks"] * sizes.get("n_resgroups", 1), sizes["n_feats"]
    measured = [limit for most_blocks, most_feats, limit in MEASURED_STABLE
                if blocks <= most_blocks and n_feats <= most_feats]
    limit = measured[0] if measured else LR_WARN
    if lr <= limit:
        return None
    seen = "srpipe measured training stable up to there" if measured else "EDSR training was seen to diverge there"
    return f"train.lr={lr} is above {limit} for a {blocks}x{n_feats} model (residual blocks x features): {seen}"


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """bfloat16 for ``amp: bf16`` (with a warning and fp32 where the device lacks it) and for
    ``amp: auto`` where the device computes it natively; None (fp32) otherwise."""
    if amp == "none":
        return None
    if bf16_supported(device.type):
        return torch.bfloat16
    if amp == "bf16":
        warnings.warn(f"train.amp=bf16: this {device.type.upper()} has no native bfloat16; training in fp32",
                      stacklevel=2)
    return None
