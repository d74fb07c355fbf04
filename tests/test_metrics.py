import math

import numpy as np
import pytest
import torch
from scipy.signal import convolve2d

from srpipe.imresize import crop_to_multiple, imresize
from srpipe.io import read_image
from srpipe.metrics import LPIPS, psnr, rgb_to_y, ssim


def gray(value, shape=(32, 32)):
    return np.full((*shape, 3), value, np.uint8)


def test_y_channel_range():
    assert rgb_to_y(gray(0)).max() == pytest.approx(16.0)
    assert rgb_to_y(gray(255)).max() == pytest.approx(235.0)


def test_psnr_known_value():
    # equal channels differing by 10 differ by 10 * 219 / 255 on Y
    expected = 20 * math.log10(255 / (10 * 219 / 255))
    assert psnr(gray(110), gray(100)) == pytest.approx(expected, abs=1e-9)
    rgb_mse = 100.0
    assert psnr(gray(110), gray(100), y_channel=False) == pytest.approx(10 * math.log10(255**2 / rgb_mse))


def test_crop_border_ignores_border_errors():
    a, b = gray(100), gray(100)
    b[:2] = 0
    b[:, -2:] = 0
    assert psnr(a, b, crop_border=1) < 25
    assert psnr(a, b, crop_border=2) == math.inf
    assert ssim(a, b, crop_border=2) == pytest.approx(1.0)


def reference_ssim(x, y):
    """Wang et al. (2004) SSIM written out: 11x11 Gaussian (sigma 1.5), valid region only."""
    g = np.exp(-(np.arange(11) - 5) ** 2 / (2 * 1.5**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    f = lambda img: convolve2d(img, w, mode="valid")  # noqa: E731
    mx, my = f(x), f(y)
    sxx, syy, sxy = f(x * x) - mx**2, f(y * y) - my**2, f(x * y) - mx * my
    return float((((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))).mean())


def test_ssim_matches_written_out_formula():
    rng = np.random.default_rng(0)
    hr = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
    sr = np.clip(hr.astype(int) + rng.integers(-20, 21, hr.shape), 0, 255).astype(np.uint8)
    expected = reference_ssim(rgb_to_y(sr)[2:-2, 2:-2], rgb_to_y(hr)[2:-2, 2:-2])
    assert ssim(sr, hr, crop_border=2) == pytest.approx(expected, abs=1e-9)
    assert 0.3 < expected < 0.99


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(gray(0, (8, 8)), gray(0, (8, 9)))


@pytest.fixture
def reference_lpips(backbone, tmp_path, monkeypatch):
    """The genuine lpips.LPIPS(net='alex'), its AlexNet taken from a torch hub cache we fill."""
    import lpips
    import torchvision

    net = torchvision.models.alexnet(weights=None)
    net.features.load_state_dict({k.removeprefix("features."): v for k, v in torch.load(backbone).items()})
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(net.state_dict(), cache / "alexnet-owt-7be5be79.pth")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    return lpips.LPIPS(net="alex", version="0.1", verbose=False).eval()


def test_lpips_equals_reference_package(shared_data, backbone, reference_lpips):
    ours = LPIPS(backbone)
    for name in ("baby.png", "bird.png"):
        hr = crop_to_multiple(read_image(shared_data / "Set5" / name), 4)
        sr = imresize(imresize(hr, 1 / 4), 4)
        with torch.no_grad():
            expected = reference_lpips(
                torch.from_numpy(sr).permute(2, 0, 1)[None].float() / 127.5 - 1,
                torch.from_numpy(hr).permute(2, 0, 1)[None].float() / 127.5 - 1,
            ).item()
        got = ours(sr, hr)
        assert got == pytest.approx(expected, abs=1e-5)
        assert 0.05 < got < 0.8
    assert ours(hr, hr) == pytest.approx(0.0, abs=1e-6)


def test_lpips_backbone_from_environment(backbone, monkeypatch):
    monkeypatch.setenv("SRPIPE_LPIPS_BACKBONE", str(backbone))
    from_env, from_arg = LPIPS(), LPIPS(backbone)
    a, b = gray(90), gray(120)
    a[8:20, 8:20] = 200
    assert from_env(a, b) == pytest.approx(from_arg(a, b), abs=1e-7)
