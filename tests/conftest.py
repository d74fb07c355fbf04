import os
from pathlib import Path

import numpy as np
import onnx
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
DATA = SHARED / "data"
BACKBONE = SHARED / "weights" / "lpips-alexnet-features.pth"
VGG16 = SHARED / "weights" / "vgg16-features.pth"

os.environ["DVC_NO_ANALYTICS"] = "1"


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is not present (tests expect ../shared beside the project)")
    return path


@pytest.fixture
def shared_data() -> Path:
    return need(DATA)


@pytest.fixture
def backbone() -> Path:
    return need(BACKBONE)


@pytest.fixture
def vgg16() -> Path:
    return need(VGG16)


def int8_weights(path) -> np.ndarray:
    """Every int8 tensor of a QDQ ONNX model: its quantized conv weights (activations are uint8, biases int32)."""
    tensors = onnx.load(str(path)).graph.initializer
    return np.concatenate([onnx.numpy_helper.to_array(t).ravel() for t in tensors if t.data_type == onnx.TensorProto.INT8])


def load_model(path):
    """(model, checkpoint content) of a model file, through the one door every command uses."""
    from srpipe.modelfile import open_model_file

    opened = open_model_file(path)
    return opened.model, opened.checkpoint
