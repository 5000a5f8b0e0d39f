"""What a Ray cluster can hold: its resources now, and its node types with the most nodes of
each that its autoscaler may start.

A job reserves bundles of resources (a train worker's CPUs and GPU, an encoder actor's, a
Serve replica's). On an autoscaling cluster whose GPU nodes start at zero, the totals of the
moment say nothing about what the cluster can hold: the autoscaler adds nodes once bundles
wait for them. So a job is checked against its node types: it fails fast when no node type
can hold one of its bundles or all of them together fall short, and otherwise starts and
lets the autoscaler act.

Where the node types come from. Ray keeps them in the GCS as a `ClusterConfig` (each node
group's resources and max count), and Ray Train and Ray Data read them from there
(`ray._private.state.state.get_max_resources_from_cluster_config`). KubeRay reports them;
Ray 2.60's cluster launcher (`ray up`) does not. `publish` reports a launcher config's node
types through the same GCS call: ray_cluster.yaml's head runs `python -m cluster.node_types`
right after `ray start`, and `cluster.local` does for its fake autoscaling cluster. A cluster
without them (a local instance, `cluster.local` without autoscaling) is fixed: what it has now
is all it will have.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import ray


class ResourceError(RuntimeError):
    """A job's reservations can never be held by the cluster."""


@dataclass(frozen=True)
class NodeType:
    """One kind of node: the resources each node offers and how many there may be (-1: no
    limit)."""

    name: str
    resources: dict[str, float]
    max_count: int


@dataclass(frozen=True)
class Reservation:
    """`count` bundles of `resources` that a job holds while it runs, named for messages."""

    what: str
    resources: dict[str, float]
    count: int


def accelerator(model: str | None) -> dict[str, float]:
    """The resource Ray asks of a node for an actor pinned to GPU model `model` (what
    ScalingConfig(accelerator_type=...) and `accelerator_type=` options add): 0.001 of the
    node's accelerator_type:<model>; nothing for None."""
    return {f"accelerator_type:{model}": 0.001} if model else {}


# ---------------------------------------------------------------------------------------------
# Node types: from a launcher config, to and from the GCS
# ---------------------------------------------------------------------------------------------


def node_types_of(launcher: dict[str, Any]) -> list[NodeType]:
    """The node types of a cluster-launcher config (`ray up`'s YAML, or the head's
    ~/ray_bootstrap_config.yaml, where the launcher has filled in each instance type's CPUs
    and GPUs): the head node type once, each worker type up to its max_workers."""
    head = launcher["head_node_type"]
    default_max = launcher.get("max_workers", 2)
    types = []
    for name, spec in launcher["available_node_types"].items():
        count = 1 if name == head else int(spec.get("max_workers", default_max))
        types.append(NodeType(name, {k: float(v) for k, v in spec.get("resources", {}).items()},
                              count))
    return types


def publish(types: Iterable[NodeType]) -> None:
    """Report `types` to the GCS of the cluster this process is connected to, where Ray Train,
    Ray Data and `cluster_node_types` read them."""
    from ray.core.generated import autoscaler_pb2

    config = autoscaler_pb2.ClusterConfig()
    for node_type in types:
        group = config.node_group_configs.add()
        group.name, group.max_count = node_type.name, node_type.max_count
        for key, value in node_type.resources.items():
            group.resources[key] = int(value)  # node resources are whole units
    ray._private.worker.global_worker.gcs_client.report_cluster_config(
        config.SerializeToString())


def cluster_node_types() -> list[NodeType] | None:
    """The node types the connected cluster's GCS holds, or None when none were reported."""
    config = ray._private.state.state.get_cluster_config()
    if config is None or not config.node_group_configs:
        return None
    return [NodeType(g.name, {k: float(v) for k, v in g.resources.items()}, g.max_count)
            for g in config.node_group_configs]


# ---------------------------------------------------------------------------------------------
# Checking a job's reservations
# ---------------------------------------------------------------------------------------------


def _needed(reservations: Iterable[Reservation]) -> dict[str, float]:
    needed: dict[str, float] = {}
    for r in reservations:
        for key, value in r.resources.items():
            needed[key] = needed.get(key, 0.0) + value * r.count
    return needed


def capacity(types: Iterable[NodeType]) -> dict[str, float]:
    """Each resource's total once every node type runs its max count (inf: no limit)."""
    total: dict[str, float] = {}
    for t in types:
        for key, value in t.resources.items():
            total[key] = total.get(key, 0.0) + (math.inf if t.max_count < 0 else
                                                value * t.max_count)
    return total


def _fits(bundle: dict[str, float], node: dict[str, float]) -> bool:
    return all(value <= node.get(key, 0.0) + 1e-9 for key, value in bundle.items() if value)


def _describe(resources: dict[str, float]) -> str:
    """'72.25 CPU, 16 GPU' (markers such as accelerator_type:A100 left out)."""
    return ", ".join(f"{value:g} {key}" for key, value in sorted(resources.items())
                     if value and not key.startswith("accelerator_type:"))


def _short(needed: dict[str, float], limit: dict[str, float]) -> list[str]:
    return [key for key, value in needed.items() if value > limit.get(key, 0.0) + 1e-9]


def check_reservations(reservations: list[Reservation], now: dict[str, float],
                       types: list[NodeType] | None) -> str:
    """Raise ResourceError when a cluster whose totals are `now` and whose node types are
    `types` (None: a fixed cluster) can never hold `reservations`; else say whether it holds
    them now or once its autoscaler has added nodes.

    Checked: each bundle fits some node type; and the bundles that only fit a set of node
    types (an accelerator type's, say), together with those that fit fewer, fit what that set
    offers at its max counts. Not checked: how the bundles pack onto single nodes."""
    reservations = [r for r in reservations if r.count]
    needed = _needed(reservations)
    if types is None:
        short = _short(needed, now)
        if short:
            raise ResourceError(
                f"the run reserves {_describe(needed)} ({_listing(reservations)}) but the "
                f"cluster has {_describe({k: now.get(k, 0.0) for k in needed})}")
    else:
        everywhere = frozenset(t.name for t in types)
        homes = [frozenset(t.name for t in types if _fits(r.resources, t.resources))
                 for r in reservations]
        for r, home in zip(reservations, homes, strict=True):
            if not home:
                raise ResourceError(
                    f"no node type can hold one {r.what} ({_describe(r.resources)}); the "
                    f"cluster's node types: " + "; ".join(
                        f"{t.name} ({_describe(t.resources)})" for t in types))
            group = [q for q, h in zip(reservations, homes, strict=True) if h <= home]
            group_needs = _needed(group)
            offered = capacity(t for t in types if t.name in home)
            if home == everywhere:  # the whole cluster: what runs now counts too
                offered = {k: max(offered.get(k, 0.0), now.get(k, 0.0)) for k in group_needs}
            if _short(group_needs, offered):
                raise ResourceError(
                    f"the run reserves {_describe(group_needs)} ({_listing(group)}) on node "
                    f"types {', '.join(sorted(home))}, which can hold at most "
                    f"{_describe({k: offered.get(k, 0.0) for k in group_needs})}")
    missing = {key: value - now.get(key, 0.0) for key, value in needed.items()
               if value > now.get(key, 0.0) + 1e-9}
    if not _describe(missing):
        return f"the cluster holds the run's {_describe(needed)} now"
    return (f"the cluster holds the run's {_describe(needed)} once its autoscaler adds nodes "
            f"for another {_describe(missing)}")


def _listing(reservations: list[Reservation]) -> str:
    return ", ".join(f"{r.count} x {r.what} ({_describe(r.resources)})" for r in reservations)


def check(reservations: list[Reservation]) -> str:
    """`check_reservations` against the connected cluster (Ray must be initialised)."""
    return check_reservations(reservations, ray.cluster_resources(), cluster_node_types())
