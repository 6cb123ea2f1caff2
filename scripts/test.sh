#!/usr/bin/env bash
# The whole test suite: Rust tests, the protobuf freshness check, and the
# cross-checks against ONNX Runtime (Python venv installed on first run), and the
# HTML report rendered in headless Chromium (installed on first run).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-python.sh
scripts/setup-chromium.sh
cargo build --bins
cargo test --lib --bins --tests --examples
cargo test --doc
ONNXQ_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/onnxq" .venv/bin/python -m pytest tests/python -q
