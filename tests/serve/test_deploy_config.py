"""serve/svimo.yaml is a valid Serve config whose app builds with its own arguments."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ray import serve
from ray.serve.schema import ServeDeploySchema

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
