import math

import numpy as np
import pytest
import torch

from srpipe.config import TrainParams
from srpipe.train import LOSSES, PlanDataset, epoch_plan, fingerprint_changes, lr_lambda, transform


def test_warmup_is_linear_then_cosine_to_floor():
    f = lr_lambda(TrainParams(epochs=7, warmup_epochs=2, min_lr_ratio=0.1), steps_per_epoch=2)
    assert [f(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(4) == pytest.approx(1.0)
    assert f(9) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert f(14) == pytest.approx(0.1) and f(100) == pytest.approx(0.1)


def test_step_schedule_multiplies_by_gamma_every_step_size_epochs():
    f = lr_lambda(TrainParams(epochs=10, warmup_epochs=1, schedule="step", step_size=2, gamma=0.5), steps_per_epoch=3)
    assert [f(s) for s in range(3)] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert [f(s) for s in (3, 8, 9, 14, 15, 27)] == pytest.approx([1.0, 1.0, 0.5, 0.5, 0.25, 0.0625])


def test_losses():
    a, b = torch.zeros(1, 1, 2, 2), torch.tensor([[[[1.0, -1.0], [3.0, 0.0]]]])
    assert LOSSES["l1"](a, b).item() == pytest.approx(1.25)
    assert LOSSES["l2"](a, b).item() == pytest.approx(2.75)
    expected = np.mean(np.sqrt(np.array([1.0, 1.0, 9.0, 0.0]) + 1e-6))
    assert LOSSES["charbonnier"](a, b).item() == pytest.approx(expected, rel=1e-6)


def test_plan_depends_only_on_seed_and_epoch():
    a, b = epoch_plan(10, 25, seed=3, epoch=2, crop_positions=4), epoch_plan(10, 25, seed=3, epoch=2, crop_positions=4)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, epoch_plan(10, 25, seed=3, epoch=3, crop_positions=4))
    assert sorted(a[:10, 0].tolist()) == list(range(10))  # one pass before any patch repeats
    assert set(a[:, 1]) <= {0, 1} and set(a[:, 2]) <= {0, 1, 2, 3} and a[:, 3:].max() <= 3


def test_all_eight_dihedral_transforms_are_distinct():
    img = np.arange(12).reshape(3, 4, 1)
    outs = {transform(img, f, t).tobytes() + bytes(transform(img, f, t).shape) for f in (0, 1) for t in range(4)}
    assert len(outs) == 8


def test_lr_and_hr_get_the_same_crop_and_transform():
    rng = np.random.default_rng(0)
    lr = rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    hr = lr.repeat(2, axis=1).repeat(2, axis=2)  # nearest-neighbour x2
    plan = epoch_plan(3, 40, seed=0, epoch=1, crop_positions=3)  # 6-px LR crops of 8-px patches
    ds = PlanDataset(hr, lr, plan, scale=2, lr_crop=6)
    for i in range(len(ds)):
        lr_t, hr_t = ds[i]
        assert lr_t.shape == (3, 6, 6) and hr_t.shape == (3, 12, 12)
        torch.testing.assert_close(hr_t, lr_t.repeat_interleave(2, 1).repeat_interleave(2, 2))
    patch, flip, turns, cy, cx = plan[0]
    expected = transform(lr[patch, cy : cy + 6, cx : cx + 6], flip, turns)
    np.testing.assert_array_equal(ds[0][0].mul(255).round().byte().permute(1, 2, 0).numpy(), expected)


def test_fingerprint_changes_name_the_keys():
    old = {"train": {"lr": 1e-4, "epochs": 3}, "seed": 0}
    new = {"train": {"lr": 2e-4, "epochs": 3}, "seed": 0}
    assert fingerprint_changes(old, new) == ["train.lr: 0.0001 -> 0.0002"]
    assert fingerprint_changes(old, old) == []
