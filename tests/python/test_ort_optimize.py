"""`onnxq optimize` keeps the float function, checked by ONNX Runtime (also
on the models tract cannot run), and its output passes onnx's full checker."""

import subprocess

import numpy as np
import onnx
import pytest

from conftest import bundled_models
from test_ort_roundtrip import run_ort


@pytest.mark.parametrize("model", bundled_models(), ids=lambda p: p.stem)
def test_optimize_preserves_outputs(model, onnxq_bin, tmp_path):
    out = tmp_path / model.name
    subprocess.run([onnxq_bin, "optimize", str(model), "-o", str(out)], check=True, capture_output=True)
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)
    feeds = dict(np.load(model.with_suffix(".sample.npz")))
    want = run_ort(model, feeds)
    got = run_ort(out, feeds)
    for w, g in zip(want, got):
        scale = max(float(np.abs(w).max()), np.finfo(np.float32).tiny)
        assert float(np.abs(w.astype(np.float64) - g).max()) <= 1e-5 * scale
    # BatchNormalization after a Conv is gone.
    ops = [n.op_type for n in onnx.load(str(out)).graph.node]
    if model.stem in ("digits_cnn", "residual_block", "inverted_residual"):
        assert "BatchNormalization" not in ops
