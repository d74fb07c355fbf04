# `make demo`: install into .venv and run the whole pipeline on the bundled sample photos.
# `make test`: install (with the dev extra) and run the test suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch and torchvision are installed together so pip picks a matching pair (lpips needs both).
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1

export PATH := $(CURDIR)/$(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1
# Air-gapped machines: a local LPIPS AlexNet backbone, used when present (see docs/evaluation.md).
LPIPS_LOCAL := $(abspath $(wildcard ../shared/weights/lpips-alexnet-features.pth))
ifneq ($(LPIPS_LOCAL),)
export SRPIPE_LPIPS_BACKBONE ?= $(LPIPS_LOCAL)
endif
# ... and ImageNet VGG16's convolutions, for DISTS.
VGG16_LOCAL := $(abspath $(wildcard ../shared/weights/vgg16-features.pth))
ifneq ($(VGG16_LOCAL),)
export SRPIPE_VGG16_BACKBONE ?= $(VGG16_LOCAL)
endif

.PHONY: install install-dev plots-page demo test clean

install: $(VENV)/.installed plots-page
install-dev: $(VENV)/.installed-dev plots-page

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install $(TORCH_SPEC)
	$(BIN)/python -m pip install -e .
	touch $@

# basicsr (BasicSR, for the import parity tests and benchmarks/basicsr_peer.py) is an sdist whose
# requirements add opencv-python and tb-nightly, which install the same cv2 and tensorboard
# modules as srpipe's opencv-python-headless and tensorboard: --no-deps (srpipe's dependencies
# cover everything it imports). --no-build-isolation: its setup.py asks for torch to build, which
# an isolated build would install a second time.
BASICSR_SPEC ?= basicsr==1.4.2

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/python -m pip install -e ".[dev]"
	$(BIN)/python -m pip install --no-deps --no-build-isolation "$(BASICSR_SPEC)"
	touch $@

# `dvc plots show` offline: vega, vega-lite and vega-embed from the npm registry (`npm pack`), inlined
# into DVC's page template, which .dvc/config.local names (without it, DVC's page loads them from a CDN).
PLOTS_PAGE := build/dvc-plots.html
plots-page: $(PLOTS_PAGE)

$(PLOTS_PAGE): srpipe/plots_page.py | $(VENV)/.installed
	@if $(BIN)/python -m srpipe.plots_page $@; then dvc config --local plots.html_template ../$@; \
	else echo "make: no offline plots page (see above); dvc plots show will load vega from a CDN"; fi

demo: install
	dvc repro
	dvc metrics show metrics/evaluate.json
	dvc metrics show metrics/export.json
	dvc plots show
	@echo "All metrics: dvc metrics show. Curves: open dvc_plots/index.html"

# .ci/run also installs Chromium, for the test that renders the plots page (skipped without it)
test: install-dev
	$(BIN)/python -m pytest

clean:
	rm -rf data/prepared data/patches stages/*/ metrics/*.json metrics/*.csv dvc_plots
