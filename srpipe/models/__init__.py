"""Architecture registry and self-describing checkpoints.

A checkpoint stores the architecture name and its keyword arguments beside the weights, so
evaluate, export-onnx and benchmark rebuild the model without params.yaml.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..io import SrpipeError, atomic_path
from .common import zero_init_residual
from .edsr import EDSR
from .rcan import RCAN
from .rlfn import RLFN

ARCHITECTURES: dict[str, type[nn.Module]] = {"edsr": EDSR, "rcan": RCAN, "rlfn": RLFN}


def build_model(name: str, **kwargs: Any) -> nn.Module:
    try:
        cls = ARCHITECTURES[name]
    except KeyError:
        raise SrpipeError(f"unknown model {name!r}; available: {', '.join(ARCHITECTURES)}") from None
    return cls(**kwargs)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def macs_per_output_pixel(model: nn.Module, lr_size: tuple[int, int] = (32, 32)) -> float:
    """Multiply-adds of one forward pass per output pixel (convolutions and matrix products)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 3, *lr_size)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        out = model(x)
    return counter.get_total_flops() / 2 / (out.shape[-2] * out.shape[-1])


def save_checkpoint(path: str | Path, model: nn.Module, arch: dict[str, Any], **extra: Any) -> None:
    """Atomically write ``{'arch': {'name', 'kwargs'}, 'state_dict', ...extra}``."""
    try:
        with atomic_path(path) as tmp:
            torch.save({"arch": arch, "state_dict": model.state_dict(), **extra}, tmp)
    except OSError as exc:
        raise SrpipeError(f"cannot write checkpoint {path}: {exc.strerror or exc}") from None


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    hint = "; for an ONNX model use --onnx (evaluate) or --model (upscale)" if path.suffix.lower() == ".onnx" else \
        "; give a checkpoint written by srpipe train or srpipe import-weights"
    if not path.is_file():
        raise SrpipeError(f"checkpoint not found: {path}{hint}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001: torch.load raises pickle's, zipfile's and its own errors
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not a PyTorch file, or a damaged one"
        raise SrpipeError(f"cannot load checkpoint {path} ({why}){hint}") from None
    if not isinstance(ckpt, dict) or "arch" not in ckpt:
        raise SrpipeError(f"{path} is not an srpipe checkpoint (no architecture recorded){hint}")
    return ckpt


def load_model(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model recorded in a checkpoint, in eval mode, with its weights."""
    ckpt = load_checkpoint(path)
    model = build_model(ckpt["arch"]["name"], **ckpt["arch"]["kwargs"])
    model.load_state_dict(ckpt["state_dict"])
    return model.eval(), ckpt
