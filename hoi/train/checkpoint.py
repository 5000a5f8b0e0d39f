"""Training checkpoints: DeepSpeed state from every rank, the data position, and exported
inference weights, in one directory that Ray Train persists and registers.

    <checkpoint>/
        deepspeed/state/...        every rank's engine files (weights, ZeRO optimizer
                                   partitions, LR schedule)
        ema.safetensors            the EMA weights (train.ema_decay > 0)
        model/svimo/, model/vid/   inference weights (`from_pretrained` directories; EMA ones
                                   when enabled) and model/pipeline.json
        train_state.json           step, data position (stage, micro-batches), world size
                                   and the list of every file above, written last

Atomicity: Ray Train registers a checkpoint only after every rank has uploaded its part, and
resumes only from registered ones; in addition `verify` refuses a directory whose
train_state.json is missing or whose listed files are not all present, so a directory left
by a crash mid-write never loads as valid.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
import torch.distributed as dist

from hoi.config import Config, StorageConfig
from hoi.model.pretrained import MODEL_DIR, PIPELINE_NAME, write_pretrained
from hoi.storage import join, list_files, read_text, write_text
from hoi.train.engine import EMA, split_state

STATE_NAME = "train_state.json"
CHECKPOINT_PREFIX = "checkpoint-"
"""Checkpoint directories are <run>/checkpoint-<step, 8 digits>."""
DEEPSPEED_DIR = "deepspeed"
DEEPSPEED_TAG = "state"
EMA_NAME = "ema.safetensors"


class CheckpointError(RuntimeError):
    """A checkpoint directory is incomplete or belongs to another run layout."""


@dataclasses.dataclass
class TrainState:
    """Where a run is: optimiser steps done, and the data position: the resolution stage whose
    stream is being read and the micro-batches each worker has taken from it. A checkpoint at
    the last step of a stage still names that stage: the next one starts its own stream."""

    step: int = 0
    stage: int = 0
    consumed: int = 0
    world_size: int = 1


def _files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def save(directory: str | Path, engine: Any, state: TrainState, cfg: Config,
         ema: EMA | None) -> None:
    """Every rank calls this with its own local `directory` (collective: DeepSpeed's save
    and the ZeRO-3 gather synchronise the ranks). Rank 0 also writes the exported weights
    and, last, train_state.json listing every rank's files."""
    root = Path(directory)
    rank = dist.get_rank() if dist.is_initialized() else 0
    engine.save_checkpoint(str(root / DEEPSPEED_DIR), tag=DEEPSPEED_TAG)
    weights = _export_state(engine, ema)
    if rank == 0:
        if ema is not None:
            safetensors.torch.save_file(ema.state_dict(), str(root / EMA_NAME))
        export(root / MODEL_DIR, weights, cfg, state.step)
    files = _files_under(root)
    gathered: list[list[str]] = [files]
    if dist.is_initialized():
        gathered = [[] for _ in range(dist.get_world_size())]
        dist.all_gather_object(gathered, files)
    if rank == 0:
        listed = sorted({f for part in gathered for f in part})
        content = dataclasses.asdict(state) | {"files": listed}
        (root / STATE_NAME).write_text(json.dumps(content, indent=2))


def _export_state(engine: Any, ema: EMA | None) -> dict[str, torch.Tensor] | None:
    """The whole TrainSystem state on rank 0 (None elsewhere): EMA weights when kept,
    else the engine's, gathered from the ZeRO-3 partitions when sharded (collective)."""
    if engine.zero_optimization_partition_weights():
        state = engine._zero3_consolidated_16bit_state_dict()
    else:
        state = engine.module.state_dict()
    if state is not None and ema is not None:
        state = dict(state) | {name: value.to(state[name].dtype)
                               for name, value in ema.state_dict().items()}
    return state


def export(directory: str | Path, state: dict[str, torch.Tensor], cfg: Config, step: int,
           storage: StorageConfig | None = None) -> None:
    """Inference weights: svimo/ and vid/ as `from_pretrained` directories, and
    pipeline.json naming them and the encoders they were trained with, written last (local
    or s3://)."""
    root, storage = str(directory), storage or StorageConfig()
    svimo_state, vid_state = split_state(state)
    write_pretrained("SViMo", cfg, svimo_state, join(root, "svimo"), storage)
    write_pretrained("VID", cfg, vid_state, join(root, "vid"), storage)
    pipeline = {"svimo": "svimo", "vid": "vid", "step": step,
                "encoders": dataclasses.asdict(cfg.encoders)}
    write_text(join(root, PIPELINE_NAME), json.dumps(pipeline, indent=2), storage)


def verify(directory: str | Path, storage: StorageConfig | None = None) -> TrainState:
    """The TrainState of a complete checkpoint directory (local or s3://): its
    train_state.json is there and so is every file it lists; else CheckpointError."""
    storage = storage or StorageConfig()
    root = str(directory)
    try:
        content = json.loads(read_text(join(root, STATE_NAME), storage))
    except FileNotFoundError:
        raise CheckpointError(f"{root}: no {STATE_NAME}; the checkpoint is incomplete") from None
    present = set(list_files(root, storage))
    missing = [f for f in content.pop("files", []) if f not in present]
    if missing:
        raise CheckpointError(f"{root}: {len(missing)} listed files are missing, e.g. "
                              f"{missing[:3]}; the checkpoint is incomplete")
    try:
        return TrainState(**content)
    except TypeError as e:
        raise CheckpointError(f"{root}/{STATE_NAME}: not a train state this version writes "
                              f"({e})") from e


def load(directory: str | Path, engine: Any, ema: EMA | None) -> TrainState:
    """Restore the engine (weights, optimizer, LR schedule) and EMA from a verified local
    checkpoint directory; returns the saved TrainState. Every rank calls this."""
    state = verify(directory)
    world = dist.get_world_size() if dist.is_initialized() else 1
    if state.world_size != world:
        raise CheckpointError(
            f"{directory}: saved by {state.world_size} workers, resumed with {world}; ZeRO "
            f"partitions only load at the same train.num_workers")
    path, _ = engine.load_checkpoint(os.path.join(directory, DEEPSPEED_DIR), tag=DEEPSPEED_TAG,
                                     load_optimizer_states=True, load_lr_scheduler_states=True)
    if path is None:
        raise CheckpointError(f"{directory}: DeepSpeed found no state to load")
    if ema is not None:
        ema_path = Path(directory) / EMA_NAME
        if not ema_path.is_file():
            raise CheckpointError(f"{directory}: train.ema_decay > 0 but no {EMA_NAME}")
        ema.load_state_dict(safetensors.torch.load_file(str(ema_path)))
    return state
