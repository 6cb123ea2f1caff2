#!/usr/bin/env python3
"""ONNX Runtime's quantizer vs onnxq on the bundled models, side by side.

For every bundled model this runs
  * dynamic: ORT `quantize_dynamic` (defaults, and per_channel=True) vs
    `onnxq optimize --passes "<optimize>,quantize-dynamic{ops=Conv;...},eliminate-dead-code"`;
  * static QDQ: ORT `quantize_static` (QDQ, MinMax, per-channel weights; a
    CalibrationDataReader over the bundled .calib data) vs `onnxq quantize --data`;
  * static QOperator: ORT `quantize_static(quant_format=QOperator)` vs
    `onnxq quantize` followed by `onnxq optimize --passes convert-qoperator,...`;
and prints the file size and the output SQNR (quantized vs float, both run in
ONNX Runtime on the model's .sample.npz) of each. Not part of the test suite.

    .venv/bin/python scripts/compare_ort_quantizer.py [--onnxq target/debug/onnxq] [MODEL ...]
"""

import argparse
import os
import pathlib
import subprocess
import sys
import tempfile

import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                      quantize_dynamic, quantize_static)

ROOT = pathlib.Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
OPTIMIZE = ("remove-identity,fold-constants,fold-batchnorm,batchnorm-to-mul-add,fuse-matmul-add,"
            "dedup-constants,eliminate-dead-code")
DEFAULT_MODELS = ["digits_cnn", "residual_block", "inverted_residual", "mlp", "transformer_layer", "lstm"]


def run(path, feeds):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def sqnr(want, got):
    want, got = want.astype(np.float64), got.astype(np.float64)
    return 10 * np.log10((want ** 2).sum() / max(((want - got) ** 2).sum(), 1e-30))


def calib_path(name):
    return next(p for p in (MODELS / f"{name}.calib.npy", MODELS / f"{name}.calib.npz") if p.exists())


class Reader(CalibrationDataReader):
    """One sample at a time from the bundled calibration data."""

    def __init__(self, name, input_names, limit=128):
        p = calib_path(name)
        if p.suffix == ".npy":
            arrays = {input_names[0]: np.load(p)}
        else:
            arrays = dict(np.load(p))
        n = min(len(next(iter(arrays.values()))), limit)
        self.feeds = iter([{k: v[i:i + 1] for k, v in arrays.items()} for i in range(n)])

    def get_next(self):
        return next(self.feeds, None)


def onnxq(binary, *args):
    r = subprocess.run([binary, *map(str, args)], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(r.stderr.strip().splitlines()[-1] if r.stderr.strip() else "failed")


def measure(name, make, out, feeds, want):
    try:
        make(out)
        return f"{sqnr(want, run(out, feeds)):6.1f} dB {os.path.getsize(out) / 1024:6.1f} KiB"
    except Exception as e:  # noqa: BLE001 - the table says what failed
        return f"failed: {str(e).splitlines()[0][:60]}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--onnxq", default=os.environ.get("ONNXQ_BIN", str(ROOT / "target" / "debug" / "onnxq")))
    ap.add_argument("models", nargs="*", default=DEFAULT_MODELS)
    a = ap.parse_args()
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="onnxq-vs-ort-"))
    rows = []
    for name in a.models:
        src = MODELS / f"{name}.onnx"
        feeds = dict(np.load(MODELS / f"{name}.sample.npz"))
        want = run(src, feeds)
        inputs = [i.name for i in ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).get_inputs()]
        fp32 = f"{os.path.getsize(src) / 1024:.1f} KiB"

        def ort_static(fmt):
            return lambda out: quantize_static(str(src), str(out), Reader(name, inputs), quant_format=fmt,
                                               per_channel=True, activation_type=QuantType.QUInt8,
                                               weight_type=QuantType.QInt8,
                                               calibrate_method=CalibrationMethod.MinMax)

        def onnxq_static(out):
            onnxq(a.onnxq, "quantize", src, "-o", out, "--data", calib_path(name))

        def onnxq_qop(out):
            qdq = tmp / f"{name}.onnxq.qdq-for-qop.onnx"
            onnxq_static(qdq)
            onnxq(a.onnxq, "optimize", qdq, "-o", out, "--passes", "convert-qoperator,eliminate-dead-code")

        def onnxq_dyn(out):
            onnxq(a.onnxq, "optimize", src, "-o", out, "--passes",
                  OPTIMIZE + ",quantize-dynamic{ops=Conv;GRU;Gemm;LSTM;MatMul;RNN},eliminate-dead-code")

        cells = {
            "dynamic ORT (per-tensor)": lambda out: quantize_dynamic(str(src), str(out)),
            "dynamic ORT (per-channel)": lambda out: quantize_dynamic(str(src), str(out), per_channel=True),
            "dynamic onnxq": onnxq_dyn,
            "QDQ ORT": ort_static(QuantFormat.QDQ),
            "QDQ onnxq": onnxq_static,
            "QOperator ORT": ort_static(QuantFormat.QOperator),
            "QOperator onnxq": onnxq_qop,
        }
        print(f"{name} (fp32 {fp32})", file=sys.stderr)
        for label, make in cells.items():
            out = tmp / f"{name}.{label.replace(' ', '_').replace('(', '').replace(')', '')}.onnx"
            rows.append((name, fp32, label, measure(name, make, out, feeds, want)))
    width = max(len(r[2]) for r in rows)
    print(f"{'model':<18} {'fp32':>10}  {'quantizer':<{width}}  SQNR / size")
    last = None
    for name, fp32, label, cell in rows:
        print(f"{name if name != last else '':<18} {fp32 if name != last else '':>10}  {label:<{width}}  {cell}")
        last = name


if __name__ == "__main__":
    main()
