"""Wall time of the whole quantization job on digits_cnn with 64 calibration
samples: `onnxq quantize` (histogram calibration, the fbgemm preset) against
ONNX Runtime's quantize_static with Entropy calibration (QDQ, per channel),
measured in the same run, best of 3.

    .venv/bin/python scripts/time_quantize_vs_ort.py [--bin target/release/onnxq] [--samples 64]
"""

import argparse
import logging
import pathlib
import subprocess
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]


def main():
    logging.getLogger().setLevel(logging.ERROR)
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=str(ROOT / "target/release/onnxq"))
    ap.add_argument("--samples", type=int, default=64)
    a = ap.parse_args()
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    model = ROOT / "models/digits_cnn.onnx"
    data = np.load(ROOT / "models/digits_cnn.calib.npy")[: a.samples]
    with tempfile.TemporaryDirectory() as d:
        d = pathlib.Path(d)
        np.save(d / "calib.npy", data)

        def onnxq():
            subprocess.run([a.bin, "quantize", str(model), "-o", str(d / "q.onnx"), "--data", str(d / "calib.npy")],
                           check=True, capture_output=True)

        def ort_entropy():
            class Reader(CalibrationDataReader):
                def __init__(self):
                    self.it = iter([{"input": data[i:i + 1]} for i in range(len(data))])

                def get_next(self):
                    return next(self.it, None)

            quantize_static(str(model), str(d / "ort.onnx"), Reader(), quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                            calibrate_method=CalibrationMethod.Entropy)

        for name, f in (("onnxq quantize (histogram)", onnxq), ("ORT quantize_static (Entropy)", ort_entropy)):
            best = float("inf")
            for _ in range(3):
                t = time.perf_counter()
                f()
                best = min(best, time.perf_counter() - t)
            print(f"{name:<32} {best:8.3f} s  ({a.samples} samples)")


if __name__ == "__main__":
    main()
