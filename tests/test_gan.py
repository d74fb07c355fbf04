"""The GAN track: discriminators, their spectral norm's state, the losses and their logs, D's wins.

Exact resume and DDP with the discriminator are in test_train.py (the ``edsr-gan`` cases)."""

import contextlib
import copy

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from srpipe.config import DiscriminatorParams, TrainParams, load_params
from srpipe.io import SrpipeError
from srpipe.models.discriminator import PatchDiscriminatorSN, UNetDiscriminatorSN
from srpipe.training import adversarial
from srpipe.training.adversarial import Adversary, discriminator_wins
from srpipe.training.state import run_fingerprint

from .test_train import data, run  # noqa: F401  (the tiny image store fixture)


@pytest.mark.parametrize("cls,out", [(UNetDiscriminatorSN, (2, 1, 48, 64)), (PatchDiscriminatorSN, (2, 1, 4, 6))])
def test_discriminators_give_a_logit_map_of_the_expected_shape(cls, out):
    """U-Net: a logit per pixel; PatchGAN: per 70-pixel patch (48 / 8 - 2 = 4, 64 / 8 - 2 = 6)."""
    torch.manual_seed(0)
    assert cls(features=8)(torch.rand(2, 3, 48, 64)).shape == out


def test_spectral_norm_state_is_saved_and_restored():
    """The power iteration's vectors are in the state dict: a copy loaded from it scores the same,
    in training mode too (where each call advances the iteration), and the normalised weight's
    largest singular value is 1."""
    torch.manual_seed(0)
    trained, x = UNetDiscriminatorSN(features=8), torch.rand(1, 3, 32, 32)
    for _ in range(20):  # the power iteration converges while training
        trained(x)
    state = trained.state_dict()
    assert sum(k.endswith("._u") for k in state) == 8 and sum(k.endswith("._v") for k in state) == 8
    torch.manual_seed(1)
    copy = UNetDiscriminatorSN(features=8)
    assert not torch.equal(copy.state_dict()["down.0.parametrizations.weight.0._u"], state["down.0.parametrizations.weight.0._u"])
    copy.load_state_dict(state)
    assert torch.equal(copy(x), trained(x))  # one more step of the iteration on both
    assert all(torch.equal(copy.state_dict()[k], trained.state_dict()[k]) for k in state)
    sigma = torch.linalg.matrix_norm(trained.down[0].weight.detach().flatten(1), ord=2)
    raw = torch.linalg.matrix_norm(trained.down[0].parametrizations.weight.original.detach().flatten(1), ord=2)
    assert sigma.item() == pytest.approx(1.0, abs=1e-2) and abs(raw.item() - 1) > 0.1


def adversary(**cfg):
    return Adversary(DiscriminatorParams(features=8, **cfg), 0.1, lambda step: 1.0, 32, torch.device("cpu"), False,
                     torch.contiguous_format, False)


def test_the_two_sides_of_the_gan_loss_are_binary_cross_entropies():
    """G's term: weight x BCE(D(SR), real), D frozen; D's step: BCE(D(HR), real) and BCE(D(SR), fake)."""
    torch.manual_seed(0)
    d = adversary()
    hr, sr = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32, requires_grad=True)
    twin = copy.deepcopy(d.model)  # the same weights and power-iteration state: the same logits
    g = d.generator_loss(sr)
    expected = 0.1 * F.binary_cross_entropy_with_logits(twin(sr), torch.ones(2, 1, 32, 32))
    assert g.item() == pytest.approx(expected.item(), rel=1e-6)
    g.backward()
    assert sr.grad.abs().sum() > 0 and all(p.grad is None for p in d.model.parameters())
    twin, before = copy.deepcopy(d.model), d.model.head.weight.detach().clone()
    logits = twin(torch.cat([hr, sr.detach()]))
    terms = d.step([(hr, sr)], contextlib.nullcontext)
    real, fake = logits.chunk(2)
    assert terms["loss_d_real"] == pytest.approx(F.softplus(-real).mean().item(), rel=1e-5)
    assert terms["loss_d_fake"] == pytest.approx(F.softplus(fake).mean().item(), rel=1e-5)
    assert terms["d_real"] == pytest.approx(torch.sigmoid(real).mean().item(), rel=1e-5)
    assert not torch.equal(d.model.head.weight, before)  # D took its step


def test_a_unet_discriminator_needs_crops_that_are_a_multiple_of_8():
    with pytest.raises(SrpipeError, match=r"train.patch_size=36: discriminator.name=unet_sn needs a multiple of 8; "
                                          r"set train.patch_size to one \(e.g. 40\)"):
        Adversary(DiscriminatorParams(), 0.1, lambda s: 1.0, 36, torch.device("cpu"), False, torch.contiguous_format,
                  False)
    adversary(name="patchgan_sn")  # a PatchGAN takes any crop


def test_a_gan_run_logs_every_term_and_validates_lpips_and_dists(tmp_path, data, backbone, vgg16,  # noqa: F811
                                                                 monkeypatch):
    """Per step in TensorBoard: G's pixel and adversarial terms (their sum the logged loss), D's real
    and fake losses and its mean output on each; per epoch, their means in train_log.csv, beside
    validation LPIPS and DISTS."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from srpipe.training.loop import train
    from srpipe.config import ModelParams

    from .test_train import TINY_MODEL, TINY_TRAIN

    monkeypatch.setenv("SRPIPE_LPIPS_BACKBONE", str(backbone))
    monkeypatch.setenv("SRPIPE_VGG16_BACKBONE", str(vgg16))

    out = tmp_path / "gan"
    train(data / "patches", data / "prepared" / "valid", out, out / "log.csv", 2, 0, ModelParams(**TINY_MODEL),
          TrainParams(**{**TINY_TRAIN, "epochs": 2, "gan_weight": 0.1}), crop_border=2,
          discriminator=DiscriminatorParams(features=8))
    board = EventAccumulator(str(out / "tb")).Reload()
    tags = ("loss", "loss_pixel", "loss_gan", "loss_d_real", "loss_d_fake", "d_real", "d_fake")
    series = {tag: [e.value for e in board.Scalars(f"train/{tag}")] for tag in tags}
    assert all(len(v) == 12 for v in series.values())
    for total, pixel, gan in zip(series["loss"], series["loss_pixel"], series["loss_gan"]):
        assert total == pytest.approx(pixel + gan, rel=1e-4) and 0 < gan < 1
    assert all(0 < p < 1 for p in series["d_real"] + series["d_fake"])
    epochs = pd.read_csv(out / "log.csv")
    assert epochs["loss_d_real"][0] == pytest.approx(sum(series["loss_d_real"][:6]) / 6, rel=1e-5)
    assert ((0 < epochs["val_lpips"]) & (epochs["val_lpips"] < 1) & (0 < epochs["val_dists"])).all()
    saved = torch.load(out / "last.pt", weights_only=True)["discriminator"]
    assert saved["scheduler"]["last_epoch"] == 12 and saved["optimizer"]["state"]


def test_a_discriminator_that_wins_a_whole_epoch_says_so(tmp_path, data, monkeypatch, backbone, vgg16):  # noqa: F811
    assert discriminator_wins([0.01, 0.02], [0.01, 0.02]) and not discriminator_wins([0.01, 0.2], [0.01, 0.0])
    winning = {"loss_d_real": 0.001, "loss_d_fake": 0.002, "d_real": 0.999, "d_fake": 0.002}
    monkeypatch.setattr(adversarial.Adversary, "step", lambda self, pairs, autocast: dict(winning))
    monkeypatch.setenv("SRPIPE_LPIPS_BACKBONE", str(backbone))
    monkeypatch.setenv("SRPIPE_VGG16_BACKBONE", str(vgg16))
    with pytest.warns(UserWarning, match=r"epoch 1: the discriminator won outright \(its loss stayed below 0.05 at "
                                         r"every step\).*lower discriminator.lr"):
        run(data, tmp_path / "won", epochs=1, gan_weight=0.1)


def test_gan_weight_0_leaves_runs_and_fingerprints_as_they_were(tmp_path, data):  # noqa: F811
    """No discriminator is built, saved or fingerprinted at the default; params.yaml carries the section."""
    run(data, tmp_path / "plain", epochs=1)
    assert torch.load(tmp_path / "plain" / "last.pt", weights_only=True)["discriminator"] is None
    assert "loss_d_real" not in pd.read_csv(tmp_path / "plain" / "log.csv")
    plain = run_fingerprint({"name": "edsr"}, TrainParams(), 0, "data")
    assert "gan_weight" not in plain["train"] and "discriminator" not in plain
    p = load_params("params.yaml")
    assert p.train.gan_weight == 0 and p.discriminator == DiscriminatorParams()
