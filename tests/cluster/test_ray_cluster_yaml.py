"""ray_cluster.yaml against Ray's own cluster-launcher schema (defaults filled as `ray up` does)."""

from pathlib import Path

import pytest
import yaml
from jsonschema import ValidationError
from ray.autoscaler._private.util import prepare_config, validate_config

from hoi.config import load_config

CONFIG = Path(__file__).resolve().parents[2] / "ray_cluster.yaml"


def test_cluster_config_is_valid_for_ray():
    config = yaml.safe_load(CONFIG.read_text())
    validate_config(prepare_config(config))
    assert config["head_node_type"] in config["available_node_types"]
    assert "RAY_AUTH_MODE" not in CONFIG.read_text()  # authentication stays on in real clusters
    types = config["available_node_types"]
    assert {"gpu_worker", "serve_worker"} <= set(types)  # training and serving pools
    assert sum(t["max_workers"] for t in types.values()) <= config["max_workers"]


def test_the_check_catches_a_misspelt_field():
    config = yaml.safe_load(CONFIG.read_text())
    config["max_workerz"] = config.pop("max_workers")
    with pytest.raises(ValidationError, match="max_workerz"):
        validate_config(prepare_config(config))


def test_the_cloud_run_file_fits_the_gpu_pool():
    """configs/cloud.yaml is a valid run file whose training workers fill whole GPU nodes."""
    cfg = load_config(CONFIG.with_name("configs") / "cloud.yaml")
    gpus_per_node = 8  # p4de.24xlarge, the gpu_worker type
    assert cfg.flavour == "svimo-5b" and cfg.train.use_gpu
    assert cfg.train.num_workers % gpus_per_node == 0
    nodes = cfg.train.num_workers // gpus_per_node
    types = yaml.safe_load(CONFIG.read_text())["available_node_types"]
    assert nodes <= types["gpu_worker"]["max_workers"]
    assert cfg.serve.max_replicas <= types["serve_worker"]["max_workers"]
