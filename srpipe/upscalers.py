"""Things that turn an LR image into an SR image: a PyTorch model, an ONNX file, or bicubic.

Each upscaler maps an HxWx3 uint8 RGB array to an (sH)x(sW)x3 uint8 array, rounded, so every
engine is measured by the same protocol. Underneath, a model is a *forward*: an NCHW float32
array in [0, 1] to the model's NCHW float32 output, which :func:`self_ensemble` can average over
the eight flips and rotations of the input (EDSR+) before the result is rounded.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from .imresize import imresize
from .io import SrpipeError

Upscaler = Callable[[np.ndarray], np.ndarray]
Forward = Callable[[np.ndarray], np.ndarray]
ONNX_INPUT, ONNX_OUTPUT = "lr", "sr"  # the names srpipe exports; other models' come from onnx_io
SCALE_KEY = "srpipe.scale"


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 RGB -> 1x3xHxW float in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float().div_(255.0)


def to_uint8(t: torch.Tensor) -> np.ndarray:
    """1x3xHxW float in [0, 1] -> HxWx3 uint8 RGB, rounded."""
    return t[0].clamp(0, 1).mul(255.0).round().byte().permute(1, 2, 0).cpu().numpy()


def torch_forward(model: nn.Module) -> Forward:
    """The model on its own device and in its own dtype (fp32, or fp16/bf16 on CUDA); float32 out."""
    first = next(model.parameters())

    @torch.inference_mode()
    def run(x: np.ndarray) -> np.ndarray:
        return model(torch.from_numpy(x).to(first.device, first.dtype)).float().cpu().numpy()

    return run


def self_ensemble(forward: Forward) -> Forward:
    """The x8 self-ensemble of EDSR+ (Lim et al. 2017): ``forward`` on the input under each of the
    8 flips and quarter turns, each output turned back, the 8 averaged. The 8 values of a pixel are
    sorted before they are summed, so the sum does not depend on their order, and the ensemble is
    exactly equivariant: a flipped or turned input gives the flipped or turned output, bit for bit."""

    def run(x: np.ndarray) -> np.ndarray:
        outs = []
        for flip in (False, True):
            for turns in range(4):
                y = forward(np.ascontiguousarray(np.rot90(x[..., ::-1] if flip else x, turns, axes=(2, 3))))
                y = np.rot90(y, -turns, axes=(2, 3))
                outs.append(y[..., ::-1] if flip else y)
        return np.sort(np.stack(outs), axis=0).sum(axis=0, dtype=np.float32) / np.float32(8)

    return run


def as_upscaler(forward: Forward, scale: int | None = None, name: str | Path = "the model",
                ensemble: bool = False) -> Upscaler:
    """A forward (optionally self-ensembled) as an upscaler; with ``scale``, every output is checked
    to be ``scale`` times its input."""
    forward = self_ensemble(forward) if ensemble else forward

    def run(lr: np.ndarray) -> np.ndarray:
        out = forward(to_tensor(lr).numpy())
        if scale is not None and out.shape[-2:] != (lr.shape[0] * scale, lr.shape[1] * scale):
            raise SrpipeError(f"{name} turned a {lr.shape[0]}x{lr.shape[1]} image into "
                              f"{out.shape[-2]}x{out.shape[-1]}, not x{scale}")
        return to_uint8(torch.from_numpy(out))

    return run


def torch_upscaler(model: nn.Module, ensemble: bool = False) -> Upscaler:
    return as_upscaler(torch_forward(model), ensemble=ensemble)


def ort_session(path: str | Path, threads: int | None = None, arena: bool = True):
    """An ONNX Runtime CPU session; ``threads`` sets the intra-op thread count. Without ``arena``
    memory is returned after each run instead of kept for the next: for inputs of varying sizes
    (tiles) the arena held 1.7x the peak of one run (EDSR x4, 1200x1200 in 256-pixel tiles)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.enable_cpu_mem_arena = arena
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for unreadable files
        raise SrpipeError(f"cannot load ONNX model {path}: {exc}") from None


PROBE = 16  # LR side of the small run that finds an ONNX model's scale and a model's footprint
ONNX_FLOATS = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


def onnx_io(session, name: str | Path = "the ONNX model") -> tuple[str, str]:
    """The names of the single input and output of an image-to-image ONNX model, whatever they
    are; a model srpipe cannot feed (several inputs or outputs, not NCHW RGB float, fixed height
    and width) raises SrpipeError naming ``name``."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(outputs) != 1:
        raise SrpipeError(f"{name} has {len(inputs)} input(s) and {len(outputs)} output(s); srpipe runs models "
                          "with one image in (N x 3 x H x W) and one image out")
    shape, kind = inputs[0].shape, inputs[0].type
    if len(shape) != 4 or (isinstance(shape[1], int) and shape[1] != 3):
        raise SrpipeError(f"{name} takes input {inputs[0].name!r} of shape {shape}; srpipe feeds RGB images as "
                          "N x 3 x H x W")
    if kind not in ONNX_FLOATS:
        raise SrpipeError(f"{name} takes {kind}; srpipe feeds float images in [0, 1]")
    if isinstance(shape[2], int) or isinstance(shape[3], int):
        raise SrpipeError(f"{name} takes only {shape[2]}x{shape[3]} images; srpipe needs dynamic height and width "
                          "(export the model with dynamic axes)")
    return inputs[0].name, outputs[0].name


def onnx_run(session, name: str | Path = "the ONNX model") -> Callable[[np.ndarray], np.ndarray]:
    """A function NCHW float32 in [0, 1] -> the model's NCHW float32 output, for any input and
    output names; a failing run raises SrpipeError naming ``name``."""
    input_name, output_name = onnx_io(session, name)
    dtype = ONNX_FLOATS[session.get_inputs()[0].type]

    def run(x: np.ndarray) -> np.ndarray:
        try:
            out = session.run([output_name], {input_name: x.astype(dtype, copy=False)})[0]
        except Exception as exc:  # noqa: BLE001: onnxruntime raises its own exception types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise SrpipeError(f"{name} failed on a {'x'.join(map(str, x.shape))} input: {first}") from None
        if out.ndim != 4 or out.shape[:2] != (x.shape[0], 3):
            raise SrpipeError(f"{name} returned shape {out.shape} for input {x.shape}; srpipe needs N x 3 x H x W")
        return out.astype(np.float32, copy=False)

    return run


def onnx_scale(session, name: str | Path = "the ONNX model") -> int:
    """The scale a small run shows: the output side over the input side, a whole number, the same
    for height and width; checked against the scale srpipe's export records, where there is one."""
    out = onnx_run(session, name)(np.full((1, 3, PROBE, PROBE), 0.5, np.float32))
    h, w = out.shape[-2:]
    if h != w or h % PROBE or h < PROBE:
        raise SrpipeError(f"{name} turns a {PROBE}x{PROBE} input into {h}x{w}, not a whole-number upscale of it; "
                          "srpipe runs models whose output is the input times an integer scale")
    recorded = session.get_modelmeta().custom_metadata_map.get(SCALE_KEY)
    if recorded and recorded != str(h // PROBE):
        raise SrpipeError(f"{name} records scale {recorded} ({SCALE_KEY}) but turns a {PROBE}x{PROBE} input into "
                          f"{h}x{w}; fix or remove the metadata")
    return h // PROBE


def onnx_upscaler(session, scale: int | None = None, name: str | Path = "the ONNX model",
                  ensemble: bool = False) -> Upscaler:
    """An ONNX model as an upscaler; every output is checked to be ``scale`` times its input."""
    return as_upscaler(onnx_run(session, name), scale or onnx_scale(session, name), name, ensemble)


@dataclass(frozen=True)
class Footprint:
    """What tiling and the memory check need to know of a model."""

    reach: int  # LR pixels around a pixel that its output depends on: the convolutions' reach
    widest: float  # floats per LR pixel of the model's largest activation


@dataclass(frozen=True)
class LoadedModel:
    upscaler: Upscaler
    scale: int
    label: str
    measure: Callable[[], Footprint]  # the footprint, measured only when first asked (upscale's tiling)
    description: str = ""  # what was opened (srpipe.modelfile.OpenedModel.description)
    device: str = "cpu"  # where it runs: tiles are sized to this device's free memory

    @functools.cached_property
    def footprint(self) -> Footprint:
        return self.measure()


def torch_footprint(model: nn.Module) -> Footprint:
    """The reach and the widest activation of a PyTorch model, seen by hooks on one small run."""
    seen = {"reach": 0.0, "widest": 3.0}

    def hook(module: nn.Module, inputs: tuple, output) -> None:
        if isinstance(output, torch.Tensor):
            seen["widest"] = max(seen["widest"], output[0].numel() / PROBE**2)
        if isinstance(module, nn.Conv2d) and inputs and isinstance(inputs[0], torch.Tensor):
            factor = inputs[0].shape[-1] / PROBE  # where the layer works: LR (1), HR (scale), ...
            seen["reach"] += max(k // 2 * d for k, d in zip(module.kernel_size, module.dilation)) / factor

    leaves = [m for m in model.modules() if next(m.children(), None) is None]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.inference_mode():
            first = next(model.parameters())
            model(torch.zeros(1, 3, PROBE, PROBE, device=first.device, dtype=first.dtype))
    finally:
        for handle in handles:
            handle.remove()
    return Footprint(math.ceil(seen["reach"]), seen["widest"])


def _onnx_constants(graph) -> tuple[dict[str, tuple], dict[str, np.ndarray]]:
    """Shapes of the graph's weights (through DequantizeLinear and Cast) and values of its small constants."""
    from onnx import helper, numpy_helper

    shapes = {t.name: tuple(t.dims) for t in graph.initializer}
    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer if math.prod(t.dims) <= 8}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(helper.get_attribute_value(node.attribute[0]))
        elif node.op_type in ("DequantizeLinear", "Cast", "Identity") and node.input[0] in shapes:
            shapes[node.output[0]] = shapes[node.input[0]]
    return shapes, values


def _onnx_resize_factor(node, values: dict[str, np.ndarray], scale: int) -> float:
    """How much a Resize or Upsample node enlarges: its constant scales, else the model's scale."""
    for name in reversed(node.input[1:]):
        found = values.get(name)
        if found is not None and found.size == 4 and found.dtype.kind == "f":
            return float(found.reshape(-1)[-1])
    return float(scale)


def onnx_footprint(path: str | Path, scale: int) -> Footprint:
    """The reach and the widest activation of an ONNX model, from its graph: every Conv's kernel and
    output channels (its weight initializer), at the resolution it works at (tracked through
    DepthToSpace, SpaceToDepth, Resize, ConvTranspose and strides)."""
    import onnx
    from onnx import helper

    graph = onnx.load(str(path), load_external_data=False).graph
    shapes, values = _onnx_constants(graph)
    factor = {graph.input[0].name: 1.0}  # resolution of each activation, relative to the input
    reach, widest = 0.0, 3.0 * scale * scale
    for node in graph.node:
        seen = [factor[name] for name in node.input if name in factor]
        if not seen:
            continue  # weights and constants
        f = out = max(seen)
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        weight = shapes.get(node.input[1]) if len(node.input) > 1 else None
        if node.op_type in ("Conv", "ConvTranspose") and weight and len(weight) == 4:
            stride = attrs.get("strides", [1])[-1]
            out = f / stride if node.op_type == "Conv" else f * stride
            channels = weight[0] if node.op_type == "Conv" else weight[1] * attrs.get("group", 1)
            reach += max(k // 2 * d for k, d in zip(weight[2:], attrs.get("dilations", [1, 1]))) / f
            widest = max(widest, channels * out * out)
        elif node.op_type in ("DepthToSpace", "SpaceToDepth"):
            out = f * attrs["blocksize"] if node.op_type == "DepthToSpace" else f / attrs["blocksize"]
        elif node.op_type in ("Resize", "Upsample"):
            out = f * _onnx_resize_factor(node, values, scale)
        for name in node.output:
            factor[name] = out
    return Footprint(math.ceil(reach), widest)


def open_model(path: str | Path, ensemble: bool = False, kind: str | None = None, arena: bool = False,
               device: torch.device | None = None, precision: str = "fp32") -> LoadedModel:
    """A model file opened by :func:`srpipe.modelfile.open_model_file` (an ONNX file with any input
    and output names, an srpipe checkpoint or a file spandrel opens), ready to upscale
    (self-ensembled with ``ensemble``), with its scale and footprint. ``kind`` "model" refuses ONNX
    (evaluate --checkpoint). ``arena``: ONNX Runtime's memory arena (:func:`ort_session`; off for
    images of varying sizes). A PyTorch model runs on ``device`` (default the CPU) in ``precision``
    (fp32; fp16 or bf16 on CUDA: :func:`srpipe.hardware.inference_dtype`); ONNX on the CPU."""
    from .hardware import inference_dtype
    from .modelfile import open_model_file

    device = device or torch.device("cpu")
    dtype = inference_dtype(precision, device)
    opened = open_model_file(path, onnx=kind != "model", arena=arena)
    if opened.kind == "onnx":
        return LoadedModel(onnx_upscaler(opened.session, opened.scale, path, ensemble), opened.scale, "onnx",
                           lambda: onnx_footprint(path, opened.scale), opened.description)
    model = opened.model.to(device=device, dtype=dtype)
    where = "" if device.type == "cpu" and precision == "fp32" else f" on {device} in {precision}"
    return LoadedModel(torch_upscaler(model, ensemble), opened.scale, "model", lambda: torch_footprint(model),
                       opened.description + where, device.type)


def bicubic_upscaler(scale: int) -> Upscaler:
    return lambda lr: imresize(lr, scale)


def load_upscaler(
    checkpoint: str | Path | None = None,
    onnx: str | Path | None = None,
    baseline: str | None = None,
    scale: int | None = None,
    ensemble: bool = False,
    device: torch.device | None = None,
    precision: str = "fp32",
) -> LoadedModel:
    """Exactly one of a checkpoint (PyTorch weights: srpipe's or a file spandrel opens), an ONNX
    file or a baseline, as an upscaler with its scale, label and description; a model
    self-ensembled with ``ensemble``.

    A checkpoint knows its scale; an ONNX file records it (srpipe's metadata) or shows it on a
    small run; ``scale`` is the baseline's. A checkpoint runs on ``device`` in ``precision``
    (:func:`open_model`).
    """
    if checkpoint is not None or onnx is not None:
        kind = "model" if checkpoint is not None else "onnx"
        return open_model(checkpoint if checkpoint is not None else onnx, ensemble, kind=kind, arena=True,
                          device=device, precision=precision)
    if baseline == "bicubic":
        if scale is None:
            raise SrpipeError("the bicubic baseline needs a scale")
        return LoadedModel(bicubic_upscaler(scale), scale, "bicubic", lambda: Footprint(2, 3.0), f"bicubic x{scale}")
    raise SrpipeError(f"unknown baseline {baseline!r}; available: bicubic")
