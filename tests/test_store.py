"""The image store of extract-patches: no multiplication of the data, flat memory, the same bytes
with any number of workers, and crops read straight from it."""

import hashlib
import pickle
import sys

import cv2
import numpy as np
import pytest

from srpipe.data import prepare, source_files
from srpipe.datasets import dataset_files
from srpipe.hardware import run_watched
from srpipe.io import read_image
from srpipe.patches import ImageStore, extract


def photo_folder(folder, n, size=(480, 640)):
    """``n`` distinct real-photo images: crops of scikit-image's photos, scaled up where needed."""
    folder.mkdir(parents=True, exist_ok=True)
    photos = [read_image(p) for p in dataset_files("sample")]
    h, w = size
    for i in range(n):
        img = photos[i % len(photos)]
        factor = max(h / img.shape[0], w / img.shape[1]) * (1 + 0.1 * (i // len(photos)))
        big = cv2.resize(img, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_CUBIC)
        y, x = (i * 7) % (big.shape[0] - h + 1), (i * 13) % (big.shape[1] - w + 1)
        cv2.imwrite(str(folder / f"photo{i:03d}.png"), cv2.cvtColor(big[y : y + h, x : x + w], cv2.COLOR_RGB2BGR))
    return folder


def prepared(root, n, workers=2):
    prepare(source_files(str(photo_folder(root / "raw", n))), root / "train", 2, workers=workers)
    return root / "train"


def digests(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_store_is_the_decoded_bytes_and_reads_back(tmp_path):
    train = prepared(tmp_path, 3)
    index = extract(train, tmp_path / "store", 2, workers=2)
    decoded = sum(read_image(p).nbytes for p in (train / "hr").iterdir()) + \
        sum(read_image(p).nbytes for p in (train / "lr_x2").iterdir())
    on_disk = sum(p.stat().st_size for p in (tmp_path / "store").iterdir())
    assert decoded <= on_disk <= 1.3 * decoded and on_disk - decoded < 2000  # raw pixels plus a small index
    store = pickle.loads(pickle.dumps(ImageStore(tmp_path / "store")))  # as DataLoader workers get it
    assert len(store) == 3 and store.scale == 2 and list(index["image"]) == store.names
    for i, name in enumerate(store.names):
        np.testing.assert_array_equal(store.hr(i), read_image(train / "hr" / name))
        np.testing.assert_array_equal(store.lr(i), read_image(train / "lr_x2" / name))
        pixels = store.hr(i).tobytes() + store.lr(i).tobytes()
        assert index["sha256"][i] == hashlib.sha256(pixels).hexdigest()


def test_outputs_are_byte_identical_with_one_and_two_workers(tmp_path):
    raw = photo_folder(tmp_path / "raw", 6, size=(96, 128))
    for workers in (1, 2):
        prepare(source_files(str(raw)), tmp_path / f"train{workers}", 2, workers=workers)
        extract(tmp_path / f"train{workers}", tmp_path / f"store{workers}", 2, workers=workers)
    assert digests(tmp_path / "train1") == digests(tmp_path / "train2")
    assert len(digests(tmp_path / "train1")) == 13  # 6 HR, 6 LR, the manifest
    assert digests(tmp_path / "store1") == digests(tmp_path / "store2")


def peak_rss_mb(train, out, workers):
    """Peak RSS of `srpipe extract-patches` in a fresh process: its largest process and its whole
    tree (workers included)."""
    r = run_watched([sys.executable, "-m", "srpipe", "extract-patches", "--prepared", str(train), "--out", str(out),
                     "--set", f"data.workers={workers}"], cwd=out.parent, interval=0.01)
    assert r["returncode"] == 0, r["output"]
    return r


@pytest.mark.parametrize("workers", [1, 2])
def test_peak_memory_does_not_grow_with_the_number_of_images(tmp_path, workers):
    (tmp_path / "params.yaml").write_text("seed: 0\n")
    few, many = prepared(tmp_path / "few", 8), prepared(tmp_path / "many", 32)
    a, b = peak_rss_mb(few, tmp_path / "few_store", workers), peak_rss_mb(many, tmp_path / "many_store", workers)
    per_image_mb = (480 * 640 * 3 + 240 * 320 * 3) / 2**20  # 1.1 MB decoded: holding 24 more would add 26 MB
    assert b["largest_mb"] - a["largest_mb"] < 8 * per_image_mb, (a, b)
    assert b["tree_mb"] - a["tree_mb"] < 8 * per_image_mb, (a, b)
    assert a["largest_mb"] < 400 and b["tree_mb"] < 400 * workers, (a, b)  # imports included


def test_training_crops_keep_the_mapped_store_small(tmp_path, monkeypatch):
    """A training process maps only what its recent crops touched, not the whole store, so its
    resident memory does not grow with the store (or with the number of crops drawn)."""
    import psutil

    from srpipe.training import sampling

    monkeypatch.setattr(sampling, "RELEASE_EVERY", 16)
    extract(prepared(tmp_path, 12), tmp_path / "store", 2)
    size = sum(p.stat().st_size for p in (tmp_path / "store").glob("*.bin"))
    dataset = sampling.CropDataset(ImageStore(tmp_path / "store"), 32, 10**6, seed=0)

    def mapped():
        return sum(m.rss for m in psutil.Process().memory_maps() if m.path.startswith(str(tmp_path / "store")))

    for g in range(2000):  # 2000 crops of 32 px touch every part of this 13 MB store
        dataset[g]
    assert size > 13e6 and mapped() < 5e6, (size, mapped())  # 16 crops' rows, each about 0.2 MB
