"""Float Conv in `onnxq run` on inputs narrower than the kernel's reach (1×1 to 3×3
images with 3×3 / 5×5 kernels and padding, depthwise and dense, strides 1 and 2): taps
that only ever read padding must add nothing (a 1-pixel-wide input once made the
depthwise path index before its row). Checked against ONNX Runtime."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from test_executor_ort import npy_name, run_onnxq


@pytest.mark.parametrize("hw", [(1, 1), (1, 3), (2, 2), (3, 1)])
@pytest.mark.parametrize("k,pad", [(3, 1), (5, 2)])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("group", [1, 4])
def test_conv_on_tiny_inputs_matches_ort(hw, k, pad, stride, group, onnxq_bin, tmp_path):
    c = 4
    rng = np.random.default_rng(k * 100 + stride * 10 + group)
    w = rng.standard_normal([c, c // group, k, k]).astype(np.float32)
    b = rng.standard_normal([c]).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[k, k], pads=[pad] * 4,
                            strides=[stride, stride], group=group)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, *hw])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    path = tmp_path / "conv.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    feeds = {"x": rng.standard_normal([1, c, *hw]).astype(np.float32)}
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    got = np.load(run_onnxq(onnxq_bin, path, feeds, tmp_path) / npy_name("y"))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
