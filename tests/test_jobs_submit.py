"""`ray job submit` end to end against a head node the test starts (and alone stops)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:  # the group has already gone
        pass


@pytest.fixture
def head_node():
    """A separate Ray head on 127.0.0.1 (`ray start --head --block`); yields its job address.

    Started in its own process group and stopped by signalling that group, so the test
    session's own Ray instance keeps running (`ray stop` would end every Ray on the machine).
    Token authentication is off for this loopback-only cluster (ENVIRONMENT.md)."""
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PATH": f"{BIN}:{os.environ['PATH']}"}
    # A short temp dir: Ray's unix socket paths must stay under about 107 characters.
    temp_dir = tempfile.mkdtemp(prefix="ray-")
    gcs, dashboard, agent, agent_grpc, metrics, runtime_env = (_free_port() for _ in range(6))
    proc = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
         "--port", str(gcs), "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard),
         "--num-cpus", "1", "--include-dashboard", "true", "--disable-usage-stats",
         # its own agent ports: the test session's Ray node holds the default ones
         "--dashboard-agent-listen-port", str(agent), "--dashboard-agent-grpc-port",
         str(agent_grpc), "--metrics-export-port", str(metrics), "--runtime-env-agent-port",
         str(runtime_env),
         "--temp-dir", temp_dir],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.monotonic() + 60
        while subprocess.run([str(BIN / "ray"), "job", "list", "--address", address], env=env,
                             capture_output=True).returncode != 0:
            assert proc.poll() is None, "ray start exited"
            assert time.monotonic() < deadline, "the head node did not come up in 60 s"
            time.sleep(1)
        yield address, env
    finally:
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            _signal_group(proc.pid, signal.SIGKILL)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.slow
def test_prepare_runs_as_a_submitted_job(head_node, tmp_path):
    address, env = head_node
    output = tmp_path / "shards"
    command = [str(BIN / "ray"), "job", "submit", "--address", address, "--working-dir",
               str(REPO), "--", "python", "jobs/prepare.py", "--flavour", "svimo-tiny",
               "--prepare.output", str(output), "--prepare.num_train", "3",
               "--prepare.num_val", "1", "--prepare.num_preview", "1"]
    deadline = time.monotonic() + 60
    while True:
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        # the job agent starts a little after the dashboard answers; Ray says "try again later"
        if "No available agent" not in result.stderr or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "joined cluster" in result.stdout + result.stderr
    manifest = json.loads((output / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert {k: v["clips"] for k, v in manifest["splits"].items()} == {"train": 3, "val": 1}
