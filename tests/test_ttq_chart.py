"""benchmarks/ttq_chart.py: which curves --highlight leaves in colour, and the chart it writes."""

import importlib.util
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("ttq_chart", ROOT / "benchmarks" / "ttq_chart.py")
ttq_chart = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ttq_chart)

NAMES = ["edsr-8x32", "edsr-8x32-lr2e-3", "edsr-10x32-i14250", "edsr-8x32-b24-i12480", "recipe-seed1"]


def test_no_highlight_greys_nothing():
    assert ttq_chart.muted(NAMES, []) == set()


def test_highlight_globs_keep_only_matching_curves_in_colour():
    grey = ttq_chart.muted(NAMES, ["edsr-10x32-*", "*-seed1"])
    assert grey == {"edsr-8x32", "edsr-8x32-lr2e-3", "edsr-8x32-b24-i12480"}
    assert ttq_chart.muted(NAMES, ["edsr-8x32"]) == set(NAMES) - {"edsr-8x32"}  # a glob matches whole names


def test_chart_with_grey_curves_is_written(tmp_path):
    curve = pd.DataFrame({"minutes": [5.0, 10.0], "set5_psnr": [37.0, 37.3]})
    lines = {name: curve + i * 0.01 for i, name in enumerate(NAMES)}
    lines["VDSR"] = pd.DataFrame({"minutes": [None], "set5_psnr": [37.53]})
    out = tmp_path / "chart.png"
    ttq_chart.render(lines, "set5_psnr", out, 36.6, ttq_chart.muted(NAMES, ["edsr-10x32-*"]))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["chart.png"]  # no temporary file left
