"""EXIF orientation: a phone photo is read upright everywhere (training, evaluation, upscale)."""

import numpy as np
import pytest
from PIL import Image, ImageOps

from srpipe.io import read_image


def photo() -> np.ndarray:
    """A 40 x 64 image whose every turn and mirror looks different: two gradients and a corner mark."""
    y, x = np.mgrid[0:40, 0:64]
    img = np.stack([x * 4, y * 6, np.zeros_like(x)], axis=2).astype(np.uint8)
    img[:8, :8] = (255, 255, 255)
    return img


@pytest.mark.parametrize("orientation", range(1, 9))
def test_a_jpeg_is_read_as_pillow_shows_it_for_every_orientation(tmp_path, orientation):
    path = tmp_path / f"o{orientation}.jpg"
    exif = Image.Exif()
    exif[274] = orientation
    Image.fromarray(photo()).save(path, quality=100, exif=exif)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB")).astype(int)
    got = read_image(path).astype(int)
    assert got.shape == expected.shape == ((40, 64, 3) if orientation < 5 else (64, 40, 3))
    assert np.abs(got - expected).mean() < 1.0  # the same pixels, up to the two decoders' rounding
