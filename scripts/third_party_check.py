"""Tries onnxq on the third-party models fetched by third_party_models.py, as
a new user would: `inspect` must work, and `convert` must preserve outputs
exactly (ONNX Runtime on the original vs the converted model, same inputs).

    .venv/bin/python scripts/third_party_check.py [--bin target/release/onnxq] [--only a,b]

Prints one line per model and a closing "N passed, M failed" line.
"""

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from third_party_models import make_inputs  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]


def run(path, feeds):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).run(None, feeds)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", default=str(ROOT / "models/.cache/third_party"))
    ap.add_argument("--bin", default=str(ROOT / "target/release/onnxq"))
    ap.add_argument("--only", default="")
    a = ap.parse_args()
    cache = pathlib.Path(a.cache)
    manifest = json.loads((cache / "manifest.json").read_text())
    only = set(filter(None, a.only.split(",")))
    passed = failed = 0
    for m in manifest["models"]:
        if only and m["name"] not in only:
            continue
        src = cache / m["file"]
        status, detail = "ok", ""
        try:
            t0 = time.time()
            r = subprocess.run([a.bin, "inspect", "--summary-only", str(src)], capture_output=True, text=True)
            if r.returncode != 0:
                raise RuntimeError("inspect: " + r.stderr.strip())
            nodes = next(l for l in r.stdout.splitlines() if l.startswith("nodes:"))
            with tempfile.TemporaryDirectory() as d:
                out = pathlib.Path(d) / m["file"]
                r = subprocess.run([a.bin, "convert", str(src), "-o", str(out)], capture_output=True, text=True)
                if r.returncode != 0:
                    raise RuntimeError("convert: " + r.stderr.strip())
                elapsed = time.time() - t0
                feeds = make_inputs(m["sample_input"])
                want, got = run(src, feeds), run(out, feeds)
                same = len(want) == len(got) and all(
                    w.dtype == g.dtype and w.shape == g.shape and np.asarray(w).tobytes() == np.asarray(g).tobytes()
                    for w, g in zip(want, got)
                )
                if not same:
                    raise RuntimeError("outputs differ after convert")
                detail = f"{nodes}, {len(want)} output(s) bit-identical, inspect+convert {elapsed:.2f}s"
        except Exception as e:  # noqa: BLE001 - report and go on
            status, detail = "FAIL", str(e)[:300]
        print(f"{status:4} {m['name']:<24} {detail}")
        passed += status == "ok"
        failed += status != "ok"
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
