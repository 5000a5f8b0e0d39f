"""A Redis on this machine for the svimo app's broker (`serve.broker`): what the tests and
the serve benchmark start, and what `redis-server --appendonly yes --dir DIR` gives a user."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis


@dataclass
class LocalRedis:
    """Debian's redis-server on a loopback port, with append-only persistence (every write
    synced) in its own directory: `kill` and `start` again recover from that file."""

    port: int
    directory: Path
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--dir",
             str(self.directory), "--appendonly", "yes", "--appendfsync", "always", "--save", "",
             "--logfile", str(self.directory / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with code {self.proc.returncode}")
            try:
                redis.Redis(port=self.port).ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not answer on {self.port}") from None
                time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL: what survives is what the append-only file holds."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
