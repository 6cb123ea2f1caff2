"""`upgrade-opset` keeps the function: opset-11 models with every rewritten
op family, raised to 13, 18 and 21, pass the full checker and give ORT the
same outputs as the original."""

import subprocess

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from test_ort_roundtrip import run_ort


def opset11_model():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])
    shapes = {"sq": [2, 3, 4], "sp0": [2, 3, 1], "sp1": [2, 3, 3], "rs": [2, 4], "rm": [2, 3, 1],
              "sm1": [2, 3, 4], "sm2": [2, 3, 4], "lsm": [2, 3, 4], "hm": [2, 3, 4]}
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in shapes.items()]
    nodes = [
        helper.make_node("Unsqueeze", ["x"], ["u"], axes=[0], name="unsq"),
        helper.make_node("Squeeze", ["u"], ["sq"], axes=[0], name="sq"),
        helper.make_node("Split", ["x"], ["sp0", "sp1"], axis=2, split=[1, 3], name="split"),
        helper.make_node("ReduceSum", ["x"], ["rs"], axes=[1], keepdims=0, name="rsum"),
        helper.make_node("ReduceMean", ["x"], ["rm"], axes=[-1], name="rmean"),
        # axis 1 of a rank-3 input: normalised over the flattened 3x4 before 13.
        helper.make_node("Softmax", ["x"], ["sm1"], axis=1, name="softmax_mid"),
        helper.make_node("Softmax", ["x"], ["sm2"], axis=2, name="softmax_last"),
        helper.make_node("LogSoftmax", ["x"], ["lsm"], name="logsoftmax_default"),
        helper.make_node("Hardmax", ["x"], ["hm"], axis=1, name="hardmax_mid"),
    ]
    g = helper.make_graph(nodes, "g", [x], outs)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 11)])
    m.ir_version = 7
    onnx.checker.check_model(m, full_check=True)
    return m


def test_equal_split_gets_num_outputs_at_18(onnxq_bin, tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 2]) for n in ("a", "b")]
    g = helper.make_graph([helper.make_node("Split", ["x"], ["a", "b"], axis=1)], "g", [x], outs)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 11)])
    m.ir_version = 7
    src = tmp_path / "split.onnx"
    onnx.save(m, str(src))
    out = tmp_path / "split18.onnx"
    subprocess.run([onnxq_bin, "optimize", str(src), "-o", str(out), "--passes", "upgrade-opset{to=18}"],
                   check=True, capture_output=True)
    up = onnx.load(str(out))
    onnx.checker.check_model(up, full_check=True)
    feeds = {"x": np.arange(8, dtype=np.float32).reshape(2, 4)}
    for a, b in zip(run_ort(src, feeds), run_ort(out, feeds)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("to", [13, 18, 21])
def test_upgrade_keeps_outputs(onnxq_bin, tmp_path, to):
    src = tmp_path / "m11.onnx"
    onnx.save(opset11_model(), str(src))
    out = tmp_path / f"m{to}.onnx"
    subprocess.run([onnxq_bin, "optimize", str(src), "-o", str(out), "--passes", f"upgrade-opset{{to={to}}}"],
                   check=True, capture_output=True)
    up = onnx.load(str(out))
    assert {o.domain: o.version for o in up.opset_import}[""] == to
    onnx.checker.check_model(up, full_check=True)
    rng = np.random.default_rng(0)
    feeds = {"x": rng.standard_normal((2, 3, 4)).astype(np.float32)}
    want, got = run_ort(src, feeds), run_ort(out, feeds)
    names = [o.name for o in up.graph.output]
    assert names == [o.name for o in opset11_model().graph.output]
    for n, a, b in zip(names, want, got):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7, err_msg=n)


@pytest.mark.parametrize("case", ["opset10", "removed_mode"])
def test_refusals_name_the_node_and_write_nothing(onnxq_bin, tmp_path, case):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 2, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 4, 4])
    if case == "opset10":
        scales = helper.make_tensor("scales", TensorProto.FLOAT, [4], [1, 1, 2, 2])
        node = helper.make_node("Resize", ["x", "scales"], ["y"], mode="nearest", name="up10")
        g = helper.make_graph([node], "g", [x], [y], initializer=[scales])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 10)])
        want = "up10"
    else:
        roi = helper.make_tensor("roi", TensorProto.FLOAT, [0], [])
        scales = helper.make_tensor("scales", TensorProto.FLOAT, [4], [1, 1, 2, 2])
        node = helper.make_node("Resize", ["x", "roi", "scales"], ["y"], mode="nearest", name="up_tf",
                                coordinate_transformation_mode="tf_half_pixel_for_nn")
        g = helper.make_graph([node], "g", [x], [y], initializer=[roi, scales])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 11)])
        want = "up_tf"
    m.ir_version = 7
    src = tmp_path / "m.onnx"
    onnx.save(m, str(src))
    out = tmp_path / "up.onnx"
    r = subprocess.run([onnxq_bin, "optimize", str(src), "-o", str(out), "--passes", "upgrade-opset{to=13}"],
                       capture_output=True, text=True)
    assert r.returncode != 0 and want in r.stderr, r.stderr
    assert not out.exists()


@pytest.mark.parametrize("auto_pad", [None, "SAME_UPPER"])
def test_convtranspose_before_11(onnxq_bin, tmp_path, auto_pad):
    """ConvTranspose-1 with explicit pads means the same at 13 (raised, ORT
    outputs equal); with auto_pad its padding placement changed (refused)."""
    rng = np.random.default_rng(2)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 5, 5])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None if auto_pad else [1, 3, 10, 10])
    w = onnx.numpy_helper.from_array(rng.standard_normal((2, 3, 3, 3)).astype(np.float32), "w")
    attrs = {"strides": [2, 2]}
    if auto_pad:
        attrs["auto_pad"] = auto_pad
    else:
        attrs["pads"] = [1, 1, 0, 0]
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], name="deconv", **attrs)
    m = helper.make_model(helper.make_graph([node], "g", [x], [y], initializer=[w]),
                          opset_imports=[helper.make_opsetid("", 9)])
    m.ir_version = 4
    src, out = tmp_path / "ct9.onnx", tmp_path / "ct13.onnx"
    onnx.save(m, str(src))
    r = subprocess.run([onnxq_bin, "optimize", str(src), "-o", str(out), "--passes", "upgrade-opset{to=13}"],
                       capture_output=True, text=True)
    if auto_pad:
        assert r.returncode != 0 and "deconv" in r.stderr and "auto_pad" in r.stderr, r.stderr
        assert not out.exists()
        return
    assert r.returncode == 0, r.stderr
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)
    feeds = {"x": rng.standard_normal((1, 2, 5, 5)).astype(np.float32)}
    np.testing.assert_array_equal(run_ort(src, feeds)[0], run_ort(out, feeds)[0])
