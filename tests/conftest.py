"""Fixtures shared by the whole suite: one local Ray instance, one moto S3 server, one Redis,
small clips.

The servers are session-scoped: Ray takes about 4 s to start and moto about 1 s, and every
test that needs them shares the one instance (ENVIRONMENT.md: 2 cores).
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import numpy as np
import pytest

from cluster.local import free_port
from hoi.config import StorageConfig
from hoi.data.clip import Clip
from hoi.geometry.motion import NUM_JOINTS, NUM_POINTS
from serve.broker import LocalRedis

# ---------------------------------------------------------------------------------------------
# AWS credentials and S3 (moto)
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def aws_credentials(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Dummy credentials in this process's environment for the session, then restored.

    `ray_local` depends on this fixture so that Ray's workers, which inherit the environment at
    `ray.init`, resolve the same credentials through the AWS chain as the driver.
    """
    empty = tmp_path_factory.mktemp("aws") / "none"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.delenv("AWS_SESSION_TOKEN", raising=False)
        mp.delenv("AWS_PROFILE", raising=False)
        # No user config or instance-metadata lookups: nothing outside the test may answer.
        mp.setenv("AWS_CONFIG_FILE", str(empty))
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
        yield


@dataclass
class S3Server:
    """A running moto S3 server with one bucket."""

    endpoint_url: str
    bucket: str
    storage: StorageConfig
    _roots: Iterator[int]

    def fresh_root(self) -> str:
        """A new, empty s3://bucket/prefix, so tests sharing the bucket never see each other."""
        return f"s3://{self.bucket}/root-{next(self._roots)}"



def _wait_until_answering(url: str, proc: subprocess.Popen, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"moto_server exited with code {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:  # any HTTP answer means the server is up
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"moto_server did not answer at {url} within {timeout_s} s")


@pytest.fixture(scope="session")
def s3(aws_credentials: None) -> Iterator[S3Server]:
    """moto_server (from this venv) on a free loopback port, with bucket 'svimo-test'."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    moto = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen([str(moto), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_until_answering(endpoint, proc)
        region = "us-east-1"
        # boto3, not s3fs.mkdir: the latter sends a location constraint moto rejects.
        boto3.client("s3", endpoint_url=endpoint, region_name=region).create_bucket(
            Bucket="svimo-test")
        yield S3Server(endpoint, "svimo-test", StorageConfig(endpoint_url=endpoint, region=region),
                       itertools.count())
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def interrupt(proc: subprocess.Popen, timeout_s: float) -> None:
    """SIGINT to the process group of `proc` (a `serve run`: it deletes its app), then SIGKILL
    after `timeout_s`; nothing when it has already exited."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


# ---------------------------------------------------------------------------------------------
# Redis
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRedis]:
    """redis-server on a free loopback port for the session (`serve.broker`)."""
    server = LocalRedis(free_port(), tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.kill()


# ---------------------------------------------------------------------------------------------
# Ray
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def ray_local(aws_credentials: None) -> Iterator[None]:
    """One 2-CPU local Ray instance for the session, without dashboard or progress bars."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING,
             configure_logging=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


# ---------------------------------------------------------------------------------------------
# Clips without the synthetic generator
# ---------------------------------------------------------------------------------------------

CLIP_FRAMES, CLIP_HEIGHT, CLIP_WIDTH = 9, 32, 48


def make_clip(clip_id: str, rng: np.random.Generator, split: str = "train") -> Clip:
    """A valid clip of random arrays: video and motion video (9, 32, 48, 3) uint8, joints
    (9, 42, 3), points (9, 298, 3), K/R (3, 3), T (3,) float32.

    Videos are smooth (a coarse random grid upsampled 8x) so that MP4 keeps them close."""
    def video() -> np.ndarray:
        coarse = rng.integers(0, 256, (CLIP_FRAMES, CLIP_HEIGHT // 8, CLIP_WIDTH // 8, 3))
        return np.kron(coarse, np.ones((1, 8, 8, 1))).astype(np.uint8)

    n = CLIP_FRAMES
    return Clip(
        clip_id=clip_id, prompt="stir the bowl with the spoon", action="stir", tool="spoon",
        target="bowl", split=split, source="test", seed=int(rng.integers(1 << 31)), fps=8.0,
        joints=rng.normal(size=(n, NUM_JOINTS, 3)).astype(np.float32),
        points=rng.normal(size=(n, NUM_POINTS, 3)).astype(np.float32),
        K=np.array([[50, 0, 24], [0, 50, 16], [0, 0, 1]], np.float32),
        R=np.eye(3, dtype=np.float32), T=np.array([0, 0, 1], np.float32),
        video=video(), motion_video=video(),
    )


@pytest.fixture
def make_clips() -> Callable[..., list[Clip]]:
    """make_clips(n, prefix="clip", split="train", seed=0) -> n valid clips with ids
    '<prefix>-0' ... (seeded: the same call gives the same clips)."""
    def make(n: int, prefix: str = "clip", split: str = "train", seed: int = 0) -> list[Clip]:
        rng = np.random.default_rng(seed)
        return [make_clip(f"{prefix}-{i}", rng, split) for i in range(n)]
    return make
