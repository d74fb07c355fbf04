"""The train stage's loop, in named parts: set-up, resume, one step, validate, save.

A run is ``epochs`` x ``steps_per_epoch`` optimiser steps over random crops of the image store
(:mod:`.sampling`). ``last.pt`` is saved every ``save_every`` steps and at the end of every epoch,
so a killed run restarted with the same params continues from the last save, mid-epoch
included, and ends with the same weights, bit for bit on CPU, as an uninterrupted one.
Validation (tiled, on the training device) comes at the end of every epoch, and the best epoch's
weights are kept in ``.unfinished/best.pt`` until the run ends: then ``best.pt``, the per-epoch log
and the summary replace the previous run's together, so a killed run never leaves one run's best.pt
beside another's summary.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from ..config import DegradationParams, DiscriminatorParams, ModelParams, TrainParams
from ..data import prepared_pairs
from ..degradations import CropDegrader
from ..evaluate import evaluate, summarize
from ..hardware import available_cores, pick_device
from ..io import UNFINISHED, SrpipeError, atomic_outputs, folder_lock, remove_stale, write_json
from ..metrics import perceptual_scorers
from ..models import build_model, count_parameters, macs_per_output_pixel, save_checkpoint, zero_init_residual
from ..patches import ImageStore
from ..progress import progress
from ..upscale import tiled_upscaler
from ..upscalers import torch_upscaler
from .adversarial import D_WINS, Adversary, discriminator_wins
from .recipe import autocast_dtype, lr_lambda, lr_warning, objective
from .runtime import Board, Distributed, loader_workers
from .sampling import CropDataset, RunSampler, epoch_steps, make_loader
from .state import Progress, file_sha256, load_matching, model_arch, resumable, run_fingerprint

VAL_OVERLAP = 16  # LR pixels of context around each validation tile
DIVERGED = 10.0  # an epoch whose mean loss is this many times the lowest so far stops training
EARLY_STEPS = 10  # epoch 1 is compared with the mean loss of the run's first steps
TIMING_WARMUP = 3  # untimed first steps of a step-time measurement (allocations, caches)
FUSED_ADAM = ("cpu", "cuda")  # devices whose Adam runs fused


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
    degradation: DegradationParams | None = None,
    lpips_backbone: str | None = None,
    discriminator: DiscriminatorParams | None = None,
    summary_json: str | Path | None = None,
) -> dict | None:
    """Train, keeping ``best.pt`` (best validation PSNR, or LPIPS with ``train.best_metric``:
    ``lpips_backbone`` is its AlexNet file), ``last.pt`` (everything needed to resume), TensorBoard
    logs in ``out_dir/tb``, one CSV row per epoch in ``log_csv`` and the summary in ``summary_json``.
    ``best.pt``, ``log_csv`` and ``summary_json`` are written together when the run ends.
    ``discriminator`` is the GAN's, used when ``train.gan_weight`` > 0. Returns the summary on the
    main process (None on the others)."""
    device = pick_device(cfg.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    ddp = Distributed(device)
    # one run at a time into out_dir (its main process holds it), which first removes the temporaries
    # of saves that a killed run left
    held = folder_lock(out_dir, "srpipe train") if ddp.main else contextlib.nullcontext()
    try:
        with held:
            if ddp.main:
                for name in ("last.pt", "best.pt", f"{UNFINISHED}/best.pt"):
                    remove_stale(Path(out_dir) / name)
            trainer = Trainer(Path(patches_dir), Path(valid_dir), Path(out_dir), Path(log_csv), scale, seed,
                              model_cfg, cfg, crop_border, device, ddp, degradation, lpips_backbone, discriminator,
                              summary_json and Path(summary_json))
            return trainer.run()
    finally:
        ddp.close()


def step_seconds(patches_dir: str | Path, valid_dir: str | Path, scratch_dir: str | Path, scale: int, seed: int,
                 model_cfg: ModelParams, cfg: TrainParams, steps: int = 20,
                 degradation: DegradationParams | None = None,
                 discriminator: DiscriminatorParams | None = None) -> tuple[float, float]:
    """(seconds per optimiser step, seconds per validation) of this configuration on this machine:
    the mean of ``steps`` real steps of a throwaway trainer in ``scratch_dir``, and one validation
    of it. How a time budget becomes a fixed number of iterations, so that the run itself stays
    deterministic and resumable."""
    device = pick_device(cfg.device)
    trainer = Trainer(Path(patches_dir), Path(valid_dir), Path(scratch_dir), Path(scratch_dir) / "log.csv", scale,
                      seed, model_cfg, cfg.model_copy(update={"epochs": 1, "steps_per_epoch": steps + TIMING_WARMUP,
                                                            "feature_stats_every": 0}), 0, device,
                      Distributed(device), degradation, discriminator=discriminator)
    try:
        step = trainer.seconds_per_step(steps)
        start = time.perf_counter()
        trainer.validate()
        return step, time.perf_counter() - start
    finally:
        trainer.board.close()


def to_memory_format(model: nn.Module, memory_format: torch.memory_format) -> None:
    """The parameters in ``memory_format``; the buffers (constants such as EDSR's mean) stay in
    the default layout: DDP's broadcast of buffers refuses a channels_last (1, C, 1, 1) tensor
    ("some elements ... refer to a single memory location"), and a constant's layout costs nothing."""
    model.to(memory_format=memory_format)
    for module in model.modules():
        for name, buffer in module._buffers.items():
            if buffer is not None and buffer.dim() == 4:
                module._buffers[name] = buffer.clone(memory_format=torch.contiguous_format)


class Trainer:
    def __init__(self, patches_dir: Path, valid_dir: Path, out_dir: Path, log_csv: Path, scale: int, seed: int,
                 model_cfg: ModelParams, cfg: TrainParams, crop_border: int, device: torch.device,
                 ddp: Distributed, degradation: DegradationParams | None, lpips_backbone: str | None = None,
                 discriminator: DiscriminatorParams | None = None, summary_json: Path | None = None):
        risky = lr_warning(cfg.lr, model_cfg.sizes(), model_cfg.name)
        if risky and ddp.main:
            warnings.warn(risky, stacklevel=3)
        if model_cfg.unused() and ddp.main:
            warnings.warn(f"{', '.join(model_cfg.unused())}: not taken by model.name={model_cfg.name}"
                          + ("; its sizes are model.preset and model.kwargs" if model_cfg.from_spandrel else ""),
                          stacklevel=3)
        if cfg.batch_size % ddp.world:
            raise SrpipeError(f"train.batch_size={cfg.batch_size} is not divisible by the {ddp.world} processes")
        torch.set_num_threads(cfg.threads or max(1, available_cores() // ddp.world))
        self.cfg, self.scale, self.seed, self.device, self.ddp = cfg, scale, seed, device, ddp
        self.out_dir, self.log_csv, self.crop_border = out_dir, log_csv, crop_border
        self.last, self.running_best, self.summary_json = out_dir / "last.pt", out_dir / UNFINISHED / "best.pt", summary_json
        self._set_up_data(patches_dir, valid_dir, degradation)
        self.arch = model_arch(model_cfg, scale)
        self.dtype = autocast_dtype(cfg.amp, device)
        self.loss = objective(cfg, self.device)
        self.disc_cfg = (discriminator or DiscriminatorParams()) if cfg.gan_weight else None
        self.val_metrics = self._val_metrics(lpips_backbone) if ddp.main else None  # only the main process validates
        self.fingerprint = self._fingerprint()
        state, message = self._resumable()
        if message and ddp.main:
            tqdm.write(message)
        self._set_up_model(init_from=None if state else cfg.init_from)
        self.progress = Progress()
        if state is not None:
            self._resume(state)
        self.loss_floor = min((row["loss"] for row in self.progress.history), default=math.inf)
        self.net = self._wrap(self.model)
        self.board = Board(out_dir / "tb", ddp.main, self.progress.step, cfg.feature_stats_every)

    # ------------------------------------------------------------ set-up

    def _resumable(self) -> tuple[dict | None, str]:
        """The state to resume from (None: start fresh, and forget an unfinished run's best), and what to say."""
        state, message = resumable(self.last, self.fingerprint, self.total_steps)
        best_epoch = state and state.get("progress", {}).get("best_epoch", 0)
        if best_epoch and not self.running_best.is_file():
            state, message = None, (f"not resuming from {self.last}: its best epoch's weights ({self.running_best}) "
                                    "are gone; starting fresh")
        if state is None and self.ddp.main:
            shutil.rmtree(self.running_best.parent, ignore_errors=True)
        return state, message

    def _set_up_data(self, patches_dir: Path, valid_dir: Path, degradation: DegradationParams | None) -> None:
        cfg = self.cfg
        self.store = ImageStore(patches_dir)
        if self.store.scale != self.scale:
            raise SrpipeError(f"the image store in {patches_dir} is for x{self.store.scale}, params say "
                              f"scale={self.scale}; run extract-patches again")
        self.crop = cfg.patch_size or 48 * self.scale
        self.steps_per_epoch = cfg.steps_per_epoch or epoch_steps(self.store, self.crop,
                                                                  cfg.batch_size * cfg.grad_accum)
        self.total_steps = cfg.epochs * self.steps_per_epoch
        self.valid = prepared_pairs(valid_dir, self.scale, cfg.val_images) if self.ddp.main else []
        self.on_the_fly = degradation if degradation is not None and degradation.on_the_fly else None
        degrade = CropDegrader(self.on_the_fly, self.scale) if self.on_the_fly else None
        self.dataset = CropDataset(self.store, self.crop, self.steps_per_epoch * cfg.grad_accum * cfg.batch_size,
                                   self.seed, degrade=degrade, texture=cfg.texture_sampling)

    def _fingerprint(self) -> dict:
        cfg = self.cfg
        on_the_fly = self.on_the_fly.model_dump() if self.on_the_fly else None
        init = {"init_sha256": file_sha256(cfg.init_from)} if cfg.init_from else {}
        gan = {"discriminator": self.disc_cfg.model_dump()} if self.disc_cfg else {}
        return run_fingerprint(self.arch, cfg, self.seed, self.store.fingerprint(),
                               precision="bf16" if self.dtype else "fp32", on_the_fly=on_the_fly, **init, **gan)

    def _val_metrics(self, lpips_backbone: str | None) -> dict | None:
        """LPIPS (AlexNet) and DISTS (VGG16) in every validation when the perceptual track is on
        (a perceptual or GAN loss, or best.pt picked by LPIPS); None otherwise (PSNR/SSIM only)."""
        cfg = self.cfg
        if not (cfg.perceptual_weight or cfg.gan_weight or cfg.best_metric == "lpips"):
            return None
        return perceptual_scorers(True, True, lpips_backbone, cfg.vgg16_backbone, str(self.device))

    def _set_up_model(self, init_from: str | None) -> None:
        """The model (from ``init_from``'s matching tensors on a fresh start), optimiser, schedule, EMA."""
        cfg = self.cfg
        torch.manual_seed(self.seed)
        self.model = build_model(self.arch["name"], **self.arch["kwargs"])
        if cfg.zero_init_residual and not zero_init_residual(self.model):
            raise SrpipeError(f"train.zero_init_residual: model.name={self.arch['name']} has no EDSR/RCAN residual "
                              "blocks to start as the identity; set it to false")
        self.model_stats = {"params": count_parameters(self.model),
                            "macs_per_output_pixel": macs_per_output_pixel(self.model)}
        if init_from:
            loaded, skipped = load_matching(self.model, init_from)
            self.model_stats.update(init_loaded=len(loaded), init_skipped=len(skipped))
            if self.ddp.main:
                tqdm.write(f"init_from {init_from}: loaded {len(loaded)} of {len(loaded) + len(skipped)} tensors"
                           + (f"; initialised fresh (name or shape differs): {', '.join(skipped)}" if skipped else ""))
        self.model.to(self.device)
        self.memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        to_memory_format(self.model, self.memory_format)
        # fused: one kernel for all tensors (0.8 ms a step for the recipe on a CPU, against 3.1 one by one;
        # benchmarks/step_parts.py)
        trained = [p for p in self.model.parameters() if p.requires_grad]  # not SPAN's derived convolutions
        self.optimizer = torch.optim.Adam(trained, lr=cfg.lr, betas=cfg.betas,
                                          fused=self.device.type in FUSED_ADAM)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(cfg, self.steps_per_epoch))
        self.ema = None
        if cfg.ema:
            ema_fn = torch.optim.swa_utils.get_ema_multi_avg_fn(cfg.ema)
            self.ema = torch.optim.swa_utils.AveragedModel(self.model, multi_avg_fn=ema_fn)
        self.adversary = None
        if self.disc_cfg:  # built after the generator, so that its initial weights follow from the seed too
            disc_lr = lr_lambda(cfg, self.steps_per_epoch)
            self.adversary = Adversary(self.disc_cfg, cfg.gan_weight, disc_lr, self.crop, self.device,
                                       self.ddp.enabled, self.memory_format, self.device.type in FUSED_ADAM)

    def _wrap(self, model: nn.Module) -> nn.Module:
        net = torch.compile(model) if self.cfg.compile else model
        if self.ddp.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            net = nn.parallel.DistributedDataParallel(net, device_ids=ids)
        return net

    def _resume(self, state: dict) -> None:
        self.model.load_state_dict(state["state_dict"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        if self.adversary is not None:
            self.adversary.load_state_dict(state["discriminator"])
        torch.set_rng_state(state["rng"]["torch"])
        self.progress = Progress(**state["progress"])

    # ------------------------------------------------------------ the loop

    def batches(self):
        """The run's micro-batches from the step reached on: the same crops whether or not it resumed."""
        cfg = self.cfg
        sampler = RunSampler(self.progress.step, self.total_steps, cfg.batch_size, cfg.grad_accum, self.ddp.rank,
                             self.ddp.world)
        workers = loader_workers(cfg.workers, self.device, self.ddp.world)
        return iter(make_loader(self.dataset, sampler, workers, self.device.type == "cuda"))

    def seconds_per_step(self, steps: int, skip: int = TIMING_WARMUP) -> float:
        """The mean wall time of an optimiser step, over ``steps`` steps after ``skip`` warm-up
        steps: the rate a time budget is turned into iterations with. It trains this trainer's
        weights (without saving them), so measure on a throwaway one."""
        batches, times = self.batches(), []
        for _ in range(skip + steps):
            tick = time.perf_counter()
            self.step(batches)
            times.append(time.perf_counter() - tick)
        return float(np.mean(times[skip:]))

    def run(self) -> dict | None:
        cfg, p = self.cfg, self.progress
        batches = self.batches()
        bar = progress(total=self.total_steps, initial=p.step, unit="it", desc="train",
                       disable=None if self.ddp.main else True)
        started, tick = time.perf_counter(), time.perf_counter()
        while p.step < self.total_steps:
            loss, grad_norm = self.step(batches)
            p.step += 1
            p.epoch_losses.append(loss)
            if p.step == min(EARLY_STEPS, self.steps_per_epoch):
                p.early_loss = float(np.mean(p.epoch_losses))
            p.epoch_grad_norms.append(grad_norm)
            for name, value in self.step_terms.items():
                p.epoch_terms.setdefault(name, []).append(value)
            rate = cfg.batch_size * cfg.grad_accum / max(1e-9, time.perf_counter() - tick)
            p.seconds += time.perf_counter() - tick
            tick = time.perf_counter()
            lr = self.scheduler.get_last_lr()[0]
            bar.update(1)
            bar.set_postfix(epoch=self.epoch, loss=f"{loss:.4f}", lr=f"{lr:.2e}", patches_s=f"{rate:.0f}")
            terms = {f"train/{name}": value for name, value in self.step_terms.items()}
            self.board.scalars(p.step, {"train/loss": loss, "train/lr": lr, "train/patches_per_s": rate,
                                        "train/grad_norm": grad_norm, **terms})
            if p.step % self.steps_per_epoch == 0:
                self.end_epoch()
            elif cfg.save_every and p.step % cfg.save_every == 0 and self.ddp.main:
                self.save_last()
        bar.close()
        self.board.close()
        if not self.ddp.main:
            return None
        summary = self.summary(time.perf_counter() - started)
        self.publish(summary)
        shutil.rmtree(self.running_best.parent, ignore_errors=True)
        return summary

    @property
    def epoch(self) -> int:
        """The epoch the next step belongs to (1-based)."""
        return self.progress.step // self.steps_per_epoch + 1

    def step(self, batches) -> tuple[float, float]:
        """One optimiser step over ``grad_accum`` micro-batches; returns the mean loss of all
        processes and the gradients' global norm before clipping."""
        cfg = self.cfg
        self.optimizer.zero_grad(set_to_none=True)
        step_loss, terms, pairs = 0.0, {}, []
        for micro in range(cfg.grad_accum):
            lr_batch, hr_batch = (t.to(self.device, non_blocking=True) for t in next(batches))
            lr_batch = lr_batch.contiguous(memory_format=self.memory_format)  # batches come channels-last
            if micro == 0 and self.board.wants_features(self.progress.step):
                with self._autocast():
                    self.board.record_features(self.model, lr_batch)
            sync = micro == cfg.grad_accum - 1 or not self.ddp.enabled
            with (contextlib.nullcontext() if sync else self.net.no_sync()), self._autocast():
                sr = self.net(lr_batch).float()
                loss = self.loss(sr, hr_batch)
                micro_terms = {f"loss_{name}": value for name, value in getattr(self.loss, "terms", {}).items()}
                if self.adversary is not None:
                    gan = self.adversary.generator_loss(sr)
                    loss, micro_terms["loss_gan"] = loss + gan, float(gan.detach())
                    pairs.append((hr_batch, sr.detach()))
                loss = loss / cfg.grad_accum
            loss.backward()
            step_loss += loss.item()
            for name, value in micro_terms.items():  # the weighted terms of a composite loss
                terms[name] = terms.get(name, 0.0) + value / cfg.grad_accum
        step_loss = self.ddp.mean(step_loss)
        self.step_terms = {name: self.ddp.mean(value) for name, value in terms.items()}
        if not math.isfinite(step_loss):
            self.stop(f"non-finite loss ({step_loss}) at step {self.progress.step} (epoch {self.epoch}); the last good "
                      f"state is kept in {self.last}", self.epoch)
        grad_norm = self._clip_gradients()
        self.optimizer.step()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        if self.adversary is not None:
            d_terms = self.adversary.step(pairs, self._autocast)
            self.step_terms.update({name: self.ddp.mean(value) for name, value in d_terms.items()})
        return step_loss, grad_norm

    def _clip_gradients(self) -> float:
        """The gradients' global L2 norm; with ``train.grad_clip``, scale them down to that norm
        when above it, so that one outlier batch cannot throw the weights off (a loss spike)."""
        params = [p for p in self.model.parameters() if p.grad is not None]
        norm = torch.nn.utils.get_total_norm([p.grad for p in params])
        if self.cfg.grad_clip:
            torch.nn.utils.clip_grads_with_norm_(params, self.cfg.grad_clip, norm)
        return norm.item()

    def _autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    # ------------------------------------------------------------ validate and save

    def validate(self) -> dict[str, float]:
        """PSNR/SSIM on the validation images, tiled, on the training device, with the EMA weights if any."""
        scored = self.ema.module if self.ema is not None else self.model
        scored.eval()
        upscaler = tiled_upscaler(torch_upscaler(scored), self.scale, self.cfg.val_tile, VAL_OVERLAP)
        scores = summarize(evaluate(upscaler, self.valid, self.crop_border, perceptual=self.val_metrics,
                                    desc="validate"))
        self.model.train()
        return scores

    def end_epoch(self) -> None:
        """Log the epoch (validation, train_log.csv) and keep its weights, unless its loss diverged:
        then stop, with last.pt and best.pt as the last good epoch left them."""
        p = self.progress
        loss, p.epoch_losses = float(np.mean(p.epoch_losses)), []
        norms, p.epoch_grad_norms = np.asarray(p.epoch_grad_norms), []
        if self.adversary is not None and self.ddp.main and discriminator_wins(p.epoch_terms["loss_d_real"],
                                                                               p.epoch_terms["loss_d_fake"]):
            warnings.warn(f"epoch {p.step // self.steps_per_epoch}: the discriminator won outright (its loss stayed "
                          f"below {D_WINS} at every step), so the generator's adversarial term teaches it little; "
                          "lower discriminator.lr or discriminator.features, or raise train.gan_weight", stacklevel=2)
        terms, p.epoch_terms = {k: float(np.mean(v)) for k, v in p.epoch_terms.items()}, {}
        # epoch 1 has no epoch before it: the yardstick is the loss of its first steps
        floor = self.loss_floor if math.isfinite(self.loss_floor) else p.early_loss
        self.loss_floor = min(self.loss_floor, loss)
        diverged, epoch = loss > DIVERGED * floor, p.step // self.steps_per_epoch
        what = "the lowest so far" if epoch > 1 else f"that of the run's first {min(EARLY_STEPS, self.steps_per_epoch)} steps"
        if self.ddp.main:
            val = self._log_epoch(epoch, loss, norms, terms)
            if not diverged:
                self._keep_epoch(epoch, val)
        self.ddp.barrier()
        if diverged:
            self.stop(f"training diverged in epoch {epoch}: its mean loss {loss:.4g} is over {DIVERGED:g} times "
                      f"{what} ({floor:.4g})", epoch, f"lower train.lr (e.g. to {self.cfg.lr / 2:g}) or set "
                      "train.grad_clip, and run again")

    def _log_epoch(self, epoch: int, loss: float, grad_norms: np.ndarray, terms: dict[str, float]) -> dict[str, float]:
        """Validate, and record the epoch in the history, TensorBoard and the console: with the
        median gradient norm, the share of steps that ``train.grad_clip`` clipped, and the mean of
        each term of a composite loss (``loss_pixel``, ``loss_perceptual``)."""
        p = self.progress
        val = self.validate()
        clip = self.cfg.grad_clip
        row = {"epoch": epoch, "loss": loss, **{f"val_{k}": v for k, v in val.items()}, **terms,
               "lr": self.optimizer.param_groups[0]["lr"], "step": p.step, "minutes": round(p.seconds / 60, 4),
               "grad_norm": float(np.median(grad_norms)), "clipped": float(np.mean(grad_norms > clip)) if clip else 0.0}
        p.history.append(row)
        self.board.scalars(p.step, {f"val/{k}": v for k, v in val.items()})
        perceptual = "".join(f"  {name.upper()} {val[name]:.4f}" for name in ("lpips", "dists") if name in val)
        tqdm.write(f"epoch {epoch}: loss {loss:.4f}  val PSNR {val['psnr']:.3f} dB  SSIM {val['ssim']:.4f}{perceptual}")
        return val

    def _keep_epoch(self, epoch: int, val: dict[str, float]) -> None:
        """best.pt (if the best so far by ``train.best_metric``), the snapshot (if due) and last.pt."""
        p, psnr = self.progress, val["psnr"]
        scored = self.ema.module if self.ema is not None else self.model
        better = val["lpips"] < p.best_lpips if self.cfg.best_metric == "lpips" else psnr > p.best_psnr
        if better:
            p.best_psnr, p.best_lpips, p.best_epoch = psnr, val.get("lpips", math.inf), epoch
            scores = {"val_psnr": psnr, **({"val_lpips": val["lpips"]} if "lpips" in val else {})}
            save_checkpoint(self.running_best, scored, self.arch, epoch=epoch, **scores)
        if self.cfg.snapshot_every and epoch % self.cfg.snapshot_every == 0:
            save_checkpoint(self.out_dir / "snapshots" / f"epoch_{epoch:04d}.pt", scored, self.arch,
                            epoch=epoch, step=p.step, val_psnr=psnr)
        self.save_last()

    def save_last(self) -> None:
        p = self.progress
        save_checkpoint(
            self.last, self.model, self.arch, epoch=p.step // self.steps_per_epoch,
            optimizer=self.optimizer.state_dict(), scheduler=self.scheduler.state_dict(),
            ema=self.ema.state_dict() if self.ema is not None else None, rng={"torch": torch.get_rng_state()},
            discriminator=self.adversary.state_dict() if self.adversary is not None else None,
            fingerprint=self.fingerprint, progress=p.as_dict(),
        )

    def stop(self, why: str, epoch: int, fix: str = "") -> None:
        """End a run that went wrong: publish its good epochs' best with the log and a summary that
        says where it stopped (nothing, when no epoch was good), and raise ``why``."""
        p = self.progress
        if self.ddp.main and p.best_epoch:
            self.publish(self.summary(p.seconds) | {"stopped_in_epoch": epoch})
        kept = f"best.pt holds epoch {p.best_epoch}, the best before it" if p.best_epoch else "nothing was published"
        raise SrpipeError("; ".join(x for x in (why, kept, fix) if x))

    def publish(self, summary: dict) -> None:
        """The run's outputs, together (:func:`atomic_outputs`): best.pt, the per-epoch log and the
        summary replace the previous run's at once, or not at all."""
        if not self.running_best.is_file():
            raise SrpipeError(f"no epoch of the run had a finite validation score ({self.cfg.best_metric}), so there "
                              "is no best.pt; nothing was published: check the data and lower train.lr")
        outputs = [self.out_dir / "best.pt", self.log_csv, *([self.summary_json] if self.summary_json else [])]
        with atomic_outputs(*outputs, clean=True) as (best, log, *summary_tmp):
            try:
                os.link(self.running_best, best)
            except OSError:
                shutil.copyfile(self.running_best, best)
            pd.DataFrame(self.progress.history).to_csv(log, index=False)
            for path in summary_tmp:
                write_json(path, summary)

    def summary(self, seconds: float) -> dict:
        p = self.progress
        lpips = {"best_val_lpips": p.best_lpips} if self.cfg.best_metric == "lpips" else {}
        return {"best_val_psnr": p.best_psnr, **lpips, "best_epoch": p.best_epoch, "final_loss": p.history[-1]["loss"],
                **self.model_stats, "steps": p.step, "train_seconds": round(seconds, 1),
                "precision": "bf16" if self.dtype else "fp32"}
