"""`srpipe upscale` loses nothing: foreign ONNX models, colliding outputs, seams, memory, alpha
and 16-bit images, unwritable --out."""

import json
import warnings

import cv2
import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from typer.testing import CliRunner

from srpipe.cli import app
from srpipe.imresize import imresize
from srpipe.models import build_model, save_checkpoint
from srpipe.upscale import upscale_files
from srpipe.upscalers import onnx_io, open_model, ort_session, torch_upscaler

KWARGS = {"scale": 2, "n_resblocks": 4, "n_feats": 16}


def run(*args):
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def image(h, w, channels=3, seed=0, dtype=np.uint8):
    top = np.iinfo(dtype).max
    smooth = cv2.GaussianBlur(np.random.default_rng(seed).integers(0, top, (h, w, channels)).astype(np.float32),
                              (0, 0), 2)
    return np.clip((smooth - smooth.min()) / np.ptp(smooth) * top, 0, top).astype(dtype)


def save(path, img):
    """Write RGB(A) ``img`` with OpenCV (BGR(A) on disk)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    code = cv2.COLOR_RGBA2BGRA if img.shape[2] == 4 else cv2.COLOR_RGB2BGR
    assert cv2.imwrite(str(path), cv2.cvtColor(img, code))
    return path


def load(path):
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    return cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA if img.shape[2] == 4 else cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    net = build_model("edsr", **KWARGS)
    with torch.no_grad():  # a residual of visible size, as a trained model has
        net.tail[-1].weight.mul_(20)
    path = tmp_path_factory.mktemp("model") / "m.pt"
    save_checkpoint(path, net.eval(), {"name": "edsr", "kwargs": KWARGS})
    return path


def foreign_onnx(path, scales=(2.0, 2.0), channels=3, inputs=1, meta=None, size=None):
    """An ONNX model as another tool writes it: input 'image', output 'upscaled', nearest-neighbour
    Resize by ``scales`` (or to ``size`` x ``size``), no srpipe metadata (unless ``meta``)."""
    names = [f"image{i or ''}" for i in range(inputs)]
    graph_inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", channels, "H", "W"]) for n in names]
    nodes = [helper.make_node("Add", names, ["sum"])] if inputs > 1 else []
    factors = (helper.make_tensor("factors", TensorProto.INT64, [4], [1, 3, size, size]) if size else
               helper.make_tensor("factors", TensorProto.FLOAT, [4], [1.0, 1.0, *scales]))
    how = ["", "", "factors"] if size else ["", "factors"]
    nodes.append(helper.make_node("Resize", [nodes[0].output[0] if nodes else names[0], *how], ["upscaled"],
                                  mode="nearest"))
    out = helper.make_tensor_value_info("upscaled", TensorProto.FLOAT, None)
    model = helper.make_model(helper.make_graph(nodes, "foreign", graph_inputs, [out], [factors]),
                              opset_imports=[helper.make_opsetid("", 17)])
    if meta:
        helper.set_model_props(model, meta)
    onnx.save(model, str(path))
    return path


# 1. ONNX models from other tools


def test_a_foreign_onnx_model_upscales_and_evaluates(tmp_path, shared_data, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no params.yaml: the defaults
    model = foreign_onnx(tmp_path / "other.onnx")
    assert onnx_io(ort_session(model)) == ("image", "upscaled")
    lr = image(20, 30)
    save(tmp_path / "in" / "p.png", lr)
    code, out = run("upscale", str(tmp_path / "in"), "--model", str(model), "--out", str(tmp_path / "o"),
                    "--tile", "8", "--overlap", "2")
    assert code == 0, out
    np.testing.assert_array_equal(load(tmp_path / "o" / "p_x2.png"), lr.repeat(2, 0).repeat(2, 1))
    code, out = run("evaluate", "--hr-dir", str(shared_data / "Set5"), "--onnx", str(model), "--out",
                    str(tmp_path / "e.json"), "--set", "eval.lpips=false")
    assert code == 0, out
    assert json.loads((tmp_path / "e.json").read_text())["scale"] == 2  # found by a small run


@pytest.mark.parametrize("kind,said", [
    (dict(scales=(1.5, 1.5)), "turns a 16x16 input into 24x24, not a whole-number upscale"),
    (dict(scales=(2.0, 3.0)), "turns a 16x16 input into 32x48"),
    (dict(inputs=2), "has 2 input(s) and 1 output(s)"),
    (dict(channels=1), "srpipe feeds RGB images as N x 3 x H x W"),
    (dict(meta={"srpipe.scale": "3"}), "records scale 3 (srpipe.scale) but turns a 16x16 input into 32x32"),
    (dict(size=32), "turned a 24x24 image into 32x32, not x2"),  # x2 at 16x16 only: every output is checked
])
def test_an_onnx_model_srpipe_cannot_run_is_one_line_naming_it(tmp_path, kind, said):
    model = foreign_onnx(tmp_path / "bad.onnx", **kind)
    save(tmp_path / "p.png", image(24, 24))
    code, out = run("upscale", str(tmp_path / "p.png"), "--model", str(model), "--out", str(tmp_path / "o"))
    assert code == 1 and said in out and str(model) in out, out
    assert "Traceback" not in out and (out.count("\n") == 1 or "size" in kind)  # per image: reported, skipped


# 2. outputs decided before any work


def test_two_inputs_that_would_write_one_output_stop_before_any_work(tmp_path, checkpoint):
    save(tmp_path / "a" / "photo.png", image(12, 12, seed=1))
    save(tmp_path / "b" / "photo.png", image(12, 12, seed=2))
    out_dir = tmp_path / "o"
    code, out = run("upscale", str(tmp_path / "a"), str(tmp_path / "b"), "--model", str(checkpoint), "--out",
                    str(out_dir))
    assert code == 1
    assert f"{tmp_path / 'a' / 'photo.png'} and {tmp_path / 'b' / 'photo.png'} would both be written to" in out
    assert not any(out_dir.iterdir())  # nothing written
    save(tmp_path / "c" / "pic.png", image(12, 12, seed=3))
    save(tmp_path / "c" / "pic.jpg", image(12, 12, seed=4))
    code, out = run("upscale", str(tmp_path / "c"), "--model", str(checkpoint), "--out", str(out_dir),
                    "--format", "png")
    assert code == 1 and "pic.jpg and" in out and "pic.png would both be written to" in out
    assert not any(out_dir.iterdir())
    # without --format they do not collide; a file given twice (alone and in its folder) is done once
    code, out = run("upscale", str(tmp_path / "c"), str(tmp_path / "c" / "pic.png"), "--model", str(checkpoint),
                    "--out", str(out_dir))
    assert code == 0 and "2 image(s) upscaled" in out
    assert sorted(p.name for p in out_dir.iterdir()) == ["pic_x2.jpg", "pic_x2.png"]


# 3. seams


def test_too_little_overlap_warns_with_the_overlap_the_model_needs(tmp_path, checkpoint):
    save(tmp_path / "p.png", image(40, 40))
    model = open_model(checkpoint)
    assert model.footprint.reach == 12  # head 1 + 4 blocks x 2 + body 1 + upsampler 1 + tail 1/2 (at x2), up
    with pytest.warns(UserWarning, match=r"--overlap 0 is less than the model's reach .*use --overlap 12"):
        upscale_files([tmp_path / "p.png"], model, tmp_path / "o", tile=16, overlap=0)
    with pytest.warns(UserWarning, match=r"use --overlap 12"):
        upscale_files([tmp_path / "p.png"], model, tmp_path / "o", tile=16, overlap=4)
    # with the suggested overlap (or untiled) there is no warning, and the tiles match the whole image
    whole = torch_upscaler(model_net(checkpoint))(image(40, 40))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        upscale_files([tmp_path / "p.png"], model, tmp_path / "o", tile=16, overlap=12)
        assert np.abs(load(tmp_path / "o" / "p_x2.png").astype(int) - whole).max() <= 1
        upscale_files([tmp_path / "p.png"], model, tmp_path / "o", tile=0, overlap=0)


def test_the_overlap_warning_suggests_what_it_says_the_model_needs():
    """A model reaching 20 LR pixels was told its reach was 20 and to use 16."""
    from srpipe.upscale import check_overlap
    from srpipe.upscalers import Footprint

    with pytest.warns(UserWarning) as caught:
        check_overlap(Footprint(reach=20, widest=3.0), tile=64, overlap=8)
    assert str(caught[0].message) == ("--overlap 8 is less than 16 LR pixels (the model's convolutions reach 20, but "
                                      "a pixel's influence fades below one grey level within 16): seams between "
                                      "tiles will show; use --overlap 16")


def model_net(path):
    from .conftest import load_model

    return load_model(path)[0]


# 4. memory


def test_an_image_too_large_for_the_memory_is_refused_with_a_tile_that_fits(tmp_path, checkpoint, monkeypatch):
    import srpipe.upscale

    monkeypatch.setattr(srpipe.upscale, "available_memory", lambda device="cpu": 50 * 2**20)
    save(tmp_path / "in" / "big.png", image(400, 400))
    save(tmp_path / "in" / "small.png", image(20, 20))
    args = ["upscale", str(tmp_path / "in"), "--model", str(checkpoint), "--out", str(tmp_path / "o")]
    code, out = run(*args, "--tile", "0")
    # 64 floats per LR pixel (the upsampler's conv) x 4 bytes x 4 copies x 160,000 pixels, + the output
    assert code == 1 and "big.png: upscaling 400x400 x2 whole (--tile 0) needs about 0.2 GiB" in out
    assert "0.0 GiB is available; use --tile 128" in out and "1 of 2 image(s) failed" in out
    assert (tmp_path / "o" / "small_x2.png").is_file() and not (tmp_path / "o" / "big_x2.png").exists()
    code, out = run(*args, "--tile", "128")
    assert code == 0, out
    assert load(tmp_path / "o" / "big_x2.png").shape == (800, 800, 3)


# 5. alpha and 16 bits


@pytest.mark.parametrize("fmt", ["png", "tiff", "webp"])
def test_alpha_is_upscaled_bicubically_and_kept(tmp_path, checkpoint, fmt):
    rgba = np.dstack([image(30, 26), image(30, 26, channels=1, seed=5)])
    save(tmp_path / "p.png", rgba)
    code, out = run("upscale", str(tmp_path / "p.png"), "--model", str(checkpoint), "--out", str(tmp_path / "o"),
                    "--format", fmt, "--tile", "16", "--overlap", "12")
    assert code == 0, out
    got = load(tmp_path / "o" / f"p_x2.{fmt}")
    assert got.shape == (60, 52, 4)
    np.testing.assert_array_equal(got[:, :, 3], imresize(rgba[:, :, 3], 2))  # tiled alpha is exact
    if fmt != "webp":  # lossy colours
        whole = torch_upscaler(model_net(checkpoint))(np.ascontiguousarray(rgba[:, :, :3]))
        assert np.abs(got[:, :, :3].astype(int) - whole).max() <= 1


def test_alpha_a_format_cannot_hold_and_16_bits_are_warned_about(tmp_path, checkpoint):
    model = open_model(checkpoint)
    save(tmp_path / "a.png", np.dstack([image(20, 20), image(20, 20, channels=1)]))
    with pytest.warns(UserWarning, match=r"a.png: alpha channel dropped: .jpg cannot hold it"):
        written, _ = upscale_files([tmp_path / "a.png"], model, tmp_path / "o", fmt="jpg")
    assert load(written[0]).shape == (40, 40, 3)
    deep = image(20, 20, dtype=np.uint16)
    save(tmp_path / "d.png", deep)
    with pytest.warns(UserWarning, match=r"d.png: 16-bit image, written as 8-bit"):
        written, _ = upscale_files([tmp_path / "d.png"], model, tmp_path / "o")
    eight = np.floor(deep / 257.0 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(load(written[0]), torch_upscaler(model_net(checkpoint))(eight))


# 6. --out


def test_an_unusable_out_is_refused_before_any_work(tmp_path):
    (tmp_path / "taken").write_text("a file")
    save(tmp_path / "p.png", image(8, 8))
    missing_model = str(tmp_path / "not-there.pt")  # checked later: the --out message comes first
    code, out = run("upscale", str(tmp_path / "p.png"), "--model", missing_model, "--out", str(tmp_path / "taken"))
    assert code == 1 and f"{tmp_path / 'taken'} is a file, not a folder" in out and out.count("\n") == 1
    code, out = run("upscale", str(tmp_path / "p.png"), "--model", missing_model, "--out", "/proc/srpipe/out")
    assert code == 1 and "cannot write to /proc/srpipe/out" in out and out.count("\n") == 1
    assert (tmp_path / "taken").read_text() == "a file"


def test_a_symlink_loop_given_as_input_is_named_not_a_bug(tmp_path, checkpoint):
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    code, out = run("upscale", str(tmp_path / "loop"), "--model", str(checkpoint), "--out", str(tmp_path / "o"))
    errors = [line for line in out.splitlines() if line.startswith("srpipe: error:")]
    assert code == 1 and errors == [f"srpipe: error: {tmp_path / 'loop'} is a symbolic link that leads back to "
                                    "itself (a loop); give an image file or a folder of images"], out
