"""spandrel's architectures in srpipe: built at their papers' sizes from one override, trained,
exported to ONNX (fp32 and int8) and to weights spandrel itself opens and runs the same.

Every architecture here runs at a tiny size so that the whole matrix stays quick; the sizes come
from spandrel's constructors, the outputs are compared with spandrel's own loader."""

import json

import numpy as np
import pytest
import torch
from spandrel import ModelLoader
from typer.testing import CliRunner

from srpipe.cli import app
from srpipe.config import PRESETS, ZOO_ARCHS, ModelParams, load_params
from srpipe.export import export_precisions, onnx_path
from srpipe.imresize import crop_to_multiple, imresize
from srpipe.io import SrpipeError, list_images, read_image
from srpipe.modelfile import open_model_file
from srpipe.models import build_model, count_parameters, save_checkpoint
from srpipe.models.zoo import ZOO
from srpipe.training import model_arch
from srpipe.upscale import upscale_tiled
from srpipe.upscalers import ort_session, self_ensemble, torch_forward, torch_upscaler

from .conftest import DATA, ROOT, need

TINY = {
    "span": {"feature_channels": 8},
    "compact": {"num_feat": 8, "num_conv": 2},
    "esrgan": {"num_filters": 8, "num_blocks": 1},
    "safmn": {"dim": 8, "n_blocks": 1},
    "realplksr": {"dim": 16, "n_blocks": 1, "kernel_size": 7},
    "omnisr": {"num_feat": 8, "res_num": 1},
    "swinir": {"embed_dim": 12, "depths": [2], "num_heads": [2], "window_size": 4, "img_size": 16},
}


def tiny(name, scale=2, seed=0, **extra):
    """The tiny ``name`` through params, as a run builds it (the preset, then model.kwargs)."""
    torch.manual_seed(seed)
    arch = model_arch(ModelParams(name=name, kwargs=TINY[name], **extra), scale)
    return build_model(arch["name"], **arch["kwargs"]), arch


def run(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def pairs():
    out = []
    for path in list_images(need(DATA) / "Set5")[:2]:
        hr = crop_to_multiple(read_image(path), 2)[:96, :128]
        out.append((path.name, hr, imresize(hr, 0.5)))
    return out


def test_every_spandrel_architecture_is_listed_with_presets_and_a_source():
    assert set(ZOO) == set(ZOO_ARCHS) and all(PRESETS[name] for name in ZOO_ARCHS)


@pytest.mark.parametrize("name", ZOO_ARCHS)
def test_one_override_gives_the_architecture_at_its_papers_size(name):
    """`-S model.name=NAME` alone, on the project's params.yaml: spandrel's class with the paper's sizes."""
    p = load_params(ROOT / "params.yaml", [f"model.name={name}"])
    arch = model_arch(p.model, p.scale)
    model = build_model(arch["name"], **arch["kwargs"])
    entry = ZOO[name]
    direct = entry.cls(**{**entry.fixed, **next(iter(PRESETS[name].values())), entry.scale_arg: 2})
    assert sum(t.numel() for t in model.parameters()) == sum(t.numel() for t in direct.parameters())
    assert arch["kwargs"]["global_skip"] == "none" and model.not_portable == []
    expected = {"span": 1_824_900, "compact": 600_652, "esrgan": 16_661_059, "safmn": 227_820,
                "realplksr": 7_368_908, "omnisr": 784_604, "swinir": 910_152}[name]
    assert count_parameters(model) == expected  # x2: SPAN's trained form (its deploy form is in docs/)


@pytest.mark.parametrize("name", ZOO_ARCHS)
@pytest.mark.parametrize("scale", [2, 3])
def test_any_input_size_is_upscaled_by_the_scale(name, scale):
    model, _ = tiny(name, scale)
    # spandrel reads every one back but an x3 ESRGAN (its nearest-upsampling x3 block looks like x2 to it)
    odd = ["spandrel cannot read scale=3 (spandrel assumes 2) from the weights"]
    assert model.not_portable == (odd if (name, scale) == ("esrgan", 3) else [])
    with torch.no_grad():
        for h, w in ((13, 17), (24, 40)):
            assert model.eval()(torch.rand(1, 3, h, w)).shape == (1, 3, h * scale, w * scale)


@pytest.mark.parametrize("name", ZOO_ARCHS)
def test_spandrel_opens_best_pt_and_computes_the_same(name, tmp_path):
    model, arch = tiny(name)
    save_checkpoint(tmp_path / "best.pt", model, arch, epoch=1, val_psnr=30.0)
    descriptor = ModelLoader().load_from_file(tmp_path / "best.pt")
    x = torch.rand(1, 3, 24, 32)
    with torch.inference_mode():
        assert (descriptor(x.clone()) - model.eval()(x).clamp(0, 1)).abs().max() <= 1e-5
    ids = {"span": "SPAN", "compact": "Compact", "esrgan": "ESRGAN", "safmn": "SAFMN", "realplksr": "PLKSR",
           "omnisr": "OmniSR", "swinir": "SwinIR"}
    assert descriptor.scale == 2 and descriptor.architecture.id == ids[name]


@pytest.mark.parametrize("name", ZOO_ARCHS)
def test_trains_in_bf16_channels_last_with_its_gradients(name):
    model, _ = tiny(name)
    model.to(memory_format=torch.channels_last).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = torch.nn.functional.l1_loss(model(torch.rand(2, 3, 16, 16).contiguous(memory_format=torch.channels_last)).float(),
                                           torch.rand(2, 3, 32, 32))
    loss.backward()
    trained = [p for p in model.parameters() if p.requires_grad]
    assert torch.isfinite(loss) and all(p.grad is not None and torch.isfinite(p.grad).all() for p in trained)


@pytest.mark.parametrize("name", ZOO_ARCHS)
def test_exports_to_onnx_fp32_and_int8_and_to_spandrel_weights(name, pairs, tmp_path):
    """Parity on images of another size than the traced one, int8 close to fp32, and
    model.safetensors that spandrel loads and runs like srpipe (OmniSR's int8 once hung the quantizer)."""
    model, arch = tiny(name)
    result = export_precisions(model.eval(), 2, tmp_path, ["fp32", "int8"], 17, pairs, 2, 8, 32, 2, arch=arch)
    assert result["max_abs_diff"] < 1e-4
    assert abs(result["int8"]["delta_psnr"]) < 0.5
    lr = pairs[0][2]
    x = torch.from_numpy(np.ascontiguousarray(lr)).permute(2, 0, 1)[None].float() / 255
    got = ort_session(onnx_path(tmp_path, "fp32")).run(None, {"lr": x.numpy()})[0]
    assert got.shape == (1, 3, 2 * lr.shape[0], 2 * lr.shape[1])
    assert result["safetensors"]["file"] == "model.safetensors"
    descriptor = ModelLoader().load_from_file(tmp_path / "model.safetensors")
    with torch.inference_mode():
        assert (descriptor(x.clone()) - model(x).clamp(0, 1)).abs().max() <= 1e-5


@pytest.mark.parametrize("name", ZOO_ARCHS)
def test_self_ensemble_and_tiles(name, pairs):
    model, _ = tiny(name)
    lr = pairs[0][2][:48, :64]
    upscaler = torch_upscaler(model.eval())
    whole = upscaler(lr).astype(int)
    tiled = upscale_tiled(upscaler, lr, 2, 32, 16).astype(int)
    # convolutions alone: the tiles meet exactly; global context (OmniSR's, SAFMN's pooling) moves a few levels
    assert np.abs(whole - tiled).max() <= 8 and np.abs(whole - tiled).mean() < 1
    x = torch.rand(1, 3, 16, 24).numpy()
    ensemble = self_ensemble(torch_forward(model))
    flipped = ensemble(np.ascontiguousarray(x[..., ::-1]))
    assert np.allclose(flipped[..., ::-1], ensemble(x), atol=1e-6)


def test_span_trains_in_its_training_form_and_deploys_the_fused_one():
    model, _ = tiny("span")
    x = torch.rand(1, 3, 20, 28)
    with torch.no_grad():
        trained = model.train()(x)
        deployed = model.eval()(x)
    torch.testing.assert_close(deployed, trained, atol=1e-5, rtol=0)
    assert not any(p.requires_grad for n, p in model.named_parameters() if "eval_conv" in n)
    assert all(p.requires_grad for n, p in model.named_parameters() if "eval_conv" not in n)


def test_compiled_span_step_equals_the_eager_one():
    model, _ = tiny("span")
    compiled, _ = tiny("span")
    x, y = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 32, 32)
    for net, step in ((model, model), (compiled, torch.compile(compiled))):
        torch.nn.functional.l1_loss(step(x), y).backward()
    for a, b in zip(model.parameters(), compiled.parameters()):
        if a.requires_grad:
            torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-4)


def test_a_bicubic_skip_is_srpipes_only_and_spandrel_refuses_it(tmp_path):
    """spandrel's architectures have no bicubic skip: srpipe's weights say so, so that spandrel
    stops instead of running them without it, and export-weights refuses them."""
    model, arch = tiny("compact", global_skip="bicubic")
    assert model.not_portable and "srpipe_only" in model.state_dict()
    save_checkpoint(tmp_path / "best.pt", model, arch)
    with pytest.raises(RuntimeError, match="srpipe_only"):
        ModelLoader().load_from_file(tmp_path / "best.pt")
    code, out = run("export-weights", tmp_path / "best.pt", "--out", tmp_path / "m.safetensors")
    assert code == 1 and "spandrel would run this compact differently: it adds srpipe's bicubic skip" in out
    assert out.count("\n") == 1 and not (tmp_path / "m.safetensors").exists()
    bare = build_model("compact", scale=2, ctor=TINY["compact"])
    bare.load_state_dict({k: v for k, v in model.state_dict().items() if k != "srpipe_only"}, strict=False)
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():  # the skip is the bicubic image, exactly
        assert torch.allclose(model.eval()(x) - bare.eval()(x),
                              torch.nn.functional.interpolate(x, scale_factor=2, mode="bicubic"), atol=1e-6)


def test_arguments_spandrel_cannot_read_back_are_not_portable():
    model, _ = tiny("span")
    assert model.not_portable == []
    odd = build_model("span", scale=2, ctor={"feature_channels": 8, "img_range": 1.0})
    assert odd.not_portable == ["spandrel cannot read img_range=1.0 (spandrel assumes 255.0) from the weights"]


@pytest.mark.parametrize("kwargs,message", [
    ({"feature_chanels": 8}, "model.kwargs: feature_chanels is not an argument of spandrel's SPAN (span); it takes: "),
    ({"feature_channels": 8, "upscale": 4}, "upscales x4, not x2; leave upscale out of model.kwargs"),
])
def test_wrong_kwargs_are_one_line(kwargs, message):
    with pytest.raises(SrpipeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_model("span", scale=2, ctor=kwargs)


def test_params_refuse_kwargs_for_srpipes_own_and_custom_for_spandrels():
    with pytest.raises(ValueError, match="model.kwargs is for spandrel's architectures"):
        ModelParams(name="edsr", kwargs={"num_feat": 8})
    with pytest.raises(ValueError, match="model.preset 'custom' is not one for span; allowed: default"):
        ModelParams(name="span", preset="custom")
    assert ModelParams(name="swinir", preset="classical").sizes()["ctor"]["embed_dim"] == 180
    assert ModelParams(name="compact", kwargs={"num_conv": 8}).sizes() == {
        "global_skip": "none", "ctor": {"num_feat": 64, "num_conv": 8}}
    assert ModelParams(name="span", n_feats=64).unused() == ["model.n_feats"]


def test_the_default_model_is_the_one_runs_saved_before_spandrel():
    """params.yaml's edsr records the same architecture as before model.preset and global_skip took null."""
    p = load_params(ROOT / "params.yaml")
    assert model_arch(p.model, p.scale) == {"name": "edsr", "kwargs": {
        "scale": 2, "n_resblocks": 8, "n_feats": 32, "res_scale": 1.0, "attention": False, "reduction": 16,
        "global_skip": "bicubic", "rgb_mean": None, "img_range": 1.0}}


def test_rcan_exports_in_its_authors_layout_that_spandrel_runs(tmp_path):
    """srpipe's RCAN, without a shift and with BasicSR's (DIV2K's mean, 255), as the original RCAN."""
    sizes = {"scale": 2, "n_resgroups": 2, "n_resblocks": 2, "n_feats": 16, "reduction": 4, "global_skip": "none"}
    for shift in ({}, {"rgb_mean": (0.4488, 0.4371, 0.4040), "img_range": 255.0}):
        torch.manual_seed(0)
        model = build_model("rcan", **sizes, **shift)
        save_checkpoint(tmp_path / "rcan.pt", model, {"name": "rcan", "kwargs": {**sizes, **shift}})
        code, out = run("export-weights", tmp_path / "rcan.pt", "--out", tmp_path / "rcan.pth")
        assert code == 0, out
        descriptor = ModelLoader().load_from_file(tmp_path / "rcan.pth")
        assert descriptor.architecture.id == "RCAN" and ("sub_mean.weight" in descriptor.model.state_dict()) == bool(shift)
        x = torch.rand(1, 3, 24, 24)
        with torch.inference_mode():
            assert (descriptor(x.clone()) - model.eval()(x).clamp(0, 1)).abs().max() <= 1e-5
    model = build_model("rcan", **{**sizes, "global_skip": "bicubic"})
    save_checkpoint(tmp_path / "skip.pt", model, {"name": "rcan", "kwargs": {**sizes, "global_skip": "bicubic"}})
    code, out = run("export-weights", tmp_path / "skip.pt", "--out", tmp_path / "skip.pth")
    assert code == 1 and "bicubic skip" in out and not (tmp_path / "skip.pth").exists()


def test_edsr_has_no_spandrel_form_and_export_onnx_says_so(tmp_path):
    kwargs = {"scale": 2, "n_resblocks": 1, "n_feats": 8}
    save_checkpoint(tmp_path / "edsr.pt", build_model("edsr", **kwargs), {"name": "edsr", "kwargs": kwargs})
    code, out = run("export-weights", tmp_path / "edsr.pt", "--out", tmp_path / "edsr.safetensors")
    assert code == 1 and "spandrel has no EDSR architecture" in out and "the ONNX file (srpipe export-onnx)" in out


def spandrel_file(tmp_path, name, suffix, scale=2):
    """A model built by spandrel's own class (random weights), saved as other tools save them."""
    import importlib

    torch.manual_seed(1)
    if name == "PLKSR":  # an architecture srpipe does not train: imported as spandrel's
        net = importlib.import_module("spandrel.architectures.PLKSR").PLKSR(dim=16, n_blocks=2, kernel_size=7,
                                                                            upscaling_factor=scale)
    else:
        entry = ZOO[name]
        net = entry.cls(**{**entry.fixed, **TINY[name], entry.scale_arg: scale})
    state = net.state_dict()
    path = tmp_path / f"{name}{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    elif suffix == ".ckpt":
        torch.save({"state_dict": state, "epoch": 3}, path)  # as a Lightning-style trainer wraps it
    else:
        torch.save({"params_ema": state} if suffix == ".pth" else state, path)
    return path


@pytest.mark.parametrize("name,suffix,scale", [("compact", ".pth", 2), ("span", ".safetensors", 4),
                                               ("esrgan", ".ckpt", 2), ("PLKSR", ".pt", 2)])
def test_import_then_evaluate_scores_like_spandrels_own_model(tmp_path, monkeypatch, shared_data, name, suffix, scale):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("eval:\n  lpips: false\n")
    src = spandrel_file(tmp_path, name, suffix, scale)
    code, out = run("import-weights", src, "--out", "m.pt")
    assert code == 0, out
    assert f"x{scale}" in out and "parameters, found by spandrel" in out
    set5 = shared_data / "Set5"
    assert run("evaluate", "--hr-dir", set5, "--checkpoint", "m.pt", "--out", "ours.json")[0] == 0
    assert run("evaluate", "--hr-dir", set5, "--checkpoint", src, "--out", "direct.json")[0] == 0  # no import needed
    from srpipe.evaluate import score_source, summarize
    from srpipe.upscalers import as_upscaler

    descriptor = ModelLoader().load_from_file(src)
    theirs = as_upscaler(lambda x: descriptor(torch.from_numpy(x)).numpy(), scale)
    reference = summarize(score_source(theirs, str(set5), scale, crop_border=scale))
    for f in ("ours.json", "direct.json"):
        scores = json.loads((tmp_path / f).read_text())
        assert scores["psnr"] == pytest.approx(reference["psnr"], abs=1e-6)
        assert scores["ssim"] == pytest.approx(reference["ssim"], abs=1e-6)


def test_an_imported_model_exports_to_onnx_and_fine_tunes(tmp_path, pairs):
    src = spandrel_file(tmp_path, "compact", ".safetensors")
    code, out = run("import-weights", src, "--out", tmp_path / "m.pt")
    assert code == 0 and "fine-tune it with: -S scale=2 -S model.name=compact -S 'model.kwargs={num_conv: 2, num_feat: 8}'" in out
    opened = open_model_file(tmp_path / "m.pt")
    result = export_precisions(opened.model, 2, tmp_path / "onnx", ["fp32"], 17, pairs, 2, 8, 32, 2, arch=opened.arch)
    assert result["max_abs_diff"] < 1e-5 and "file" in result["safetensors"]
    from srpipe.training.state import load_matching

    torch.manual_seed(5)
    fresh, _ = tiny("compact")
    loaded, skipped = load_matching(fresh, src)  # train.init_from takes the community file itself
    assert skipped == [] and len(loaded) == len(fresh.state_dict())
    assert all(torch.equal(v, opened.model.state_dict()[k]) for k, v in fresh.state_dict().items())


@pytest.mark.parametrize("content,message", [
    ({"conv.weight": torch.zeros(3, 3, 3, 3)}, "is not an srpipe checkpoint and spandrel does not recognise its tensors"),
    ([1, 2], "holds no weights srpipe knows (list)"),
])
def test_weights_nobody_knows_are_one_line(tmp_path, content, message):
    torch.save(content, tmp_path / "odd.pth")
    code, out = run("import-weights", tmp_path / "odd.pth", "--out", tmp_path / "m.pt")
    assert code == 1 and message in out and str(tmp_path / "odd.pth") in out and out.count("\n") == 1


def test_a_denoiser_is_not_an_upscaler(tmp_path):
    src = tmp_path / "denoise.pth"
    entry = ZOO["compact"]
    torch.save(entry.cls(num_feat=8, num_conv=2, upscale=1).state_dict(), src)
    code, out = run("import-weights", src, "--out", tmp_path / "m.pt")
    assert code == 1 and "for Restoration (scale 1); srpipe runs super-resolution models" in out


def test_train_help_says_where_each_architecture_comes_from():
    code, out = run("train", "--help")
    assert code == 0
    text = " ".join(out.split())
    for name in ("edsr", "rcan", "rlfn", *ZOO_ARCHS):
        assert f"{name}: " in text
    assert "SPAN (Wan et al., 2024), NTIRE 2024 efficient-SR winner: 48 channels" in text


def test_the_export_stage_writes_spandrel_weights_where_spandrel_runs_the_model(tmp_path, monkeypatch, shared_data):
    """export-onnx beside the ONNX files: model.safetensors for SPAN, a reason in export.json for EDSR."""
    from srpipe.data import prepare, source_files

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("eval:\n  lpips: false\nexport:\n  precision: [fp32]\n  check_images: 1\n")
    prepare(source_files(str(shared_data / "Set5"), 2), tmp_path / "valid", 2)
    span, arch = tiny("span")
    save_checkpoint(tmp_path / "span.pt", span, arch)
    kwargs = {"scale": 2, "n_resblocks": 1, "n_feats": 8}
    save_checkpoint(tmp_path / "edsr.pt", build_model("edsr", **kwargs), {"name": "edsr", "kwargs": kwargs})
    for name in ("span", "edsr"):
        code, out = run("export-onnx", "--checkpoint", f"{name}.pt", "--valid", "valid", "--out", name,
                        "--metrics", f"{name}.json")
        assert code == 0, out
    weights = {name: json.loads((tmp_path / f"{name}.json").read_text())["safetensors"] for name in ("span", "edsr")}
    assert weights["span"]["file"] == "model.safetensors" and weights["span"]["max_abs_diff_spandrel"] <= 1e-5
    assert ModelLoader().load_from_file(tmp_path / "span" / "model.safetensors").architecture.id == "SPAN"
    assert "spandrel has no EDSR architecture" in weights["edsr"]["skipped"]
    assert not (tmp_path / "edsr" / "model.safetensors").exists()
