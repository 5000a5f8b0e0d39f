#!/usr/bin/env bash
# The test suite (CPU). Extra arguments go to pytest, e.g. -k shards.
# Sets up what the tests drive besides Python: .venv (scripts/env.sh), and, installed with apt
# where missing, Debian's Chromium for the web page's browser test (tests/serve/test_page.py)
# and redis-server for the Serve app's queue (the tests start their own on a free port).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/env.sh
missing=""
command -v chromium >/dev/null || missing="$missing chromium"
command -v redis-server >/dev/null || missing="$missing redis-server"
if [ -n "$missing" ]; then
  echo "== installing$missing (apt) for the browser test and the Serve app's queue"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing >/dev/null
fi
exec .venv/bin/python -m pytest -q "$@"
