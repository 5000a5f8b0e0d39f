"""Precomputed training inputs: the encode pass of `jobs/prepare.py`, and what a training
run checks and reads of them.

Beside the clip shards of a shard root:

    latents/manifest.json                         the encoders (paths + fingerprint), sizes
    latents/null_text.npy                         the empty prompt's features
    latents/<H>x<W>/<split>/shard-NNNNN.parquet   `LATENT_SCHEMA` rows of the clip shard
                                                  <split>/shard-NNNNN.parquet, in its order

At every training stage's size (H x W), a row holds what `hoi.train.data.Encoder` makes of
the clip in the online stream, because it is that class's output: the video, motion-video
and reference-image latents, the prompt's T5 features, the normalised motion and the
intrinsics. The reference image's noise augmentation is fixed by the clip either way
(`clip_generator`). A training run whose shard root has a manifest reads these latents, loads
no T5 at all, and refuses them when its encoders' fingerprint differs.

The encode pass is a Ray Data actor pool (`ShardEncoder`: the VAE and T5 loaded once per actor,
`train.encode_actors` of them with `train.encode_cpus` / `train.encode_gpus` each, as the
online stream's) over the clip shards whose latent shards are missing or short. Each shard's
latent shards are written atomically, so a rerun resumes, as prepare does.
"""

from __future__ import annotations

import io
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import ray

from hoi import storage
from hoi.config import Config, ConfigError, from_dict
from hoi.data.schema import LATENT_COLUMNS, LATENT_SCHEMA, get_array, latents_to_row
from hoi.data.shards import (
    FOOTER_THREADS,
    LATENTS_DIR,
    collate_clips,
    inspect_shard,
    is_complete_shard,
    latent_twin,
    list_shards,
    shard_clips,
    write_shard,
)
from hoi.model.encoders import encoders_identity
from hoi.train.data import Encoder

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
NULL_TEXT = "null_text.npy"
SPLITS = ("train", "val")


class LatentsError(RuntimeError):
    """Precomputed latents that cannot be made or used: other encoders, missing shards."""


def sizes(cfg: Config) -> list[tuple[int, int]]:
    """The (height, width) of every training stage, each once, in stage order."""
    return list(dict.fromkeys((h, w) for h, w, _ in cfg.train_stages()))


def _path(root: str, name: str) -> str:
    return storage.join(root, LATENTS_DIR, name)


# ---------------------------------------------------------------------------------------------
# The encode pass
# ---------------------------------------------------------------------------------------------


class ShardEncoder(Encoder):
    """Ray Data actor of the encode pass: clip shard paths -> their latent shards at every
    stage size (those not yet complete), written atomically; the empty prompt's features
    once."""

    def __init__(self, cfg: dict[str, Any], root: str):
        full = from_dict(Config, cfg)
        super().__init__(cfg, *sizes(full)[0])
        self.root, self.sizes, self.storage, self.data = root, sizes(full), full.storage, full.data
        null_text = _path(root, NULL_TEXT)
        if not storage.exists(null_text, self.storage):  # the same bytes from any actor
            buffer = io.BytesIO()
            np.save(buffer, self.text_encoder.encode([""]).float().cpu().numpy())
            storage.write_bytes(null_text, buffer.getvalue(), self.storage)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = []
        for path in batch["path"]:
            clips = shard_clips(str(path), self.storage, self.data)
            for height, width in self.sizes:
                target = latent_twin(self.root, str(path), height, width)
                if is_complete_shard(target, self.storage, len(clips), LATENT_COLUMNS):
                    continue
                rows.append(len(clips))
                chunk = self.cfg.train.batch_size
                encoded = [self.encode(collate_clips(clips[i:i + chunk]), height, width)
                           for i in range(0, len(clips), chunk)]
                arrays = {k: np.concatenate([e[k] for e in encoded]) for k in encoded[0]}
                write_shard([latents_to_row(c.clip_id, c.prompt, {k: v[i] for k, v in
                                                                 arrays.items()})
                             for i, c in enumerate(clips)], target, self.storage, LATENT_SCHEMA)
        return {"clips": np.asarray([sum(rows)])}


def encode_pass(cfg: Config, progress: bool = True) -> dict[str, Any]:
    """Fill `<prepare.output>/latents` for every train and val shard at every training
    stage's size, with the configured encoders; Ray must be initialised. Returns the
    manifest. LatentsError when the root's latents were made with other encoders."""
    from tqdm import tqdm

    start = time.perf_counter()
    cfg = storage.absolute_paths(cfg)
    root = cfg.prepare.output
    try:
        identity = encoders_identity(cfg)
    except (ConfigError, FileNotFoundError) as e:
        raise LatentsError(f"the encode pass needs the encoders: {e}") from e
    earlier = _manifest(root, cfg)
    if earlier is not None and earlier["encoders"]["fingerprint"] != identity["fingerprint"]:
        raise LatentsError(
            f"{storage.join(root, LATENTS_DIR)} holds latents of other encoders "
            f"({earlier['encoders']}; now {identity}): delete it to encode with these")
    paths = [path for split in SPLITS for path in _split_shards(root, cfg, split)]
    shards = _footer_pool(lambda path: (path, inspect_shard(path, cfg.storage)["rows"]), paths)
    todo = [path for (path, _), complete in zip(shards, _complete(root, cfg, shards),
                                                strict=True) if not complete]
    log.info("encode pass: %d shards, %d to encode at %s", len(shards), len(todo),
             ", ".join(f"{h}x{w}" for h, w in sizes(cfg)))
    content = {"encoders": identity, "sizes": [list(s) for s in sizes(cfg)],
               "shards": len(shards), "status": "running"}
    storage.write_text(_path(root, MANIFEST), json.dumps(content, indent=2), cfg.storage)
    encoded = 0
    if todo:
        t = cfg.train
        ds = ray.data.from_items([{"path": path} for path in todo]).map_batches(
            ShardEncoder, fn_constructor_kwargs={"cfg": cfg.to_dict(), "root": root},
            batch_size=1, compute=ray.data.ActorPoolStrategy(size=t.encode_actors),
            num_cpus=t.encode_cpus, num_gpus=t.encode_gpus or None,
            accelerator_type=t.accelerator_type)
        with tqdm(total=len(todo), unit="shard", desc="encode", disable=not progress) as bar:
            for row in ds.iter_rows():
                encoded += int(row["clips"])
                bar.update(1)
    content |= {"status": "complete", "encoded_this_run": encoded,
                "seconds": round(time.perf_counter() - start, 2)}
    storage.write_text(_path(root, MANIFEST), json.dumps(content, indent=2), cfg.storage)
    return content


def _split_shards(root: str, cfg: Config, split: str) -> list[str]:
    try:
        return list_shards(root, cfg.storage, split)
    except FileNotFoundError:
        return []


def _manifest(root: str, cfg: Config) -> dict[str, Any] | None:
    path = _path(root, MANIFEST)
    if not storage.exists(path, cfg.storage):
        return None
    return json.loads(storage.read_text(path, cfg.storage))


def _complete(root: str, cfg: Config, shards: list[tuple[str, int]]) -> list[bool]:
    """Per clip shard ((path, rows) pairs): whether its latent shard at every size holds as
    many rows (footers only)."""
    return _footer_pool(lambda shard: all(
        is_complete_shard(latent_twin(root, shard[0], h, w), cfg.storage, shard[1],
                          LATENT_COLUMNS) for h, w in sizes(cfg)), shards)


def _footer_pool(fn: Any, items: list) -> list:
    """`fn` over items on a thread pool: footers are latency on S3, not CPU."""
    if not items:
        return []
    with ThreadPoolExecutor(max_workers=min(FOOTER_THREADS, len(items))) as pool:
        return list(pool.map(fn, items))


# ---------------------------------------------------------------------------------------------
# What training reads
# ---------------------------------------------------------------------------------------------


def training_latents(cfg: Config, shards: list[tuple[str, int]]) -> np.ndarray | None:
    """The empty prompt's features (1, L, D) when `train.shards` has precomputed latents for
    every one of `shards` ((path, rows) pairs, as preflight found them) at every stage size, made with the configured encoders; None when
    it has no latents. LatentsError when they are there but would be wrong or short."""
    root = cfg.train.shards
    earlier = _manifest(root, cfg)
    if earlier is None:
        return None
    identity = encoders_identity(cfg)
    if earlier["encoders"]["fingerprint"] != identity["fingerprint"]:
        raise LatentsError(
            f"the latents under {storage.join(root, LATENTS_DIR)} were made with other encoders "
            f"({earlier['encoders']}) than this run's ({identity}): run the encode pass "
            f"(jobs/prepare.py --prepare.encode true) into a fresh shard root, or delete them")
    missing = [path for (path, _), complete in zip(shards, _complete(root, cfg, shards),
                                                   strict=True) if not complete]
    if missing:
        raise LatentsError(
            f"{len(missing)} of {len(shards)} training shards have no complete latents at "
            f"{', '.join(f'{h}x{w}' for h, w in sizes(cfg))} (e.g. {missing[0]}): run the "
            f"encode pass again (jobs/prepare.py --prepare.encode true); it resumes")
    with storage.local_file(_path(root, NULL_TEXT), cfg.storage) as local:
        return np.load(local)


def validation_features(cfg: Config, count: int) -> tuple[list[str], np.ndarray]:
    """The prompts and T5 features (count, L, D) of the first `count` val clips (those
    `hoi.train.validation` samples), from their latents; FileNotFoundError when the val
    split has none."""
    height, width = sizes(cfg)[0]
    prompts, features = [], []
    for path in list_shards(cfg.train.shards, cfg.storage, "val"):
        fs, inner = storage.resolve(latent_twin(cfg.train.shards, path, height, width),
                                    cfg.storage)
        table = pq.read_table(inner, filesystem=fs,
                              columns=["prompt", "text", "text_shape", "text_dtype"])
        for row in table.to_pylist():
            prompts.append(row["prompt"])
            features.append(get_array(row, "text"))
            if len(prompts) == count:
                return prompts, np.stack(features)
    if not prompts:
        raise FileNotFoundError(f"no val latents under {cfg.train.shards!r}")
    return prompts, np.stack(features)
