"""End to end: the real `dvc repro` and `dvc exp run` on a tiny config in a temporary git repo."""

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from .conftest import ROOT, int8_weights
from .test_plots import images_drawn

STAGES = ["prepare-degradations", "extract-patches", "train", "evaluate", "export-onnx", "benchmark"]
PROJECT_FILES = ["dvc.yaml", "params.yaml", ".dvcignore", ".gitignore", ".dvc/config", ".dvc/.gitignore",
                 "data/raw/.gitkeep"]

TINY = {
    "data": {"limit": 2},
    "model": {"n_resblocks": 1, "n_feats": 8},
    "train": {"epochs": 2, "steps_per_epoch": 3, "batch_size": 4, "warmup_epochs": 1, "patch_size": 32},
    "eval": {"detail_crops": 1},
    "export": {"check_images": 1, "calibration_patches": 4, "calibration_size": 16},
    "benchmark": {"sizes": [[24, 24], [32, 40]], "threads": [1], "warmup": 1, "repeats": 10},
}


def sh(cwd, *cmd, env=None):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com", **(env or {})}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{output}"
    return output


def ran(output):
    return [s for s in STAGES if f"Running stage '{s}'" in output]


def readme_exp_show():
    """The `dvc exp show` commands of the experiments guide, as argument lists."""
    text = (ROOT / "docs" / "experiments.md").read_text()
    section = text[text.index("## Experiments\n"):]
    section = section[:section.index("\n## ", 1)].replace("\\\n", " ")
    return [shlex.split(line, comments=True) for line in section.splitlines() if line.startswith("dvc exp show ")]


def find(tree, key):
    """Every value stored under ``key`` anywhere in nested JSON."""
    if isinstance(tree, dict):
        return [v for k, v in tree.items() if k == key] + [x for v in tree.values() for x in find(v, key)]
    if isinstance(tree, list):
        return [x for v in tree for x in find(v, key)]
    return []


@pytest.fixture
def repo(tmp_path, backbone, shared_data):
    for name in PROJECT_FILES:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "srpipe", tmp_path / "srpipe", ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for section, values in TINY.items():
        params.setdefault(section, {}).update(values)
    params["eval"]["lpips_backbone"] = str(backbone)
    params["eval"]["datasets"] = ["sample-valid", str(shared_data / "Set5")]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(tmp_path, "git", "init", "-q")
    sh(tmp_path, "git", "config", "user.name", "srpipe tests")  # dvc exp commits need an identity
    sh(tmp_path, "git", "config", "user.email", "tests@example.com")
    sh(tmp_path, "git", "add", "-A")
    sh(tmp_path, "git", "commit", "-qm", "tiny project")
    return tmp_path


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_repro_cache_and_experiment(repo):
    first = sh(repo, "dvc", "repro")
    assert ran(first) == STAGES

    assert len(list((repo / "data/prepared/train/hr").glob("*.png"))) == 2
    assert (repo / "data/patches/hr.bin").is_file() and (repo / "data/patches/index.csv").is_file()
    assert (repo / "stages/train/best.pt").is_file() and (repo / "stages/train/last.pt").is_file()
    log = (repo / "metrics/train_log.csv").read_text().splitlines()
    assert log[0] == "epoch,loss,val_psnr,val_ssim,lr,step,minutes,grad_norm,clipped" and log[2].split(",")[5] == "6"
    assert log[0].startswith("epoch,loss,val_psnr") and len(log) == 3
    evaluation = json.loads((repo / "metrics/evaluate.json").read_text())
    assert set(evaluation) == {"sample-valid", "set5"}
    crops = sorted(p.relative_to(repo / "stages/evaluate/crops").as_posix()
                   for p in (repo / "stages/evaluate/crops").rglob("*.png"))
    assert len(crops) == 2 and crops[1].startswith("set5/"), crops  # eval.detail_crops: 1 per dataset
    for scores in evaluation.values():
        assert 20 < scores["psnr"] < 50 and 0 < scores["ssim"] <= 1 and 0 <= scores["lpips"] < 1
        assert 25 < scores["bicubic"]["psnr"] < 40
        assert scores["psnr_gain_db"] == pytest.approx(scores["psnr"] - scores["bicubic"]["psnr"])
    # Set5's first two images, bicubic by the protocol (baby, bird: 37.07 and 36.81 dB in the literature)
    assert 36.0 < evaluation["set5"]["bicubic"]["psnr"] < 37.5
    export = json.loads((repo / "metrics/export.json").read_text())
    assert (repo / "stages/export-onnx/model.onnx").is_file() and export["max_abs_diff"] < 1e-4
    assert (repo / "stages/export-onnx/model.int8.onnx").is_file()
    assert abs(int8_weights(repo / "stages/export-onnx/model.int8.onnx")).max() == 64  # export.int8_reduce_range
    assert abs(export["int8"]["delta_psnr"]) < 1.0 and export["int8"]["size_mb"] < export["fp32"]["size_mb"]
    bench = json.loads((repo / "metrics/benchmark.json").read_text())  # the headline: largest size and threads
    assert set(bench) == {"fp32_ms", "int8_ms", "input", "threads"}  # one latency per exported precision
    assert bench["fp32_ms"] > 0 and bench["int8_ms"] > 0 and (bench["input"], bench["threads"]) == ("32x40", 1)
    grid = pd.read_csv(repo / "stages/benchmark/results.csv")  # every measurement
    assert {"onnxruntime-fp32", "onnxruntime-int8", "torch-fp32"} <= set(grid["engine"])
    assert set(grid["size"]) == {"24x24", "32x40"} and len(grid) == 2 * grid["engine"].nunique()
    at = grid.set_index(["engine", "size"])
    assert at.loc[("onnxruntime-int8", "32x40"), "latency_ms"] == bench["int8_ms"]
    assert at.loc[("onnxruntime-int8", "32x40"), "matmul"] == "int8"  # measured against the int8 matmul rate
    assert at.loc[("onnxruntime-fp32", "32x40"), "matmul"] == "fp32"
    table = (repo / "metrics/benchmark_latency.csv").read_text().splitlines()
    assert table[0].startswith("size,input_pixels,") and len(table) == 3
    # dvc plots show: the three charts dvc.yaml defines, no automatic ones
    sh(repo, "dvc", "plots", "show", "-o", "plots")
    charts = re.findall(r"vegaEmbed\('#([^']+)'", (repo / "plots/index.html").read_text())
    assert charts == ["Validation_PSNR", "Training_loss", "Latency_vs_input_size"]
    shutil.rmtree(repo / "plots")
    # generated files stay out of git: only dvc.lock and DVC's own .gitignore files are new
    status = sh(repo, "git", "status", "--porcelain", "--untracked-files=all").split()
    assert {Path(p).name for p in status if p not in ("M", "??")} <= {"dvc.lock", ".gitignore"}, status

    again = sh(repo, "dvc", "repro")
    assert ran(again) == [] and "up to date" in again

    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "baseline run")
    experiment = sh(repo, "dvc", "exp", "run", "-S", "model.attention=true")
    assert ran(experiment) == ["train", "evaluate", "export-onnx", "benchmark"]

    diff = json.loads(sh(repo, "dvc", "metrics", "diff", "--json"))
    keys = {f"{path}:{key}" for path, changes in diff.items() for key in changes}
    for wanted in ("metrics/evaluate.json:sample-valid.psnr", "metrics/evaluate.json:set5.ssim",
                   "metrics/evaluate.json:set5.lpips", "metrics/evaluate.json:set5.psnr_gain_db",
                   "metrics/export.json:int8.delta_psnr",
                   "metrics/benchmark.json:fp32_ms", "metrics/benchmark.json:int8_ms"):
        assert wanted in keys, sorted(keys)
    assert not [k for k in keys if re.search(r"\d+x\d+|threads\d", k)], sorted(keys)  # no benchmark grid
    psnr = diff["metrics/evaluate.json"]["set5.psnr"]
    assert psnr["old"] != psnr["new"]

    # dvc plots diff: the baseline's and the experiment's detail crops side by side, both drawn in Chromium
    [name] = sh(repo, "dvc", "exp", "list", "--name-only").split()
    sh(repo, "dvc", "plots", "diff", "HEAD", name, "-o", "diff")
    drawn = images_drawn(repo / "diff" / "index.html", repo)
    assert len(drawn) == 4 and all(drawn.values()), drawn  # 2 crops x 2 experiments
    assert len({hashlib.sha256((repo / "diff" / src).read_bytes()).hexdigest() for src in drawn}) == 4
    shutil.rmtree(repo / "diff")

    # README's `dvc exp show` fits a 160-column terminal, with the changed param and the headline
    # numbers; the demo evaluates sample-valid only, so the tiny config's second dataset is dropped too
    [command] = readme_exp_show()
    table = sh(repo, *command, "--drop", r"set5\.", env={"COLUMNS": "1000"})  # its natural width
    lines = table.splitlines()
    assert max(map(len, lines)) <= 160, table
    assert set(lines[1].split()) >= {"Experiment", "model.attention", "sample-valid.psnr", "sample-valid.ssim",
                                     "sample-valid.psnr_gain_db", "int8.delta_psnr", "fp32_ms", "int8_ms"}, table

    shown = json.loads(sh(repo, "dvc", "exp", "show", "--json"))
    assert True in find(shown, "attention") and False in find(shown, "attention")
    assert len(find(shown, "psnr")) >= 2


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_dvc_repro_resumes_training_after_a_kill(repo):
    import re
    import signal
    import time

    import torch

    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"].update(epochs=2, steps_per_epoch=200, save_every=5, threads=1)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(repo, "dvc", "repro", "extract-patches")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    killed = subprocess.Popen(["dvc", "repro", "train"], cwd=repo, env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last, deadline = repo / "stages/train/last.pt", time.time() + 300
    while time.time() < deadline:
        try:
            if torch.load(last, weights_only=True)["progress"]["step"] >= 20:
                break
        except (FileNotFoundError, EOFError, RuntimeError):
            pass
        time.sleep(0.05)
    os.killpg(killed.pid, signal.SIGKILL)  # dvc and the srpipe it runs
    killed.wait(timeout=60)
    step = torch.load(last, weights_only=True)["progress"]["step"]
    assert 20 <= step < 400

    again = sh(repo, "dvc", "repro", "train")
    assert f"resuming from stages/train/last.pt at step {step} of 400" in again
    assert re.search(r"best validation PSNR [\d.]+ dB at epoch \d", again)
    assert torch.load(last, weights_only=True)["progress"]["step"] == 400


def docs_recipe() -> str:
    """The bash block of docs/perceptual.md's two phases, as written there."""
    text = (ROOT / "docs" / "perceptual.md").read_text()
    section = text[text.index("## The two phases as experiments"):]
    return section[section.index("```bash\n") + 8 : section.index("\n```", section.index("```bash"))]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_two_phase_perceptual_recipe_runs_as_written(repo):
    """docs/perceptual.md's commands, verbatim, on the tiny project: an L1 experiment, then the
    perceptual + GAN experiment from its best.pt, each scored with LPIPS and DISTS."""
    import torch

    params = yaml.safe_load((repo / "params.yaml").read_text())  # a tiny Compact and discriminator
    params["model"]["kwargs"], params["discriminator"]["features"] = {"num_feat": 8, "num_conv": 2}, 8
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(repo, "git", "commit", "-qam", "tiny compact")
    sh(repo, "bash", "-euc", docs_recipe(), env={"COLUMNS": "200"})
    shown = json.loads(sh(repo, "dvc", "exp", "show", "--json"))
    assert {"x4-l1", "x4-gan"} <= set(find(shown, "name")), find(shown, "name")
    gan = torch.load(repo / "stages/train/last.pt", weights_only=True)  # the workspace holds phase 2's run
    assert gan["fingerprint"]["train"]["gan_weight"] == 0.1 and gan["discriminator"]["optimizer"]["state"]
    assert gan["fingerprint"]["init_sha256"] == hashlib.sha256((repo / "models/x4-l1.pt").read_bytes()).hexdigest()
    log = pd.read_csv(repo / "metrics/train_log.csv")
    assert {"loss_perceptual", "loss_gan", "d_real", "d_fake", "val_lpips", "val_dists"} <= set(log.columns)
    scores = json.loads((repo / "metrics/evaluate.json").read_text())["set5"]
    assert 0 < scores["dists"] < 1 and 0 < scores["bicubic"]["dists"] < 1
    assert len(list((repo / "stages/evaluate/crops/set5").glob("*.png"))) == 1
