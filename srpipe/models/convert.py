"""Import published weights as srpipe checkpoints: any file spandrel recognises
(:func:`import_spandrel`), and BasicSR's EDSR and RCAN, which spandrel does not know.

BasicSR (https://github.com/XPixelGroup/BasicSR) saves a network as ``{'params': state_dict}``,
plus ``'params_ema'`` when it trains with an exponential moving average of the weights. Its
EDSR and RCAN have the shape of srpipe's :class:`~srpipe.models.common.SRNet` without the
bicubic skip, and shift the image on both ends: the network sees ``(x - rgb_mean) * img_range``
(DIV2K's RGB mean (0.4488, 0.4371, 0.4040) and 255 by default) and its output is mapped back
by ``/ img_range + rgb_mean``.

The import builds srpipe's EDSR or RCAN with ``global_skip='none'`` and the same shift (the
``rgb_mean`` and ``img_range`` architecture kwargs), then renames the tensors: no weight is
changed, so the imported model computes what BasicSR's does, operation for operation. Folding
the shift into the first and last convolutions instead was rejected: the first convolution
zero-pads the shifted image, i.e. pads ``x`` with the mean, which a folded convolution (padding
``x`` with 0) does not reproduce at the image borders.

The sizes come from the state dict: features from ``conv_first``, blocks and groups by
counting, the scale from the upsampler, RCAN's squeeze ratio from its channel attention.
``res_scale``, ``rgb_mean`` and ``img_range`` are not stored in the weights; they default to
BasicSR's defaults (its EDSR-L options use ``res_scale`` 0.1).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from ..io import SrpipeError
from . import build_model, count_parameters, save_checkpoint

DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)
PARAM_KEYS = ("params_ema", "params")  # in order of preference


def read_basicsr(path: str | Path, param_key: str | None = None) -> tuple[dict[str, torch.Tensor], str]:
    """The state dict in a BasicSR file and the key it came from (``params_ema`` if present)."""
    from ..modelfile import read_weights

    ckpt = read_weights(path, what="BasicSR checkpoint")
    found = [k for k in PARAM_KEYS if isinstance(ckpt, dict) and isinstance(ckpt.get(k), dict)]
    if not found:
        keys = ", ".join(map(str, list(ckpt)[:6])) if isinstance(ckpt, dict) else type(ckpt).__name__
        hint = _spandrel_hint(ckpt) if isinstance(ckpt, dict) else ""
        raise SrpipeError(f"{path} is not a BasicSR checkpoint: no 'params' or 'params_ema' (it has: {keys}){hint}")
    if param_key is not None and param_key not in found:
        raise SrpipeError(f"{path} has no '{param_key}'; it has: {', '.join(found)}")
    key = param_key or found[0]
    state = {k.removeprefix("module."): v for k, v in ckpt[key].items()}
    return state, key


def _count(state: dict[str, torch.Tensor], pattern: str) -> int:
    return len({m.group(1) for k in state if (m := re.fullmatch(pattern, k))})


def _tensor(state: dict[str, torch.Tensor], key: str, arch: str) -> torch.Tensor:
    if key not in state:
        raise SrpipeError(f"not a BasicSR {arch.upper()} checkpoint: no tensor '{key}'")
    return state[key]


def _scale(state: dict[str, torch.Tensor], n_feats: int) -> int:
    """The upsampling factor of BasicSR's ``Upsample``: x3 as one conv to 9x features, 2^n as n to 4x."""
    convs = sorted(int(m.group(1)) for k in state if (m := re.fullmatch(r"upsample\.(\d+)\.weight", k)))
    outs = [state[f"upsample.{i}.weight"].shape[0] for i in convs]
    if outs == [9 * n_feats]:
        return 3
    if outs and all(o == 4 * n_feats for o in outs):
        return 2 ** len(outs)
    raise SrpipeError(f"unrecognised upsampler: conv output channels {outs} for {n_feats} features")


def _edsr(state: dict[str, torch.Tensor]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """EDSR's sizes and the (BasicSR pattern, srpipe name) renaming."""
    n_feats = _tensor(state, "conv_first.weight", "edsr").shape[0]
    blocks = _count(state, r"body\.(\d+)\.conv1\.weight")
    sizes = {"n_resblocks": blocks, "n_feats": n_feats}
    rules = [
        (r"conv_first\.", "head."),
        (r"body\.(\d+)\.conv1\.", r"body.\1.body.0."),
        (r"body\.(\d+)\.conv2\.", r"body.\1.body.2."),
        (r"conv_after_body\.", f"body.{blocks}."),
    ]
    return sizes, rules


def _rcan(state: dict[str, torch.Tensor]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """RCAN's sizes and the (BasicSR pattern, srpipe name) renaming."""
    n_feats = _tensor(state, "conv_first.weight", "rcan").shape[0]
    groups = _count(state, r"body\.(\d+)\.conv\.weight")
    blocks = _count(state, r"body\.0\.residual_group\.(\d+)\.rcab\.0\.weight")
    squeezed = _tensor(state, "body.0.residual_group.0.rcab.3.attention.1.weight", "rcan").shape[0]
    sizes = {"n_resgroups": groups, "n_resblocks": blocks, "n_feats": n_feats, "reduction": max(1, n_feats // squeezed)}
    rab = r"body\.(\d+)\.residual_group\.(\d+)\.rcab\."
    rules = [
        (r"conv_first\.", "head."),
        (rab + r"0\.", r"body.\1.body.\2.body.0."),
        (rab + r"2\.", r"body.\1.body.\2.body.2."),
        (rab + r"3\.attention\.1\.", r"body.\1.body.\2.body.3.body.0."),
        (rab + r"3\.attention\.3\.", r"body.\1.body.\2.body.3.body.2."),
        (r"body\.(\d+)\.conv\.", rf"body.\1.body.{blocks}."),
        (r"conv_after_body\.", f"body.{groups}."),
    ]
    return sizes, rules


ARCHS = {"edsr": _edsr, "rcan": _rcan}
TAIL_RULES = [(r"upsample\.", "tail.0."), (r"conv_last\.", "tail.1.")]


def _rename(key: str, rules: list[tuple[str, str]]) -> str | None:
    for pattern, replacement in rules:
        if re.match(pattern, key):
            return re.sub(pattern, replacement, key, count=1)
    return None


def _source_name(name: str, rules: list[tuple[str, str]]) -> str:
    """The BasicSR tensor name that ``rules`` turn into srpipe's ``name`` (errors speak the file's names)."""
    for pattern, replacement in rules:
        pieces = re.split(r"\\(\d)", replacement)  # literal, group number, literal, ...
        inverse = "".join(re.escape(p) if i % 2 == 0 else rf"(?P<g{p}>\d+)" for i, p in enumerate(pieces))
        if (m := re.match(inverse, name)) is None:
            continue
        groups = iter(range(1, 10))
        source = re.sub(r"\(\\d\+\)", lambda _: m.group(f"g{next(groups)}"), pattern).replace("\\.", ".") + name[m.end():]
        if _rename(source, rules) == name:
            return source
    return name


def _matched(state: dict[str, torch.Tensor], rules: list[tuple[str, str]], model: torch.nn.Module, arch: str) -> dict:
    """The state dict under srpipe's names; every tensor must match one of the model's, by name and shape."""
    names = {k: _rename(k, rules) for k in state}
    expected = model.state_dict()
    unexpected = [k for k, new in names.items() if new is None or new not in expected]
    missing = [_source_name(k, rules) for k in expected if k not in names.values()]
    if unexpected or missing:
        what = f"unexpected tensors {unexpected[:3]}" if unexpected else f"no tensor {missing[:3]}"
        raise SrpipeError(f"not a BasicSR {arch.upper()} checkpoint: {what}")
    for k, name in names.items():
        if state[k].shape != expected[name].shape:
            raise SrpipeError(f"not a BasicSR {arch.upper()} checkpoint of these sizes: {k} has shape "
                              f"{tuple(state[k].shape)}, expected {tuple(expected[name].shape)}")
    return {name: state[k] for k, name in names.items()}


def convert_basicsr(
    state: dict[str, torch.Tensor],
    arch: str,
    scale: int | None = None,
    res_scale: float = 1.0,
    rgb_mean: tuple[float, float, float] = DIV2K_RGB_MEAN,
    img_range: float = 255.0,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """(srpipe model with the weights, its ``arch`` record) for a BasicSR EDSR/RCAN state dict.

    ``scale``, when given, must be the upsampler's.
    """
    if arch not in ARCHS:
        raise SrpipeError(f"unknown architecture {arch!r}; available: {', '.join(ARCHS)}")
    if (found_arch := looks_like_basicsr({"params": state})) != arch:
        other = f"; it is BasicSR's {found_arch.upper()}: import it with --arch {found_arch}" if found_arch else ""
        raise SrpipeError(f"not a BasicSR {arch.upper()} checkpoint: its tensors ({', '.join(list(state)[:3])}, ...) "
                          f"are not {arch.upper()}'s{other}")
    sizes, rules = ARCHS[arch](state)
    if _tensor(state, "conv_first.weight", arch).shape[1] != 3 or _tensor(state, "conv_last.weight", arch).shape[0] != 3:
        raise SrpipeError("only RGB models (3 input and 3 output channels) can be imported")
    found = _scale(state, sizes["n_feats"])
    if scale is not None and scale != found:
        raise SrpipeError(f"the checkpoint's upsampler is x{found}, not x{scale}")
    kwargs = {"scale": found, **sizes, "res_scale": res_scale, "global_skip": "none",
              "rgb_mean": tuple(float(m) for m in rgb_mean), "img_range": float(img_range)}
    model = build_model(arch, **kwargs)
    model.load_state_dict(_matched(state, rules + TAIL_RULES, model, arch))
    return model.eval(), {"name": arch, "kwargs": kwargs}


def import_basicsr(src: str | Path, out: str | Path, arch: str, param_key: str | None = None, **options: Any) -> dict:
    """Convert the BasicSR file ``src`` into the srpipe checkpoint ``out`` (written atomically).

    ``options`` go to :func:`convert_basicsr`. Returns what was imported (also stored in the
    checkpoint under ``imported_from``).
    """
    state, key = read_basicsr(src, param_key)
    try:
        model, record = convert_basicsr(state, arch, **options)
    except SrpipeError as exc:
        raise SrpipeError(f"{src}: {exc}{_spandrel_hint(state)}") from None
    info = {"framework": "basicsr", "file": str(src), "param_key": key, "parameters": count_parameters(model)}
    save_checkpoint(out, model, record, imported_from=info)
    return {**info, "arch": record}


def _spandrel_hint(state: dict[str, torch.Tensor]) -> str:
    """Where a file that is not BasicSR's EDSR or RCAN can go instead: spandrel, if it recognises it."""
    from .zoo import from_state_dict

    try:
        found = from_state_dict(dict(state))[2]
    except Exception:  # noqa: BLE001: any failure means spandrel does not take it either
        return ""
    return f"; spandrel recognises it as {found['architecture']}: import it without --arch (or with --from spandrel)"


def looks_like_basicsr(content: Any) -> str | None:
    """``edsr`` or ``rcan`` for what BasicSR writes for them (``params`` or ``params_ema`` holding
    ``conv_first`` and EDSR's ``body.N.conv1`` or RCAN's ``rcab``), else None."""
    params = next((content[k] for k in PARAM_KEYS if isinstance(content, dict) and isinstance(content.get(k), dict)),
                  None)
    keys = [str(k).removeprefix("module.") for k in params] if params else []
    if "conv_first.weight" not in keys:
        return None
    if any(".rcab." in k for k in keys):
        return "rcan"
    return "edsr" if any(re.fullmatch(r"body\.\d+\.conv1\.weight", k) for k in keys) else None


def import_spandrel(src: str | Path, out: str | Path, scale: int | None = None) -> dict:
    """Any model file spandrel recognises (.pth, .pt, .ckpt, .safetensors, read without running code)
    as the srpipe checkpoint ``out``: its architecture as spandrel found it, in srpipe's shell (which
    adds nothing), with spandrel's tensor names. Returns what was imported (also stored in the
    checkpoint under ``imported_from``)."""
    from ..modelfile import open_model_file

    opened = open_model_file(src)
    if opened.kind != "spandrel":
        raise SrpipeError(f"{src} is already an srpipe checkpoint ({opened.arch['name']} x{opened.scale}); "
                          "evaluate, export-onnx, upscale and train.init_from take it as it is")
    if scale is not None and scale != opened.scale:
        raise SrpipeError(f"{src} is x{opened.scale}, not x{scale}")
    found = opened.checkpoint["spandrel"]
    info = {"framework": "spandrel", "file": str(src), **found, "parameters": count_parameters(opened.model)}
    save_checkpoint(out, opened.model, opened.arch, imported_from=info)
    return {**info, "arch": opened.arch}
