"""The sample benchmark: batch sampling, a plain loop vs `hoi.sampling.run` (Ray Data) with 1
and 2 sampler actors."""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from benchmarks.harness import Rows, benchmark, png


def _sample_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--samples", type=int, default=12, help="requests per run")
    parser.add_argument("--steps", type=int, default=4, help="denoising steps per sample")
    parser.add_argument("--default-threads-samples", type=int, default=4,
                        help="requests (the first ones) of the plain loop with torch's default "
                             "threads, which can be very slow on a loaded machine")


def _done_times(output: str) -> list[float]:
    """Wall-clock times (time.time) at which each <output>/<id>/result.json was written: a
    sample is complete when its result.json exists (hoi.outputs)."""
    from hoi.outputs import RESULT_NAME

    return sorted(p.stat().st_mtime for p in Path(output).glob(f"*/{RESULT_NAME}"))


def _sample_row(run: str, n: int, began: float, first_started: float, finished: float,
                ok: int) -> dict:
    """began: the run's start; first_started: when its first sample's own work began (after
    model loading and start-up); finished: the last sample's result.json."""
    return {"run": run, "samples": n, "ok": ok, "total_s": round(finished - began, 1),
            "startup_s": round(first_started - began, 1),
            "samples_per_s": round(n / (finished - began), 3),
            "samples_per_s_after_startup": round(n / (finished - first_started), 3)}


@benchmark("sample", "batch sampling: plain loop vs hoi.sampling.run with 1 and 2 actors",
           _sample_arguments)
def sample(args: argparse.Namespace) -> Rows:
    """The same `--samples` requests (svimo-tiny, random weights, `--steps` steps, one PNG
    each) sampled (a) in this process, with 1 torch thread and with torch's default (the first
    `--default-threads-samples` requests only): `SViMoPipeline.from_pretrained`, then pipe(...) + write_generation per request; (b) by `hoi.sampling.run` on a 2-CPU local Ray with
    sample.concurrency 1 (1 CPU) and 2 (0.5 CPU each). Start-up is everything before the
    first sample's own work began (model loading; for Ray Data also reading the requests and
    starting the actors; not ray.init); a sample's own time is its manifest `seconds`. The
    loop's rows split a sample into pipe(...) (generate_s) and write_generation (write_s)."""
    import logging
    import tempfile

    import ray

    from hoi.config import StorageConfig, load_config
    from hoi.outputs import write_generation
    from hoi.pipeline import SViMoPipeline
    from hoi.sampling import MANIFEST_NAME, run
    from hoi.untrained import write_untrained_model

    rows: Rows = []
    storage = StorageConfig()
    prompts = ["stir the bowl with the spoon", "pour the cup into the bowl",
               "cut the apple with the knife", "brush the plate with the brush"]
    with tempfile.TemporaryDirectory(prefix="bench-sample-") as root:
        model = write_untrained_model(f"{root}/tiny", storage)
        requests = []
        for i in range(args.samples):
            Path(f"{root}/in").mkdir(exist_ok=True)
            Path(f"{root}/in/{i}.png").write_bytes(png(i))
            requests.append({"id": f"r{i:03d}", "image": f"{i}.png",
                             "prompt": prompts[i % len(prompts)], "seed": i,
                             "num_steps": args.steps})
        Path(f"{root}/in/requests.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in requests))

        # (a) one process, no Ray: with 1 torch thread (as Ray gives each actor) and with
        # torch's default (one per core), which suffers most when other jobs hold the cores
        default_threads = torch.get_num_threads()
        for threads in dict.fromkeys((1, default_threads)):
            torch.set_num_threads(threads)
            output = f"{root}/loop-{threads}"
            n = args.samples if threads == 1 else min(args.samples, args.default_threads_samples)
            began = time.time()
            pipe = SViMoPipeline.from_pretrained(model, storage)
            loaded = time.time()
            split = {"generate_s": 0.0, "write_s": 0.0}
            for r in requests[:n]:
                start = time.perf_counter()
                gen = pipe(Path(f"{root}/in/{r['image']}").read_bytes(), r["prompt"],
                           num_steps=r["num_steps"], seed=r["seed"])
                split["generate_s"] += time.perf_counter() - start
                start = time.perf_counter()
                write_generation(gen, f"{output}/{r['id']}", storage, extra={"id": r["id"]})
                split["write_s"] += time.perf_counter() - start
            finished = max(_done_times(output))
            rows.append({**_sample_row(f"plain loop, {threads} torch thread(s)", n, began,
                                       loaded, finished, len(_done_times(output))),
                         "per_sample_s": round((finished - loaded) / n, 2),
                         **{k: round(v / n, 2) for k, v in split.items()}})
            del pipe
        torch.set_num_threads(default_threads)

        # (b) hoi.sampling.run through Ray Data
        start = time.time()
        ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR,
                 log_to_driver=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        rows.append({"run": "ray.init (not in the rows below)",
                     "total_s": round(time.time() - start, 1)})
        for concurrency, cpus in ((1, 1.0), (2, 0.5)):
            output = f"{root}/ray-{concurrency}"
            cfg = load_config(flavour="svimo-tiny", overrides=[
                "--sample.model", model, "--sample.input", f"{root}/in/requests.jsonl",
                "--sample.output", output, "--sample.concurrency", str(concurrency),
                "--sample.cpus_per_actor", str(cpus), "--sample.num_steps",
                str(max(args.steps, 1))])
            began = time.time()
            summary = run(cfg)
            manifest = [json.loads(line) for line in
                        Path(output, MANIFEST_NAME).read_text().splitlines()]
            times = {e["id"]: Path(output, e["id"], "result.json").stat().st_mtime
                     for e in manifest if e["status"] == "ok"}
            first = min(times, key=times.get)
            seconds = {e["id"]: e["seconds"] for e in manifest if e["status"] == "ok"}
            first_started = times[first] - seconds[first]
            rows.append({**_sample_row(
                f"hoi.sampling.run, {concurrency} actor(s) x {cpus} CPU", args.samples, began,
                first_started, max(_done_times(output)), summary["ok"]),
                "per_sample_s": round(statistics.median(seconds.values()), 2)})
        ray.shutdown()
    return rows
