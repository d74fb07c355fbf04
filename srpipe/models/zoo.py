"""spandrel's architectures as srpipe models.

`spandrel <https://github.com/chaiNNer-org/spandrel>`_ carries the architecture code of the models
that chaiNNer, ComfyUI and the other upscaling tools run, each as a plain ``nn.Module`` with the
state-dict key layout those tools load. srpipe trains, scores and ships them as they are: the
model is spandrel's class, with the same tensor names, in a thin *shell* that adds what srpipe
needs and spandrel's call API does outside the model:

- any input size: the input is padded as spandrel pads it (reflect, to the architecture's size
  requirements) and the output cropped back;
- optionally srpipe's bicubic global skip (``model.global_skip: bicubic``), which is *not* part
  of spandrel's architectures;
- the srpipe scale (``sr_scale``), which is not always the constructor's (Real-ESRGAN x2 is an
  x4 network behind a pixel unshuffle).

A model that spandrel would run differently from srpipe (a bicubic skip, or constructor arguments
that spandrel cannot read back from the weights, such as SPAN's ``img_range``) carries one extra
buffer, ``srpipe_only``, so that spandrel refuses its weights (an unexpected key) instead of
running them wrong; :func:`not_portable` says why, and ``srpipe export-weights`` refuses it.
Whether spandrel reads a model back is not guessed: every build hands the fresh weights to
spandrel's detection and compares the hyperparameters it finds with the ones given.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..io import SrpipeError

MARKER = "srpipe_only"
# SwinIR's window code calls torch.meshgrid without `indexing` (the old default is what it means)
warnings.filterwarnings("ignore", message="torch.meshgrid: in an upcoming release", category=UserWarning)


def _deployed_forward(self, x: torch.Tensor) -> torch.Tensor:
    """SPAN's Conv3XC in eval mode: the re-parameterised convolution alone, as it was last fused
    (spandrel's fuses again at every eval forward: the same weights, computed once here)."""
    if self.training:
        return type(self).forward(self, x)
    out = self.eval_conv(x)
    return F.leaky_relu(out, negative_slope=0.05) if self.has_relu else out


def _span_deploy_form(model: nn.Module) -> None:
    """SPAN trains each Conv3XC as three convolutions and a 1x1 skip (its training form) and runs
    it as the one 3x3 convolution they fuse into (its deploy form, ``eval_conv``): the shell fuses
    them whenever the model enters eval mode or takes new weights in it (:meth:`Shell.deploy`), so
    that an eval forward, an ONNX export and a FLOP count see the deploy form alone. ``eval_conv``
    is derived, never trained: frozen, so that the optimiser and DDP (which would find it unused)
    leave it alone."""
    for module in model.modules():
        if hasattr(module, "eval_conv") and hasattr(module, "update_params"):
            module.eval_conv.requires_grad_(False)
            module.forward = _deployed_forward.__get__(module)


def _safm_forward(self, x: torch.Tensor) -> torch.Tensor:
    """SAFMN's SAFM with ``max_pool2d`` by 2**i where spandrel's uses ``adaptive_max_pool2d`` to
    (h / 2**i, w / 2**i): the same windows, hence the same numbers, on the sizes the shell feeds it
    (multiples of 8), and a graph that ONNX can export with dynamic height and width."""
    chunks = x.chunk(self.n_levels, dim=1)
    out = [self.mfr[0](chunks[0])]
    for i in range(1, self.n_levels):
        s = self.mfr[i](F.max_pool2d(chunks[i], 2**i))
        out.append(F.interpolate(s, scale_factor=2**i, mode="nearest"))
    return self.act(self.aggr(torch.cat(out, dim=1))) * x


def _safmn_exportable_pooling(model: nn.Module) -> None:
    for module in model.modules():
        if type(module).__name__ == "SAFM":
            module.forward = _safm_forward.__get__(module)


@dataclass(frozen=True)
class ZooArch:
    """How srpipe builds one of spandrel's architectures."""

    import_path: str  # "module:Class"
    scale_arg: str  # the constructor's name for the upscaling factor
    fixed: dict[str, Any] = field(default_factory=dict)  # arguments srpipe always gives (RGB in and out)
    train_only: tuple[str, ...] = ()  # hyperparameters that change training, not what the model computes
    prepare: Callable[[nn.Module], None] | None = None  # srpipe's adjustments, output unchanged

    @property
    def cls(self) -> type[nn.Module]:
        module, name = self.import_path.split(":")
        return getattr(importlib.import_module(module), name)


ZOO: dict[str, ZooArch] = {
    "span": ZooArch("spandrel.architectures.SPAN:SPAN", "upscale", {"num_in_ch": 3, "num_out_ch": 3},
                    prepare=_span_deploy_form),
    "compact": ZooArch("spandrel.architectures.Compact:Compact", "upscale"),
    "esrgan": ZooArch("spandrel.architectures.ESRGAN:ESRGAN", "scale"),
    "safmn": ZooArch("spandrel.architectures.SAFMN:SAFMN", "upscaling_factor", prepare=_safmn_exportable_pooling),
    "realplksr": ZooArch("spandrel.architectures.PLKSR:RealPLKSR", "upscaling_factor", train_only=("dropout",)),
    "omnisr": ZooArch("spandrel.architectures.OmniSR:OmniSR", "up_scale"),
    "swinir": ZooArch("spandrel.architectures.SwinIR:SwinIR", "upscale",
                      train_only=("drop_rate", "attn_drop_rate", "drop_path_rate", "use_checkpoint")),
}


class Shell(nn.Module):
    """Mixed in before a spandrel class (see :func:`shell`): pad, run, crop, optional bicubic skip."""

    sr_scale: int
    size_requirements: Any  # spandrel.SizeRequirements
    bicubic_skip: bool
    not_portable: list[str]

    def setup(self, scale: int, size_requirements, bicubic_skip: bool, not_portable: list[str]) -> None:
        self.sr_scale, self.size_requirements = scale, size_requirements
        self.bicubic_skip, self.not_portable = bicubic_skip, not_portable
        if not_portable:
            self.register_buffer(MARKER, torch.ones(1))
        self.register_load_state_dict_post_hook(lambda module, keys: None if module.training else module.deploy())

    def train(self, mode: bool = True) -> "Shell":
        super().train(mode)
        if not mode:
            self.deploy()
        return self

    def deploy(self) -> None:
        """Fuse re-parameterisable layers (SPAN's) into their deploy form, from the current weights."""
        with torch.no_grad():
            for module in self.modules():
                if hasattr(module, "update_params") and hasattr(module, "eval_conv"):
                    module.update_params()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        padded = pad_to(x, self.size_requirements)
        out = super().forward(padded)
        if padded is not x:
            out = out[..., : h * self.sr_scale, : w * self.sr_scale]
        if self.bicubic_skip:
            out = out + F.interpolate(x, scale_factor=self.sr_scale, mode="bicubic", align_corners=False)
        return out


def pad_to(x: torch.Tensor, req) -> torch.Tensor:
    """``x`` padded on the bottom and right as spandrel's call API pads it: reflect as far as the
    image allows, then replicate, up to ``req.minimum`` and a multiple of ``req.multiple_of``. While
    ONNX traces it, the multiple is padded with arithmetic on the traced size (so the graph holds
    for every size) and the minimum, a comparison the trace would freeze, is left to the caller."""
    if torch.jit.is_tracing():
        if req.multiple_of == 1:
            return x
        m = req.multiple_of
        h, w = x.shape[-2:]
        return F.pad(x, (0, (m - w % m) % m, 0, (m - h % m) % m), "reflect")
    pad_w, pad_h = req.get_padding(int(x.shape[-1]), int(x.shape[-2]))
    if not pad_w and not pad_h:
        return x
    reflect_w, reflect_h = min(pad_w, x.shape[-1] - 1), min(pad_h, x.shape[-2] - 1)
    x = F.pad(x, (0, reflect_w, 0, reflect_h), "reflect")
    return F.pad(x, (0, pad_w - reflect_w, 0, pad_h - reflect_h), "replicate")


def spandrel_class(model: nn.Module) -> type:
    """The spandrel class inside a shelled model (the class after :class:`Shell`)."""
    mro = type(model).__mro__
    return mro[mro.index(Shell) + 1] if Shell in mro else type(model)


@functools.cache
def shell(cls: type[nn.Module]) -> type[nn.Module]:
    """``cls`` with :class:`Shell` in front: the same constructor, parameters and tensor names."""
    return type(cls.__name__, (Shell, cls), {"__module__": cls.__module__, "__doc__": cls.__doc__})


def _plain(value: Any) -> Any:
    """Hyperparameters as YAML would write them (tuples as lists), so that two sets compare by value."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def plain_hyperparameters(hyperparameters: dict[str, Any]) -> dict[str, Any]:
    """The hyperparameters a checkpoint can hold (numbers, text, lists of them): not classes such as
    SwinIR's ``norm_layer``, which the constructor's default gives back."""
    ok = (int, float, str, bool, type(None))
    return {k: _plain(v) for k, v in hyperparameters.items()
            if isinstance(v, ok) or (isinstance(v, (list, tuple)) and all(isinstance(i, ok) for i in v))}


def _check_arguments(name: str, cls: type, ctor: dict[str, Any]) -> None:
    allowed = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = [k for k in ctor if k not in allowed]
    if unknown:
        raise SrpipeError(f"model.kwargs: {', '.join(unknown)} is not an argument of spandrel's {cls.__name__} "
                          f"({name}); it takes: {', '.join(allowed)}")


def spandrel_reading(model: nn.Module, entry: ZooArch | None = None) -> tuple[Any, list[str]]:
    """(spandrel's descriptor of ``model``'s weights, or None, and why spandrel would run them
    differently: its detection must find the same architecture and hyperparameters)."""
    from spandrel import MAIN_REGISTRY

    state = {k: v for k, v in model.state_dict().items() if k != MARKER}
    try:
        found = MAIN_REGISTRY.load(state)
    except Exception as exc:  # noqa: BLE001: spandrel raises its own errors and KeyError/ValueError
        return None, [f"spandrel does not read these weights back ({type(exc).__name__}: {exc})"]
    if type(found.model) is not spandrel_class(model):
        return found, [f"spandrel reads these weights as {type(found.model).__name__}"]
    ours, theirs = plain_hyperparameters(model.hyperparameters), plain_hyperparameters(found.model.hyperparameters)
    skip = entry.train_only if entry else ()
    differ = [f"{k}={ours.get(k)!r} (spandrel assumes {theirs.get(k)!r})" for k in sorted(set(ours) | set(theirs))
              if k not in skip and ours.get(k) != theirs.get(k)]
    return found, [f"spandrel cannot read {', '.join(differ)} from the weights"] if differ else []


def build_zoo(name: str, scale: int, global_skip: str = "none", ctor: dict[str, Any] | None = None) -> nn.Module:
    """spandrel's ``name`` architecture with constructor arguments ``ctor`` (the scale added under
    the class's own name unless given), in srpipe's shell."""
    entry = ZOO[name]
    cls = entry.cls
    ctor = {**entry.fixed, **(ctor or {})}
    _check_arguments(name, cls, ctor)
    hint = (f"; leave {entry.scale_arg} out of model.kwargs (the top-level scale sets it)"
            if entry.scale_arg in ctor else "")
    ctor.setdefault(entry.scale_arg, scale)
    try:
        model = shell(cls)(**ctor)
    except Exception as exc:  # noqa: BLE001: a constructor refuses its arguments with any error type
        raise SrpipeError(f"spandrel's {cls.__name__} ({name}) refuses {ctor}: {type(exc).__name__}: {exc}") from None
    if entry.prepare:
        entry.prepare(model)
    with torch.random.fork_rng(devices=[]):  # spandrel's own copy must not draw from the run's seed
        found, why = spandrel_reading(model, entry)
    if found is None or found.scale != scale:
        made = _upscaling(model)
        if made != scale:
            raise SrpipeError(f"{name} with {ctor} upscales x{made}, not x{scale}{hint}")
        if found is not None and not why:
            why.append(f"spandrel reads these weights as x{found.scale}")
    if global_skip == "bicubic":
        why.insert(0, "it adds srpipe's bicubic skip, which spandrel's architecture does not have")
    from spandrel import SizeRequirements

    model.setup(scale, found.size_requirements if found is not None else SizeRequirements(), global_skip == "bicubic",
                why)
    return model


def _upscaling(model: nn.Module, side: int = 16) -> int:
    """The factor spandrel's class itself upscales a ``side``-pixel square by (before the shell)."""
    with torch.no_grad():
        out = spandrel_class(model).forward(model, torch.zeros(1, 3, side, side))
    return out.shape[-1] // side


def kwargs_over_default(name: str, ctor: dict[str, Any], preset: dict[str, Any]) -> dict[str, Any]:
    """The constructor arguments in ``ctor`` that differ from the class's defaults overlaid with
    ``preset``: what ``model.kwargs`` must say to rebuild it from params (the scale aside)."""
    entry = ZOO[name]
    defaults = {k: p.default for k, p in inspect.signature(entry.cls.__init__).parameters.items()
                if p.default is not inspect.Parameter.empty}
    reference = plain_hyperparameters({**defaults, **preset, **entry.fixed})
    return {k: v for k, v in plain_hyperparameters(ctor).items()
            if k != entry.scale_arg and k not in entry.fixed and v != reference.get(k)}


def name_of(cls: type) -> str | None:
    """srpipe's name for one of spandrel's classes, or None for the ones srpipe does not train."""
    return next((name for name, entry in ZOO.items() if entry.cls is cls), None)


def from_descriptor(descriptor) -> tuple[nn.Module, dict[str, Any]]:
    """A model spandrel opened, in srpipe's shell, with its weights, and its srpipe ``arch`` record:
    srpipe's name where srpipe trains the architecture (so that it rebuilds and fine-tunes it),
    else ``spandrel`` (rebuilt by spandrel's detection from the weights)."""
    found = descriptor.model
    why = _unsupported(descriptor)
    if why:
        raise SrpipeError(why)
    name, ctor = name_of(type(found)), plain_hyperparameters(found.hyperparameters)
    if name is not None:
        model = build_zoo(name, descriptor.scale, "none", ctor)
        arch = {"name": name, "kwargs": {"scale": descriptor.scale, "global_skip": "none", "ctor": ctor}}
    else:
        model = shell(type(found))(**found.hyperparameters)
        model.setup(descriptor.scale, descriptor.size_requirements, False, [])
        arch = {"name": "spandrel", "kwargs": {"scale": descriptor.scale, "architecture": str(descriptor.architecture.id)}}
    model.load_state_dict(found.state_dict())
    return model.eval(), arch


def _unsupported(descriptor) -> str | None:
    """Why srpipe cannot run what spandrel opened, or None: srpipe runs RGB super-resolution."""
    arch = descriptor.architecture.name
    if getattr(descriptor, "purpose", None) not in ("SR",):
        return (f"it is a {arch} model for {getattr(descriptor, 'purpose', 'inpainting')} (scale "
                f"{descriptor.scale}); srpipe runs super-resolution models")
    if descriptor.input_channels != 3 or descriptor.output_channels != 3:
        return (f"it is a {arch} model with {descriptor.input_channels} input and {descriptor.output_channels} output "
                "channels; srpipe runs RGB models (3 and 3)")
    return None


def from_state_dict(state: dict[str, torch.Tensor]) -> tuple[nn.Module, dict[str, Any], dict[str, Any]]:
    """What spandrel detects in ``state`` (canonicalised as spandrel does), in srpipe's shell, its
    ``arch`` record, and what spandrel found: its architecture, tags (sizes) and hyperparameters."""
    from spandrel import MAIN_REGISTRY, UnsupportedModelError

    try:
        descriptor = MAIN_REGISTRY.load(state)
    except UnsupportedModelError:
        keys = ", ".join(list(state)[:4])
        raise SrpipeError(f"spandrel does not recognise its tensors ({keys}, ...)") from None
    except Exception as exc:  # noqa: BLE001: a detected architecture can fail on odd shapes with any error
        raise SrpipeError(f"spandrel recognised it but could not build it ({type(exc).__name__}: {exc})") from None
    info = {"architecture": str(descriptor.architecture.id), "tags": list(descriptor.tags),
            "hyperparameters": plain_hyperparameters(descriptor.model.hyperparameters)}
    return (*from_descriptor(descriptor), info)
