"""Generates tests/data/ort_refs.json: ONNX Runtime's percentile and entropy
calibration ranges for onnxq's PercentileObserver / EntropyObserver. Run with
the onnxruntime venv, after gen_observer_refs.py (it reuses that file's
float32 datasets so both reference sets see identical inputs):

    /work/pyenv-dev/bin/python tests/data/gen_ort_refs.py

It drives onnxruntime.quantization.calibrate.HistogramCollector directly:
"stream" calls collect() once per batch (what a streaming calibrator does),
"once" calls it once with all batches (what ORT's HistogramCalibrater does
after buffering every batch).
"""
import base64
import contextlib
import io
import json
import os

import numpy as np
import onnxruntime
from onnxruntime.quantization.calibrate import HistogramCollector

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(HERE, "observer_refs.json")
OUT = os.path.join(HERE, "ort_refs.json")


def load_batches(refs, name):
    out = []
    for b in refs["datasets"][name]:
        a = np.frombuffer(base64.b64decode(b["data"]), dtype="<f4").astype(np.float32)
        out.append(a.reshape(b["shape"]))
    return out


def run(method, symmetric, num_bins, num_quantized_bins, percentile, batches, mode):
    col = HistogramCollector(
        method=method,
        symmetric=symmetric,
        num_bins=num_bins,
        num_quantized_bins=num_quantized_bins,
        percentile=percentile,
        scenario="same",
    )
    with contextlib.redirect_stdout(io.StringIO()):
        if mode == "stream":
            for b in batches:
                col.collect({"t": [b]})
        else:
            col.collect({"t": list(batches)})
        res = col.compute_collection_result()["t"]
    hist = col.histogram_dict["t"]
    return {
        "range": [float(res[0]), float(res[1])],
        "num_bins_final": int(len(hist[0])),
        "hist_total": int(np.sum(hist[0])),
    }


def main():
    refs = json.load(open(SRC))
    names = ["gauss_weights", "pareto_act", "growing", "relu_act", "gauss_outliers"]
    cases = []
    for name in names:
        batches = load_batches(refs, name)
        for mode in ["stream", "once"]:
            for symmetric in [True, False]:
                for p in [99.999, 99.99, 99.9]:
                    c = dict(method="percentile", symmetric=symmetric, num_bins=2048, num_quantized_bins=128, percentile=p)
                    cases.append({"dataset": name, "mode": mode, "config": c, "expected": run(**c, batches=batches, mode=mode)})
            for nb, nq in [(128, 128), (2048, 128), (512, 128)]:
                c = dict(method="entropy", symmetric=False, num_bins=nb, num_quantized_bins=nq, percentile=99.999)
                cases.append({"dataset": name, "mode": mode, "config": c, "expected": run(**c, batches=batches, mode=mode)})
    out = {"onnxruntime_version": onnxruntime.__version__, "numpy_version": np.__version__, "source": "observer_refs.json", "cases": cases}
    with open(OUT, "w") as f:
        json.dump(out, f, separators=(",", ":"))
    print(f"wrote {OUT}: {len(cases)} cases, {os.path.getsize(OUT)} bytes")


if __name__ == "__main__":
    main()
