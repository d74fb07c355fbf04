"""Pictures: the fixed detail crops evaluate writes (the same windows for every model)."""

import cv2
import numpy as np
import pytest

from srpipe.imresize import imresize
from srpipe.visualize import detail_windows, richest_window, write_detail_crops


def flat_with_texture(seed, at):
    """A flat grey 200 x 240 image with a 64 x 64 patch of noise whose corner is ``at``."""
    rng = np.random.default_rng(seed)
    img = np.full((200, 240, 3), 128, np.uint8)
    img[at[0] : at[0] + 64, at[1] : at[1] + 64] = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    return img


def pairs_of(images, scale=2):
    return [(f"img{i}.png", hr, imresize(hr, 1 / scale)) for i, hr in enumerate(images)]


def test_the_richest_window_is_where_the_texture_is():
    detail, y, x = richest_window(flat_with_texture(0, (100, 150)), 64)
    assert (y, x) == (100, 150) and detail > 0
    assert richest_window(np.full((80, 80, 3), 9, np.uint8), 64)[0] == 0


def test_detail_windows_pick_the_richest_images_in_their_order():
    """Two of three images: the two with the most texture; a flat one is left out."""
    flat = np.full((200, 240, 3), 128, np.uint8)
    faint = (flat_with_texture(1, (10, 20)).astype(np.int16) - 128) // 4 + 128
    pairs = pairs_of([flat_with_texture(0, (100, 150)), flat, faint.astype(np.uint8)])
    assert detail_windows(pairs, 2, 2) == [(0, 100, 150, 64), (2, 10, 20, 64)]
    assert detail_windows(pairs, 2, 5)[1][0] == 1  # more crops than images: one per image
    [(index, y, x, side)] = detail_windows(pairs, 4, 1)  # 32 LR pixels at x4: a window holding the whole patch
    assert index == 0 and side == 128 and 100 + 64 - 128 <= y <= 100 and 150 + 64 - 128 <= x <= 150


def test_crops_show_hr_and_each_upscaler_at_the_same_window(tmp_path):
    pairs = pairs_of([flat_with_texture(0, (100, 150))])
    bicubic = lambda lr: imresize(lr, 2)  # noqa: E731
    inverted = lambda lr: 255 - imresize(lr, 2)  # noqa: E731
    [path] = write_detail_crops({"bicubic": bicubic, "model": inverted}, pairs, 2, 3, tmp_path / "set")
    assert path == tmp_path / "set" / "img0.png"
    picture = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    zoom, gap = 256 // 64, 6
    assert picture.shape == (256, 3 * 256 + 2 * gap, 3)
    tiles = [picture[:, i * (256 + gap) : i * (256 + gap) + 256] for i in range(3)]
    hr, lr = pairs[0][1], pairs[0][2]
    expected = [hr, bicubic(lr), inverted(lr)]
    for tile, full in zip(tiles, expected):
        window = cv2.resize(full[100:164, 150:214], (256, 256), interpolation=cv2.INTER_NEAREST)
        # all but the label in the corner
        assert np.array_equal(tile[40:], window[40:])
    assert not np.array_equal(tiles[1], tiles[2])


@pytest.mark.parametrize("count", [0])
def test_no_crops_asked_writes_nothing(tmp_path, count):
    assert write_detail_crops({}, pairs_of([flat_with_texture(0, (0, 0))]), 2, count, tmp_path / "none") == []
    assert not (tmp_path / "none").exists()
