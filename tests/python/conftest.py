import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
MODELS = ROOT / "models"


def bundled_models():
    return sorted(MODELS.glob("*.onnx"))


@pytest.fixture(scope="session")
def onnxq_bin():
    b = os.environ.get("ONNXQ_BIN", str(ROOT / "target" / "debug" / "onnxq"))
    assert pathlib.Path(b).exists(), f"build onnxq first: {b} is missing"
    return b
