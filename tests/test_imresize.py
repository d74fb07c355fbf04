import numpy as np
import pytest

from srpipe.imresize import contributions, crop_to_multiple, cubic, imresize
from srpipe.io import list_images, read_image
from srpipe.metrics import psnr, ssim

# MATLAB's antialiased kernel for a 1/2 downscale: 0.5 * cubic(d / 2) at d = +-0.5 .. +-3.5.
HALF_KERNEL = [-0.01171875, -0.03515625, 0.11328125, 0.43359375, 0.43359375, 0.11328125, -0.03515625, -0.01171875]


def test_cubic_kernel_values():
    x = np.array([0.0, 0.25, 0.75, 1.0, 1.25, 1.75, 2.0, 2.5])
    np.testing.assert_allclose(cubic(x), [1.0, 0.8671875, 0.2265625, 0.0, -0.0703125, -0.0234375, 0.0, 0.0])


def test_downscale_weights_are_widened_kernel():
    weights, indices = contributions(16, 8, 0.5)
    np.testing.assert_allclose(weights[4], HALF_KERNEL)
    assert indices[4].tolist() == list(range(5, 13))


def test_downscale_border_is_symmetric():
    _, indices = contributions(16, 8, 0.5)
    # output pixel 0 is centred at input 0.5; taps reach 3 pixels past the edge, mirrored
    assert indices[0].tolist() == [2, 1, 0, 0, 1, 2, 3, 4]


def test_upscale_weights_without_antialiasing():
    weights, indices = contributions(8, 16, 2.0)
    # output pixel 4 sits at input 1.75 (0-based), pixel 5 at 2.25
    np.testing.assert_allclose(weights[4], [-0.0234375, 0.2265625, 0.8671875, -0.0703125])
    assert indices[4].tolist() == [0, 1, 2, 3]
    np.testing.assert_allclose(weights[5], [-0.0703125, 0.8671875, 0.2265625, -0.0234375])
    assert indices[5].tolist() == [1, 2, 3, 4]


def test_constant_image_stays_constant_and_sizes_follow_ceil():
    img = np.full((9, 7, 3), 77, np.uint8)
    small = imresize(img, 1 / 3)
    assert small.shape == (3, 3, 3) and small.dtype == np.uint8 and (small == 77).all()
    assert imresize(img, 2).shape == (18, 14, 3)


def test_uint8_output_is_rounded_and_clipped():
    img = np.zeros((8, 8), np.uint8)
    img[:, 4:] = 255
    up = imresize(img, 2)
    assert up.min() == 0 and up.max() == 255  # overshoot of the cubic kernel is clipped
    as_float = imresize(img.astype(np.float64), 2)
    assert as_float.max() > 255  # float input keeps the overshoot
    np.testing.assert_array_equal(up, np.floor(np.clip(as_float, 0, 255) + 0.5))


def test_crop_to_multiple():
    assert crop_to_multiple(np.zeros((101, 67, 3)), 4).shape == (100, 64, 3)


def bicubic_scores(folder, scale):
    ps, ss = [], []
    for path in list_images(folder):
        hr = crop_to_multiple(read_image(path), scale)
        sr = imresize(imresize(hr, 1 / scale), scale)
        ps.append(psnr(sr, hr, crop_border=scale))
        ss.append(ssim(sr, hr, crop_border=scale))
    return np.mean(ps), np.mean(ss)


@pytest.mark.parametrize("scale,ref_psnr,ref_ssim", [(2, 33.66, 0.9299), (3, 30.39, 0.8682), (4, 28.42, 0.8104)])
def test_set5_bicubic_matches_published(shared_data, scale, ref_psnr, ref_ssim):
    p, s = bicubic_scores(shared_data / "Set5", scale)
    assert abs(p - ref_psnr) <= 0.03, p
    assert abs(s - ref_ssim) <= 0.002, s


@pytest.mark.parametrize("scale,ref_psnr", [(2, 30.24), (3, 27.55), (4, 26.00)])
def test_set14_bicubic_matches_published(shared_data, scale, ref_psnr):
    p, _ = bicubic_scores(shared_data / "Set14", scale)
    assert abs(p - ref_psnr) <= 0.1, p
