"""Connecting a job to Ray."""

from __future__ import annotations

import logging
import os

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
