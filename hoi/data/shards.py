"""Parquet shards of clips: naming, atomic writes, checks for resumption, streaming reads.

Layout: ``<root>/<split>/shard-00042.parquet``, one row per clip in `hoi.data.schema.SCHEMA`,
`root` a local directory or an ``s3://bucket/prefix`` (see `hoi.storage`).

Reading (`read_clips`) happens in two places:

1. on the driver, before any Ray work: the shard list, then every file's Parquet footer and
   schema (a few KB each, fetched by a thread pool since it is latency, not CPU). A missing
   root, an empty one, a truncated file or a missing required column is reported here;
2. in Ray Data: a dataset of the listed files (repeats kept, in order: a training stage
   lists its files once per pass) whose tasks read each file row by row and decode each row
   with `row_to_clip`, so a consumer only ever sees clips that passed `Clip.validate`. Ray
   Data is handed no file paths to list, size or check again: its own Parquet readers would
   ask the store about every listed path (a HEAD each on S3, hundreds of thousands for a 5B
   run's first stage), and Ray 2.60's V2 reader merges repeated paths into one.

With ``on_error="skip"`` bad files and rows are left out and recorded in a `SkipLog`: a small
Ray actor that the driver and every decode task report to, so the caller can read the count and
the reasons after (or while) consuming the dataset. An actor rather than Ray Data's own error
tolerance (`DataContext.max_errored_blocks`) because that drops whole blocks, is global, and
keeps no reasons; rather than an error column in the output because a dataset has one output
and the consumer would have to filter and count it.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import ray
import torch
from ray.data.collate_fn import NumpyBatchCollateFn

from hoi.config import DataConfig, StorageConfig
from hoi.data.clip import Clip
from hoi.data.schema import (
    LATENT_COLUMNS,
    REQUIRED_COLUMNS,
    SCHEMA,
    get_array,
    missing_columns,
    row_to_clip,
    row_to_latents,
)
from hoi.storage import join, list_files, resolve, resolve_all, to_uri, write_bytes

logger = logging.getLogger(__name__)

LATENTS_DIR = "latents"
SHARD_NAME = re.compile(r"shard-\d{5}\.parquet")
# What decoding needs: every required column; optional latents stay on disk.
READ_COLUMNS = list(REQUIRED_COLUMNS)
# Columns of a `read_clips` row: the fields of `Clip`, and its place in the listed stream.
CLIP_COLUMNS = tuple(f.name for f in dataclasses.fields(Clip))
POSITION = "position"
# Footers are fetched in parallel on the driver; I/O-bound, so threads (pyarrow drops the GIL).
FOOTER_THREADS = 16
FILES_PER_TASK = 64
"""Listed files a read task goes through at most, in order (a training stage lists each file
once per pass: few tasks keep the dataset's start-up short); and at least one task per
distinct file, so that a single pass is read in parallel."""

OnError = Literal["raise", "skip"]


class ShardError(ValueError):
    """A shard file or row that cannot be used; the message names the file (and the row)."""


# ---------------------------------------------------------------------------------------------
# Writing, listing, checking
# ---------------------------------------------------------------------------------------------


def shard_path(root: str, split: str, index: int) -> str:
    """`<root>/<split>/shard-00042.parquet`."""
    return join(root, split, f"shard-{index:05d}.parquet")


def latent_root(root: str, height: int, width: int) -> str:
    """`<root>/latents/<height>x<width>`: the latent shards of a shard root at one size."""
    return join(root, LATENTS_DIR, f"{height}x{width}")


def latent_twin(root: str, shard: str, height: int, width: int) -> str:
    """The latent shard beside clip shard `shard` of `root` (`<split>/shard-NNNNN.parquet`
    under `latent_root`): the same clips, in the same order."""
    return join(latent_root(root, height, width), shard[len(root.rstrip("/")):].lstrip("/"))


def write_shard(rows: Sequence[dict[str, Any]], path: str, storage: StorageConfig,
                schema: pa.Schema = SCHEMA) -> dict[str, Any]:
    """Write schema rows (from `clip_to_row`, or `latents_to_row` with `LATENT_SCHEMA`) as one
    Parquet file, atomically.

    The file is serialised in memory first and stored in one piece (`hoi.storage.write_bytes`),
    so a failure at any point leaves either no file or the previous one, never a partial file
    under the shard's name. A row group per row, so that a stream resumed mid-file reads
    none of the rows before its own. Returns {"path", "rows", "bytes"} for a manifest.
    """
    try:
        table = pa.Table.from_pylist(list(rows), schema=schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise ShardError(f"{path}: rows do not fit the shard schema ({e})") from e
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, row_group_size=1)
    data = sink.getvalue()
    write_bytes(path, data, storage)
    return {"path": path, "rows": table.num_rows, "bytes": data.size}


def list_shards(root: str, storage: StorageConfig, split: str | None = None) -> list[str]:
    """Sorted paths of files named like shards under `root` (all splits, or one), as
    `join(root, ...)`. Temporary files of interrupted writes never match. Says nothing about
    whether a file is complete: see `inspect_shard`. FileNotFoundError if `root` does not exist."""
    base = join(root, split) if split else root
    # Directly under the split directory: shard names only; under the root: <split>/<shard>.
    pattern = SHARD_NAME if split else re.compile(r"[^/]+/" + SHARD_NAME.pattern)
    return [join(base, name) for name in list_files(base, storage) if pattern.fullmatch(name)]


def inspect_shard(path: str, storage: StorageConfig,
                  required: Sequence[str] = REQUIRED_COLUMNS) -> dict[str, Any]:
    """{"path", "rows", "bytes"} of a shard whose footer opens and whose schema has every
    `required` column; reads the footer only, never the data. Raises ShardError saying what
    is wrong."""
    fs, inner = resolve(path, storage)
    info = _inspect(fs, inner, required)
    return {**info, "path": path}


def is_complete_shard(path: str, storage: StorageConfig, expected_rows: int | None = None,
                      required: Sequence[str] = REQUIRED_COLUMNS) -> bool:
    """Whether `path` is a finished shard (with `expected_rows` rows, if given) that a resumed
    job can keep rather than write again."""
    try:
        info = inspect_shard(path, storage, required)
    except ShardError:
        return False
    return expected_rows is None or info["rows"] == expected_rows


def _inspect(fs: pafs.FileSystem, inner: str, required: Sequence[str] = REQUIRED_COLUMNS
             ) -> dict[str, Any]:
    uri = to_uri(fs, inner)
    try:
        with fs.open_input_file(inner) as f:
            size = f.size()
            metadata = pq.ParquetFile(f).metadata  # footer only
    except FileNotFoundError as e:
        raise ShardError(f"{uri}: no such file") from e
    except (pa.ArrowException, OSError) as e:  # truncated or not Parquet: the footer is unreadable
        raise ShardError(f"{uri}: not a readable Parquet file, truncated or corrupt ({e})") from e
    missing = missing_columns(metadata.schema.to_arrow_schema(), tuple(required))
    if missing:
        raise ShardError(f"{uri}: missing required columns {missing}")
    return {"path": uri, "rows": metadata.num_rows, "bytes": size}


# ---------------------------------------------------------------------------------------------
# Skip log: what on_error="skip" left out, gathered from the driver and every Ray worker
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Skipped:
    """One file or row left out: `row` and `clip_id` are None when the whole file was."""

    path: str
    reason: str
    clip_id: str | None = None
    row: int | None = None


# num_cpus=0: it only holds a list, and must never wait for a core that trainers or readers hold.
@ray.remote(num_cpus=0)
class _SkipCollector:
    def __init__(self) -> None:
        # Keyed by place, so that a retried Ray task reporting the same row again counts once.
        self._items: dict[tuple[str, int | None, str | None], Skipped] = {}

    def add(self, item: Skipped) -> None:
        self._items[(item.path, item.row, item.clip_id)] = item

    def items(self) -> list[Skipped]:
        return list(self._items.values())


class SkipLog:
    """Collects what `read_clips(..., on_error="skip", skipped=log)` leaves out.

    Create it on the driver (Ray must be initialised). File-level skips are recorded when
    `read_clips` returns; row-level ones as the dataset is consumed, so read the log after
    iterating (every report is acknowledged before the decode task moves on).
    """

    def __init__(self) -> None:
        self._actor = _SkipCollector.remote()

    def add(self, item: Skipped) -> None:
        ray.get(self._actor.add.remote(item))

    def items(self) -> list[Skipped]:
        return ray.get(self._actor.items.remote())

    @property
    def count(self) -> int:
        return len(self.items())


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


def read_clips(root_or_paths: str | Sequence[str], storage: StorageConfig, *,
               split: str | None = None, num_frames: int | None = None,
               height: int | None = None, width: int | None = None,
               on_error: OnError = "raise", skipped: SkipLog | None = None,
               num_cpus: float | None = None, start: int = 0) -> ray.data.Dataset:
    """Stream validated clips from shards as a lazy Ray Dataset, one row per clip.

    Args:
        root_or_paths: a shard root (all its `<split>/shard-*.parquet`, or one split's) or an
            explicit list of Parquet files, local or s3://, all on one filesystem.
        num_frames, height, width: when given, every clip must have exactly these sizes.
        on_error: "raise" fails on the first bad file or row with a ShardError naming the file,
            and for a row its index and clip_id; "skip" leaves them out, logs a warning and
            records them in `skipped` when given.
        num_cpus: CPUs each read/decode task reserves (Ray's default 1 when None); fractions
            let reads run beside train workers that hold most of a small machine's cores.
        start: the stream's first row (counted over the listed files in order): the files
            and rows before it are neither read nor decoded (a resumed training stage).

    Row columns (`CLIP_COLUMNS`): clip_id, prompt, action, tool, target, split, source (str);
    seed (int); fps (float); video, motion_video (N, H, W, 3) uint8; joints (N, 42, 3) and
    points (N, 298, 3) float32; K, R (3, 3) and T (3,) float32; and `position` (int), the
    row's place in the listed stream.

    A missing or empty root, or no readable file at all, raises before any Ray work starts.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if skipped is not None and on_error != "skip":
        raise ValueError("a SkipLog only records anything with on_error='skip'")
    # 1. Which files.
    if isinstance(root_or_paths, str):
        paths = list_shards(root_or_paths, storage, split)
        if not paths:
            where = join(root_or_paths, split) if split else root_or_paths
            raise FileNotFoundError(f"no shard files (<split>/shard-NNNNN.parquet) under {where!r}")
    else:
        if split is not None:
            raise ValueError("split selects shards under a root; with explicit paths, pass those")
        paths = list(root_or_paths)
    fs, inners = resolve_all(paths, storage)
    # 2. Their footers and schemas, on the driver.
    rows = _check_files(fs, inners, REQUIRED_COLUMNS, on_error, skipped)
    # 3. Lazy read: the listed files in order, each task reading a few of them row by row.
    decode = partial(_decode_row, num_frames=num_frames, height=height, width=width,
                     on_error=on_error, skipped=skipped)
    return _stream(fs, [i for i in inners if i in rows], rows, start, READ_COLUMNS, decode,
                   num_cpus)


def read_latents(paths: Sequence[str], storage: StorageConfig, *, start: int = 0,
                 num_cpus: float | None = None) -> ray.data.Dataset:
    """Stream latent shards (`LATENT_SCHEMA`, written by `hoi.train.latents`) as a lazy Ray
    Dataset, one row per clip, from row `start` of the listed files on (as `read_clips`):
    clip_id, prompt, the `LATENT_ARRAYS` and `position`. A bad file or row raises a
    ShardError naming it."""
    fs, inners = resolve_all(list(paths), storage)
    rows = _check_files(fs, inners, LATENT_COLUMNS, "raise", None)
    return _stream(fs, inners, rows, start, list(LATENT_COLUMNS), _decode_latents, num_cpus)


def _stream(fs: pafs.FileSystem, inners: list[str], rows: dict[str, int], start: int,
            columns: list[str], decode: Any, num_cpus: float | None) -> ray.data.Dataset:
    """The listed files (repeats kept) as one stream of decoded rows from row `start` on:
    whole files before it are left out, and the file it falls in is read from that row."""
    pieces, position = [], 0
    for inner in inners:
        if position + rows[inner] > start:
            first = max(0, start - position)
            pieces.append({"path": inner, "first": first, "position": position + first})
        position += rows[inner]
    if not pieces:
        raise ShardError(f"the listed files hold {position} rows: none from row {start} on")
    tasks = max(len({p["path"] for p in pieces}), math.ceil(len(pieces) / FILES_PER_TASK))
    listed = ray.data.from_items(pieces, override_num_blocks=min(len(pieces), tasks))
    read = partial(_read_files, fs=fs, columns=columns, decode=decode)
    return listed.map_batches(read, batch_size=None, num_cpus=num_cpus)


def _read_files(batch: dict[str, np.ndarray], *, fs: pafs.FileSystem, columns: list[str],
                decode: Any) -> Iterator[dict[str, np.ndarray]]:
    """map_batches stage: listed files -> their decoded rows, one (batch of one) at a time,
    so that a task holds one decoded row however large its files are."""
    for inner, first, position in zip(batch["path"], batch["first"], batch["position"],
                                      strict=True):
        uri = to_uri(fs, str(inner))
        for index, row in _rows(fs, str(inner), int(first), columns):
            decoded = decode(row, uri, index)
            if decoded is None:
                continue
            decoded[POSITION] = int(position) + index - int(first)
            yield {name: np.asarray([value]) if isinstance(value, (str, int, float))
                   else value[None] for name, value in decoded.items()}


def _rows(fs: pafs.FileSystem, inner: str, first: int, columns: list[str]
          ) -> Iterator[tuple[int, dict[str, Any]]]:
    """(index, row) of a file's rows from `first` on. With a row group per row (as
    `write_shard` writes them) the rows before `first` are not read."""
    with fs.open_input_file(inner) as f:
        parquet = pq.ParquetFile(f)
        meta = parquet.metadata
        if meta.num_row_groups == meta.num_rows:
            for index in range(first, meta.num_rows):
                yield index, parquet.read_row_group(index, columns=columns).to_pylist()[0]
            return
        batches = parquet.iter_batches(batch_size=1, columns=columns)
        for index, row in enumerate(r for b in batches for r in b.to_pylist()):
            if index >= first:
                yield index, row


def _check_files(fs: pafs.FileSystem, inners: list[str], required: Sequence[str],
                 on_error: OnError, skipped: SkipLog | None) -> dict[str, int]:
    """Rows of each listed file whose footer and schema are fine; the others raise or are
    skipped (left out of the result). Each file's footer is read once, however often it is
    listed (a training stage lists its files once per pass)."""
    unique = list(dict.fromkeys(inners))
    with ThreadPoolExecutor(max_workers=min(FOOTER_THREADS, len(unique))) as pool:
        results = list(pool.map(partial(_inspect_or_error, fs, required=required), unique))
    errors = {inner: r for inner, r in zip(unique, results, strict=True)
              if isinstance(r, ShardError)}
    if errors and on_error == "raise":
        raise ShardError(f"{len(errors)} of {len(unique)} shard files are unusable:\n"
                         + "\n".join(map(str, errors.values())))
    if len(errors) == len(unique):
        raise ShardError(f"none of the {len(unique)} shard files is usable:\n"
                         + "\n".join(map(str, errors.values())))
    for inner, error in errors.items():
        _skip(Skipped(path=to_uri(fs, inner), reason=str(error)), skipped)
    return {inner: r["rows"] for inner, r in zip(unique, results, strict=True)
            if inner not in errors}


def _inspect_or_error(fs: pafs.FileSystem, inner: str, required: Sequence[str]
                      ) -> dict[str, Any] | ShardError:
    try:
        return _inspect(fs, inner, required)
    except ShardError as e:
        return e


def _decode_row(row: dict[str, Any], uri: str, index: int, *, num_frames: int | None,
                height: int | None, width: int | None, on_error: OnError,
                skipped: SkipLog | None) -> dict[str, Any] | None:
    """A shard row -> its clip columns, or None for a skipped bad row."""
    try:
        clip = row_to_clip(row, num_frames, height, width)
    except (ValueError, TypeError) as e:  # ClipError, or values of the wrong kind altogether
        clip_id = row.get("clip_id")
        where = f"{uri} row {index} (clip_id {clip_id!r})"
        if on_error == "raise":
            raise ShardError(f"{where}: {e}") from e
        _skip(Skipped(path=uri, reason=f"{where}: {e}", clip_id=clip_id, row=index), skipped)
        return None
    return {name: getattr(clip, name) for name in CLIP_COLUMNS}


def _decode_latents(row: dict[str, Any], uri: str, index: int) -> dict[str, Any]:
    try:
        return row_to_latents(row)
    except (ValueError, TypeError) as e:
        raise ShardError(f"{uri} row {index} (clip_id {row.get('clip_id')!r}): {e}") from e


def _skip(item: Skipped, skipped: SkipLog | None) -> None:
    logger.warning("skipping %s", item.reason)
    if skipped is not None:
        skipped.add(item)


def load_clips(root: str, split: str, data: DataConfig, storage: StorageConfig,
               limit: int | None = None) -> list[Clip]:
    """Clips of one split of a shard root, read in this process (no Ray), at data's sizes;
    the first `limit` of them when given."""
    clips: list[Clip] = []
    for path in list_shards(root, storage, split):
        for clip in shard_clips(path, storage, data):
            clips.append(clip)
            if limit is not None and len(clips) >= limit:
                return clips
    if not clips:
        raise FileNotFoundError(f"no {split} clips under {root!r}")
    return clips


def shard_clips(path: str, storage: StorageConfig, data: DataConfig) -> list[Clip]:
    """The clips of one shard file, read in this process, at data's sizes."""
    fs, inner = resolve(path, storage)
    return [row_to_clip(row, data.num_frames, data.height, data.width)
            for row in pq.read_table(inner, filesystem=fs).to_pylist()]


def read_motions(root: str, storage: StorageConfig, split: str
                 ) -> list[dict[str, np.ndarray]]:
    """The motions of a split, read in this process from the motion columns alone (joints,
    points and the camera's R and T): no video is read or decoded. One dict per clip:
    joints (N, 42, 3), points (N, 298, 3), R (3, 3), T (3,), float32."""
    columns = [f"{name}{suffix}" for name in ("joints", "points")
               for suffix in ("", "_shape", "_dtype")] + ["camera_R", "camera_T"]
    motions = []
    for path in list_shards(root, storage, split):
        fs, inner = resolve(path, storage)
        with fs.open_input_file(inner) as f:
            rows = pq.read_table(f, columns=columns).to_pylist()
        for row in rows:
            motions.append({"joints": get_array(row, "joints"), "points": get_array(row, "points"),
                            "R": np.asarray(row["camera_R"], np.float32).reshape(3, 3),
                            "T": np.asarray(row["camera_T"], np.float32)})
    if not motions:
        raise FileNotFoundError(f"no {split} clips under {root!r}")
    return motions


# ---------------------------------------------------------------------------------------------
# Batches
# ---------------------------------------------------------------------------------------------


class ClipCollate(NumpyBatchCollateFn):
    """`ds.iter_torch_batches(collate_fn=ClipCollate())` for `read_clips` datasets.

    Turns a numpy batch into torch tensors (video (B, N, H, W, 3) uint8, joints (B, N, 42, 3)
    float32, K (B, 3, 3), ...) and lists for the string columns, on which Ray's default
    conversion fails. Tensors are copies: Ray hands out read-only views of Arrow buffers.
    """

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor | list]:
        return {name: value.tolist() if value.dtype.kind in "OUS" else torch.tensor(value)
                for name, value in batch.items()}


def collate_clips(clips: Sequence[Clip]) -> dict[str, torch.Tensor | list]:
    """In-memory clips -> the same batch `ClipCollate` makes from a `read_clips` dataset
    (for single-process use: tests, sampling a few clips, the overfit check)."""
    batch = {name: np.stack([np.asarray(getattr(c, name)) for c in clips])
             for name in CLIP_COLUMNS}
    return ClipCollate()(batch)
