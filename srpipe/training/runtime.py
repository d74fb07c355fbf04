"""Where training runs and what it reports: device, processes, TensorBoard, feature statistics."""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import Iterator

import torch
import torch.distributed as dist
from torch import nn

from ..io import disk_full_error


def loader_workers(workers: int | None, device: torch.device, world: int) -> int:
    """DataLoader workers: as given, else none on the CPU (the step is the bottleneck there and
    workers would take its cores) and up to 8 per process on a GPU."""
    if workers is not None:
        return workers
    return 0 if device.type == "cpu" else max(1, min(8, (os.cpu_count() or 2) // world - 1))


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


def feature_stats(model: nn.Module, batch: torch.Tensor) -> dict[str, tuple[float, float]]:
    """The mean and std of every conv layer's output on ``batch``, from a forward pass of its own
    (no gradients; run it inside the training step's autocast). The hooks live only during that
    pass, so the training forward, compiled by ``train.compile`` or not, never carries them: a
    compiled graph would break at every hooked layer and recompile whenever they were armed."""
    stats: dict[str, tuple[float, float]] = {}

    def hook(name: str):
        def record(module, inputs, output):
            out = output.detach().float()
            stats[name] = (out.mean().item(), out.std().item())

        return record

    handles = [m.register_forward_hook(hook(name)) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            model(batch)
    finally:
        for h in handles:
            h.remove()
    return stats


class Board:
    """TensorBoard scalars of the main process (``None`` writer elsewhere); a fresh run clears
    old events, a resumed one drops those after the step it resumes from."""

    def __init__(self, folder: Path, main: bool, start_step: int, stats_every: int):
        self.writer, self.folder = None, folder
        self.stats: dict[str, tuple[float, float]] = {}
        self.every = stats_every
        if not main:
            return
        if start_step == 0 and folder.exists():
            import shutil

            shutil.rmtree(folder)
        from torch.utils.tensorboard import SummaryWriter

        quiet_writer_thread()
        with self._writing():
            self.writer = SummaryWriter(str(folder), purge_step=start_step + 1)  # the first step it logs

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """A failed write of the event file (its thread's, raised again here) as one line; a full disk names the folder."""
        try:
            yield
        except Exception as exc:
            full = disk_full_error(exc, self.folder)
            if full is None:
                raise
            raise full from None

    def wants_features(self, step: int) -> bool:
        """Whether the step that starts at ``step`` records the feature statistics."""
        return self.writer is not None and bool(self.every) and step % self.every == 0

    def record_features(self, model: nn.Module, batch: torch.Tensor) -> None:
        self.stats = feature_stats(model, batch)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if self.writer is None:
            return
        with self._writing():
            for tag, value in values.items():
                self.writer.add_scalar(tag, value, step)
            for name, (mean, std) in self.stats.items():
                self.writer.add_scalar(f"features_mean/{name}", mean, step)
                self.writer.add_scalar(f"features_std/{name}", std, step)
        self.stats = {}

    def close(self) -> None:
        if self.writer is not None:
            with self._writing():
                self.writer.close()


def quiet_writer_thread() -> None:
    """Keep TensorBoard's writer thread from printing a traceback when a write fails: the writer
    raises the same exception again in the main thread, where :class:`Board` reports it in one line."""
    hook = threading.excepthook
    if getattr(hook, "srpipe", False):
        return

    def excepthook(args) -> None:
        if type(args.thread).__name__ != "_AsyncWriterThread":
            hook(args)

    excepthook.srpipe = True  # type: ignore[attr-defined]
    threading.excepthook = excepthook
