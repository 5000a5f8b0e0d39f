"""The scale-out path end to end on a local two-node cluster (`cluster.local`) and S3 (moto):
prepare writes shards to S3, train runs one worker on each node and checkpoints to S3, the
Serve app loads that checkpoint from S3, batch sampling writes back to S3.

Jobs go through `python -m cluster.submit` (the Jobs API, as `ray job submit`), the app
through `serve run <config> --address`, as on a cloud cluster; this test process never joins
the cluster itself.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
import yaml
from PIL import Image
from ray.job_submission import JobSubmissionClient

from cluster import local
from hoi.storage import list_files, read_text
from hoi.untrained import write_untrained_codec
from serve.broker import LocalRedis
from serve.health import wait_healthy
from tests.conftest import S3Server, interrupt

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
JOB_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def cluster_state(s3: S3Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The state dir of a head and one worker node, 2 logical CPUs each, started with this
    process's environment (the moto credentials); stopped at the end unless a test did."""
    state = tmp_path_factory.mktemp("cluster")
    local.start(state, nodes=2, cpus_per_node=2, object_store_mb=256)
    yield state
    if (state / local.STATE_FILE).exists():
        local.stop(state)


@pytest.fixture
def two_nodes(cluster_state: Path) -> local.LocalCluster:
    return local.read(cluster_state)


def _submit(cluster: local.LocalCluster, root: str, script: str, *args: str,
            upload: bool = False) -> str:
    """Run `python -m cluster.submit` for one job; returns the job's log (asserting success)."""
    proc = subprocess.run(
        [sys.executable, "-m", "cluster.submit", "--address", cluster.dashboard_url,
         "--root", root, *(["--upload"] if upload else []), script, *args],
        cwd=REPO, capture_output=True, text=True, timeout=JOB_TIMEOUT_S)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}"
    job_id = re.search(r"job (\S+): SUCCEEDED", proc.stderr).group(1)
    working_dir = JobSubmissionClient(cluster.dashboard_url).get_job_info(
        job_id).runtime_env.get("working_dir", "")
    assert working_dir.startswith("gcs://") == upload  # an uploaded package, or none
    return proc.stdout



def _serve(cluster: local.LocalCluster, config: dict, log: Path) -> subprocess.Popen:
    config_file = log.with_suffix(".yaml")
    config_file.write_text(yaml.safe_dump(config))
    return subprocess.Popen([str(BIN / "serve"), "run", str(config_file),
                             "--address", cluster.address],
                            cwd=REPO, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            env={**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"},
                            start_new_session=True)


def _generate(url: str, prompt: str) -> dict:
    image = Image.fromarray(np.full((32, 48, 3), 120, np.uint8))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    answer = requests.post(f"{url}/v1/generations", files={"image": ("i.png", buf.getvalue())},
                           data={"prompt": prompt, "num_steps": "2"}, timeout=30)
    assert answer.status_code == 202, answer.text
    job = answer.json()["id"]
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        state = requests.get(f"{url}/v1/generations/{job}", timeout=10).json()
        if state["status"] in ("done", "failed"):
            return state | {"id": job}
        time.sleep(1)
    raise AssertionError(f"generation {job} did not finish: {state}")


def test_free_ports_are_distinct_and_below_the_ephemeral_range() -> None:
    """Outgoing connections take their source ports from the ephemeral range, so a port picked
    there can be gone before the node meant to bind it starts (its raylet then never comes up)."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = [local.free_port() for _ in range(100)]
    assert len(set(ports)) == len(ports)
    assert all(20000 <= port < low for port in ports), ports


def test_prepare_train_serve_and_sample_across_two_nodes_on_s3(
        two_nodes: local.LocalCluster, s3: S3Server, redis_server: LocalRedis,
        tmp_path: Path) -> None:
    root = s3.fresh_root()
    common = ["--flavour", "svimo-tiny", "--storage.endpoint_url", s3.endpoint_url,
              *write_untrained_codec(f"{root}/codec", s3.storage)]

    # 1. prepare: shards of both splits on S3, from an uploaded copy of the project (as a
    # remote cluster runs jobs; the others run in the checkout, as on one machine)
    _submit(two_nodes, root, "jobs/prepare.py", *common, "--prepare.num_train", "4",
            "--prepare.num_val", "1", "--prepare.clips_per_shard", "2",
            "--prepare.num_preview", "0", upload=True)
    shards = list_files(f"{root}/shards", s3.storage)
    assert sum(p.startswith("train/shard-") for p in shards) == 2
    assert sum(p.startswith("val/shard-") for p in shards) == 1

    # 2. train: one worker per node (STRICT_SPREAD), checkpoints on S3
    log = _submit(two_nodes, root, "jobs/train.py", *common, "--train.run_name", "two",
                  "--train.num_workers", "2", "--train.placement_strategy", "STRICT_SPREAD",
                  "--train.cpus_per_worker", "0.5", "--train.batch_size", "1",
                  "--train.steps", "2", "--train.checkpoint_every", "2", "--train.log_every", "1")
    placed = dict(re.findall(r"worker rank (\d) of 2 on node (\w+)", log))
    assert set(placed) == {"0", "1"}, log[-3000:]
    assert sorted(placed.values()) == sorted(two_nodes.node_ids), (placed, two_nodes.node_ids)
    model = f"{root}/runs/two/checkpoint-00000002/model"
    pipeline = json.loads(read_text(f"{model}/pipeline.json", s3.storage))
    assert pipeline["step"] == 2

    # 3. batch sampling from that run back to S3
    _submit(two_nodes, root, "jobs/sample.py", *common, "--train.run_name", "two",
            "--from-split", "val", "--limit", "1", "--sample.num_steps", "2")
    manifest = [json.loads(line) for line in
                read_text(f"{root}/samples/manifest.jsonl", s3.storage).splitlines()]
    assert [row["status"] for row in manifest] == ["ok"], manifest
    written = set(list_files(f"{root}/samples/{manifest[0]['id']}", s3.storage))
    assert {"video.mp4", "motion.npz", "result.json"} <= written

    # 4. Serve loads the checkpoint from S3 and writes its results there, its queue on Redis;
    # one HTTP proxy, on the head (two nodes of one machine cannot both bind the port)
    port = local.free_port()
    serve_log = tmp_path / "serve.log"
    proc = _serve(two_nodes, {
        "proxy_location": "HeadOnly", "http_options": {"host": "127.0.0.1", "port": port},
        "applications": [{"name": "svimo", "route_prefix": "/", "import_path": "serve.app:svimo",
                          "args": {"flavour": "svimo-tiny", "storage.endpoint_url": s3.endpoint_url,
                                   "serve.model": f"{root}/runs/two",
                                   "serve.results": f"{root}/serve",
                                   "serve.broker": redis_server.url,
                                   "serve.replica_cpus": "0.25", "sample.num_steps": "2",
                                   "sample.max_steps": "4"}}]},
        serve_log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, 180, proc, serve_log)
        state = _generate(url, "stir the bowl with the spoon")
        assert state["status"] == "done", state
        video = requests.get(f"{url}{state['files']['video.mp4']}", timeout=30)
        assert video.status_code == 200 and len(video.content) > 1000
        stored = list_files(f"{root}/serve/{state['id']}", s3.storage)
        assert "result.json" in stored, stored
    finally:
        interrupt(proc, 60)


def test_stop_ends_every_process_of_the_cluster_and_nothing_else(cluster_state: Path) -> None:
    """Runs last: stops the cluster the test above left with its jobs' and replicas' workers."""
    cluster = local.read(cluster_state)
    assert len(local.alive_nodes(cluster.dashboard_url)) == 2
    with pytest.raises(RuntimeError, match="exists"):
        local.start(cluster_state)  # one cluster per state dir
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        ours = local.cluster_processes(cluster)
        assert len(ours) > 6  # GCS, 2 raylets, dashboard, agents, workers
        local.stop(cluster_state)
        assert not [pid for pid in ours if Path(f"/proc/{pid}").exists()
                    and not local.is_zombie(pid)]
        assert not Path(cluster.temp_dir).exists()
        assert not (cluster_state / local.STATE_FILE).exists()
        assert bystander.poll() is None  # not ours: untouched
    finally:
        bystander.kill()
        bystander.wait()
