"""Decomposed LayerNormalization and Gelu (as torch < 2, TF and Paddle export them) run
as one fused step each in `onnxq run`: the outputs are bit-identical to running the
nodes one by one (`--lowering off`), and agree with ONNX Runtime. Both Gelu spellings
(0.5 applied to x first, or to the product), Pow(d, 2) and Mul(d, d), with and without
the affine part; a match whose intermediate value is read elsewhere is not fused."""

import subprocess

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from test_executor_ort import npy_name, run_onnxq

D = 24


def layer_norm(x, tag, square="pow", affine=True, axes_attr=True):
    n = []
    mean_kw = dict(axes=[-1], keepdims=1)
    n.append(helper.make_node("ReduceMean", [x], [f"{tag}_m"], **mean_kw))
    n.append(helper.make_node("Sub", [x, f"{tag}_m"], [f"{tag}_d"]))
    if square == "pow":
        n.append(helper.make_node("Pow", [f"{tag}_d", "two"], [f"{tag}_p"]))
    else:
        n.append(helper.make_node("Mul", [f"{tag}_d", f"{tag}_d"], [f"{tag}_p"]))
    n.append(helper.make_node("ReduceMean", [f"{tag}_p"], [f"{tag}_v"], **mean_kw))
    n.append(helper.make_node("Add", [f"{tag}_v", "eps"], [f"{tag}_a"]))
    n.append(helper.make_node("Sqrt", [f"{tag}_a"], [f"{tag}_s"]))
    n.append(helper.make_node("Div", [f"{tag}_d", f"{tag}_s"], [f"{tag}_y"]))
    out = f"{tag}_y"
    if affine:
        n.append(helper.make_node("Mul", [out, "gamma"], [f"{tag}_g"]))
        n.append(helper.make_node("Add", [f"{tag}_g", "beta"], [f"{tag}_out"]))
        out = f"{tag}_out"
    return n, out


def gelu(x, tag, half_first):
    n = [helper.make_node("Div", [x, "sqrt2"], [f"{tag}_t"]),
         helper.make_node("Erf", [f"{tag}_t"], [f"{tag}_e"]),
         helper.make_node("Add", [f"{tag}_e", "one"], [f"{tag}_a"])]
    if half_first:
        n += [helper.make_node("Mul", [x, "half"], [f"{tag}_h"]),
              helper.make_node("Mul", [f"{tag}_h", f"{tag}_a"], [f"{tag}_out"])]
    else:
        n += [helper.make_node("Mul", [x, f"{tag}_a"], [f"{tag}_xa"]),
              helper.make_node("Mul", [f"{tag}_xa", "half"], [f"{tag}_out"])]
    return n, f"{tag}_out"


def model():
    rng = np.random.default_rng(3)
    nodes = []
    a, h = layer_norm("x", "ln1", "pow", True)
    nodes += a
    b, h = gelu(h, "g1", half_first=False)
    nodes += b
    c, h = layer_norm(h, "ln2", "mul", False)
    nodes += c
    d, h = gelu(h, "g2", half_first=True)
    nodes += d
    # A third LayerNorm whose mean is also read outside: stays node by node.
    e, h3 = layer_norm(h, "ln3", "pow", True)
    nodes += e
    nodes.append(helper.make_node("Add", [h3, "ln3_m"], ["y"]))
    inits = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in [
        ("two", np.array(2.0)), ("eps", np.array(1e-5)), ("sqrt2", np.array(np.sqrt(2.0))),
        ("one", np.array(1.0)), ("half", np.array(0.5)),
        ("gamma", rng.standard_normal(D)), ("beta", rng.standard_normal(D))]]
    g = helper.make_graph(nodes, "composites",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 5, D])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("n", [1, 3])
def test_fused_composites_match_unfused_and_ort(n, onnxq_bin, tmp_path):
    path = tmp_path / "c.onnx"
    onnx.save(model(), path)
    feeds = {"x": (np.random.default_rng(n).standard_normal([n, 5, D]) * 3 + 1).astype(np.float32)}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    fused = np.load(run_onnxq(onnxq_bin, path, feeds, tmp_path / "a") / npy_name("y"))
    plain = np.load(run_onnxq(onnxq_bin, path, feeds, tmp_path / "b", "--lowering", "off") / npy_name("y"))
    assert np.array_equal(fused.view(np.uint32), plain.view(np.uint32))
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    np.testing.assert_allclose(fused, want, rtol=1e-4, atol=1e-5)
    inp = tmp_path / "in.npz"
    np.savez(inp, **feeds)
    r = subprocess.run([onnxq_bin, "run", str(path), "--input", str(inp), "-o", str(tmp_path / "c"), "--verbose"],
                       check=True, capture_output=True, text=True)
    listed = r.stdout + r.stderr
    assert listed.count("LayerNormalization (decomposed, fused)") == 2, listed
    assert listed.count("Gelu (decomposed, fused)") == 2, listed
