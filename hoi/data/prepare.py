"""The prepare pipeline: clips (synthetic or TACO) -> rendered frames -> Parquet shards.

A shard is the unit of work and of resumption: each Ray Data task builds one shard's clips,
renders them and writes the shard atomically; a rerun skips shards that are already complete.
A manifest (``manifest.json`` next to the shards) records the config, the shards and their
counts; previews of a few clips are written to ``previews/``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch

from hoi import storage
from hoi.config import Config, DataConfig
from hoi.data import shards
from hoi.data.clip import Clip
from hoi.data.schema import SCHEMA_VERSION, clip_to_row, row_to_clip
from hoi.data.synthetic import Look, clip_seed, split_clip
from hoi.render.motion_video import render_motion_video
from hoi.render.preview import write_preview
from hoi.render.rgb import render_rgb
from hoi.vocabulary import HELDOUT_SPLIT

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
SPLITS = ("train", "val")


class PrepareError(RuntimeError):
    """The prepare job cannot go on: bad output directory, mismatched earlier run, failed shard."""


@dataclass(frozen=True)
class ShardTask:
    """One shard to build: its split, index, path, and which clips go into it."""

    split: str
    index: int
    path: str
    clips: tuple[int, ...] = ()  # synthetic: clip indices within the split
    sequences: tuple[str, ...] = ()  # taco: sequence folders (triplet/sequence)

    @property
    def size(self) -> int:
        """Rows the finished shard holds."""
        return len(self.clips) or len(self.sequences)


# ---------------------------------------------------------------------------------------------
# Planning and resumption
# ---------------------------------------------------------------------------------------------


def plan(cfg: Config) -> list[ShardTask]:
    """Every shard the run should end with, in a stable order."""
    p = cfg.prepare
    tasks = []
    if p.source == "synthetic":
        for split, count in (("train", p.num_train), ("val", p.num_val),
                             (HELDOUT_SPLIT, p.num_heldout)):
            for index, first in enumerate(range(0, count, p.clips_per_shard)):
                clips = tuple(range(first, min(first + p.clips_per_shard, count)))
                tasks.append(ShardTask(split, index, shards.shard_path(p.output, split, index),
                                       clips=clips))
        return tasks
    from hoi.data import taco

    named = taco.read_split_file(p.taco_split_file) if p.taco_split_file else {}
    by_split: dict[str, list[str]] = {}
    for seq in taco.list_sequences(p.taco_root):
        by_split.setdefault(named.get(seq.name, "train"), []).append(seq.key)
    for split, keys in sorted(by_split.items()):
        for index, first in enumerate(range(0, len(keys), p.clips_per_shard)):
            tasks.append(ShardTask(split, index, shards.shard_path(p.output, split, index),
                                   sequences=tuple(keys[first:first + p.clips_per_shard])))
    return tasks


def fingerprint(cfg: Config) -> dict[str, Any]:
    """The settings that decide a shard's content: reusing a shard needs the same ones.

    Clip counts are left out: more clips only add shards (a grown last shard is rebuilt)."""
    p = dataclasses.asdict(cfg.prepare)
    for key in ("output", "num_train", "num_val", "num_heldout", "num_preview", "concurrency",
                "encode"):
        p.pop(key)
    if p["holdout"] is None:  # absent when unset: shards made before the field still match
        p.pop("holdout")
    return {"data": dataclasses.asdict(cfg.data), "prepare": p, "schema_version": SCHEMA_VERSION}


def check_output(cfg: Config) -> None:
    """Refuse to mix shards of a different configuration into an existing output."""
    path = storage.join(cfg.prepare.output, MANIFEST)
    if not storage.exists(path, cfg.storage):
        return
    earlier = json.loads(storage.read_text(path, cfg.storage)).get("fingerprint")
    if earlier != fingerprint(cfg):
        raise PrepareError(
            f"{cfg.prepare.output} holds shards made with different settings "
            f"(earlier {earlier}, now {fingerprint(cfg)}); choose another prepare.output or "
            "delete the old one")


def pending(tasks: list[ShardTask], cfg: Config) -> list[ShardTask]:
    """Tasks whose shard is not yet complete (missing, unreadable or short)."""
    return [t for t in tasks if not shards.is_complete_shard(t.path, cfg.storage, t.size)]


# ---------------------------------------------------------------------------------------------
# Building one shard (runs inside a Ray Data task)
# ---------------------------------------------------------------------------------------------


def render_synthetic(clips: list[Clip], looks: list[Look], data: DataConfig) -> None:
    """Fill clip.video and clip.motion_video of synthetic clips, rendered as one batch."""
    t = lambda xs: torch.from_numpy(np.stack(xs))  # noqa: E731
    K, R, T = t([c.K for c in clips]), t([c.R for c in clips]), t([c.T for c in clips])
    joints, points = t([c.joints for c in clips]), t([c.points for c in clips])
    motion = render_motion_video(joints, points, K, R, T, data.height, data.width)
    rgb = render_rgb(
        joints, t([x.surfels for x in looks]), t([x.normals for x in looks]),
        t([x.surfel_rgb for x in looks]), t([x.skin_rgb for x in looks]),
        t([x.table_rgb for x in looks]), t([x.wall_rgb for x in looks]),
        torch.tensor([x.table_pattern for x in looks]), K, R, T, data.height, data.width)
    for clip, m, v in zip(clips, motion.numpy(), rgb.numpy(), strict=True):
        clip.motion_video, clip.video = m, v


def synthetic_clips(task: ShardTask, cfg: Config) -> list[Clip]:
    clips, looks = [], []
    for i in task.clips:
        clip, look = split_clip(cfg.prepare.seed, task.split, i, cfg.data, cfg.prepare.holdout)
        clips.append(clip)
        looks.append(look)
    render_synthetic(clips, looks, cfg.data)
    return clips


def taco_clips(task: ShardTask, cfg: Config) -> list[Clip]:
    from hoi.data import taco

    models = taco.load_hand_models(cfg.prepare.mano_root)
    clips = []
    for key in task.sequences:
        seq = taco.sequence_from_key(cfg.prepare.taco_root, key)
        clip = taco.convert_sequence(seq, models, cfg.data, split=task.split,
                                     seed=clip_seed(cfg.prepare.seed, task.split, key))
        t = lambda x: torch.from_numpy(x)[None]  # noqa: E731
        clip.motion_video = render_motion_video(t(clip.joints), t(clip.points), t(clip.K),
                                                t(clip.R), t(clip.T), cfg.data.height,
                                                cfg.data.width)[0].numpy()
        clips.append(clip)
    return clips


def build_shard(row: dict[str, Any], cfg: Config) -> dict[str, Any]:
    """Ray Data `map` function: build, render and write one shard; returns its info row."""
    task = ShardTask(**{k: tuple(v) if k in ("clips", "sequences") else v for k, v in row.items()})
    start = time.perf_counter()
    make = synthetic_clips if cfg.prepare.source == "synthetic" else taco_clips
    clips = make(task, cfg)
    rows = [clip_to_row(c, cfg.prepare.video_encoding) for c in clips]
    info = shards.write_shard(rows, task.path, cfg.storage)
    return {"split": task.split, "index": task.index, "path": task.path, "rows": info["rows"],
            "bytes": info["bytes"], "seconds": time.perf_counter() - start}


# ---------------------------------------------------------------------------------------------
# The whole job
# ---------------------------------------------------------------------------------------------


def run(cfg: Config, progress: bool = True) -> dict[str, Any]:
    """Build every missing shard with Ray Data, then write the manifest and previews.

    Needs a running Ray (ray.init) for the shard tasks. Returns the manifest."""
    import ray.data
    from tqdm import tqdm

    start = time.perf_counter()
    check_output(cfg)
    tasks = plan(cfg)
    if not tasks:
        raise PrepareError("nothing to prepare: prepare.num_train and prepare.num_val are 0")
    todo = pending(tasks, cfg)
    log.info("%d shards planned, %d already complete, %d to build",
             len(tasks), len(tasks) - len(todo), len(todo))
    # written first, so that a crashed run's output is recognised (and checked) when resumed
    save_manifest(cfg, manifest(cfg, tasks, status="running"))

    built = 0
    if todo:
        ds = ray.data.from_items([dataclasses.asdict(t) for t in todo])
        ds = ds.map(build_shard, fn_kwargs={"cfg": cfg}, concurrency=cfg.prepare.concurrency,
                    num_cpus=1)
        with tqdm(total=len(todo), unit="shard", desc="prepare", disable=not progress) as bar:
            for info in ds.iter_rows():
                built += info["rows"]
                bar.update(1)
                bar.set_postfix(clips=built)
    result = manifest(cfg, tasks, status="complete", built=built,
                      seconds=time.perf_counter() - start)
    result["previews"] = write_previews(cfg, result["shards"])
    save_manifest(cfg, result)
    return result


def manifest(cfg: Config, tasks: list[ShardTask], status: str, built: int = 0,
             seconds: float = 0.0) -> dict[str, Any]:
    """Counts per split from the readable shards' own footers (what is really there), plus
    the config."""
    listed = []
    for task in tasks:
        if not storage.exists(task.path, cfg.storage):
            continue
        try:
            info = shards.inspect_shard(task.path, cfg.storage)
        except shards.ShardError:  # broken: not counted, and rebuilt by the next run
            continue
        listed.append({"split": task.split, "path": task.path, "rows": info["rows"],
                       "bytes": info["bytes"]})
    splits: dict[str, dict[str, int]] = {}
    for s in listed:
        entry = splits.setdefault(s["split"], {"clips": 0, "shards": 0, "bytes": 0})
        entry["clips"] += s["rows"]
        entry["shards"] += 1
        entry["bytes"] += s["bytes"]
    return {
        "status": status, "schema_version": SCHEMA_VERSION,
        "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source": cfg.prepare.source, "splits": splits, "shards": listed,
        "built_this_run": built, "seconds": round(seconds, 2),
        "clips_per_second": round(built / seconds, 3) if built and seconds > 0 else None,
        "fingerprint": fingerprint(cfg), "config": cfg.to_dict(),
    }


def save_manifest(cfg: Config, content: dict[str, Any]) -> None:
    storage.write_text(storage.join(cfg.prepare.output, MANIFEST),
                       json.dumps(content, indent=2), cfg.storage)


def write_previews(cfg: Config, listed: list[dict[str, Any]]) -> list[str]:
    """Side-by-side previews (MP4 + PNG) of the first clips, read back from the shards."""
    clips: list[Clip] = []
    for entry in listed:
        if len(clips) >= cfg.prepare.num_preview:
            break
        fs, inner = storage.resolve(entry["path"], cfg.storage)
        with fs.open_input_file(inner) as f:
            rows = pq.read_table(f).slice(0, cfg.prepare.num_preview - len(clips)).to_pylist()
        clips += [row_to_clip(row) for row in rows]
    paths = []
    with tempfile.TemporaryDirectory() as tmp:
        for clip in clips:
            stem = Path(tmp) / clip.clip_id
            write_preview(str(stem), clip.video, clip.motion_video, clip.joints, clip.points,
                          clip.K, clip.R, clip.T, clip.fps)
            for suffix in (".mp4", ".png"):
                target = storage.join(cfg.prepare.output, "previews", clip.clip_id + suffix)
                storage.write_bytes(target, stem.with_suffix(suffix).read_bytes(), cfg.storage)
                paths.append(target)
    return paths
