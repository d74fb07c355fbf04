import math
from pathlib import Path

import numpy as np
import pytest
import torch

from srpipe.cli import read
from srpipe.config import ModelParams, TrainParams
from srpipe.training import LOSSES, autocast_dtype, fingerprint_changes, lr_lambda, recipe
from srpipe.datasets import dataset_files
from srpipe.io import read_image
from srpipe.training.sampling import (CropDataset, RunSampler, collate_crops, crop_positions, detail_energy, epoch_plan,
                                      epoch_steps, make_loader, texture_cells, transform)


def test_warmup_is_linear_then_cosine_to_the_floor_at_the_last_step():
    f = lr_lambda(TrainParams(epochs=7, warmup_epochs=2, min_lr_ratio=0.1), steps_per_epoch=2)
    assert [f(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(4) == pytest.approx(1.0)
    assert f(8) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 4 / 9)))
    assert f(13) == pytest.approx(0.1)  # the last of 14 steps runs at the floor
    assert f(12) > f(13) and f(100) == pytest.approx(0.1)


def test_linear_schedule_falls_on_a_straight_line_to_the_floor_at_the_last_step():
    f = lr_lambda(TrainParams(epochs=5, warmup_epochs=1, schedule="linear", min_lr_ratio=0.0), steps_per_epoch=2)
    assert [f(s) for s in range(11)] == pytest.approx([0.5, 1.0, 1.0, 6 / 7, 5 / 7, 4 / 7, 3 / 7, 2 / 7, 1 / 7, 0.0, 0.0])
    g = lr_lambda(TrainParams(epochs=3, warmup_epochs=0, schedule="linear", min_lr_ratio=0.2), steps_per_epoch=2)
    assert [g(s) for s in range(6)] == pytest.approx([1.0, 0.84, 0.68, 0.52, 0.36, 0.2])


def test_step_schedule_multiplies_by_gamma_every_step_size_epochs():
    f = lr_lambda(TrainParams(epochs=10, warmup_epochs=1, schedule="step", step_size=2, gamma=0.5), steps_per_epoch=3)
    assert [f(s) for s in range(3)] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert [f(s) for s in (3, 8, 9, 14, 15, 27)] == pytest.approx([1.0, 1.0, 0.5, 0.5, 0.25, 0.0625])


def test_lr_warning_is_measured_per_model_size_and_silent_for_the_demo_recipe():
    def edsr(blocks, feats):
        return {"n_resblocks": blocks, "n_feats": feats}

    assert recipe.lr_warning(2e-3, edsr(8, 32)) is None  # measured stable at 8x32 (README: time to quality)
    assert recipe.lr_warning(4e-3, edsr(8, 32)) == ("train.lr=0.004 is above 0.002 for a 8x32 model (residual blocks x "
                                                   "features): srpipe measured training stable up to there")
    assert recipe.lr_warning(1e-3, edsr(12, 48)) is None  # measured stable at 12x48
    assert "above 0.001 for a 12x48 model" in recipe.lr_warning(2e-3, edsr(12, 48))
    assert "above 0.0005 for a 16x32 model" in recipe.lr_warning(2e-3, edsr(16, 32))  # 16x32 diverged
    assert recipe.lr_warning(5e-4, edsr(16, 64)) is None
    assert "EDSR training was seen to diverge" in recipe.lr_warning(1e-3, edsr(16, 64))
    demo = read(Path(__file__).parents[1] / "params.yaml", [])
    assert recipe.lr_warning(demo.train.lr, demo.model.sizes()) is None
    rcan = {"n_resgroups": 10, "n_resblocks": 20, "n_feats": 64}  # depth: groups x blocks
    assert "above 0.0005 for a 200x64 model" in recipe.lr_warning(1e-3, rcan)


@pytest.mark.parametrize("name,stable", [("span", 1e-3), ("compact", 2e-3), ("safmn", 2e-3), ("swinir", None)])
def test_lr_warning_for_spandrels_architectures_is_what_the_30_minute_runs_measured(name, stable):
    """SPAN diverged at 2e-3 and trained at 1e-3, Compact and SAFMN trained at 2e-3 (at their
    presets; docs/benchmarks/architectures.md); other sizes and architectures: above 5e-4."""
    preset = ModelParams(name=name).sizes()
    if stable is None:
        assert recipe.lr_warning(5e-4, preset, name) is None
        assert "has not measured this architecture" in recipe.lr_warning(1e-3, preset, name)
        return
    assert recipe.lr_warning(stable, preset, name) is None
    assert recipe.lr_warning(2 * stable, preset, name) == (
        f"train.lr={2 * stable} is above {stable} for {name} at its preset: srpipe measured training stable up to "
        "there (docs/benchmarks/architectures.md)")
    if name == "compact":  # another size: not measured
        other = ModelParams(name=name, kwargs={"num_feat": 32}).sizes()
        assert "has not measured this architecture" in recipe.lr_warning(1e-3, other, name)


def test_losses():
    a, b = torch.zeros(1, 1, 2, 2), torch.tensor([[[[1.0, -1.0], [3.0, 0.0]]]])
    assert LOSSES["l1"](a, b).item() == pytest.approx(1.25)
    assert LOSSES["l2"](a, b).item() == pytest.approx(2.75)
    expected = np.mean(np.sqrt(np.array([1.0, 1.0, 9.0, 0.0]) + 1e-6))
    assert LOSSES["charbonnier"](a, b).item() == pytest.approx(expected, rel=1e-6)


def test_chroma_weight_puts_the_loss_on_luma_and_scales_what_is_left_for_colour():
    from srpipe.metrics import rgb_to_y

    rng = np.random.default_rng(0)
    target = rng.integers(0, 256, (2, 5, 4, 3), dtype=np.uint8)
    pred = np.clip(target.astype(int) + rng.integers(-9, 10, target.shape), 0, 255).astype(np.uint8)
    as_tensor = lambda img: torch.from_numpy(img).permute(0, 3, 1, 2).double() / 255  # noqa: E731
    p, t = as_tensor(pred), as_tensor(target)
    y_l1 = np.abs(rgb_to_y(pred) - rgb_to_y(target)).mean() / 255  # the protocol's own luma
    assert recipe.training_loss(TrainParams(chroma_weight=None))(p, t).item() == pytest.approx(
        np.abs(pred / 255 - target / 255).mean())  # on R, G, B as before
    assert recipe.training_loss(TrainParams(chroma_weight=0.0))(p, t).item() == pytest.approx(y_l1, rel=1e-9)
    # a grey shift moves Y by 219/255 of it and Cb, Cr not at all
    assert recipe.training_loss(TrainParams(chroma_weight=1.0))(t + 0.1, t).item() == pytest.approx(0.1 * 219 / 255)
    # a change of colour at equal luma: R up, B down by R's Y weight over B's
    shift = torch.tensor([0.1, 0.0, -0.1 * 65.481 / 24.966], dtype=torch.float64).view(1, 3, 1, 1)
    cb = abs(-37.797 * 0.1 - 112.0 * 0.1 * 65.481 / 24.966) / 255
    cr = abs(112.0 * 0.1 + 18.214 * 0.1 * 65.481 / 24.966) / 255
    assert recipe.training_loss(TrainParams(chroma_weight=0.0))(t + shift, t).item() == pytest.approx(0, abs=1e-12)
    assert recipe.training_loss(TrainParams(chroma_weight=0.5))(t + shift, t).item() == pytest.approx(
        0.5 * (cb + cr) / 2)
    l2 = recipe.training_loss(TrainParams(loss="l2", chroma_weight=0.0))(p, t).item()
    assert l2 == pytest.approx((((rgb_to_y(pred) - rgb_to_y(target)) / 255) ** 2).mean(), rel=1e-9)


@pytest.mark.parametrize("supported", [True, False])
def test_amp_auto_picks_bf16_only_where_supported(monkeypatch, supported):
    monkeypatch.setattr(recipe, "bf16_supported", lambda device_type: supported)
    cpu = torch.device("cpu")
    assert autocast_dtype("auto", cpu) == (torch.bfloat16 if supported else None)
    assert autocast_dtype("none", cpu) is None
    if supported:
        assert autocast_dtype("bf16", cpu) == torch.bfloat16
    else:
        with pytest.warns(UserWarning, match="no native bfloat16; training in fp32"):
            assert autocast_dtype("bf16", cpu) is None


def test_crop_positions_and_epoch_length():
    sizes = np.array([[100, 60], [40, 40], [20, 200]])
    ys, xs = crop_positions(sizes, 32, 2)  # LR crop 16 on LR images 50x30, 20x20, 10x100
    assert ys.tolist() == [35, 5, 0] and xs.tolist() == [15, 5, 85]
    store = type("S", (), {"sizes": sizes})()
    assert epoch_steps(store, 32, 2) == (3 * 1 + 1 * 1 + 0) // 2


def test_plan_depends_only_on_seed_and_epoch_and_is_uniform_over_crop_positions():
    ys, xs = np.array([10, 1, 0]), np.array([30, 1, 5])  # 300, 1 and 0 positions
    a, b = epoch_plan(ys, xs, 20000, seed=3, epoch=2), epoch_plan(ys, xs, 20000, seed=3, epoch=2)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, epoch_plan(ys, xs, 20000, seed=3, epoch=3))
    counts = np.bincount(a[:, 0], minlength=3)
    assert counts[2] == 0 and counts[1] == pytest.approx(20000 / 301, rel=0.35)  # by area; too small: never
    first = a[a[:, 0] == 0]
    assert first[:, 3].max() == 9 and first[:, 4].max() == 29 and first[:, 3:].min() == 0
    assert abs(first[:, 4].mean() - 14.5) < 0.5 and set(a[:, 1]) == {0, 1} and set(a[:, 2]) == {0, 1, 2, 3}


def test_detail_energy_is_what_a_down_and_up_resize_loses():
    flat = np.full((8, 12, 3), 90, np.uint8)
    assert detail_energy(flat, 2).shape == (4, 6) and np.allclose(detail_energy(flat, 2), 0, atol=1e-3)
    stripes = np.zeros((8, 12, 3), np.uint8)
    stripes[:, ::2] = 255  # 1-px white/black columns: an area resize leaves mid-grey, all detail is lost
    # luma 235 - 16 = 219 on every HR pixel away from the border's bicubic overshoot: 4 x (219 / 2)^2 per LR pixel
    assert detail_energy(stripes, 2)[1:-1, 1:-1] == pytest.approx(np.full((2, 4), 4 * 109.5**2), rel=1e-3)


def half_textured_store():
    """One image whose left half is flat grey and whose right half is 1-px stripes (LR 40 x 80)."""
    hr = np.full((80, 160, 3), 120, np.uint8)
    hr[:, 80::2] = 250
    store = ArrayStore([hr[::2, ::2].copy()], 2)
    store._hr = [hr]
    return store


def test_texture_sampling_covers_every_origin_once_and_draws_detail_more_often():
    store = half_textured_store()
    ys, xs = crop_positions(store.sizes, 16, 2)  # LR crop 8: 33 x 73 origins
    cells = texture_cells(store, 16, 1.0)
    covered = np.zeros((33, 73), int)
    for y, x, h, w in zip(cells.y, cells.x, cells.h, cells.w):
        covered[y : y + h, x : x + w] += 1
    assert (covered == 1).all()  # cells of 4 x 4 origins (the last ones smaller) tile the origins
    uniform = CropDataset(store, 16, 20000, seed=1).plan(1)
    weighted = CropDataset(store, 16, 20000, seed=1, texture=1.0)
    plan = weighted.plan(1)
    assert np.array_equal(plan, CropDataset(store, 16, 20000, seed=1, texture=1.0).plan(1))  # seed and epoch only
    assert not np.array_equal(plan, weighted.plan(2))
    assert plan[:, 3].min() == 0 and plan[:, 3].max() == 32 and plan[:, 4].max() == 72  # every origin reachable
    flat = lambda p: (p[:, 4] + 8 <= 40).mean()  # crops wholly in the flat half (origin x <= 32 of 73)
    assert flat(uniform) == pytest.approx(33 / 73, abs=0.02)
    assert flat(plan) < 0.02  # their detail is floored at 1% of the mean: about 1% of their uniform share
    # power 0.25: flat cells weigh 0.01^0.25 = 0.32 and textured ones about 2^0.25 = 1.19 (detail at
    # twice the mean), a share of 0.45 x 0.32 / (0.45 x 0.32 + 0.55 x 1.19) = 0.18 for the flat half
    assert flat(CropDataset(store, 16, 20000, seed=1, texture=0.25).plan(1)) == pytest.approx(0.18, abs=0.03)


def test_all_eight_dihedral_transforms_are_distinct():
    img = np.arange(12).reshape(3, 4, 1)
    outs = {transform(img, f, t).tobytes() + bytes(transform(img, f, t).shape) for f in (0, 1) for t in range(4)}
    assert len(outs) == 8


class ArrayStore:
    """An in-memory stand-in for the image store."""

    def __init__(self, lrs, scale):
        self.scale, self.names = scale, [f"img{i}" for i in range(len(lrs))]
        self._lr = lrs
        self._hr = [lr.repeat(scale, axis=0).repeat(scale, axis=1) for lr in lrs]  # nearest-neighbour
        self.sizes = np.array([h.shape[:2] for h in self._hr])

    def hr(self, i):
        return self._hr[i]

    def release(self):
        pass

    def lr(self, i):
        return self._lr[i]


def test_lr_and_hr_get_the_same_crop_and_transform():
    rng = np.random.default_rng(0)
    store = ArrayStore([rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((8, 8), (9, 12))], 2)
    ds = CropDataset(store, crop=12, rows=40, seed=0)  # 6-px LR crops
    for g in range(80):
        lr, hr = ds[g]
        assert lr.shape == (6, 6, 3) and hr.shape == (12, 12, 3)
        np.testing.assert_array_equal(hr, lr.repeat(2, 0).repeat(2, 1))
    image, flip, turns, cy, cx = ds.plan(2)[5]  # sample 45 is row 5 of epoch 2
    expected = transform(store.lr(image)[cy : cy + 6, cx : cx + 6], flip, turns)
    np.testing.assert_array_equal(ds[45][0], expected)


def test_a_batch_is_its_crops_in_zero_to_one_channels_last():
    rng = np.random.default_rng(1)
    store = ArrayStore([rng.integers(0, 256, (10, 14, 3), dtype=np.uint8)], 2)
    ds = CropDataset(store, crop=8, rows=40, seed=0)
    samples = [ds[g] for g in range(5)]
    lr, hr = collate_crops(samples)
    assert lr.shape == (5, 3, 4, 4) and hr.shape == (5, 3, 8, 8) and lr.dtype == torch.float32
    assert lr.is_contiguous(memory_format=torch.channels_last)
    for i, (lr_crop, hr_crop) in enumerate(samples):
        torch.testing.assert_close(lr[i], torch.from_numpy(lr_crop.copy()).permute(2, 0, 1) / 255, rtol=0, atol=0)
        torch.testing.assert_close(hr[i], torch.from_numpy(hr_crop.copy()).permute(2, 0, 1) / 255, rtol=0, atol=0)
    loader = make_loader(ds, RunSampler(0, 2, 5, 1), 0, False)  # the loader batches the same way
    first = next(iter(loader))
    assert torch.equal(first[0], lr) and torch.equal(first[1], hr)


def test_an_on_the_fly_crop_is_degraded_as_the_whole_image_would_be():
    """Blur and resize reach past a crop's borders: the crop is degraded with its surroundings, so
    away from the image's borders it equals the same crop of the whole image degraded."""
    from srpipe.config import DegradationParams
    from srpipe.degradations import CropDegrader, degrade

    photo = read_image(dataset_files("sample-valid")[0])[:200, :240]
    store = ArrayStore([photo[::2, ::2].copy()], 2)
    store._hr = [photo]
    fixed = DegradationParams(kind="realistic", on_the_fly=True, blur_sigma=(1.0, 1.0), noise_prob=0, jpeg_prob=0)
    ds = CropDataset(store, crop=32, rows=400, seed=0, degrade=CropDegrader(fixed, 2))
    whole = degrade(photo, 2, fixed)[0]
    inner = 0
    for g in range(400):
        _, flip, turns, cy, cx = ds.plan(1)[g]
        if min(cy, cx) >= 8 and cy + 16 + 8 <= 100 and cx + 16 + 8 <= 120:
            got = ds[g][0]
            np.testing.assert_array_equal(got, transform(whole[cy : cy + 16, cx : cx + 16], flip, turns))
            inner += 1
    assert inner > 100


def test_sampler_resumes_anywhere_and_splits_batches_over_processes():
    whole = list(RunSampler(0, 5, batch=4, accum=2))
    assert whole == list(range(40))
    assert list(RunSampler(3, 5, batch=4, accum=2)) == whole[24:]  # resumed at step 3
    ranks = [list(RunSampler(0, 5, batch=4, accum=2, rank=r, world=2)) for r in (0, 1)]
    assert ranks[0][:4] == [0, 1, 4, 5] and ranks[1][:4] == [2, 3, 6, 7]
    assert sorted(ranks[0] + ranks[1]) == whole and len(RunSampler(0, 5, 4, 2, 1, 2)) == 20


def test_a_param_added_later_leaves_older_runs_fingerprints_as_they_were_at_its_old_value():
    from srpipe.training.state import run_fingerprint

    arch = {"name": "edsr", "kwargs": {"scale": 2}}
    assert "zero_init_residual" not in run_fingerprint(arch, TrainParams(), 0, "store")["train"]
    assert run_fingerprint(arch, TrainParams(zero_init_residual=True), 0, "store")["train"]["zero_init_residual"] is True


def test_fingerprint_changes_name_the_keys():
    old = {"train": {"lr": 1e-4, "epochs": 3}, "seed": 0}
    new = {"train": {"lr": 2e-4, "epochs": 3}, "seed": 0}
    assert fingerprint_changes(old, new) == ["train.lr: 0.0001 -> 0.0002"]
    assert fingerprint_changes(old, old) == []
