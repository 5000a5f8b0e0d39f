"""ray_cluster.yaml against Ray's own cluster-launcher schema (defaults filled as `ray up` does)."""

import dataclasses
from pathlib import Path

import pytest
import yaml
from jsonschema import ValidationError
from ray.autoscaler._private.util import prepare_config, validate_config

from hoi.config import load_config
from hoi.resources import ResourceError, check_reservations, node_types_of
from hoi.train.job import reservations

CONFIG = Path(__file__).resolve().parents[2] / "ray_cluster.yaml"


def test_cluster_config_is_valid_for_ray():
    config = yaml.safe_load(CONFIG.read_text())
    validate_config(prepare_config(config))
    assert config["head_node_type"] in config["available_node_types"]
    types = config["available_node_types"]
    assert {"gpu_worker", "serve_worker"} <= set(types)  # training and serving pools
    assert sum(t["max_workers"] for t in types.values()) <= config["max_workers"]


def test_every_node_has_an_image_credentials_and_room():
    """No node falls back to the launcher's old default image (CUDA 11.2) or starts without
    an instance profile (workers get none by default: their jobs would need keys copied from
    a shell), and each has a root volume sized for its work."""
    types = yaml.safe_load(CONFIG.read_text())["available_node_types"]
    for name, spec in types.items():
        node = spec["node_config"]
        assert node["ImageId"].startswith("resolve:ssm:/aws/service/deeplearning/ami/"), name
        assert "instance-profile/" in node["IamInstanceProfile"]["Arn"], name
        (root,) = node["BlockDeviceMappings"]
        assert root["Ebs"]["VolumeSize"] >= 200, name
    assert types["gpu_worker"]["node_config"]["BlockDeviceMappings"][0]["Ebs"][
        "VolumeSize"] >= 1000  # init_from copies, checkpoint staging, restores


def test_training_nodes_talk_over_efa_in_a_placement_group():
    config = yaml.safe_load(CONFIG.read_text())
    node = config["available_node_types"]["gpu_worker"]["node_config"]
    cards = [n for n in node["NetworkInterfaces"] if n["InterfaceType"] == "efa"]
    assert sorted(n["NetworkCardIndex"] for n in cards) == [0, 1, 2, 3]  # all of a p4de's
    assert node["Placement"]["GroupName"]
    workers = " ".join(config["worker_start_ray_commands"])
    assert "FI_PROVIDER=efa" in workers and "FI_EFA_USE_DEVICE_RDMA=1" in workers


def test_ray_runs_with_token_authentication_and_a_loopback_dashboard():
    """Ray 2.60 turns token authentication on for `ray.init`'s local clusters, not for `ray
    start`: the launcher config must distribute a token and ask for it on every node; the
    dashboard (the jobs API) stays off the network."""
    config = yaml.safe_load(CONFIG.read_text())
    assert config["file_mounts"]["/home/ubuntu/.ray/auth_token"] == "~/.ray/auth_token"
    starts = [c for c in config["head_start_ray_commands"] + config["worker_start_ray_commands"]
              if "ray start" in c]
    assert len(starts) == 2 and all("RAY_AUTH_MODE=token ray start" in c for c in starts)
    head = next(c for c in config["head_start_ray_commands"] if "ray start" in c)
    assert "--dashboard-host=127.0.0.1" in head and "0.0.0.0" not in head
    assert any("python -m cluster.node_types" in c for c in config["head_start_ray_commands"])


def test_the_check_catches_a_misspelt_field():
    config = yaml.safe_load(CONFIG.read_text())
    config["max_workerz"] = config.pop("max_workers")
    with pytest.raises(ValidationError, match="max_workerz"):
        validate_config(prepare_config(config))


def test_the_cloud_run_file_fits_the_node_types_of_the_cluster_it_starts_on():
    """configs/cloud.yaml's training run, checked as the job checks it (`hoi.resources`) on a
    fresh cluster of ray_cluster.yaml: only the CPU head runs, and the GPU nodes come from
    the autoscaler."""
    cfg = load_config(CONFIG.with_name("configs") / "cloud.yaml")
    launcher = yaml.safe_load(CONFIG.read_text())
    types = node_types_of(launcher)
    fresh = {"CPU": launcher["available_node_types"]["head"]["resources"]["CPU"]}
    assert cfg.flavour == "svimo-5b" and cfg.train.use_gpu
    assert "autoscaler adds nodes for another 56.25 CPU, 16 GPU" in check_reservations(
        reservations(cfg), fresh, types)
    # two more GPUs than the training pool has (the file before it left 2 GPUs to encoders);
    # the serving nodes' GPUs do not count: they are not A100s
    more = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, num_workers=16))
    with pytest.raises(ResourceError, match="reserves 80 CPU, 18 GPU .* at most 192 CPU, 16 GPU"):
        check_reservations(reservations(more), fresh, types)
    # a worker bigger than any node
    big = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, cpus_per_worker=100))
    with pytest.raises(ResourceError, match="no node type can hold one train worker"):
        check_reservations(reservations(big), fresh, types)
    types_by_name = launcher["available_node_types"]
    assert cfg.serve.max_replicas <= types_by_name["serve_worker"]["max_workers"]
