"""Saving and restoring training checkpoints: DeepSpeed state from every rank, the data
position, and exported inference weights (EMA ones when kept), in one directory that Ray Train
persists and registers. The layout, `verify` and `export` are `hoi.artifacts`'.

Atomicity: a run resumes from the latest directory that `verify` finds complete
(`hoi.artifacts.resume_checkpoint`): its train_state.json, which rank 0 writes last, is there
and so is every file it lists. A directory left by a crash mid-write never loads; one whose
upload finished but whose worker group died before Ray Train registered it does, as the
stage streams were cut at it.
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

from hoi.artifacts import MODEL_DIR, STATE_NAME, CheckpointError, TrainState, export, verify
from hoi.config import Config
from hoi.train import lora
from hoi.train.engine import EMA

DEEPSPEED_DIR = "deepspeed"
DEEPSPEED_TAG = "state"
EMA_NAME = "ema.safetensors"


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
        if cfg.train.lora_rank:  # inference weights are plain: the adapters merged in
            weights = lora.merge(weights, cfg.train)
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
