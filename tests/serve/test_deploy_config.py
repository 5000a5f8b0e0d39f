"""serve/svimo.yaml is a valid Serve config whose app builds with its own arguments; so is the
cloud's, serve/cloud.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ray import serve
from ray.serve.schema import ServeDeploySchema

from hoi.config import load_config
from hoi.resources import ResourceError
from serve.app import build_app, svimo

REPO = Path(__file__).resolve().parents[2]


def test_serve_config_is_valid_and_builds(tiny_model: str, monkeypatch) -> None:
    config = yaml.safe_load((REPO / "serve/svimo.yaml").read_text())
    schema = ServeDeploySchema.model_validate(config)
    (app,) = schema.applications
    assert app.import_path == "serve.app:svimo"
    monkeypatch.chdir(REPO)  # the args name configs/default.yaml relative to the checkout
    built = svimo({**app.args, "serve.model": tiny_model, "flavour": "svimo-tiny"})
    assert isinstance(built, serve.Application)


def test_bad_arguments_fail_with_the_config_error(tiny_model: str) -> None:
    with pytest.raises(ValueError, match="serve.max_replica"):
        svimo({"config": str(REPO / "configs/default.yaml"), "serve.max_replica": "3"})
    with pytest.raises(FileNotFoundError, match="nothing at"):
        svimo({"config": str(REPO / "configs/default.yaml"), "serve.model": "/nonexistent"})


def test_the_cloud_serve_config_runs_the_cloud_run_file_from_s3() -> None:
    """serve/cloud.yaml: a valid Serve config for ray_cluster.yaml's cluster, whose app reads
    configs/cloud.yaml (svimo-5b) and keeps its model and results on S3."""
    config = yaml.safe_load((REPO / "serve/cloud.yaml").read_text())
    (app,) = ServeDeploySchema.model_validate(config).applications
    args = dict(app.args)
    assert args.pop("config") == "configs/cloud.yaml"
    assert all(value.startswith("s3://") for value in args.values())
    cfg = load_config(REPO / "configs/cloud.yaml", [f"--{k}={v}" for k, v in args.items()])
    assert cfg.flavour == "svimo-5b" and cfg.serve.model.startswith("s3://")


def _sampler_options(app: serve.Application) -> dict:
    """The SamplingReplica deployment's actor options inside the built app (the ingress's third
    argument)."""
    return app._bound_deployment.init_args[2]._bound_deployment.ray_actor_options


def test_a_replica_the_cluster_can_never_hold_fails_the_build(tiny_model: str,
                                                              ray_local: None) -> None:
    """The replica's GPUs come from the config (svimo-5b: one each), not from what the
    cluster runs at the moment; on a cluster that can never hold a replica (this 2-CPU one,
    with no node types to add) the build fails at once instead of leaving it pending.
    tests/cluster/test_autoscaling.py builds the same app where GPU nodes can be added."""
    cpu = build_app(load_config(flavour="svimo-tiny", overrides=["--serve.model", tiny_model]))
    assert _sampler_options(cpu)["num_gpus"] == 0
    gpu = load_config(flavour="svimo-5b", overrides=["--serve.model", tiny_model])
    assert gpu.serve.replica_gpus == 1
    with pytest.raises(ResourceError, match="but the cluster has 2 CPU"):
        build_app(gpu)
