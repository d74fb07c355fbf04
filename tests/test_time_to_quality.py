"""benchmarks/time_to_quality.py: what its table relies on (the benchmark itself is not a test)."""

import importlib.util
import json
import shutil

import pandas as pd
import pytest
from typer.testing import CliRunner

from srpipe.cli import app
from srpipe.io import SrpipeError

from .conftest import ROOT

spec = importlib.util.spec_from_file_location("time_to_quality", ROOT / "benchmarks" / "time_to_quality.py")
ttq = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ttq)

TINY = ["model.n_resblocks=1", "model.n_feats=8", "train.batch_size=4", "train.patch_size=32",
        "train.feature_stats_every=0", "train.val_images=1"]


@pytest.mark.timeout(300)
def test_the_table_scores_are_what_srpipe_evaluate_prints_for_the_same_snapshot(tmp_path, shared_data, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["--minutes", "0.1", "--train", "sample-train", "--eval", str(shared_data / "Set5"), "--points", "2",
            "--epochs-per-point", "1", "--rate-steps", "2", "--work", "run"]  # no params.yaml: defaults
    result = ttq.main(args + [a for o in TINY for a in ("--set", o)])
    table = pd.read_csv(tmp_path / "run" / "curve.csv")
    assert table["run"].tolist() == ["bicubic", "srpipe", "srpipe"]
    snapshots = sorted((tmp_path / "run" / "train" / "snapshots").glob("epoch_*.pt"))
    assert [s.name for s in snapshots] == ["epoch_0001.pt", "epoch_0002.pt"]
    assert table["step"].iloc[-1] == result["iterations"] > 0  # the last snapshot is the budget's last step
    assert table["minutes"].is_monotonic_increasing
    for row, snapshot in zip(table.iloc[1:].itertuples(), snapshots):
        out = tmp_path / f"{snapshot.stem}.json"
        cli = CliRunner().invoke(app, ["evaluate", "--hr-dir", str(shared_data / "Set5"), "--checkpoint",
                                       str(snapshot), "--out", str(out), "--set", "eval.lpips=false"])
        assert cli.exit_code == 0, cli.output
        scores = json.loads(out.read_text())
        assert (row.set5_psnr, row.set5_ssim) == pytest.approx((scores["psnr"], scores["ssim"]), rel=1e-12)
    bicubic = CliRunner().invoke(app, ["evaluate", "--hr-dir", str(shared_data / "Set5"), "--baseline", "bicubic",
                                       "--scale", "2", "--out", str(tmp_path / "b.json"), "--set", "eval.lpips=false"])
    assert bicubic.exit_code == 0, bicubic.output
    assert table["set5_psnr"].iloc[0] == pytest.approx(json.loads((tmp_path / "b.json").read_text())["psnr"], rel=1e-12)
    assert result["params"] > 0 and result["macs_per_output_pixel"] > 0


def test_a_scored_image_in_the_training_data_is_refused(tmp_path, shared_data):
    train = tmp_path / "mine"
    train.mkdir()
    shutil.copy(shared_data / "Set5" / sorted(p.name for p in (shared_data / "Set5").iterdir())[0], train / "x.png")
    files = ttq.source_files([str(train)])
    evals = {str(shared_data / "Set5"): sorted((shared_data / "Set5").iterdir())}
    with pytest.raises(SrpipeError, match="is also a training image"):
        ttq.check_held_out(files, evals, [str(train)])
    ttq.check_held_out(files, {str(shared_data / "Set14"): sorted((shared_data / "Set14").iterdir())}, [str(train)])


def test_b100_is_refused_for_a_model_trained_on_bsd68(tmp_path):
    with pytest.raises(SrpipeError, match="BSD300's test split"):
        ttq.check_held_out([], {str(tmp_path / "B100"): []}, [str(tmp_path / "BSD68")])
    ttq.check_held_out([], {str(tmp_path / "Set14"): []}, [str(tmp_path / "BSD68")])


def test_iterations_fix_the_budget_without_measuring_the_step_rate():
    args = ttq.parse_args(["--minutes", "10", "--train", "x", "--iterations", "7330", "--points", "2"])
    p, seconds = ttq.plan(args, ttq.Params(), store=None, valid=None)  # no store: nothing is measured
    assert (p.train.epochs, p.train.steps_per_epoch, p.train.snapshot_every) == (10, 733, 5)
    assert seconds == pytest.approx(600 / 7330)
    args.iterations = 7331
    with pytest.raises(SrpipeError, match="--iterations 7331 is not a multiple of the 10 epochs"):
        ttq.plan(args, ttq.Params(), store=None, valid=None)
