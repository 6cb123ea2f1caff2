"""ONNX's own conformance cases for the quantization ops, run through `onnxq run`.

The onnx wheel ships the case definitions (`onnx/backend/test/case/node/`), not the generated
data; `onnx.backend.test.cmd_tools generate-data` of onnx 1.23 materialises only the model
cases, so the node cases are written here in the same layout (model.onnx +
test_data_set_N/input_j.pb, output_j.pb) from `onnx.backend.test.case.node.collect_testcases`,
keeping every case that uses one of the ops below. Each case then runs as a user would: the
.pb inputs converted to .npy, `onnxq run`, outputs compared with the expected .pb.

Cases using types the executor does not compute with (float8, float4, int4/uint4, int2/uint2,
int16/uint16, float16 scales) are listed in EXPECTED_REFUSALS with the error they must give;
a case that is neither passing nor listed fails, and so does a listed case that stops being
refused (the list must then shrink).
"""

import pathlib
import subprocess

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

OPS = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger",
       "DynamicQuantizeLinear"}

# case name -> text the planning error must contain.
EXPECTED_REFUSALS = {
    "test_dequantizelinear_e4m3fn": "element type f8e4m3fn is not supported",
    "test_dequantizelinear_e4m3fn_float16": "element type f8e4m3fn is not supported",
    "test_dequantizelinear_e4m3fn_zero_point": "element type f8e4m3fn is not supported",
    "test_dequantizelinear_e5m2": "element type f8e5m2 is not supported",
    "test_dequantizelinear_uint16": "element type u16 is not supported",
    "test_dequantizelinear_int16": "element type i16 is not supported",
    "test_dequantizelinear_uint4": "element type u4 is not supported",
    "test_dequantizelinear_int4": "element type i4 is not supported",
    "test_dequantizelinear_uint2": "element type u2 is not supported",
    "test_dequantizelinear_int2": "element type i2 is not supported",
    "test_dequantizelinear_float4e2m1": "element type f4e2m1 is not supported",
    "test_quantizelinear_e4m3fn": "element type f8e4m3fn is not supported",
    "test_quantizelinear_e5m2": "element type f8e5m2 is not supported",
    "test_quantizelinear_uint16": "element type u16 is not supported",
    "test_quantizelinear_int16": "element type i16 is not supported",
    "test_quantizelinear_uint4": "element type u4 is not supported",
    "test_quantizelinear_int4": "element type i4 is not supported",
    "test_quantizelinear_uint2": "element type u2 is not supported",
    "test_quantizelinear_int2": "element type i2 is not supported",
    "test_quantizelinear_float4e2m1": "element type f4e2m1 is not supported",
    "test_quantizelinear_blocked_symmetric": "QuantizeLinear to i16 is not supported",
    "test_qlinearmatmul_2D_uint8_float16": "element type f16 is not supported",
    "test_qlinearmatmul_3D_uint8_float16": "element type f16 is not supported",
    "test_qlinearmatmul_2D_int8_float16": "element type f16 is not supported",
    "test_qlinearmatmul_3D_int8_float16": "element type f16 is not supported",
}


def _cases():
    import warnings

    warnings.simplefilter("ignore")  # numpy overflow warnings of unrelated case definitions
    from onnx.backend.test.case import node

    return [c for c in node.collect_testcases(None) if any(n.op_type in OPS for n in c.model.graph.node)]


CASES = _cases()


@pytest.fixture(scope="session")
def node_data(tmp_path_factory):
    """The selected cases materialised as generate-data would (node/<case>/...)."""
    root = tmp_path_factory.mktemp("onnx-node")
    for case in CASES:
        d = root / "node" / case.name
        d.mkdir(parents=True)
        (d / "model.onnx").write_bytes(case.model.SerializeToString())
        for k, (inputs, outputs) in enumerate(case.data_sets):
            ds = d / f"test_data_set_{k}"
            ds.mkdir()
            g = case.model.graph
            for j, a in enumerate(inputs):
                t = a if isinstance(a, onnx.TensorProto) else numpy_helper.from_array(a, g.input[j].name)
                (ds / f"input_{j}.pb").write_bytes(t.SerializeToString())
            for j, a in enumerate(outputs):
                t = a if isinstance(a, onnx.TensorProto) else numpy_helper.from_array(a, g.output[j].name)
                (ds / f"output_{j}.pb").write_bytes(t.SerializeToString())
    return root / "node"


def read_pb(path):
    t = onnx.TensorProto()
    t.ParseFromString(pathlib.Path(path).read_bytes())
    return numpy_helper.to_array(t)


def npy_name(output_name):
    s = "".join(c if c.isalnum() or c in ".-_" else "_" for c in output_name)
    return s.lstrip(".") + ".npy"


def test_every_case_is_either_run_or_an_expected_refusal():
    names = {c.name for c in CASES}
    assert len(names) >= 40, sorted(names)
    assert not set(EXPECTED_REFUSALS) - names, "refusals listed for cases that no longer exist"


@pytest.mark.parametrize("name", sorted(c.name for c in CASES))
def test_node_case(name, node_data, onnxq_bin, tmp_path):
    d = node_data / name
    model = onnx.load(str(d / "model.onnx"))
    if name in EXPECTED_REFUSALS:
        r = subprocess.run([onnxq_bin, "run", str(d / "model.onnx")], capture_output=True, text=True)
        assert r.returncode != 0, f"{name} is no longer refused: remove it from EXPECTED_REFUSALS"
        assert "cannot plan the model" in r.stderr and EXPECTED_REFUSALS[name] in r.stderr, r.stderr
        assert "panicked" not in r.stderr
        return
    for ds in sorted(d.glob("test_data_set_*")):
        args = []
        for j, inp in enumerate(model.graph.input):
            a = read_pb(ds / f"input_{j}.pb")
            f = tmp_path / f"in_{j}.npy"
            np.save(f, a)
            args += ["--input", f"{inp.name}={f}"]
        out = tmp_path / ds.name
        r = subprocess.run([onnxq_bin, "run", str(d / "model.onnx"), *args, "-o", str(out)],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        for j, o in enumerate(model.graph.output):
            want = read_pb(ds / f"output_{j}.pb")
            got = np.load(out / npy_name(o.name))
            assert got.dtype == want.dtype and got.shape == want.shape, (o.name, got.dtype, want.dtype, got.shape,
                                                                         want.shape)
            if np.issubdtype(want.dtype, np.integer):
                np.testing.assert_array_equal(got, want, err_msg=f"{name}/{o.name}")
            else:
                np.testing.assert_allclose(got, want, rtol=1e-6, atol=0, err_msg=f"{name}/{o.name}")
