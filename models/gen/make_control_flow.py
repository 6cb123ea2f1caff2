#!/usr/bin/env python3
"""Write models/control_flow.onnx: a tiny hand-built (onnx.helper) graph with
If / nested If / Loop / Scan subgraphs, so onnxq's IR subgraph handling is
exercised (see the "Control-flow model" section of models/README.md).

Patterns (what real exports such as silero-vad, torch-scripted loops and
TF-converted RNNs contain):
  * `If` on a bool graph input; each branch has its own weights in `Constant`
    nodes and also reads outer-scope values by name (a MatMul result and an
    initializer of the main graph).
  * a nested `If` (2 levels deep) whose *condition* and body read values of
    the outermost graph and of the enclosing branch.
  * a `Loop` whose trip count is an int64 graph input, whose `cond` input is
    the empty name (optional input left out), with a loop-carried state
    h = tanh(h @ W_h + branch_out + 0.1*i) reading outer values, and a scan output.
  * a `Scan` (opset-9+ form, no sequence_lens) over the time axis of the
    Loop's scan output, with a state (decayed cumulative sum) reading an
    outer initializer, and `scan_output_axes=[1]`.

Writes control_flow.{onnx,sample.npz,expected.npz,calib.npz}, self-checks
(onnx.checker full_check, ORT vs a numpy reference on every If path) and
merges a `control_flow` entry into manifest.json (run after make_models.py,
which rewrites manifest.json from scratch).

Usage:  python models/gen/make_control_flow.py [--out DIR]
"""
import os

for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse
import json
import re
from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto as TP
from onnx import helper as oh
from onnx import numpy_helper as nh
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

SEED = 0
OPSET = 17
NAME = "control_flow"
D_IN, D_H, D_OUT = 8, 16, 4


# --------------------------------------------------------------------------
# weights (fixed seed) and data
# --------------------------------------------------------------------------
def make_weights():
    rng = np.random.default_rng(SEED + 100)

    def w(*shape, fan_in):
        return (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)

    return {
        # main-graph initializers
        "W_in": w(D_IN, D_H, fan_in=D_IN),
        "b_in": w(D_H, fan_in=4 * D_H),
        "b_shared": w(D_H, fan_in=4 * D_H),
        "alpha": (0.5 + 0.5 * rng.random(D_H)).astype(np.float32),
        "W_h": w(D_H, D_H, fan_in=D_H),
        "decay": np.array(0.9, dtype=np.float32),  # 0-d
        "W_out": w(D_H, D_OUT, fan_in=D_H),
        "b_out": w(D_OUT, fan_in=4 * D_OUT),
        # Constant nodes inside subgraphs
        "then_W": w(D_H, D_H, fan_in=D_H),           # then_branch
        "else_W": w(D_IN, D_H, fan_in=D_IN),         # else_branch
        "inner_half": np.array(0.5, dtype=np.float32),  # inner then (0-d)
        "inner_bias": w(D_H, fan_in=4 * D_H),        # inner else
        "loop_step_scale": np.array(0.1, dtype=np.float32),  # loop body (0-d)
    }


def load_rows():
    """Real-looking x: one 8-pixel row (pixel/16, in [0,1]) of a digit.
    Same stratified 70/30 split as make_models.py: calib from train, sample
    from test."""
    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    xtr, xte = train_test_split(x, test_size=0.3, random_state=SEED, stratify=d.target)
    tr, te = xtr.reshape(-1, 8, 8), xte.reshape(-1, 8, 8)
    sample_x = np.stack([te[0, 4], te[1, 3], te[2, 5]])            # [3, 8]
    calib_x = np.stack([tr[i, 2 + i % 4] for i in range(64)])       # [64, 8]
    return np.ascontiguousarray(sample_x), np.ascontiguousarray(calib_x)


# --------------------------------------------------------------------------
# graph
# --------------------------------------------------------------------------
def const(out, arr):
    return oh.make_node("Constant", [], [out], name=out + "_node",
                        value=nh.from_array(arr, out + "_value"))


def vi(name, elem, shape):
    return oh.make_tensor_value_info(name, elem, shape)


def build_model(W):
    F = TP.FLOAT
    # ---- nested If (inside then_branch) -----------------------------------
    # reads: then_relu (enclosing then_branch), x_proj (outermost graph),
    #        alpha (outermost initializer); cond x_proj_pos (outermost).
    inner_then = oh.make_graph(
        [const("inner_half", W["inner_half"]),
         oh.make_node("Mul", ["then_relu", "inner_half"], ["inner_then_mul"], name="inner_then_mul"),
         oh.make_node("Add", ["inner_then_mul", "x_proj"], ["inner_then_out"], name="inner_then_add")],
        "inner_then", [], [vi("inner_then_out", F, None)])  # unknown-rank output, as exporters often leave it
    inner_else = oh.make_graph(
        [const("inner_bias", W["inner_bias"]),
         oh.make_node("Mul", ["x_proj", "alpha"], ["inner_else_mul"], name="inner_else_mul"),
         oh.make_node("Sub", ["then_relu", "inner_else_mul"], ["inner_else_sub"], name="inner_else_sub"),
         oh.make_node("Add", ["inner_else_sub", "inner_bias"], ["inner_else_out"], name="inner_else_add")],
        "inner_else", [], [vi("inner_else_out", F, None)])

    # ---- outer If branches ---------------------------------------------------
    # then: relu(x_proj @ then_W + b_shared) -> nested If
    then_g = oh.make_graph(
        [const("then_W", W["then_W"]),
         oh.make_node("MatMul", ["x_proj", "then_W"], ["then_mm"], name="then_matmul"),
         oh.make_node("Add", ["then_mm", "b_shared"], ["then_add"], name="then_add"),
         oh.make_node("Relu", ["then_add"], ["then_relu"], name="then_relu"),
         oh.make_node("If", ["x_proj_pos"], ["then_out"], name="inner_if",
                      then_branch=inner_then, else_branch=inner_else)],
        "then_branch", [], [vi("then_out", F, ["N", D_H])])
    # else: tanh(x @ else_W + b_shared) + x_proj
    else_g = oh.make_graph(
        [const("else_W", W["else_W"]),
         oh.make_node("MatMul", ["x", "else_W"], ["else_mm"], name="else_matmul"),
         oh.make_node("Add", ["else_mm", "b_shared"], ["else_add"], name="else_add"),
         oh.make_node("Tanh", ["else_add"], ["else_tanh"], name="else_tanh"),
         oh.make_node("Add", ["else_tanh", "x_proj"], ["else_out"], name="else_add_skip")],
        "else_branch", [], [vi("else_out", F, ["N", D_H])])

    # ---- Loop body: (iter, cond, h) -> (cond, h', h'_copy) ------------------
    # reads outer: W_h (initializer), branch_out (If output).
    loop_body = oh.make_graph(
        [const("loop_step_scale", W["loop_step_scale"]),
         oh.make_node("Identity", ["loop_cond_in"], ["loop_cond_out"], name="loop_cond_identity"),
         oh.make_node("Cast", ["loop_iter"], ["loop_iter_f"], name="loop_iter_cast", to=F),
         oh.make_node("Mul", ["loop_iter_f", "loop_step_scale"], ["loop_iter_term"], name="loop_iter_mul"),
         oh.make_node("MatMul", ["loop_h_in", "W_h"], ["loop_hw"], name="loop_matmul"),
         oh.make_node("Add", ["loop_hw", "branch_out"], ["loop_pre"], name="loop_add_x"),
         oh.make_node("Add", ["loop_pre", "loop_iter_term"], ["loop_pre2"], name="loop_add_iter"),
         oh.make_node("Tanh", ["loop_pre2"], ["loop_h_out"], name="loop_tanh"),
         oh.make_node("Identity", ["loop_h_out"], ["loop_h_scan"], name="loop_scan_identity")],
        "loop_body",
        [vi("loop_iter", TP.INT64, []), vi("loop_cond_in", TP.BOOL, []),
         vi("loop_h_in", F, ["N", D_H])],
        [vi("loop_cond_out", TP.BOOL, []), vi("loop_h_out", F, ["N", D_H]),
         vi("loop_h_scan", F, ["N", D_H])])

    # ---- Scan body: (s, h_t) -> (s', s'_copy); s' = s*decay + h_t -----------
    # reads outer: decay (0-d initializer).
    scan_body = oh.make_graph(
        [oh.make_node("Mul", ["scan_s_in", "decay"], ["scan_decayed"], name="scan_mul"),
         oh.make_node("Add", ["scan_decayed", "scan_h_t"], ["scan_s_out"], name="scan_add"),
         oh.make_node("Identity", ["scan_s_out"], ["scan_y_t"], name="scan_identity")],
        "scan_body",
        [vi("scan_s_in", F, ["N", D_H]), vi("scan_h_t", F, ["N", D_H])],
        [vi("scan_s_out", F, ["N", D_H]), vi("scan_y_t", F, ["N", D_H])])

    # ---- main graph ------------------------------------------------------------
    nodes = [
        oh.make_node("MatMul", ["x", "W_in"], ["x_mm"], name="in_matmul"),
        oh.make_node("Add", ["x_mm", "b_in"], ["x_proj"], name="in_add"),
        oh.make_node("ReduceMean", ["x_proj"], ["x_proj_mean"], name="proj_mean", keepdims=0),
        const("zero_f", np.array(0.0, dtype=np.float32)),
        oh.make_node("Greater", ["x_proj_mean", "zero_f"], ["x_proj_pos"], name="proj_pos"),
        oh.make_node("If", ["flag"], ["branch_out"], name="branch_if",
                     then_branch=then_g, else_branch=else_g),
        # zeros [N,16] initial state, exporter style: Shape -> ConstantOfShape
        oh.make_node("Shape", ["x_proj"], ["x_proj_shape"], name="state_shape"),
        oh.make_node("ConstantOfShape", ["x_proj_shape"], ["h0"], name="state_zeros",
                     value=nh.from_array(np.zeros(1, np.float32), "h0_value")),
        oh.make_node("Loop", ["steps", "", "h0"], ["h_final", "h_seq"], name="rnn_loop",
                     body=loop_body),
        oh.make_node("Scan", ["h0", "h_seq"], ["cum_final", "cum_seq"], name="cumsum_scan",
                     body=scan_body, num_scan_inputs=1, scan_output_axes=[1]),
        oh.make_node("Add", ["h_final", "cum_final"], ["head_in"], name="head_add"),
        oh.make_node("MatMul", ["head_in", "W_out"], ["head_mm"], name="head_matmul"),
        oh.make_node("Add", ["head_mm", "b_out"], ["y"], name="head_bias"),
    ]
    inits = [nh.from_array(W[k], k) for k in
             ("W_in", "b_in", "b_shared", "alpha", "W_h", "decay", "W_out", "b_out")]
    graph = oh.make_graph(
        nodes, "control_flow",
        [vi("x", F, ["N", D_IN]), vi("flag", TP.BOOL, []), vi("steps", TP.INT64, [])],
        [vi("y", F, ["N", D_OUT]), vi("h_seq", F, ["T", "N", D_H]),
         vi("cum_seq", F, ["N", "T", D_H])],
        inits)
    m = oh.make_model(graph, opset_imports=[oh.make_opsetid("", OPSET)],
                      producer_name="onnxq-models-gen (onnx.helper %s)" % onnx.__version__,
                      ir_version=8)
    m.doc_string = "If / nested If / Loop / Scan test model; see models/README.md"
    return m


# --------------------------------------------------------------------------
# numpy reference (same computation, written independently of the graph)
# --------------------------------------------------------------------------
def reference(W, x, flag, steps):
    x_proj = x @ W["W_in"] + W["b_in"]
    if bool(flag):
        t = np.maximum(x_proj @ W["then_W"] + W["b_shared"], 0)
        if x_proj.mean() > 0:
            br = t * W["inner_half"] + x_proj
        else:
            br = t - x_proj * W["alpha"] + W["inner_bias"]
    else:
        br = np.tanh(x @ W["else_W"] + W["b_shared"]) + x_proj
    h = np.zeros_like(x_proj)
    hs = []
    for i in range(int(steps)):
        h = np.tanh(h @ W["W_h"] + br + np.float32(i) * W["loop_step_scale"])
        hs.append(h)
    h_seq = np.stack(hs)                     # [T,N,16]
    s = np.zeros_like(x_proj)
    cs = []
    for t in range(h_seq.shape[0]):
        s = s * W["decay"] + h_seq[t]
        cs.append(s)
    cum_seq = np.stack(cs, 1)                # [N,T,16] (scan_output_axes=[1])
    y = (h + s) @ W["W_out"] + W["b_out"]
    path = ("then/" + ("inner_then" if x_proj.mean() > 0 else "inner_else")) if flag else "else"
    return {"y": y, "h_seq": h_seq, "cum_seq": cum_seq}, path


# --------------------------------------------------------------------------
def all_ops(g, c=None):
    c = Counter() if c is None else c
    for n in g.node:
        c[n.op_type] += 1
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                all_ops(a.g, c)
    return c


def dims(v):
    return [d.dim_param if d.dim_param else d.dim_value for d in v.type.tensor_type.shape.dim]


def dtype_name(v):
    return onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.dirname(here), help="output dir (default models/)")
    out = ap.parse_args().out
    os.makedirs(out, exist_ok=True)
    p = lambda fn: os.path.join(out, fn)

    W = make_weights()
    model = build_model(W)
    onnx.save(model, p(NAME + ".onnx"))

    sample_x, calib_x = load_rows()
    sample = {"x": sample_x, "flag": np.array(True), "steps": np.array(4, dtype=np.int64)}
    np.savez(p(NAME + ".sample.npz"), **sample)
    # calibration: row i of every array is sample i; the scalar inputs get shape [64]
    # (flag alternates so both branches see data, steps cycles 2..5)
    np.savez(p(NAME + ".calib.npz"), x=calib_x,
             flag=np.array([i % 2 == 0 for i in range(64)]),
             steps=np.array([2 + i % 4 for i in range(64)], dtype=np.int64))

    # ---- self-check ------------------------------------------------------------
    m = onnx.load(p(NAME + ".onnx"))
    onnx.checker.check_model(m, full_check=True)
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    sess = ort.InferenceSession(p(NAME + ".onnx"), so, providers=["CPUExecutionProvider"])
    out_names = [o.name for o in m.graph.output]
    assert set(sample) == {i.name for i in m.graph.input}

    def run(feed):
        return dict(zip(out_names, sess.run(None, feed)))

    got = run(sample)
    np.savez(p(NAME + ".expected.npz"), **got)
    # ORT vs numpy on the sample and on every If path / a few trip counts
    rng = np.random.default_rng(SEED + 7)
    cases = [sample]
    for k in range(12):
        n = 1 + k % 4
        xx = calib_x[rng.choice(64, n, replace=False)]
        if k % 3 == 2:
            xx = (-2.0 * xx).astype(np.float32)  # push mean(x_proj) negative
        cases.append({"x": np.ascontiguousarray(xx), "flag": np.array(k % 2 == 0),
                      "steps": np.array(1 + k % 5, dtype=np.int64)})
    err, paths = 0.0, Counter()
    for feed in cases:
        o = run(feed)
        want, path = reference(W, **feed)
        paths[path] += 1
        for k in out_names:
            assert o[k].shape == want[k].shape and o[k].dtype == np.float32, (k, o[k].shape)
            err = max(err, float(np.abs(o[k] - want[k]).max()))
    assert err < 1e-5, err
    assert set(paths) == {"then/inner_then", "then/inner_else", "else"}, paths
    _, sample_path = reference(W, **sample)
    top_ops = Counter(n.op_type for n in m.graph.node)
    sub_ops = all_ops(m.graph)
    for op in ("If", "Loop", "Scan", "Constant", "MatMul"):
        assert op in sub_ops, op
    size = os.path.getsize(p(NAME + ".onnx"))
    assert size < 50 * 1024, size
    print("%-18s opset %-2d ok  max|ort-numpy|=%.1e over %d cases %s  (%d bytes, sample path %s)"
          % (NAME, OPSET, err, len(cases), dict(sorted(paths.items())), size, sample_path))
    print("    ops (main graph):", dict(sorted(top_ops.items())))
    print("    ops (incl. subgraphs):", dict(sorted(sub_ops.items())))

    # ---- merge into manifest.json (make_models.py rewrites it from scratch) -----
    mp = p("manifest.json")
    manifest = json.load(open(mp)) if os.path.exists(mp) else {}
    manifest[NAME] = dict(
        opset=OPSET,
        inputs={i.name: dict(shape=dims(i), dtype=dtype_name(i)) for i in m.graph.input},
        outputs={o.name: dict(shape=dims(o), dtype=dtype_name(o)) for o in m.graph.output},
        sample_shapes={k: list(v.shape) for k, v in sample.items()},
        sample_if_path=sample_path,
        ops=dict(sorted(top_ops.items())),
        ops_including_subgraphs=dict(sorted(sub_ops.items())),
        ort_vs_numpy_max_abs_err=float("%.1e" % err),
        onnx_bytes=size)
    txt = json.dumps(manifest, indent=1, sort_keys=True)
    txt = re.sub(r"\[[^\[\]{}]*\]", lambda mm: " ".join(mm.group(0).split()), txt)
    with open(mp, "w") as f:
        f.write(txt + "\n")


if __name__ == "__main__":
    main()
