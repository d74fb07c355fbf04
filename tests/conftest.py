import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
DATA = SHARED / "data"
BACKBONE = SHARED / "weights" / "lpips-alexnet-features.pth"

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
