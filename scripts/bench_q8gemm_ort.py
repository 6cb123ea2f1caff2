#!/usr/bin/env python3
"""ONNX Runtime's u8 x u8 integer GEMM throughput on the shapes of `cargo bench --bench q8gemm`,
single thread, to set beside onnxq's qnnpack-style q8gemm figures (same machine, same run).

For each M x K x N in {512^3, 1024^3, 3136x576x64}:
  - ORT MatMulInteger u8 x u8 (A input, B constant, both zero points): i32 output, no
    requantization (so ORT does strictly less work than q8gemm, which requantizes to u8);
  - ORT QLinearMatMul u8 x u8 (the same with requantization to u8, as q8gemm).
And the depthwise 3x3 conv of the cargo bench (56x56, stride 1, pad 1, C = 64..144) as ORT
QLinearConv u8 x u8 (group = C; per-tensor weight zero point 128, and per-channel ones),
GOPS = 2*56*56*9*C / best time. The same depthwise conv (3x3 and 5x5, stride 1 and 2) with u8
activations x s8 weights, the fbgemm family's types: symmetric per-channel (w_zp = 0 per channel)
and per-tensor (w_zp = 0) s8 weights, full range; with --cargo-bench also `cargo bench --bench
qconv -- dw` and the ratio of onnxq's best depthwise kernel (full-range weights) to ORT's
best u8s8 QLinearConv on the same shape.
GOPS = 2*M*K*N / best time (minimum over runs, as the cargo bench: the 2-vCPU machine is
shared and medians swing). With --cargo-bench, also runs `cargo bench --bench q8gemm` and
prints the ratio of onnxq's best kernel to ORT's MatMulInteger.

Usage: .venv/bin/python scripts/bench_q8gemm_ort.py [--cargo-bench] [--seconds 1.0]
"""

import argparse
import os
import re
import subprocess
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

SHAPES = [(512, 512, 512), (1024, 1024, 1024), (3136, 576, 64)]


def model(op, m, k, n, rng):
    b = rng.integers(0, 256, (k, n), dtype=np.uint8)
    inits = [numpy_helper.from_array(b, "B"), numpy_helper.from_array(np.array(117, np.uint8), "a_zp"),
             numpy_helper.from_array(np.array(131, np.uint8), "b_zp")]
    if op == "MatMulInteger":
        node = helper.make_node("MatMulInteger", ["A", "B", "a_zp", "b_zp"], ["Y"])
        out = helper.make_tensor_value_info("Y", TensorProto.INT32, [m, n])
    else:
        inits += [numpy_helper.from_array(np.array(0.02, np.float32), "a_s"),
                  numpy_helper.from_array(np.array(0.003, np.float32), "b_s"),
                  numpy_helper.from_array(np.array(40.0, np.float32), "y_s"),
                  numpy_helper.from_array(np.array(128, np.uint8), "y_zp")]
        node = helper.make_node("QLinearMatMul", ["A", "a_s", "a_zp", "B", "b_s", "b_zp", "y_s", "y_zp"], ["Y"])
        out = helper.make_tensor_value_info("Y", TensorProto.UINT8, [m, n])
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("A", TensorProto.UINT8, [m, k])], [out],
                          initializer=inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()


def dw_model(c, k, s, rng, signed=False, per_channel=False):
    """QLinearConv depthwise k x k, stride s, 56x56 (pad k // 2), u8 activations. `signed`: s8
    symmetric weights, per-channel scales with `per_channel` (else per tensor); otherwise u8
    weights with per-channel scales and zero point 128, or random per-channel zero points with
    `per_channel` (ORT takes a much slower path for those, measured ~0.3 GOPS)."""
    o = (56 + 2 * (k // 2) - k) // s + 1
    if signed:
        w = rng.integers(-128, 128, (c, 1, k, k), dtype=np.int8)
        w_s = np.full(c, 0.003, np.float32) if per_channel else np.array(0.003, np.float32)
        w_zp = np.zeros(c, np.int8) if per_channel else np.array(0, np.int8)
    else:
        w = rng.integers(0, 256, (c, 1, k, k), dtype=np.uint8)
        w_s = np.full(c, 0.003, np.float32)
        w_zp = rng.integers(0, 256, c, dtype=np.uint8) if per_channel else np.array(128, np.uint8)
    inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(np.array(0.02, np.float32), "x_s"),
             numpy_helper.from_array(np.array(117, np.uint8), "x_zp"),
             numpy_helper.from_array(w_s, "w_s"), numpy_helper.from_array(w_zp, "w_zp"),
             numpy_helper.from_array(np.array(0.5, np.float32), "y_s"),
             numpy_helper.from_array(np.array(128, np.uint8), "y_zp")]
    node = helper.make_node("QLinearConv", ["X", "x_s", "x_zp", "W", "w_s", "w_zp", "y_s", "y_zp"], ["Y"],
                            group=c, pads=[k // 2] * 4, kernel_shape=[k, k], strides=[s, s])
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", TensorProto.UINT8, [1, c, 56, 56])],
                          [helper.make_tensor_value_info("Y", TensorProto.UINT8, [1, c, o, o])], initializer=inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString(), o


def ort_dw_gops(c, k, s, seconds, signed=False, per_channel=False):
    """GOPS (2·MACs / best time) of `dw_model` in ORT, single thread."""
    rng = np.random.default_rng(7)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    m, o = dw_model(c, k, s, rng, signed, per_channel)
    sess = ort.InferenceSession(m, so, providers=["CPUExecutionProvider"])
    x = rng.integers(0, 256, (1, c, 56, 56), dtype=np.uint8)
    return 2 * o * o * k * k * c / best_seconds(lambda: sess.run(None, {"X": x}), seconds) / 1e9


def best_seconds(f, seconds):
    f()
    f()
    t = []
    start = time.perf_counter()
    while len(t) < 5 or (time.perf_counter() - start < seconds and len(t) < 200):
        t0 = time.perf_counter()
        f()
        t.append(time.perf_counter() - t0)
    return min(t)


def ort_gops(op, m, k, n, seconds):
    rng = np.random.default_rng(42)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    s = ort.InferenceSession(model(op, m, k, n, rng), so, providers=["CPUExecutionProvider"])
    a = rng.integers(0, 256, (m, k), dtype=np.uint8)
    return 2 * m * k * n / best_seconds(lambda: s.run(None, {"A": a}), seconds) / 1e9


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cargo-bench", action="store_true")
    ap.add_argument("--seconds", type=float, default=1.0)
    args = ap.parse_args()
    print(f"ONNX Runtime {ort.__version__}, single thread, GOPS (best of runs)")
    print(f"{'':28} {'512^3':>8} {'1024^3':>8} {'3136x576x64':>12}")
    ort_mmi = []
    for op in ["MatMulInteger", "QLinearMatMul"]:
        g = [ort_gops(op, m, k, n, args.seconds) for (m, k, n) in SHAPES]
        if op == "MatMulInteger":
            ort_mmi = g
        print(f"{'ORT ' + op + ' u8u8':28} {g[0]:8.1f} {g[1]:8.1f} {g[2]:12.1f}")
    chans = (64, 96, 128, 144)
    print(f"{'depthwise 3x3 s1 56x56':28} " + " ".join(f"{'C=' + str(c):>8}" for c in chans))
    print(f"{'ORT QLinearConv dw u8u8 pc zp':28} "
          + " ".join(f"{ort_dw_gops(c, 3, 1, args.seconds, per_channel=True):8.1f}" for c in chans))
    # u8 x u8 with per-tensor zero point 128 ("pt"), and u8 x s8 (fbgemm family's types), symmetric weights; keyed like the qconv bench's cases.
    ort_s8 = {}
    ort_u8 = {}
    for (k, s) in [(3, 1), (3, 2), (5, 1), (5, 2)]:
        print(f"{f'depthwise {k}x{k} s{s} 56x56':28} " + " ".join(f"{'C=' + str(c):>8}" for c in chans))
        g = [ort_dw_gops(c, k, s, args.seconds) for c in chans]
        ort_u8.update({(k, s, c): v for c, v in zip(chans, g)})
        print(f"{'ORT QLinearConv dw u8u8 pt':28} " + " ".join(f"{v:8.1f}" for v in g))
        for per_channel in (True, False):
            g = [ort_dw_gops(c, k, s, args.seconds, signed=True, per_channel=per_channel) for c in chans]
            for c, v in zip(chans, g):
                ort_s8[(k, s, c)] = max(ort_s8.get((k, s, c), 0.0), v)
            label = "ORT QLinearConv dw u8s8 " + ("pc" if per_channel else "pt")
            print(f"{label:28} " + " ".join(f"{v:8.1f}" for v in g))
    if args.cargo_bench:
        env = dict(os.environ, CARGO_TARGET_DIR=os.environ.get("CARGO_TARGET_DIR", "target"))
        out = subprocess.run(["cargo", "bench", "--bench", "qconv", "--", "dw"], check=True,
                             capture_output=True, text=True, env=env).stdout
        print(out)
        best = {}
        for line in out.splitlines():
            m = re.match(r"dw(\d)x\d C=(\d+) 56x56 s(\d)\s+(\S+)\s+Depthwise\s+full\s+(\S+)\s+(\S+)\s+(\S+)", line)
            if m:
                key = (int(m[1]), int(m[3]), int(m[2]))
                if float(m[7]) > best.get(key, (0.0, ""))[0]:
                    best[key] = (float(m[7]), m[5])
        print("onnxq best depthwise (full-range s8 weights, best run) / ORT QLinearConv u8s8 (best of pc/pt):")
        for key in sorted(best):
            if key in ort_s8:
                g, uk = best[key]
                print(f"  dw{key[0]}x{key[0]} s{key[1]} C={key[2]:<4} {uk:28} {g:7.1f} / {ort_s8[key]:6.1f}"
                      f" = {g / ort_s8[key]:5.2f}x")
        out = subprocess.run(["cargo", "bench", "--bench", "q8gemm", "--", "q8"], check=True,
                             capture_output=True, text=True, env=env).stdout
        print(out)
        # The q8gemm bench's "depthwise kxk sS" section: per kernel, "pt" rows (w_zp = 128).
        print("onnxq qnnpack depthwise (w_zp = 128) / ORT QLinearConv u8u8 (w_zp = 128):")
        ks = None
        for line in out.splitlines():
            m = re.match(r"dw(\d)x\d s(\d)\s+C=", line)
            if m:
                ks = (int(m[1]), int(m[2]))
                continue
            f = line.split()
            if ks and len(f) == 2 + len(chans) and f[0].startswith("q8dwconv_") and f[1] == "pt":
                print(f"  dw{ks[0]}x{ks[0]} s{ks[1]} {f[0]:24} " + " ".join(
                    f"{float(v) / ort_u8[(ks[0], ks[1], c)]:6.2f}x" for v, c in zip(f[2:], chans)))
        for line in out.splitlines():
            f = line.split()
            if f and f[0].startswith("q8gemm_") and len(f) >= 5 and not re.search("scalar", f[0]):
                g = [float(x) for x in f[2:5]]
                print(f"{f[0] + ' / ORT MatMulInteger':40} " + " ".join(f"{a / b:7.2f}x" for a, b in zip(g, ort_mmi)))


if __name__ == "__main__":
    main()
