"""The whole tree (`Config`) with its derived quantities, the flavours, and building a config
from them, a YAML run file and overrides, strictly."""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from hoi.config.base import ConfigError, require
from hoi.config.jobs import (
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


@dataclass
class Config:
    """The whole run configuration."""

    flavour: str = "svimo-tiny"
    """Named size preset the run started from (recorded, not re-applied)."""
    data: DataConfig = field(default_factory=DataConfig)
    latent: LatentConfig = field(default_factory=LatentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    vid: VIDConfig = field(default_factory=VIDConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    encoders: EncodersConfig = field(default_factory=EncodersConfig)
    codec: CodecConfig = field(default_factory=CodecConfig)
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    local: LocalConfig = field(default_factory=LocalConfig)
    ablation: AblationConfig = field(default_factory=AblationConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    ray: RayConfig = field(default_factory=RayConfig)

    def __post_init__(self) -> None:
        require(self.flavour in FLAVOURS,
                 f"unknown flavour {self.flavour!r}; choose one of {sorted(FLAVOURS)}")
        d, lat = self.data, self.latent
        require((d.num_frames - 1) % lat.temporal_compression == 0,
                 f"data.num_frames - 1 = {d.num_frames - 1} is not a multiple of "
                 f"latent.temporal_compression = {lat.temporal_compression}")
        pixels_per_token = lat.spatial_compression * self.model.patch_size
        for name in ("height", "width"):
            require(getattr(d, name) % pixels_per_token == 0,
                     f"data.{name} = {getattr(d, name)} is not a multiple of "
                     f"latent.spatial_compression x model.patch_size = {pixels_per_token}")
        for height, width, _ in self.train.stages:
            require(height % pixels_per_token == 0 and width % pixels_per_token == 0,
                     f"train.stages size {height} x {width} is not a multiple of "
                     f"latent.spatial_compression x model.patch_size = {pixels_per_token}")

    def train_stages(self) -> list[tuple[int, int, int]]:
        """(height, width, steps) of each resolution stage, in order."""
        if self.train.stages:
            return [tuple(row) for row in self.train.stages]
        return [(self.data.height, self.data.width, self.train.steps)]

    def model_path(self, path: str | None) -> str:
        """`path`, or the run this config trains (<train.storage_path>/<train.run_name>)."""
        if path is not None:
            return path
        return f"{self.train.storage_path.rstrip('/')}/{self.train.run_name}"

    def at_size(self, height: int, width: int) -> Config:
        """This config with data.height x width replaced (a resolution stage's view)."""
        return dataclasses.replace(self, data=dataclasses.replace(self.data, height=height,
                                                                   width=width))

    # --- derived quantities: the one place they are computed ---------------------------------

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(frames, height, width) of a video latent: 13 x 52 x 78 for svimo-5b."""
        d, lat = self.data, self.latent
        return ((d.num_frames - 1) // lat.temporal_compression + 1,
                d.height // lat.spatial_compression, d.width // lat.spatial_compression)

    @property
    def token_grid(self) -> tuple[int, int, int]:
        """(frames, rows, columns) of patch tokens per stream: 13 x 26 x 39 for svimo-5b."""
        f, h, w = self.latent_shape
        p = self.model.patch_size
        return f, h // p, w // p

    @property
    def tokens_per_stream(self) -> int:
        """Tokens of the video stream, and equally of the motion stream."""
        f, h, w = self.token_grid
        return f * h * w

    @property
    def sequence_length(self) -> int:
        """Joint attention length: text + video + motion tokens (26,590 for svimo-5b)."""
        return self.model.max_text_tokens + 2 * self.tokens_per_stream

    def to_dict(self) -> dict[str, Any]:
        """Plain dicts and lists (tuples become lists), as JSON and YAML write them back."""
        return _plain(dataclasses.asdict(self))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------------
# Flavours: deltas over the dataclass defaults (which are svimo-tiny)
# ---------------------------------------------------------------------------------------------

FLAVOURS: dict[str, dict[str, Any]] = {
    # Seconds on CPU: the test flavour.
    "svimo-tiny": {},
    # Learns visibly on 2 CPU cores in minutes.
    "svimo-small": {
        "data": {"height": 64, "width": 96, "num_frames": 17},
        # A latent pixel per 4 x 4 px, not CogVideoX's 8 x 8: at 64 x 96 one 8 x 8 latent pixel
        # covers several joints of a hand, and the motion video's joints did not come through
        # the codec (docs/model.md, "What lets the motion video through the codec").
        # Patches of 4 x 4 latent pixels keep the 120 tokens a stream that 8 x 8 px latent
        # pixels in 2 x 2 patches gave: 2 x 2 would cost SViMo 6.4 x the FLOPs a step.
        "latent": {"spatial_compression": 4},
        "codec": {"vae_channels": [16, 32, 32]},
        "model": {"num_layers": 4, "num_heads": 4, "head_dim": 32, "time_embed_dim": 64,
                  "text_embed_dim": 64, "max_text_tokens": 16, "patch_size": 4},
        "vid": {"hidden_size": 128, "num_layers": 4, "num_heads": 4,
                "encoder_channels": [64, 128]},
        # No video backbone to start from (docs/model.md, session 9): x0-prediction, which
        # leaves no amplified noise in the last steps, and SViMo's video stream pre-trained
        # during VID's warm-up.
        "diffusion": {"prediction": "x0"},
        "loop": {"svimo_warmup": True},
        "train": {"batch_size": 4, "learning_rate": 1e-3},
    },
    # The paper's exact sizes (SPEC section 2).
    "svimo-5b": {
        "data": {"height": 416, "width": 624, "num_frames": 49},
        "model": {"num_layers": 42, "num_heads": 48, "head_dim": 64, "time_embed_dim": 512,
                  "text_embed_dim": 4096, "max_text_tokens": 226,
                  "learned_positional_embedding": True, "rope_base_grid": [30, 45],
                  "gradient_checkpointing": True},
        "vid": {"hidden_size": 512, "num_layers": 8, "num_heads": 8,
                "encoder_channels": [128, 256, 512], "gradient_checkpointing": True},
        "loop": {"vid_warmup_steps": 5000},
        "prepare": {"video_encoding": "mp4"},
        # SPEC: ZeRO-3, bf16 (auto on GPU), micro-batch 4 per 80 GB GPU, 5k warm-up + 30k
        # steps at 240 x 368, then 5k at 416 x 624
        # Sampling, evaluation and serving on one GPU each.
        "sample": {"gpus_per_actor": 1.0},
        "evaluate": {"gpus_per_actor": 1.0},
        "serve": {"replica_gpus": 1.0},
        # The VAE and T5 encode on GPUs, in bf16 (in fp32 on CPUs they would starve training).
        "train": {"steps": 40000, "stages": [[240, 368, 35000], [416, 624, 5000]],
                  "batch_size": 4, "use_gpu": True, "cpus_per_worker": 4.0,
                  "encode_gpus": 0.5, "encode_cpus": 4.0,
                  "checkpoint_every": 500, "log_every": 10},
    },
}


# ---------------------------------------------------------------------------------------------
# Building: dicts -> dataclasses, strictly
# ---------------------------------------------------------------------------------------------


def valid_keys(cls: type = Config, prefix: str = "") -> list[str]:
    """All dotted keys of the tree, e.g. ['flavour', 'data.height', ...]."""
    keys = []
    for f in dataclasses.fields(cls):
        hint = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(hint):
            keys += valid_keys(hint, f"{prefix}{f.name}.")
        else:
            keys.append(f"{prefix}{f.name}")
    return keys


def _unknown_key_error(key: str) -> ConfigError:
    close = difflib.get_close_matches(key, valid_keys(), n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"unknown config key {key!r}{hint}")


_EXPONENT_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check `value` against the annotation `hint`, converting where the meaning is plain."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError("; ".join(errors))
    if origin is Literal:
        require(value in args, f"{key} must be one of {list(args)}, got {value!r}")
        return value
    if origin in (tuple, list):
        require(isinstance(value, (list, tuple)), f"{key} must be a list, got {value!r}")
        return tuple(_coerce(v, args[0], f"{key}[]") for v in value)
    if hint is bool:
        require(isinstance(value, bool), f"{key} must be true or false, got {value!r}")
        return value
    if hint is int:
        require(isinstance(value, int) and not isinstance(value, bool),
                 f"{key} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str) and _EXPONENT_FLOAT.fullmatch(value.strip()):
            return float(value)  # YAML 1.1 reads 1e-3 (no dot before the e) as a string
        require(isinstance(value, (int, float)) and not isinstance(value, bool),
                 f"{key} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        require(isinstance(value, (str, int, float)) and not isinstance(value, bool),
                 f"{key} must be a string, got {value!r}")
        return str(value)
    raise ConfigError(f"{key}: unsupported annotation {hint!r}")


def from_dict(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass `cls` from a nested dict; unknown keys and wrong types are errors."""
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in names:
            raise _unknown_key_error(f"{prefix}{key}")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = from_dict(hint, value, f"{prefix}{key}.")
        else:
            kwargs[key] = _coerce(value, hint, f"{prefix}{key}")
    try:
        return cls(**kwargs)
    except TypeError as e:  # e.g. a dataclass given where a plain value was expected
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: {e}") from e


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_overrides(args: list[str]) -> dict[str, Any]:
    """['--data.num_frames', '13', '--prepare.output=s3://b/p'] -> nested dict.

    Values are read as YAML scalars ('13' -> 13, 'true' -> True, 'null' -> None, '[a, b]')."""
    nested: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or arg == "--":
            raise ConfigError(f"expected an override like --data.num_frames 13, got {arg!r}")
        if "=" in arg:
            key, raw = arg[2:].split("=", 1)
            i += 1
        else:
            if i + 1 >= len(args):
                raise ConfigError(f"override {arg} has no value")
            key, raw = arg[2:], args[i + 1]
            i += 2
        if key not in valid_keys():
            raise _unknown_key_error(key)
        value = yaml.safe_load(raw) if raw.strip() else ""
        node = nested
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return nested


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                flavour: str | None = None) -> Config:
    """Flavour defaults <- YAML file <- command-line overrides, validated once at the end.

    The flavour is taken from `flavour`, else the overrides' --flavour, else the file's
    `flavour:` key, else svimo-tiny."""
    file_values: dict[str, Any] = {}
    if path is not None:
        text = Path(path).read_text()
        file_values = yaml.safe_load(text) or {}
        if not isinstance(file_values, dict):
            raise ConfigError(f"{path}: a run file must be a YAML mapping")
    cli_values = parse_overrides(overrides or [])
    name = flavour or cli_values.get("flavour") or file_values.get("flavour") or "svimo-tiny"
    if name not in FLAVOURS:
        raise ConfigError(f"unknown flavour {name!r}; choose one of {sorted(FLAVOURS)}")
    merged = _merge(_merge(FLAVOURS[name], file_values), cli_values)
    merged["flavour"] = name
    return from_dict(Config, merged)
