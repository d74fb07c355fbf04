"""export-onnx: an ONNX file with dynamic batch, height and width, checked against PyTorch."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .io import SrpipeError, atomic_path
from .upscalers import ONNX_INPUT, ONNX_OUTPUT, SCALE_KEY, ort_session, to_tensor


def export_onnx(model: nn.Module, path: str | Path, opset: int) -> None:
    """Write ``model`` (NCHW float input in [0, 1]) as ONNX with dynamic N, H, W; checked by onnx.checker."""
    import onnx

    dummy = torch.rand(1, 3, 32, 32)
    axes = {0: "batch", 2: "height", 3: "width"}
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(), (dummy,), str(tmp), input_names=[ONNX_INPUT], output_names=[ONNX_OUTPUT],
            dynamic_axes={ONNX_INPUT: axes, ONNX_OUTPUT: axes}, opset_version=opset, dynamo=False,
        )
        proto = onnx.load(str(tmp))
        onnx.helper.set_model_props(proto, {SCALE_KEY: str(model.scale)})
        onnx.save(proto, str(tmp))
        try:
            onnx.checker.check_model(str(tmp), full_check=True)
        except onnx.checker.ValidationError as exc:
            raise SrpipeError(f"exported ONNX model fails onnx.checker: {exc}") from None


def max_abs_difference(model: nn.Module, onnx_path: str | Path, images: list[np.ndarray]) -> float:
    """Largest |ONNX Runtime - PyTorch| over the outputs for ``images`` (HxWx3 uint8), on the [0, 1] scale."""
    session = ort_session(onnx_path)
    worst = 0.0
    with torch.inference_mode():
        for img in images:
            x = to_tensor(img)
            expected = model(x).numpy()
            got = session.run([ONNX_OUTPUT], {ONNX_INPUT: x.numpy()})[0]
            if got.shape != expected.shape:
                raise SrpipeError(f"ONNX output shape {got.shape} differs from PyTorch {expected.shape}")
            worst = max(worst, float(np.abs(got - expected).max()))
    return worst
