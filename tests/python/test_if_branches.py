"""Quantization inside If branches, checked by independent engines: `onnxq quantize` on
models/branches/digits_branches.onnx (the digits MLP behind an If on the sample rate, as
silero-VAD switches networks) gives a model that passes onnx's full checker, that ONNX
Runtime runs on both branches with the float model's top-1 accuracy, whose branches hold
int8 weights and Q/DQ pairs, and on which `onnxq run` gives ONNX Runtime's outputs."""

import subprocess

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from conftest import MODELS
from test_executor_ort import npy_name, run_onnxq

MODEL = MODELS / "branches" / "digits_branches.onnx"
CALIB = MODELS / "branches" / "digits_branches.calib.npz"


@pytest.fixture(scope="module")
def quantized(onnxq_bin, tmp_path_factory):
    out = tmp_path_factory.mktemp("branches") / "q.onnx"
    subprocess.run([onnxq_bin, "quantize", str(MODEL), "--data", str(CALIB), "-o", str(out)],
                   check=True, capture_output=True, text=True)
    return out


def ops_per_graph(g, acc=None):
    acc = {} if acc is None else acc
    acc[g.name] = [n.op_type for n in g.node]
    for n in g.node:
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                ops_per_graph(a.g, acc)
    return acc


def test_checker_and_int8_in_every_branch(quantized):
    m = onnx.load(str(quantized))
    onnx.checker.check_model(m, full_check=True)
    ops = ops_per_graph(m.graph)
    for branch in ("net16k", "net8k", "last_a"):
        assert "QuantizeLinear" in ops[branch] and "DequantizeLinear" in ops[branch], (branch, ops[branch])
    # The nested If is on `sr > 0`: the calibration data never takes its else branch, whose
    # activations stay float (its weight is still stored int8).
    # (Read by a float op, the weight is Cast → Mul of int8, which engines fold at load.)
    assert "QuantizeLinear" not in ops["last_b"] and "Cast" in ops["last_b"], ops["last_b"]


@pytest.mark.parametrize("sr", [16000, 8000])
def test_ort_accuracy_and_onnxq_matches_ort(sr, quantized, onnxq_bin, tmp_path):
    ev = np.load(MODELS / "mlp.eval.npz")
    feeds = {"input": ev["input"], "sr": np.array(sr, np.int64)}
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    f = ort.InferenceSession(str(MODEL), so, providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    q = ort.InferenceSession(str(quantized), so, providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    acc = lambda y: float((y.argmax(1) == ev["labels"]).mean())
    assert acc(q) >= acc(f) - 0.005, (acc(q), acc(f))
    sqnr = 10 * np.log10((f.astype(np.float64) ** 2).sum() / ((f - q).astype(np.float64) ** 2).sum())
    assert sqnr > 30, sqnr
    got = np.load(run_onnxq(onnxq_bin, quantized, feeds, tmp_path) / npy_name("logits"))
    # The logits are dequantized int8: a difference is a whole output step.
    exact = float((got == q).mean())
    assert exact >= 0.999, exact


def test_dynamic_mode_in_branches_runs_in_ort(onnxq_bin, tmp_path):
    out = tmp_path / "d.onnx"
    subprocess.run([onnxq_bin, "quantize", str(MODEL), "--mode", "dynamic", "-o", str(out)],
                   check=True, capture_output=True, text=True)
    m = onnx.load(str(out))
    onnx.checker.check_model(m, full_check=True)
    ops = ops_per_graph(m.graph)
    assert all("MatMulInteger" in ops[b] for b in ("net16k", "net8k", "last_a", "last_b")), ops
    ev = np.load(MODELS / "mlp.eval.npz")
    for sr in (16000, 8000):
        feeds = {"input": ev["input"], "sr": np.array(sr, np.int64)}
        f = ort.InferenceSession(str(MODEL), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
        q = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
        acc = lambda y: float((y.argmax(1) == ev["labels"]).mean())
        assert acc(q) >= acc(f) - 0.005, (sr, acc(q), acc(f))
