"""Our own inference checkpoints: one directory per network, `config.json` + `model.safetensors`.

`config.json` holds the class name and the *whole* run config the network was built from, so
a directory loads with nothing else given. Works on local paths and s3:// alike.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

import safetensors.torch
import torch
import torch.nn as nn

from hoi.config import Config, StorageConfig, from_dict
from hoi.storage import (
    is_s3,
    join,
    local_file,
    read_text,
    write_bytes,
    write_local_with,
    write_text,
)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
MODEL_DIR = "model"
"""A training checkpoint's exported inference weights: svimo/, vid/ and PIPELINE_NAME."""
PIPELINE_NAME = "pipeline.json"
"""Names the networks of an exported model directory and the encoders they were trained with."""

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
    meta: dict[str, Any] = {"class": class_name, "config": cfg.to_dict()}
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
