import math

import numpy as np
import pytest
import torch

from srpipe.train import augment, epoch_indices, lr_lambda


def test_warmup_is_linear_then_cosine_to_floor():
    f = lr_lambda(warmup_steps=4, total_steps=14, min_ratio=0.1)
    assert [f(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(4) == pytest.approx(1.0)
    assert f(9) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert f(14) == pytest.approx(0.1) and f(100) == pytest.approx(0.1)


def test_augment_applies_the_same_transform_to_lr_and_hr():
    gen = torch.Generator().manual_seed(0)
    lr = torch.rand(64, 3, 4, 4)
    hr = lr.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)  # nearest-neighbour x2
    lr_a, hr_a = augment(lr, hr, gen)
    torch.testing.assert_close(hr_a, lr_a.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3))
    # all 8 dihedral transforms occur, and they do change the patches
    changed = [(a != b).any().item() for a, b in zip(lr_a, lr)]
    assert 0 < sum(changed) < 64


def test_epoch_indices_cover_patches_without_repeats_within_a_pass():
    gen = torch.Generator().manual_seed(0)
    batches = epoch_indices(10, steps=2, batch=5, gen=gen)
    flat = np.array(batches).ravel()
    assert sorted(flat.tolist()) == list(range(10))
    longer = np.array(epoch_indices(10, steps=3, batch=5, gen=gen)).ravel()
    assert len(longer) == 15 and len(set(longer[:10].tolist())) == 10
