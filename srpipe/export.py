"""export-onnx: ONNX files with dynamic batch, height and width, checked against PyTorch.

``fp32`` is the exported graph; ``int8`` is ONNX Runtime static quantization (QDQ, per-channel
int8 weights, uint8 activations) calibrated on validation patches; ``fp16`` converts the
weights for GPU execution providers. Every file records the model's scale in its metadata.
Beside them, ``model.safetensors`` holds the weights as spandrel (chaiNNer, ComfyUI) loads them,
where it runs the architecture as srpipe does (:mod:`srpipe.models.portable`).
"""

from __future__ import annotations

import contextlib
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .io import SrpipeError, atomic_path
from .upscalers import ONNX_INPUT, ONNX_OUTPUT, SCALE_KEY, ort_session, to_tensor

PRECISIONS = ("fp32", "int8", "fp16")
# The traced input: a size that is no multiple of a window or a pooling factor, so that the trace
# records the padding arithmetic of window transformers (SwinIR, OmniSR) instead of skipping it.
TRACE_SIZE = (35, 37)
PARITY = 2e-3  # largest |ONNX Runtime - PyTorch| accepted for fp32 on the [0, 1] scale (half a grey level)
WEIGHTS_FILE = "model.safetensors"


def onnx_path(out_dir: str | Path, precision: str) -> Path:
    """``model.onnx`` for fp32, ``model.<precision>.onnx`` for the others."""
    return Path(out_dir) / ("model.onnx" if precision == "fp32" else f"model.{precision}.onnx")


def _check(path: Path) -> None:
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise SrpipeError(f"exported ONNX model fails onnx.checker: {exc}") from None


def _set_scale(path: Path, scale: int) -> None:
    import onnx

    proto = onnx.load(str(path))
    onnx.helper.set_model_props(proto, {SCALE_KEY: str(scale)})
    onnx.save(proto, str(path))


def export_onnx(model: nn.Module, path: str | Path, opset: int, scale: int) -> None:
    """Write ``model`` (NCHW float input in [0, 1], upscaling by ``scale``) as ONNX with dynamic N,
    H, W; checked by onnx.checker."""
    dummy = torch.rand(1, 3, *TRACE_SIZE)
    axes = {0: "batch", 2: "height", 3: "width"}
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(), (dummy,), str(tmp), input_names=[ONNX_INPUT], output_names=[ONNX_OUTPUT],
            dynamic_axes={ONNX_INPUT: axes, ONNX_OUTPUT: axes}, opset_version=opset, dynamo=False,
        )
        _set_scale(tmp, scale)
        _check(tmp)


def calibration_patches(images: list[np.ndarray], count: int, size: int, seed: int = 0) -> list[np.ndarray]:
    """``count`` random ``size``-pixel crops (NCHW float) of LR images, spread evenly over the images."""
    rng = np.random.default_rng(seed)
    patches = []
    for i in range(count):
        img = images[i % len(images)]
        h, w = img.shape[:2]
        ph, pw = min(size, h), min(size, w)
        y, x = rng.integers(0, h - ph + 1), rng.integers(0, w - pw + 1)
        patches.append(to_tensor(img[y : y + ph, x : x + pw]).numpy())
    return patches


def quantize_int8(fp32_path: str | Path, path: str | Path, patches: list[np.ndarray], reduce_range: bool = True) -> None:
    """ONNX Runtime static quantization: QDQ format, per-channel int8 weights, uint8 activations
    calibrated (min/max) on ``patches``.

    ``reduce_range`` keeps the weights to 7 bits (-64..64): ONNX Runtime's uint8 x int8 kernel on
    x86 CPUs without VNNI (AVX2, AVX-512 before VNNI) adds pairs of products in int16, which
    full-range weights overflow (2 x 255 x 127 > 32767); 7-bit weights give the same integers on
    every CPU. Full range is for models that only run where VNNI or ARM kernels do the arithmetic.
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter({ONNX_INPUT: p} for p in patches)

        def get_next(self):
            return next(self.feeds, None)

    path = Path(path)
    with atomic_path(path) as tmp, tempfile.TemporaryDirectory(dir=path.parent) as work, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pre = Path(work) / "pre.onnx"
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        with quiet_root_logger():  # the quantizer logs notes on 1-D weights at WARNING, one line each
            quantize_static(str(pre), str(tmp), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, reduce_range=reduce_range,
                            nodes_to_exclude=weight_only_nodes(pre))
        _check(tmp)


def weight_only_nodes(path: str | Path) -> list[str]:
    """The nodes whose data (first input) is a weight, not the image: a weight reshaped to the
    image's shape inside the graph, as OmniSR's shared LayerNorm is. Nothing to calibrate there, and
    ONNX Runtime's quantizer loops forever on a Reshape of a weight whose quantization it tries to
    share with that weight."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    live = {i.name for i in graph.input}  # tensors computed from the image
    excluded = []
    for node in graph.node:  # topologically sorted
        if node.input and node.input[0] and node.input[0] not in live and node.name:
            excluded.append(node.name)
        if any(name in live for name in node.input):
            live.update(node.output)
    return excluded


@contextlib.contextmanager
def quiet_root_logger():
    import logging

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def convert_fp16(fp32_path: str | Path, path: str | Path) -> None:
    """fp16 weights and arithmetic (for GPU providers), fp32 input and output."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        half = OnnxModel(convert_float_to_float16(onnx.load(str(fp32_path)), keep_io_types=True))
        half.topological_sort()  # the converter appends its input casts after their users
        onnx.save(half.model, str(tmp))
        _check(tmp)


def max_abs_difference(model: nn.Module, path: str | Path, images: list[np.ndarray]) -> float:
    """Largest |ONNX Runtime - PyTorch| over the outputs for ``images`` (HxWx3 uint8), on the [0, 1] scale."""
    session = ort_session(path)
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


def export_precisions(
    model: nn.Module,
    scale: int,
    out_dir: str | Path,
    precisions: list[str],
    opset: int,
    pairs: list[tuple[str, np.ndarray, np.ndarray]],
    check_images: int,
    calibration: int,
    calibration_size: int,
    crop_border: int,
    y_channel: bool = True,
    perceptual=None,
    int8_reduce_range: bool = True,
    arch: dict | None = None,
) -> dict:
    """Export every precision, check fp32 against PyTorch, and score each file on ``pairs``
    (validation HR/LR) by the evaluation protocol, with its difference from fp32; with ``arch``
    (the model's srpipe record) also its weights for spandrel, where spandrel runs it."""
    fp32 = onnx_path(out_dir, "fp32")
    export_onnx(model, fp32, opset, scale)
    lr_images = [lr for _, _, lr in pairs]
    result: dict = {"opset": opset, "max_abs_diff": max_abs_difference(model, fp32, lr_images[:check_images])}
    if not result["max_abs_diff"] <= PARITY:
        fp32.unlink()
        raise SrpipeError(f"ONNX Runtime's output differs from PyTorch's by {result['max_abs_diff']:.2e} (over "
                          f"{PARITY:g}) on the validation images: the exported graph does not compute this model "
                          "at their size; nothing was exported")
    if "int8" in precisions:
        patches = calibration_patches(lr_images, calibration, calibration_size)
        quantize_int8(fp32, onnx_path(out_dir, "int8"), patches, int8_reduce_range)
    if "fp16" in precisions:
        convert_fp16(fp32, onnx_path(out_dir, "fp16"))
    for precision in precisions:
        result[precision] = _scored(onnx_path(out_dir, precision), pairs, crop_border, y_channel, perceptual,
                                    result.get("fp32"))
    if arch is not None:
        result["safetensors"] = export_weights(model, arch, Path(out_dir) / WEIGHTS_FILE)
    return result


def _scored(path: Path, pairs, crop_border: int, y_channel: bool, perceptual, fp32: dict | None) -> dict:
    """One exported file's scores by the evaluation protocol, with their difference from fp32's."""
    from .evaluate import evaluate, summarize
    from .upscalers import onnx_upscaler

    scores = summarize(evaluate(onnx_upscaler(ort_session(path)), pairs, crop_border, y_channel, perceptual,
                                desc=path.name))
    if fp32 is not None:
        scores.update({f"delta_{k}": v - fp32[k] for k, v in list(scores.items())})
    return {**scores, "size_mb": round(path.stat().st_size / 2**20, 3)}


def export_weights(model: nn.Module, arch: dict, path: Path) -> dict:
    """``model.safetensors`` for spandrel, or why there is none (a stale one is removed)."""
    from .models.portable import write_portable

    try:
        return {**write_portable(model, arch, path), "file": path.name}
    except SrpipeError as exc:
        path.unlink(missing_ok=True)
        return {"skipped": str(exc)}
