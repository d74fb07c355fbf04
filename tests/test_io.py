import cv2
import numpy as np
import pytest

import os
from pathlib import Path

from srpipe.io import SrpipeError, atomic_outputs, atomic_path, list_images, read_image, write_image


def test_png_roundtrip_rgb(tmp_path):
    img = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    write_image(tmp_path / "a.png", img)
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), img)
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]


def test_grayscale_becomes_three_equal_channels(tmp_path):
    cv2.imwrite(str(tmp_path / "g.png"), np.arange(12, dtype=np.uint8).reshape(3, 4))
    img = read_image(tmp_path / "g.png")
    assert img.shape == (3, 4, 3)
    assert (img[..., 0] == img[..., 1]).all() and (img[..., 1] == img[..., 2]).all()
    assert img[2, 3, 0] == 11


def test_sixteen_bit_is_scaled_to_eight(tmp_path):
    cv2.imwrite(str(tmp_path / "d.png"), np.array([[0, 257, 65535]], np.uint16))
    assert read_image(tmp_path / "d.png")[0, :, 0].tolist() == [0, 1, 255]


def test_rgba_alpha_dropped_with_warning(tmp_path):
    bgra = np.zeros((2, 2, 4), np.uint8)
    bgra[..., 2] = 200  # red in OpenCV's BGRA order
    bgra[..., 3] = 10
    cv2.imwrite(str(tmp_path / "t.png"), bgra)
    with pytest.warns(UserWarning, match="alpha"):
        img = read_image(tmp_path / "t.png")
    assert img.shape == (2, 2, 3) and img[0, 0].tolist() == [200, 0, 0]


@pytest.mark.parametrize("compression", [None, "tiff_lzw"])
def test_a_tiff_with_unassociated_alpha_keeps_its_colours(tmp_path, compression):
    """Pillow, GIMP and tifffile write 8-bit RGBA TIFFs with unassociated alpha; OpenCV reads those
    through libtiff's RGBA interface, which multiplies the colour by alpha (and blacks out what is
    transparent)."""
    from PIL import Image

    from srpipe.io import read_image_alpha

    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[..., :3] = (200, 100, 50)
    rgba[..., 3] = [[255, 128, 0], [1, 64, 255]]
    Image.fromarray(rgba, "RGBA").save(tmp_path / "t.tif", compression=compression)
    rgb, alpha, bits = read_image_alpha(tmp_path / "t.tif")
    assert (rgb == (200, 100, 50)).all() and np.array_equal(alpha, rgba[..., 3]) and bits == 8


def test_corrupt_image_is_reported_by_path(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    with pytest.raises(SrpipeError, match="broken.png"):
        read_image(bad)


def test_list_images_errors(tmp_path):
    with pytest.raises(SrpipeError, match="not found: .*missing"):
        list_images(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(SrpipeError, match="no images"):
        list_images(tmp_path)


def test_atomic_path_keeps_old_output_on_failure(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_atomic_path_replaces_folders(tmp_path):
    target = tmp_path / "dir"
    (target / "stale").mkdir(parents=True)
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "fresh").write_text("1")
    assert [p.name for p in target.iterdir()] == ["fresh"]
    assert [p.name for p in tmp_path.iterdir()] == ["dir"]


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tif", ".tiff"])
def test_lossless_formats_roundtrip(tmp_path, suffix):
    img = np.random.default_rng(1).integers(0, 256, (6, 9, 3), dtype=np.uint8)
    write_image(tmp_path / f"a{suffix}", img)
    np.testing.assert_array_equal(read_image(tmp_path / f"a{suffix}"), img)
    assert list_images(tmp_path) == [tmp_path / f"a{suffix}"]


def test_jpeg_reads_as_rgb(tmp_path):
    img = np.zeros((16, 16, 3), np.uint8)
    img[..., 0] = 200  # red
    write_image(tmp_path / "r.jpg", img)
    got = read_image(tmp_path / "r.jpg").astype(int)
    assert np.abs(got - img).max() <= 3 and got[..., 0].mean() > 190


def test_sixteen_bit_tiff(tmp_path):
    rgb16 = np.zeros((2, 2, 3), np.uint16)
    rgb16[..., 0] = 65535  # red, written in OpenCV's BGR order below
    cv2.imwrite(str(tmp_path / "d.tiff"), rgb16[..., ::-1].copy())
    assert read_image(tmp_path / "d.tiff")[0, 0].tolist() == [255, 0, 0]


def _old_set(tmp_path):
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "old.txt").write_text("old")
    (tmp_path / "a.json").write_text("old")
    return [tmp_path / "folder", tmp_path / "a.json"]


def _state(tmp_path):
    return {str(p.relative_to(tmp_path)): p.read_text() for p in sorted(tmp_path.rglob("*")) if p.is_file()}


def _write_new(folder_tmp, json_tmp):
    folder_tmp.mkdir()
    (folder_tmp / "new.txt").write_text("new")
    json_tmp.write_text("new")


def test_atomic_outputs_swap_a_folder_and_a_file_together(tmp_path):
    with atomic_outputs(*_old_set(tmp_path)) as (folder_tmp, json_tmp):
        _write_new(folder_tmp, json_tmp)
    assert _state(tmp_path) == {"folder/new.txt": "new", "a.json": "new"}


def test_atomic_outputs_keep_the_old_set_when_the_writer_fails(tmp_path):
    with pytest.raises(KeyboardInterrupt), atomic_outputs(*_old_set(tmp_path)) as (folder_tmp, json_tmp):
        _write_new(folder_tmp, json_tmp)
        raise KeyboardInterrupt
    assert _state(tmp_path) == {"folder/old.txt": "old", "a.json": "old"}


def test_a_failed_rename_puts_every_old_output_back(tmp_path, monkeypatch):
    """The folder is swapped in first; when the file's rename then fails, the folder goes back too."""
    import srpipe.io as io_module

    real = os.replace

    def failing(src, dst):
        if Path(dst).name == "a.json" and ".tmp" in Path(src).name and Path(src).read_text() == "new":
            raise OSError(18, "Invalid cross-device link", str(dst))
        return real(src, dst)

    monkeypatch.setattr(io_module.os, "replace", failing)
    with pytest.raises(OSError), atomic_outputs(*_old_set(tmp_path)) as (folder_tmp, json_tmp):
        _write_new(folder_tmp, json_tmp)
    assert _state(tmp_path) == {"folder/old.txt": "old", "a.json": "old"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "folder"]  # no temporaries left


def test_ctrl_c_during_the_swap_waits_for_it_to_finish(tmp_path, monkeypatch):
    import signal

    import srpipe.io as io_module

    real, sent = os.replace, []

    def interrupted(src, dst):
        if not sent:
            sent.append(signal.raise_signal(signal.SIGINT))  # Ctrl-C between the two renames
        return real(src, dst)

    monkeypatch.setattr(io_module.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt), atomic_outputs(*_old_set(tmp_path)) as (folder_tmp, json_tmp):
        _write_new(folder_tmp, json_tmp)
    assert sent and _state(tmp_path) == {"folder/new.txt": "new", "a.json": "new"}
