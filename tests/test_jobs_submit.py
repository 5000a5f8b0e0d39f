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

from hoi.config import StorageConfig
from tests.train.inputs import write_train_inputs

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


def _submit(address: str, env: dict, *job: str) -> subprocess.CompletedProcess:
    """`ray job submit` of `job` (a python command line run in the repository), retried while
    the head's job agent is still starting ("No available agent")."""
    command = [str(BIN / "ray"), "job", "submit", "--address", address, "--working-dir",
               str(REPO), "--", "python", *job]
    deadline = time.monotonic() + 60
    while True:
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=400)
        if "No available agent" not in result.stderr or time.monotonic() > deadline:
            return result
        time.sleep(2)


@pytest.mark.slow
def test_prepare_runs_as_a_submitted_job(head_node, tmp_path):
    address, env = head_node
    output = tmp_path / "shards"
    result = _submit(address, env, "jobs/prepare.py", "--flavour", "svimo-tiny",
                     "--prepare.output", str(output), "--prepare.num_train", "3",
                     "--prepare.num_val", "1", "--prepare.num_preview", "1")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "joined cluster" in result.stdout + result.stderr
    manifest = json.loads((output / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert {k: v["clips"] for k, v in manifest["splits"].items()} == {"train": 3, "val": 1}


@pytest.mark.slow
def test_train_runs_as_a_submitted_job(head_node, tmp_path):
    address, env = head_node
    inputs = write_train_inputs(str(tmp_path), StorageConfig())
    # the head has 1 CPU: a quarter each for the worker, the encoder and the reads
    result = _submit(address, env, "jobs/train.py", *inputs, "--train.storage_path",
                     str(tmp_path / "runs"), "--train.steps", "2", "--train.checkpoint_every",
                     "2", "--train.cpus_per_worker", "0.25", "--train.encode_cpus", "0.25")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "joined cluster" in output and "step 2/2" in output
    summary = json.loads(output[output.index("{\n"):output.rindex("}") + 1])
    assert summary["metrics"]["step"] == 2
    assert Path(summary["model"], "svimo", "config.json").is_file()
