"""The serve benchmark: the svimo Serve app under concurrent HTTP clients, 1 vs 2 sampler
replicas."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.harness import Rows, benchmark, png


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def _serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--generations", type=int, default=100, help="generations per run")
    parser.add_argument("--clients", type=int, default=16, help="concurrent HTTP clients")
    parser.add_argument("--steps", type=int, default=4, help="denoising steps per generation")
    parser.add_argument("--replica-cpus", type=float, default=0.5,
                        help="CPUs reserved by each sampler replica")
    parser.add_argument("--poll", type=float, default=0.2, help="seconds between status polls")


def _client_load(url: str, args: argparse.Namespace) -> dict:
    """`args.clients` threads share `args.generations` submissions; each submits one, polls its
    status every `args.poll` s until done or failed, then submits the next. Returns the
    latencies (s) of submit calls, status calls and completions (submit -> seen done), the
    HTTP codes that were not 2xx, the jobs accepted, each finished job's runs (attempts), and
    the jobs that failed or never finished."""
    import itertools
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import requests

    counter, lock = itertools.count(), threading.Lock()
    out: dict = {"submit": [], "status": [], "done": [], "codes": {}, "failed": [],
                 "lost": [], "accepted": [], "runs": [], "first": None, "last": None}

    def record(key: str, value) -> None:
        with lock:
            out[key].append(value)

    def bad(code: int) -> None:
        with lock:
            out["codes"][code] = out["codes"].get(code, 0) + 1

    def client(_: int) -> None:
        http = requests.Session()
        while (i := next(counter)) < args.generations:
            image = png(i)
            while True:  # a full queue answers 429 + Retry-After: come back then
                start = time.perf_counter()
                with lock:
                    out["first"] = out["first"] or start
                r = http.post(f"{url}/v1/generations",
                              data={"prompt": "stir the bowl with the spoon",
                                    "num_steps": str(args.steps), "seed": str(i)},
                              files={"image": ("ref.png", image, "image/png")}, timeout=60)
                record("submit", time.perf_counter() - start)
                if r.status_code == 202:
                    break
                bad(r.status_code)
                if r.status_code not in (429, 503):
                    record("failed", f"submit {i}: {r.status_code} {r.text[:200]}")
                    break
                time.sleep(float(r.headers.get("Retry-After", 1)))
            if r.status_code != 202:
                continue
            job_id, submitted = r.json()["id"], start
            record("accepted", job_id)
            deadline = time.perf_counter() + 300
            while True:
                time.sleep(args.poll)
                t = time.perf_counter()
                s = http.get(f"{url}/v1/generations/{job_id}", timeout=60)
                record("status", time.perf_counter() - t)
                if s.status_code != 200:
                    bad(s.status_code)
                    if time.perf_counter() > deadline:
                        record("lost", job_id)
                        break
                    continue
                state = s.json()
                if state["status"] in ("done", "failed"):
                    now = time.perf_counter()
                    with lock:
                        out["last"] = max(out["last"] or now, now)
                    record("runs", state["attempts"])
                    if state["status"] == "done":
                        record("done", now - submitted)
                    else:
                        record("failed", f"{job_id}: {state['error']}")
                    break
                if time.perf_counter() > deadline:
                    record("lost", job_id)
                    break

    with ThreadPoolExecutor(args.clients) as pool:
        list(pool.map(client, range(args.clients)))
    return out


@benchmark("serve", "svimo Serve app over HTTP: throughput and latencies, 1 vs 2 replicas",
           _serve_arguments)
def serve_app(args: argparse.Namespace) -> Rows:
    """Per sampler replica count R (min = max = R, `--replica-cpus` each) on a 2-CPU local
    Ray and a local Redis (append-only, every write synced): start Serve and the app
    (svimo-tiny, random weights), run one warm-up generation per
    replica, then `--clients` HTTP clients share `--generations` generations of `--steps`
    steps. Throughput is from the first submit to the last completion; completion latency is
    submit -> the first status poll that sees done (so up to `--poll` s late)."""
    import logging
    import tempfile

    import ray
    import requests
    from ray import serve

    from cluster.local import free_port
    from hoi.config import StorageConfig, load_config
    from hoi.untrained import write_untrained_model
    from serve.app import build_app
    from serve.broker import LocalRedis
    from serve.health import wait_healthy

    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR,
             log_to_driver=False)
    rows: Rows = []
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as root:
        model = write_untrained_model(f"{root}/tiny", StorageConfig())
        broker = LocalRedis(free_port(), Path(root))
        broker.start()
        for replicas in (1, 2):
            cfg = load_config(flavour="svimo-tiny", overrides=[
                "--serve.model", model, "--serve.results", f"{root}/results-{replicas}",
                "--serve.broker", broker.url, "--serve.queue", f"bench-{replicas}",
                "--serve.min_replicas", str(replicas), "--serve.max_replicas", str(replicas),
                "--serve.replica_cpus", str(args.replica_cpus),
                "--serve.max_queued", str(max(args.generations, args.clients)),
                "--sample.num_steps", str(args.steps)])
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            start = time.perf_counter()
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            serve.run(build_app(cfg), name="svimo", route_prefix="/")
            wait_healthy(url, timeout_s=120)
            start_s = time.perf_counter() - start
            warm = argparse.Namespace(**{**vars(args), "generations": replicas,
                                         "clients": replicas})
            _client_load(url, warm)  # first calls of each replica (lazy init, thread pools)
            load = _client_load(url, args)
            health = requests.get(f"{url}/healthz", timeout=10).json()
            serve.delete("svimo")
            serve.shutdown()
            seconds = (load["last"] or time.perf_counter()) - load["first"]
            ms = lambda xs, q: round(1e3 * _percentile(xs, q), 1)  # noqa: E731
            rows.append({
                "replicas": replicas, "clients": args.clients,
                "generations": args.generations, "steps": args.steps,
                "start_s": round(start_s, 1),
                "gen_per_min": round(60 * len(load["done"]) / seconds, 1),
                "submit_p50_ms": ms(load["submit"], 50), "submit_p95_ms": ms(load["submit"], 95),
                "status_p50_ms": ms(load["status"], 50), "status_p95_ms": ms(load["status"], 95),
                "status_calls": len(load["status"]),
                "done_p50_s": round(_percentile(load["done"], 50), 2),
                "done_p95_s": round(_percentile(load["done"], 95), 2),
                "accepted": len(load["accepted"]), "done": len(load["done"]),
                "failed": len(load["failed"]), "lost": len(load["lost"]),
                "run_twice": sum(runs > 1 for runs in load["runs"]),
                "non_2xx": ", ".join(f"{c} x{n}" for c, n in sorted(load["codes"].items()))
                or "none",
                "left_queued_running": f"{health['queued']}/{health['running']}"})
            for problem in load["failed"] + load["lost"]:
                print(f"serve R={replicas}: {problem}", file=sys.stderr)
        broker.kill()
    ray.shutdown()
    return rows
