"""`If` in `onnxq run` against ONNX Runtime: both branches taken, branches reading
values of the enclosing graph (and of the graph two levels up), a branch-local
initializer, a numeric condition. Silero-style VADs choose their sample-rate path
this way."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from test_executor_ort import npy_name, run_onnxq


def model():
    f = TensorProto.FLOAT
    # then: relu(x · w) + h ; else: nested If on the sign of sum(h) choosing h·2 or x − h
    then_g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["xw"]),
         helper.make_node("Relu", ["xw"], ["r"]),
         helper.make_node("Add", ["r", "h"], ["then_out"])],
        "then", [], [helper.make_tensor_value_info("then_out", f, None)])
    two = onnx.numpy_helper.from_array(np.array(2.0, np.float32), "two")
    inner_then = helper.make_graph(
        [helper.make_node("Mul", ["h", "two"], ["it_out"])], "inner_then", [],
        [helper.make_tensor_value_info("it_out", f, None)], [two])
    inner_else = helper.make_graph(
        [helper.make_node("Sub", ["x", "h"], ["ie_out"])], "inner_else", [],
        [helper.make_tensor_value_info("ie_out", f, None)])
    else_g = helper.make_graph(
        [helper.make_node("ReduceSum", ["h"], ["s"], keepdims=0),
         helper.make_node("Greater", ["s", "zero"], ["pos"]),
         helper.make_node("If", ["pos"], ["else_out"], then_branch=inner_then, else_branch=inner_else)],
        "else", [], [helper.make_tensor_value_info("else_out", f, None)])
    g = helper.make_graph(
        [helper.make_node("Cast", ["flag"], ["cond"], to=TensorProto.BOOL),
         helper.make_node("Tanh", ["x"], ["h"]),
         helper.make_node("If", ["cond"], ["y"], then_branch=then_g, else_branch=else_g)],
        "g",
        [helper.make_tensor_value_info("x", f, [3, 4]), helper.make_tensor_value_info("flag", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("y", f, None)],
        [onnx.numpy_helper.from_array(np.random.default_rng(0).standard_normal([4, 4]).astype(np.float32), "w"),
         onnx.numpy_helper.from_array(np.array(0.0, np.float32), "zero")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("flag,shift", [(1, 0.0), (0, 1.0), (0, -1.0), (7, -1.0)])
def test_if_matches_ort(flag, shift, onnxq_bin, tmp_path):
    path = tmp_path / "if.onnx"
    onnx.save(model(), path)
    feeds = {"x": (np.random.default_rng(1).standard_normal([3, 4]) + shift).astype(np.float32),
             "flag": np.array(flag, np.int64)}
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    got = np.load(run_onnxq(onnxq_bin, path, feeds, tmp_path) / npy_name("y"))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
