#!/usr/bin/env python3
"""Latency of the native executor vs tract fp32 and ONNX Runtime int8, measured in one run.

For every quantizable bundled model: `onnxq quantize` makes the QDQ models (the default fbgemm
preset: u8 activations × 7-bit s8 weights; and `--backend qnnpack --weight-dtype uint8`:
u8 × asymmetric u8 weights, QNNPACK's native form); then, single thread, on the model's sample
inputs (or a batch of calibration rows, --batch):
  - onnxq fbgemm:  `onnxq bench QDQ --engine onnxq --backend fbgemm` (fbgemm-preset model)
  - onnxq qnnpack: `onnxq bench QDQ_U8 --engine onnxq --backend qnnpack` (u8u8 model)
  - tract fp32:    `onnxq bench FLOAT --engine tract`
  - ORT int8:      onnxruntime on the fbgemm-preset QDQ model (default optimisation, 1 thread)
  - ORT u8u8:      onnxruntime on the u8u8 QDQ model
  - ORT fp32:      onnxruntime on the float model
Prints median latencies, peak RSS (each engine in its own process) and the ratios the issue
asks for (onnxq/tract, onnxq/ORT int8, onnxq qnnpack/ORT u8u8).

Each engine runs --rounds times (default 3), the engines taking turns, and keeps its best median.

Usage: scripts/bench_executor.py [--bin target/release/onnxq] [--runs 200] [--batch N] [--rounds 3]
                                 [--stat median|min] [--only digits_cnn,lstm]
"""

import argparse
import json
import pathlib
import re
import subprocess
import sys
import tempfile

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
NAMES = ["digits_cnn", "residual_block", "inverted_residual", "mlp", "transformer_layer", "lstm"]

ORT_CHILD = r"""
import json, resource, sys, time
import numpy as np, onnxruntime as ort
model, inputs, runs, warmup = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
so = ort.SessionOptions(); so.intra_op_num_threads = 1; so.inter_op_num_threads = 1
s = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
feeds = dict(np.load(inputs))
for _ in range(warmup): s.run(None, feeds)
t = []
for _ in range(runs):
    t0 = time.perf_counter(); s.run(None, feeds); t.append(time.perf_counter() - t0)
t.sort()
print(json.dumps({"median_ms": t[len(t) // 2] * 1e3, "min_ms": t[0] * 1e3,
                  "rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def onnxq_bench(binary, model, inputs, engine, runs, warmup, backend="fbgemm"):
    out = subprocess.run([binary, "bench", str(model), "--engine", engine, "--runs", str(runs), "--warmup",
                          str(warmup), "--input", str(inputs), "--backend", backend],
                         check=True, capture_output=True, text=True).stdout
    med = float(re.search(r"median ([0-9.]+) ms", out).group(1))
    mn = float(re.search(r"min ([0-9.]+) ms", out).group(1))
    rss = re.search(r"peak RSS (\d+) KiB", out)
    return {"median_ms": med, "min_ms": mn, "rss_kib": int(rss.group(1)) if rss else None}


def ort_bench(model, inputs, runs, warmup):
    out = subprocess.run([sys.executable, "-c", ORT_CHILD, str(model), str(inputs), str(runs), str(warmup)],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=str(ROOT / "target" / "release" / "onnxq"))
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--batch", type=int, default=0, help="calibration rows instead of the sample inputs")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; each engine keeps its best median")
    ap.add_argument("--stat", choices=["median", "min"], default="median",
                    help="the latency compared: the median of a round's runs (default), or the fastest run "
                         "(steadier when other jobs share the machine)")
    ap.add_argument("--only", default="", help="comma-separated model names (default: all)")
    args = ap.parse_args()
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="onnxq-bench-"))
    print(f"{'model':18} {'onnxq fbgemm':>12} {'onnxq qnnpack':>13} {'tract f32':>10} {'ORT int8':>9} "
          f"{'ORT u8u8':>9} {'ORT f32':>8}   {'q/tract':>7} {'q/ORTi8':>7} {'qnn/tract':>9} {'qnn/ORTu8':>9}   "
          f"RSS KiB (onnxq fbgemm / qnnpack / ORT int8)")
    stat = f"{args.stat}_ms"
    for name in [n for n in NAMES if not args.only or n in args.only.split(",")]:
        calib = next(p for p in (MODELS / f"{name}.calib.npy", MODELS / f"{name}.calib.npz") if p.exists())
        q = tmp / f"{name}.int8.onnx"
        subprocess.run([args.bin, "quantize", str(MODELS / f"{name}.onnx"), "-o", str(q), "--data", str(calib)],
                       check=True, capture_output=True)
        q8 = tmp / f"{name}.u8u8.onnx"
        subprocess.run([args.bin, "quantize", str(MODELS / f"{name}.onnx"), "-o", str(q8), "--data", str(calib),
                        "--backend", "qnnpack", "--weight-dtype", "uint8"], check=True, capture_output=True)
        inputs = MODELS / f"{name}.sample.npz"
        if args.batch:
            inputs = tmp / f"{name}.batch.npz"
            data = ({"input": np.load(calib)[:args.batch]} if calib.suffix == ".npy"
                    else {k: v[:args.batch] for k, v in np.load(calib).items()})
            np.savez(inputs, **data)
        engines = {
            "onnxq": lambda: onnxq_bench(args.bin, q, inputs, "onnxq", args.runs, args.warmup),
            "qnnpack": lambda: onnxq_bench(args.bin, q8, inputs, "onnxq", args.runs, args.warmup, "qnnpack"),
            "tract": lambda: onnxq_bench(args.bin, MODELS / f"{name}.onnx", inputs, "tract", args.runs,
                                         args.warmup),
            "ort8": lambda: ort_bench(q, inputs, args.runs, args.warmup),
            "ortu8": lambda: ort_bench(q8, inputs, args.runs, args.warmup),
            "ort32": lambda: ort_bench(MODELS / f"{name}.onnx", inputs, args.runs, args.warmup),
        }
        # The engines take turns, round after round, and each keeps its best median: this
        # shared VM has slow spells of seconds that would otherwise land on one engine.
        r = {}
        for _ in range(args.rounds):
            for k, run in engines.items():
                got = run()
                if k not in r or got[stat] < r[k][stat]:
                    r[k] = got
        m = {k: v[stat] for k, v in r.items()}
        print(f"{name:18} {m['onnxq']:10.4f}ms {m['qnnpack']:11.4f}ms {m['tract']:8.4f}ms {m['ort8']:7.4f}ms "
              f"{m['ortu8']:7.4f}ms {m['ort32']:6.4f}ms   {m['onnxq'] / m['tract']:7.2f} {m['onnxq'] / m['ort8']:7.2f} "
              f"{m['qnnpack'] / m['tract']:9.2f} {m['qnnpack'] / m['ortu8']:9.2f}   "
              f"{r['onnxq']['rss_kib']} / {r['qnnpack']['rss_kib']} / {r['ort8']['rss_kib']}")


if __name__ == "__main__":
    main()
