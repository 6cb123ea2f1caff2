"""`onnxq run` (the native executor) against ONNX Runtime on the bundled models.

Quantized models (from `onnxq quantize`): outputs compared in the quantized domain (in units of
the last DequantizeLinear's scale): >= 99.9 % of elements exactly equal, none more than 1 LSB
apart. Run on the sample inputs and on a larger slice of the calibration set; the exact-match
rate is printed (`pytest -s`). Float models: within 1e-4 relative.
"""

import subprocess

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from conftest import MODELS
from test_ort_quantize import quantize

QUANTIZABLE = ["digits_cnn", "inverted_residual", "lstm", "mlp", "residual_block", "transformer_layer"]


def npy_name(output_name):
    """The file name `onnxq run -o` uses for an output."""
    s = "".join(c if c.isalnum() or c in ".-_" else "_" for c in output_name)
    return s.lstrip(".") + ".npy"


def run_onnxq(onnxq_bin, model, feeds, tmp_path, *extra):
    inp = tmp_path / "inputs.npz"
    np.savez(inp, **feeds)
    out = tmp_path / "out"
    subprocess.run([onnxq_bin, "run", str(model), "--input", str(inp), "-o", str(out), *extra],
                   check=True, capture_output=True, text=True)
    return out


def run_ort_session(model, feeds):
    # Default session options: graph_optimization_level = ORT_ENABLE_ALL (QDQ fusions on).
    s = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return [o.name for o in s.get_outputs()], s.run(None, feeds)


def calib_slice(name, n=64):
    npy = MODELS / f"{name}.calib.npy"
    if npy.exists():
        return {"input": np.load(npy)[:n]}
    return {k: v[:n] for k, v in np.load(MODELS / f"{name}.calib.npz").items()}


def output_scale(model, name):
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    producer = next(n for n in g.node if name in n.output)
    if producer.op_type != "DequantizeLinear":
        return None
    return float(onnx.numpy_helper.to_array(inits[producer.input[1]]).reshape(-1)[0])


@pytest.mark.parametrize("data", ["sample", "calib"])
@pytest.mark.parametrize("name", QUANTIZABLE)
def test_quantized_outputs_equal_ort(name, data, onnxq_bin, tmp_path):
    q = tmp_path / f"{name}.int8.onnx"
    quantize(onnxq_bin, name, q)
    feeds = dict(np.load(MODELS / f"{name}.sample.npz")) if data == "sample" else calib_slice(name)
    out = run_onnxq(onnxq_bin, q, feeds, tmp_path)
    names, refs = run_ort_session(q, feeds)
    model = onnx.load(str(q))
    for oname, ref in zip(names, refs):
        got = np.load(out / npy_name(oname))
        assert got.shape == ref.shape and got.dtype == ref.dtype, (got.shape, ref.shape)
        scale = output_scale(model, oname)
        if scale is None:
            # A float tail after the last DequantizeLinear (the transformer's
            # LayerNorm stays float): the integer part must agree exactly, the
            # float ops to float rounding.
            err = float(np.max(np.abs(got.astype(np.float64) - ref)) / max(float(np.max(np.abs(ref))), 1e-30))
            exact = float(np.mean(got == ref))
            print(f"{name}/{oname} ({data}, {got.size} elements, float tail): bit-equal {exact * 100:.4f} %, "
                  f"max error {err:.2e} x max|output|")
            assert err <= 1e-5, f"{name}/{oname}: max error {err:e} x max|output|"
            continue
        lsb = np.round(np.abs(got.astype(np.float64) - ref) / scale)
        exact = float(np.mean(lsb == 0))
        print(f"{name}/{oname} ({data}, {got.size} elements): exact {exact * 100:.4f} %, max {lsb.max():.0f} LSB")
        assert exact >= 0.999 and lsb.max() <= 1, f"{name}/{oname}: exact {exact}, max {lsb.max()} LSB"


@pytest.mark.parametrize("name", QUANTIZABLE)
def test_float_model_matches_ort(name, onnxq_bin, tmp_path):
    model = MODELS / f"{name}.onnx"
    feeds = dict(np.load(MODELS / f"{name}.sample.npz"))
    out = run_onnxq(onnxq_bin, model, feeds, tmp_path)
    names, refs = run_ort_session(model, feeds)
    for oname, ref in zip(names, refs):
        got = np.load(out / npy_name(oname))
        err = float(np.max(np.abs(got - ref) / np.maximum(np.abs(ref), 1.0)))
        print(f"{name}/{oname}: max rel err {err:.2e}")
        assert err <= 1e-4, f"{name}/{oname}: rel err {err}"


def test_control_flow_is_refused_clearly(onnxq_bin, tmp_path):
    feeds = dict(np.load(MODELS / "control_flow.sample.npz"))
    np.savez(tmp_path / "in.npz", **feeds)
    r = subprocess.run([onnxq_bin, "run", str(MODELS / "control_flow.onnx"), "--input", str(tmp_path / "in.npz")],
                       capture_output=True, text=True)
    assert r.returncode != 0
    assert "control flow" in r.stderr and "If" in r.stderr and "Loop" in r.stderr, r.stderr


def test_bad_input_is_a_clear_error(onnxq_bin, tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((2, 3), np.float32))
    r = subprocess.run([onnxq_bin, "run", str(MODELS / "mlp.onnx"), "--input", f"input={tmp_path / 'x.npy'}"],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "input `input`: expected shape" in r.stderr, r.stderr


@pytest.mark.parametrize("bits", ["8", "4"])
@pytest.mark.parametrize("name", ["transformer_layer", "mlp", "branches/digits_branches"])
def test_weight_only_models_match_ort(name, bits, onnxq_bin, tmp_path):
    """Weight-only models (int8 per channel, int4 blockwise over opset 21, If branches
    included) run in the executor with ORT's outputs: the same dequantized weights, then
    float ops. ORT's reference runs unoptimized: its optimizer rewrites DequantizeLinear →
    MatMul into MatMulNBits, which also quantizes the activations (transformer_layer
    then differs from the unfused graph by 0.065), a different computation."""
    src = MODELS / f"{name}.onnx"
    q = tmp_path / "w.onnx"
    subprocess.run([onnxq_bin, "quantize", str(src), "-o", str(q), "--mode", "weight-only", "--bits", bits],
                   check=True, capture_output=True, text=True)
    sample = MODELS / f"{name}.sample.npz"
    feeds = dict(np.load(sample if sample.exists() else MODELS / f"{name}.calib.npz"))
    runs = [feeds]
    if name.startswith("branches/"):
        # One batch per branch (sample rate).
        runs = [{"input": feeds["input"][:32], "sr": np.array(sr, np.int64)} for sr in (16000, 8000)]
    for k, f in enumerate(runs):
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        s = ort.InferenceSession(str(q), so, providers=["CPUExecutionProvider"])
        names, want = [o.name for o in s.get_outputs()], s.run(None, f)
        (tmp_path / str(k)).mkdir()
        out = run_onnxq(onnxq_bin, q, f, tmp_path / str(k))
        for n, w in zip(names, want):
            got = np.load(out / npy_name(n))
            np.testing.assert_allclose(got, w, rtol=1e-4, atol=1e-4 * float(np.abs(w).max()), err_msg=n)
