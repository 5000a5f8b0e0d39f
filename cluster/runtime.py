"""Connecting a job to Ray."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import ray

from hoi.config import RayConfig

log = logging.getLogger(__name__)


def init_ray(cfg: RayConfig) -> None:
    """Join the cluster the job was submitted to, or start a local instance.

    `ray job submit` sets RAY_ADDRESS for its driver, so a submitted job joins its cluster;
    run directly, a job starts its own local Ray with `cfg.num_cpus` CPUs."""
    if ray.is_initialized():
        return
    joining = cfg.address is not None or "RAY_ADDRESS" in os.environ
    # The dashboard serves the State API, which Ray Train's placement-group cleaner polls (it
    # logs a warning every few seconds without it) and users watch jobs with; loopback only.
    kwargs = {} if joining else {"num_cpus": cfg.num_cpus, "include_dashboard": True,
                                 "dashboard_host": "127.0.0.1"}
    ray.init(address=cfg.address, logging_level=logging.WARNING, log_to_driver=True, **kwargs)
    resources = ray.cluster_resources()
    log.info("Ray: %s, %s CPUs, %s GPUs", "joined cluster" if joining else "local instance",
             resources.get("CPU", 0), resources.get("GPU", 0))


PROJECT_ROOT = Path(__file__).resolve().parents[1]
UPLOAD_EXCLUDES = [".git", ".venv", "outputs", ".ray-local", "*.egg-info", "__pycache__",
                   ".pytest_cache", ".ruff_cache", ".hypothesis"]
"""What a job's working-dir upload leaves out: environments, outputs and caches (Ray refuses
uploads over 500 MiB, and nodes have the project installed)."""
FORWARDED_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                 "AWS_DEFAULT_REGION", "AWS_REGION")
"""Credentials a job is given with `forward_credentials` (`cluster.submit
--forward-aws-credentials`), for a cluster whose nodes have no instance role. Off by default:
keys copied from a shell override a node's role, and a session token among them expires
during a multi-day run."""


def job_runtime_env(upload: bool, env_vars: dict[str, str] | None = None,
                    forward_credentials: bool = False) -> dict:
    """The runtime_env of a job: no downloads at run time (HF_HUB_OFFLINE: weights come from
    the paths a job is given), `env_vars`, with `forward_credentials` this shell's AWS
    credentials (FORWARDED_ENV); with `upload`, the project as working dir (without
    UPLOAD_EXCLUDES and what .gitignore names)."""
    env = ({name: os.environ[name] for name in FORWARDED_ENV if name in os.environ}
           if forward_credentials else {})
    env |= {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **(env_vars or {})}
    runtime_env: dict = {"env_vars": env}
    if upload:
        runtime_env |= {"working_dir": str(PROJECT_ROOT), "excludes": UPLOAD_EXCLUDES}
    return runtime_env


def storage_paths(root: str) -> dict[str, str]:
    """Config fields (dotted keys) that put every job's data, checkpoints and results under one root
    (a local directory or s3://bucket/prefix), where the jobs of a run find each other's:

        <root>/shards   prepare's output, what train and evaluate read
        <root>/runs     train's checkpoints (the model sample, serve and evaluate load)
        <root>/samples  batch samples;  <root>/serve  the Serve app's results
        <root>/eval     evaluation tables

    The codec stays where `encoders.*` say: it is an input, made once. Jobs take these as
    `--key value`, the Serve app as `key=value`."""
    root = root.rstrip("/")
    paths = {"prepare.output": "shards", "codec.shards": "shards", "train.shards": "shards",
             "evaluate.shards": "shards", "train.storage_path": "runs",
             "sample.output": "samples", "serve.results": "serve", "evaluate.output": "eval"}
    return {key: f"{root}/{sub}" for key, sub in paths.items()}
