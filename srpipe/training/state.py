"""What a run is and where it stands: its fingerprint, and the state that ``last.pt`` carries.

``last.pt`` holds the model, optimiser, scheduler and EMA (and a GAN's discriminator with its own), the step reached (mid-epoch too), the
losses of the unfinished epoch, the history and the best score so far, and the fingerprint of
everything that determines the weights. A restart with the same fingerprint continues from
that step; any difference starts fresh and names the keys that changed.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..config import PERCEPTUAL_LAYERS, ModelParams, TrainParams
from ..datasets import sha256_of
from ..io import SrpipeError
from ..modelfile import UnsafeModelFile, open_model_file, read_checkpoint

# train params that change how fast a run goes or how it reports, never its weights
NOT_IN_FINGERPRINT = {"workers", "threads", "feature_stats_every", "device", "save_every", "snapshot_every",
                      "vgg16_backbone"}  # where the VGG16 file is, not what it holds


def model_arch(model_cfg: ModelParams, scale: int) -> dict:
    return {"name": model_cfg.name, "kwargs": {"scale": scale, **model_cfg.sizes()}}


# train params added after runs were saved, with the value that behaves as those runs did: left out
# of the fingerprint at that value, so a run saved before the param existed still resumes
ADDED_LATER = {"zero_init_residual": False, "pixel_weight": 1.0, "perceptual_weight": 0.0,
               "perceptual_layers": PERCEPTUAL_LAYERS, "best_metric": "psnr", "gan_weight": 0.0}


def run_fingerprint(arch: dict, cfg: TrainParams, seed: int, data: str, **extra) -> dict:
    """Everything that determines the trained weights (not threads, loader workers or save rate)."""
    train = cfg.model_dump(exclude=NOT_IN_FINGERPRINT)
    train = {k: v for k, v in train.items() if k not in ADDED_LATER or v != ADDED_LATER[k]}
    return {"arch": arch, "train": train, "seed": seed, "data": data, **extra}


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def fingerprint_changes(old: dict, new: dict) -> list[str]:
    a, b = _flat(old), _flat(new)
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


@dataclass
class Progress:
    """Where a run stands, beside its weights: saved in ``last.pt`` after every epoch and every
    ``save_every`` steps."""

    step: int = 0  # optimiser steps done
    best_psnr: float = -math.inf  # of the best epoch (by train.best_metric)
    best_lpips: float = math.inf  # of the best epoch, with train.best_metric: lpips
    best_epoch: int = 0
    history: list[dict] = field(default_factory=list)  # one row per finished epoch
    epoch_losses: list[float] = field(default_factory=list)  # of the unfinished epoch
    epoch_grad_norms: list[float] = field(default_factory=list)  # before clipping, of the unfinished epoch
    epoch_terms: dict[str, list[float]] = field(default_factory=dict)  # a composite loss's terms, unfinished epoch
    seconds: float = 0.0  # wall time of the steps done (validation included), over restarts
    early_loss: float = math.inf  # mean loss of the run's first steps: epoch 1's divergence yardstick

    def as_dict(self) -> dict:
        return asdict(self)


def resumable(last: Path, fingerprint: dict, total_steps: int) -> tuple[dict | None, str]:
    """The state in ``last`` if the run can continue from it, and a line saying what happens."""
    if not last.is_file():
        return None, ""
    try:
        state = read_checkpoint(last)
    except UnsafeModelFile:
        raise  # a file that asks to run code is refused, not set aside
    except SrpipeError as exc:  # truncated by a crash or a full disk
        aside = last.with_name(f"{last.stem}.damaged{last.suffix}")
        os.replace(last, aside)
        warnings.warn(f"{last}, the state a restart resumes from, is damaged and cannot be read ({exc}); moved aside "
                      f"to {aside}; starting fresh", stacklevel=3)
        return None, ""
    changes = fingerprint_changes(state.get("fingerprint", {}), fingerprint)
    if changes:
        return None, f"not resuming from {last}: it was trained with other params or data ({'; '.join(changes[:4])}); starting fresh"
    step = state.get("progress", {}).get("step", 0)
    if step >= total_steps:
        return None, f"not resuming from {last}: that run had finished; starting fresh"
    return state, f"resuming from {last} at step {step} of {total_steps}"


def file_sha256(path: str | Path) -> str:
    try:
        return sha256_of(Path(path))
    except OSError as exc:
        raise SrpipeError(f"train.init_from: cannot read {path} ({exc.strerror}); give an srpipe checkpoint "
                          "(stages/train/best.pt, or one from `srpipe import-weights`)") from None


def load_matching(model: nn.Module, path: str | Path) -> tuple[list[str], list[str]]:
    """Copy into ``model`` every tensor of the model file at ``path`` (an srpipe checkpoint, or
    any file spandrel opens, in spandrel's tensor names) whose name and shape match (the EDSR
    recipe starts x3 and x4 from the x2 model: all but the upsampler). Returns the names loaded and
    the names of ``model``'s tensors left as initialised."""
    try:
        source = open_model_file(path).model.state_dict()
    except SrpipeError as exc:
        raise SrpipeError(f"train.init_from: {exc}") from None
    own = model.state_dict()
    loaded = [k for k, v in own.items() if k in source and source[k].shape == v.shape]
    with torch.no_grad():
        for k in loaded:
            own[k].copy_(source[k])
    return loaded, [k for k in own if k not in loaded]
