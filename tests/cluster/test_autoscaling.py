"""A training run checked against an autoscaling cluster whose GPU nodes start at zero, as
ray_cluster.yaml's do: Ray's own autoscaler with its fake multi-node provider
(`cluster.local` with node types), the node types reported to the GCS as on the cloud.

The driver is `jobs/train.py --check` in a process of its own (this test process may be joined
to the session's Ray): it runs every check made before training starts and exits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster import local
from hoi.config import StorageConfig
from hoi.untrained import write_untrained_model
from tests.train.inputs import write_train_inputs

REPO = Path(__file__).resolve().parents[2]
GPU_NODES = {"gpu_worker": {"resources": {"CPU": 2, "GPU": 2, "accelerator_type:A100": 1},
                            "max_workers": 2}}


@pytest.fixture(scope="module")
def autoscaling(tmp_path_factory: pytest.TempPathFactory) -> Iterator[local.LocalCluster]:
    """A 2-CPU head and up to two GPU nodes (2 CPUs, 2 GPUs, A100s) started on demand."""
    state = tmp_path_factory.mktemp("autoscaling")
    cluster = local.start(state, nodes=1, cpus_per_node=2, object_store_mb=256,
                          node_types=GPU_NODES)
    yield cluster
    local.stop(state)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    return write_train_inputs(str(tmp_path_factory.mktemp("inputs")), StorageConfig())


def _check(cluster: local.LocalCluster, inputs: list[str], *overrides: str
           ) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "jobs/train.py", "--check", *inputs, "--ray.address", cluster.address,
         "--train.use_gpu", "true", "--train.cpus_per_worker", "1", "--train.batch_size", "1",
         "--train.accelerator_type", "A100", *overrides],
        cwd=REPO, capture_output=True, text=True, timeout=180,
        env={**os.environ, "RAY_AUTH_MODE": "disabled"})


def _gpus(cluster: local.LocalCluster) -> float:
    nodes = local.alive_nodes(cluster.dashboard_url)
    return sum(n.get("resources_total", {}).get("GPU", 0) for n in nodes)


def test_a_gpu_run_is_accepted_before_any_gpu_node_runs(autoscaling, inputs):
    assert _gpus(autoscaling) == 0
    # 3 workers + 1 encoder x 0.5 GPU: 3.5 of the 4 GPUs two nodes would bring
    done = _check(autoscaling, inputs, "--train.num_workers", "3", "--train.encode_gpus", "0.5")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "once its autoscaler adds nodes for another" in done.stdout
    assert "3.5 GPU" in done.stdout
    assert _gpus(autoscaling) == 0  # a check starts nothing


@pytest.mark.parametrize("overrides, words", [
    (["--train.num_workers", "5"], "which can hold at most 4 CPU, 4 GPU"),
    (["--train.num_workers", "1", "--train.cpus_per_worker", "3"],
     "no node type can hold one train worker"),
    (["--train.num_workers", "1", "--train.accelerator_type", "H100"],
     "no node type can hold one train worker"),
])
def test_a_run_the_cluster_can_never_hold_fails_before_any_worker_starts(
        autoscaling, inputs, overrides, words):
    done = _check(autoscaling, inputs, *overrides)
    assert done.returncode == 2 and words in done.stderr, done.stderr[-3000:]


def _maxima(cluster: local.LocalCluster) -> dict[str, float]:
    """What Ray's own reader of a cluster's maxima (Ray Train's and Ray Data's) sees."""
    code = (f"import ray, json; ray.init(address={cluster.address!r}, "
            "logging_level='ERROR'); from ray._private.state import state; "
            "print(json.dumps(state.get_max_resources_from_cluster_config()))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_reported_node_types_are_what_ray_train_reads(autoscaling):
    maxima = _maxima(autoscaling)
    assert maxima["GPU"] == 4 and maxima["CPU"] == 2 + 4


def test_the_cloud_clusters_node_types_run_here(tmp_path: Path):
    """`cluster.local start --node-types ray_cluster.yaml`: the cloud's worker types behind a
    local head, reported as the cloud head reports them."""
    state = tmp_path / "cloud"
    assert local.main(["start", "--nodes", "1", "--cpus-per-node", "1", "--object-store-mb",
                       "256", "--state", str(state), "--node-types",
                       str(REPO / "ray_cluster.yaml")]) == 0
    try:
        maxima = _maxima(local.read(state))
    finally:
        local.stop(state)
    assert maxima["GPU"] == 2 * 8 + 4 * 1  # two p4de.24xlarge, four g6e.2xlarge
    assert maxima["accelerator_type:A100"] == 2 and maxima["accelerator_type:L40S"] == 4


BUILD_APP = """
import json, sys, ray
from hoi.config import load_config
from serve.app import build_app
ray.init(address=sys.argv[1], logging_level="ERROR")
app = build_app(load_config(flavour="svimo-5b", overrides=[
    "--serve.model", sys.argv[2], "--serve.accelerator_type", "A100"]))
print(json.dumps(app._bound_deployment.init_args[2]._bound_deployment.ray_actor_options))
"""


def test_serve_replicas_ask_for_gpus_before_any_gpu_node_runs(autoscaling, tmp_path: Path):
    """The svimo-5b Serve app built on a cluster whose GPU nodes have not started: each
    replica asks for a GPU of the named type (the request the autoscaler answers with a
    node), rather than for the 0 GPUs the cluster had at build time."""
    model = write_untrained_model(str(tmp_path), StorageConfig())
    assert _gpus(autoscaling) == 0
    done = subprocess.run([sys.executable, "-c", BUILD_APP, autoscaling.address, model],
                          cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    assert done.returncode == 0, done.stderr[-3000:]
    options = json.loads(done.stdout.strip().splitlines()[-1])
    assert options["num_gpus"] == 1 and options["accelerator_type"] == "A100"
