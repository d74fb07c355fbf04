"""Typed schema of ``params.yaml``.

Every hyperparameter lives in ``params.yaml``; this module is the one place that knows its
shape. :func:`load_params` reads the file, applies ``--set key.sub=value`` overrides and
validates everything before any stage starts work. A bad file raises :class:`ParamsError`
with a one-line message naming the key and what is allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional, get_args

import yaml
from pydantic import (BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator,
                      model_validator)


class ParamsError(ValueError):
    """params.yaml (or an override) is missing, malformed or out of range."""


def _takes_bool(annotation: Any) -> bool:
    return annotation is bool or any(_takes_bool(a) for a in get_args(annotation))


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        """YAML's true/false is a number to pydantic (train.epochs=true would be 1 epoch): only
        the switches take it."""
        if isinstance(value, bool) and not _takes_bool(cls.model_fields[info.field_name].annotation):
            raise ValueError("expected a number or text, not true/false")
        return value


class DataParams(_Section):
    train: str | list[str] = Field("sample-train", description="training HR images: 'sample-train', a folder "
                                         "or dataset name, or a list of them (joined)")
    valid: str = Field("sample-valid", description="validation HR images: 'sample-valid' or a folder")
    limit: Optional[int] = Field(None, ge=1, description="use at most this many images per set")
    raw_dir: str = Field("data/raw", description="where `srpipe data fetch` puts standard datasets")
    workers: Optional[int] = Field(None, ge=1, description="processes for the data stages; null: every core")
    train_scales: list[float] = Field([1.0], min_length=1, description="each training image enters the store "
                                      "once per factor, shrunk to that factor of its sides (1: as it is)")
    allow_overlap: bool = Field(False, description="score validation and evaluation images that are also "
                                "training images (by content); false: prepare-degradations refuses them")

    @field_validator("train_scales")
    @classmethod
    def _shrink_factors(cls, v: list[float]) -> list[float]:
        if any(not 0.1 <= f <= 1 for f in v) or len(set(v)) != len(v):
            raise ValueError("must be distinct factors between 0.1 and 1, e.g. [1.0, 0.7, 0.5]")
        return v


def _ordered_range(v: tuple, low: float, high: float, what: str) -> tuple:
    if not (low <= v[0] <= v[1] <= high):
        raise ValueError(f"{what} must be [low, high] with {low} <= low <= high <= {high}")
    return v


class _PassParams(_Section):
    """One pass of the realistic chain: each step's probability and the range its parameter is drawn from."""

    blur_prob: float = Field(1.0, ge=0, le=1, description="probability that an image is blurred")
    blur_sigma: tuple[float, float] = Field((0.8, 1.2), description="Gaussian blur sigma (HR pixels), drawn from "
                                            "[low, high] within 0.01-20")
    noise_prob: float = Field(1.0, ge=0, le=1, description="probability that noise is added")
    noise_sigma: tuple[float, float] = Field((0.0, 10.0), description="Gaussian noise sigma (8-bit levels), drawn "
                                             "from [low, high] within 0-255")
    jpeg_prob: float = Field(1.0, ge=0, le=1, description="probability of a JPEG round trip")
    jpeg_quality: tuple[int, int] = Field((85, 85), description="JPEG quality, drawn from [low, high] within 1-100")

    @field_validator("blur_sigma")
    @classmethod
    def _blur_range(cls, v):
        return _ordered_range(v, 0.01, 20, "blur_sigma")

    @field_validator("noise_sigma")
    @classmethod
    def _noise_range(cls, v):
        return _ordered_range(v, 0, 255, "noise_sigma")

    @field_validator("jpeg_quality")
    @classmethod
    def _jpeg_range(cls, v):
        return _ordered_range(v, 1, 100, "jpeg_quality")


class SecondPassParams(_PassParams):
    """The second pass of ``passes: 2`` (Real-ESRGAN's second-order degradation), its own ranges."""

    blur_prob: float = Field(0.8, ge=0, le=1, description="second pass: probability that an image is blurred")
    blur_sigma: tuple[float, float] = Field((0.2, 1.5), description="second pass: Gaussian blur sigma, [low, high]")
    noise_sigma: tuple[float, float] = Field((1.0, 25.0), description="second pass: noise sigma, [low, high]")
    jpeg_quality: tuple[int, int] = Field((30, 95), description="second pass: JPEG quality, [low, high]")


class DegradationParams(_PassParams):
    kind: Literal["bicubic", "realistic"] = Field("bicubic", description="bicubic: the paper protocol")
    order: list[Literal["blur", "resize", "noise", "jpeg"]] = Field(
        default_factory=lambda: ["blur", "resize", "noise", "jpeg"], description="realistic: the chain's steps, in order"
    )
    on_the_fly: bool = Field(False, description="realistic: degrade every training crop anew while training")
    passes: Literal[1, 2] = Field(1, description="2: the chain twice (Real-ESRGAN's second order)")
    resize_range: tuple[float, float] = Field((0.5, 1.5), description="passes 2: first pass's random resize factor")
    resize_modes: list[Literal["area", "bilinear", "bicubic"]] = Field(
        default_factory=lambda: ["area", "bilinear", "bicubic"], min_length=1,
        description="passes 2: resize modes drawn from")
    second: SecondPassParams = Field(default_factory=SecondPassParams)

    @field_validator("resize_range")
    @classmethod
    def _resize_range(cls, v):
        return _ordered_range(v, 0.05, 4, "resize_range")

    @model_validator(mode="after")
    def _on_the_fly_is_realistic(self) -> "DegradationParams":
        if self.on_the_fly and self.kind != "realistic":
            raise ValueError("degradation.on_the_fly needs degradation.kind: realistic (bicubic LR is stored already)")
        return self

    @field_validator("order")
    @classmethod
    def _order_once_each(cls, v: list[str]) -> list[str]:
        if v.count("resize") != 1 or len(set(v)) != len(v):
            raise ValueError("each of blur, resize, noise, jpeg at most once, and resize exactly once")
        return v


# srpipe's own architectures (srpipe/models/edsr.py, rcan.py, rlfn.py) and spandrel's, which
# srpipe trains through srpipe/models/zoo.py (https://github.com/chaiNNer-org/spandrel).
OWN_ARCHS = ("edsr", "rcan", "rlfn")
ZOO_ARCHS = ("span", "compact", "esrgan", "safmn", "realplksr", "omnisr", "swinir")

# Named model sizes. srpipe's own: `preset: custom` (or null) uses the sizes given in the section.
# spandrel's: the keyword arguments of spandrel's class (its names), the first preset is the default.
PRESETS: dict[str, dict[str, dict]] = {
    "edsr": {
        "baseline": {"n_resblocks": 16, "n_feats": 64, "res_scale": 1.0},
        "full": {"n_resblocks": 32, "n_feats": 256, "res_scale": 0.1},
    },
    "rcan": {"default": {"n_resgroups": 10, "n_resblocks": 20, "n_feats": 64, "reduction": 16, "res_scale": 1.0}},
    "rlfn": {  # the paper's body sizes; srpipe's own tail adds about 0.09 M parameters (docs/training.md)
        "default": {"n_resblocks": 6, "n_feats": 52, "esa_channels": 16},
        "small": {"n_resblocks": 6, "n_feats": 48, "esa_channels": 16},
    },
    "span": {"default": {"feature_channels": 48, "norm": False}},
    "compact": {
        "default": {"num_feat": 64, "num_conv": 16},
        "general": {"num_feat": 64, "num_conv": 32},
        "ultra": {"num_feat": 64, "num_conv": 8},
    },
    "esrgan": {"default": {"num_filters": 64, "num_blocks": 23}},
    "safmn": {"default": {"dim": 36, "n_blocks": 8, "ffn_scale": 2.0}},
    "realplksr": {"default": {"dim": 64, "n_blocks": 28, "kernel_size": 17, "split_ratio": 0.25, "use_ea": True}},
    "omnisr": {"default": {"num_feat": 64, "res_num": 5, "block_num": 1, "window_size": 8, "pe": True}},
    "swinir": {
        "light": {"img_size": 64, "window_size": 8, "embed_dim": 60, "depths": [6, 6, 6, 6],
                  "num_heads": [6, 6, 6, 6], "mlp_ratio": 2.0, "upsampler": "pixelshuffledirect"},
        "classical": {"img_size": 64, "window_size": 8, "embed_dim": 180, "depths": [6, 6, 6, 6, 6, 6],
                      "num_heads": [6, 6, 6, 6, 6, 6], "mlp_ratio": 2.0, "upsampler": "pixelshuffle"},
    },
}

# Where each architecture and its presets come from (docs/architectures.md, `srpipe train --help`).
SOURCES: dict[str, str] = {
    "edsr": "EDSR (Lim et al., 2017): baseline 16x64, full 32x256; srpipe's own",
    "rcan": "RCAN (Zhang et al., 2018): 10 groups of 20 blocks, 64 features; srpipe's own",
    "rlfn": "RLFN (Kong et al., 2022), NTIRE 2022 efficient-SR winner: 6 blocks, 52 or 48 features; srpipe's own",
    "span": "SPAN (Wan et al., 2024), NTIRE 2024 efficient-SR winner: 48 channels, as in its paper, without its input "
            "normalisation (norm: false, as traiNNer-redux trains it: with it, an untrained SPAN's outputs are some 255 "
            "times too large and training diverged at once)",
    "compact": "Real-ESRGAN's SRVGGNetCompact (Wang et al., 2021): 64 features and 16 convs (realesr-animevideov3), "
               "general: 32 (realesr-general-x4v3), ultra: 8 (traiNNer-redux's UltraCompact)",
    "esrgan": "ESRGAN's RRDBNet (Wang et al., 2018): 64 features, 23 RRDBs, as in its paper and Real-ESRGAN",
    "safmn": "SAFMN (Sun et al., 2023): 36 channels, 8 blocks, FFN x2, as in its paper",
    "realplksr": "RealPLKSR (PLKSR, Lee et al., 2024; the 'Real' variant of neosr / traiNNer-redux): 64 channels, "
                 "28 blocks, 17x17 partial kernel on a quarter of the channels",
    "omnisr": "Omni-SR (Wang et al., 2023): 64 features, 5 OSAGs, window 8, as in its paper",
    "swinir": "SwinIR (Liang et al., 2021): light (60 dim, 4x6 blocks, pixelshuffledirect) and classical (180 dim, "
              "6x6 blocks), window 8, as in its paper's released models",
}

# The sizes of the model section that an architecture does not take (spandrel's take none of them).
OWN_SIZES = ("n_resgroups", "n_resblocks", "n_feats", "res_scale", "attention", "reduction", "esa_channels",
             "rgb_mean", "img_range")
NOT_TAKEN: dict[str, set[str]] = {
    "edsr": {"n_resgroups", "esa_channels"},
    "rcan": {"attention", "esa_channels"},
    "rlfn": {"n_resgroups", "attention", "reduction", "res_scale"},
    **{name: set(OWN_SIZES) for name in ZOO_ARCHS},
}


class ModelParams(_Section):
    name: Literal[OWN_ARCHS + ZOO_ARCHS] = Field("edsr", description=(
        "edsr | rcan | rlfn (srpipe's own) or span | compact | esrgan | safmn | realplksr | omnisr | swinir (spandrel's)"))
    preset: Optional[str] = Field(None, description=(
        "null: the architecture's default (srpipe's own: the sizes below; spandrel's: its first preset); "
        "custom: the sizes below; or a named size: edsr baseline|full, rcan default, rlfn default|small, "
        "compact default|general|ultra, swinir light|classical, the others default"))
    kwargs: dict[str, Any] = Field(default_factory=dict, description=(
        "spandrel's architectures: keyword arguments of its class, over the preset (e.g. {num_conv: 8} for compact)"))
    n_resgroups: int = Field(10, ge=1, le=64, description="rcan: residual groups")
    n_resblocks: int = Field(8, ge=1, le=256, description="edsr: residual blocks; rcan: blocks per group; rlfn: RLFBs")
    n_feats: int = Field(32, ge=4, le=1024, description="srpipe's own: feature channels (the network's width)")
    res_scale: float = Field(1.0, gt=0, le=1, description="edsr, rcan: residual scaling (EDSR-L: 0.1)")
    attention: bool = Field(False, description="edsr: RCAN channel attention in every block (rcan always has it)")
    reduction: int = Field(16, ge=1)
    esa_channels: int = Field(16, ge=1, le=1024, description="rlfn: channels of the spatial attention (ESA)")
    global_skip: Optional[Literal["bicubic", "none"]] = Field(None, description=(
        "add the bicubic-upscaled input to the output; null: the architecture's own (srpipe's: bicubic, "
        "spandrel's: none, as spandrel runs them)"))
    rgb_mean: Optional[tuple[float, float, float]] = Field(
        None, description="input mean shift (BasicSR/EDSR MeanShift); null: none"
    )
    img_range: float = Field(1.0, gt=0, description="the network sees (x - rgb_mean) * img_range; BasicSR: 255")

    @property
    def from_spandrel(self) -> bool:
        return self.name in ZOO_ARCHS

    @model_validator(mode="after")
    def _known_preset(self) -> "ModelParams":
        named = list(PRESETS.get(self.name, {}))
        allowed = named if self.from_spandrel else ["custom", *named]
        if self.preset is not None and self.preset not in allowed:
            hint = "; give other sizes in model.kwargs" if self.preset == "custom" else ""
            raise ValueError(f"model.preset {self.preset!r} is not one for {self.name}; allowed: "
                             f"{', '.join(allowed)} (or null){hint}")
        if self.kwargs and not self.from_spandrel:
            raise ValueError(f"model.kwargs is for spandrel's architectures; {self.name} takes the sizes of the "
                             "model section (n_resblocks, n_feats, ...)")
        return self

    def sizes(self) -> dict:
        """The architecture's keyword arguments, with the preset (if any) applied. For spandrel's:
        ``global_skip`` and ``ctor``, its class's keyword arguments (preset, then ``kwargs``; the
        scale is added by the model builder)."""
        if self.from_spandrel:
            preset = PRESETS[self.name][self.preset or next(iter(PRESETS[self.name]))]
            return {"global_skip": self.global_skip or "none", "ctor": {**preset, **self.kwargs}}
        sizes = self.model_dump(exclude={"name", "preset", "kwargs"})
        sizes.update(PRESETS.get(self.name, {}).get(self.preset or "custom", {}))
        sizes["global_skip"] = self.global_skip or "bicubic"
        return {k: v for k, v in sizes.items() if k not in NOT_TAKEN[self.name]}

    def unused(self) -> list[str]:
        """The keys set away from their defaults that this architecture does not take (a warning's worth)."""
        defaults = type(self)()
        return [f"model.{k}" for k in sorted(NOT_TAKEN[self.name]) if getattr(self, k) != getattr(defaults, k)]


# Real-ESRGAN's perceptual weights (0.1, 0.1, 1, 1, 1 on VGG19's conv1_2 ... conv5_4) on VGG16's layers
PERCEPTUAL_LAYERS = {"conv1_2": 0.1, "conv2_2": 0.1, "conv3_3": 1.0, "conv4_3": 1.0, "conv5_3": 1.0}


class TrainParams(_Section):
    epochs: int = Field(10, ge=1, description="epochs of train.steps_per_epoch steps; validation at each end")
    batch_size: int = Field(16, ge=1, description="patches per optimiser step and accumulation slice")
    grad_accum: int = Field(1, ge=1, description="effective batch = batch_size * grad_accum")
    steps_per_epoch: Optional[int] = Field(None, ge=1, description="null: as many crops as fit side by side in the images")
    patch_size: Optional[int] = Field(None, ge=4, description="HR crop side; null: 48 * scale (EDSR's LR patch of 48)")
    texture_sampling: float = Field(0.0, ge=0, le=4, description=(
        "draw crops with weight (detail under the crop / mean detail)^this; 0: uniform over positions"))
    save_every: int = Field(500, ge=0, description="steps between saves of last.pt inside an epoch; 0: epoch ends only")
    snapshot_every: int = Field(0, ge=0, description="keep the weights of every Nth epoch in snapshots/; 0: off")
    init_from: Optional[str] = Field(None, description="start from this checkpoint's tensors whose name and shape match")
    val_images: Optional[int] = Field(None, ge=1, description="validate on the first N images; null: all")
    val_tile: Optional[int] = Field(512, ge=16, description="LR tile side for validation; null: whole images")
    loss: Literal["l1", "l2", "charbonnier"] = "l1"
    pixel_weight: float = Field(1.0, ge=0, description="weight of train.loss (the pixel loss)")
    perceptual_weight: float = Field(0.0, ge=0, description="weight of the VGG16 perceptual loss; 0: off")
    perceptual_layers: dict[str, float] = Field(
        default_factory=lambda: dict(PERCEPTUAL_LAYERS),
        description="VGG16 layer (pre-ReLU) -> weight of its L1 term; default: Real-ESRGAN's weights on VGG16")
    vgg16_backbone: Optional[str] = Field(
        None, description="local VGG16 features file for the perceptual loss; null: $SRPIPE_VGG16_BACKBONE or download")
    gan_weight: float = Field(0.0, ge=0, description=(
        "weight of the adversarial loss against the `discriminator` (Real-ESRGAN: 0.1); 0: off"))
    best_metric: Literal["psnr", "lpips"] = Field("psnr", description=(
        "what picks best.pt: validation PSNR (higher), or LPIPS (lower; for perceptual and GAN training)"))
    chroma_weight: Optional[float] = Field(None, ge=0, le=1, description=(
        "null: the loss on R, G, B; a number: on BT.601 Y (what PSNR/SSIM score) plus this times on Cb and Cr"))
    lr: float = Field(2e-4, gt=0, le=1)
    betas: tuple[float, float] = Field((0.9, 0.999), description="Adam's betas")
    warmup_epochs: int = Field(1, ge=0)
    schedule: Literal["cosine", "linear", "step"] = "cosine"
    min_lr_ratio: float = Field(0.01, ge=0, le=1, description="cosine, linear: final lr = lr * min_lr_ratio")
    step_size: int = Field(200, ge=1, description="step: multiply lr by gamma every step_size epochs")
    gamma: float = Field(0.5, gt=0, le=1, description="step: the factor lr is multiplied by every step_size epochs")
    ema: Optional[float] = Field(None, gt=0, lt=1, description="EMA decay of the weights; null: off")
    zero_init_residual: bool = Field(False, description=(
        "start every residual block (edsr, rcan) as the identity: its branch's last convolution zeroed (SkipInit)"))
    grad_clip: Optional[float] = Field(None, gt=0, description=(
        "scale the gradients down to this global L2 norm when above it (EDSR's --gclip); null: off"))
    amp: Literal["auto", "none", "bf16"] = Field("none", description="bf16 autocast; auto: where the device has it")
    channels_last: bool = Field(False, description="train in the channels_last memory format (faster convolutions)")
    compile: bool = False
    device: Literal["auto", "cpu", "cuda"] = "auto"
    workers: Optional[int] = Field(None, ge=0, le=64, description="DataLoader workers; null: 0 on CPU, up to 8 on GPU")
    threads: Optional[int] = Field(None, ge=1, description="torch intra-op threads; null: all cores")
    feature_stats_every: int = Field(50, ge=0, description="steps between feature statistics in TensorBoard; 0: off")

    @field_validator("perceptual_layers")
    @classmethod
    def _vgg16_layers(cls, v: dict[str, float]) -> dict[str, float]:
        from .vgg import VGG16_CONVS

        unknown = sorted(set(v) - set(VGG16_CONVS))
        if unknown or not v:
            raise ValueError(f"{', '.join(unknown) or 'no layer'}: give VGG16 layers among {', '.join(VGG16_CONVS)}")
        if any(w < 0 for w in v.values()):
            raise ValueError("layer weights must be >= 0")
        return v

    @field_validator("betas")
    @classmethod
    def _betas_in_range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(0 <= b < 1 for b in v):
            raise ValueError("both betas must be in [0, 1)")
        return v


class DiscriminatorParams(_Section):
    """The GAN's discriminator (used when ``train.gan_weight`` > 0). Its schedule has the shape of
    ``train``'s (warm-up, then cosine, linear or step) on its own ``lr``."""

    name: Literal["unet_sn", "patchgan_sn"] = Field("unet_sn", description=(
        "unet_sn: Real-ESRGAN's U-Net with spectral norm (a real/fake score per pixel); patchgan_sn: "
        "pix2pix's 70x70 PatchGAN with spectral norm (a score per patch, cheaper)"))
    features: int = Field(64, ge=4, le=512, description="channels of the first layer (doubled at each downsampling)")
    lr: float = Field(1e-4, gt=0, le=1)
    betas: tuple[float, float] = Field((0.9, 0.99), description="its Adam's betas")

    @field_validator("betas")
    @classmethod
    def _betas_in_range(cls, v: tuple[float, float]) -> tuple[float, float]:
        return TrainParams._betas_in_range(v)


class EvalParams(_Section):
    datasets: list[str] = Field(default_factory=lambda: ["sample-valid"], min_length=1)
    degradation: Literal["same", "bicubic"] = Field("same", description="LR of validation/eval sets")
    crop_border: Optional[int] = Field(None, ge=0, description="null: crop `scale` pixels")
    y_channel: bool = True
    lpips: bool = Field(True, description="also score LPIPS (AlexNet; lower is closer)")
    self_ensemble: bool = Field(False, description="also score the model averaged over 8 flips/rotations (EDSR+)")
    lpips_backbone: Optional[str] = Field(
        None, description="local AlexNet backbone file for LPIPS; null: $SRPIPE_LPIPS_BACKBONE or download"
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description=(
        "where PyTorch models are scored and run (evaluate, upscale, benchmark); auto: CUDA when present"))
    precision: Literal["fp32", "fp16", "bf16"] = Field("fp32", description=(
        "evaluate: also score the model in this half precision (CUDA only), as its own entry beside fp32"))
    detail_crops: int = Field(3, ge=0, le=20, description=(
        "evaluate: per dataset, this many fixed crops (the HR windows richest in detail) of HR | bicubic | model "
        "as PNG image plots in stages/evaluate/crops; 0: none"))
    dists: bool = Field(False, description="also score DISTS (VGG16 structure and texture; lower is closer)")
    vgg16_backbone: Optional[str] = Field(
        None, description="local VGG16 features file for DISTS; null: $SRPIPE_VGG16_BACKBONE or download"
    )

    def crop(self, scale: int) -> int:
        """Pixels cropped at each border for a model of ``scale``: crop_border, or the scale."""
        return scale if self.crop_border is None else self.crop_border


class ExportParams(_Section):
    opset: int = Field(17, ge=13, le=23, description="ONNX opset of the exported graph")
    precision: list[Literal["fp32", "int8", "fp16"]] = Field(default_factory=lambda: ["fp32", "int8"])
    check_images: int = Field(1, ge=1, description="validation images compared between ONNX Runtime and PyTorch")
    calibration_patches: int = Field(32, ge=1, description="int8: validation patches to calibrate on")
    calibration_size: int = Field(64, ge=8, description="int8: LR side of a calibration patch")
    int8_reduce_range: bool = Field(
        True, description="int8: 7-bit weights, exact on every x86 CPU (full-range weights overflow ONNX Runtime's "
        "kernel on CPUs without VNNI); false only for models that run where VNNI or ARM kernels do")

    @field_validator("precision")
    @classmethod
    def _fp32_first(cls, v: list[str]) -> list[str]:
        if not v or v[0] != "fp32" or len(set(v)) != len(v):
            raise ValueError("a list of distinct precisions starting with fp32 (the others derive from it)")
        return v


class BenchmarkParams(_Section):
    sizes: list[tuple[int, int]] = Field(default_factory=lambda: [(128, 128), (256, 256)])
    threads: list[int] = Field(default_factory=lambda: [1, 2], description="CPU thread counts to measure")
    warmup: int = Field(2, ge=0, description="untimed runs before each measurement")
    repeats: int = Field(10, ge=10, description="timed runs per configuration (at least 10)")

    @field_validator("sizes")
    @classmethod
    def _positive_sizes(cls, v: list[tuple[int, int]]) -> list[tuple[int, int]]:
        if not v or any(h < 1 or w < 1 for h, w in v):
            raise ValueError("need at least one [height, width] pair of positive integers")
        return v

    @field_validator("threads")
    @classmethod
    def _positive_threads(cls, v: list[int]) -> list[int]:
        if not v or any(t < 1 for t in v):
            raise ValueError("need at least one positive thread count")
        return v


class Params(_Section):
    seed: int = Field(0, ge=0, description="of every random draw: crops, degradations, initial weights")
    scale: Literal[2, 3, 4, 8] = 2
    data: DataParams = Field(default_factory=DataParams)
    degradation: DegradationParams = Field(default_factory=DegradationParams)
    model: ModelParams = Field(default_factory=ModelParams)
    train: TrainParams = Field(default_factory=TrainParams)
    discriminator: DiscriminatorParams = Field(default_factory=DiscriminatorParams)
    eval: EvalParams = Field(default_factory=EvalParams)
    export: ExportParams = Field(default_factory=ExportParams)
    benchmark: BenchmarkParams = Field(default_factory=BenchmarkParams)

    @model_validator(mode="after")
    def _crop_divisible_by_scale(self) -> "Params":
        crop = self.train.patch_size
        if crop is not None and crop % self.scale:
            raise ValueError(f"train.patch_size={crop} is not divisible by scale={self.scale}; "
                             f"use a multiple of {self.scale}")
        return self


def _allowed_keys(loc: tuple) -> list[str]:
    """Field names allowed at the parent of ``loc`` (used for unknown-key messages)."""
    model: type[BaseModel] = Params
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return []
        model = field.annotation
    return list(model.model_fields)


def _format_error(err: dict, source: str) -> str:
    loc = tuple(err.get("loc", ()))
    key = ".".join(str(p) for p in loc if not isinstance(p, int)) or "(top level)"
    if err["type"] == "extra_forbidden":
        allowed = ", ".join(_allowed_keys(loc))
        return f"{source}: unknown key '{key}'; allowed keys here: {allowed}"
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"].startswith("value_error") and not loc:
        return f"{source}: {msg}"
    if isinstance(err.get("input"), dict):  # a whole-section check: its message names the keys
        return f"{source}: {msg}"
    return f"{source}: {key}: {msg} (got {err.get('input')!r})"


def parse_override(item: str) -> tuple[list[str], Any]:
    """Split ``key.sub=value`` into a key path and a YAML-parsed value."""
    if "=" not in item:
        raise ParamsError(f"--set {item!r}: expected key.sub=value")
    key, raw = item.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ParamsError(f"--set {item!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ParamsError(f"--set {item!r}: the value is {yaml_error(exc)}") from None
    return parts, value


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    for item in overrides:
        parts, value = parse_override(item)
        node = raw
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ParamsError(f"--set {item!r}: '{part}' is not a section")
            node = child
        node[parts[-1]] = value
    return raw


def validate_params(raw: dict, source: str = "params") -> Params:
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise ParamsError(_format_error(exc.errors()[0], source)) from None


def yaml_error(exc: yaml.YAMLError) -> str:
    """A YAML error in one line: where (line and column, 1-based) and what."""
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    return f"not valid YAML{where}: {what}" + (f" ({context})" if context else "")


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader that refuses a key given twice in one mapping (PyYAML keeps the last one
    silently; `dvc repro` refuses the file), naming the key's path and both lines."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                where = ".".join([*self._path(node), str(key)])
                raise ParamsError(f"duplicate key '{where}' (lines {seen[key] + 1} and {key_node.start_mark.line + 1}); "
                                  "keep one of them")
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)

    def _path(self, node) -> list[str]:
        """The keys leading to mapping ``node`` from the document's root."""
        def walk(current, trail):
            if current is node:
                return trail
            for k, v in getattr(current, "value", []) if isinstance(current, yaml.MappingNode) else []:
                found = walk(v, [*trail, str(k.value)])
                if found is not None:
                    return found
            return None

        return walk(self._root, []) or []

    def get_single_node(self):
        self._root = super().get_single_node()
        return self._root


def load_params(path: str | Path = "params.yaml", overrides: list[str] | None = None) -> Params:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ParamsError(f"cannot read params file {path}: {exc.strerror}") from None
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506: a SafeLoader
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: {yaml_error(exc)}") from None
    except ParamsError as exc:
        raise ParamsError(f"{path}: {exc}") from None
    if raw is None:
        raise ParamsError(f"{path} is empty; copy params.yaml from the srpipe project (every key has a default "
                          "there) and change what you need")
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping of sections at the top level")
    return validate_params(apply_overrides(raw, overrides or []), str(path))
