#!/usr/bin/env bash
# The test suite (CPU). Extra arguments go to pytest, e.g. -k shards.
# Sets up what the tests drive besides Python: .venv (scripts/env.sh) and Debian's Chromium for
# the web page's browser test (tests/serve/test_page.py), installed with apt where missing.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/env.sh
if ! command -v chromium >/dev/null; then
  echo "== installing chromium (apt) for the browser test"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
fi
exec .venv/bin/python -m pytest -q "$@"
