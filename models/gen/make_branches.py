"""branches/digits_branches.onnx: the digits MLP behind an If, as silero-VAD switches
between its 16 kHz and 8 kHz networks, for the tests of quantization inside If branches
(tests/if_branches.rs, tests/python/test_if_branches.py).

Derived from mlp.onnx (trained on scikit-learn's digits; no training here, numpy + onnx
only, deterministic). Inputs `input` [N, 64] f32 and `sr` (int64 scalar):
* `sr == 16000` (then branch): the MLP, its weights kept in the main graph's
  initializers and read by name from inside the branch (silero's opset-18 export);
* otherwise (else branch): the same function computed differently, weights in Constant
  nodes inside the branch (silero v6): the input is doubled and w1 halved, and the last
  layer sits in a nested If (on `sr > 0`, always true) whose branches each hold a copy of
  it (one scaled by 0.5 then 2, so the two copies differ).
Both branches classify digits as the MLP does (same top-1 on the test split).
Calibration data (`digits_branches.calib.npz`): mlp's calibration inputs with `sr`
alternating 16000 / 8000 per sample, so both branches are calibrated. Evaluation: mlp.eval.npz.

    .venv/bin/python models/gen/make_branches.py [--out models/branches]
"""

import argparse
import pathlib

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def const(name, arr):
    return helper.make_node("Constant", [], [name], name=f"{name}_const",
                            value=numpy_helper.from_array(arr.astype(np.float32), name))


def main():
    ap = argparse.ArgumentParser()
    here = pathlib.Path(__file__).resolve().parents[1]
    ap.add_argument("--out", default=str(here / "branches"))
    a = ap.parse_args()
    src = onnx.load(str(here / "mlp.onnx"))
    w = {t.name: numpy_helper.to_array(t) for t in src.graph.initializer}
    w1, b1, w2, b2, w3, b3 = (w["w1"], w["b1"], w["fc2.weight"], w["fc2.bias"], w["w3"], w["b3"])

    f32 = TensorProto.FLOAT
    logits_vi = lambda name: helper.make_tensor_value_info(name, f32, ["N", 10])

    # then: the MLP on outer initializers.
    then_nodes = [
        helper.make_node("MatMul", ["input", "hi.w1"], ["hi_mm1"], name="hi/MatMul"),
        helper.make_node("Add", ["hi_mm1", "hi.b1"], ["hi_a1"], name="hi/Add"),
        helper.make_node("Relu", ["hi_a1"], ["hi_r1"], name="hi/Relu"),
        helper.make_node("Gemm", ["hi_r1", "hi.w2", "hi.b2"], ["hi_g2"], name="hi/Gemm", transB=1),
        helper.make_node("Relu", ["hi_g2"], ["hi_r2"], name="hi/Relu_1"),
        helper.make_node("MatMul", ["hi_r2", "hi.w3"], ["hi_mm3"], name="hi/MatMul_1"),
        helper.make_node("Add", ["hi_mm3", "hi.b3"], ["hi_logits"], name="hi/Add_1"),
    ]
    then_g = helper.make_graph(then_nodes, "net16k", [], [logits_vi("hi_logits")])

    # The last layer, twice, in a nested If.
    def last_layer(tag, scale):
        nodes = [
            const(f"lo_{tag}_w3", w3 * scale),
            const(f"lo_{tag}_b3", b3 * scale),
            helper.make_node("MatMul", ["lo_r2", f"lo_{tag}_w3"], [f"lo_{tag}_mm3"], name=f"lo/{tag}/MatMul"),
            helper.make_node("Add", [f"lo_{tag}_mm3", f"lo_{tag}_b3"], [f"lo_{tag}_pre"], name=f"lo/{tag}/Add"),
        ]
        out = f"lo_{tag}_pre"
        if scale != 1.0:
            nodes += [const(f"lo_{tag}_unscale", np.array(1.0 / scale)),
                      helper.make_node("Mul", [out, f"lo_{tag}_unscale"], [f"lo_{tag}_out"], name=f"lo/{tag}/Mul")]
            out = f"lo_{tag}_out"
        else:
            nodes += [helper.make_node("Identity", [out], [f"lo_{tag}_out"], name=f"lo/{tag}/Identity")]
        return helper.make_graph(nodes, f"last_{tag}", [], [logits_vi(f"lo_{tag}_out")])

    else_nodes = [
        const("lo_two", np.array(2.0)),
        const("lo.w1", w1 * 0.5),
        const("lo.b1", b1),
        const("lo.w2", w2),
        const("lo.b2", b2),
        helper.make_node("Mul", ["input", "lo_two"], ["lo_x2"], name="lo/Mul"),
        helper.make_node("MatMul", ["lo_x2", "lo.w1"], ["lo_mm1"], name="lo/MatMul"),
        helper.make_node("Add", ["lo_mm1", "lo.b1"], ["lo_a1"], name="lo/Add"),
        helper.make_node("Relu", ["lo_a1"], ["lo_r1"], name="lo/Relu"),
        helper.make_node("Gemm", ["lo_r1", "lo.w2", "lo.b2"], ["lo_g2"], name="lo/Gemm", transB=1),
        helper.make_node("Relu", ["lo_g2"], ["lo_r2"], name="lo/Relu_1"),
        helper.make_node("Greater", ["sr", "zero_i64"], ["sr_pos"], name="lo/Greater"),
        helper.make_node("If", ["sr_pos"], ["lo_logits"], name="lo/If",
                         then_branch=last_layer("a", 1.0), else_branch=last_layer("b", 0.5)),
    ]
    else_g = helper.make_graph(else_nodes, "net8k", [], [logits_vi("lo_logits")])

    inits = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in
             [("hi.w1", w1), ("hi.b1", b1), ("hi.w2", w2), ("hi.b2", b2), ("hi.w3", w3), ("hi.b3", b3)]]
    inits += [numpy_helper.from_array(np.array(16000, np.int64), "sr16k"),
              numpy_helper.from_array(np.array(0, np.int64), "zero_i64")]
    main_nodes = [
        helper.make_node("Equal", ["sr", "sr16k"], ["is16k"], name="Equal"),
        helper.make_node("If", ["is16k"], ["logits"], name="If", then_branch=then_g, else_branch=else_g),
    ]
    g = helper.make_graph(
        main_nodes, "digits_branches",
        [helper.make_tensor_value_info("input", f32, ["N", 64]),
         helper.make_tensor_value_info("sr", TensorProto.INT64, [])],
        [logits_vi("logits")], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], producer_name="onnxq-models-gen")
    m.ir_version = 8
    m.doc_string = "the digits MLP behind an If on the sample rate (see make_branches.py)"
    onnx.checker.check_model(m, full_check=True)
    out = pathlib.Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    onnx.save(m, str(out / "digits_branches.onnx"))

    calib = np.load(here / "mlp.calib.npy")
    sr = np.where(np.arange(len(calib)) % 2 == 0, 16000, 8000).astype(np.int64)
    np.savez(out / "digits_branches.calib.npz", input=calib, sr=sr)

    import onnxruntime as ort

    ev = np.load(here / "mlp.eval.npz")
    s = ort.InferenceSession(str(out / "digits_branches.onnx"), providers=["CPUExecutionProvider"])
    ref = ort.InferenceSession(str(here / "mlp.onnx"), providers=["CPUExecutionProvider"])
    want = ref.run(None, {"input": ev["input"]})[0]
    for rate in (16000, 8000):
        got = s.run(None, {"input": ev["input"], "sr": np.array(rate, np.int64)})[0]
        acc = float((got.argmax(1) == ev["labels"]).mean())
        print(f"sr={rate}: top-1 {acc * 100:.2f} %, max |diff| vs mlp.onnx {np.abs(got - want).max():.2e}")
        assert np.abs(got - want).max() < 1e-4
    print(f"wrote {out / 'digits_branches.onnx'} ({(out / 'digits_branches.onnx').stat().st_size} bytes), calib {calib.shape}")


if __name__ == "__main__":
    main()
