"""`onnxq optimize` keeps the float function, checked by ONNX Runtime (also
on the models tract cannot run), and its output passes onnx's full checker."""

import subprocess

import numpy as np
import onnx
import pytest

from conftest import bundled_models
from test_ort_roundtrip import run_ort


@pytest.mark.parametrize("model", bundled_models(), ids=lambda p: p.stem)
def test_optimize_preserves_outputs(model, onnxq_bin, tmp_path):
    out = tmp_path / model.name
    subprocess.run([onnxq_bin, "optimize", str(model), "-o", str(out)], check=True, capture_output=True)
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)
    feeds = dict(np.load(model.with_suffix(".sample.npz")))
    want = run_ort(model, feeds)
    got = run_ort(out, feeds)
    for w, g in zip(want, got):
        scale = max(float(np.abs(w).max()), np.finfo(np.float32).tiny)
        assert float(np.abs(w.astype(np.float64) - g).max()) <= 1e-5 * scale
    # BatchNormalization after a Conv is gone.
    ops = [n.op_type for n in onnx.load(str(out)).graph.node]
    if model.stem in ("digits_cnn", "residual_block", "inverted_residual"):
        assert "BatchNormalization" not in ops


def test_decomposed_batchnorm_folds(onnxq_bin, tmp_path):
    """Paddle/TF-style BatchNorm as Mul + Add of per-channel constants folds
    into the Conv and the Gemm; a Mul varying over space does not."""
    from onnx import TensorProto, helper, numpy_helper as nh

    rng = np.random.default_rng(1)

    def init(name, a):
        return nh.from_array(np.asarray(a, dtype=np.float32), name)

    inits = [
        init("w", rng.standard_normal((4, 3, 3, 3))), init("b", rng.standard_normal(4)),
        init("s", rng.uniform(0.5, 2, (1, 4, 1, 1))), init("t", rng.standard_normal((4, 1, 1))),
        init("sp", rng.uniform(0.5, 2, (1, 1, 6, 6))),
        init("gw", rng.standard_normal((5, 144))), init("gs", [1.5]), init("gt", rng.standard_normal(5)),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Mul", ["c", "s"], ["cm"], name="bn_mul"),
        helper.make_node("Add", ["t", "cm"], ["ca"], name="bn_add"),
        helper.make_node("Mul", ["ca", "sp"], ["spatial"], name="spatial_mul"),
        helper.make_node("Flatten", ["spatial"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "gw"], ["g"], transB=1, name="gemm"),
        helper.make_node("Mul", ["gs", "g"], ["gm"], name="gemm_mul"),
        helper.make_node("Add", ["gm", "gt"], ["y"], name="gemm_add"),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 6, 6])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5])
    m = helper.make_model(helper.make_graph(nodes, "g", [x], [y], initializer=inits),
                          opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    src, out = tmp_path / "bn.onnx", tmp_path / "bn.opt.onnx"
    onnx.save(m, str(src))
    subprocess.run([onnxq_bin, "optimize", str(src), "-o", str(out)], check=True, capture_output=True)
    opt = onnx.load(str(out))
    onnx.checker.check_model(opt, full_check=True)
    names = [n.name for n in opt.graph.node]
    assert not {"bn_mul", "bn_add", "gemm_mul", "gemm_add"} & set(names), names
    assert "spatial_mul" in names
    feeds = {"x": rng.standard_normal((2, 3, 6, 6)).astype(np.float32)}
    np.testing.assert_allclose(run_ort(out, feeds)[0], run_ort(src, feeds)[0], rtol=1e-5, atol=1e-5)


WEIGHT_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul", "LSTM", "GRU", "RNN"}


def fp16_rounded(model_path):
    """The model with the weights `store-weights-fp16` stores in f16 rounded to f16 in
    place (kept f32): what the pass's output must compute. In every graph, If/Loop/Scan
    bodies included; a constant a body reads from its enclosing graph stays f32."""
    from onnx import numpy_helper as nh

    def body_names(g, out):
        for n in g.node:
            out.update(n.input)
            for a in n.attribute:
                for sub in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)):
                    body_names(sub, out)
        return out

    def visit(g):
        readers = {}
        for n in g.node:
            for i in n.input:
                readers.setdefault(i, []).append(n.op_type)
            for a in n.attribute:
                for sub in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)):
                    for name in body_names(sub, set()):
                        readers.setdefault(name, []).append(n.op_type)
                    visit(sub)
        # Initializers, and Constant nodes' tensors (how branch weights are often stored).
        tensors = [(t.name, t) for t in g.initializer]
        tensors += [(n.output[0], a.t) for n in g.node if n.op_type == "Constant"
                    for a in n.attribute if a.name == "value"]
        for name, t in tensors:
            ops = readers.get(name, [])
            if t.data_type == onnx.TensorProto.FLOAT and len(t.dims) >= 2 and ops \
                    and all(o in WEIGHT_OPS for o in ops):
                a = nh.to_array(t)
                t.CopyFrom(nh.from_array(a.astype(np.float16).astype(np.float32), t.name))

    m = onnx.load(str(model_path))
    visit(m.graph)
    return m


@pytest.mark.parametrize("model", bundled_models(), ids=lambda p: p.stem)
def test_fp16_weights_load_and_match(model, onnxq_bin, tmp_path):
    """`store-weights-fp16`: the file shrinks, passes the full checker, and ONNX Runtime and
    onnxq's executor both compute the float model with f16-rounded weights."""
    out = tmp_path / model.name
    subprocess.run([onnxq_bin, "optimize", str(model), "-o", str(out),
                    "--passes", "store-weights-fp16"], check=True, capture_output=True)
    m = onnx.load(str(out))
    onnx.checker.check_model(m, full_check=True)
    halves = [t for t in m.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16]
    if model.stem != "control_flow":
        assert halves, "no weight stored in f16"
        assert out.stat().st_size < model.stat().st_size
    ref = tmp_path / ("ref_" + model.name)
    onnx.save(fp16_rounded(model), str(ref))
    feeds = dict(np.load(model.with_suffix(".sample.npz")))
    want = run_ort(ref, feeds)
    got = run_ort(out, feeds)
    names = [o.name for o in onnx.load(str(model)).graph.output]
    subprocess.run([onnxq_bin, "run", str(out), "--input", str(model.with_suffix(".sample.npz")),
                    "-o", str(tmp_path / "run")], check=True, capture_output=True)
    for name, w, g in zip(names, want, got):
        scale = max(float(np.abs(w).max()), np.finfo(np.float32).tiny)
        assert float(np.abs(w.astype(np.float64) - g).max()) <= 1e-5 * scale, name
        e = np.load(tmp_path / "run" / f"{name}.npy")
        assert float(np.abs(w.astype(np.float64) - e).max()) <= 1e-4 * scale, name
