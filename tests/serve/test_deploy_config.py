"""serve/svimo.yaml is a valid Serve config whose app builds with its own arguments; so is the
cloud's, serve/cloud.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ray import serve
from ray.serve.schema import ServeDeploySchema

from hoi.config import load_config
from serve.app import svimo

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
