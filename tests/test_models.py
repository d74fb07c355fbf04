import pytest
import torch
import torch.nn.functional as F

from srpipe.config import ModelParams
from srpipe.models import build_model, count_parameters, macs_per_output_pixel, save_checkpoint
from srpipe.models.common import ESA, RLFB, CALayer, ResBlock, zero_init_residual
from srpipe.training import model_arch

from .conftest import load_model


@pytest.mark.parametrize("scale", [2, 3, 4, 8])
def test_output_is_scale_times_input(scale):
    model = build_model("edsr", scale=scale, n_resblocks=2, n_feats=8)
    assert model(torch.rand(2, 3, 10, 12)).shape == (2, 3, 10 * scale, 12 * scale)


def test_upsampling_only_at_the_end():
    model = build_model("edsr", scale=2, n_resblocks=2, n_feats=8)
    shuffles = [n for n, m in model.named_modules() if isinstance(m, torch.nn.PixelShuffle)]
    assert shuffles and all(n.startswith("tail.") for n in shuffles)


def test_attention_adds_channel_attention_to_every_block():
    plain = build_model("edsr", scale=2, n_resblocks=3, n_feats=32)
    rcab = build_model("edsr", scale=2, n_resblocks=3, n_feats=32, attention=True, reduction=16)
    assert sum(isinstance(m, CALayer) for m in rcab.modules()) == 3
    # each CALayer: 32->2 and 2->32 1x1 convs with biases
    assert count_parameters(rcab) - count_parameters(plain) == 3 * (32 * 2 + 2 + 2 * 32 + 32)


def test_bicubic_global_skip_passes_input_through_a_zero_network():
    model = build_model("edsr", scale=2, n_resblocks=1, n_feats=8, global_skip="bicubic")
    torch.nn.init.zeros_(model.tail[-1].weight)
    torch.nn.init.zeros_(model.tail[-1].bias)
    x = torch.rand(1, 3, 9, 11)
    expected = F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False)
    torch.testing.assert_close(model(x), expected)


def test_checkpoint_rebuilds_model_without_params(tmp_path):
    arch = model_arch(ModelParams(n_resblocks=2, n_feats=8, attention=True, reduction=4), scale=3)
    model = build_model(arch["name"], **arch["kwargs"])
    save_checkpoint(tmp_path / "m.pt", model, arch, epoch=7)
    loaded, ckpt = load_model(tmp_path / "m.pt")
    x = torch.rand(1, 3, 8, 8)
    torch.testing.assert_close(loaded(x), model.eval()(x))
    assert ckpt["epoch"] == 7 and ckpt["arch"]["kwargs"]["scale"] == 3


@pytest.mark.parametrize("name,preset,params", [
    ("edsr", "baseline", 1_369_859),  # 1.37M in the EDSR paper (x2)
    ("edsr", "full", 40_729_603),  # 40.7M
    ("rcan", "default", 15_444_643),  # RCAN: 10 groups x 20 RCABs x 64 features
])
def test_presets_have_the_papers_sizes(name, preset, params):
    arch = model_arch(ModelParams(name=name, preset=preset), scale=2)
    assert count_parameters(build_model(arch["name"], **arch["kwargs"])) == params


def test_rcan_groups_of_rcabs():
    model = build_model("rcan", scale=4, n_resgroups=2, n_resblocks=3, n_feats=16, reduction=4)
    assert sum(isinstance(m, CALayer) for m in model.modules()) == 6
    assert model(torch.rand(1, 3, 6, 7)).shape == (1, 3, 24, 28)


def test_preset_must_belong_to_the_architecture():
    with pytest.raises(ValueError, match="model.preset 'full' is not one for rcan; allowed: custom, default"):
        ModelParams(name="rcan", preset="full")


def test_macs_per_output_pixel_of_edsr_baseline():
    model = build_model("edsr", scale=2, n_resblocks=16, n_feats=64, global_skip="none")
    # 33 LR-space 3x3 convs 64->64 (+ head 3->64, upsampler 64->256) per 4 output pixels, tail 64->3
    lr_macs = 33 * 64 * 64 * 9 + 3 * 64 * 9 + 64 * 256 * 9
    assert macs_per_output_pixel(model) == pytest.approx(lr_macs / 4 + 64 * 3 * 9)


def rlfb_parameters(nf: int, f: int) -> int:
    """Three 3x3 convs, the 1x1 fuse, and ESA's 1x1 squeeze, 1x1 skip, two 3x3 and 1x1 expand (with biases)."""
    esa = (nf * f + f) + (f * f + f) + 2 * (f * f * 9 + f) + (f * nf + nf)
    return 3 * (nf * nf * 9 + nf) + (nf * nf + nf) + esa


def test_rlfn_is_rlfbs_in_the_residual_shell():
    plain = build_model("edsr", scale=2, n_resblocks=0, n_feats=32)  # head, body conv, tail
    rlfn = build_model("rlfn", scale=2, n_resblocks=5, n_feats=32, esa_channels=16)
    assert sum(isinstance(m, RLFB) for m in rlfn.modules()) == 5
    assert count_parameters(rlfn) - count_parameters(plain) == 5 * rlfb_parameters(32, 16)
    arch = model_arch(ModelParams(name="rlfn", preset="small"), scale=2)
    assert arch["kwargs"] == {"scale": 2, "n_resblocks": 6, "n_feats": 48, "esa_channels": 16,
                              "global_skip": "bicubic", "rgb_mean": None, "img_range": 1.0}
    # EDSR's and RCAN's kwargs (and so their runs' fingerprints and checkpoints) are as before RLFN came
    assert set(model_arch(ModelParams(), 2)["kwargs"]) == {"scale", "n_resblocks", "n_feats", "res_scale", "attention",
                                                          "reduction", "global_skip", "rgb_mean", "img_range"}
    assert "esa_channels" not in model_arch(ModelParams(name="rcan"), 2)["kwargs"]
    # the paper's RLFN-S body at x2 (6 RLFBs of 48 features) in srpipe's shell, whose tail is its own
    assert count_parameters(build_model(arch["name"], **arch["kwargs"])) == 533_859


@pytest.mark.parametrize("size", [(1, 1), (2, 7), (16, 16), (17, 23)])
def test_rlfn_takes_any_input_size(size):
    """The paper's unpadded ESA needs 17 LR pixels; srpipe's padded one takes a 1-pixel image."""
    model = build_model("rlfn", scale=3, n_resblocks=1, n_feats=8, esa_channels=4)
    assert model(torch.rand(1, 3, *size)).shape == (1, 3, 3 * size[0], 3 * size[1])


def test_esa_gates_every_pixel_by_its_neighbourhood():
    torch.manual_seed(0)
    esa = ESA(8, 4)
    x = torch.rand(1, 8, 20, 20)
    torch.nn.init.zeros_(esa.expand.weight)
    torch.nn.init.zeros_(esa.expand.bias)
    torch.testing.assert_close(esa(x), x * 0.5)  # a zero map: sigmoid(0) halves every feature
    esa = ESA(8, 4)
    gate = esa(x) / x
    far = x.clone()
    far[..., :10, :10] += 1.0  # a change in the top-left quarter reaches the bottom-right pixel through the pooled view
    assert not torch.allclose((esa(far) / far)[..., -1, -1], gate[..., -1, -1])
    assert ((gate > 0) & (gate < 1)).all()


@pytest.mark.parametrize("name, sizes, blocks", [
    ("edsr", {"n_resblocks": 3, "n_feats": 8, "attention": True, "reduction": 4}, 3),
    ("rcan", {"n_resgroups": 2, "n_resblocks": 2, "n_feats": 8, "reduction": 4}, 4),
    ("rlfn", {"n_resblocks": 1, "n_feats": 8, "esa_channels": 4}, 0),
])
def test_zero_init_residual_starts_every_residual_block_as_the_identity(name, sizes, blocks):
    torch.manual_seed(0)
    model = build_model(name, scale=2, **sizes)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert zero_init_residual(model) == blocks
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert len(changed) == 2 * blocks and all(k.endswith(("body.2.weight", "body.2.bias")) for k in changed)
    x = torch.rand(1, 8, 5, 6)
    for block in (m for m in model.modules() if isinstance(m, ResBlock)):
        assert torch.equal(block(x), x)
