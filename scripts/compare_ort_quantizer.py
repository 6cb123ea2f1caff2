#!/usr/bin/env python3
"""ONNX Runtime's quantizer vs onnxq on the bundled models, side by side.

For every bundled model this runs
  * dynamic: ORT `quantize_dynamic` (defaults, and per_channel=True) vs
    `onnxq optimize --passes "<optimize>,quantize-dynamic{ops=Conv;...},eliminate-dead-code"`;
  * static QDQ: ORT `quantize_static` (QDQ, MinMax, per-channel weights; a
    CalibrationDataReader over the bundled .calib data) vs `onnxq quantize --data`;
  * static QOperator: ORT `quantize_static(quant_format=QOperator)` vs
    `onnxq quantize` followed by `onnxq optimize --passes convert-qoperator,...`;
and `onnxq quantize --backend qnnpack` (8-bit weights) beside them; and prints the file size
and the output SQNR (quantized vs float, both run in ONNX Runtime) of each, on three sets: the
model's .sample.npz (3-4 rows), its calibration rows (up to 128, one at a time; in-sample for
both quantizers) and, where the model has one, its held-out .eval.npz (one row at a time). The
sample set is small, so a difference of a few tenths of a dB there is noise; the other two are
the comparison that counts. Not part of the test suite.

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


def rows_of(arrays, limit=128):
    """One feed dict per row of `arrays` (every array's first axis is the sample axis)."""
    n = min(len(next(iter(arrays.values()))), limit)
    return [{k: v[i:i + 1] for k, v in arrays.items()} for i in range(n)]


def load_rows(path, input_names, limit=128):
    """The rows of a .npy (the model's one input) or .npz (keyed by input name; other keys,
    e.g. labels, are dropped)."""
    if path.suffix == ".npy":
        return rows_of({input_names[0]: np.load(path)}, limit)
    z = np.load(path)
    return rows_of({k: z[k] for k in input_names}, limit)


def run_rows(path, rows):
    """The first output over `rows`, concatenated."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(None, r)[0].reshape(1, -1) for r in rows])


def sqnr(want, got):
    want, got = want.astype(np.float64), got.astype(np.float64)
    return 10 * np.log10((want ** 2).sum() / max(((want - got) ** 2).sum(), 1e-30))


def calib_path(name):
    return next(p for p in (MODELS / f"{name}.calib.npy", MODELS / f"{name}.calib.npz") if p.exists())


class Reader(CalibrationDataReader):
    """One sample at a time from the bundled calibration rows ([`load_rows`])."""

    def __init__(self, rows):
        self.feeds = iter(rows)

    def get_next(self):
        return next(self.feeds, None)


def onnxq(binary, *args):
    r = subprocess.run([binary, *map(str, args)], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(r.stderr.strip().splitlines()[-1] if r.stderr.strip() else "failed")


def measure(make, out, sets):
    """`make(out)`, then the SQNR on each of `sets` ((feeds or row list, float output) pairs)
    and the file size."""
    try:
        make(out)
        cells = []
        for feeds, want in sets:
            if feeds is None:
                cells.append(f"{'-':>7}")
                continue
            got = run(out, feeds) if isinstance(feeds, dict) else run_rows(out, feeds)
            cells.append(f"{sqnr(want, got):7.1f}")
        return "  ".join(cells) + f"  {os.path.getsize(out) / 1024:7.1f}"
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
        inputs = [i.name for i in ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).get_inputs()]
        calib_rows = load_rows(calib_path(name), inputs)
        eval_path = MODELS / f"{name}.eval.npz"
        eval_rows = load_rows(eval_path, inputs, limit=10**9) if eval_path.exists() else None
        sets = [(feeds, run(src, feeds)), (calib_rows, run_rows(src, calib_rows)),
                (eval_rows, run_rows(src, eval_rows) if eval_rows else None)]
        fp32 = f"{os.path.getsize(src) / 1024:.1f} KiB"

        def ort_static(fmt):
            return lambda out: quantize_static(str(src), str(out), Reader(calib_rows), quant_format=fmt,
                                               per_channel=True, activation_type=QuantType.QUInt8,
                                               weight_type=QuantType.QInt8,
                                               calibrate_method=CalibrationMethod.MinMax)

        def onnxq_static(out, *extra):
            onnxq(a.onnxq, "quantize", src, "-o", out, "--data", calib_path(name), *extra)

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
            "QDQ onnxq --backend qnnpack": lambda out: onnxq_static(out, "--backend", "qnnpack"),
            "QOperator ORT": ort_static(QuantFormat.QOperator),
            "QOperator onnxq": onnxq_qop,
        }
        print(f"{name} (fp32 {fp32})", file=sys.stderr)
        for label, make in cells.items():
            out = tmp / f"{name}.{label.replace(' ', '_').replace('(', '').replace(')', '')}.onnx"
            rows.append((name, fp32, label, measure(make, out, sets)))
    width = max(len(r[2]) for r in rows)
    print(f"{'':<18} {'':>10}  {'':<{width}}  {'SQNR (dB) on':^24}")
    print(f"{'model':<18} {'fp32':>10}  {'quantizer':<{width}}  {'sample':>7}  {'calib':>7}  {'eval':>7}  {'KiB':>7}")
    last = None
    for name, fp32, label, cell in rows:
        print(f"{name if name != last else '':<18} {fp32 if name != last else '':>10}  {label:<{width}}  {cell}")
        last = name


if __name__ == "__main__":
    main()
