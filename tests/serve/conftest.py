"""The `svimo` app as users start it, `serve run serve.app:svimo`, on the session's Ray and
Redis with a tiny model the tests make: two ingress replicas, 0 to 2 samplers, a lease of a
few seconds. Every test in this package talks to it over HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from cluster.local import free_port
from hoi.config import StorageConfig, load_config
from hoi.untrained import write_untrained_model
from serve import keys
from serve.app import build_app
from serve.broker import LocalRedis
from serve.health import wait_healthy
from tests.conftest import interrupt

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
MAX_REPLICAS = 2
MAX_QUEUED = 24
MAX_IMAGE_BYTES = 1_000_000
MAX_IMAGE_PIXELS = 4_000_000
MAX_VIDEO_BYTES = 400_000
MAX_MOTION_BYTES = 300_000
LEASE_S = 4.0
DOWNSCALE_DELAY_S = 10.0
PREFIX = "/keyed"



@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An exported svimo-tiny model trained with the motion mask (so video_only works)."""
    root = tmp_path_factory.mktemp("tiny-model")
    return write_untrained_model(str(root), StorageConfig(),
                            ["--model.motion_attention_mask", "true"])


@pytest.fixture(scope="package")
def svimo_url(ray_local: None, redis_server: LocalRedis, tiny_model: str,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of `serve run serve.app:svimo config=<run file>` on 127.0.0.1, for the tests
    of this package only: its replicas hold CPUs that later tests' runs need."""
    import ray
    from ray import serve

    root = tmp_path_factory.mktemp("serve")
    run_file = root / "serve.yaml"
    run_file.write_text(yaml.safe_dump({
        "flavour": "svimo-tiny",
        "sample": {"num_steps": 2, "max_steps": 8},
        "serve": {"model": tiny_model, "results": str(root / "results"),
                  "broker": redis_server.url, "lease_s": LEASE_S, "reap_every_s": 1.0,
                  "queue_poll_s": 1.0,
                  "ingress_replicas": 2, "min_replicas": 0, "max_replicas": MAX_REPLICAS,
                  "replica_cpus": 0.25, "upscale_delay_s": 1.0,
                  "downscale_delay_s": DOWNSCALE_DELAY_S,
                  "max_queued": MAX_QUEUED, "max_image_bytes": MAX_IMAGE_BYTES,
                  "max_video_bytes": MAX_VIDEO_BYTES, "max_motion_bytes": MAX_MOTION_BYTES,
                  "max_image_pixels": MAX_IMAGE_PIXELS}}))
    port = free_port()
    # Serve's HTTP proxy takes the options of whoever starts Serve first: the test does, on a
    # free loopback port; `serve run` then deploys onto it.
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    proc = subprocess.Popen(
        [str(BIN / "serve"), "run", "serve.app:svimo", f"config={run_file}",
         "--address", ray.get_runtime_context().gcs_address],
        cwd=REPO, env=env, stdout=open(root / "serve.log", "wb"), stderr=subprocess.STDOUT,
        start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, 180, proc, root / "serve.log")
        yield url
    finally:
        # SIGINT: `serve run` deletes the app; it can take a minute over that (replicas'
        # graceful shutdown), so after a short wait it is killed: serve.shutdown() below ends
        # whatever it left
        interrupt(proc, 10)
        serve.shutdown()


@pytest.fixture(scope="package")
def keyed(svimo_url: str, redis_server: LocalRedis, tiny_model: str,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    """The app with two keys (alice may have one job queued or running) under /keyed."""
    from ray import serve

    root = tmp_path_factory.mktemp("keyed")
    path = root / "keys.txt"
    issued = {"alice": keys.add(path, "alice", 1), "bob": keys.add(path, "bob")}
    cfg = load_config(flavour="svimo-tiny", overrides=[
        "--serve.model", tiny_model, "--serve.results", str(root / "results"),
        "--serve.broker", redis_server.url, "--serve.queue", "keyed",
        "--serve.api_keys", str(path), "--serve.min_replicas", "0", "--serve.max_replicas", "1",
        "--serve.replica_cpus", "0.25", "--serve.lease_s", str(LEASE_S),
        "--sample.num_steps", "2", "--sample.max_steps", "8"])
    serve.run(build_app(cfg), name="keyed", route_prefix=PREFIX)
    url = svimo_url + PREFIX
    wait_healthy(url, 120)
    yield url, issued
    serve.delete("keyed")
