"""`onnxq run --backend qnnpack` (u8 x u8 kernels, fixed-point requantization) on the bundled
models, against ONNX Runtime, against the fbgemm backend and against its own scalar kernels.

Models are quantized five ways:
- `qnnpack`: `--backend qnnpack` (its preset: per-tensor symmetric weights stored as u8 with
  zero point 128, which ONNX Runtime runs on its exact u8u8 kernels): >= 99.9 % of elements
  equal to ORT's (with its QDQ fusions on), none more than 1 LSB apart (a float tail: 2 LSB of
  its input);
- `u8u8`: `--backend qnnpack --weight-dtype uint8` (QNNPACK's native asymmetric u8 weights;
  ONNX Runtime runs them on its exact u8u8 kernels): >= 99.9 % of elements equal to ORT's,
  none more than 1 LSB apart (measured: 100 %);
- `fbgemm`: the default preset (7-bit s8 weights, converted to u8 at pack time): same bound;
- `qop_u8u8`: `u8u8` in QOperator form (QLinearConv / QLinearMatMul): same bound;
- `s8`: `--backend qnnpack --weight-dtype int8` (full-range s8 weights). ONNX Runtime's AVX2 u8s8 kernels
  (`vpmaddubsw`) saturate on such weights, so ORT is not a reference there (its int8 result
  differs from its own float QDQ graph by many LSB); the qnnpack backend is compared with the
  fbgemm backend instead (both exact integer products): >= 99.9 % equal; single-LSB
  requantization differences amplified by later layers reach 3 LSB on a few elements.
Rates are printed with `pytest -s`.
"""

import os
import subprocess

import numpy as np
import onnx
import pytest

from conftest import MODELS
from test_executor_ort import EXACT_MIN, QUANTIZABLE, calib_slice, npy_name, output_scale, run_ort_session

PRESETS = {
    "u8u8": ["--backend", "qnnpack", "--weight-dtype", "uint8"],
    "fbgemm": [],
    "qnnpack": ["--backend", "qnnpack"],
    "s8": ["--backend", "qnnpack", "--weight-dtype", "int8"],
    "qop_u8u8": ["--backend", "qnnpack", "--weight-dtype", "uint8", "--format", "qoperator"],
}


@pytest.fixture(scope="module")
def quantized(onnxq_bin, tmp_path_factory):
    """(name, preset) -> quantized model path, made once per module."""
    d = tmp_path_factory.mktemp("q8")
    cache = {}

    def get(name, preset):
        if (name, preset) not in cache:
            calib = next(p for p in (MODELS / f"{name}.calib.npy", MODELS / f"{name}.calib.npz") if p.exists())
            out = d / f"{name}.{preset}.onnx"
            # All int8 (no accuracy guard): these tests compare integer kernels. A unit the
            # guard keeps float runs on each engine's float kernels (ORT's fused NCHWc Conv
            # rounds differently), and the 1-LSB flips after it reach the outputs.
            subprocess.run([onnxq_bin, "quantize", str(MODELS / f"{name}.onnx"), "-o", str(out), "--data", str(calib),
                            "--accuracy-guard", "off", *PRESETS[preset]], check=True, capture_output=True)
            cache[(name, preset)] = out
        return cache[(name, preset)]

    return get


def run(onnxq_bin, model, feeds, tmp_path, tag, *extra, env=None):
    inp = tmp_path / "inputs.npz"
    np.savez(inp, **feeds)
    out = tmp_path / f"out-{tag}"
    r = subprocess.run([onnxq_bin, "run", str(model), "--input", str(inp), "-o", str(out), *extra],
                       capture_output=True, text=True, env={**os.environ, **(env or {})})
    assert r.returncode == 0, r.stderr
    return out


def feeds_for(name, data):
    return dict(np.load(MODELS / f"{name}.sample.npz")) if data == "sample" else calib_slice(name)


def tail_input_scale(m, oname):
    """For an output computed in float after the last DequantizeLinear (a float tail such as
    the final HardSwish), that DequantizeLinear's scale."""
    producer = {o: n for n in m.graph.node for o in n.output}
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in m.graph.initializer}
    v = oname
    while v in producer:
        n = producer[v]
        if n.op_type == "DequantizeLinear":
            return float(np.max(inits[n.input[1]])) if n.input[1] in inits else None
        v = n.input[0]
    return None


def compare(label, model, names, got_dir, refs, tail_lsb=0):
    """Prints and returns (exact rate, max LSB) per output (None for a float tail). A float tail
    may differ by `tail_lsb` steps of its quantized input (times 2, the steepest slope of the
    tail ops used here: HardSwish's 1.5)."""
    m = onnx.load(str(model))
    res = []
    for oname, ref in zip(names, refs):
        got = np.load(got_dir / npy_name(oname))
        assert got.shape == ref.shape and got.dtype == ref.dtype, (got.shape, ref.shape)
        scale = output_scale(m, oname)
        if scale is None:
            err = float(np.max(np.abs(got.astype(np.float64) - ref)) / max(float(np.max(np.abs(ref))), 1e-30))
            print(f"{label}/{oname} ({got.size} elements, float tail): max error {err:.2e} x max|output|")
            tol = 1e-5
            if tail_lsb:
                tol = max(tol, 2 * tail_lsb * tail_input_scale(m, oname) / max(float(np.max(np.abs(ref))), 1e-30))
            assert err <= tol, f"{label}/{oname}: max error {err:e} x max|output| (allowed {tol:e})"
            res.append(None)
            continue
        lsb = np.round(np.abs(got.astype(np.float64) - ref) / scale)
        exact = float(np.mean(lsb == 0))
        print(f"{label}/{oname} ({got.size} elements): exact {exact * 100:.4f} %, max {lsb.max():.0f} LSB")
        res.append((exact, float(lsb.max())))
    return res


@pytest.mark.parametrize("data", ["sample", "calib"])
@pytest.mark.parametrize("preset", ["qnnpack", "u8u8", "fbgemm", "qop_u8u8"])
@pytest.mark.parametrize("name", QUANTIZABLE)
def test_qnnpack_backend_equals_ort(name, preset, data, onnxq_bin, quantized, tmp_path):
    q = quantized(name, preset)
    feeds = feeds_for(name, data)
    out = run(onnxq_bin, q, feeds, tmp_path, "qnnpack", "--backend", "qnnpack")
    names, refs = run_ort_session(q, feeds)
    # The qnnpack preset on inverted_residual: the fixed-point and ORT's float requantization
    # round a few ties apart (1 LSB at the unit, 0.06 % of the calibration slice's outputs
    # after the head Conv), which the float HardSwish tail carries: at most 2 LSB of its input.
    tail_lsb = 2 if preset == "qnnpack" else 0
    for r in compare(f"{name}[{preset},{data}] qnnpack vs ORT", q, names, out, refs, tail_lsb=tail_lsb):
        if r is not None:
            # The float LSTM before a QuantizeLinear: see test_executor_ort.EXACT_MIN.
            assert r[0] >= EXACT_MIN.get(name, 0.999) and r[1] <= 1, r


@pytest.mark.parametrize("name", QUANTIZABLE)
def test_qnnpack_backend_equals_fbgemm_on_full_range_s8_weights(name, onnxq_bin, quantized, tmp_path):
    q = quantized(name, "s8")
    feeds = feeds_for(name, "calib")
    a = run(onnxq_bin, q, feeds, tmp_path, "qnnpack", "--backend", "qnnpack")
    b = run(onnxq_bin, q, feeds, tmp_path, "fbgemm", "--backend", "fbgemm")
    names = [o.name for o in onnx.load(str(q)).graph.output]
    refs = [np.load(b / npy_name(n)) for n in names]
    # The two backends round `acc · mult` differently in rare cases (fbgemm: the f32 product;
    # qnnpack: the exact product), 1 LSB at the unit; a later layer may amplify that (measured
    # on inverted_residual: 99.96 % equal, 3 LSB max after the SE block and HardSwish).
    for r in compare(f"{name}[s8] qnnpack vs fbgemm", q, names, a, refs, tail_lsb=4):
        if r is not None:
            assert r[0] >= 0.999 and r[1] <= 4, r


@pytest.mark.parametrize("preset", ["u8u8", "s8"])
@pytest.mark.parametrize("name", QUANTIZABLE)
def test_qnnpack_backend_equals_its_scalar_kernels(name, preset, onnxq_bin, quantized, tmp_path):
    """The SIMD kernels the host picks and the portable scalar ones (`ONNXQ_ISA=scalar`) give
    the same bytes on every model."""
    q = quantized(name, preset)
    feeds = feeds_for(name, "calib")
    simd = run(onnxq_bin, q, feeds, tmp_path, "simd", "--backend", "qnnpack")
    scalar = run(onnxq_bin, q, feeds, tmp_path, "scalar", "--backend", "qnnpack",
                 env={"ONNXQ_ISA": "scalar", "ONNXQ_ISA_ENSURE": "1"})
    files = sorted(p.name for p in simd.glob("*.npy"))
    assert files and files == sorted(p.name for p in scalar.glob("*.npy"))
    for f in files:
        assert np.array_equal(np.load(simd / f), np.load(scalar / f)), f"{name}[{preset}]/{f}"


@pytest.mark.parametrize("name", QUANTIZABLE)
def test_half_away_rounding_stays_within_one_lsb_of_ort(name, onnxq_bin, quantized, tmp_path):
    """QNNPACK's native tie rule (ties away from zero) differs from ONNX's half-even only on
    exact ties of `acc · mult`: measured rate printed, bound asserted (<= 1 LSB, >= 99 %)."""
    q = quantized(name, "u8u8")
    feeds = feeds_for(name, "calib")
    out = run(onnxq_bin, q, feeds, tmp_path, "away", "--backend", "qnnpack", "--q8-rounding", "half-away")
    names, refs = run_ort_session(q, feeds)
    for r in compare(f"{name}[u8u8,half-away] qnnpack vs ORT", q, names, out, refs):
        if r is not None:
            assert r[0] >= 0.99 and r[1] <= 1, r


def test_fallback_units_are_named(onnxq_bin, quantized, tmp_path):
    """A unit the qnnpack kernels do not take runs on the fbgemm ones, and `--verbose` says
    which and why (here: none in the bundled models any more, so the list is clean)."""
    q = quantized("transformer_layer", "u8u8")
    np.savez(tmp_path / "in.npz", **feeds_for("transformer_layer", "sample"))
    r = subprocess.run([onnxq_bin, "run", str(q), "--input", str(tmp_path / "in.npz"), "--backend", "qnnpack",
                        "--verbose"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    lowered = [l for l in r.stderr.splitlines() if l.startswith("lowered:")]
    assert any("on q8gemm" in l for l in lowered), r.stderr
    for l in lowered:
        if "fbgemm fallback" in l:
            assert "MatMul" in l and "`" in l, l
