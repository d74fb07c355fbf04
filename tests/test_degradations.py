import cv2
import numpy as np
import pytest

from srpipe.config import DegradationParams
from srpipe.degradations import degrade, draw, image_rng
from srpipe.imresize import crop_to_multiple, imresize
from srpipe.io import read_image

from .conftest import DATA, need

ONLY = dict(blur_prob=0.0, noise_prob=0.0, jpeg_prob=0.0)


@pytest.fixture(scope="module")
def hr():
    return crop_to_multiple(read_image(need(DATA) / "Set14" / "baboon.png"), 4)[:240, :240]


def realistic(**kw):
    return DegradationParams(kind="realistic", **{**ONLY, **kw})


def high_freq(img):
    return float(cv2.Laplacian(img.astype(np.float64).mean(axis=2), cv2.CV_64F).var())


def psnr_rgb(a, b):
    return 10 * np.log10(255**2 / np.mean((a.astype(float) - b.astype(float)) ** 2))


def test_bicubic_kind_is_the_protocol(hr):
    lr, (d,) = degrade(hr, 4, DegradationParams())
    np.testing.assert_array_equal(lr, imresize(hr, 1 / 4))
    assert d.blur_sigma is None and d.noise_sigma is None and d.jpeg_quality is None


def test_all_steps_skipped_equals_bicubic(hr):
    lr, _ = degrade(hr, 2, realistic(), seed=3, name="x")
    np.testing.assert_array_equal(lr, imresize(hr, 1 / 2))


def test_same_seed_same_bytes_different_seed_differs(hr):
    cfg = DegradationParams(kind="realistic")
    a, da = degrade(hr, 2, cfg, seed=1, name="baboon")
    b, db = degrade(hr, 2, cfg, seed=1, name="baboon")
    c, dc = degrade(hr, 2, cfg, seed=2, name="baboon")
    assert a.tobytes() == b.tobytes() and da == db
    assert a.tobytes() != c.tobytes() and da != dc
    # the draws depend on the name too, not on the order images are processed in
    assert draw(cfg, image_rng(1, "baboon")) != draw(cfg, image_rng(1, "other"))


def test_draws_respect_ranges():
    cfg = DegradationParams(kind="realistic", blur_sigma=(0.8, 1.2), noise_sigma=(0, 10), jpeg_quality=(30, 95))
    draws = [draw(cfg, image_rng(0, str(i))) for i in range(200)]
    assert all(0.8 <= d.blur_sigma <= 1.2 and 0 <= d.noise_sigma <= 10 and 30 <= d.jpeg_quality <= 95 for d in draws)
    assert len({d.jpeg_quality for d in draws}) > 30
    half = DegradationParams(kind="realistic", blur_prob=0.5)
    skipped = sum(draw(half, image_rng(0, str(i))).blur_sigma is None for i in range(400))
    assert 150 < skipped < 250


def test_blur_removes_high_frequencies_more_with_larger_sigma(hr):
    clean = high_freq(degrade(hr, 2, realistic())[0])
    weak = high_freq(degrade(hr, 2, realistic(blur_prob=1.0, blur_sigma=(0.8, 0.8)))[0])
    strong = high_freq(degrade(hr, 2, realistic(blur_prob=1.0, blur_sigma=(2.0, 2.0)))[0])
    assert strong < weak < clean
    assert weak < 0.8 * clean


def test_noise_has_the_drawn_sigma(hr):
    clean = degrade(hr, 2, realistic())[0].astype(float)
    noisy, (d,) = degrade(hr, 2, realistic(noise_prob=1.0, noise_sigma=(8.0, 8.0)), seed=0, name="b")
    residual = noisy.astype(float) - clean
    assert d.noise_sigma == 8.0
    assert abs(residual.mean()) < 0.2
    assert 7.0 < residual.std() < 8.5  # a little below 8 where clipping at 0/255 bites


def test_lower_jpeg_quality_loses_more(hr):
    clean = degrade(hr, 2, realistic())[0]
    q95 = degrade(hr, 2, realistic(jpeg_prob=1.0, jpeg_quality=(95, 95)))[0]
    q30 = degrade(hr, 2, realistic(jpeg_prob=1.0, jpeg_quality=(30, 30)))[0]
    assert psnr_rgb(q30, clean) < psnr_rgb(q95, clean) - 5
    assert psnr_rgb(q95, clean) > 30


def test_order_is_configurable(hr):
    before = degrade(hr, 2, realistic(noise_prob=1.0, noise_sigma=(10, 10), order=["noise", "resize"]))[0]
    after = degrade(hr, 2, realistic(noise_prob=1.0, noise_sigma=(10, 10), order=["resize", "noise"]))[0]
    clean = degrade(hr, 2, realistic())[0].astype(float)
    # noise added before the antialiased downscale is averaged away; added after, it is not
    assert np.std(before - clean) < 0.6 * np.std(after - clean)


@pytest.mark.parametrize("bad,message", [
    ({"order": ["blur", "noise"]}, "resize exactly once"),
    ({"order": ["resize", "resize"]}, "resize exactly once"),
    ({"blur_sigma": (1.5, 1.0)}, "blur_sigma must be [low, high]"),
    ({"jpeg_quality": (50, 101)}, "jpeg_quality must be [low, high]"),
    ({"kind": "gan"}, "Input should be 'bicubic' or 'realistic'"),
])
def test_bad_degradation_params(bad, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        DegradationParams(**bad)


def test_prepare_writes_a_manifest_of_the_draws(tmp_path):
    import pandas as pd

    from srpipe.data import prepare, source_files

    cfg = DegradationParams(kind="realistic", jpeg_quality=(40, 90))
    first = prepare(source_files("sample-valid"), tmp_path / "a", 2, cfg, seed=5)
    again = prepare(source_files("sample-valid"), tmp_path / "b", 2, cfg, seed=5)
    manifest = pd.read_csv(tmp_path / "a" / "manifest.csv")
    assert list(manifest["image"]) == ["astronaut.png", "coffee.png"]
    assert {"blur_sigma", "noise_sigma", "jpeg_quality", "kind", "source"} <= set(manifest.columns)
    assert manifest["blur_sigma"].between(0.8, 1.2).all() and manifest["jpeg_quality"].between(40, 90).all()
    assert manifest.equals(pd.read_csv(tmp_path / "b" / "manifest.csv")) and first.equals(again)
    for name in manifest["image"]:
        assert (tmp_path / "a/lr_x2" / name).read_bytes() == (tmp_path / "b/lr_x2" / name).read_bytes()


def test_second_order_draws_both_passes_within_their_ranges(hr):
    cfg = DegradationParams(kind="realistic", passes=2, resize_range=(0.5, 1.5), resize_modes=["area", "bicubic"],
                            second={"noise_sigma": (3.0, 4.0), "jpeg_quality": (40, 50), "blur_prob": 0.5})
    seen = []
    for i in range(30):
        lr, (first, second) = degrade(hr, 2, cfg, seed=0, name=str(i))
        assert lr.shape == (120, 120, 3) and lr.dtype == np.uint8
        assert 0.5 <= first.resize_factor <= 1.5 and first.resize_mode in ("area", "bicubic")
        assert second.resize_factor is None and second.resize_mode in ("area", "bicubic")
        assert 3.0 <= second.noise_sigma <= 4.0 and 40 <= second.jpeg_quality <= 50 and first.jpeg_quality == 85
        seen.append(second.blur_sigma is None)
    assert 5 < sum(seen) < 25  # the second pass's own blur probability
    again = degrade(hr, 2, cfg, seed=0, name="0")
    assert again[0].tobytes() == degrade(hr, 2, cfg, seed=0, name="0")[0].tobytes()
    # two passes of noise and JPEG lose more than one
    one = degrade(hr, 2, DegradationParams(kind="realistic"), seed=0, name="0")[0]
    clean = imresize(hr, 0.5)
    assert psnr_rgb(again[0], clean) < psnr_rgb(one, clean)


def test_manifest_of_a_second_order_chain_names_each_pass(tmp_path):
    import pandas as pd

    from srpipe.data import prepare, source_files

    prepare(source_files("sample-valid"), tmp_path / "a", 2, DegradationParams(kind="realistic", passes=2))
    manifest = pd.read_csv(tmp_path / "a" / "manifest.csv")
    for column in ("blur_sigma", "resize_factor", "resize_mode", "noise_sigma_2", "jpeg_quality_2", "resize_mode_2"):
        assert column in manifest.columns, manifest.columns
    assert manifest["resize_factor_2"].isna().all() and manifest["resize_factor"].between(0.5, 1.5).all()


def test_crop_degrader_draws_from_its_key_alone(hr):
    from srpipe.degradations import CropDegrader

    cfg = DegradationParams(kind="realistic", on_the_fly=True, noise_sigma=(2, 10), jpeg_quality=(40, 95))
    degrader = CropDegrader(cfg, 2)
    crop = np.ascontiguousarray(hr[:96, :96])
    a, b, c = degrader(crop, (0, 1, 5)), degrader(crop, (0, 1, 5)), degrader(crop, (0, 1, 6))
    assert a.shape == (48, 48, 3) and np.array_equal(a, b) and not np.array_equal(a, c)
    plain = CropDegrader(realistic(on_the_fly=True), 2)  # every step skipped: the protocol's bicubic
    np.testing.assert_array_equal(plain(crop, (0, 1, 5)), imresize(crop, 0.5))


def test_on_the_fly_needs_the_realistic_kind():
    with pytest.raises(ValueError, match="on_the_fly needs degradation.kind: realistic"):
        DegradationParams(on_the_fly=True)
