"""The x8 self-ensemble (EDSR+): exactly equivariant, the mean of the 8 transformed outputs, the
same for PyTorch and ONNX Runtime, and reported beside the plain model by evaluate and upscale."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from srpipe.cli import app
from srpipe.export import export_onnx
from srpipe.io import read_image
from srpipe.models import build_model, save_checkpoint
from srpipe.upscalers import onnx_upscaler, ort_session, torch_upscaler

from .conftest import DATA, need

runner = CliRunner()
KWARGS = {"scale": 2, "n_resblocks": 2, "n_feats": 8}
# the 8 flips and quarter turns of an HxWxC image
TRANSFORMS = [(flip, turns) for flip in (False, True) for turns in range(4)]


def transform(img, flip, turns):
    return np.rot90(img[:, ::-1] if flip else img, turns)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    model = build_model("edsr", **KWARGS)
    with torch.no_grad():  # a residual of visible size, far from equivariant, as a trained model's
        model.tail[-1].weight.mul_(20)
    return model.eval()


@pytest.fixture(scope="module")
def photo():
    return read_image(need(DATA) / "Set14" / "baboon.png")[:37, :52]  # odd sizes, not square


def test_the_ensemble_is_exactly_equivariant(net, photo, tmp_path):
    export_onnx(net, tmp_path / "m.onnx", 17, net.scale)
    for up in (torch_upscaler(net, ensemble=True), onnx_upscaler(ort_session(tmp_path / "m.onnx"), ensemble=True)):
        base = up(photo)
        for flip, turns in TRANSFORMS:
            np.testing.assert_array_equal(up(np.ascontiguousarray(transform(photo, flip, turns))),
                                          transform(base, flip, turns))
    plain = torch_upscaler(net)
    assert not np.array_equal(plain(np.ascontiguousarray(photo[:, ::-1])), plain(photo)[:, ::-1])  # the model is not


def test_the_ensemble_is_the_mean_of_the_eight_outputs(net, photo):
    x = torch.from_numpy(np.ascontiguousarray(photo)).permute(2, 0, 1)[None].float() / 255
    outs = []
    with torch.no_grad():
        for flip, turns in TRANSFORMS:
            t = torch.rot90(x.flip(-1) if flip else x, turns, dims=(2, 3))
            y = torch.rot90(net(t), -turns, dims=(2, 3)).double()
            outs.append(y.flip(-1) if flip else y)
    mean = torch.stack(outs).mean(0)[0].clamp(0, 1).mul(255).permute(1, 2, 0).numpy()
    got = torch_upscaler(net, ensemble=True)(photo).astype(float)
    assert np.abs(got - mean).max() <= 0.5 + 1e-3  # the same mean, rounded
    assert np.abs(got - torch_upscaler(net)(photo)).max() >= 2  # and not the plain output


def test_evaluate_reports_the_ensemble_beside_the_model(tmp_path, monkeypatch, net):
    monkeypatch.chdir(tmp_path)
    save_checkpoint(tmp_path / "m.pt", net, {"name": "edsr", "kwargs": KWARGS})
    result = runner.invoke(app, ["evaluate", "--hr-dir", str(need(DATA) / "Set5"), "--checkpoint", "m.pt",
                                 "--out", "set5.json", "--set", "eval.self_ensemble=true", "--set", "eval.lpips=false"])
    assert result.exit_code == 0, result.output
    scores = json.loads((tmp_path / "set5.json").read_text())
    assert set(scores["ensemble"]) == {"psnr", "ssim"} and scores["ensemble"]["psnr"] != scores["psnr"]
    from srpipe.data import make_pairs
    from srpipe.evaluate import evaluate, summarize

    direct = summarize(evaluate(torch_upscaler(net, ensemble=True), make_pairs(str(DATA / "Set5"), 2), crop_border=2))
    assert scores["ensemble"] == pytest.approx(direct, abs=1e-9)


def test_upscale_ensemble(tmp_path, net, photo):
    import cv2

    save_checkpoint(tmp_path / "m.pt", net, {"name": "edsr", "kwargs": KWARGS})
    cv2.imwrite(str(tmp_path / "in.png"), cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
    result = runner.invoke(app, ["upscale", str(tmp_path / "in.png"), "--model", str(tmp_path / "m.pt"),
                                 "--out", str(tmp_path / "out"), "--ensemble", "--tile", "0"])
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(read_image(tmp_path / "out" / "in_x2.png"), torch_upscaler(net, ensemble=True)(photo))
