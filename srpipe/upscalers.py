"""Things that turn an LR image into an SR image: a PyTorch model, an ONNX file, or bicubic.

Each upscaler maps an HxWx3 uint8 RGB array to an (sH)x(sW)x3 uint8 array, rounded, so every
engine is measured by the same protocol.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from .imresize import imresize
from .io import SrpipeError

Upscaler = Callable[[np.ndarray], np.ndarray]
ONNX_INPUT, ONNX_OUTPUT = "lr", "sr"
SCALE_KEY = "srpipe.scale"


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 RGB -> 1x3xHxW float in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float().div_(255.0)


def to_uint8(t: torch.Tensor) -> np.ndarray:
    """1x3xHxW float in [0, 1] -> HxWx3 uint8 RGB, rounded."""
    return t[0].clamp(0, 1).mul(255.0).round().byte().permute(1, 2, 0).cpu().numpy()


def torch_upscaler(model: nn.Module) -> Upscaler:
    device = next(model.parameters()).device

    @torch.inference_mode()
    def run(lr: np.ndarray) -> np.ndarray:
        return to_uint8(model(to_tensor(lr).to(device)))

    return run


def ort_session(path: str | Path, threads: int | None = None):
    """An ONNX Runtime CPU session; ``threads`` sets the intra-op thread count."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for unreadable files
        raise SrpipeError(f"cannot load ONNX model {path}: {exc}") from None


def onnx_scale(session) -> int | None:
    value = session.get_modelmeta().custom_metadata_map.get(SCALE_KEY)
    return int(value) if value else None


def onnx_upscaler(session) -> Upscaler:
    def run(lr: np.ndarray) -> np.ndarray:
        out = session.run([ONNX_OUTPUT], {ONNX_INPUT: to_tensor(lr).numpy()})[0]
        return to_uint8(torch.from_numpy(out))

    return run


def bicubic_upscaler(scale: int) -> Upscaler:
    return lambda lr: imresize(lr, scale)


def load_upscaler(
    checkpoint: str | Path | None = None,
    onnx: str | Path | None = None,
    baseline: str | None = None,
    scale: int | None = None,
) -> tuple[Upscaler, int, str]:
    """(upscaler, its scale, a label) for exactly one of a checkpoint, an ONNX file or a baseline.

    A checkpoint knows its scale; an ONNX file exported by srpipe does too; ``scale`` is used
    for the baseline and for ONNX files without srpipe's metadata.
    """
    if checkpoint is not None:
        from .models import load_model

        model, _ = load_model(checkpoint)
        return torch_upscaler(model), model.scale, "model"
    if onnx is not None:
        session = ort_session(onnx)
        found = onnx_scale(session) or scale
        if found is None:
            raise SrpipeError(f"{onnx} does not record its scale; pass --scale")
        return onnx_upscaler(session), found, "onnx"
    if baseline == "bicubic":
        if scale is None:
            raise SrpipeError("the bicubic baseline needs a scale")
        return bicubic_upscaler(scale), scale, "bicubic"
    raise SrpipeError(f"unknown baseline {baseline!r}; available: bicubic")
