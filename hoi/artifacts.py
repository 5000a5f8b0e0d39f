"""What training leaves behind and inference reads: one layout, one module.

    <run>/                              train.storage_path / train.run_name
        checkpoint-<step, 8 digits>/
            deepspeed/state/...         every rank's engine files (weights, ZeRO optimizer
                                        partitions, LR schedule): hoi.train.checkpoint
            ema.safetensors             the EMA weights (train.ema_decay > 0)
            model/                      the exported model directory:
                svimo/, vid/            networks as `Pretrained` directories: config.json
                                        (class and the model sections of the run config) +
                                        model.safetensors
                pipeline.json           names the networks and the encoders they were trained
                                        with, written last
            train_state.json            step, data position, world size and the list of every
                                        file above, written last of all

A checkpoint is complete when `verify` finds train_state.json and every file it lists;
`find_model` picks the exported model of a complete checkpoint. Local paths and s3:// alike.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any, TypeVar

import safetensors.torch
import torch
import torch.nn as nn

from hoi.config import Config, StorageConfig, from_dict
from hoi.storage import (
    exists,
    is_s3,
    join,
    list_files,
    local_file,
    read_text,
    write_bytes,
    write_local_with,
    write_text,
)

log = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
MODEL_DIR = "model"
"""A training checkpoint's exported inference weights: svimo/, vid/ and PIPELINE_NAME."""
PIPELINE_NAME = "pipeline.json"
"""Names the networks of an exported model directory and the encoders they were trained with."""
STATE_NAME = "train_state.json"
CHECKPOINT_PREFIX = "checkpoint-"
"""Checkpoint directories are <run>/checkpoint-<step, 8 digits>."""
MODEL_SECTIONS = ("flavour", "data", "latent", "model", "vid", "diffusion", "loop", "encoders")
"""The parts of a run config that an exported network keeps: what builds and runs it. The
run's train/serve/storage/ray sections stay with the run."""


class CheckpointError(RuntimeError):
    """A checkpoint directory is incomplete or belongs to another run layout."""


# ---------------------------------------------------------------------------------------------
# Networks: Pretrained directories
# ---------------------------------------------------------------------------------------------

M = TypeVar("M", bound="Pretrained")


class Pretrained(nn.Module):
    """Base of networks built as `cls(cfg: Config)` that save and load themselves."""

    config: Config

    def save_pretrained(self, path: str, storage: StorageConfig | None = None) -> None:
        """Write `path/model.safetensors`, then `path/config.json` (its presence marks a
        complete directory: each file is written atomically, the config last)."""
        write_pretrained(type(self).__name__, self.config, self.state_dict(), path, storage)

    @classmethod
    def from_pretrained(cls: type[M], path: str, storage: StorageConfig | None = None, *,
                        device: torch.device | str | None = None,
                        dtype: torch.dtype | None = None) -> M:
        """Build from `path` (a directory written by `save_pretrained`), in eval mode."""
        storage = storage or StorageConfig()
        try:
            meta = json.loads(read_text(join(path, CONFIG_NAME), storage))
        except FileNotFoundError as e:
            raise FileNotFoundError(f"no {CONFIG_NAME} under {path!r}: not a saved "
                                    f"{cls.__name__} (or an incomplete one)") from e
        if meta.get("class") != cls.__name__:
            raise ValueError(f"{path!r} holds a {meta.get('class')}, not a {cls.__name__}")
        cfg = from_dict(Config, meta["config"])
        # read from a local file (streamed there from S3): one copy of the weights in memory,
        # made on `device` directly, never a bytes object of the whole file beside them
        with local_file(join(path, WEIGHTS_NAME), storage) as weights:
            state = safetensors.torch.load_file(weights, device=str(device or "cpu"))
        return build_with_state(cls, cfg, state, device=device, dtype=dtype)


def write_pretrained(class_name: str, cfg: Config, state: dict[str, torch.Tensor], path: str,
                     storage: StorageConfig | None = None) -> None:
    """`save_pretrained`'s files from a bare state dict (e.g. weights gathered from ZeRO-3
    partitions, which the partitioned module itself does not hold). Training exports to a
    local directory, where the weights are written from the tensors without being
    serialised into memory first."""
    storage = storage or StorageConfig()
    state = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    weights = join(path, WEIGHTS_NAME)
    if is_s3(path):  # an S3 object is uploaded whole (see hoi.storage)
        write_bytes(weights, safetensors.torch.save(state), storage)
    else:  # streamed from the tensors themselves: no second copy of 12 GB in memory
        write_local_with(weights, lambda tmp: safetensors.torch.save_file(state, tmp))
    config = {k: v for k, v in cfg.to_dict().items() if k in MODEL_SECTIONS}
    meta: dict[str, Any] = {"class": class_name, "config": config}
    write_text(join(path, CONFIG_NAME), json.dumps(meta, indent=2), storage)


def build_with_state(cls: type[M], cfg: Config, state: dict[str, torch.Tensor], *,
                     device: torch.device | str | None = None,
                     dtype: torch.dtype | None = None) -> M:
    """`cls(cfg)` built on the meta device and filled from `state` (strictly): no time or
    memory spent on an initialisation that is overwritten at once (5B parameters)."""
    with torch.device("meta"):
        model = cls(cfg)
    model.load_state_dict(state, strict=True, assign=True)
    leftover = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if leftover:
        raise RuntimeError(f"{cls.__name__}: no values for {leftover[:5]}")
    return model.to(device=device, dtype=dtype).eval()


# ---------------------------------------------------------------------------------------------
# Exported models and checkpoints
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class TrainState:
    """Where a run is: optimiser steps done, and the data position: the resolution stage whose
    stream is being read and the micro-batches each worker has taken from it. A checkpoint at
    the last step of a stage still names that stage: the next one starts its own stream."""

    step: int = 0
    stage: int = 0
    consumed: int = 0
    world_size: int = 1


def split_state(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor],
                                                          dict[str, torch.Tensor]]:
    """A TrainSystem state dict (svimo.*, vid.*) -> (SViMo's, VID's), prefixes removed."""
    parts: dict[str, dict[str, torch.Tensor]] = {"svimo": {}, "vid": {}}
    for name, value in state.items():
        head, _, rest = name.partition(".")
        if head in parts:
            parts[head][rest] = value
    return parts["svimo"], parts["vid"]


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


def export_networks(directory: str | Path, svimo: nn.Module, vid: nn.Module, cfg: Config,
                    step: int, storage: StorageConfig | None = None) -> None:
    """`export` of two whole networks (not ZeRO-3 partitions): a single process's model."""
    state = {**{f"svimo.{k}": v for k, v in svimo.state_dict().items()},
             **{f"vid.{k}": v for k, v in vid.state_dict().items()}}
    export(directory, state, cfg, step, storage)


def exported_model_at(path: str, storage: StorageConfig) -> str | None:
    """The exported model directory `path` names, as `find_model` finds it (the directory
    itself, a checkpoint's model/, a run's latest), or None where it names none (e.g. a
    CogVideoX transformer directory)."""
    try:
        return find_model(path, storage)
    except FileNotFoundError:
        return None


def read_network(model_dir: str, name: str, storage: StorageConfig) -> dict[str, torch.Tensor]:
    """The state dict of network `name` ("svimo" or "vid") of an exported model directory,
    on the CPU, as saved (read from a local file: one copy in memory)."""
    meta = json.loads(read_text(join(model_dir, PIPELINE_NAME), storage))
    with local_file(join(model_dir, meta[name], WEIGHTS_NAME), storage) as weights:
        return safetensors.torch.load_file(weights)


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


def model_config(model_dir: str, storage: StorageConfig) -> Config:
    """The config an exported model was trained with (its model sections; the rest at their
    defaults), without loading any weights."""
    meta = json.loads(read_text(join(model_dir, PIPELINE_NAME), storage))
    saved = json.loads(read_text(join(model_dir, meta["svimo"], CONFIG_NAME), storage))
    return from_dict(Config, saved["config"])


def find_model(path: str, storage: StorageConfig) -> str:
    """The exported model directory at `path`: itself, the model/ of a complete checkpoint,
    or the model/ of the latest complete checkpoint of a run directory. A checkpoint is
    complete when `verify` finds every file its train_state.json lists (a crash or
    an upload under way leaves some out); incomplete ones of a run are skipped with a
    warning. FileNotFoundError says what was looked for."""
    path = path.rstrip("/")
    if exists(join(path, PIPELINE_NAME), storage):
        return path
    if exists(join(path, MODEL_DIR, PIPELINE_NAME), storage):
        try:
            verify(path, storage)
        except CheckpointError as e:
            raise FileNotFoundError(str(e)) from None
        return join(path, MODEL_DIR)
    try:
        latest = latest_checkpoint(path, storage)
    except FileNotFoundError:
        raise FileNotFoundError(f"nothing at {path!r}: give a training run, a checkpoint or an "
                                f"exported model directory") from None
    if latest is not None:
        return join(latest[0], MODEL_DIR)
    raise FileNotFoundError(f"{path!r} holds no {PIPELINE_NAME} and no complete "
                            f"{CHECKPOINT_PREFIX}* directory: has the run saved a "
                            f"checkpoint yet?")


def latest_checkpoint(run: str, storage: StorageConfig) -> tuple[str, TrainState] | None:
    """The latest complete checkpoint directory of a run directory and its TrainState
    (`verify`; incomplete ones are skipped with a warning), or None when there is none yet.
    FileNotFoundError when the run directory does not exist."""
    names = list_files(run, storage)
    listed = sorted({n.split("/")[0] for n in names if n.startswith(CHECKPOINT_PREFIX)
                     and n.endswith("/" + STATE_NAME)}, reverse=True)
    for name in listed:
        try:
            return join(run, name), verify(join(run, name), storage)
        except CheckpointError as e:
            log.warning("skipping %s", e)
    return None


def resume_checkpoint(cfg: Config) -> tuple[str, TrainState] | None:
    """Where a training run resumes: the latest complete checkpoint of its run directory
    (train.storage_path/train.run_name) and its TrainState, or None for a new run. The stage
    streams and every worker's restore both read it. Ray Train's `get_checkpoint()` is the
    latest checkpoint its controller registered, and that lags the storage when a worker
    group dies after every rank uploaded a checkpoint but before the controller took the
    reports: a stream cut at one checkpoint and weights restored from another would skip
    data or train on it twice."""
    try:
        return latest_checkpoint(join(cfg.train.storage_path, cfg.train.run_name), cfg.storage)
    except FileNotFoundError:
        return None
