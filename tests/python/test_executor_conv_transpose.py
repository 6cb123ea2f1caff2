"""Float ConvTranspose in `onnxq run` against ONNX Runtime: strides, dilations, groups,
pads, output_padding, output_shape and auto_pad, 1-D and 2-D (detectors' and
segmenters' upsampling heads)."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from test_executor_ort import npy_name, run_onnxq

CASES = [
    # (C, M/g, group, H, W, k, attrs)
    (3, 2, 1, 5, 4, (3, 3), dict(strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1])),
    (4, 3, 2, 3, 7, (2, 2), dict(strides=[2, 2])),
    (4, 1, 4, 6, 5, (4, 4), dict(strides=[2, 2], pads=[1, 1, 1, 1])),
    (2, 17, 1, 3, 3, (3, 3), dict(strides=[3, 3], dilations=[2, 2], pads=[2, 1, 0, 2])),
    (8, 4, 1, 5, 6, (3, 3), dict(strides=[2, 2], auto_pad="SAME_UPPER")),
    (8, 4, 1, 5, 6, (3, 3), dict(strides=[2, 2], auto_pad="SAME_LOWER")),
    (8, 4, 1, 5, 6, (3, 3), dict(strides=[2, 2], output_shape=[10, 11])),
    (1, 1, 1, 1, 1, (1, 1), dict()),
    (3, 5, 1, 1, 9, (4,), dict(strides=[2], pads=[1, 2])),  # 1-D
]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_conv_transpose_matches_ort(case, onnxq_bin, tmp_path):
    c, mg, group, h, w, k, attrs = CASES[case]
    one_d = len(k) == 1
    rng = np.random.default_rng(case)
    x_shape = [2, c, w] if one_d else [2, c, h, w]
    wt = rng.standard_normal([c, mg, *k]).astype(np.float32)
    bias = rng.standard_normal([mg * group]).astype(np.float32)
    node = helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], group=group, **attrs)
    graph = helper.make_graph(
        [node], "ct",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [onnx.numpy_helper.from_array(wt, "w"), onnx.numpy_helper.from_array(bias, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "ct.onnx"
    onnx.save(model, path)
    feeds = {"x": rng.standard_normal(x_shape).astype(np.float32)}
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    got = np.load(run_onnxq(onnxq_bin, path, feeds, tmp_path) / npy_name("y"))
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))
