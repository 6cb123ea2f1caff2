"""digits_cnn_illcond.onnx: digits_cnn with one deliberately ill-conditioned layer, for the
sensitivity analysis tests (tests/sensitivity.rs).

Derived from digits_cnn.onnx (no training, deterministic, numpy + onnx only):
* the last BatchNormalization's channel 0 gets beta = -1000, so that channel is always 0
  after the ReLU (a dead channel, as pruning or training leave them);
* the classifier Gemm's weights reading that dead channel are set to +-25 (the other
  weights are ~0.1). The float model ignores them (they multiply exact zeros), but every
  output row of the Gemm now has a weight range ~100x too wide: per-channel int8 weights
  quantize the useful weights of /fc/Gemm to 0 or +-1 step.
So exactly one unit, /fc/Gemm, is hurt by int8; every other layer quantizes as well as in
digits_cnn. Calibration and evaluation data: digits_cnn's (same input).

    .venv/bin/python models/gen/make_ill_conditioned.py [--out models/illcond]
"""

import argparse
import pathlib

import numpy as np
import onnx
from onnx import numpy_helper


def main():
    ap = argparse.ArgumentParser()
    here = pathlib.Path(__file__).resolve().parents[1]
    # Not in models/ itself: the tests that walk every bundled model (snapshots, ORT
    # round trips) would need samples and snapshots for it.
    ap.add_argument("--out", default=str(here / "illcond"))
    a = ap.parse_args()
    m = onnx.load(str(here / "digits_cnn.onnx"))
    g = m.graph
    inits = {t.name: t for t in g.initializer}

    def set_init(name, arr):
        inits[name].CopyFrom(numpy_helper.from_array(arr.astype(np.float32), name))

    bn = [n for n in g.node if n.op_type == "BatchNormalization"][-1]
    beta = numpy_helper.to_array(inits[bn.input[2]]).copy()
    beta[0] = -1000.0
    set_init(bn.input[2], beta)
    gemm = [n for n in g.node if n.op_type == "Gemm"][0]
    w = numpy_helper.to_array(inits[gemm.input[1]]).copy()  # [10, F], transB=1
    channels = beta.shape[0]
    per_channel = w.shape[1] // channels  # Flatten of [N, C, h, w]: channel-major
    signs = np.where(np.arange(w.shape[0])[:, None] % 2 == 0, 25.0, -25.0)
    w[:, 0:per_channel] = signs
    set_init(gemm.input[1], w)
    m.doc_string = "digits_cnn with a dead channel 0 before /fc/Gemm whose weights are +-25 (see make_ill_conditioned.py)"
    onnx.checker.check_model(m, full_check=True)
    out = pathlib.Path(a.out) / "digits_cnn_illcond.onnx"
    onnx.save(m, str(out))

    import onnxruntime as ort

    ev = np.load(here / "digits_cnn.eval.npz")
    ref = ort.InferenceSession(str(here / "digits_cnn.onnx"), providers=["CPUExecutionProvider"])
    new = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    acc = lambda s: float((s.run(None, {"input": ev["input"]})[0].argmax(1) == ev["labels"]).mean())
    print(f"wrote {out} ({out.stat().st_size} bytes): float top-1 {acc(new) * 100:.2f} % "
          f"(digits_cnn {acc(ref) * 100:.2f} %)")


if __name__ == "__main__":
    main()
