"""`srpipe evaluate` outside the pipeline: any folder, a checkpoint, an ONNX file or bicubic."""

import json

import cv2
import pandas as pd
import pytest
from typer.testing import CliRunner

from srpipe.cli import app
from srpipe.export import export_onnx
from srpipe.models import build_model, save_checkpoint

runner = CliRunner()


def run(*args):
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


@pytest.fixture
def defaults(tmp_path, monkeypatch):
    """Run from an empty folder with a params file holding only the defaults."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("seed: 0\n")


@pytest.mark.parametrize("scale,published", [(2, 33.66), (4, 28.42)])
def test_bicubic_baseline_on_set5_matches_published(defaults, tmp_path, shared_data, backbone, scale, published):
    code, out = run("evaluate", "--hr-dir", str(shared_data / "Set5"), "--scale", str(scale), "--baseline",
                    "bicubic", "--out", "set5.json", "--set", f"eval.lpips_backbone={backbone}",
                    "--set", f"scale={scale}")
    assert code == 0, out
    result = json.loads((tmp_path / "set5.json").read_text())
    assert abs(result["psnr"] - published) <= 0.03
    assert result["images"] == 5 and result["scale"] == scale and result["upscaler"] == "bicubic"
    assert 0.1 < result["lpips"] < 0.5
    per_image = pd.read_csv(tmp_path / "set5.csv")
    assert list(per_image.columns) == ["image", "psnr", "ssim", "lpips"] and len(per_image) == 5
    assert per_image["psnr"].mean() == pytest.approx(result["psnr"])


def test_checkpoint_and_its_onnx_export_score_the_same(defaults, tmp_path, shared_data, backbone):
    model = build_model("edsr", scale=2, n_resblocks=1, n_feats=8)
    save_checkpoint(tmp_path / "m.pt", model, {"name": "edsr", "kwargs": {"scale": 2, "n_resblocks": 1, "n_feats": 8}})
    export_onnx(model, tmp_path / "m.onnx", opset=17, scale=model.scale)
    lp = f"eval.lpips_backbone={backbone}"
    hr = str(shared_data / "Set5")
    assert run("evaluate", "--hr-dir", hr, "--checkpoint", "m.pt", "--out", "pt.json", "--set", lp,
               "--save-dir", "shots")[0] == 0
    code, out = run("evaluate", "--hr-dir", hr, "--onnx", "m.onnx", "--out", "onnx.json", "--set", lp)
    assert code == 0, out
    pt, ox = (json.loads((tmp_path / f).read_text()) for f in ("pt.json", "onnx.json"))
    assert ox["scale"] == 2  # read from the ONNX file's metadata
    for key in ("psnr", "ssim", "lpips"):
        assert pt[key] == pytest.approx(ox[key], abs=1e-3)
    strip = cv2.imread(str(tmp_path / "shots" / "baby_compare.png"))
    sr = cv2.imread(str(tmp_path / "shots" / "baby_sr.png"))
    assert sr.shape == (512, 512, 3)
    assert strip.shape == (256, 3 * 256 + 2 * 6, 3)


def test_exactly_one_upscaler(defaults, shared_data):
    code, out = run("evaluate", "--hr-dir", str(shared_data / "Set5"), "--out", "x.json")
    assert code == 2 and "exactly one of --checkpoint, --onnx, --baseline" in out
    code, out = run("evaluate", "--hr-dir", str(shared_data / "Set5"), "--out", "x.json",
                    "--baseline", "bicubic", "--onnx", "m.onnx")
    assert code == 2 and "exactly one" in out


def test_scale_mismatch_and_missing_folder(defaults, tmp_path):
    model = build_model("edsr", scale=2, n_resblocks=1, n_feats=8)
    save_checkpoint(tmp_path / "m.pt", model, {"name": "edsr", "kwargs": {"scale": 2, "n_resblocks": 1, "n_feats": 8}})
    code, out = run("evaluate", "--hr-dir", "nowhere", "--checkpoint", "m.pt", "--scale", "3", "--out", "x.json")
    assert code == 1 and "--scale 3 does not match the model's scale 2" in out
    code, out = run("evaluate", "--hr-dir", "nowhere", "--checkpoint", "m.pt", "--out", "x.json",
                    "--set", "eval.lpips=false")
    assert code == 1 and "image folder not found: nowhere" in out
    assert not (tmp_path / "x.json").exists()
