"""The one way a model file comes in: an srpipe checkpoint, a file spandrel recognises, or ONNX.

A model file is untrusted input (people download and share them), so nothing in one is ever run:
PyTorch files are read with ``torch.load(weights_only=True)`` (tensors and plain values only;
what a checkpoint needs to resume, RNG states included, is stored as such) and ``.safetensors``
with the safetensors package. A file that asks for more stops with one line naming it.

:func:`open_model_file` then decides what the file is: a dict with ``arch`` and ``state_dict``
is an srpipe checkpoint (rebuilt from its record); other weights go to spandrel's detection
(:mod:`srpipe.models.zoo`), which knows the architectures chaiNNer and ComfyUI run; ``.onnx``
is opened with ONNX Runtime where the caller takes ONNX. Every command that takes a model, and
``train.init_from``, comes through here.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .io import SrpipeError

TORCH_SUFFIXES = (".pt", ".pth", ".ckpt", ".safetensors")


class UnsafeModelFile(SrpipeError):
    """A model file that asks to run code when loaded: refused, never repaired or moved aside."""


def _why_unreadable(exc: Exception) -> str:
    """One line for a file torch.load refused: a named Python object (code it would run), a
    system error, or a file that is no PyTorch file (or needs more than the plain reader)."""
    found = re.search(r"GLOBAL (\S+)", str(exc))
    if found:
        return (f"it holds Python objects, not only tensors and plain values: it asks for {found.group(1)}; srpipe "
                "never runs code from a model file: re-save its weights alone (a state dict, or .safetensors) with "
                "a tool you trust")
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return "not a PyTorch file, or a damaged one, or one that needs more than tensors and plain values to load"


def read_weights(path: str | Path, what: str = "checkpoint") -> Any:
    """What a PyTorch or safetensors file holds, read without running any code from it."""
    path = Path(path)
    if not path.is_file():
        raise SrpipeError(f"{what} not found: {path}")
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:  # noqa: BLE001: safetensors raises its own error types
            raise SrpipeError(f"cannot load {what} {path} (not a safetensors file, or a damaged one: {exc})") from None
    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pickle protocol notes: the outcome is what counts
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001: torch.load raises pickle's, zipfile's and its own errors
        unsafe = re.search(r"GLOBAL (\S+)", str(exc)) is not None
        raise (UnsafeModelFile if unsafe else SrpipeError)(f"cannot load {what} {path} ({_why_unreadable(exc)})") from None


def is_checkpoint(content: Any) -> bool:
    return isinstance(content, dict) and "arch" in content and "state_dict" in content


def read_checkpoint(path: str | Path) -> dict:
    """An srpipe checkpoint (``arch``, ``state_dict`` and what training saved beside them)."""
    content = read_weights(path)
    if not is_checkpoint(content):
        raise SrpipeError(f"{path} is not an srpipe checkpoint (no architecture recorded); give one written by "
                          "srpipe train or srpipe import-weights")
    return content


@dataclass
class OpenedModel:
    """A model file, opened: a PyTorch model (eval mode, on the CPU) or an ONNX Runtime session."""

    path: Path
    kind: str  # "srpipe" (checkpoint), "spandrel" (weights spandrel recognised) or "onnx"
    scale: int
    model: Any = None  # torch.nn.Module
    arch: dict | None = None  # {'name', 'kwargs'}: how srpipe rebuilds the model
    checkpoint: dict = field(default_factory=dict)  # an srpipe checkpoint's whole content
    session: Any = None  # onnxruntime.InferenceSession

    @property
    def description(self) -> str:
        """What was opened, in a line: the architecture, the scale, the parameters."""
        if self.kind == "onnx":
            return f"{self.path}: ONNX model, x{self.scale}"
        from .models import count_parameters

        if self.kind == "spandrel":
            found = self.checkpoint["spandrel"]
            what = f"weights recognised by spandrel, {found['architecture']} ({', '.join(found['tags'])})"
        else:
            name = self.arch["name"] if self.arch["name"] != "spandrel" else self.arch["kwargs"]["architecture"]
            what = f"srpipe checkpoint, {name}"
        return f"{self.path}: {what} x{self.scale}, {count_parameters(self.model):,} parameters"


def open_model_file(path: str | Path, onnx: bool = False, arena: bool = True) -> OpenedModel:
    """Open any model file srpipe takes (ONNX only with ``onnx``; ``arena``: ONNX Runtime's memory
    arena, off for inputs of varying sizes), safely, and say what it is."""
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        if not onnx:
            raise SrpipeError(f"cannot load checkpoint {path} (an ONNX model); this takes PyTorch weights (an srpipe "
                              "checkpoint, or a .pth/.safetensors file spandrel opens); for an ONNX model use "
                              "--onnx (evaluate) or --model (upscale)")
        from .upscalers import onnx_scale, ort_session

        session = ort_session(path, arena=arena)
        return OpenedModel(path, "onnx", onnx_scale(session, path), session=session)
    content = read_weights(path)
    if is_checkpoint(content):
        from .models import instantiate

        model = instantiate(content["arch"], content["state_dict"], path)
        return OpenedModel(path, "srpipe", content["arch"]["kwargs"]["scale"], model, content["arch"], content)
    return _open_with_spandrel(path, content)


def _open_with_spandrel(path: Path, content: Any) -> OpenedModel:
    from .models.zoo import from_state_dict

    if not isinstance(content, dict) or not content:
        raise SrpipeError(f"{path} holds no weights srpipe knows ({type(content).__name__}); give an srpipe "
                          "checkpoint or a model file spandrel opens (.pth, .safetensors)")
    try:
        model, arch, found = from_state_dict(dict(content))
    except SrpipeError as exc:
        raise SrpipeError(f"{path} is not an srpipe checkpoint and {exc}{_hint(content)}") from None
    return OpenedModel(path, "spandrel", arch["kwargs"]["scale"], model, arch, {"spandrel": found})


def _hint(content: dict) -> str:
    """What to do with weights nobody recognised: BasicSR's EDSR and RCAN are srpipe's to convert."""
    params = content.get("params_ema", content.get("params"))
    if isinstance(params, dict) and any(str(k).startswith("conv_first") for k in params):
        return "; it looks like a BasicSR model: convert it with srpipe import-weights --from basicsr"
    return "; give an srpipe checkpoint or a model file spandrel supports"
