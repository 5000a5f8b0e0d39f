"""A multi-node Ray cluster on one machine: a head and `--nodes - 1` workers on 127.0.0.1.

    python -m cluster.local start [--nodes 2] [--cpus-per-node 2] [--state DIR]
                                  [--node-types ray_cluster.yaml]
    python -m cluster.local stop [--state DIR]

Each node is its own `ray start --block` process (own raylet, object store and resources),
joined to the head with `--address` as a second machine would be, so jobs, Ray Train worker
placement and Serve see a real multi-node cluster. Every node gets free ports and the cluster
a temp dir of its own, so it never touches another Ray instance on the machine (the default
`/tmp/ray` session, a test suite's instance). `start` writes the addresses to
`<state>/cluster.json`; `stop` ends only the processes that `start` launched and anything
still running from the cluster's own temp dir, never a `ray stop` of the whole machine.

With node types (`--node-types` takes a cluster-launcher config's worker types) the head runs
Ray's autoscaler with its fake multi-node provider: nodes of those types start on this machine
when work waits for them, as a cloud cluster's GPU nodes do from zero.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

DEFAULT_STATE = ".ray-local"
"""Where `start` keeps the cluster description and node logs (relative to the cwd)."""
STATE_FILE = "cluster.json"
AUTOSCALING_FILE = "autoscaling.yaml"
"""The fake autoscaling cluster's launcher config (`start(node_types=...)`)."""
STARTUP_TIMEOUT_S = 90.0
LEFTOVER_GRACE_S = 5.0
_FIRST_PORT = 20000
"""The lowest port `free_port` hands out: above Ray's worker ports (10002-19999)."""
_handed_out: set[int] = set()


@dataclass
class LocalCluster:
    """What `start` launched: enough for jobs to connect and for `stop` to end it."""

    address: str
    """GCS address, for `ray.init(address=...)`, `serve run --address` and `--ray.address`."""
    dashboard_url: str
    """Jobs API and dashboard, for `ray job submit --address` and `cluster.submit`."""
    temp_dir: str
    """The cluster's own Ray temp dir (sessions, logs, sockets)."""
    pids: list[int]
    """The `ray start --block` process of each node, head first."""
    node_ids: list[str]
    """Ray node ids, head first."""


def free_port() -> int:
    """A TCP port that is free now, never one this process handed out before.

    It comes from below the kernel's ephemeral range (`ip_local_port_range`) and above Ray's
    worker ports (10002-19999). A port of `bind(0)` comes from the ephemeral range, where any
    process's outgoing connection (a starting node's own gRPC clients) can take it as its source
    port before the server it is meant for binds it; the server then fails to start.
    """
    low = _ephemeral_low()
    candidates = [p for p in range(_FIRST_PORT, low) if p not in _handed_out]
    for port in random.sample(candidates, min(len(candidates), 200)):
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket() as s:  # nothing free below the ephemeral range: the kernel's pick
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def _node_ports() -> list[str]:
    """Ports that default to fixed numbers, which two nodes on one machine cannot share."""
    flags = ("--node-manager-port", "--object-manager-port", "--dashboard-agent-listen-port",
             "--dashboard-agent-grpc-port", "--runtime-env-agent-port", "--metrics-export-port")
    return [arg for flag in flags for arg in (flag, str(free_port()))]


def _ray_start(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    """`ray start --block <args>` in a session of its own, output to `log`."""
    ray = Path(sys.executable).with_name("ray")
    with log.open("ab") as out:
        return subprocess.Popen([str(ray), "start", "--block", "--disable-usage-stats",
                                 "--node-ip-address", "127.0.0.1", *args],
                                stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)


def alive_nodes(dashboard_url: str) -> list[dict]:
    """The cluster's alive nodes from the State API ([] while the dashboard is not up)."""
    url = f"{dashboard_url}/api/v0/nodes?limit=100&detail=true"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            result = json.load(response)["data"]["result"]["result"]
    except (OSError, ValueError, KeyError):
        return []
    return [node for node in result if node["state"] == "ALIVE"]


def _wait_for_nodes(dashboard_url: str, count: int, procs: list[subprocess.Popen],
                    logs: list[Path]) -> list[dict]:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        for proc, log in zip(procs, logs, strict=True):
            if proc.poll() is not None:
                raise RuntimeError(f"a node exited with code {proc.returncode} while starting; "
                                   f"its output is in {log}:\n{_tail(log)}")
        nodes = alive_nodes(dashboard_url)
        if len(nodes) >= count:
            return nodes
        time.sleep(0.5)
    raise RuntimeError(f"the cluster did not reach {count} alive nodes within "
                       f"{STARTUP_TIMEOUT_S:g} s; node logs: {', '.join(map(str, logs))}")


def _raylet_fatal_lines(temp_dir: str) -> str:
    """The fatal (level C) lines of the cluster's raylet logs: why a raylet died, such as a
    port that another process took ("Failed to start the grpc server. The specified port...")."""
    lines = (line for log in sorted(Path(temp_dir).glob("**/logs/raylet.out"))
             for line in log.read_text(errors="replace").splitlines())
    return "\n".join(line for line in lines if re.match(r"\[[^\]]* C \d+ \d+\] \(raylet\)", line))


def _tail(path: Path, lines: int = 20) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def start(state: str | Path = DEFAULT_STATE, nodes: int = 2, cpus_per_node: float = 2,
          object_store_mb: int = 512, env: dict[str, str] | None = None,
          node_types: dict[str, dict] | None = None) -> LocalCluster:
    """Start a head and `nodes - 1` worker nodes on 127.0.0.1; return once all are alive.

    Args:
        state: directory for cluster.json and the nodes' logs (one cluster per directory).
        nodes: number of Ray nodes, head included (>= 1).
        cpus_per_node: logical CPUs each node offers to the scheduler.
        object_store_mb: object store size of each node.
        env: environment of the node processes (default: this process's); this Python's
            bin directory is put first on PATH, so the nodes run this environment's Python.
        node_types: worker node types the head's autoscaler starts on demand, as a launcher
            config's `available_node_types` ({name: {"resources": {...}, "max_workers": n}});
            Ray's fake multi-node provider runs each such node as a raylet on this machine
            (resources such as GPUs are only advertised). Their maxima are reported to the
            GCS as on a cloud cluster (`cluster.node_types`).
    """
    state = Path(state).absolute()
    if (state / STATE_FILE).exists():
        raise RuntimeError(f"{state / STATE_FILE} exists: a cluster started from there may "
                           f"still run; `python -m cluster.local stop --state {state}` first")
    if nodes < 1 or cpus_per_node <= 0:
        raise ValueError("nodes must be >= 1 and cpus_per_node > 0")
    state.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ if env is None else env)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["RAY_AUTH_MODE"] = "disabled"  # loopback only; the nodes must reach each other
    # Unix socket paths are limited to 107 bytes: a short temp dir of its own.
    temp_dir = tempfile.mkdtemp(prefix="svimo-ray-", dir="/tmp")
    gcs_port, dashboard_port = free_port(), free_port()
    resources = ["--num-cpus", f"{cpus_per_node:g}",
                 "--object-store-memory", str(object_store_mb * 1024 * 1024)]
    head_log = state / "node-0.log"
    address = f"127.0.0.1:{gcs_port}"
    autoscaling: list[str] = []
    if node_types:
        launcher = state / AUTOSCALING_FILE
        launcher.write_text(yaml.safe_dump(_autoscaling_config(address, cpus_per_node,
                                                               node_types)))
        autoscaling = ["--autoscaling-config", str(launcher)]
        # Ray's fake multi-node provider, checking for new demand every second
        env |= {"RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"}
    procs = [_ray_start(["--head", "--port", str(gcs_port), "--dashboard-host", "127.0.0.1",
                         "--dashboard-port", str(dashboard_port), "--ray-client-server-port",
                         str(free_port()), "--temp-dir", temp_dir, *resources, *autoscaling,
                         *_node_ports()], head_log, env)]
    logs = [head_log]
    dashboard_url = f"http://127.0.0.1:{dashboard_port}"
    cluster = LocalCluster(address, dashboard_url, temp_dir, [p.pid for p in procs], [])
    _write(state, cluster)  # from here on, `stop` can clean up whatever happens
    try:
        _wait_for_nodes(dashboard_url, 1, procs, logs)
        for index in range(1, nodes):
            logs.append(state / f"node-{index}.log")
            # a temp dir of its own (under the cluster's): nodes sharing one would each tail
            # the other's worker logs, printing every line twice
            procs.append(_ray_start(["--address", address, "--temp-dir",
                                     f"{temp_dir}/node-{index}", *resources, *_node_ports()],
                                    logs[-1], env))
            cluster.pids.append(procs[-1].pid)
            _write(state, cluster)
        alive = _wait_for_nodes(dashboard_url, nodes, procs, logs)
        if node_types:
            subprocess.run([sys.executable, "-m", "cluster.node_types",
                            str(state / AUTOSCALING_FILE), "--address", address],
                           env=env, check=True, capture_output=True,
                           cwd=Path(__file__).resolve().parents[1])
    except BaseException as error:
        fatal = _raylet_fatal_lines(temp_dir)  # `stop` deletes the temp dir and its logs
        stop(state)
        if fatal and isinstance(error, RuntimeError):
            raise RuntimeError(f"{error}\nthe raylet's fatal error:\n{fatal}") from error
        raise
    head = next(n["node_id"] for n in alive if n["is_head_node"])
    cluster.node_ids = [head, *sorted(n["node_id"] for n in alive if n["node_id"] != head)]
    _write(state, cluster)
    return cluster


def _autoscaling_config(address: str, cpus_per_node: float, node_types: dict[str, dict]
                        ) -> dict:
    """A cluster-launcher config for Ray's fake multi-node provider: the head (its type
    name is the provider's) and `node_types`, starting at zero nodes, joining `address`."""
    workers = {name: {"node_config": {}, "min_workers": 0, **spec}
               for name, spec in node_types.items()}
    return {
        "cluster_name": "svimo-local",
        "max_workers": sum(spec["max_workers"] for spec in workers.values()),
        "provider": {"type": "fake_multinode", "gcs_address": address,
                     "use_node_id_as_ip": True, "disable_node_updaters": True,
                     "disable_launch_config_check": True},
        "available_node_types": {"ray.head.default": {
            "resources": {"CPU": cpus_per_node}, "node_config": {}, "max_workers": 0},
            **workers},
        "head_node_type": "ray.head.default",
        "upscaling_speed": 1.0, "idle_timeout_minutes": 1.0,
        "auth": {}, "docker": {}, "file_mounts": {}, "cluster_synced_files": [],
        "file_mounts_sync_continuously": False, "rsync_exclude": [], "rsync_filter": [],
        "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
        "worker_setup_commands": [], "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
    }


def _write(state: Path, cluster: LocalCluster) -> None:
    (state / STATE_FILE).write_text(json.dumps(asdict(cluster), indent=2) + "\n")


def read(state: str | Path = DEFAULT_STATE) -> LocalCluster:
    """The cluster that `start` recorded in `state`."""
    path = Path(state) / STATE_FILE
    if not path.exists():
        raise FileNotFoundError(f"no local cluster recorded at {path}")
    return LocalCluster(**json.loads(path.read_text()))


def cluster_processes(cluster: LocalCluster) -> list[int]:
    """Pids of the cluster's processes: those in the process group of a node's `ray start`
    (its session) or whose command line names the cluster's temp dir (workers that left the
    group still carry their session dir)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            group = int((entry / "stat").read_text().rsplit(") ", 1)[1].split()[2])
        except (OSError, IndexError, ValueError):  # ended meanwhile, or not ours to read
            continue
        if group in cluster.pids or cluster.temp_dir in cmdline:
            pids.append(int(entry.name))
    return pids


def _signal(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _wait_gone(pids: list[int], timeout_s: float) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while True:
        left = [pid for pid in pids if Path(f"/proc/{pid}").exists() and not is_zombie(pid)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].startswith("Z")
    except (OSError, IndexError):
        return False


def stop(state: str | Path = DEFAULT_STATE, timeout_s: float = 10.0) -> int:
    """End the cluster recorded in `state`: SIGTERM to each node's `ray start --block`
    (workers first), which ends its node's processes, waiting up to `timeout_s`; then
    SIGTERM and after LEFTOVER_GRACE_S SIGKILL to whatever of the cluster still runs.
    Returns how many processes needed that second round. Removes the temp dir and
    cluster.json."""
    cluster = read(state)
    _signal(list(reversed(cluster.pids)), signal.SIGTERM)
    _wait_gone(cluster.pids, timeout_s)
    # workers whose node is gone (a train worker in a collective, a replica) may not heed
    # SIGTERM: a short grace, then SIGKILL
    leftovers = [pid for pid in cluster_processes(cluster) if not is_zombie(pid)]
    _signal(leftovers, signal.SIGTERM)
    _signal(_wait_gone(leftovers, LEFTOVER_GRACE_S), signal.SIGKILL)
    _signal(_wait_gone(cluster.pids, 0), signal.SIGKILL)
    shutil.rmtree(cluster.temp_dir, ignore_errors=True)
    (Path(state) / STATE_FILE).unlink()
    return len(leftovers)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("start", "stop"))
    parser.add_argument("--state", default=DEFAULT_STATE,
                        help=f"cluster.json and node logs (default {DEFAULT_STATE})")
    parser.add_argument("--nodes", type=int, default=2, help="nodes, head included")
    parser.add_argument("--cpus-per-node", type=float, default=2,
                        help="logical CPUs each node offers")
    parser.add_argument("--object-store-mb", type=int, default=512,
                        help="object store size of each node")
    parser.add_argument("--node-types", help="a cluster-launcher config (ray_cluster.yaml) "
                        "whose worker node types the autoscaler starts on demand")
    args = parser.parse_args(argv)
    try:
        if args.command == "stop":
            left = stop(args.state)
            print(f"stopped the cluster of {args.state}"
                  + (f" ({left} leftover processes ended)" if left else ""))
            return 0
        node_types = None
        if args.node_types:
            launcher = yaml.safe_load(Path(args.node_types).read_text())
            node_types = {name: {"resources": spec.get("resources", {}),
                                 "max_workers": spec.get("max_workers", 1)}
                          for name, spec in launcher["available_node_types"].items()
                          if name != launcher["head_node_type"]}
        cluster = start(args.state, args.nodes, args.cpus_per_node, args.object_store_mb,
                        node_types=node_types)
    except (RuntimeError, FileNotFoundError, ValueError, KeyError,
            subprocess.CalledProcessError) as e:
        print(f"cluster.local: {e}", file=sys.stderr)
        return 2
    print(json.dumps(asdict(cluster), indent=2))
    print(f"\nJobs:   ray job submit --address {cluster.dashboard_url} --working-dir . -- "
          f"python jobs/train.py ...\nDriver: --ray.address {cluster.address}\n"
          f"Stop:   python -m cluster.local stop --state {args.state}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
