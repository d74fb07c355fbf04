"""Every bad input or fault a user can meet: one line naming the path or key and the fix, a
non-zero exit, no traceback, and nothing lost or silently wrong."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from typer.testing import CliRunner

from srpipe.cli import app
from srpipe.io import SrpipeError, read_image
from srpipe.models import build_model, save_checkpoint

from .conftest import ROOT

runner = CliRunner()


def run(*args):
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def srpipe(cwd, *args, **env):
    """The real command in a fresh process (its warnings and errors as a user sees them)."""
    environ = {**os.environ, **env}
    environ.pop("SRPIPE_DEBUG", None) if "SRPIPE_DEBUG" not in env else None
    proc = subprocess.run([sys.executable, "-m", "srpipe", *args], cwd=cwd, env=environ, capture_output=True,
                          text=True, timeout=300)
    return proc.returncode, proc.stdout, proc.stderr


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and len([x for x in lines if x.startswith("srpipe: error:")]) == 1, err
    return next(x for x in lines if x.startswith("srpipe: error:"))


def photos(folder, n=3, size=(48, 64)):
    """Crops of a real photo (scikit-image's astronaut)."""
    from srpipe.datasets import dataset_files

    folder.mkdir(parents=True, exist_ok=True)
    photo = read_image(dataset_files("sample-valid")[0])
    for i in range(n):
        y, x = 37 * i, 53 * i
        cv2.imwrite(str(folder / f"img{i}.png"), cv2.cvtColor(photo[y : y + size[0], x : x + size[1]], cv2.COLOR_RGB2BGR))
    return folder


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project whose tests may prepare one folder as training, validation and evaluation images
    (data.allow_overlap: true; the overlap check has its own tests, which turn it back off)."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"]["allow_overlap"] = True
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "x2.pt"
    torch.manual_seed(0)
    kwargs = {"scale": 2, "n_resblocks": 1, "n_feats": 8}
    save_checkpoint(path, build_model("edsr", **kwargs), {"name": "edsr", "kwargs": kwargs})
    return path


# ---------------------------------------------------------------- params


@pytest.mark.parametrize("override,expected", [
    ("train.epochs=true", "train.epochs: expected a number or text, not true/false"),
    ("train.lr=false", "train.lr: expected a number or text, not true/false"),
    ("data.train=true", "data.train: expected a number or text, not true/false"),
])
def test_true_or_false_where_a_number_is_expected_is_refused(project, override, expected):
    code, out = run("extract-patches", "--set", override)
    assert code == 2 and expected in out and len(out.strip().splitlines()) == 1


def test_switches_still_take_true_and_false(project):
    from srpipe.config import load_params

    p = load_params("params.yaml", ["model.attention=true", "eval.lpips=false", "train.channels_last=true"])
    assert p.model.attention is True and p.eval.lpips is False and p.train.channels_last is True


def test_an_empty_params_file_is_refused(project):
    (project / "params.yaml").write_text("# nothing yet\n")
    code, out = run("extract-patches")
    assert code == 2 and "params.yaml is empty" in out and len(out.strip().splitlines()) == 1


# ---------------------------------------------------------------- files that are not what they claim


def test_a_checkpoint_that_is_not_a_torch_file(project, tmp_path, shared_data):
    (tmp_path / "notes.pt").write_text("not a model")
    code, out = run("evaluate", "--hr-dir", str(shared_data / "Set5"), "--checkpoint", "notes.pt", "--out", "x.json")
    assert code == 1 and "cannot load checkpoint notes.pt (not a PyTorch file" in out
    assert len(out.strip().splitlines()) == 1


def test_an_onnx_file_given_as_checkpoint_points_to_the_right_option(project, tmp_path, checkpoint, shared_data):
    from srpipe.export import export_onnx
    from srpipe.modelfile import open_model_file

    export_onnx(open_model_file(checkpoint).model, tmp_path / "m.onnx", 17, 2)
    code, out = run("evaluate", "--hr-dir", str(shared_data / "Set5"), "--checkpoint", "m.onnx", "--out", "x.json")
    assert code == 1 and "cannot load checkpoint m.onnx" in out and "use --onnx" in out
    assert len(out.strip().splitlines()) == 1


def test_lpips_without_network_or_backbone_says_how_to_fix_it(project, tmp_path, shared_data):
    """No local backbone, an empty torch cache, and the download goes through a proxy that does not
    answer (as on an air-gapped machine)."""
    code, out, err = srpipe(tmp_path, "evaluate", "--hr-dir", str(shared_data / "Set5"), "--baseline", "bicubic",
                            "--scale", "2", "--out", "x.json", SRPIPE_LPIPS_BACKBONE="", TORCH_HOME=str(tmp_path / "th"),
                            https_proxy="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9")
    line = one_error_line(err)
    assert code == 1 and "AlexNet backbone could not be downloaded" in line
    assert "eval.lpips_backbone" in line and "SRPIPE_LPIPS_BACKBONE" in line and "eval.lpips=false" in line
    assert not (tmp_path / "x.json").exists()


@pytest.mark.parametrize("content,expected", [
    (b"not a torch file", "not a PyTorch weights file"),
    ({"features.0.weight": torch.zeros(64, 3, 11, 11)}, "it lacks features.0.bias"),
    ({f"features.{i}.{k}": torch.zeros(2) for i in (0, 3, 6, 8, 10) for k in ("weight", "bias")},
     "has other shapes for features.0.bias"),
])
def test_a_wrong_lpips_backbone_file(tmp_path, content, expected):
    from srpipe.metrics import LPIPS

    path = tmp_path / "alex.pth"
    path.write_bytes(content) if isinstance(content, bytes) else torch.save(content, path)
    with pytest.raises(SrpipeError, match=expected) as info:
        LPIPS(path)
    assert str(path) in str(info.value) and "eval.lpips=false" in str(info.value)


# ---------------------------------------------------------------- images


def test_a_truncated_jpeg_stops_with_its_path(project):
    folder = photos(project / "raw")
    ok, jpeg = cv2.imencode(".jpg", cv2.imread(str(folder / "img0.png")))
    (folder / "cut.jpg").write_bytes(jpeg.tobytes()[: len(jpeg) // 2])
    code, out = run("prepare-degradations", "--set", f"data.train={folder}", "--set", f"data.valid={folder}",
                    "--set", f"eval.datasets=[{folder}]")
    assert code == 1 and "damaged image" in out and "Premature end of JPEG file" in out and "cut.jpg" in out
    assert not (project / "data" / "prepared").exists() or not any((project / "data" / "prepared").iterdir())


def test_a_jpeg_damaged_in_the_middle_is_refused(tmp_path):
    ok, jpeg = cv2.imencode(".jpg", read_image(ROOT.parent / "shared" / "data" / "Set5" / "baby.png")
                            if (ROOT.parent / "shared").exists() else np.full((64, 64, 3), 128, np.uint8))
    data = bytearray(jpeg.tobytes())
    data[len(data) // 2 : len(data) // 2 + 200] = bytes(200)
    (tmp_path / "bad.jpg").write_bytes(bytes(data))
    with pytest.raises(SrpipeError, match=r"damaged image \(libjpeg: Corrupt JPEG data.*bad.jpg"):
        read_image(tmp_path / "bad.jpg")


def test_webp_images_in_folders_are_read(tmp_path):
    from srpipe.io import IMAGE_SUFFIXES, list_images
    from srpipe.upscale import FORMATS

    img = np.random.default_rng(0).integers(0, 256, (8, 10, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "a.webp"), img, [cv2.IMWRITE_WEBP_QUALITY, 101])  # lossless
    assert [p.name for p in list_images(tmp_path)] == ["a.webp"]
    np.testing.assert_array_equal(read_image(tmp_path / "a.webp"), img[..., ::-1])
    assert FORMATS == tuple(s[1:] for s in IMAGE_SUFFIXES) and "webp" in FORMATS


def test_images_too_small_to_score_are_refused_up_front(project):
    train = photos(project / "train")
    small = photos(project / "small", n=2, size=(14, 40))  # 14 px < 11 px SSIM window + 2 x 2 px border
    code, out = run("prepare-degradations", "--set", f"data.train={train}", "--set", f"data.valid={small}",
                    "--set", f"eval.datasets=[{train}]")
    assert code == 1 and "image too small" in out and "small/img0.png is 40x14 px" in out and "15x15" in out
    assert not (project / "data" / "prepared").exists() or not any((project / "data" / "prepared").iterdir())
    code, out = run("evaluate", "--hr-dir", str(small), "--baseline", "bicubic", "--out", "s.json",
                    "--set", "eval.lpips=false")
    assert code == 1 and "image too small" in out and not (project / "s.json").exists()


def test_a_training_image_too_small_for_one_lr_pixel_is_skipped_with_its_real_size(project):
    """A 1 x 1 training photo stopped prepare-degradations with a message about scores and its
    cropped size (0x0); training images too small are skipped with a warning, as README says."""
    train = photos(project / "train")
    cv2.imwrite(str(train / "dot.png"), np.zeros((1, 1, 3), np.uint8))
    with pytest.warns(UserWarning) as caught:
        code, out = run("prepare-degradations", "--set", f"data.train={train}")
    assert code == 0, out
    assert f"image too small: {train / 'dot.png'} is 1x1 px (0x0 cropped to a multiple of 2), x2 needs at least " \
        "2x2: skipped" in [str(w.message) for w in caught]
    manifest = pd.read_csv(project / "data" / "prepared" / "train" / "manifest.csv")
    assert "dot.png" not in set(manifest["image"]) and len(manifest) == len(list(train.glob("img*.png")))


def test_evaluate_skips_an_image_too_small_to_score_with_a_warning():
    from srpipe.evaluate import evaluate
    from srpipe.upscalers import bicubic_upscaler

    rng = np.random.default_rng(0)
    big, tiny = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
    pairs = [(n, hr, hr[::2, ::2].copy()) for n, hr in (("big.png", big), ("tiny.png", tiny))]
    with pytest.warns(UserWarning, match=r"tiny.png skipped: 12x12 px is too small to score \(at least 15 px"):
        frame = evaluate(bicubic_upscaler(2), pairs, crop_border=2, y_channel=True)
    assert list(frame["image"]) == ["big.png"]


# ---------------------------------------------------------------- outputs


def test_an_unwritable_output_fails_before_any_work(project, shared_data, monkeypatch):
    import srpipe.evaluate

    monkeypatch.setattr(srpipe.evaluate, "evaluate", lambda *a, **k: pytest.fail("scored before failing"))
    code, out = run("evaluate", "--hr-dir", str(shared_data / "Set5"), "--baseline", "bicubic", "--scale", "2",
                    "--out", "/proc/srpipe/set5.json", "--set", "eval.lpips=false")
    assert code == 1 and "cannot write to /proc/srpipe" in out and len(out.strip().splitlines()) == 1
    code, out = run("prepare-degradations", "--out", "/proc/srpipe/prepared")
    assert code == 1 and "cannot write to /proc/srpipe/prepared" in out


def test_evaluate_outside_a_project_uses_the_defaults(tmp_path, monkeypatch, shared_data):
    monkeypatch.chdir(tmp_path)  # no params.yaml here
    code, out = run("evaluate", "--hr-dir", str(shared_data / "Set5"), "--baseline", "bicubic", "--scale", "2",
                    "--out", "set5.json", "--set", "eval.lpips=false")
    assert code == 0, out
    assert "psnr 33.68" in out


def test_the_checkpoints_scale_wins_and_says_so(project, checkpoint, shared_data):
    with pytest.warns(UserWarning, match="params say scale=4, the model is x2: the model's scale wins"):
        code, out = run("evaluate", "--hr-dir", str(shared_data / "Set5"), "--checkpoint", str(checkpoint),
                        "--out", "x.json", "--set", "scale=4", "--set", "train.patch_size=64",
                        "--set", "eval.lpips=false")
    assert code == 0, out
    assert yaml.safe_load((project / "x.json").read_text())["scale"] == 2


def test_prepare_with_a_missing_eval_folder_keeps_the_previous_outputs(project):
    train = photos(project / "train")
    args = ["--set", f"data.train={train}", "--set", f"data.valid={train}"]
    assert run("prepare-degradations", *args, "--set", f"eval.datasets=[{train}]")[0] == 0
    before = {p: p.stat().st_mtime_ns for p in (project / "data" / "prepared").rglob("*")}
    photos(project / "train2")
    code, out = run("prepare-degradations", "--set", f"data.train={project / 'train2'}", "--set",
                    f"data.valid={project / 'train2'}", "--set", f"eval.datasets=[{project / 'absent'}]")
    assert code == 1 and "absent" in out
    assert {p: p.stat().st_mtime_ns for p in (project / "data" / "prepared").rglob("*")} == before


def test_a_stage_removes_what_a_killed_run_left_and_says_so(project):
    """SIGKILL leaves `.NAME.PID.RANDOM.tmp` folders; the next run of the stage removes its own
    (and only those of dead processes)."""
    train = photos(project / "train")
    prepared = project / "data" / "prepared"
    prepared.mkdir(parents=True)
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = prepared / f".train.{dead.pid}.abcd1234.tmp"
    (stale / "hr").mkdir(parents=True)
    (stale / "hr" / "x.png").write_bytes(b"0" * 4096)
    alive = prepared / f".train.{os.getpid()}.abcd1234.tmp"  # a live process's: not touched
    alive.mkdir()
    other = prepared / f".notes.{dead.pid}.abcd1234.tmp"  # not this stage's output: not touched
    other.mkdir()
    code, out, err = srpipe(project, "prepare-degradations", "--set", f"data.train={train}",
                            "--set", f"data.valid={train}", "--set", f"eval.datasets=[{train}]")
    assert code == 0, err
    assert f"srpipe: warning: removed {stale.relative_to(project)}" in err and "left by a killed run" in err
    assert not stale.exists() and alive.exists() and other.exists()


# ---------------------------------------------------------------- how failures read


def test_warnings_are_one_readable_line(project):
    folder = project / "rgba"
    folder.mkdir()
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[..., 3] = 255
    cv2.imwrite(str(folder / "a.png"), rgba)
    code, out, err = srpipe(project, "prepare-degradations", "--set", f"data.train={folder}",
                            "--set", f"data.valid={folder}", "--set", f"eval.datasets=[{folder}]")
    assert code == 0, err
    assert "srpipe: warning: " in err and "alpha channel dropped" in err
    assert "UserWarning" not in err and "warnings.warn" not in err


def test_an_unexpected_failure_is_one_line_unless_debugging(project, monkeypatch):
    import srpipe.data

    def broken(*args, **kwargs):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(srpipe.data, "prepare_all", broken)
    monkeypatch.delenv("SRPIPE_DEBUG", raising=False)
    code, out = run("prepare-degradations")
    assert code == 1 and len(out.strip().splitlines()) == 1
    assert "unexpected ZeroDivisionError: division by zero" in out and "bug in srpipe" in out and "--debug" in out
    result = runner.invoke(app, ["--debug", "prepare-degradations"])
    assert isinstance(result.exception, ZeroDivisionError)  # the traceback is there for whoever asks
    monkeypatch.setenv("SRPIPE_DEBUG", "1")
    assert isinstance(runner.invoke(app, ["prepare-degradations"]).exception, ZeroDivisionError)


@pytest.mark.parametrize("errno,said", [
    (28, "no space left on device while writing data/prepared/train/hr/a.png; free some space there"),
    (5, "data/prepared/train/hr/a.png: Input/output error; check that the path exists"),
])
def test_a_file_system_failure_is_one_line(project, monkeypatch, errno, said):
    import srpipe.data

    def failed(*args, **kwargs):
        raise OSError(errno, os.strerror(errno), "data/prepared/.train.123.abcd1234.tmp/hr/a.png")

    monkeypatch.setattr(srpipe.data, "prepare_all", failed)
    monkeypatch.delenv("SRPIPE_DEBUG", raising=False)
    code, out = run("prepare-degradations")
    assert code == 1 and len(out.strip().splitlines()) == 1
    assert said in out, out  # the output as the user knows it, not the temporary it was written as


def test_evaluate_save_dir_never_overwrites_one_image_with_another(project):
    """pic.png and pic.jpg would both be saved as pic_sr.png: stop before scoring, naming both."""
    folder = photos(project / "set", n=1)
    cv2.imwrite(str(folder / "img0.jpg"), cv2.imread(str(folder / "img0.png")))
    code, out = run("evaluate", "--hr-dir", str(folder), "--baseline", "bicubic", "--out", "s.json",
                    "--save-dir", "shots", "--set", "eval.lpips=false")
    assert code == 1 and "two images named img0" in out and "img0.jpg" in out and "img0.png" in out
    assert not (project / "shots").exists() or not any((project / "shots").iterdir())
