"""Where inference runs: one device setting (eval.device, --device) and half precision on CUDA only.

This machine has no GPU: auto must pick the CPU, an explicit cuda must stop with one line, and
half precision must be refused on the CPU; the half-precision entry's plumbing is exercised with
bf16 forced onto the CPU."""

import json

import pytest
import torch
from typer.testing import CliRunner

from srpipe import hardware
from srpipe.cli import app
from srpipe.io import SrpipeError
from srpipe.models import build_model, save_checkpoint

runner = CliRunner()
ARCH = {"name": "edsr", "kwargs": {"scale": 2, "n_resblocks": 1, "n_feats": 8}}


@pytest.fixture
def model(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("seed: 0\neval:\n  lpips: false\n")
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "m.pt", build_model(ARCH["name"], **ARCH["kwargs"]), ARCH)
    return tmp_path / "m.pt"


def test_auto_picks_the_cpu_here_and_cuda_without_cuda_is_one_line():
    assert not torch.cuda.is_available()  # these tests are for CPU-only machines (CI)
    assert hardware.pick_device("auto", "eval.device") == torch.device("cpu")
    with pytest.raises(SrpipeError, match=r"^eval.device is cuda but no CUDA device is available here; "
                                          r"use eval.device=cpu or auto$"):
        hardware.pick_device("cuda", "eval.device")
    assert hardware.inference_dtype("fp32", torch.device("cpu")) == torch.float32
    with pytest.raises(SrpipeError, match=r"^--precision=fp16 needs a CUDA device \(this run is on the CPU\); "
                                          r"use --precision=fp32 here$"):
        hardware.inference_dtype("fp16", torch.device("cpu"), "--precision")


def test_evaluate_on_auto_and_on_cpu_scores_the_same(model, shared_data):
    scores = {}
    for device in ("auto", "cpu"):
        result = runner.invoke(app, ["evaluate", "--hr-dir", str(shared_data / "Set5"), "--checkpoint", "m.pt",
                                     "--out", f"{device}.json", "--device", device])
        assert result.exit_code == 0, result.output
        scores[device] = json.loads((model.parent / f"{device}.json").read_text())
    assert scores["auto"]["psnr"] == scores["cpu"]["psnr"] and scores["auto"]["ssim"] == scores["cpu"]["ssim"]


@pytest.mark.parametrize("command", ["evaluate", "upscale"])
@pytest.mark.parametrize("flag,message", [
    (["--device", "cuda"], "is cuda but no CUDA device is available here"),
    (["--precision", "fp16"], "=fp16 needs a CUDA device (this run is on the CPU)")])
def test_cuda_and_half_precision_on_a_cpu_machine_stop_in_one_line(model, shared_data, command, flag, message):
    args = (["evaluate", "--hr-dir", str(shared_data / "Set5"), "--checkpoint", "m.pt", "--out", "x.json"]
            if command == "evaluate" else ["upscale", str(shared_data / "Set5"), "--model", "m.pt", "--out", "up"])
    result = runner.invoke(app, [*args, *flag])
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("srpipe: error:")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in result.output, result.output
    assert not (model.parent / "x.json").exists() and not (model.parent / "up").exists()


def test_half_precision_is_its_own_entry_beside_fp32(model, shared_data, monkeypatch):
    """eval.precision: the model scored in fp32 (the comparable number) and again in the half
    precision, under its name with its PSNR difference; bf16 forced onto this CPU for the test."""
    monkeypatch.setattr(hardware, "inference_dtype", lambda precision, device, key="": getattr(torch, hardware.HALF[
        precision]) if precision != "fp32" else torch.float32)
    result = runner.invoke(app, ["evaluate", "--hr-dir", str(shared_data / "Set5"), "--checkpoint", "m.pt",
                                 "--out", "half.json", "--precision", "bf16"])
    assert result.exit_code == 0, result.output
    scores = json.loads((model.parent / "half.json").read_text())
    assert set(scores["bf16"]) == {"psnr", "ssim", "delta_psnr"}
    assert scores["bf16"]["delta_psnr"] == pytest.approx(scores["bf16"]["psnr"] - scores["psnr"])
    assert scores["bf16"]["psnr"] != scores["psnr"] and abs(scores["bf16"]["delta_psnr"]) < 0.5
    assert "model bf16 on" in result.output


def test_tiles_on_a_gpu_are_checked_against_its_free_memory(monkeypatch):
    from srpipe import upscale

    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda: (3 * 2**30, 80 * 2**30))
    assert upscale.available_memory("cuda") == 3 * 2**30
    assert upscale.available_memory("cpu") != 3 * 2**30
