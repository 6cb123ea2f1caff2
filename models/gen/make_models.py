#!/usr/bin/env python3
"""Regenerate the onnxq test models in models/ (see models/README.md).

Every model is a small PyTorch module trained on scikit-learn's bundled 8x8
digits (no download) and exported with the TorchScript ONNX exporter
(`torch.onnx.export(..., dynamo=False)`), so the graphs carry the exact op
patterns real-world torch exports have (decomposed LayerNorm below opset 17,
Erf-based GELU, Shape->Gather->Unsqueeze->Concat->Reshape, LSTM with
Transpose/Squeeze glue, ...).

For every model X it writes:
  X.onnx          the model
  X.sample.npz    one small batch keyed by the graph input names
  X.expected.npz  onnxruntime fp32 outputs for that batch, keyed by output name
  X.calib.npy     calibration samples (first axis = samples), or X.calib.npz
                  keyed by input name for multi-input models
and for classifiers whose whole pipeline is in the graph also X.eval.npz
(`input`, `labels`) from the held-out test split.

Then it self-checks every file: onnx.checker (full_check), onnxruntime run on
the sample batch vs. the torch reference, required op types present, and
fp32 accuracies.  A machine-readable summary goes to models/manifest.json.

Usage:  python models/gen/make_models.py [--out DIR]
"""
import os

# Single-threaded and deterministic: the machine is small and shared, and
# identical threads + seeds + pinned versions give reproducible weights.
for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse
import json
import math
import re
import warnings
from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn as nn
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)
warnings.filterwarnings("ignore")  # exporter deprecation chatter

SEED = 0
F32_MIN = float(np.finfo(np.float32).min)


# --------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------
def load_data():
    """Digits scaled to [0,1] (pixel/16); stratified 70/30 train/test split."""
    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)  # [1797, 64]
    y = d.target.astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(
        x, y, test_size=0.3, random_state=SEED, stratify=y)
    return xtr, xte, ytr, yte


# --------------------------------------------------------------------------
# training helpers
# --------------------------------------------------------------------------
def train_classifier(model, xs, y, epochs, lr=3e-3, bs=64, seed=SEED,
                     batch_fn=None):
    """Plain Adam + cross-entropy loop.  `xs` is a tuple of input tensors,
    `batch_fn(xs_batch, gen)` may transform a batch (augment / masks)."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    n = y.shape[0]
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, bs):
            idx = perm[i:i + bs]
            xb = tuple(t[idx] for t in xs)
            if batch_fn is not None:
                xb = batch_fn(xb, g)
            loss = F.cross_entropy(model(*xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    model.eval()
    return model


@torch.no_grad()
def accuracy(model, xs, y):
    model.eval()
    return float((model(*xs).argmax(1) == y).float().mean())


def export(module, args, path, opset, input_names, output_names, dyn):
    """TorchScript exporter.  TrainingMode.PRESERVE on an eval() module skips
    the exporter's eval peephole pass, so BatchNormalization stays a separate
    node instead of being folded into the preceding Conv (we want onnxq to
    see and fold BN itself)."""
    module.eval()
    torch.onnx.export(
        module, args, path, dynamo=False, opset_version=opset,
        input_names=input_names, output_names=output_names,
        dynamic_axes=dyn, do_constant_folding=True,
        training=torch.onnx.TrainingMode.PRESERVE)
    m = onnx.load(path)
    m.producer_name = "onnxq-models-gen (torch %s)" % torch.__version__.split("+")[0]
    onnx.save(m, path)


# --------------------------------------------------------------------------
# model definitions
# --------------------------------------------------------------------------
def conv_bn_relu(ci, co, bias=False):
    return [nn.Conv2d(ci, co, 3, padding=1, bias=bias), nn.BatchNorm2d(co), nn.ReLU()]


class DigitsCNN(nn.Module):
    """Conv-BN-ReLU x3, MaxPool, AveragePool, Flatten, Gemm.  First conv has a
    bias (Conv with 3 inputs), the others don't (2-input Conv, ResNet style)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            *conv_bn_relu(1, 16, bias=True),
            *conv_bn_relu(16, 32),
            nn.MaxPool2d(2),                 # 8x8 -> 4x4
            *conv_bn_relu(32, 32),
            nn.AvgPool2d(2),                 # 4x4 -> 2x2
        )
        self.fc = nn.Linear(32 * 2 * 2, 10)  # -> Gemm

    def forward(self, x):
        return self.fc(torch.flatten(self.features(x), 1))


class Stem(nn.Module):
    """Digits -> [N,16,8,8] features.  Not exported: it produces realistic
    inputs (and calibration data) for the block-only models."""

    def __init__(self, act):
        super().__init__()
        self.conv = nn.Conv2d(1, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.act = act

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class ResidualBlock(nn.Module):
    """ResNet basic block: Conv-BN-ReLU, Conv-BN, Add(skip), ReLU."""

    def __init__(self, c=16):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + x)


class InvertedResidual(nn.Module):
    """MobileNetV2/V3 block: 1x1 expand-BN-ReLU6, 3x3 depthwise-BN-ReLU6,
    squeeze-excite (GlobalAveragePool, 1x1, ReLU, 1x1, HardSigmoid, Mul),
    1x1 project-BN, residual Add; then a MobileNetV3-style 1x1 Conv-BN-
    HardSwish head conv.  ReLU6 exports as Clip with min/max inputs."""

    def __init__(self, c=16, expand=4, out=32):
        super().__init__()
        h = c * expand
        self.expand = nn.Conv2d(c, h, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(h)
        self.dw = nn.Conv2d(h, h, 3, padding=1, groups=h, bias=False)
        self.bn2 = nn.BatchNorm2d(h)
        self.se_reduce = nn.Conv2d(h, h // 4, 1)
        self.se_expand = nn.Conv2d(h // 4, h, 1)
        self.project = nn.Conv2d(h, c, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c)
        self.head = nn.Conv2d(c, out, 1, bias=False)
        self.bn4 = nn.BatchNorm2d(out)

    def forward(self, x):
        y = F.relu6(self.bn1(self.expand(x)))
        y = F.relu6(self.bn2(self.dw(y)))
        s = F.adaptive_avg_pool2d(y, 1)
        s = F.hardsigmoid(self.se_expand(F.relu(self.se_reduce(s))))
        y = y * s
        y = self.bn3(self.project(y)) + x
        return F.hardswish(self.bn4(self.head(y)))


class PoolHead(nn.Module):
    """GlobalAveragePool + Linear; training-only head for the block models."""

    def __init__(self, c):
        super().__init__()
        self.fc = nn.Linear(c, 10)

    def forward(self, x):
        return self.fc(x.mean((2, 3)))


class MLP(nn.Module):
    """64 -> 128 -> 64 -> 10.  Layers 1 and 3 are explicit `x @ W + b`
    (MatMul + Add, as torch emits for Linear on >2-D inputs / hand-written
    layers); layer 2 is nn.Linear on a 2-D input (Gemm transB=1)."""

    def __init__(self):
        super().__init__()
        self.w1 = nn.Parameter(torch.empty(64, 128))
        self.b1 = nn.Parameter(torch.zeros(128))
        self.fc2 = nn.Linear(128, 64)
        self.w3 = nn.Parameter(torch.empty(64, 10))
        self.b3 = nn.Parameter(torch.zeros(10))
        nn.init.kaiming_uniform_(self.w1.T, a=math.sqrt(5))
        nn.init.kaiming_uniform_(self.w3.T, a=math.sqrt(5))

    def forward(self, x):
        x = F.relu(x @ self.w1 + self.b1)
        x = F.relu(self.fc2(x))
        return x @ self.w3 + self.b3


class LSTMClassifier(nn.Module):
    """Reads a digit row by row (8 steps x 8 features), classifies from the
    last hidden state.  batch_first -> exporter wraps LSTM in Transposes."""

    def __init__(self, hidden=32):
        super().__init__()
        self.lstm = nn.LSTM(8, hidden, batch_first=True)
        self.fc = nn.Linear(hidden, 10)

    def forward(self, x):
        _, (h, _) = self.lstm(x)
        return self.fc(h[-1])


class EncoderLayer(nn.Module):
    """Post-norm (BERT-style) transformer encoder layer written out by hand,
    so the TorchScript exporter emits the classic pattern: Q/K/V MatMul+Add,
    Reshape via Shape->Gather->Unsqueeze->Concat, Transpose, MatMul, Div by
    sqrt(d_head), Add additive mask, Softmax, decomposed LayerNorm (opset<17),
    Erf GELU.  `mask` is [batch, seq] additive: 0 = keep, float32-min = pad."""

    def __init__(self, d=32, heads=4, ff=64):
        super().__init__()
        self.h, self.dh = heads, d // heads
        self.q, self.k, self.v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.o = nn.Linear(d, d)
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.ff1, self.ff2 = nn.Linear(d, ff), nn.Linear(ff, d)

    def forward(self, x, mask):
        b, s, d = x.size(0), x.size(1), x.size(2)

        def split(t):  # [b,s,d] -> [b,h,s,dh]
            return t.view(b, s, self.h, self.dh).transpose(1, 2)

        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(self.dh)
        scores = scores + mask[:, None, None, :]
        p = torch.softmax(scores, dim=-1)
        a = torch.matmul(p, v).transpose(1, 2).reshape(b, s, d)
        x = self.ln1(x + self.o(a))
        f = self.ff2(F.gelu(self.ff1(x)))  # exact (erf) GELU
        return self.ln2(x + f)


class TokenFrontEnd(nn.Module):
    """Training-only: digit -> 16 tokens (8 rows then 8 columns, 8 px each),
    Linear embed to d_model + learned position embedding."""

    def __init__(self, d=32, n_tok=16):
        super().__init__()
        self.emb = nn.Linear(8, d)
        self.pos = nn.Parameter(torch.randn(n_tok, d) * 0.1)

    def forward(self, img):  # img [N,64]
        im = img.view(-1, 8, 8)
        tok = torch.cat([im, im.transpose(1, 2)], 1)  # [N,16,8]
        return self.emb(tok) + self.pos


class TransformerClassifier(nn.Module):
    def __init__(self, d=32):
        super().__init__()
        self.front, self.layer, self.fc = TokenFrontEnd(d), EncoderLayer(d), nn.Linear(d, 10)

    def forward(self, img, mask):
        h = self.layer(self.front(img), mask)
        keep = (mask == 0).float().unsqueeze(-1)
        return self.fc((h * keep).sum(1) / keep.sum(1))


def random_key_mask(n, s, g, max_masked=4):
    """Additive mask with 0..max_masked random padded (F32_MIN) positions."""
    m = torch.zeros(n, s)
    k = torch.randint(0, max_masked + 1, (n,), generator=g)
    for i in range(n):
        if k[i] > 0:
            m[i, torch.randperm(s, generator=g)[:k[i]]] = F32_MIN
    return m


# --------------------------------------------------------------------------
# build everything
# --------------------------------------------------------------------------
def build(out):
    xtr, xte, ytr, yte = load_data()
    Xtr, Xte = torch.from_numpy(xtr), torch.from_numpy(xte)
    Ytr, Yte = torch.from_numpy(ytr), torch.from_numpy(yte)
    img_tr, img_te = Xtr.view(-1, 1, 8, 8), Xte.view(-1, 1, 8, 8)
    p = lambda name: os.path.join(out, name)
    info = {}  # name -> manifest entry (filled in here, checked later)
    N = {0: "N"}

    def f32(t):
        return np.ascontiguousarray(t.detach().numpy().astype(np.float32))

    # ---- digits_cnn (opset 13) -------------------------------------------
    torch.manual_seed(SEED)
    cnn = train_classifier(DigitsCNN(), (img_tr,), Ytr, epochs=30)
    export(cnn, (img_tr[:2],), p("digits_cnn.onnx"), 13, ["input"], ["logits"],
           {"input": N, "logits": N})
    np.save(p("digits_cnn.calib.npy"), f32(img_tr[:128]))
    np.savez(p("digits_cnn.sample.npz"), input=f32(img_te[:4]))
    np.savez(p("digits_cnn.eval.npz"), input=f32(img_te), labels=yte)
    info["digits_cnn"] = dict(opset=13, torch_acc=accuracy(cnn, (img_te,), Yte),
                              ref=cnn, ops=["Conv", "BatchNormalization", "Relu",
                                            "MaxPool", "AveragePool", "Flatten", "Gemm"])

    # ---- residual_block (opset 17): trained inside stem+block+head --------
    torch.manual_seed(SEED + 1)
    stem, blk = Stem(nn.ReLU()), ResidualBlock(16)
    full = nn.Sequential(stem, blk, PoolHead(16))
    train_classifier(full, (img_tr,), Ytr, epochs=20)
    with torch.no_grad():
        ftr, fte = stem(img_tr), stem(img_te)
    export(blk, (ftr[:2],), p("residual_block.onnx"), 17, ["input"], ["output"],
           {"input": N, "output": N})
    np.save(p("residual_block.calib.npy"), f32(ftr[:96]))
    np.savez(p("residual_block.sample.npz"), input=f32(fte[:3]))
    info["residual_block"] = dict(opset=17, pipeline_acc=accuracy(full, (img_te,), Yte),
                                  ref=blk, ops=["Conv", "BatchNormalization", "Relu", "Add"])

    # ---- inverted_residual (opset 14) -------------------------------------
    torch.manual_seed(SEED + 2)
    stem, blk = Stem(nn.ReLU6()), InvertedResidual(16)
    full = nn.Sequential(stem, blk, PoolHead(32))
    train_classifier(full, (img_tr,), Ytr, epochs=20)
    with torch.no_grad():
        ftr, fte = stem(img_tr), stem(img_te)
    export(blk, (ftr[:2],), p("inverted_residual.onnx"), 14, ["input"], ["output"],
           {"input": N, "output": N})
    np.save(p("inverted_residual.calib.npy"), f32(ftr[:96]))
    np.savez(p("inverted_residual.sample.npz"), input=f32(fte[:3]))
    info["inverted_residual"] = dict(
        opset=14, pipeline_acc=accuracy(full, (img_te,), Yte), ref=blk,
        ops=["Conv", "BatchNormalization", "Clip", "GlobalAveragePool", "HardSigmoid",
             "Mul", "Add", "HardSwish"])

    # ---- mlp (opset 13) ----------------------------------------------------
    torch.manual_seed(SEED + 3)
    mlp = train_classifier(MLP(), (Xtr,), Ytr, epochs=40)
    export(mlp, (Xtr[:2],), p("mlp.onnx"), 13, ["input"], ["logits"],
           {"input": N, "logits": N})
    np.save(p("mlp.calib.npy"), f32(Xtr[:128]))
    np.savez(p("mlp.sample.npz"), input=f32(Xte[:4]))
    np.savez(p("mlp.eval.npz"), input=f32(Xte), labels=yte)
    info["mlp"] = dict(opset=13, torch_acc=accuracy(mlp, (Xte,), Yte), ref=mlp,
                       ops=["MatMul", "Add", "Gemm", "Relu"])

    # ---- lstm (opset 11): rows of the digit as the time axis ---------------
    torch.manual_seed(SEED + 4)
    seq_tr, seq_te = Xtr.view(-1, 8, 8), Xte.view(-1, 8, 8)
    lstm = train_classifier(LSTMClassifier(), (seq_tr,), Ytr, epochs=40, lr=1e-2)
    export(lstm, (seq_tr[:2],), p("lstm.onnx"), 11, ["input"], ["logits"],
           {"input": N, "logits": N})
    np.save(p("lstm.calib.npy"), f32(seq_tr[:128]))
    np.savez(p("lstm.sample.npz"), input=f32(seq_te[:4]))
    np.savez(p("lstm.eval.npz"), input=f32(seq_te), labels=yte)
    info["lstm"] = dict(opset=11, torch_acc=accuracy(lstm, (seq_te,), Yte), ref=lstm,
                        ops=["LSTM", "Transpose", "Gemm"])

    # ---- transformer_layer (opset 14) --------------------------------------
    torch.manual_seed(SEED + 5)
    tfm = TransformerClassifier(32)
    mask_tr = torch.zeros(len(Ytr), 16)  # replaced per batch below

    def with_random_mask(xb, g):  # robust to padding: mask random tokens
        return xb[0], random_key_mask(xb[0].shape[0], 16, g)

    train_classifier(tfm, (Xtr, mask_tr), Ytr, epochs=40, batch_fn=with_random_mask)
    layer = tfm.layer
    with torch.no_grad():
        emb_tr, emb_te = tfm.front(Xtr), tfm.front(Xte)  # [N,16,32]
    g = torch.Generator().manual_seed(SEED)
    # export-time dims: batch 2, seq 16.  Sample uses batch 3, seq 11 so a
    # shape baked in as a constant would be caught.
    export(layer, (emb_tr[:2], torch.zeros(2, 16)), p("transformer_layer.onnx"), 14,
           ["input", "mask"], ["output"],
           {"input": {0: "batch", 1: "seq"}, "mask": {0: "batch", 1: "seq"},
            "output": {0: "batch", 1: "seq"}})
    s_mask = torch.zeros(3, 11)
    s_mask[1, 9:] = F32_MIN  # second example: last two tokens padded
    s_mask[2, 6:] = F32_MIN  # third example: last five tokens padded
    np.savez(p("transformer_layer.sample.npz"), input=f32(emb_te[:3, :11]), mask=f32(s_mask))
    np.savez(p("transformer_layer.calib.npz"), input=f32(emb_tr[:64]),
             mask=f32(random_key_mask(64, 16, g)))
    info["transformer_layer"] = dict(
        opset=14, pipeline_acc=accuracy(tfm, (Xte, torch.zeros(len(Yte), 16)), Yte),
        ref=layer,
        ops=["MatMul", "Add", "Reshape", "Transpose", "Softmax", "Div", "ReduceMean",
             "Sub", "Pow", "Sqrt", "Mul", "Erf", "Shape", "Gather", "Unsqueeze", "Concat"])
    return info


# --------------------------------------------------------------------------
# self-check
# --------------------------------------------------------------------------
def dims(vi):
    return [d.dim_param if d.dim_param else d.dim_value
            for d in vi.type.tensor_type.shape.dim]


def check(out, info):
    manifest = {}
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    ok = True
    for name, e in info.items():
        path = os.path.join(out, name + ".onnx")
        m = onnx.load(path)
        onnx.checker.check_model(m, full_check=True)
        opset = [o.version for o in m.opset_import if o.domain in ("", "ai.onnx")][0]
        assert opset == e["opset"], (name, opset)
        ops = Counter(n.op_type for n in m.graph.node)
        missing = [o for o in e["ops"] if o not in ops]
        assert not missing, (name, "missing ops", missing)

        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        sample = dict(np.load(os.path.join(out, name + ".sample.npz")))
        assert set(sample) == {i.name for i in m.graph.input}, name
        outs = sess.run(None, sample)
        # fp32 reference outputs for the sample batch (keyed by output name)
        np.savez(os.path.join(out, name + ".expected.npz"),
                 **{o.name: v for o, v in zip(m.graph.output, outs)})
        got = outs[0]
        with torch.no_grad():
            want = e["ref"](*[torch.from_numpy(sample[i.name]) for i in m.graph.input]).numpy()
        err = float(np.abs(got - want).max())
        assert got.shape == want.shape and err < 1e-4, (name, got.shape, want.shape, err)

        ent = dict(
            opset=opset,
            inputs={i.name: dict(shape=dims(i), dtype="float32") for i in m.graph.input},
            outputs={o.name: dict(shape=dims(o), dtype="float32") for o in m.graph.output},
            sample_shapes={k: list(v.shape) for k, v in sample.items()},
            ops=dict(sorted(ops.items())),
            ort_vs_torch_max_abs_err=float("%.1e" % err),
            onnx_bytes=os.path.getsize(path))
        line = "%-18s opset %-2d ok  max|ort-torch|=%.1e" % (name, opset, err)
        ev = os.path.join(out, name + ".eval.npz")
        if os.path.exists(ev):
            d = np.load(ev)
            pred = sess.run(None, {"input": d["input"]})[0].argmax(1)
            acc = float((pred == d["labels"]).mean())
            ent["fp32_eval_accuracy"] = round(acc, 4)
            line += "  ORT eval acc %.4f (n=%d)" % (acc, len(d["labels"]))
            ok &= acc >= (0.95 if name == "digits_cnn" else 0.90)
        if "pipeline_acc" in e:
            ent["training_pipeline_test_accuracy"] = round(e["pipeline_acc"], 4)
            line += "  (training pipeline test acc %.4f)" % e["pipeline_acc"]
        manifest[name] = ent
        print(line)
        print("    ops:", dict(sorted(ops.items())))
    with open(os.path.join(out, "manifest.json"), "w") as f:
        txt = json.dumps(manifest, indent=1, sort_keys=True)
        # keep short scalar lists (shapes) on one line for readability
        txt = re.sub(r"\[[^\[\]{}]*\]", lambda mm: " ".join(mm.group(0).split()), txt)
        f.write(txt + "\n")
    total = 0
    for fn in sorted(os.listdir(out)):
        fp = os.path.join(out, fn)
        if os.path.isfile(fp):
            total += os.path.getsize(fp)
            assert os.path.getsize(fp) <= 2 * 1024 * 1024, fn
    print("total size of %s: %.1f KB" % (out, total / 1024))
    if not ok:
        raise SystemExit("accuracy below threshold")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.dirname(here), help="output dir (default models/)")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    print("torch %s  onnx %s  onnxruntime %s  numpy %s" % (
        torch.__version__, onnx.__version__, ort.__version__, np.__version__))
    info = build(a.out)
    check(a.out, info)


if __name__ == "__main__":
    main()
