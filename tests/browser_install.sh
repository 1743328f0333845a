#!/usr/bin/env bash
# Install Debian's Chromium for the report's browser test (tests/test_report.py, `asrmerge report-check`).
# Idempotent: returns at once when a Chromium is on PATH. Needs root and apt-get; otherwise it only says so and
# exits 0, and the browser test then skips itself (unless ASRMERGE_REQUIRE_BROWSER is set).
#   usage: tests/browser_install.sh        (CI: called from .ci/run before `make test`)
set -euo pipefail

for bin in chromium chromium-browser google-chrome; do
    if command -v "$bin" >/dev/null 2>&1; then
        echo "browser_install: $bin already installed"
        exit 0
    fi
done
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "browser_install: not root or no apt-get, skipping; the report's browser test will be skipped"
    exit 0
fi
echo "browser_install: installing chromium"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium >/dev/null
echo "browser_install: done"
