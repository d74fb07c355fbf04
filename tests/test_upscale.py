import os

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from srpipe.cli import app
from srpipe.export import export_onnx
from srpipe.imresize import imresize
from srpipe.io import read_image
from srpipe.models import build_model, save_checkpoint
from srpipe.upscale import tile_grid, upscale_tiled
from srpipe.upscalers import bicubic_upscaler, torch_upscaler

from .conftest import DATA, need


@pytest.fixture(scope="module")
def photo():
    return read_image(need(DATA) / "Set14" / "baboon.png")[:250, :230]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    net = build_model("edsr", scale=2, n_resblocks=4, n_feats=16)
    with torch.no_grad():  # a residual of visible size, as a trained model has
        net.tail[-1].weight.mul_(20)
    return net.eval()


def test_tile_grid_covers_the_image():
    assert tile_grid(10, 4) == [(0, 4), (4, 8), (8, 10)]


def test_tiled_model_output_equals_untiled_within_one_level(photo, model):
    up = torch_upscaler(model)
    whole = up(photo)
    tiled = upscale_tiled(up, photo, 2, tile=64, overlap=16)
    diff = np.abs(whole.astype(int) - tiled.astype(int))
    assert diff.max() <= 1 and diff.mean() < 0.01
    assert np.abs(whole.astype(int) - imresize(photo, 2).astype(int)).mean() > 1  # the model does something
    seams = np.abs(whole.astype(int) - upscale_tiled(up, photo, 2, tile=64, overlap=0).astype(int))
    assert seams.max() > 1  # without context the tiles would show


def test_tiled_bicubic_is_exact(photo):
    up = bicubic_upscaler(3)
    np.testing.assert_array_equal(upscale_tiled(up, photo, 3, tile=50, overlap=4), up(photo))


def run(*args):
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def test_upscale_cli_reports_failures_and_never_overwrites(tmp_path, photo, model):
    src = tmp_path / "in"
    src.mkdir()
    cv2.imwrite(str(src / "a.png"), cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(src / "b.jpg"), cv2.cvtColor(photo[:40, :50], cv2.COLOR_RGB2BGR))
    (src / "broken.png").write_bytes(b"no image here")
    export_onnx(model, tmp_path / "m.onnx", opset=17, scale=model.scale)
    code, out = run("upscale", str(src), str(tmp_path / "missing.png"), "--model", str(tmp_path / "m.onnx"),
                    "--out", str(tmp_path / "out"), "--tile", "64")
    assert code == 1
    assert "broken.png" in out and "image not found: " in out and "2 of 4 image(s) failed" in out
    a = cv2.imread(str(tmp_path / "out" / "a_x2.png"))
    assert a.shape == (500, 460, 3)
    assert cv2.imread(str(tmp_path / "out" / "b_x2.jpg")).shape == (80, 100, 3)  # format follows the input

    # writing into the input folder: a_x2.png exists there now and is an input, so it is refused
    (src / "a_x2.png").write_bytes((tmp_path / "out" / "a_x2.png").read_bytes())
    before = (src / "a_x2.png").read_bytes()
    code, out = run("upscale", str(src / "a.png"), str(src / "a_x2.png"), "--model", str(tmp_path / "m.onnx"),
                    "--out", str(src), "--format", "png", "--tile", "0")
    assert code == 1 and "would overwrite an input" in out
    assert (src / "a_x2.png").read_bytes() == before


def test_upscale_cli_with_a_checkpoint_and_format(tmp_path, photo, model):
    save_checkpoint(tmp_path / "m.pt", model, {"name": "edsr", "kwargs": {"scale": 2, "n_resblocks": 4, "n_feats": 16}})
    cv2.imwrite(str(tmp_path / "p.png"), cv2.cvtColor(photo[:60, :70], cv2.COLOR_RGB2BGR))
    code, out = run("upscale", str(tmp_path / "p.png"), "--model", str(tmp_path / "m.pt"), "--out",
                    str(tmp_path / "o"), "--format", "tiff", "--scale", "2")
    assert code == 0, out
    got = read_image(tmp_path / "o" / "p_x2.tiff")
    np.testing.assert_array_equal(got, torch_upscaler(model)(photo[:60, :70]))
    assert run("upscale", str(tmp_path / "p.png"), "--model", str(tmp_path / "m.pt"), "--out", "o",
               "--scale", "3")[0] == 1
    assert run("upscale", str(tmp_path / "p.png"), "--model", str(tmp_path / "m.pt"), "--out", "o",
               "--format", "gif")[0] == 2


def test_inside_a_project_upscale_takes_the_pipelines_model_and_says_which(tmp_path, photo, model, monkeypatch):
    """--model and --out were required even inside a project whose pipeline has just made the model."""
    monkeypatch.chdir(tmp_path)
    cv2.imwrite("photo.png", cv2.cvtColor(photo[:40, :48], cv2.COLOR_RGB2BGR))
    code, out = run("upscale", "photo.png")  # no project here
    assert code == 1 and "no --model given, and no pipeline model here (stages/export-onnx/model.onnx or " \
        "stages/train/best.pt" in out and "give --model FILE" in out, out
    save_checkpoint("stages/train/best.pt", model, {"name": "edsr", "kwargs": {"scale": 2, "n_resblocks": 4, "n_feats": 16}})
    code, out = run("upscale", "photo.png", "--device", "cpu")
    assert code == 0 and "no --model given: the pipeline's stages/train/best.pt" in out, out
    assert read_image(tmp_path / "upscaled" / "photo_x2.png").shape == (80, 96, 3)  # the default --out
    export_onnx(model, tmp_path / "stages" / "export-onnx" / "model.onnx", 17, 2)
    code, out = run("upscale", "photo.png", "--device", "cpu")
    assert code == 0 and "no --model given: the pipeline's stages/export-onnx/model.onnx" in out, out


def test_upscale_removes_what_a_killed_upscale_left_in_its_folder(tmp_path, photo, model):
    """A kill while an output was written left `.NAME_x2.PID.RANDOM.tmp.png` in --out, never removed."""
    import subprocess

    dead = subprocess.Popen(["true"])
    dead.wait()
    out = tmp_path / "up"
    out.mkdir()
    stale = out / f".other_x2.{dead.pid}.abcd1234.tmp.png"
    stale.write_bytes(b"half an image")
    mine = out / f".kept_x2.{os.getpid()}.abcd1234.tmp.png"  # a live writer's: not touched
    mine.write_bytes(b"being written")
    notes = out / "notes.tmp.txt"  # not srpipe's: not touched
    notes.write_text("mine")
    cv2.imwrite(str(tmp_path / "a.png"), cv2.cvtColor(photo[:32, :40], cv2.COLOR_RGB2BGR))
    save_checkpoint(tmp_path / "m.pt", model, {"name": "edsr", "kwargs": {"scale": 2, "n_resblocks": 4, "n_feats": 16}})
    with pytest.warns(UserWarning, match=r"removed .*\.other_x2\.\d+\.abcd1234\.tmp\.png \(0\.0 MiB\), left by a killed run"):
        code, _ = run("upscale", str(tmp_path / "a.png"), "--model", str(tmp_path / "m.pt"), "--out", str(out))
    assert code == 0 and not stale.exists() and mine.exists() and notes.exists()
    assert (out / "a_x2.png").is_file()
