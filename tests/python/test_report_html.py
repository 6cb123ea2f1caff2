"""The --report HTML pages of quantize, compare and sensitivity, rendered in headless
Chromium: the screenshot is not blank, the DOM holds the charts, the page logs no
error, and the file references nothing outside itself (no script, no network).

Chromium comes from scripts/setup-chromium.sh (run by scripts/test.sh). Without it the
test is skipped locally, but fails under CI=true: a missing browser must not turn the
check into a silent pass.
"""

import os
import pathlib
import re
import shutil
import struct
import subprocess
import zlib

import pytest

from conftest import MODELS


def chromium():
    for c in [os.environ.get("CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
              shutil.which("chromium-browser"), shutil.which("google-chrome")]:
        if c and pathlib.Path(c).exists():
            return c
    msg = "chromium is not installed (scripts/setup-chromium.sh installs it)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(msg)
    pytest.skip(msg)


def decode_png(data):
    """Pixels of an 8-bit, non-interlaced RGB/RGBA PNG, as rows of bytes (no Pillow)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, hdr = 8, b"", None
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            hdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    w, h, depth, color, _, _, interlace = hdr
    assert depth == 8 and interlace == 0 and color in (2, 6), hdr
    bpp = 3 if color == 2 else 4
    raw = zlib.decompress(idat)
    stride = w * bpp
    rows, prev = [], bytearray(stride)
    for y in range(h):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 255
        rows.append(bytes(line))
        prev = line
    return w, h, bpp, rows


def render(html, tmp_path):
    exe = chromium()
    shot = tmp_path / (html.stem + ".png")
    common = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
              "--enable-logging=stderr", "--v=0", "--no-first-run",
              # Any network access would be an error: the page must be self-contained.
              "--host-resolver-rules=MAP * ~NOTFOUND",
              f"--user-data-dir={tmp_path / 'profile'}"]
    url = html.resolve().as_uri()
    r = subprocess.run(common + ["--window-size=1280,1600", f"--screenshot={shot}", url],
                       capture_output=True, text=True, timeout=120)
    assert shot.exists(), f"no screenshot: {r.stderr[-2000:]}"
    d = subprocess.run(common + ["--dump-dom", url], capture_output=True, text=True, timeout=120)
    return shot, r.stderr + d.stderr, d.stdout


def check_page(html, tmp_path, min_histograms):
    text = html.read_text()
    # Self-contained: no script, no external resource of any kind.
    assert "<script" not in text.lower()
    for attr in re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', text):
        pytest.fail(f"external reference {attr!r} in {html}")
    assert "<link" not in text.lower() and "@import" not in text
    shot, log, dom = render(html, tmp_path)
    errors = [l for l in log.splitlines()
              if "CONSOLE" in l or "Uncaught" in l or "Failed to load resource" in l]
    assert not errors, "\n".join(errors)
    # The DOM as Chromium parsed it: the chart and the histograms are there.
    assert dom.count("<svg") >= 1 + min_histograms, dom[:500]
    assert "SQNR" in dom
    w, h, bpp, rows = decode_png(shot.read_bytes())
    colors = set()
    non_white = 0
    for row in rows[::4]:
        for i in range(0, len(row), bpp * 4):
            px = row[i:i + 3]
            colors.add(px)
            if px != b"\xff\xff\xff":
                non_white += 1
    sampled = (h // 4 + 1) * (w // 4 + 1)
    assert len(colors) > 20, f"screenshot looks blank: {len(colors)} colours"
    assert non_white > 0.01 * sampled, f"screenshot nearly blank: {non_white}/{sampled}"
    # The chart colours are drawn (red/amber/green SQNR bars, blue histogram bars).
    assert any(abs(c[0] - 0x4a) < 8 and abs(c[1] - 0x78) < 8 and abs(c[2] - 0xb5) < 8
               for c in colors), "no histogram bar in the screenshot"


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))}\n{r.stderr}"
    return r


def test_quantize_report(onnxq_bin, tmp_path):
    out, html = tmp_path / "d.int8.onnx", tmp_path / "quantize.html"
    run([onnxq_bin, "quantize", MODELS / "digits_cnn.onnx", "-o", out,
         "--data", MODELS / "digits_cnn.calib.npy", "--observer", "histogram", "--report", html])
    check_page(html, tmp_path, min_histograms=6)


def test_compare_report(onnxq_bin, tmp_path):
    out, html = tmp_path / "r.int8.onnx", tmp_path / "compare.html"
    run([onnxq_bin, "quantize", MODELS / "residual_block.onnx", "-o", out,
         "--data", MODELS / "residual_block.calib.npy"])
    run([onnxq_bin, "compare", MODELS / "residual_block.onnx", out,
         "--data", MODELS / "residual_block.sample.npz", "--report", html])
    check_page(html, tmp_path, min_histograms=4)


def test_sensitivity_report(onnxq_bin, tmp_path):
    html = tmp_path / "sensitivity.html"
    run([onnxq_bin, "sensitivity", MODELS / "inverted_residual.onnx", "--per-tensor",
         "--data", MODELS / "inverted_residual.calib.npy", "--report", html])
    check_page(html, tmp_path, min_histograms=6)
