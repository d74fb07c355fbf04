"""DISTS: parity with the authors' package on real images, the VGG16 backbone from a local file,
and one line for every way the backbone can be missing."""

import json
import types
import urllib.error

import pytest
import torch
import torchvision
from typer.testing import CliRunner

from srpipe.cli import app
from srpipe.dists import DISTS
from srpipe.imresize import crop_to_multiple, imresize
from srpipe.io import SrpipeError, read_image


@pytest.fixture
def reference(vgg16):
    """The authors' DISTS_pytorch.DISTS, its VGG16 given the same local weights (it would download them)."""
    import importlib.resources

    import DISTS_pytorch.DISTS_pt as authors

    net = torchvision.models.vgg16(weights=None)
    net.features.load_state_dict({k.removeprefix("features."): v
                                  for k, v in torch.load(vgg16, weights_only=True).items()})
    saved = authors.models
    authors.models = types.SimpleNamespace(vgg16=lambda pretrained=True: net)
    try:
        model = authors.DISTS(load_weights=False)
    finally:
        authors.models = saved
    with importlib.resources.as_file(importlib.resources.files("DISTS_pytorch") / "weights.pt") as path:
        weights = torch.load(path, weights_only=True)
    model.alpha.data, model.beta.data = weights["alpha"], weights["beta"]
    return model.eval()


def as_tensor(img):
    return torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255


@pytest.mark.parametrize("name,scale", [("baby.png", 4), ("bird.png", 2), ("butterfly.png", 4)])
def test_dists_equals_the_authors_package_on_real_images(shared_data, vgg16, reference, name, scale):
    hr = crop_to_multiple(read_image(shared_data / "Set5" / name), scale)
    sr = imresize(imresize(hr, 1 / scale), scale)
    ours = DISTS(vgg16)
    with torch.no_grad():
        expected = reference(as_tensor(sr), as_tensor(hr)).item()
    got = ours(sr, hr)
    assert got == pytest.approx(expected, abs=1e-4)
    assert 0.02 < got < 0.5
    assert ours(hr, hr) == pytest.approx(0.0, abs=1e-5)
    # the border crop scores the inner image
    assert ours(sr, hr, crop_border=scale) == pytest.approx(
        reference(as_tensor(sr[scale:-scale, scale:-scale]), as_tensor(hr[scale:-scale, scale:-scale])).item(),
        abs=1e-4)


def test_the_backbone_comes_from_the_environment_variable(vgg16, monkeypatch):
    monkeypatch.setenv("SRPIPE_VGG16_BACKBONE", str(vgg16))
    a = torch.full((48, 48, 3), 90, dtype=torch.uint8).numpy()
    b = a.copy()
    b[8:30, 8:30] = 200
    assert DISTS()(a, b) == pytest.approx(DISTS(vgg16)(a, b), abs=1e-7)


def test_a_wrong_or_missing_backbone_is_one_line(tmp_path, backbone, monkeypatch):
    with pytest.raises(SrpipeError, match=r"^DISTS: the VGG16 backbone .*lpips-alexnet-features.pth is not VGG16's "
                                          r"features: it lacks features.2.bias, features.2.weight, features.5.bias, features.5.weight, \.\.\. "
                                          r"\(22 of its 26 tensors\); give .*SRPIPE_VGG16_BACKBONE$"):
        DISTS(backbone)  # AlexNet's file
    with pytest.raises(SrpipeError, match=r"cannot load the VGG16 backbone .*nothing.pth \(No such file"):
        DISTS(tmp_path / "nothing.pth")
    monkeypatch.delenv("SRPIPE_VGG16_BACKBONE", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline)  # what WeightsEnum calls
    with pytest.raises(SrpipeError, match=r"DISTS: its VGG16 backbone could not be downloaded \(no network\); give a "
                                          r"local VGG16 file .* eval.vgg16_backbone or SRPIPE_VGG16_BACKBONE"):
        DISTS()


def test_evaluate_reports_dists_for_the_model_and_for_bicubic(tmp_path, monkeypatch, shared_data, vgg16):
    """--hr-dir with eval.dists: the JSON's mean is DISTS's mean over the images; off by default."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(f"eval:\n  lpips: false\n  dists: true\n  vgg16_backbone: {vgg16}\n")
    result = CliRunner().invoke(app, ["evaluate", "--hr-dir", str(shared_data / "Set5"), "--scale", "4",
                                      "--baseline", "bicubic", "--out", "set5.json"])
    assert result.exit_code == 0, result.output
    scores = json.loads((tmp_path / "set5.json").read_text())
    metric = DISTS(vgg16)
    expected = []
    for path in sorted((shared_data / "Set5").glob("*.png")):
        hr = crop_to_multiple(read_image(path), 4)
        expected.append(metric(imresize(imresize(hr, 1 / 4), 4), hr, crop_border=4))
    assert scores["dists"] == pytest.approx(sum(expected) / len(expected), abs=1e-5)
    assert "dists" in result.output
    (tmp_path / "params.yaml").write_text("eval:\n  lpips: false\n")
    assert CliRunner().invoke(app, ["evaluate", "--hr-dir", str(shared_data / "Set5"), "--scale", "4",
                                    "--baseline", "bicubic", "--out", "off.json"]).exit_code == 0
    assert "dists" not in json.loads((tmp_path / "off.json").read_text())


def test_export_onnx_scores_dists_for_each_precision(tmp_path, monkeypatch, shared_data, vgg16):
    from srpipe.data import prepare, source_files
    from srpipe.models import build_model, save_checkpoint

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(f"eval:\n  lpips: false\n  dists: true\n  vgg16_backbone: {vgg16}\n"
                                          "export:\n  precision: [fp32, int8]\n  check_images: 1\n")
    prepare(source_files(str(shared_data / "Set5"), 2), tmp_path / "valid", 2)
    kwargs = {"scale": 2, "n_resblocks": 1, "n_feats": 8}
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "m.pt", build_model("edsr", **kwargs), {"name": "edsr", "kwargs": kwargs})
    result = CliRunner().invoke(app, ["export-onnx", "--checkpoint", "m.pt", "--valid", "valid", "--out", "onnx",
                                      "--metrics", "export.json"])
    assert result.exit_code == 0, result.output
    scores = json.loads((tmp_path / "export.json").read_text())
    assert 0 < scores["fp32"]["dists"] < 0.5 and "lpips" not in scores["fp32"]
    assert scores["int8"]["delta_dists"] == pytest.approx(scores["int8"]["dists"] - scores["fp32"]["dists"])
