"""The GAN side of a step: the discriminator, its optimiser and schedule, and both sides of the loss.

Real-ESRGAN's vanilla GAN (binary cross-entropy on logits, a score per pixel with the U-Net):
the generator's term is ``train.gan_weight`` x BCE(D(SR), real), computed with D frozen; then D
takes its own Adam step on BCE(D(HR), real) + BCE(D(SR), fake), SR detached. Real and fake go
through D as one batch (no batch norm in D, so nothing couples them), one forward and one
backward per micro-batch, which DistributedDataParallel needs.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..config import DiscriminatorParams
from ..io import SrpipeError
from ..models.discriminator import DISCRIMINATORS, MULTIPLE_OF

D_WINS = 0.05  # D's loss (real + fake) below this at every step of an epoch: it wins outright


class Adversary:
    """The discriminator of a GAN run, on ``device``, under DDP when ``distributed``."""

    def __init__(self, cfg: DiscriminatorParams, weight: float, lr_factor: Callable[[int], float], crop: int,
                 device: torch.device, distributed: bool, memory_format: torch.memory_format, fused: bool):
        if crop % MULTIPLE_OF[cfg.name]:
            raise SrpipeError(f"train.patch_size={crop}: discriminator.name={cfg.name} needs a multiple of "
                              f"{MULTIPLE_OF[cfg.name]}; set train.patch_size to one (e.g. "
                              f"{math.ceil(crop / MULTIPLE_OF[cfg.name]) * MULTIPLE_OF[cfg.name]})")
        self.weight, self.memory_format = weight, memory_format
        self.model = DISCRIMINATORS[cfg.name](features=cfg.features).to(device, memory_format=memory_format)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, betas=cfg.betas, fused=fused)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_factor)
        self.net = self.model
        if distributed:
            ids = [device.index] if device.type == "cuda" else None
            self.net = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)

    def generator_loss(self, sr: torch.Tensor) -> torch.Tensor:
        """``gan_weight`` x BCE(D(sr), real): the generator's adversarial term. D's weights are
        frozen for it (its spectral norm's power iteration still advances, as in training)."""
        self.model.requires_grad_(False)
        logits = self.model(sr.contiguous(memory_format=self.memory_format)).float()
        return self.weight * F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))

    def step(self, pairs: list[tuple[torch.Tensor, torch.Tensor]], autocast) -> dict[str, float]:
        """One Adam step of D over the step's micro-batches (HR, SR); returns its loss terms and
        its mean output (probability of real) on real and on fake images."""
        self.model.requires_grad_(True)
        self.optimizer.zero_grad(set_to_none=True)
        sums = dict.fromkeys(("loss_d_real", "loss_d_fake", "d_real", "d_fake"), 0.0)
        for hr, sr in pairs:
            batch = torch.cat([hr, sr.detach()]).contiguous(memory_format=self.memory_format)
            with autocast():
                real, fake = self.net(batch).float().chunk(2)
            loss_real = F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
            loss_fake = F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))
            ((loss_real + loss_fake) / len(pairs)).backward()
            for name, value in (("loss_d_real", loss_real), ("loss_d_fake", loss_fake),
                                ("d_real", torch.sigmoid(real).mean()), ("d_fake", torch.sigmoid(fake).mean())):
                sums[name] += float(value.detach()) / len(pairs)
        self.optimizer.step()
        self.scheduler.step()
        return sums

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])


def discriminator_wins(d_real_losses: list[float], d_fake_losses: list[float]) -> bool:
    """Whether D's loss stayed near zero (below :data:`D_WINS`) at every step of an epoch."""
    return bool(d_real_losses) and max(r + f for r, f in zip(d_real_losses, d_fake_losses)) < D_WINS
