"""Batch sampling through Ray Data (`jobs/sample.py`).

1. Read the requests (JSONL, CSV or Parquet; local or s3://) with Ray Data.
2. Drop the ids already done (their <output>/<id>/result.json exists), so a rerun resumes.
3. `map_batches` over an actor pool: each actor holds one `SViMoPipeline` (with
   `sample.gpus_per_actor` GPUs, checked against what the cluster can hold, autoscaler
   included) and writes each request's files to <output>/<id>/.
4. manifest.jsonl: one line per request, {"id", "status": "ok" | "error", "reason", ...},
   rewritten now and then while results arrive and at the end. A bad row (missing image,
   undecodable file, prompt too long, bad option) is an "error" line with its reason; the
   other rows go on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import math
import os
import re
import time
import traceback
import zipfile
from collections.abc import Iterator
from typing import Any

import numpy as np
import ray
from PIL import Image
from tqdm import tqdm

from hoi import resources
from hoi.artifacts import find_model
from hoi.config import Config
from hoi.data.shards import load_clips
from hoi.outputs import RESULT_NAME, read_result, write_generation
from hoi.pipeline import InputError, SViMoPipeline
from hoi.resources import Reservation, ResourceError
from hoi.storage import (
    absolute,
    is_s3,
    join,
    list_files,
    read_bytes,
    resolve,
    write_bytes,
    write_text,
)

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.jsonl"
MANIFEST_EVERY_S = 10.0
"""Seconds between rewrites of the manifest while results arrive (each is a PUT on S3)."""
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
OPTIONS = ("seed", "num_steps", "guidance_scale", "mode", "motion", "video")
"""Optional request columns (besides id, image, prompt)."""


class SampleError(RuntimeError):
    """The job cannot start: no model, no requests, or an unreadable request file."""


# ---------------------------------------------------------------------------------------------
# The job
# ---------------------------------------------------------------------------------------------


def run(cfg: Config) -> dict[str, Any]:
    """Sample every request of cfg.sample.input not yet done; Ray must be initialised.

    Returns {"ok": n, "error": n, "skipped": n (done before), "manifest": path}."""
    s = cfg.sample
    if s.input is None:
        raise SampleError("sample.input is not set: give a .jsonl, .csv or .parquet of "
                          "requests (columns id, image, prompt)")
    cfg = dataclasses.replace(cfg, sample=dataclasses.replace(
        s, input=absolute(s.input), output=absolute(s.output),
        model=absolute(cfg.model_path(s.model))))
    s = cfg.sample
    try:
        model_dir = find_model(s.model, cfg.storage)
    except FileNotFoundError as e:
        raise SampleError(str(e)) from None
    rows = read_requests(s.input, cfg)
    done = _done_ids(s.output, cfg)
    entries: dict[str, dict[str, Any]] = {}
    pending = []
    for index, row in enumerate(rows):
        problem = _row_problem(row, entries)
        if problem is not None:  # keyed by row: a duplicate must not replace the first
            entries[f"row-{index}"] = {"id": row.get("id"), "row": index, "status": "error",
                                       "reason": problem}
        elif row["id"] in done:
            entries[row["id"]] = {"id": row["id"], "status": "ok", "skipped": True,
                                  **_summary(read_result(join(s.output, row["id"]),
                                                         cfg.storage))}
        else:
            entries[row["id"]] = {"id": row["id"], "status": "pending"}
            pending.append(_request(row, s.input))
    skipped = sum(1 for e in entries.values() if e.get("skipped"))
    log.info("%d requests: %d done before, %d to sample, %d rejected", len(rows), skipped,
             len(pending), sum(e["status"] == "error" for e in entries.values()))
    manifest = join(s.output, MANIFEST_NAME)
    written = time.monotonic()
    for result in _sample(cfg, model_dir, pending):
        entries[result["id"]] = result
        if time.monotonic() - written > MANIFEST_EVERY_S:  # the progress so far, now and then
            _write_manifest(manifest, entries, cfg)
            written = time.monotonic()
    _write_manifest(manifest, entries, cfg)
    counts = {status: sum(e["status"] == status for e in entries.values())
              for status in ("ok", "error")}
    return {**counts, "skipped": skipped, "manifest": manifest}


def read_requests(path: str, cfg: Config) -> list[dict[str, Any]]:
    """Every row of a .jsonl / .json / .csv / .parquet request file, through Ray Data."""
    fs, inner = resolve(path, cfg.storage)
    readers = {".jsonl": ray.data.read_json, ".json": ray.data.read_json,
               ".csv": ray.data.read_csv, ".parquet": ray.data.read_parquet}
    reader = readers.get(os.path.splitext(path)[1].lower())
    if reader is None:
        raise SampleError(f"{path!r}: requests must be a .jsonl, .csv or .parquet file")
    if fs.get_file_info(inner).type.name != "File":
        raise SampleError(f"no request file at {path!r}")
    try:
        with v1_datasources():
            requests = reader(inner, filesystem=fs)
        return [_plain_row(r) for r in requests.take_all()]
    except Exception as e:  # Arrow's parse errors come in several types
        raise SampleError(f"{path!r} could not be read as requests: {e}") from None


@contextlib.contextmanager
def v1_datasources() -> Iterator[None]:
    """Ray Data's V1 file datasources for the datasets created inside: Ray 2.60's V2 ones list
    the files in a task that needs a whole free CPU, which a small cluster's Serve or Train
    replicas may all hold (the read then never starts); V1 lists on the driver."""
    context = ray.data.DataContext.get_current()
    before, context.use_datasource_v2 = context.use_datasource_v2, False
    try:
        yield
    finally:
        context.use_datasource_v2 = before


def _sample(cfg: Config, model_dir: str, requests: list[dict[str, Any]]
            ) -> Iterator[dict[str, Any]]:
    """Run the requests through an actor pool; yields each one's manifest entry."""
    if not requests:
        return
    s = cfg.sample
    actors = min(s.concurrency, len(requests))
    try:  # the GPUs come from the config: an autoscaling cluster starts with none
        log.info("resources: %s", resources.check([Reservation(
            "sampler actor", {"CPU": s.cpus_per_actor, "GPU": s.gpus_per_actor}, actors)]))
    except ResourceError as e:
        raise SampleError(f"{e}: lower sample.concurrency, cpus_per_actor or gpus_per_actor"
                          ) from None
    items = [{"request": json.dumps(r)} for r in requests]
    ds = ray.data.from_items(items).map_batches(
        SamplingActor, fn_constructor_kwargs={"cfg": cfg, "model_dir": model_dir}, batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=s.cpus_per_actor, num_gpus=s.gpus_per_actor or None)
    with tqdm(total=len(requests), desc="sampling", unit="sample") as bar:
        for row in ds.iter_rows():
            entry = json.loads(row["entry"])
            bar.update()
            bar.set_postfix(ok=entry["status"] == "ok")
            yield entry


class SamplingActor:
    """A Ray Data actor: one pipeline, requests in, manifest entries (as JSON) out."""

    def __init__(self, cfg: Config, model_dir: str) -> None:
        self.cfg = cfg
        self.pipe = SViMoPipeline.from_pretrained(model_dir, cfg.storage)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[str]]:
        """{"request": JSON strings} -> {"entry": JSON strings}."""
        return {"entry": [json.dumps(self.one(json.loads(r))) for r in batch["request"]]}

    def one(self, request: dict[str, Any]) -> dict[str, Any]:
        start = time.perf_counter()
        try:
            kwargs = self._inputs(request)
            gen = self.pipe(**kwargs)
            result = write_generation(gen, join(self.cfg.sample.output, request["id"]),
                                      self.cfg.storage, extra={"id": request["id"],
                                                               "image": request["image"]})
        except (InputError, FileNotFoundError) as e:
            return {"id": request["id"], "status": "error", "reason": str(e)}
        except Exception as e:  # noqa: BLE001 (one bad request must not stop the others)
            log.error("request %s failed:\n%s", request["id"], traceback.format_exc())
            return {"id": request["id"], "status": "error",
                    "reason": f"internal error: {type(e).__name__}: {e}"}
        return {"id": request["id"], "status": "ok",
                "seconds": round(time.perf_counter() - start, 3), **_summary(result)}

    def _inputs(self, r: dict[str, Any]) -> dict[str, Any]:
        """The pipeline's arguments for one request; InputError names a bad field."""
        s, storage = self.cfg.sample, self.cfg.storage
        kwargs: dict[str, Any] = {
            "image": _read(r["image"], "image", storage), "prompt": r["prompt"],
            "mode": r.get("mode") or s.mode,
            "seed": _integer(r, "seed", s.seed, 0, 2**63 - 1),
            "num_steps": _integer(r, "num_steps", s.num_steps, 1, s.max_steps),
            "guidance_scale": _number(r, "guidance_scale", s.guidance_scale)}
        if r.get("motion"):
            kwargs["joints"], kwargs["points"] = _motion(r["motion"], storage)
        if r.get("video"):
            kwargs["video"] = _read(r["video"], "video", storage)
        return kwargs


def requests_from_split(cfg: Config, split: str, directory: str, limit: int) -> str:
    """A request file for the first `limit` clips of a shard split (cfg.train.shards): each
    clip's first frame as a PNG, its prompt, and its id; returns the .jsonl path. Held-out
    clips sampled this way can be compared with their ground truth."""
    clips = load_clips(cfg.train.shards, split, cfg.data, cfg.storage, limit=limit)
    lines = []
    for clip in clips:
        buf = io.BytesIO()
        Image.fromarray(clip.video[0]).save(buf, format="PNG")
        write_bytes(join(directory, f"{clip.clip_id}.png"), buf.getvalue(), cfg.storage)
        lines.append(json.dumps({"id": clip.clip_id, "image": f"{clip.clip_id}.png",
                                 "prompt": clip.prompt}))
    path = join(directory, f"{split}.jsonl")
    write_text(path, "\n".join(lines) + "\n", cfg.storage)
    return path


# ---------------------------------------------------------------------------------------------
# Requests and the manifest
# ---------------------------------------------------------------------------------------------


def _row_problem(row: dict[str, Any], seen: dict[str, Any]) -> str | None:
    """Why a row cannot even be queued (no id, duplicate, missing image or prompt), or None."""
    rid = row.get("id")
    if not isinstance(rid, str) or not ID_PATTERN.match(rid):
        return (f"id {rid!r} is not a name of 1-128 letters, digits, '.', '_' or '-' "
                f"(it names the output directory)")
    if rid in seen:
        return f"id {rid!r} appears more than once"
    for name in ("image", "prompt"):
        if not isinstance(row.get(name), str) or not row[name].strip():
            return f"no {name}"
    return None


def _request(row: dict[str, Any], input_path: str) -> dict[str, Any]:
    """The fields a sampler reads, with local paths relative to the request file made
    absolute."""
    base = os.path.dirname(input_path)

    def path(p: Any) -> Any:
        return p if not isinstance(p, str) or not p or is_s3(p) else os.path.join(base, p)

    request = {"id": row["id"], "image": path(row["image"]), "prompt": row["prompt"]}
    for name in OPTIONS:
        value = row.get(name)
        request[name] = path(value) if name in ("motion", "video") else value
    return request


def _plain_row(row: dict[str, Any]) -> dict[str, Any]:
    """Arrow/numpy scalars -> Python values; NaN (CSV's empty cell) -> None."""
    out = {}
    for key, value in row.items():
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, float) and math.isnan(value):
            value = None
        out[key] = value
    return out


def _done_ids(output: str, cfg: Config) -> set[str]:
    try:
        names = list_files(output, cfg.storage)
    except FileNotFoundError:
        return set()
    return {n.split("/")[0] for n in names if n.count("/") == 1 and n.endswith(RESULT_NAME)}


def _summary(result: dict[str, Any] | None) -> dict[str, Any]:
    return {} if result is None else {"files": result.get("files", []),
                                      "mode": result.get("mode"), "seed": result.get("seed")}


def _write_manifest(path: str, entries: dict[str, dict[str, Any]], cfg: Config) -> None:
    lines = [json.dumps(e) for e in entries.values() if e["status"] != "pending"]
    write_text(path, "\n".join(lines) + "\n", cfg.storage)


# ---------------------------------------------------------------------------------------------
# Fields
# ---------------------------------------------------------------------------------------------


def _read(path: str, what: str, storage) -> bytes:
    try:
        return read_bytes(path, storage)
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise InputError(f"{what} {path!r} not found") from None


def _motion(path: str, storage) -> tuple[np.ndarray, np.ndarray]:
    """(joints, points) of an .npz file."""
    data = _read(path, "motion", storage)
    try:
        with np.load(io.BytesIO(data)) as motion:
            return motion["joints"], motion["points"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        raise InputError(f"motion {path!r} is not an .npz with joints and points: {e}") from None


def _integer(r: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = r.get(name)
    if value is None:
        return default
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise InputError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
    return value


def _number(r: dict[str, Any], name: str, default: float | None) -> float | None:
    value = r.get(name)
    if value is None:
        return default
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise InputError(f"{name} must be a number >= 0, got {value!r}")
    return float(value)
