#!/usr/bin/env bash
# Installs Debian's headless-capable Chromium for the HTML report test
# (tests/python/test_report_html.py). Idempotent: does nothing when
# /usr/bin/chromium (or $CHROMIUM) is already there. Needs root (or sudo)
# only when it has to install.
set -euo pipefail
bin="${CHROMIUM:-/usr/bin/chromium}"
if [ -x "$bin" ]; then
  exit 0
fi
sudo=""
if [ "$(id -u)" != 0 ]; then
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
echo "installed $("$bin" --version)"
