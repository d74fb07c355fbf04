"""A model file is untrusted input: none can run code in srpipe, wherever it is given, and every
command opens it through one door that says what it opened."""

import os
import shutil

import pytest
import torch
from typer.testing import CliRunner

from srpipe.cli import app
from srpipe.models import build_model, save_checkpoint

from .conftest import ROOT

KWARGS = {"scale": 2, "n_resblocks": 1, "n_feats": 8}


class Payload:
    """What a malicious model file carries: unpickling it runs ``touch MARKER``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def malicious(path, marker):
    """A real srpipe checkpoint with the payload beside its weights."""
    kwargs = dict(KWARGS)
    torch.save({"arch": {"name": "edsr", "kwargs": kwargs}, "state_dict": build_model("edsr", **kwargs).state_dict(),
                "note": Payload(marker)}, path)
    return path


def run(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


@pytest.fixture
def project(tmp_path, monkeypatch):
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in").mkdir()
    import cv2
    import numpy as np

    cv2.imwrite(str(tmp_path / "in" / "a.png"), np.full((24, 24, 3), 128, np.uint8))
    return tmp_path


@pytest.mark.parametrize("command", [
    ["evaluate", "--hr-dir", "in", "--checkpoint", "{evil}", "--out", "x.json"],
    ["upscale", "in/a.png", "--model", "{evil}", "--out", "up"],
    ["export-onnx"],  # the pipeline's stages/train/best.pt
    ["benchmark"],
    ["import-weights", "{evil}", "--out", "m.pt"],
    ["export-weights", "{evil}", "--out", "m.safetensors"],
], ids=["evaluate", "upscale", "export-onnx", "benchmark", "import-weights", "export-weights"])
def test_a_malicious_model_file_never_runs(project, command):
    marker = project / "PWNED"
    evil = malicious(project / "evil.pt", marker)
    (project / "stages" / "train").mkdir(parents=True)
    shutil.copy(evil, project / "stages" / "train" / "best.pt")
    code, out = run(*[a.format(evil=evil) for a in command])
    assert not marker.exists()
    assert code == 1 and out.count("srpipe: error:") == 1 and "Traceback" not in out, out
    assert "it holds Python objects, not only tensors and plain values: it asks for posix.system" in out
    assert "evil.pt" in out or "best.pt" in out


def test_the_payload_would_run_if_unpickled(tmp_path):
    """The file is what the test says it is: torch.load without weights_only runs it."""
    marker = tmp_path / "PWNED"
    torch.load(malicious(tmp_path / "evil.pt", marker), weights_only=False)
    assert marker.exists()


def test_checkpoints_are_tensors_and_plain_values(tmp_path):
    """What srpipe writes loads with weights_only=True, training state included (see test_train)."""
    model = build_model("edsr", **KWARGS)
    save_checkpoint(tmp_path / "m.pt", model, {"name": "edsr", "kwargs": KWARGS}, epoch=3, val_psnr=31.5,
                    rng={"torch": torch.get_rng_state()})
    assert torch.load(tmp_path / "m.pt", weights_only=True)["epoch"] == 3


def test_every_command_says_what_it_opened(project):
    save_checkpoint(project / "m.pt", build_model("edsr", **KWARGS), {"name": "edsr", "kwargs": KWARGS})
    code, out = run("upscale", "in/a.png", "--model", "m.pt", "--out", "up")
    assert code == 0 and "upscaling with m.pt: srpipe checkpoint, edsr x2, 4,531 parameters" in out
