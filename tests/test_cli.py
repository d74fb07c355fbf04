"""Params validation and bad input through the real CLI: clear message, non-zero exit, no half output."""

import json
import shutil

import cv2
import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from srpipe.cli import app
from srpipe.config import Params, load_params

from .conftest import ROOT

runner = CliRunner()


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project whose tests may prepare one folder as training, validation and evaluation images
    (data.allow_overlap: true; the overlap check has its own tests, which turn it back off)."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"]["allow_overlap"] = True
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run(*args):
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def images(folder, n=2, size=(40, 48)):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        cv2.imwrite(str(folder / f"img{i}.png"), rng.integers(0, 256, (*size, 3), dtype=np.uint8))
    return folder


def test_default_params_file_is_valid():
    p = load_params(ROOT / "params.yaml")
    assert isinstance(p, Params) and p.scale == 2 and p.eval.crop(p.scale) == 2 and p.eval.crop(4) == 4
    assert set(yaml.safe_load((ROOT / "params.yaml").read_text())) == set(Params.model_fields)


def test_overrides_are_parsed_as_yaml():
    p = load_params(ROOT / "params.yaml", ["model.attention=true", "benchmark.sizes=[[8, 16]]", "train.lr=1e-4"])
    assert p.model.attention is True and p.benchmark.sizes == [(8, 16)] and p.train.lr == 1e-4


@pytest.mark.parametrize(
    "override,expected",
    [
        ("model.colour=1", "unknown key 'model.colour'; allowed keys here: name, preset, kwargs, n_resgroups, n_resblocks"),
        ("optimiser.lr=1", "unknown key 'optimiser'"),
        ("scale=5", "scale: Input should be 2, 3, 4 or 8"),
        ("train.epochs=many", "train.epochs: Input should be a valid integer"),
        ("train.epochs=0", "train.epochs: Input should be greater than or equal to 1"),
        ("model.global_skip=nearest", "model.global_skip: Input should be 'bicubic' or 'none'"),
        ("train.patch_size=65", "train.patch_size=65 is not divisible by scale=2"),
        ("scale=3", "train.patch_size=64 is not divisible by scale=3"),
        ("patches.hr_size=64", "unknown key 'patches'"),
        ("data.train_scales=[1.0, 1.5]", "data.train_scales: must be distinct factors between 0.1 and 1, e.g. [1.0, 0.7, 0.5] (got"),
        ("data.train_scales=[0.5, 0.5]", "data.train_scales: must be distinct factors between 0.1 and 1, e.g. [1.0, 0.7, 0.5] (got"),
        ("data.train_scales=[]", "data.train_scales: List should have at least 1 item"),
    ],
)
def test_bad_params_exit_2_naming_the_key(project, override, expected):
    code, out = run("extract-patches", "--set", override)
    assert code == 2
    assert expected in out
    assert len(out.strip().splitlines()) == 1
    assert not (project / "data").exists()


def test_unknown_key_in_file(project):
    raw = yaml.safe_load((project / "params.yaml").read_text())
    raw["train"]["learning_rate"] = 0.1
    (project / "params.yaml").write_text(yaml.safe_dump(raw))
    code, out = run("train")
    assert code == 2 and "unknown key 'train.learning_rate'" in out and "lr" in out


@pytest.mark.parametrize("text,expected", [
    ("seed: 0\ntrain:\n  lr: 0.001\n  epochs: 3\n  lr: 0.002\n", "duplicate key 'train.lr' (lines 3 and 5)"),
    ("seed: 0\nscale: 2\nseed: 1\n", "duplicate key 'seed' (lines 1 and 3)"),
    ("train:\n  epochs: 2\neval:\n  lpips: false\ntrain:\n  lr: 0.1\n", "duplicate key 'train' (lines 1 and 5)")])
def test_a_key_given_twice_is_refused_naming_it_and_both_lines(project, text, expected):
    """PyYAML kept the last of two equal keys silently; `dvc repro` refuses such a file."""
    (project / "params.yaml").write_text(text)
    code, out = run("train")
    assert code == 2 and out.strip() == f"srpipe: error: params.yaml: {expected}; keep one of them", out


def test_a_yaml_syntax_error_is_one_line_with_its_line_and_column(project):
    """It took six lines (PyYAML's message with two excerpts of the file)."""
    (project / "params.yaml").write_text("seed: 0\ntrain:\n  lr: [0.1\n  epochs: 3\n")
    code, out = run("train")
    assert code == 2 and out.strip() == ("srpipe: error: params.yaml: not valid YAML at line 4, column 9: expected "
                                         "',' or ']', but got ':' (while parsing a flow sequence)"), out
    shutil.copy(ROOT / "params.yaml", project / "params.yaml")
    code, out = run("train", "--set", "train.lr=[0.1")
    assert code == 2 and len(out.strip().splitlines()) == 1 and "--set 'train.lr=[0.1': the value is not valid YAML at " \
        "line 1, column" in out, out


def test_missing_params_file(project):
    code, out = run("train", "--params", "nope.yaml")
    assert code == 2 and "nope.yaml" in out


def test_missing_image_folder(project):
    code, out = run("prepare-degradations", "--set", f"data.train={project / 'absent'}")
    assert code == 1 and "image folder not found" in out and "absent" in out
    assert not (project / "data" / "prepared" / "train").exists()


def test_a_file_given_for_an_image_folder_is_named_as_a_file(project):
    """data.train pointing at an image file said "image folder not found", though the path exists."""
    photo = images(project / "photos", n=1) / "img0.png"
    code, out = run("prepare-degradations", "--set", f"data.train={photo}")
    assert code == 1 and out.strip() == f"srpipe: error: {photo} is a file, not a folder of images; give the folder " \
        "that holds it", out


def test_empty_image_folder(project):
    (project / "empty").mkdir()
    code, out = run("prepare-degradations", "--set", f"data.train={project / 'empty'}")
    assert code == 1 and "no images" in out and "empty" in out


def test_unreadable_image_leaves_no_output(project):
    folder = images(project / "raw")
    (folder / "zz_corrupt.jpg").write_bytes(b"\xff\xd8\xff garbage")
    code, out = run("prepare-degradations", "--out", "prep", "--set", f"data.train={folder}",
                    "--set", f"data.valid={folder}")
    assert code == 1 and "zz_corrupt.jpg" in out
    assert not (project / "prep").exists() or not any((project / "prep").iterdir())


def test_prepare_then_store_on_a_folder(project):
    folder = images(project / "raw", n=3, size=(41, 50))
    code, out = run("prepare-degradations", "--out", "prep", "--set", f"data.train={folder}",
                    "--set", f"data.valid={folder}")
    assert code == 0, out
    hr = cv2.imread(str(project / "prep" / "train" / "hr" / "img0.png"))
    lr = cv2.imread(str(project / "prep" / "train" / "lr_x2" / "img0.png"))
    assert hr.shape == (40, 50, 3) and lr.shape == (20, 25, 3)
    code, out = run("extract-patches", "--prepared", "prep/train", "--out", "store")
    assert code == 0, out
    assert "3 images" in out
    # whole images, raw, one after another: exactly the decoded bytes
    hr_bytes = np.fromfile(project / "store" / "hr.bin", np.uint8)
    lr_bytes = np.fromfile(project / "store" / "lr.bin", np.uint8)
    assert hr_bytes.size == 3 * 40 * 50 * 3 and lr_bytes.size == 3 * 20 * 25 * 3
    np.testing.assert_array_equal(hr_bytes[: 40 * 50 * 3].reshape(40, 50, 3), cv2.cvtColor(hr, cv2.COLOR_BGR2RGB))
    np.testing.assert_array_equal(lr_bytes[: 20 * 25 * 3].reshape(20, 25, 3), cv2.cvtColor(lr, cv2.COLOR_BGR2RGB))
    index = (project / "store" / "index.csv").read_text().splitlines()
    assert index[0] == "image,height,width,lr_height,lr_width,hr_offset,lr_offset,sha256" and len(index) == 4
    assert index[2].startswith("img1.png,40,50,20,25,6000,1500,")


def test_train_scales_add_shrunk_copies_of_the_training_images_only(project):
    from srpipe.imresize import crop_to_multiple, imresize
    from srpipe.io import read_image

    folder = images(project / "raw", n=1, size=(61, 83))
    code, out = run("prepare-degradations", "--out", "prep", "--set", f"data.train={folder}", "--set",
                    f"data.valid={folder}", "--set", "data.train_scales=[1.0, 0.5]")
    assert code == 0, out
    train = project / "prep" / "train"
    assert sorted(p.name for p in (train / "hr").iterdir()) == ["img0.png", "img0@0.5.png"]
    assert [p.name for p in (project / "prep" / "valid" / "hr").iterdir()] == ["img0.png"]
    shrunk = crop_to_multiple(imresize(read_image(folder / "img0.png"), 0.5), 2)  # 31x42 -> 30x42
    assert shrunk.shape == (30, 42, 3)
    np.testing.assert_array_equal(read_image(train / "hr" / "img0@0.5.png"), shrunk)
    np.testing.assert_array_equal(read_image(train / "lr_x2" / "img0@0.5.png"), imresize(shrunk, 0.5))
    assert (train / "manifest.csv").read_text().splitlines()[1:] == [
        f"img0.png,{folder / 'img0.png'},1.0,60,82,bicubic,,,",
        f"img0@0.5.png,{folder / 'img0.png'},0.5,30,42,bicubic,,,"]
    code, out = run("extract-patches", "--prepared", "prep/train", "--out", "store")
    assert code == 0 and "2 images" in out


def test_a_training_image_too_small_for_a_train_scale_is_named_with_the_key(project):
    small = images(project / "raw", n=1, size=(9, 9))
    valid = images(project / "valid", n=1)
    code, out = run("prepare-degradations", "--out", "prep", "--set", f"data.train={small}", "--set",
                    f"data.valid={valid}", "--set", "data.train_scales=[1.0, 0.1]")
    assert code == 1 and len(out.strip().splitlines()) == 1
    assert f"{small / 'img0.png'} shrunk to 0.1 (data.train_scales) is 1x1 px (0x0 cropped to a multiple of 2)" in out
    assert "remove it, or 0.1 from data.train_scales" in out
    assert not (project / "prep").exists() or not any((project / "prep").iterdir())


def test_a_photo_named_like_a_shrunk_copy_is_refused_before_anything_is_written(project):
    folder = images(project / "raw", n=1)
    (folder / "img0.png").rename(folder / "img0@0.5.png")
    images(folder, n=1)
    code, out = run("prepare-degradations", "--out", "prep", "--set", f"data.train={folder}", "--set",
                    f"data.valid={project / 'raw'}", "--set", "data.train_scales=[1.0, 0.5]")
    assert code == 1 and len(out.strip().splitlines()) == 1
    assert f"{folder / 'img0.png'} shrunk to 0.5 (data.train_scales) and {folder / 'img0@0.5.png'} would both be " \
           "img0@0.5.png; rename one" in out
    assert (not (project / "prep").exists() or not any((project / "prep").iterdir()))


def test_store_for_another_scale_is_refused(project):
    folder = images(project / "raw", n=1, size=(44, 44))
    assert run("prepare-degradations", "--out", "prep", "--set", f"data.train={folder}",
               "--set", f"data.valid={folder}", "--set", "scale=4", "--set", "train.patch_size=16")[0] == 0
    code, out = run("extract-patches", "--prepared", "prep/train", "--out", "store", "--set", "scale=3",
                    "--set", "train.patch_size=null")
    assert code == 1 and "not multiples of scale 3" in out
    assert not (project / "store").exists()


# ---------------------------------------------------------------- scores of images the model trained on


def test_a_renamed_copy_of_a_training_image_is_refused_as_a_validation_image(project):
    """sample-train with a renamed copy of one of its photos as validation was scored as if held out."""
    train = images(project / "train", n=3)
    valid = images(project / "valid", n=1, size=(44, 52))
    shutil.copy(train / "img1.png", valid / "renamed.png")
    code, out = run("prepare-degradations", "--set", "data.allow_overlap=false", "--set", f"data.train={train}",
                    "--set", f"data.valid={valid}", "--set", "eval.datasets=[sample-valid]")
    assert code == 1 and out.strip() == (
        f"srpipe: error: {valid / 'renamed.png'} is also a training image ({train / 'img1.png'}, same content): {valid} "
        "would score the model on what it trained on; give other images, or set data.allow_overlap: true to score "
        "them anyway (evaluate's metrics then say so)"), out
    assert not list((project / "data").rglob("*.png"))  # refused before anything is written


def test_an_evaluation_set_that_is_also_trained_on_is_refused(project, shared_data):
    code, out = run("prepare-degradations", "--set", "data.allow_overlap=false", "--set",
                    f"data.train=[sample-train, {shared_data / 'Set5'}]", "--set", "data.limit=null",
                    "--set", f"eval.datasets=[{shared_data / 'Set5'}]")
    assert code == 1 and "is also a training image" in out and str(shared_data / "Set5") in out, out


def test_an_allowed_overlap_is_said_and_recorded_in_the_metrics(project):
    folder = images(project / "photos", n=2)
    sets = ["--set", f"data.train={folder}", "--set", f"data.valid={folder}", "--set", f"eval.datasets=[{folder}]",
            "--set", "eval.lpips=false"]
    result = CliRunner().invoke(app, ["prepare-degradations", *sets])
    assert result.exit_code == 0, result.output
    code, out = run("evaluate", "--baseline", "bicubic", *sets, "--set", "eval.detail_crops=0")
    assert code == 0, out
    assert json.loads((project / "metrics" / "evaluate.json").read_text())["allow_overlap"] is True
    code, out = run("evaluate", "--baseline", "bicubic", *sets, "--set", "eval.detail_crops=0",
                    "--set", "data.allow_overlap=false")
    assert "allow_overlap" not in json.loads((project / "metrics" / "evaluate.json").read_text())


def test_help_reads_as_a_reference():
    """--help showed flags as `--ensemble <bool>`, the argument as `{inputs}...`, and kept the
    docstrings' source line breaks, so sentences broke mid-line at any other width."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "COLUMNS": "200", "TERMINAL_WIDTH": "200"}
    shown = subprocess.run([sys.executable, "-m", "srpipe", "upscale", "--help"], capture_output=True, text=True,
                           env=env, check=True).stdout
    assert "Usage: srpipe upscale [OPTIONS] INPUTS..." in shown and "{inputs}" not in shown
    assert "<bool>" not in shown and "<list" not in shown
    assert "--ensemble " in shown and "average the model over the 8 flips" in shown
    # one paragraph of the docstring, its source line breaks reflowed to the terminal's width
    assert "Never overwrites an input, nor one output with another" in shown
