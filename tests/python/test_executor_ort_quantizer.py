"""`onnxq run` on models quantized by ONNX Runtime's own quantizer (a third-party tool), as a
new user would try it.

- QDQ format (u8 and s8 activations, s8 per-channel weights): compared with ONNX Runtime
  running the graph as written (optimisations off: every op in float around exact Q/DQ), which
  is the ONNX meaning of the model: run unlowered (`--lowering off`), >= 99.9 % exact and
  <= 1 LSB; lowered (default), >= 99.9 % exact, and a 1-LSB requantization difference inside
  the model may grow by the time it reaches the output (<= 4 LSB).
- QOperator format with s8 activations: compared with ONNX Runtime's default session (its s8s8
  kernels are exact). u8 activations are not compared with ONNX Runtime: on CPUs without VNNI
  its u8×s8 kernels saturate `vpmaddubsw` pair sums (its quantizer warns about this), so it
  departs from the ONNX reference evaluator by tens of LSB; `test_u8s8_matmul_is_exact`
  checks onnxq against `onnx.reference` there instead.
"""

import subprocess

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx.reference import ReferenceEvaluator
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

from conftest import MODELS
from test_executor_ort import calib_slice, npy_name, output_scale, run_onnxq

MODELS_OK = ["digits_cnn", "inverted_residual", "mlp", "residual_block", "transformer_layer", "lstm"]


class Reader(CalibrationDataReader):
    def __init__(self, name):
        data = calib_slice(name, 16)
        self.it = iter([{k: v[i:i + 1] for k, v in data.items()} for i in range(16)])

    def get_next(self):
        return next(self.it, None)


def ort_quantize(name, out, fmt, act):
    quantize_static(str(MODELS / f"{name}.onnx"), str(out), Reader(name), quant_format=fmt, activation_type=act,
                    weight_type=QuantType.QInt8, per_channel=True)


def compare(name, model, feeds, onnxq_bin, tmp_path, level, *flags, max_lsb=1):
    so = ort.SessionOptions()
    so.graph_optimization_level = level
    so.log_severity_level = 3
    s = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
    refs = s.run(None, feeds)
    out = run_onnxq(onnxq_bin, model, feeds, tmp_path, *flags)
    m = onnx.load(str(model))
    for o, ref in zip(s.get_outputs(), refs):
        got = np.load(out / npy_name(o.name))
        scale = output_scale(m, o.name)
        if scale is None:  # a float output (HardSwish after the last DQ)
            scale = float(np.abs(ref).max()) / 127 or 1.0
        lsb = np.round(np.abs(got.astype(np.float64) - ref) / scale)
        exact = float(np.mean(lsb == 0))
        print(f"{model.name}/{o.name} {' '.join(flags)}: exact {exact * 100:.4f} %, max {lsb.max():.0f} LSB")
        assert exact >= 0.999 and lsb.max() <= max_lsb, (exact, lsb.max())


@pytest.mark.parametrize("act", ["u8", "s8"])
@pytest.mark.parametrize("name", MODELS_OK)
def test_ort_qdq_model(name, act, onnxq_bin, tmp_path):
    if name == "lstm":
        pytest.skip("ONNX Runtime's quantizer writes an invalid model for lstm (DQ `axis` at opset 11)")
    q = tmp_path / f"{name}.qdq.onnx"
    ort_quantize(name, q, QuantFormat.QDQ, QuantType.QUInt8 if act == "u8" else QuantType.QInt8)
    off = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    compare(name, q, calib_slice(name), onnxq_bin, tmp_path, off, "--lowering", "off")
    compare(name, q, calib_slice(name), onnxq_bin, tmp_path, off, max_lsb=4)


@pytest.mark.parametrize("name", MODELS_OK)
def test_ort_qoperator_model_s8(name, onnxq_bin, tmp_path):
    q = tmp_path / f"{name}.qop.onnx"
    ort_quantize(name, q, QuantFormat.QOperator, QuantType.QInt8)
    if name == "transformer_layer":
        r = subprocess.run([onnxq_bin, "run", str(q), "--input", str(MODELS / f"{name}.sample.npz")],
                           capture_output=True, text=True)
        assert r.returncode != 0 and "QLinearSoftmax" in r.stderr, r.stderr
        return
    compare(name, q, calib_slice(name), onnxq_bin, tmp_path, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)


def test_u8s8_matmul_is_exact(onnxq_bin, tmp_path):
    """The first QLinearMatMul of ORT's u8/s8 QOperator mlp, against onnx's reference evaluator."""
    q = tmp_path / "mlp.qop.onnx"
    ort_quantize("mlp", q, QuantFormat.QOperator, QuantType.QUInt8)
    m = onnx.load(str(q))
    first = next(n for n in m.graph.node if n.op_type == "QLinearMatMul")
    sub = tmp_path / "sub.onnx"
    onnx.utils.extract_model(str(q), str(sub), ["input"], [first.output[0]])
    feeds = calib_slice("mlp")
    want = ReferenceEvaluator(str(sub)).run(None, feeds)[0]
    got = np.load(run_onnxq(onnxq_bin, sub, feeds, tmp_path) / npy_name(first.output[0]))
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, want)
