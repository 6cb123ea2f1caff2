"""`onnxq convert` round trips, checked by independent tools: onnx's full
checker accepts the output, and ONNX Runtime computes bit-identical outputs
on the original and the converted model."""

import subprocess

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from conftest import bundled_models


def run_ort(path, feeds):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


@pytest.mark.parametrize("model", bundled_models(), ids=lambda p: p.stem)
def test_convert_preserves_outputs_bit_exactly(model, onnxq_bin, tmp_path):
    out = tmp_path / model.name
    subprocess.run([onnxq_bin, "convert", str(model), "-o", str(out)], check=True)
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)
    feeds = dict(np.load(model.with_suffix(".sample.npz")))
    want = run_ort(model, feeds)
    got = run_ort(out, feeds)
    assert len(want) == len(got)
    for w, g in zip(want, got):
        assert w.dtype == g.dtype and w.shape == g.shape
        assert w.tobytes() == g.tobytes()
    # A second round trip is byte-identical to the first.
    out2 = tmp_path / ("again_" + model.name)
    subprocess.run([onnxq_bin, "convert", str(out), "-o", str(out2)], check=True)
    assert out.read_bytes() == out2.read_bytes()


@pytest.mark.parametrize("model", bundled_models(), ids=lambda p: p.stem)
def test_inspect_runs(model, onnxq_bin):
    r = subprocess.run([onnxq_bin, "inspect", str(model)], check=True, capture_output=True, text=True)
    assert "op histogram:" in r.stdout


def test_external_data_written_by_onnx_is_read(onnxq_bin, tmp_path):
    """A model saved by the onnx package with external data (the form large
    exports take) converts with its values intact."""
    src = onnx.load(str(bundled_models()[0].parent / "digits_cnn.onnx"))
    ext_dir = tmp_path / "ext"
    ext_dir.mkdir()
    onnx.save_model(src, str(ext_dir / "m.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="m.weights", size_threshold=256)
    assert (ext_dir / "m.weights").stat().st_size > 50_000
    out = tmp_path / "converted.onnx"
    subprocess.run([onnxq_bin, "convert", str(ext_dir / "m.onnx"), "-o", str(out)], check=True)
    feeds = dict(np.load(bundled_models()[0].parent / "digits_cnn.sample.npz"))
    want = run_ort(ext_dir / "m.onnx", feeds)
    got = run_ort(out, feeds)
    assert want[0].tobytes() == got[0].tobytes()
