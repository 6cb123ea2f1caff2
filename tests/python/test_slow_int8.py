"""The ops onnxq keeps float because ONNX Runtime runs them slower in int8 (src/backend/slow_int8.rs),
checked on what ONNX Runtime itself makes of the model: the optimized graph it writes out.

- a Conv over one input channel with a 3x3 kernel keeps float activations and float weights: ONNX
  Runtime runs it as a float Conv, not a QLinearConv, with nothing to dequantize per run;
- AveragePool -> Flatten -> Gemm: the pool and the Flatten stay float and the Q goes after the
  Flatten, so ONNX Runtime has no QLinearAveragePool in its graph, and the Gemm still runs int8;
- a single-channel filter of 256 taps (an STFT basis) is a real GEMM and stays int8.
"""

import subprocess

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper


def conv_pool_gemm():
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.3, (8, 1, 3, 3)).astype(np.float32), "w0"),
        numpy_helper.from_array(rng.normal(0, 0.1, (8,)).astype(np.float32), "b0"),
        numpy_helper.from_array(rng.normal(0, 0.2, (16, 8, 3, 3)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.normal(0, 0.1, (10, 16 * 4 * 4)).astype(np.float32), "wf"),
        numpy_helper.from_array(rng.normal(0, 0.1, (10,)).astype(np.float32), "bf"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], name="conv0", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c0"], ["r0"], name="relu0"),
        helper.make_node("Conv", ["r0", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("AveragePool", ["r1"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], name="fc", transB=1),
    ]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def stft_like():
    rng = np.random.default_rng(1)
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.05, (32, 1, 256)).astype(np.float32), "basis"),
        numpy_helper.from_array(rng.normal(0, 0.1, (16, 32, 3)).astype(np.float32), "w1"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "basis"], ["s"], name="stft", strides=[128]),
        helper.make_node("Relu", ["s"], ["r"], name="relu"),
        helper.make_node("Conv", ["r", "w1"], ["y"], name="conv1", pads=[1, 1]),
    ]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 2048])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def quantize(onnxq_bin, model, shape, tmp_path):
    src, calib, out = tmp_path / "f.onnx", tmp_path / "calib.npy", tmp_path / "q.onnx"
    onnx.save(model, src)
    np.save(calib, np.random.default_rng(2).random((16, *shape)).astype(np.float32))
    r = subprocess.run([onnxq_bin, "quantize", str(src), "-o", str(out), "--data", str(calib),
                        "--accuracy-guard", "off"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return onnx.load(out), r.stderr, out


def ort_optimized_ops(path, tmp_path):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.optimized_model_filepath = str(tmp_path / "ort_optimized.onnx")
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return [n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node]


def producer(m, name):
    return next((n for n in m.graph.node if name in n.output), None)


def test_single_channel_conv_and_average_pool_run_float_in_ort(onnxq_bin, tmp_path):
    m, err, path = quantize(onnxq_bin, conv_pool_gemm(), (1, 8, 8), tmp_path)
    assert "a convolution over one input channel" in err, err
    assert "QLinearAveragePool runs ~10x slower" in err, err
    conv0 = next(n for n in m.graph.node if n.name == "conv0")
    assert conv0.input[0] == "x"  # the network input is read in float
    # Its weights are a float initializer (no DequantizeLinear ORT would run every time).
    inits = {i.name: i for i in m.graph.initializer}
    assert producer(m, conv0.input[1]) is None
    assert inits[conv0.input[1]].data_type == TensorProto.FLOAT
    pool = next(n for n in m.graph.node if n.op_type == "AveragePool")
    assert producer(m, pool.input[0]).op_type == "DequantizeLinear"
    flatten = next(n for n in m.graph.node if n.op_type == "Flatten")
    assert flatten.input[0] == pool.output[0]  # no Q between the pool and the Flatten
    assert [n.op_type for n in m.graph.node if flatten.output[0] in n.input] == ["QuantizeLinear"]

    ops = ort_optimized_ops(path, tmp_path)
    assert "QLinearAveragePool" not in ops and "AveragePool" in ops, ops
    assert ops.count("QLinearConv") == 1 and "QGemm" in ops, ops
    # ... and the model still computes what the float one does.
    x = np.random.default_rng(3).random((4, 1, 8, 8)).astype(np.float32)
    f = ort.InferenceSession(conv_pool_gemm().SerializeToString(), providers=["CPUExecutionProvider"])
    q = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ref, got = f.run(None, {"x": x})[0], q.run(None, {"x": x})[0]
    assert 10 * np.log10(np.sum(ref**2) / np.sum((ref - got) ** 2)) > 25


def test_long_single_channel_filter_stays_int8(onnxq_bin, tmp_path):
    m, err, path = quantize(onnxq_bin, stft_like(), (1, 2048), tmp_path)
    assert "a convolution over one input channel" not in err, err
    stft = next(n for n in m.graph.node if n.name == "stft")
    assert producer(m, stft.input[0]).op_type == "DequantizeLinear"
    assert ort_optimized_ops(path, tmp_path).count("QLinearConv") == 2
