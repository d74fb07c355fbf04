"""The VGG16 perceptual loss: equal to a hand computation with the real VGG16 file, weighted with
the pixel loss as the params say, and the defaults leave training exactly as it was."""

import pytest
import torch
import torch.nn.functional as F

from srpipe.config import PERCEPTUAL_LAYERS, TrainParams
from srpipe.training.perceptual import PerceptualLoss, WeightedLoss
from srpipe.training.recipe import objective
from srpipe.training.state import run_fingerprint

MEAN = torch.tensor([0.485, 0.456, 0.406], dtype=torch.float64).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225], dtype=torch.float64).view(1, 3, 1, 1)


def images(seed=0, size=20):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(2, 3, size, size, generator=g), torch.rand(2, 3, size, size, generator=g)


def test_conv1_2_term_equals_a_hand_computation(vgg16):
    """conv1_2 before its ReLU: conv(relu(conv(normalised x))) with the file's own weights, in float64."""
    w = torch.load(vgg16, weights_only=True)
    pred, target = images()

    def conv1_2(x):
        h = (x.double() - MEAN) / STD
        h = F.relu(F.conv2d(h, w["features.0.weight"].double(), w["features.0.bias"].double(), padding=1))
        return F.conv2d(h, w["features.2.weight"].double(), w["features.2.bias"].double(), padding=1)

    expected = 0.7 * (conv1_2(pred) - conv1_2(target)).abs().mean().item()
    got = PerceptualLoss({"conv1_2": 0.7}, vgg16)(pred, target).item()
    assert got == pytest.approx(expected, rel=1e-5)
    assert got > 0.01


def test_the_default_layers_are_real_esrgans_weights_on_vgg16(vgg16):
    """Five pre-ReLU layers, 0.1 0.1 1 1 1, each an L1 mean, against torchvision's VGG16 run by hand."""
    import torchvision

    net = torchvision.models.vgg16(weights=None).features
    net.load_state_dict({k.removeprefix("features."): v for k, v in torch.load(vgg16, weights_only=True).items()})
    pred, target = images(1, 32)
    taps = {2: 0.1, 7: 0.1, 14: 1.0, 21: 1.0, 28: 1.0}
    expected, x, y = 0.0, (pred - MEAN.float()) / STD.float(), (target - MEAN.float()) / STD.float()
    for index, layer in enumerate(net[:29]):
        if isinstance(layer, torch.nn.ReLU):
            x, y = F.relu(x), F.relu(y)
        else:
            x, y = layer(x), layer(y)
        if index in taps:
            expected += taps[index] * (x - y).abs().mean().item()
    loss = PerceptualLoss(PERCEPTUAL_LAYERS, vgg16)
    assert loss(pred, target).item() == pytest.approx(expected, rel=1e-5)
    assert loss(target, target).item() == 0.0


def test_gradient_reaches_the_output_and_the_backbone_stays_frozen(vgg16):
    loss = PerceptualLoss({"conv2_2": 1.0}, vgg16)
    pred, target = images(2)
    pred.requires_grad_(True)
    loss(pred, target).backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in loss.parameters())


def test_weights_combine_the_pixel_and_perceptual_terms(vgg16, monkeypatch):
    monkeypatch.setenv("SRPIPE_VGG16_BACKBONE", str(vgg16))
    cfg = TrainParams(pixel_weight=0.5, perceptual_weight=0.2, perceptual_layers={"conv1_2": 1.0})
    combined = objective(cfg, torch.device("cpu"))
    assert isinstance(combined, WeightedLoss)
    pred, target = images(3)
    total = combined(pred, target).item()
    pixel = 0.5 * F.l1_loss(pred, target).item()
    perceptual = 0.2 * PerceptualLoss({"conv1_2": 1.0}, vgg16)(pred, target).item()
    assert total == pytest.approx(pixel + perceptual, rel=1e-6)
    assert combined.terms == pytest.approx({"pixel": pixel, "perceptual": perceptual}, rel=1e-6)


def test_defaults_leave_the_loss_and_the_fingerprint_as_they_were():
    """train.pixel_weight 1 and perceptual_weight 0: the very function training used before, and a
    fingerprint without the new keys, so that runs saved before them still resume."""
    assert objective(TrainParams(), torch.device("cpu")) is F.l1_loss
    fingerprint = run_fingerprint({"name": "edsr"}, TrainParams(), 0, "data")
    assert not {"pixel_weight", "perceptual_weight", "perceptual_layers", "vgg16_backbone"} & set(fingerprint["train"])
    on = run_fingerprint({"name": "edsr"}, TrainParams(perceptual_weight=0.1), 0, "data")
    assert on["train"]["perceptual_weight"] == 0.1


@pytest.mark.parametrize("layers,message", [({"conv5_4": 1.0}, "conv5_4: give VGG16 layers among conv1_1"),
                                            ({}, "no layer: give VGG16 layers"),
                                            ({"conv1_2": -1.0}, "layer weights must be >= 0")])
def test_bad_layers_are_refused_up_front(layers, message):
    with pytest.raises(ValueError, match=message):
        TrainParams(perceptual_layers=layers)
