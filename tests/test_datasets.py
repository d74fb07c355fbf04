"""Dataset registry and `srpipe data fetch`, against a real HTTP server on 127.0.0.1."""

import hashlib
import http.server
import io
import threading
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from srpipe.cli import app
from srpipe.datasets import STANDARD, Archive, StandardDataset, dataset_files, dataset_key, fetch, is_present
from srpipe.io import SrpipeError


def small_zip() -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(buf, "w") as z:
        for i in range(3):
            ok, png = cv2.imencode(".png", rng.integers(0, 256, (12, 16, 3), dtype=np.uint8))
            z.writestr(f"Tiny/HR/img{i}.png", png.tobytes())
        z.writestr("Tiny/LR_bicubic/X2/img0.png", b"not extracted")
    return buf.getvalue()


class Server:
    """Serves ``files`` (path -> bytes); ``truncate`` paths announce the full length but send half."""

    def __init__(self, files: dict[str, bytes], truncate: tuple[str, ...] = ()):
        self.hits: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.hits.append(self.path)
                body = files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2] if self.path in truncate else body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    payload = small_zip()
    s = Server({"/tiny.zip": payload, "/cut.zip": payload}, truncate=("/cut.zip",))
    s.sha = hashlib.sha256(payload).hexdigest()
    yield s
    s.close()


def tiny(server, path="/tiny.zip", sha=None):
    return StandardDataset("tiny", (Archive(server.url + path, sha or server.sha, "tiny.zip"),), "Tiny/HR", "test set")


def test_fetch_downloads_verifies_extracts(server, tmp_path):
    folder, fetched = fetch(tiny(server), tmp_path)
    assert fetched and folder == tmp_path / "tiny" / "Tiny" / "HR"
    assert sorted(p.name for p in folder.iterdir()) == ["img0.png", "img1.png", "img2.png"]
    assert not (tmp_path / "tiny" / "Tiny" / "LR_bicubic").exists()  # only the HR folder is extracted
    assert is_present(tiny(server), tmp_path)
    # second call: no-op, no request
    hits = len(server.hits)
    assert fetch(tiny(server), tmp_path) == (folder, False)
    assert len(server.hits) == hits


def test_wrong_checksum_leaves_nothing(server, tmp_path):
    with pytest.raises(SrpipeError, match=f"^checksum mismatch for {server.url}/tiny.zip: expected sha256 0{{64}}, "
                       f"got {server.sha}; .* or put the HR images in {tmp_path / 'tiny'}/ by hand$"):
        fetch(tiny(server, sha="0" * 64), tmp_path)
    assert not (tmp_path / "tiny").exists()
    assert list((tmp_path / ".archives").iterdir()) == []


def test_truncated_download_leaves_nothing(server, tmp_path):
    with pytest.raises(SrpipeError, match=rf"^download of {server.url}/cut.zip was cut short \(IncompleteRead\(\d+ "
                                          r"bytes read, \d+ more expected\)\); fetch again$"):
        fetch(tiny(server, path="/cut.zip"), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".archives"]
    assert list((tmp_path / ".archives").iterdir()) == []


def test_missing_file_on_server(server, tmp_path):
    with pytest.raises(SrpipeError, match=f"^cannot download {server.url}/missing.zip: the server answered 404 Not Found; "
                                          f"put the HR images in {tmp_path / 'tiny'}/ by hand$"):
        fetch(tiny(server, path="/missing.zip"), tmp_path)
    assert not (tmp_path / "tiny").exists()


def test_archive_shared_by_datasets_is_downloaded_once(server, tmp_path):
    fetch(tiny(server), tmp_path)
    other = StandardDataset("tiny2", tiny(server).archives, "Tiny/HR", "same archive")
    fetch(other, tmp_path)
    assert server.hits == ["/tiny.zip"]


def test_registry_covers_the_standard_sets():
    assert set(STANDARD) == {"div2k-train", "div2k-valid", "set5", "set14", "b100", "urban100", "manga109"}
    for d in STANDARD.values():
        assert all(a.url.startswith("https://") and len(a.sha256) == 64 for a in d.archives)


def test_unfetched_standard_set_says_how_to_fetch(tmp_path):
    with pytest.raises(SrpipeError, match="srpipe data fetch set5"):
        dataset_files("set5", tmp_path)


def test_sample_sets_are_disjoint_colour_photos():
    train, valid = dataset_files("sample-train"), dataset_files("sample-valid")
    assert train and valid and not {p.name for p in train} & {p.name for p in valid}
    assert sorted(dataset_files("sample")) == sorted(train + valid)
    assert all(p.is_file() for p in train + valid)
    assert dataset_key("sample-valid") == "sample-valid" and dataset_key("/x/Set5") == "set5"


def test_data_cli_list_and_fetch_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    listed = runner.invoke(app, ["data", "list", "--set", "data.raw_dir=raw"])
    assert listed.exit_code == 0
    assert "sample-valid  bundled" in listed.output and "set5          absent" in listed.output
    assert runner.invoke(app, ["data", "fetch", "set6"]).exit_code == 2
    manga = runner.invoke(app, ["data", "fetch", "manga109"])
    assert manga.exit_code == 1 and "licence" in manga.output
    (tmp_path / "raw" / "set5" / "benchmark" / "Set5" / "HR").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "raw/set5/benchmark/Set5/HR/a.png"), np.zeros((4, 4, 3), np.uint8))
    present = runner.invoke(app, ["data", "fetch", "set5", "--set", "data.raw_dir=raw"])
    assert present.exit_code == 0 and "already present" in present.output


def test_cached_archive_that_is_corrupt_is_downloaded_again(server, tmp_path):
    (tmp_path / ".archives").mkdir()
    (tmp_path / ".archives" / "tiny.zip").write_bytes(b"half an archive")
    folder, fetched = fetch(tiny(server), tmp_path)
    assert fetched and len(list(folder.iterdir())) == 3 and server.hits == ["/tiny.zip"]
    assert hashlib.sha256((tmp_path / ".archives" / "tiny.zip").read_bytes()).hexdigest() == server.sha


def test_no_network_is_one_line_naming_url_and_the_manual_way(tmp_path):
    closed = Server({})
    closed.close()  # nothing listens on its port any more: the connection is refused
    with pytest.raises(SrpipeError) as err:
        fetch(tiny(closed, sha="0" * 64), tmp_path)
    message = str(err.value)
    assert "\n" not in message and f"cannot reach {closed.url}/tiny.zip (Connection refused)" in message
    assert f"put the HR images in {tmp_path / 'tiny'}/ by hand" in message
    assert not (tmp_path / "tiny").exists() and list((tmp_path / ".archives").iterdir()) == []


def test_download_is_quiet_apart_from_the_progress_bar(server, tmp_path, capfd):
    fetch(tiny(server), tmp_path)
    out, err = capfd.readouterr()
    assert out == "" and "Downloading" not in err and "pooch" not in err.lower()


def hand_placed(folder: Path, n: int = 2) -> list[Path]:
    folder.mkdir(parents=True)
    for i in range(n):
        cv2.imwrite(str(folder / f"im{i}.png"), np.full((4, 4, 3), i, np.uint8))
    return sorted(folder.glob("*.png"))


def test_standard_set_put_in_place_by_hand(server, tmp_path):
    hand_placed(tmp_path / "tiny")  # images directly in raw_dir/NAME, not in the archive's layout
    assert is_present(tiny(server), tmp_path)
    assert fetch(tiny(server), tmp_path) == (tmp_path / "tiny", False) and server.hits == []
    set5 = hand_placed(tmp_path / "set5", 5)
    assert dataset_files("set5", tmp_path) == set5
    assert STANDARD["manga109"].description.endswith("put the HR images in <raw_dir>/manga109/")


def test_manga109_by_hand(tmp_path):
    images = hand_placed(tmp_path / "manga109", 3)
    assert dataset_files("manga109", tmp_path) == images


def test_absent_standard_set_names_its_folder_and_both_ways(tmp_path):
    with pytest.raises(SrpipeError) as err:
        dataset_files("set5", tmp_path)
    assert str(err.value) == (f"dataset 'set5' is not in {tmp_path / 'set5'}/: run `srpipe data fetch set5`, "
                              f"or put its HR images in {tmp_path / 'set5'}/ by hand")
    with pytest.raises(SrpipeError, match=f"request it from its authors and put its HR images in {tmp_path}/manga109/"):
        dataset_files("manga109", tmp_path)


def test_fetch_does_not_replace_a_folder_without_images(server, tmp_path):
    hand_placed(tmp_path / "tiny" / "wrong" / "place")
    with pytest.raises(SrpipeError, match=r"tiny/ holds no images .* move it away, or put the HR images directly"):
        fetch(tiny(server), tmp_path)
    assert len(list((tmp_path / "tiny" / "wrong" / "place").iterdir())) == 2 and server.hits == []


def test_data_list_shows_a_hand_placed_set(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    hand_placed(tmp_path / "raw" / "set14")
    listed = CliRunner().invoke(app, ["data", "list", "--set", "data.raw_dir=raw"])
    assert listed.exit_code == 0
    line = next(x for x in listed.output.splitlines() if x.startswith("set14 "))
    assert line.split()[1] == "present" and line.endswith(f"[{Path('raw') / 'set14'}]")
    manga = next(x for x in listed.output.splitlines() if x.startswith("manga109 "))  # it printed <raw_dir>
    assert "put the HR images in raw/manga109/" in manga and "<raw_dir>" not in listed.output


def test_interrupted_download_leaves_nothing(server, tmp_path, monkeypatch):
    def ctrl_c(self, n):
        raise KeyboardInterrupt

    monkeypatch.setattr("srpipe.datasets._Bar.update", ctrl_c)  # Ctrl-C after the first chunk was written
    with pytest.raises(KeyboardInterrupt):
        fetch(tiny(server), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".archives"]
    assert list((tmp_path / ".archives").iterdir()) == []


def test_a_download_killed_by_sigkill_is_cleaned_up_by_the_next_fetch(server, tmp_path):
    """SIGKILL runs no cleanup: the half-written download stays until the next fetch removes it."""
    import subprocess
    import sys

    killed = subprocess.run([sys.executable, "-c", f"""
import os, signal
from srpipe.datasets import Archive, StandardDataset, fetch, _Bar
_Bar.update = lambda self, n: os.kill(os.getpid(), signal.SIGKILL)  # killed after the first chunk
fetch(StandardDataset("tiny", (Archive("{server.url}/tiny.zip", "{server.sha}", "tiny.zip"),), "Tiny/HR", ""),
      r"{tmp_path}")
"""], capture_output=True)
    assert killed.returncode == -9
    left = list((tmp_path / ".archives").iterdir())
    assert len(left) == 1 and left[0].name != "tiny.zip"  # the killed download's temporary
    with pytest.warns(UserWarning, match=rf"removed {left[0]} .* left by a killed run"):
        folder, fetched = fetch(tiny(server), tmp_path)
    assert fetched and len(list(folder.iterdir())) == 3
    assert [p.name for p in (tmp_path / ".archives").iterdir()] == ["tiny.zip"]


def test_data_train_joins_a_list_of_sets_and_refuses_two_images_of_one_name(tmp_path, monkeypatch):
    from srpipe.config import load_params
    from srpipe.data import source_files

    a, b = tmp_path / "a", tmp_path / "b"
    for folder, names in ((a, ["x", "y"]), (b, ["z"])):
        folder.mkdir()
        for name in names:
            (folder / f"{name}.png").write_bytes(b"")
    (tmp_path / "params.yaml").write_text("{}\n")
    p = load_params(tmp_path / "params.yaml", [f"data.train=[{a}, {b}]"])
    assert p.data.train == [str(a), str(b)]
    assert [f.name for f in source_files(p.data.train)] == ["x.png", "y.png", "z.png"]
    assert [f.name for f in source_files(p.data.train, limit=2)] == ["x.png", "y.png"]
    (b / "x.png").write_bytes(b"")
    with pytest.raises(SrpipeError, match=r"two images named x in .*a \+ .*b: .*a/x.png and .*b/x.png; rename one"):
        source_files([str(a), str(b)])
