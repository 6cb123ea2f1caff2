"""Float GRU in `onnxq run` against ONNX Runtime: directions, linear_before_reset,
bias and initial state present or not, awkward sizes."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from test_executor_ort import npy_name, run_onnxq

CASES = [
    # seq, batch, input, hidden, direction, linear_before_reset, bias, initial_h
    (5, 1, 3, 4, "forward", 0, True, True),
    (4, 3, 17, 8, "reverse", 1, True, False),
    (3, 2, 5, 3, "bidirectional", 0, False, True),
    (1, 1, 1, 1, "forward", 1, False, False),
    (6, 2, 9, 16, "bidirectional", 1, True, True),
]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_gru_matches_ort(case, onnxq_bin, tmp_path):
    seq, batch, isz, h, direction, lbr, bias, init = CASES[case]
    nd = 2 if direction == "bidirectional" else 1
    rng = np.random.default_rng(case)
    inits = [onnx.numpy_helper.from_array(rng.standard_normal([nd, 3 * h, isz]).astype(np.float32) * 0.5, "W"),
             onnx.numpy_helper.from_array(rng.standard_normal([nd, 3 * h, h]).astype(np.float32) * 0.5, "R")]
    ins = ["x", "W", "R"]
    if bias:
        inits.append(onnx.numpy_helper.from_array(rng.standard_normal([nd, 6 * h]).astype(np.float32), "B"))
        ins.append("B")
    else:
        ins.append("")
    graph_inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [seq, batch, isz])]
    feeds = {"x": rng.standard_normal([seq, batch, isz]).astype(np.float32)}
    if init:
        ins += ["", "h0"]
        graph_inputs.append(helper.make_tensor_value_info("h0", TensorProto.FLOAT, [nd, batch, h]))
        feeds["h0"] = rng.standard_normal([nd, batch, h]).astype(np.float32)
    node = helper.make_node("GRU", ins, ["y", "y_h"], hidden_size=h, direction=direction,
                            linear_before_reset=lbr)
    g = helper.make_graph([node], "gru", graph_inputs,
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
                           helper.make_tensor_value_info("y_h", TensorProto.FLOAT, None)], inits)
    path = tmp_path / "gru.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)]), path)
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)
    out = run_onnxq(onnxq_bin, path, feeds, tmp_path)
    for name, w in zip(["y", "y_h"], want):
        np.testing.assert_allclose(np.load(out / npy_name(name)), w, rtol=1e-4, atol=1e-5)
