"""Weights every tool loads: a model as the bare state dict that spandrel (chaiNNer, ComfyUI,
AUTOMATIC1111, InvokeAI) opens and runs as srpipe does.

spandrel's architectures (:mod:`.zoo`) already have spandrel's tensor names: their state dict
is written as it is, unless the model computes something spandrel's architecture does not
(srpipe's bicubic skip, or hyperparameters spandrel cannot read from the weights). srpipe's RCAN
is written in its authors' layout, which spandrel knows, with the mean shift as the MeanShift
convolutions of the original code. spandrel has no EDSR and no RLFN: for them the ONNX file
(``srpipe export-onnx``) is the portable form.

Nothing is written on trust: :func:`write_portable` opens the written file with spandrel itself
and compares its output with srpipe's on the same input; a difference over :data:`TOLERANCE`
removes the file and stops.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..io import SrpipeError, atomic_path
from .convert import DIV2K_RGB_MEAN

TOLERANCE = 1e-5  # fp32, on the [0, 1] scale
CHECK_SIZE = (32, 40)  # LR input of the check: a multiple of 8 and over 16, as every architecture takes
SUFFIXES = (".safetensors", ".pth")


def _rcan_shift(kwargs: dict[str, Any]) -> bool:
    """Whether srpipe's RCAN shifts as spandrel's does (DIV2K's mean, range 255: ``norm``) or not at
    all; any other shift, residual scaling or a bicubic skip is refused."""
    if kwargs.get("global_skip", "bicubic") != "none":
        raise SrpipeError("this RCAN adds srpipe's bicubic skip, which the original RCAN (spandrel's) does not "
                          "have; the ONNX file (srpipe export-onnx) is its portable form")
    if kwargs.get("res_scale", 1.0) != 1.0:
        raise SrpipeError(f"this RCAN scales its residuals by {kwargs['res_scale']}, which the original RCAN "
                          "(spandrel's) does not; the ONNX file (srpipe export-onnx) is its portable form")
    mean, span = kwargs.get("rgb_mean"), kwargs.get("img_range", 1.0)
    if mean is None and span == 1.0:
        return False
    if mean is not None and span == 255.0 and all(abs(a - b) < 1e-9 for a, b in zip(mean, DIV2K_RGB_MEAN)):
        return True
    raise SrpipeError(f"this RCAN shifts its input by rgb_mean {mean} and img_range {span}; the original RCAN "
                      "(spandrel's) shifts by DIV2K's mean and 255 or not at all; the ONNX file is its portable form")


def rcan_original(state: dict[str, torch.Tensor], kwargs: dict[str, Any]) -> dict[str, torch.Tensor]:
    """srpipe's RCAN weights in the layout of RCAN's authors (``head.0``, ``conv_du``, MeanShift)."""
    norm = _rcan_shift(kwargs)
    out = {}
    for key, value in state.items():
        key = key.replace("head.", "head.0.", 1) if key.startswith("head.") else key
        key = key.replace(".body.3.body.0.", ".body.3.conv_du.0.").replace(".body.3.body.2.", ".body.3.conv_du.2.")
        out[key] = value
    if norm:
        mean = torch.tensor(DIV2K_RGB_MEAN) * 255.0
        for name, sign in (("sub_mean", -1.0), ("add_mean", 1.0)):
            out[f"{name}.weight"] = torch.eye(3).view(3, 3, 1, 1)
            out[f"{name}.bias"] = sign * mean
    return out


def portable_state_dict(model: nn.Module, arch: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The bare state dict spandrel runs as srpipe runs ``model``, or SrpipeError saying why none is."""
    name = arch["name"]
    if name in ("edsr", "rlfn"):
        raise SrpipeError(f"spandrel has no {name.upper()} architecture, so no other tool would know these weights; "
                          "the ONNX file (srpipe export-onnx) is the portable form")
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    if name == "rcan":
        return rcan_original(state, arch["kwargs"])
    if getattr(model, "not_portable", None):
        raise SrpipeError(f"spandrel would run this {name} differently: {'; '.join(model.not_portable)}; the ONNX "
                          "file (srpipe export-onnx) is its portable form (or train with model.global_skip=none)")
    model.deploy()  # SPAN: the fused convolution as the current weights give it
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def spandrel_difference(path: Path, model: nn.Module) -> float:
    """Largest |spandrel - srpipe| over the outputs of the model file at ``path``, opened by
    spandrel's own loader, and ``model`` on one random input, both clamped to [0, 1] as spandrel's
    call does."""
    from spandrel import ModelLoader

    descriptor = ModelLoader().load_from_file(path).eval()
    x = torch.rand(1, 3, *CHECK_SIZE, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        theirs = descriptor(x.clone())
        ours = model.eval()(x.clone()).clamp(0, 1)
    if theirs.shape != ours.shape:
        return float("inf")
    return float((theirs - ours).abs().max())


def write_portable(model: nn.Module, arch: dict[str, Any], out: str | Path) -> dict[str, Any]:
    """Write ``model``'s portable state dict to ``out`` (.safetensors, or .pth: a bare state dict),
    then check it with spandrel; returns what spandrel found and the difference."""
    out = Path(out)
    if out.suffix.lower() not in SUFFIXES:
        raise SrpipeError(f"{out}: the weights go to a .safetensors or .pth file")
    state = portable_state_dict(model, arch)
    try:
        with atomic_path(out) as tmp:
            if out.suffix.lower() == ".safetensors":
                from safetensors.torch import save_file

                save_file(state, str(tmp))
            else:
                torch.save(state, tmp)
            difference = spandrel_difference(tmp, model)  # the temporary keeps the suffix spandrel reads by
            if not difference <= TOLERANCE:
                raise SrpipeError(f"spandrel runs the written weights differently from srpipe (max difference "
                                  f"{difference:.2e} over {TOLERANCE:g}); nothing was written to {out}")
    except OSError as exc:
        raise SrpipeError(f"cannot write {out}: {exc.strerror or exc}") from None
    return {"file": str(out), "max_abs_diff_spandrel": difference, "tensors": len(state)}
