"""Generates tests/data/observer_refs.json: PyTorch observer outputs for onnxq's
observe module. Run with the torch venv:

    /work/pyenv-gen/bin/python tests/data/gen_observer_refs.py

Inputs come from numpy's PCG64 with fixed seeds and are stored in the JSON as
little-endian float32 base64, so the Rust tests need no PRNG port. Reference
scales are stored as the exact float32 value (a JSON number that parses back to
the same f32). Torch's float32 kernels were run on an AVX2 (FMA) CPU build; its
linspace uses FMA there, which the Rust port emulates.
"""
import base64
import json
import os
import warnings

import numpy as np
import torch
from torch.ao.quantization.observer import (
    HistogramObserver,
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MovingAveragePerChannelMinMaxObserver,
    PerChannelMinMaxObserver,
)

warnings.filterwarnings("ignore")
torch.manual_seed(0)
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "observer_refs.json")

# The two 3x4 tensors exactly as printed in the seed document (4 decimals).
SEED_INPUTS = [
    [[-0.0590, 1.1674, 0.7119, -1.1270], [-1.3974, 0.5077, -0.5601, 0.0683], [-0.0929, 0.9473, 0.7159, -0.4574]],
    [[-0.0236, -0.7599, 1.0290, 0.8914], [-1.1727, -1.2556, -0.2271, 0.9568], [-0.2500, 1.4579, 1.4707, 0.4043]],
]


def b64(a):
    return base64.b64encode(np.ascontiguousarray(a, dtype="<f4").tobytes()).decode()


def datasets():
    ds = {}
    rng = np.random.default_rng(1234)
    # Conv weights as in the seed's Fig 2 (Normal(0, 0.12)), (out, in, kh, kw).
    ds["gauss_weights"] = [rng.normal(0, 0.12, (8, 4, 5, 5)).astype(np.float32) for _ in range(2)]
    # Skewed activations: Pareto(scale=1, alpha=10) as torch.distributions.Pareto(1, 10).
    rng = np.random.default_rng(99)
    ds["pareto_act"] = [(rng.pareto(10, (4, 250)) + 1.0).astype(np.float32) for _ in range(3)]
    # Range grows and shrinks between batches: exercises histogram re-binning.
    rng = np.random.default_rng(7)
    ds["growing"] = [
        (rng.normal(0, 1, (1000,)) * s + o).astype(np.float32)
        for s, o in [(1.0, 0.0), (2.5, 0.3), (0.7, -0.1), (4.0, 1.0)]
    ]
    # Post-ReLU activations (non-negative, half-normal with zeros).
    rng = np.random.default_rng(5)
    ds["relu_act"] = [np.maximum(rng.normal(0.2, 1, (2, 3, 10, 10)), 0).astype(np.float32) for _ in range(3)]
    # Gaussian plus a few huge outliers.
    rng = np.random.default_rng(11)
    g = [rng.normal(0, 1, (2000,)).astype(np.float32) for _ in range(2)]
    g[0][17] = 60.0
    g[1][1234] = -45.0
    ds["gauss_outliers"] = g
    return ds


DTYPES = {"quint8": torch.quint8, "qint8": torch.qint8}
SCHEMES = {
    "per_tensor_affine": torch.per_tensor_affine,
    "per_tensor_symmetric": torch.per_tensor_symmetric,
    "per_channel_affine": torch.per_channel_affine,
    "per_channel_symmetric": torch.per_channel_symmetric,
}


def make(cfg):
    kw = dict(dtype=DTYPES[cfg["dtype"]], qscheme=SCHEMES[cfg["qscheme"]], reduce_range=cfg["reduce_range"])
    if cfg.get("quant_min") is not None:
        kw["quant_min"], kw["quant_max"] = cfg["quant_min"], cfg["quant_max"]
    if cfg.get("eps") is not None:
        kw["eps"] = cfg["eps"]
    k = cfg["kind"]
    if k == "min_max":
        return MinMaxObserver(**kw)
    if k == "moving_average_min_max":
        return MovingAverageMinMaxObserver(averaging_constant=cfg.get("averaging_constant", 0.01), **kw)
    if k == "per_channel_min_max":
        return PerChannelMinMaxObserver(ch_axis=cfg["ch_axis"], **kw)
    if k == "moving_average_per_channel_min_max":
        return MovingAveragePerChannelMinMaxObserver(
            averaging_constant=cfg.get("averaging_constant", 0.01), ch_axis=cfg["ch_axis"], **kw
        )
    if k == "histogram":
        return HistogramObserver(**kw)
    raise ValueError(k)


def run(cfg, batches):
    obs = make(cfg)
    for b in batches:
        obs(torch.from_numpy(np.asarray(b, dtype=np.float32)))
    s, z = obs.calculate_qparams()
    out = {"scale": [float(v) for v in s.flatten()], "zero_point": [int(v) for v in z.flatten()]}
    if cfg["kind"] == "histogram":
        lo, hi = obs._non_linear_param_search()
        out["range"] = [float(lo), float(hi)]
        out["hist_min_max"] = [float(obs.min_val), float(obs.max_val)]
        out["hist_sum"] = float(obs.histogram.double().sum())
    else:
        out["range"] = [[float(v) for v in obs.min_val.flatten()], [float(v) for v in obs.max_val.flatten()]]
    return out


def cfg(kind, dtype="quint8", qscheme="per_tensor_affine", reduce_range=False, **kw):
    c = dict(kind=kind, dtype=dtype, qscheme=qscheme, reduce_range=reduce_range)
    c.update(kw)
    return c


def main():
    ds = datasets()
    cases = []

    # Seed examples.
    seed_cfgs = [
        cfg("min_max"),
        cfg("moving_average_min_max"),
        cfg("moving_average_min_max", qscheme="per_tensor_symmetric"),
        cfg("moving_average_per_channel_min_max", qscheme="per_channel_affine", ch_axis=0),
        cfg("histogram"),
    ]
    for c in seed_cfgs:
        cases.append({"dataset": "seed", "config": c, "expected": run(c, SEED_INPUTS)})

    per_tensor = []
    for kind in ["min_max", "moving_average_min_max", "histogram"]:
        for dtype in ["quint8", "qint8"]:
            for qs in ["per_tensor_affine", "per_tensor_symmetric"]:
                for rr in [False, True]:
                    if kind != "histogram" and rr and dtype == "quint8" and qs == "per_tensor_symmetric":
                        continue  # torch rejects this combination
                    per_tensor.append(cfg(kind, dtype, qs, rr))
    per_tensor.append(cfg("min_max", "qint8", "per_tensor_symmetric", quant_min=-127, quant_max=127))
    per_tensor.append(cfg("histogram", "qint8", "per_tensor_affine", eps=2.0**-12))
    per_tensor.append(cfg("histogram", "quint8", "per_tensor_affine", quant_min=0, quant_max=127))
    per_tensor.append(cfg("moving_average_min_max", "quint8", "per_tensor_affine", averaging_constant=0.3))

    per_channel = []
    for kind in ["per_channel_min_max", "moving_average_per_channel_min_max"]:
        for dtype in ["quint8", "qint8"]:
            for qs in ["per_channel_affine", "per_channel_symmetric"]:
                for rr in [False, True]:
                    if rr and dtype == "quint8" and qs == "per_channel_symmetric":
                        continue
                    for axis in [0, 1]:
                        per_channel.append(cfg(kind, dtype, qs, rr, ch_axis=axis))
    per_channel.append(cfg("per_channel_min_max", "qint8", "per_channel_symmetric", ch_axis=-1))

    for name, batches in ds.items():
        for c in per_tensor:
            cases.append({"dataset": name, "config": c, "expected": run(c, batches)})
        if batches[0].ndim >= 2:
            for c in per_channel:
                if c["ch_axis"] >= batches[0].ndim or batches[0].shape[c["ch_axis"]] > 16:
                    continue  # keep the JSON small
                cases.append({"dataset": name, "config": c, "expected": run(c, batches)})

    out = {
        "torch_version": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "datasets": {
            "seed": [{"shape": [3, 4], "data": b64(np.array(x, dtype=np.float32))} for x in SEED_INPUTS],
            **{
                k: [{"shape": list(b.shape), "data": b64(b)} for b in v]
                for k, v in ds.items()
            },
        },
        "cases": cases,
    }
    with open(OUT, "w") as f:
        json.dump(out, f, separators=(",", ":"))
    print(f"wrote {OUT}: {len(cases)} cases, {os.path.getsize(OUT)} bytes")
    for c in cases[:5]:
        print(c["config"]["kind"], c["config"]["qscheme"], c["expected"]["scale"], c["expected"]["zero_point"])


if __name__ == "__main__":
    main()
