"""The train stage on a tiny model: resume after SIGKILL mid-epoch, fresh starts, DDP, accumulation, EMA, logs."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from srpipe.config import ModelParams, TrainParams
from srpipe.data import prepare, source_files
from srpipe.io import SrpipeError
from srpipe.patches import extract
from srpipe.training import LOSSES, train

TINY_MODEL = {"n_resblocks": 1, "n_feats": 8}
TINY_TRAIN = {"epochs": 3, "steps_per_epoch": 6, "batch_size": 4, "threads": 1, "feature_stats_every": 2,
              "patch_size": 32, "amp": "none"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    astronaut = source_files("sample-valid", limit=1)  # 512x512
    prepare(astronaut, root / "prepared" / "train", 2)
    prepare(astronaut, root / "prepared" / "valid", 2)
    extract(root / "prepared" / "train", root / "patches", 2)
    return root


def run(data, out, degradation=None, summary_json=None, **train_kw):
    cfg = TrainParams(**{**TINY_TRAIN, **train_kw})
    return train(data / "patches", data / "prepared" / "valid", out, out / "log.csv", 2, 0,
                 ModelParams(**TINY_MODEL), cfg, crop_border=2, degradation=degradation, summary_json=summary_json)


def weights(path):
    return torch.load(path, weights_only=True)["state_dict"]


def cli(cwd, *args, torchrun=False):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    prefix = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"] if torchrun \
        else [sys.executable]
    return subprocess.Popen([*prefix, "-m", "srpipe", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


# spandrel's architectures at a tiny size: SPAN (trained in its training form, a re-parameterisable
# layer that DDP must not find unused) and Compact
TINY_ZOO = {"span": {"name": "span", "kwargs": {"feature_channels": 8}},
            "compact": {"name": "compact", "kwargs": {"num_feat": 8, "num_conv": 2}}}


# a GAN run: Real-ESRGAN's U-Net discriminator (spectral norm), tiny
TINY_GAN = {"gan_weight": 0.1, "discriminator": {"features": 8}}


def project(tmp_path, data, model=TINY_MODEL, discriminator=None, **train_kw):
    params = {"model": model, "train": {**TINY_TRAIN, **train_kw}, **({"discriminator": discriminator} if discriminator
                                                                     else {})}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return ["--patches", str(data / "patches"), "--valid", str(data / "prepared" / "valid")]


def saved_step(path):
    try:
        return torch.load(path, weights_only=True)["progress"]["step"]
    except (FileNotFoundError, EOFError, RuntimeError):
        return None


@pytest.mark.parametrize("model,gan", [(TINY_MODEL, {}), *((m, {}) for m in TINY_ZOO.values()), (TINY_MODEL, TINY_GAN)],
                         ids=["edsr", *TINY_ZOO, "edsr-gan"])
def test_sigkill_mid_epoch_resumes_from_the_last_save_to_the_same_weights(tmp_path, data, model, gan):
    # 3 epochs of 40 steps; last.pt every 7 steps inside an epoch and at each epoch's end; with a
    # GAN, the discriminator (its spectral norm's vectors included), its Adam and schedule too
    paths = project(tmp_path, data, model, steps_per_epoch=40, save_every=7, **gan)
    whole = cli(tmp_path, "train", *paths, "--out", "whole", "--set", "train.save_every=0")
    assert whole.wait(timeout=300) == 0, whole.stdout.read()

    killed = cli(tmp_path, "train", *paths, "--out", "resumed")
    last = tmp_path / "resumed" / "last.pt"
    seen, deadline = [], time.time() + 300
    while time.time() < deadline:
        step = saved_step(last)
        if step is not None and (not seen or seen[-1] != step):
            seen.append(step)
        if step is not None and 42 <= step < 77:  # a save in the middle of epoch 2
            break
        time.sleep(0.005)
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=60)
    step = saved_step(last)
    assert step % 40 and step in range(42, 80), (step, seen)
    assert all(s % 7 == 0 or s % 40 == 0 for s in seen), seen  # so a kill loses at most 7 steps

    again = cli(tmp_path, "train", *paths, "--out", "resumed")
    output = again.communicate(timeout=300)[0]
    assert again.returncode == 0, output
    assert f"resuming from resumed/last.pt at step {step} of 120" in output
    # a kill during a save leaves its temporary; the restart removes it (nothing half-written stays)
    assert not [p.name for p in last.parent.iterdir() if ".tmp" in p.name]
    a, b = weights(tmp_path / "whole" / "last.pt"), weights(last)
    assert all(torch.equal(a[k], b[k]) for k in a)
    if gan:
        a, b = (torch.load(f, weights_only=True)["discriminator"] for f in (tmp_path / "whole" / "last.pt", last))
        assert any(k.endswith("._u") for k in a["model"]) and a["scheduler"] == b["scheduler"]
        assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
        assert all(torch.equal(x, y) for i in a["optimizer"]["state"]
                   for x, y in zip(a["optimizer"]["state"][i].values(), b["optimizer"]["state"][i].values()))

    def history(path):  # all but the wall-clock minutes, which a kill and restart change
        rows = torch.load(path, weights_only=True)["progress"]["history"]
        return [{k: v for k, v in row.items() if k != "minutes"} for row in rows]

    assert history(last) == history(tmp_path / "whole" / "last.pt") and len(history(last)) == 3
    assert torch.load(last, weights_only=True)["progress"]["history"][-1]["minutes"] > 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    losses = EventAccumulator(str(tmp_path / "resumed" / "tb")).Reload().Scalars("train/loss")
    assert [e.step for e in losses] == list(range(1, 121))  # the killed run's unsaved steps were dropped


def test_changed_params_or_a_finished_run_start_fresh(tmp_path, data, capsys):
    run(data, tmp_path, epochs=1)
    run(data, tmp_path, epochs=1, lr=1e-4)
    assert "(train.lr: 0.0002 -> 0.0001); starting fresh" in capsys.readouterr().out
    run(data, tmp_path, epochs=1, lr=1e-4)
    assert "that run had finished; starting fresh" in capsys.readouterr().out
    run(data, tmp_path, epochs=1, lr=1e-4, patch_size=16)
    assert "(train.patch_size: 32 -> 16); starting fresh" in capsys.readouterr().out


def test_nonfinite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, data, monkeypatch):
    calls = {"n": 0}

    def poisoned(pred, target):
        calls["n"] += 1
        loss = torch.nn.functional.l1_loss(pred, target)
        return loss * float("nan") if calls["n"] > 8 else loss  # epoch 2, third step

    monkeypatch.setitem(LOSSES, "l1", poisoned)
    with pytest.raises(SrpipeError, match=r"non-finite loss \(nan\) at step 8 \(epoch 2\)"):
        run(data, tmp_path, save_every=0)
    assert torch.load(tmp_path / "last.pt", weights_only=True)["progress"]["step"] == 6
    assert all(torch.isfinite(v).all() for v in weights(tmp_path / "best.pt").values())


def test_gradient_accumulation_equals_a_bigger_batch(tmp_path, data):
    run(data, tmp_path / "big", epochs=1, batch_size=8)
    run(data, tmp_path / "accum", epochs=1, batch_size=4, grad_accum=2)
    a, b = weights(tmp_path / "big" / "last.pt"), weights(tmp_path / "accum" / "last.pt")
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-4


def grad_norms_at_each_step():
    """The gradients' global L2 norm as the optimiser sees it, step by step."""
    seen = []

    def record(optimizer, args, kwargs):
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        seen.append(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item())

    from torch.optim.optimizer import register_optimizer_step_pre_hook

    handle = register_optimizer_step_pre_hook(record)
    return seen, handle


def test_grad_clip_scales_the_gradients_down_to_the_limit_and_the_log_says_how_often(tmp_path, data):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    seen, handle = grad_norms_at_each_step()
    try:
        run(data, tmp_path / "free", epochs=1)
        free, seen[:] = list(seen), []
        run(data, tmp_path / "clipped", epochs=1, grad_clip=1e-4)
        clipped, seen[:] = list(seen), []
        run(data, tmp_path / "loose", epochs=1, grad_clip=1e9)
    finally:
        handle.remove()
    assert len(free) == len(clipped) == 6 and min(free) > 1e-3
    assert clipped == pytest.approx([1e-4] * 6, rel=1e-4)  # every step scaled down to the limit
    logged = [e.value for e in EventAccumulator(str(tmp_path / "clipped" / "tb")).Reload().Scalars("train/grad_norm")]
    assert logged[0] == pytest.approx(free[0], rel=1e-5) and min(logged) > 1e-3  # the norms before clipping
    free_log, clipped_log = pd.read_csv(tmp_path / "free" / "log.csv"), pd.read_csv(tmp_path / "clipped" / "log.csv")
    assert free_log["grad_norm"].iloc[0] == pytest.approx(np.median(free), rel=1e-5)
    assert free_log["clipped"].iloc[0] == 0 and clipped_log["clipped"].iloc[0] == 1
    a, b = weights(tmp_path / "free" / "last.pt"), weights(tmp_path / "loose" / "last.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)  # a limit above every norm changes nothing


def test_chroma_weight_trains_on_luma_and_colour_apart(tmp_path, data, monkeypatch):
    channels = []

    def recording(pred, target):
        channels.append(pred.shape[1])
        return torch.nn.functional.l1_loss(pred, target)

    monkeypatch.setitem(LOSSES, "l1", recording)
    run(data, tmp_path / "rgb", epochs=1)
    assert channels == [3] * 6
    channels.clear()
    run(data, tmp_path / "y", epochs=1, chroma_weight=0.1)
    assert channels == [1, 2] * 6  # Y, then Cb and Cr, at every step


def test_ema_weights_are_what_best_pt_holds(tmp_path, data):
    summary = run(data, tmp_path, epochs=2, ema=0.9)
    last = torch.load(tmp_path / "last.pt", weights_only=True)
    best = weights(tmp_path / "best.pt")
    ema = {k.removeprefix("module."): v for k, v in last["ema"].items() if k.startswith("module.")}
    assert summary["best_epoch"] == 2
    assert all(torch.equal(best[k], ema[k]) for k in best)
    assert not all(torch.equal(best[k], last["state_dict"][k]) for k in best)


def test_compiled_training_is_one_graph_with_feature_stats_and_repeats_its_weights(tmp_path, data):
    # feature statistics every 2 steps used to hook the compiled forward: a graph break at every
    # conv and a recompile whenever the hooks were armed, slower than no compile at all
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    run(data, tmp_path / "a", epochs=1, compile=True)
    assert dict(counters["graph_break"]) == {} and counters["stats"]["unique_graphs"] == 1
    events = EventAccumulator(str(tmp_path / "a" / "tb")).Reload()
    assert [e.step for e in events.Scalars("features_mean/body.0.body.2")] == [1, 3, 5]
    assert all(np.isfinite(e.value) and e.value > 0 for e in events.Scalars("features_std/head"))
    run(data, tmp_path / "b", epochs=1, compile=True)
    a, b = weights(tmp_path / "a" / "last.pt"), weights(tmp_path / "b" / "last.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_summary_tensorboard_and_warning(tmp_path, data):
    with pytest.warns(UserWarning, match=r"train.lr=0.003 is above 0.002 for a 1x8 model \(residual blocks x features\)"):
        summary = run(data, tmp_path, epochs=2, lr=3e-3, amp="bf16", loss="charbonnier", snapshot_every=1)
    # 3x3 convs with biases: head 3->8, residual block 2x 8->8, body 8->8, upsampler 8->32, tail 8->3
    assert summary["params"] == 224 + 2 * 584 + 584 + 2336 + 219 and summary["steps"] == 12
    # per output pixel: the LR-space convs count once per 2x2 output pixels, the tail once
    assert summary["macs_per_output_pixel"] == pytest.approx((27 * 8 + 3 * 72 * 8 + 72 * 32) / 4 + 72 * 3)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tb")).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lr", "val/psnr", "val/ssim", "features_mean/head", "features_std/head"} <= tags
    assert "features_std/body.0.body.2" in tags and "features_mean/tail.1" in tags
    assert len(events.Scalars("train/loss")) == 12 and len(events.Scalars("val/psnr")) == 2
    assert [e.step for e in events.Scalars("features_mean/head")] == [1, 3, 5, 7, 9, 11]
    snapshots = sorted(p.name for p in (tmp_path / "snapshots").iterdir())
    assert snapshots == ["epoch_0001.pt", "epoch_0002.pt"]
    final = torch.load(tmp_path / "snapshots" / "epoch_0002.pt", weights_only=True)
    assert final["step"] == 12 and all(torch.equal(v, weights(tmp_path / "last.pt")[k])
                                       for k, v in final["state_dict"].items())
    log = np.genfromtxt(tmp_path / "log.csv", delimiter=",", names=True)
    assert list(log["epoch"]) == [1, 2] and np.isfinite(log["loss"]).all()


@pytest.mark.parametrize("model,channels_last,gan", [(TINY_MODEL, False, {}), (TINY_ZOO["span"], False, {}),
                                                     (TINY_MODEL, True, {}), (TINY_MODEL, False, TINY_GAN)],
                         ids=["edsr", "span", "edsr-channels-last", "edsr-gan"])
def test_ddp_on_two_cpu_processes_matches_one(tmp_path, data, model, channels_last, gan):
    # channels_last: DDP's buffer broadcast refused EDSR's (1, 3, 1, 1) mean once it was channels_last;
    # gan: the discriminator under DDP too, its real and fake halves in one forward
    paths = project(tmp_path, data, model, epochs=2, batch_size=8, channels_last=channels_last, **gan)
    ddp = cli(tmp_path, "train", *paths, "--out", "ddp", "--history", "ddp.csv", "--metrics", "ddp.json",
              torchrun=True)
    output = ddp.communicate(timeout=300)[0]
    assert ddp.returncode == 0, output
    one = cli(tmp_path, "train", *paths, "--out", "one", "--history", "one.csv", "--metrics", "one.json")
    assert one.wait(timeout=300) == 0
    a = torch.load(tmp_path / "ddp" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "one" / "last.pt", weights_only=True)
    assert len(a["progress"]["history"]) == 2
    for x, y in zip(a["progress"]["history"], b["progress"]["history"]):
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-5)
        if gan:
            assert x["loss_d_real"] == pytest.approx(y["loss_d_real"], rel=1e-4) and x["d_fake"] > 0
        assert x["val_psnr"] == pytest.approx(y["val_psnr"], abs=0.01)
    assert len(list((tmp_path / "ddp" / "tb").iterdir())) == 1  # only rank 0 wrote
    assert output.count("best validation PSNR") == 1


def test_load_matching_takes_every_tensor_but_a_different_upsampler(tmp_path):
    from srpipe.models import build_model, save_checkpoint
    from srpipe.training.state import load_matching

    torch.manual_seed(1)
    x2 = build_model("edsr", scale=2, **TINY_MODEL)
    save_checkpoint(tmp_path / "x2.pt", x2, {"name": "edsr", "kwargs": {"scale": 2, **TINY_MODEL}})
    torch.manual_seed(2)
    x3 = build_model("edsr", scale=3, **TINY_MODEL)
    fresh_tail = x3.tail[0][0].weight.detach().clone()
    loaded, skipped = load_matching(x3, tmp_path / "x2.pt")
    assert skipped == ["tail.0.0.weight", "tail.0.0.bias"]  # x2: 8 -> 32 channels, x3: 8 -> 72
    assert len(loaded) == len(x3.state_dict()) - 2 and "tail.1.weight" in loaded and "head.weight" in loaded
    assert torch.equal(x3.head.weight, x2.head.weight) and torch.equal(x3.tail[1].weight, x2.tail[1].weight)
    assert torch.equal(x3.tail[0][0].weight, fresh_tail)


def test_init_from_starts_from_a_checkpoint_and_is_part_of_the_fingerprint(tmp_path, data, capsys):
    run(data, tmp_path / "first", epochs=1)
    source = tmp_path / "init.pt"
    source.write_bytes((tmp_path / "first" / "best.pt").read_bytes())
    capsys.readouterr()
    summary = run(data, tmp_path / "second", epochs=1, init_from=str(source))
    out = capsys.readouterr().out
    assert f"init_from {source}: loaded 12 of 12 tensors" in out and "initialised fresh" not in out
    assert summary["init_loaded"] == 12 and summary["init_skipped"] == 0
    # starting from trained weights, the first epoch's loss is lower than the first run's
    first = torch.load(tmp_path / "first" / "last.pt", weights_only=True)["progress"]["history"][0]["loss"]
    assert summary["final_loss"] < first
    source.write_bytes((tmp_path / "second" / "best.pt").read_bytes())  # same path, other weights
    run(data, tmp_path / "second", epochs=2, init_from=str(source))
    assert "init_sha256" in capsys.readouterr().out
    with pytest.raises(SrpipeError, match="train.init_from: cannot read .*nothing.pt"):
        run(data, tmp_path / "third", init_from=str(tmp_path / "nothing.pt"))


def test_on_the_fly_degradation_resumes_exactly(tmp_path, data, monkeypatch):
    from srpipe.config import DegradationParams

    fly = DegradationParams(kind="realistic", on_the_fly=True, noise_sigma=(0, 20), jpeg_quality=(30, 95))
    run(data, tmp_path / "whole", fly, epochs=2, save_every=4)
    run(data, tmp_path / "again", fly, epochs=2, save_every=4)
    a, b = weights(tmp_path / "whole" / "last.pt"), weights(tmp_path / "again" / "last.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)  # one seed, one result
    stored = weights(tmp_path / "whole" / "last.pt")
    run(data, tmp_path / "stored", None, epochs=2, save_every=4)
    assert not all(torch.equal(stored[k], v) for k, v in weights(tmp_path / "stored" / "last.pt").items())

    calls = {"n": 0}

    def killed_at_step_10(pred, target):
        calls["n"] += 1
        if calls["n"] == 10:
            raise KeyboardInterrupt
        return torch.nn.functional.l1_loss(pred, target)

    monkeypatch.setitem(LOSSES, "l1", killed_at_step_10)
    with pytest.raises(KeyboardInterrupt):
        run(data, tmp_path / "resumed", fly, epochs=2, save_every=4)
    assert torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)["progress"]["step"] == 8
    monkeypatch.setitem(LOSSES, "l1", torch.nn.functional.l1_loss)
    run(data, tmp_path / "resumed", fly, epochs=2, save_every=4)
    c = weights(tmp_path / "resumed" / "last.pt")
    assert all(torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("supported", [True, False])
def test_amp_auto_trains_in_bf16_only_where_supported_and_falls_back_to_fp32(tmp_path, data, monkeypatch, supported):
    from srpipe.training import recipe

    monkeypatch.setattr(recipe, "bf16_supported", lambda device_type: supported)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # auto never warns: it picks
        summary = run(data, tmp_path, epochs=1, amp="auto", channels_last=True)
    assert summary["precision"] == ("bf16" if supported else "fp32")
    assert np.isfinite(summary["final_loss"])
    saved = torch.load(tmp_path / "last.pt", weights_only=True)["fingerprint"]
    assert saved["precision"] == summary["precision"]  # a resume on another CPU is a fresh start, not a mix


def test_zero_init_residual_without_residual_blocks_is_a_one_line_error(tmp_path, data):
    cfg = TrainParams(**{**TINY_TRAIN, "zero_init_residual": True})
    with pytest.raises(SrpipeError, match=r"^train.zero_init_residual: model.name=rlfn has no EDSR/RCAN residual "
                                          r"blocks to start as the identity; set it to false$"):
        train(data / "patches", data / "prepared" / "valid", tmp_path, tmp_path / "log.csv", 2, 0,
              ModelParams(name="rlfn", n_resblocks=1, n_feats=8, esa_channels=4), cfg, crop_border=2)


def test_the_schedule_ends_at_the_last_iteration_of_a_run(tmp_path, data):
    run(data, tmp_path, epochs=3, lr=1e-4, min_lr_ratio=0.05, warmup_epochs=1)
    log = np.genfromtxt(tmp_path / "log.csv", delimiter=",", names=True)
    scheduler = torch.load(tmp_path / "last.pt", weights_only=True)["scheduler"]
    # the last step ran at the floor: lr * min_lr_ratio; the log has the lr of the step after it
    assert scheduler["last_epoch"] == 18 and log["step"][-1] == 18 and log["lr"][-1] == pytest.approx(1e-4 * 0.05)
    from srpipe.training import lr_lambda

    factor = lr_lambda(TrainParams(**{**TINY_TRAIN, "epochs": 3, "min_lr_ratio": 0.05}), 6)
    assert factor(17) == pytest.approx(0.05) and factor(16) > 0.05
    assert log["minutes"][-1] >= log["minutes"][0] > 0


def test_step_seconds_times_real_steps_without_touching_the_run(tmp_path, data):
    from srpipe.training import step_seconds

    step, validation = step_seconds(data / "patches", data / "prepared" / "valid", tmp_path / "scratch", 2, 0,
                                    ModelParams(**TINY_MODEL), TrainParams(**TINY_TRAIN), steps=3)
    assert 0 < step < 10 and 0 < validation < 60
    assert not (tmp_path / "scratch" / "last.pt").exists()


def exploding_after(steps):
    """L1 that turns 1000 times larger (finite) after ``steps`` calls: a run that diverges."""
    calls = {"n": 0}

    def loss(pred, target):
        calls["n"] += 1
        value = torch.nn.functional.l1_loss(pred, target)
        return value * 1000 if calls["n"] > steps else value

    return loss


def test_a_diverged_epoch_stops_training_and_keeps_the_last_good_state(tmp_path, data, monkeypatch):
    # finite, but 1000 times larger from epoch 3 on, as lr 4e-3 went (README)
    monkeypatch.setitem(LOSSES, "l1", exploding_after(12))
    with pytest.raises(SrpipeError, match=r"training diverged in epoch 3: its mean loss .* is over 10 times the lowest "
                                          r"so far .*lower train.lr \(e.g. to 0.0001\)"):
        run(data, tmp_path, epochs=4, lr=2e-4, save_every=0, snapshot_every=1)
    assert torch.load(tmp_path / "last.pt", weights_only=True)["progress"]["step"] == 12
    assert torch.load(tmp_path / "best.pt", weights_only=True)["epoch"] <= 2
    assert sorted(p.name for p in (tmp_path / "snapshots").glob("*.pt")) == ["epoch_0001.pt", "epoch_0002.pt"]
    log = pd.read_csv(tmp_path / "log.csv")
    assert log["epoch"].tolist() == [1, 2, 3] and log["loss"].iloc[2] > 100 * log["loss"].iloc[1]


def test_rlfn_trains_compiled_in_one_graph_repeats_its_weights_and_reloads(tmp_path, data):
    from torch._dynamo.utils import counters

    from .conftest import load_model
    from srpipe.models.rlfn import RLFN

    rlfn = ModelParams(name="rlfn", n_resblocks=2, n_feats=8, esa_channels=4)
    go = lambda out, **kw: train(data / "patches", data / "prepared" / "valid", out, out / "log.csv", 2, 0,  # noqa: E731
                                 rlfn, TrainParams(**{**TINY_TRAIN, "epochs": 1, **kw}), crop_border=2)
    torch._dynamo.reset()
    counters.clear()
    go(tmp_path / "compiled", compile=True)  # ESA's resize to the input's size: no graph break
    assert dict(counters["graph_break"]) == {} and counters["stats"]["unique_graphs"] == 1
    go(tmp_path / "a")
    go(tmp_path / "b")
    a, b = weights(tmp_path / "a" / "last.pt"), weights(tmp_path / "b" / "last.pt")
    assert all(torch.equal(a[k], b[k]) for k in a) and any(k.endswith("esa.expand.weight") for k in a)
    model, ckpt = load_model(tmp_path / "a" / "best.pt")
    assert isinstance(model, RLFN) and ckpt["arch"]["kwargs"]["esa_channels"] == 4


@pytest.mark.parametrize("where", ["init_from", "last.pt"])
def test_a_malicious_model_file_never_runs_in_training(tmp_path, data, where):
    """train.init_from, and the last.pt a run resumes from, are read without running anything."""
    from .test_model_files import malicious

    marker = tmp_path / "PWNED"
    evil = malicious(tmp_path / "evil.pt", marker)
    extra = {}
    if where == "init_from":
        extra["init_from"] = str(evil)
    else:
        (tmp_path / "out").mkdir()
        evil.rename(tmp_path / "out" / "last.pt")
    paths = project(tmp_path, data, **extra)
    proc = cli(tmp_path, "train", *paths, "--out", "out")
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 1 and not marker.exists()
    errors = [line for line in output.splitlines() if line.startswith("srpipe: error:")]
    assert len(errors) == 1 and "Traceback" not in output, output
    assert "it asks for posix.system" in errors[0] and ("evil.pt" in errors[0] or "out/last.pt" in errors[0])


def test_a_perceptual_run_logs_each_term_and_trains_other_weights(tmp_path, data, vgg16, backbone, monkeypatch):
    """train.perceptual_weight: each weighted term per step in TensorBoard, their sum the logged loss."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv("SRPIPE_LPIPS_BACKBONE", str(backbone))  # the perceptual track validates LPIPS too
    plain = run(data, tmp_path / "plain", epochs=1)
    perceptual = run(data, tmp_path / "perceptual", epochs=1, perceptual_weight=0.01, vgg16_backbone=str(vgg16))
    assert perceptual["final_loss"] != plain["final_loss"]
    board = EventAccumulator(str(tmp_path / "perceptual" / "tb")).Reload()
    series = {tag: [e.value for e in board.Scalars(f"train/{tag}")] for tag in ("loss", "loss_pixel", "loss_perceptual")}
    assert len(series["loss"]) == 6 and min(series["loss_perceptual"]) > 0
    for total, pixel, vgg in zip(*series.values()):
        assert total == pytest.approx(pixel + vgg, rel=1e-4)
    assert "train/loss_perceptual" not in EventAccumulator(str(tmp_path / "plain" / "tb")).Reload().Tags()["scalars"]
    epochs = pd.read_csv(tmp_path / "perceptual" / "log.csv")  # and their epoch means in train_log.csv
    assert (epochs["loss_pixel"] + epochs["loss_perceptual"]).to_numpy() == pytest.approx(epochs["loss"].to_numpy())
    assert "loss_pixel" not in pd.read_csv(tmp_path / "plain" / "log.csv")


def test_best_metric_lpips_keeps_the_epoch_of_the_lowest_validation_lpips(tmp_path, data, backbone, monkeypatch):
    """Scripted validation scores where PSNR and LPIPS disagree: psnr keeps epoch 2, lpips epoch 1."""
    from srpipe.training.loop import Trainer

    monkeypatch.setenv("SRPIPE_LPIPS_BACKBONE", str(backbone))
    real = run(data, tmp_path / "real", epochs=1, best_metric="lpips")  # the real LPIPS, in the log
    log = pd.read_csv(tmp_path / "real" / "log.csv")  # the perceptual track validates DISTS too
    assert 0 < log["val_lpips"][0] == real["best_val_lpips"] < 1 and 0 < log["val_dists"][0] < 1
    scripted = [{"psnr": 30.0, "ssim": 0.9, "lpips": 0.2}, {"psnr": 31.0, "ssim": 0.9, "lpips": 0.3},
                {"psnr": 29.0, "ssim": 0.9, "lpips": 0.25}]
    for metric, epoch in (("lpips", 1), ("psnr", 2)):
        scores = iter(scripted)
        monkeypatch.setattr(Trainer, "validate", lambda self: next(scores))
        summary = run(data, tmp_path / metric, epochs=3, best_metric=metric)
        saved = torch.load(tmp_path / metric / "best.pt", weights_only=True)
        assert summary["best_epoch"] == saved["epoch"] == epoch
        assert summary["best_val_psnr"] == scripted[epoch - 1]["psnr"]
        assert ("best_val_lpips" in summary) == (metric == "lpips")
    assert summary.get("best_val_lpips") is None and saved["val_psnr"] == 31.0


def test_one_train_at_a_time_per_folder_and_a_killed_holder_blocks_nothing(tmp_path, data):
    """A second run into a folder another run holds stops with one line naming it and the holder's
    PID (before, both ran and each file ended as whichever wrote it last); once the holder is
    SIGKILLed, its lock is gone with it."""
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom srpipe.io import folder_lock\n"
                               f"with folder_lock({str(out)!r}, 'srpipe train'):\n print('held', flush=True)\n"
                               " time.sleep(120)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(SrpipeError, match=rf"^{out} is in use by another srpipe train \(PID {holder.pid}\); wait "
                                              "for it to end, or write into another folder$"):
            run(data, out, epochs=1)
        assert not (out / "last.pt").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    assert run(data, out, epochs=1)["steps"] == 6


def test_train_removes_the_temporaries_of_a_save_that_a_kill_cut_short(tmp_path, data):
    """A SIGKILL during a checkpoint save left .last.PID.XXXXXXXX.tmp.pt for good; the next run removes it."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    out = tmp_path / "out"
    out.mkdir()
    stale = [out / f".last.{dead.stdout.strip()}.abcd1234.tmp.pt", out / f".best.{dead.stdout.strip()}.wxyz5678.tmp.pt"]
    for path in stale:
        path.write_bytes(b"\0" * 2**20)
    with pytest.warns(UserWarning, match=r"removed .*\.last\.\d+\.abcd1234\.tmp\.pt \(1\.0 MiB\), left by a killed run"):
        run(data, out, epochs=1)
    assert not any(path.exists() for path in stale) and (out / "last.pt").is_file()


def test_a_damaged_last_pt_is_set_aside_and_the_run_starts_fresh(tmp_path, data):
    """last.pt cut short by a crash or a full disk stopped train (and dvc repro) with "(Invalid
    argument); give a checkpoint written by srpipe train"; now: a warning, the file kept aside."""
    out = tmp_path / "out"
    run(data, out, epochs=1)
    whole = (out / "last.pt").read_bytes()
    (out / "last.pt").write_bytes(whole[: len(whole) // 2])
    with pytest.warns(UserWarning, match=r"out/last.pt, the state a restart resumes from, is damaged and cannot be "
                                         r"read \(.*\); moved aside to .*out/last.damaged.pt; starting fresh"):
        summary = run(data, out, epochs=2)
    assert summary["steps"] == 12 and (out / "last.damaged.pt").read_bytes() == whole[: len(whole) // 2]


def test_a_run_that_diverges_in_its_first_epoch_fails_the_stage(tmp_path, data, monkeypatch):
    """RCAN at the demo's lr went to loss 352 in epoch 1 and was then shipped with exit 0: epoch 1
    had no epoch before it to compare with. Now its yardstick is the loss of the run's first steps."""
    monkeypatch.setitem(LOSSES, "l1", exploding_after(10))  # finite, 1000 times larger after the first 10 steps
    with pytest.raises(SrpipeError, match=r"training diverged in epoch 1: its mean loss .* is over 10 times that of "
                                          r"the run's first 10 steps \(.*\)"):
        run(data, tmp_path, epochs=2, steps_per_epoch=30, save_every=0)
    assert not (tmp_path / "best.pt").exists()  # nothing to evaluate, export or benchmark


def test_an_interrupted_run_leaves_the_previous_runs_outputs_together(tmp_path, data, monkeypatch):
    """best.pt was written at every better epoch while train.json came at the end: a run stopped in
    its second epoch left its own best.pt beside the previous run's summary and log. Now the three
    are replaced together when the run ends; until then they are all the previous run's."""
    from srpipe.training.loop import Trainer

    out = tmp_path / "out"
    outputs = [out / "best.pt", out / "log.csv", out / "train.json"]
    run(data, out, epochs=1, summary_json=out / "train.json")
    first = [path.read_bytes() for path in outputs]
    real_end = Trainer.end_epoch

    def interrupted(self):
        real_end(self)
        if self.progress.step == 2 * self.steps_per_epoch:
            raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr(Trainer, "end_epoch", interrupted)
        with pytest.raises(KeyboardInterrupt):
            run(data, out, epochs=3, lr=1e-3, summary_json=out / "train.json")
    assert [path.read_bytes() for path in outputs] == first
    assert torch.load(out / "last.pt", weights_only=True)["progress"]["step"] == 12  # the new run's, to resume from
    summary = run(data, out, epochs=3, lr=1e-3, summary_json=out / "train.json")  # resumes, then publishes
    assert json.loads((out / "train.json").read_text()) == summary and summary["steps"] == 18
    assert pd.read_csv(out / "log.csv")["epoch"].tolist() == [1, 2, 3]
    assert torch.load(out / "best.pt", weights_only=True)["epoch"] == summary["best_epoch"]
    assert not (out / ".unfinished").exists()
