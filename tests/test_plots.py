"""`dvc plots show`: exactly the plots dvc.yaml defines, on a page that renders with no network
(the offline template of srpipe.plots_page, checked in headless Chromium)."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from srpipe.plots_page import write_template

from .conftest import ROOT

# what `make install` writes and names in .dvc/config.local
BUILT_TEMPLATE = ROOT / "build" / "dvc-plots.html"
TRAIN_LOG = """epoch,loss,val_psnr,val_ssim,lr,step
1,0.090,27.1,0.80,0.0005,3
2,0.070,28.4,0.83,0.0004,6
3,0.060,29.0,0.85,0.0003,9
"""
LATENCY = """size,input_pixels,onnxruntime-fp32,onnxruntime-int8,torch-fp32
24x24,576,1.0,0.6,2.0
32x40,1280,2.0,1.1,3.9
64x64,4096,6.0,3.0,11.0
"""
# a fresh profile, nothing in the background, and no name resolves: a page that needs the network stays blank
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
                  "--host-resolver-rules=MAP * ~NOTFOUND", "--virtual-time-budget=15000"]


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    pytest.skip("no Chromium to render the page in (Debian: apt-get install chromium; .ci/run installs it)")


def run(cwd, *cmd, timeout=120):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "DVC_NO_ANALYTICS": "1"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{proc.stdout}{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """The Makefile's template, or one made now the same way."""
    if BUILT_TEMPLATE.is_file():
        return BUILT_TEMPLATE
    return write_template(tmp_path_factory.mktemp("template") / "dvc-plots.html")


@pytest.fixture(scope="module")
def page(template, tmp_path_factory) -> Path:
    """`dvc plots show` in a repository with the project's dvc.yaml, its plot files and the
    template named in .dvc/config.local, as `make install` does."""
    repo = tmp_path_factory.mktemp("repo")
    run(repo, "git", "init", "-q")
    run(repo, "dvc", "init", "-q")
    shutil.copy(ROOT / "dvc.yaml", repo / "dvc.yaml")
    (repo / "metrics").mkdir()
    (repo / "metrics" / "train_log.csv").write_text(TRAIN_LOG)
    (repo / "metrics" / "benchmark_latency.csv").write_text(LATENCY)
    crop = repo / "stages" / "evaluate" / "crops" / "set5" / "baby.png"  # what evaluate writes: an image plot
    crop.parent.mkdir(parents=True)
    cv2.imwrite(str(crop), np.random.default_rng(0).integers(0, 256, (64, 200, 3), dtype=np.uint8))
    run(repo, "dvc", "config", "--local", "plots.html_template", str(template))
    run(repo, "dvc", "plots", "show", "-o", "plots")
    return repo / "plots" / "index.html"


def defined_plots() -> list[str]:
    """The ids DVC gives the top-level plots of dvc.yaml (spaces become underscores)."""
    plots = yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"]
    return [name.replace(" ", "_") for entry in plots for name in entry]


def test_the_page_holds_the_defined_plots_only_and_loads_nothing(page):
    html = page.read_text(encoding="utf-8")
    assert re.findall(r"vegaEmbed\('#([^']+)'", html) == defined_plots()
    assert page_images(html) == ["static/workspace_stages_evaluate_crops_set5_baby.png"]
    assert defined_plots() == ["Validation_PSNR", "Training_loss", "Latency_vs_input_size"]
    assert not re.search(r"<script[^>]*\ssrc=", html), "the page loads a script from elsewhere"
    assert "vega@5" in html and "vega-lite@5" in html and "vega-embed@6" in html


def test_the_page_renders_its_charts_with_no_network(page, tmp_path):
    browser = chromium()
    url = page.as_uri()
    dom = run(tmp_path, browser, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", url)
    # vega-embed marks each container it filled and draws the chart into a canvas inside it
    embedded = re.findall(r'<div id="([^"]+)" class="vega-embed', dom)
    assert embedded == defined_plots()
    canvases = [(int(w), int(h)) for w, h in re.findall(r'<canvas width="(\d+)" height="(\d+)" class="marks"', dom)]
    assert len(canvases) == len(embedded) and all(w > 200 and h > 200 for w, h in canvases), canvases

    shot = tmp_path / "page.png"
    run(tmp_path, browser, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile2'}", "--window-size=1000,1200",
        f"--screenshot={shot}", url)
    pixels = cv2.imread(str(shot)).astype(int)
    ink = (pixels.min(axis=2) < 200).mean()  # axes, grid, text and lines
    colored = (pixels.max(axis=2) - pixels.min(axis=2) > 60).sum()  # the data lines, legend and sliders
    assert ink > 0.01, f"the page is blank: {ink:.2%} of it drawn"
    assert colored > 2000, f"no data lines drawn: {colored} colored pixels"
    # the three charts lie in different quarters of the page: two side by side, one below
    height, width = pixels.shape[:2]
    for rows, cols in ((slice(0, height // 3), slice(0, width // 2)), (slice(0, height // 3), slice(width // 2, None)),
                       (slice(height // 3, 2 * height // 3), slice(0, width // 2))):
        part = pixels[rows, cols]
        assert (part.max(axis=2) - part.min(axis=2) > 60).sum() > 300, "a chart has no data line"


def page_images(html: str) -> list[str]:
    """The sources of a page's ``<img>`` elements (not the vega library's own template text)."""
    return [src for src in re.findall(r'<img src="([^"]+)"', html) if "${" not in src]


def images_drawn(page: Path, tmp_path: Path, window: str = "1800,3000") -> dict[str, bool]:
    """Each ``<img>`` of ``page`` (its src) -> whether headless Chromium drew it: its file found,
    pixel for pixel, in a screenshot of the page (a broken image draws an icon instead)."""
    browser = chromium()
    sources = page_images(page.read_text(encoding="utf-8"))
    shot = tmp_path / "images.png"
    run(tmp_path, browser, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile-images'}",
        f"--window-size={window}", f"--screenshot={shot}", page.as_uri())
    screen = cv2.imread(str(shot))
    drawn = {}
    for src in sources:
        image = cv2.imread(str(page.parent / src))
        fits = image is not None and all(a <= b for a, b in zip(image.shape[:2], screen.shape[:2]))
        drawn[src] = fits and cv2.matchTemplate(screen, image, cv2.TM_SQDIFF_NORMED).min() < 1e-3
    return drawn
