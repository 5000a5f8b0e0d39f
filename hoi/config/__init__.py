"""Typed configuration: one tree of dataclasses, named flavours, YAML run files, strict overrides.

A run's configuration is built in three layers, each overriding the one before:

1. the flavour (``svimo-tiny``, ``svimo-small``, ``svimo-5b``): sizes of data and model;
2. a YAML run file (``configs/*.yaml``), nested like the tree below;
3. command-line overrides of existing fields, ``--data.num_frames 13`` or ``--data.num_frames=13``.

Every key must name an existing field: a typo is an error that names the nearest valid key.
Derived quantities (latent shape, tokens per stream, sequence length) live in `Config` and only
there.

    model.py   what a model is: data, latent, model, vid, diffusion, loop, encoders
    jobs.py    the jobs and where they run: codec, prepare, train, sample, local, ablation,
               evaluate, serve, storage, ray
    tree.py    Config, FLAVOURS, load_config and the strict dict -> dataclass building
"""

from hoi.config.base import ConfigError
from hoi.config.jobs import (
    ABLATION_MODELS,
    MODE_NAMES,
    AblationConfig,
    CodecConfig,
    EvaluateConfig,
    LocalConfig,
    PrepareConfig,
    RayConfig,
    SampleConfig,
    ServeConfig,
    StorageConfig,
    TrainConfig,
)
from hoi.config.model import (
    DataConfig,
    DiffusionConfig,
    EncodersConfig,
    LatentConfig,
    LoopConfig,
    ModelConfig,
    VIDConfig,
)
from hoi.config.tree import FLAVOURS, Config, from_dict, load_config, parse_overrides, valid_keys

__all__ = [
    "ABLATION_MODELS", "FLAVOURS", "MODE_NAMES", "AblationConfig", "CodecConfig", "Config",
    "ConfigError", "DataConfig", "DiffusionConfig", "EncodersConfig", "EvaluateConfig",
    "LatentConfig", "LocalConfig", "LoopConfig", "ModelConfig", "PrepareConfig", "RayConfig",
    "SampleConfig", "ServeConfig", "StorageConfig", "TrainConfig", "VIDConfig", "from_dict",
    "load_config", "parse_overrides", "valid_keys",
]
