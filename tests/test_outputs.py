"""A stage's outputs change together or not at all: interrupted after some of them were written,
every stage with several outputs leaves the previous run's set, whole."""

import re
import subprocess
import time

import pandas as pd
import pytest
import torch
import yaml
from typer.testing import CliRunner

from srpipe.cli import app
from srpipe.models import build_model, save_checkpoint

from .conftest import ROOT
from .test_failures import one_error_line, photos, srpipe

runner = CliRunner()
QUICK: list[str] = []


def run(*args):
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def model_file(path, seed):
    torch.manual_seed(seed)
    kwargs = {"scale": 2, "n_resblocks": 1, "n_feats": 8}
    save_checkpoint(path, build_model("edsr", **kwargs), {"name": "edsr", "kwargs": kwargs})
    return path


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    train = str(photos(tmp_path / "photos"))
    params["data"].update(train=train, valid=train, allow_overlap=True)
    params["eval"].update(datasets=[train], lpips=False)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    code, out = run("prepare-degradations")
    assert code == 0, out
    return tmp_path


def contents(*paths):
    """Every file under ``paths`` with its bytes."""
    files = [f for p in paths for f in ([p] if p.is_file() else sorted(p.rglob("*")))]
    return {str(f): f.read_bytes() for f in files if f.is_file()}


def interrupt_when_writing(monkeypatch, name):
    """Ctrl-C when a CSV whose name holds ``name`` is being written (after the JSON beside it was)."""
    real = pd.DataFrame.to_csv

    def to_csv(self, path, *args, **kwargs):
        if name in str(path):
            raise KeyboardInterrupt
        return real(self, path, *args, **kwargs)

    monkeypatch.setattr(pd.DataFrame, "to_csv", to_csv)


def test_an_interrupted_export_leaves_the_previous_export_whole(project, monkeypatch):
    """Ctrl-C while quantizing a new checkpoint left its model.onnx beside the old model.int8.onnx
    and the old export.json."""
    import srpipe.export

    first = model_file(project / "a.pt", 0)
    assert run("export-onnx", "--checkpoint", str(first), *QUICK)[0] == 0
    outputs = [project / "stages" / "export-onnx", project / "metrics" / "export.json"]
    before = contents(*outputs)
    assert {"model.onnx", "model.int8.onnx"} <= {p.name for p in outputs[0].iterdir()}

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(srpipe.export, "quantize_int8", interrupted)
    code, out = run("export-onnx", "--checkpoint", str(model_file(project / "b.pt", 1)), *QUICK)
    assert code == 130 and "interrupted" in out
    assert contents(*outputs) == before
    assert sorted(p.name for p in (project / "stages").iterdir()) == ["export-onnx"]  # no temporaries


def test_an_export_replaces_every_file_of_the_previous_one(project):
    """An export without int8 leaves no int8 file of an earlier export beside it."""
    assert run("export-onnx", "--checkpoint", str(model_file(project / "a.pt", 0)), *QUICK)[0] == 0
    assert run("export-onnx", "--checkpoint", str(model_file(project / "b.pt", 1)), *QUICK,
               "--set", "export.precision=[fp32]")[0] == 0
    assert not (project / "stages" / "export-onnx" / "model.int8.onnx").exists()


def test_an_interrupted_evaluate_leaves_the_previous_scores_whole(project, monkeypatch):
    """metrics/evaluate.json was written before the per-image CSV: Ctrl-C between them mixed two runs."""
    outputs = [project / "metrics" / "evaluate.json", project / "stages" / "evaluate"]
    assert run("evaluate", "--checkpoint", str(model_file(project / "a.pt", 0)), *QUICK)[0] == 0
    before = contents(*outputs)
    assert any(name.endswith(".png") for name in before) and any(name.endswith("per_image.csv") for name in before)
    interrupt_when_writing(monkeypatch, "per_image")
    code, out = run("evaluate", "--checkpoint", str(model_file(project / "b.pt", 1)), *QUICK)
    assert code == 130
    assert contents(*outputs) == before


def test_an_interrupted_benchmark_leaves_the_previous_measurements_whole(project, monkeypatch):
    first = model_file(project / "a.pt", 0)
    assert run("export-onnx", "--checkpoint", str(first), *QUICK, "--set", "export.precision=[fp32]")[0] == 0
    quick = ["--set", "benchmark.sizes=[[16, 16]]", "--set", "benchmark.threads=[1]", "--set", "benchmark.warmup=1"]
    outputs = [project / "metrics" / "benchmark.json", project / "metrics" / "benchmark_latency.csv",
               project / "stages" / "benchmark" / "results.csv"]
    assert run("benchmark", "--checkpoint", str(first), *quick)[0] == 0
    before = contents(*outputs)
    interrupt_when_writing(monkeypatch, "results")
    code, out = run("benchmark", "--checkpoint", str(first), *quick)
    assert code == 130
    assert contents(*outputs) == before


# ---------------------------------------------------------------- a full disk


@pytest.fixture
def full_disk(project):
    """A 48 KiB file system at ``project/full``, 40 KiB of it taken (a tmpfs: needs root, as on CI)."""
    folder = project / "full"
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48k", "tmpfs", str(folder)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (not root)")
    (folder / "filler").write_bytes(b"0" * 40 * 1024)  # 8 KiB left: room for a lock file, not for an output
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=True)


def trained(project):
    """A tiny best.pt (a few steps) in the project's stages/train."""
    quick = ["--set", "train.epochs=1", "--set", "train.steps_per_epoch=2", "--set", "train.batch_size=2",
             "--set", "train.patch_size=32", "--set", "model.n_resblocks=1", "--set", "model.n_feats=8"]
    for stage in (["extract-patches"], ["train", *quick]):
        code, out = run(*stage)
        assert code == 0, out
    return quick


@pytest.mark.parametrize("command,named", [
    (["prepare-degradations", "--out", "full/prepared"], r"full/prepared/(train|valid|eval)/\S+\.png"),
    (["extract-patches", "--out", "full/patches"], r"full/patches\b"),
    (["train", "--out", "full/train"], r"full/train/best\.pt"),
    (["export-onnx", "--out", "full/export"], r"full/export(/model\S*\.onnx)?"),
    (["upscale", "photos", "--model", "stages/train/best.pt", "--out", "full/up"], r"full/up/img\d_x2\.png"),
    (["evaluate", "--hr-dir", "photos", "--checkpoint", "stages/train/best.pt", "--out", "e.json", "--save-dir",
      "full/shots"], r"full/shots/img\d_(sr|compare)\.png"),
])
def test_a_full_disk_is_one_line_naming_the_output(project, full_disk, command, named):
    """Out of space, stages said "No space left on device" naming no path, printed libpng's "Write
    Error" lines and "cannot write image" without the reason, named an internal temporary, or (train)
    called torch.save's "unexpected pos 128 vs 0" a bug in srpipe."""
    extra = trained(project) if command[0] != "prepare-degradations" else []
    code, out, err = srpipe(project, *command, *(extra if command[0] == "train" else []))
    line = one_error_line(err)
    assert code == 1 and re.search(rf"^srpipe: error: no space left on device while writing (\S*/)?{named}; free some "
                                   r"space there or write the output elsewhere, and run again$", line), err
    assert "libpng" not in err and ".tmp" not in err
    assert not [p for p in full_disk.rglob("*") if ".tmp" in p.name]  # no temporaries left behind


def test_a_full_disk_under_tensorboard_is_one_line_and_no_thread_traceback(tmp_path, monkeypatch, capfd):
    """TensorBoard's writer thread printed its traceback, then the run failed naming no path."""
    import errno

    from tensorboard.summary.writer import record_writer

    from srpipe.io import DiskFull
    from srpipe.training.runtime import Board

    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    board = Board(tmp_path / "tb", main=True, start_step=0, stats_every=0)
    monkeypatch.setattr(record_writer.RecordWriter, "write", full)  # from the first scalar on
    with pytest.raises(DiskFull, match=rf"^no space left on device while writing {tmp_path / 'tb'}; "):
        for step in range(1, 200):
            board.scalars(step, {"train/loss": 1.0})
            time.sleep(0.01)
        board.close()
    assert "Traceback" not in capfd.readouterr().err
