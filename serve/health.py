"""Waiting for a started svimo app: `wait_healthy(url)` polls its GET /healthz."""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path


def wait_healthy(url: str, timeout_s: float = 180.0, process: subprocess.Popen | None = None,
                 log: Path | None = None) -> None:
    """Return once `<url>/healthz` answers 200.

    Raises RuntimeError after `timeout_s`, or as soon as `process` (the `serve run` starting
    the app, when given) has exited; the message ends with the tail of `log` when given."""
    deadline = time.monotonic() + timeout_s
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the app's process exited with code {process.returncode}"
                               + _tail(log))
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url}/healthz did not answer 200 in {timeout_s:g} s" + _tail(log))
        time.sleep(0.5)


def _tail(log: Path | None, chars: int = 3000) -> str:
    return "" if log is None else f"; the end of {log}:\n{log.read_text(errors='replace')[-chars:]}"
