"""Architecture registry and self-describing checkpoints.

srpipe's own architectures (EDSR, RCAN, RLFN) live beside this file; spandrel's are adapted in
:mod:`.zoo`. A checkpoint stores the architecture name and its keyword arguments beside the
weights, so evaluate, export-onnx and benchmark rebuild the model without params.yaml; it is read
only through :mod:`srpipe.modelfile`.
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
    """srpipe's own architecture ``name`` (edsr, rcan, rlfn) or spandrel's (:mod:`.zoo`)."""
    if name in ARCHITECTURES:
        return ARCHITECTURES[name](**kwargs)
    from .zoo import ZOO, build_zoo

    if name in ZOO:
        return build_zoo(name, **kwargs)
    raise SrpipeError(f"unknown model {name!r}; available: {', '.join([*ARCHITECTURES, *ZOO])}")


def instantiate(arch: dict[str, Any], state: dict[str, torch.Tensor], source: str | Path = "the checkpoint") -> nn.Module:
    """The model an ``arch`` record describes, with the weights ``state``, in eval mode. A model
    recorded as ``spandrel`` (an imported architecture srpipe does not train) is rebuilt by
    spandrel's detection from the weights themselves."""
    if not isinstance(arch, dict) or not isinstance(arch.get("kwargs"), dict) or "name" not in arch:
        raise SrpipeError(f"{source}: its architecture record is damaged ({arch!r})")
    if arch["name"] == "spandrel":
        from .zoo import from_state_dict

        return from_state_dict(dict(state))[0].eval()
    try:
        model = build_model(arch["name"], **arch["kwargs"])
        model.load_state_dict(state)
    except (TypeError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise SrpipeError(f"{source}: its weights do not fit the {arch['name']} it records ({first})") from None
    return model.eval()


def count_parameters(model: nn.Module) -> int:
    """The trained parameters (not derived ones, such as SPAN's re-parameterised convolutions)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def macs_per_output_pixel(model: nn.Module, lr_size: tuple[int, int] = (32, 32)) -> float:
    """Multiply-adds of one forward pass per output pixel (convolutions and matrix products), in
    eval mode: the form that is deployed (SPAN's one convolution where it trains three)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 3, *lr_size, device=next(model.parameters()).device)
    training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            out = model(x)
    finally:
        model.train(training)
    return counter.get_total_flops() / 2 / (out.shape[-2] * out.shape[-1])


def save_checkpoint(path: str | Path, model: nn.Module, arch: dict[str, Any], **extra: Any) -> None:
    """Atomically write ``{'arch': {'name', 'kwargs'}, 'state_dict', ...extra}``: tensors and plain
    values only, so that it loads with ``weights_only=True`` (and, for spandrel's architectures,
    in spandrel itself, which unwraps ``state_dict``)."""
    try:
        with atomic_path(path) as tmp:
            torch.save({"arch": arch, "state_dict": model.state_dict(), **extra}, tmp)
    except OSError as exc:
        raise SrpipeError(f"cannot write checkpoint {path}: {exc.strerror or exc}") from None
