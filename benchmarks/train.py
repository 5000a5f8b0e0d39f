"""The train benchmark: data wait and throughput with precomputed latents and with online
encoding, 1 vs 2 Ray Train workers, and each Ray Data pipeline's ingest rate alone."""

from __future__ import annotations

import argparse
import os
import time

from benchmarks.harness import Rows, benchmark


def _train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="configs/default.yaml",
                        help="run file: shards and encoders (made by scripts/main.sh)")
    parser.add_argument("--steps", type=int, default=30,
                        help="steps per run; the last --window steps are measured")
    parser.add_argument("--window", type=int, default=10, help="steps of the measured window")
    parser.add_argument("--ingest-batches", type=int, default=12,
                        help="batches the pipeline alone delivers (after the first)")


@benchmark("train", "data wait, samples/s, tokens/s: precomputed latents or online encoding, "
           "1 vs 2 Ray Train workers", _train_arguments)
def train(args: argparse.Namespace) -> Rows:
    """1. The encode pass into the config's shards (a no-op once `scripts/main.sh` ran it).
    2. `jobs/train.py`'s fit with 1 and 2 workers (0.5 CPU each for 2), on the precomputed
    latents and on the same shards without them (encoded online): the last window's
    samples/s, tokens/s, seconds per step and data-wait fraction. 3. Each stage-0 pipeline
    alone, drained by one consumer: clips/s it delivers after its first batch."""
    import tempfile

    import ray

    from hoi.config import load_config
    from hoi.storage import absolute_paths
    from hoi.train.data import stage_dataset
    from hoi.train.job import fit, preflight
    from hoi.train.latents import encode_pass

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="ERROR",
             log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    base = absolute_paths(load_config(args.config, ["--train.validate_every", "null"]))
    encode_pass(base, progress=False)
    rows: Rows = []
    with tempfile.TemporaryDirectory() as online:
        for split in ("train", "val"):  # the same shards, without their latents
            os.symlink(os.path.join(base.train.shards, split), os.path.join(online, split))
        sources = (("latents", base.train.shards), ("online", online))
        for source, shards in sources:
            for workers in (1, 2):
                with tempfile.TemporaryDirectory() as storage:
                    run = load_config(args.config, [
                        "--train.shards", shards, "--train.validate_every", "null",
                        "--train.num_workers", str(workers), "--train.cpus_per_worker",
                        "1.0" if workers == 1 else "0.5", "--train.steps", str(args.steps),
                        "--train.log_every", str(args.window), "--train.checkpoint_every",
                        str(args.steps), "--train.storage_path", storage])
                    metrics = fit(run).metrics
                rows.append({"run": f"{source}: {workers} worker(s), batch "
                                    f"{run.train.batch_size} each",
                             "samples_per_s": round(metrics["samples_per_s"], 2),
                             "tokens_per_s": round(metrics["tokens_per_s"]),
                             "steps_per_s": round(1 / metrics["step_seconds"], 3),
                             "data_wait": f"{100 * metrics['data_wait']:.1f}%",
                             "model_gflops_per_s": round(1e3 * metrics["tflops"], 1)})
        # last: a pipeline drained alone keeps its encoder actor (CPUs) while its iterator lives
        for source, shards in sources:
            cfg = absolute_paths(load_config(args.config, ["--train.shards", shards]))
            checked = preflight(cfg)
            it = iter(stage_dataset(cfg, checked.shards, 0, latents=checked.latents)
                      .iter_torch_batches(batch_size=cfg.train.batch_size))
            next(it)  # the pipeline's start (actor, encoders) is not its rate
            start = time.perf_counter()
            for _ in range(args.ingest_batches):
                next(it)
            seconds = time.perf_counter() - start
            rows.append({"run": f"{source}: the pipeline alone (ingest)",
                         "samples_per_s": round(args.ingest_batches * cfg.train.batch_size
                                                / seconds, 2)})
            del it
    ray.shutdown()
    return rows
