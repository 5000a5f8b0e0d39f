"""The driver of `jobs/train.py`: check everything that can be checked, then `TorchTrainer.fit`.

Before any worker starts, `preflight` fails with a TrainError naming the problem when the
shards are missing, unreadable or too few for the workers, the shards' precomputed latents
were made with other encoders or lack a stage's size, the encoders do not load or do not fit
the config, the DeepSpeed settings contradict each other, or the cluster can never hold the
CPUs/GPUs the run reserves (counting the nodes its autoscaler may add). It also takes the
empty prompt's T5 features from the latents, or computes them once, so the workers never
load T5.

Runs live under `<train.storage_path>/<train.run_name>` (local or s3://), Ray Train's
bookkeeping and the checkpoints. Running again with the same name resumes from the latest
complete checkpoint there, and a failed worker group restarts from it (`train.max_failures`;
`hoi.artifacts.resume_checkpoint`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import ray
import ray.train
from ray.train.torch import TorchTrainer

from hoi import resources
from hoi.artifacts import MODEL_DIR, exported_model_at
from hoi.config import Config, ConfigError
from hoi.data.shards import ShardError, inspect_shard, list_shards
from hoi.model.encoders import load_encoders
from hoi.resources import Reservation, ResourceError, accelerator
from hoi.storage import absolute_paths, exists, is_s3, join, resolve
from hoi.train.data import StageStream, ingest_config
from hoi.train.engine import deepspeed_config, model_misfit, resolve_precision
from hoi.train.latents import LatentsError, training_latents, validation_features
from hoi.train.loop import stage_name, train_loop_per_worker
from hoi.train.tracking import check_mlflow
from hoi.train.validation import validation_clips

log = logging.getLogger(__name__)


class TrainError(RuntimeError):
    """The run cannot start: bad data, encoders, settings or resources."""


@dataclass
class Preflight:
    """What the checks found: training clips, the empty prompt's features, and what the
    cluster holds of the run's reservations."""

    shards: list[tuple[str, int]]
    null_text: Any
    validation: dict[str, Any] | None = None
    """The validation clips' prompts and their T5 features (train.validate_every)."""
    latents: bool = False
    """Whether the run reads precomputed latents (`hoi.train.latents`)."""
    resources: str = ""

    @property
    def clips(self) -> int:
        return sum(rows for _, rows in self.shards)

    @property
    def summary(self) -> str:
        source = "precomputed latents" if self.latents else "encoded online"
        return (f"{self.clips} training clips in {len(self.shards)} shards ({source}); "
                f"{self.resources}")


def preflight(cfg: Config) -> Preflight:
    """Every check that needs no worker (see the module docstring)."""
    t = cfg.train
    # Data: footers of every training shard, and enough clips for one batch per worker.
    try:
        paths = list_shards(t.shards, cfg.storage, "train")
        if not paths:
            raise FileNotFoundError(f"no training shards under {join(t.shards, 'train')!r}")
        shards = [(path, inspect_shard(path, cfg.storage)["rows"]) for path in paths]
    except (FileNotFoundError, ShardError, OSError) as e:
        raise TrainError(f"train.shards: {e}") from e
    clips = sum(rows for _, rows in shards)
    needed = t.num_workers * t.batch_size
    if clips < needed:
        raise TrainError(f"{clips} training clips under {t.shards!r}: {t.num_workers} workers "
                         f"x train.batch_size {t.batch_size} need at least {needed}")
    # The empty prompt's features for classifier-free guidance dropout: precomputed with the
    # latents, or from T5 (in the run's precision on the driver's CPU: T5 v1.1 XXL is 19 GB
    # in fp32, 9.5 in bf16), which then also checks that the encoders fit the config.
    import torch

    device = torch.device("cuda" if t.use_gpu else "cpu")
    try:
        null_text = training_latents(cfg, shards)
    except (LatentsError, ConfigError, FileNotFoundError, OSError) as e:
        raise TrainError(f"precomputed latents: {e}") from e
    text_encoder = None
    if null_text is None:
        bf16 = resolve_precision(cfg, device) == "bf16"
        try:
            _, text_encoder = load_encoders(cfg, dtype=torch.bfloat16 if bf16 else None)
        except (ConfigError, FileNotFoundError, OSError) as e:
            raise TrainError(f"encoders: {e}") from e
        null_text = text_encoder.encode([""]).float().numpy()
    validation = None
    if t.validate_every:
        try:
            if text_encoder is None:
                prompts, features = validation_features(cfg, t.validate_clips)
            else:
                prompts = [clip.prompt for clip in validation_clips(cfg)]
                features = text_encoder.encode(prompts).float().numpy()
        except (FileNotFoundError, OSError, ValueError) as e:
            raise TrainError(f"train.validate_every needs validation clips: {e}") from e
        validation = {"prompts": prompts, "features": features}
    if t.init_from is not None and not exists(t.init_from, cfg.storage):
        raise TrainError(f"train.init_from {t.init_from!r} does not exist")
    model = None if t.init_from is None else exported_model_at(t.init_from, cfg.storage)
    if model is not None:
        misfit = model_misfit(model, cfg)
        if misfit is not None:
            raise TrainError(f"train.init_from {t.init_from!r}: {misfit} (train.init_from "
                             f"null starts from random weights)")
    # Settings that only contradict each other at build time.
    try:
        deepspeed_config(cfg, t.num_workers, device)
    except ConfigError as e:
        raise TrainError(str(e)) from e
    # The tracking server answers (rank 0 would fail at its first row, minutes in).
    if t.mlflow_uri:
        try:
            check_mlflow(t.mlflow_uri)
        except Exception as e:  # MLflow raises many kinds; each means "not there"
            raise TrainError(f"train.mlflow_uri {t.mlflow_uri!r}: {e}") from e
    return Preflight(shards=shards, null_text=null_text, validation=validation,
                     latents=text_encoder is None)


def reservations(cfg: Config, latents: bool = False) -> list[Reservation]:
    """What the run holds while it trains: its workers, its encoder actors (none when it reads
    precomputed latents) and (at least) one Parquet read task."""
    t = cfg.train
    model = accelerator(t.accelerator_type)
    encoders = [] if latents else [
        Reservation("encoder actor", {"CPU": t.encode_cpus, "GPU": t.encode_gpus} | model,
                    t.encode_actors)]
    return [
        Reservation("train worker", {"CPU": t.cpus_per_worker, "GPU": float(t.use_gpu)} | model,
                    t.num_workers),
        *encoders,
        Reservation("read task", {"CPU": t.read_cpus}, 1),
    ]


def check_resources(cfg: Config, latents: bool = False) -> str:
    """The run's reservations against what the cluster can hold, now or once its autoscaler
    has added nodes (`hoi.resources`): Ray would otherwise wait for resources that never
    come, silently. Returns a line saying which."""
    try:
        return resources.check(reservations(cfg, latents))
    except ResourceError as e:
        raise TrainError(str(e)) from e


def run_config(cfg: Config) -> ray.train.RunConfig:
    t = cfg.train
    fs, inner = resolve(t.storage_path, cfg.storage)
    return ray.train.RunConfig(
        name=t.run_name, storage_path=inner,
        storage_filesystem=fs if is_s3(t.storage_path) else None,
        failure_config=ray.train.FailureConfig(max_failures=t.max_failures),
        checkpoint_config=ray.train.CheckpointConfig(num_to_keep=t.keep_checkpoints))


def check(cfg: Config) -> Preflight:
    """Every check made before a worker starts (`preflight`, then `check_resources`); Ray
    must be initialised. Raises TrainError naming what would stop the run."""
    checked = preflight(cfg)
    checked.resources = check_resources(cfg, checked.latents)
    return checked


def fit(cfg: Config) -> ray.train.Result:
    """Check, build the stage datasets, train; Ray must be initialised. Raises TrainError
    before any worker starts when the run cannot work, ray.train's TrainingFailedError when
    it failed more often than train.max_failures."""
    cfg = absolute_paths(cfg)
    checked = check(cfg)
    log.info("resources: %s", checked.resources)
    # callables: Ray Train builds each stage's stream at every worker-group start, from where
    # the run's latest checkpoint left it
    datasets = {stage_name(i): StageStream(cfg, checked.shards, i, checked.latents)
                for i in range(len(cfg.train_stages()))}
    t = cfg.train
    log.info("training %s on %d clips (%s): %d workers, %d steps in %d stage(s), run %s",
             cfg.flavour, checked.clips,
             "precomputed latents" if checked.latents else "encoded online", t.num_workers,
             t.steps, len(datasets), join(t.storage_path, t.run_name))
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"cfg": cfg.to_dict(), "null_text": checked.null_text,
                           "validation": checked.validation},
        scaling_config=ray.train.ScalingConfig(
            num_workers=t.num_workers, use_gpu=t.use_gpu,
            accelerator_type=t.accelerator_type, placement_strategy=t.placement_strategy,
            resources_per_worker={"CPU": t.cpus_per_worker, **({"GPU": 1} if t.use_gpu else {})}),
        run_config=run_config(cfg),
        datasets=datasets, dataset_config=ingest_config())
    return trainer.fit()


def exported_model(cfg: Config, result: ray.train.Result) -> str | None:
    """Path (local or s3://) of the inference weights (svimo/, vid/, pipeline.json) of the
    run's latest checkpoint."""
    if result.checkpoint is None:
        return None
    path = join(result.checkpoint.path, MODEL_DIR)
    return f"s3://{path}" if is_s3(cfg.train.storage_path) else path
