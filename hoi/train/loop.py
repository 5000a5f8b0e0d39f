"""`train_loop_per_worker`: what every Ray Train worker runs.

1. Build SViMo + VID (the same seeded initial weights on every rank; SViMo partitioned from
   the start under ZeRO-3), the frozen VAE for the closed loop's guidance, and the DeepSpeed
   engine.
2. Resume from the run's latest complete checkpoint when there is one (a restarted worker
   group, or a rerun of the same run name; `hoi.artifacts.resume_checkpoint`, the one the
   stage streams were cut at): weights, optimizer, LR schedule, EMA, step and data
   position.
3. For each resolution stage, stream its dataset shard (all the stage's epochs in one
   stream); every optimiser step is `train.gradient_accumulation` micro-steps of the closed
   loop (VID warm-up first).
4. Report metrics every `train.log_every` steps (rank 0 also logs them to TensorBoard and
   MLflow, `hoi.train.tracking`) and a checkpoint every `train.checkpoint_every` steps and at
   the end.

Noise and dropout are drawn from a generator seeded by (seed, rank, step, micro-step), so a
resumed run draws what the uninterrupted one would have.
"""

from __future__ import annotations

import logging
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import ray
import ray.train
import ray.train.torch
import torch
from ray.train.v2._internal.execution import context as ray_train_context

from hoi.artifacts import CHECKPOINT_PREFIX, TrainState, resume_checkpoint
from hoi.config import Config, from_dict
from hoi.data.shards import POSITION
from hoi.model.encoders import VideoVAE
from hoi.storage import resolve
from hoi.train import checkpoint
from hoi.train.data import stream_position, to_train_batch
from hoi.train.engine import EMA, TrainSystem, build_engine, build_models
from hoi.train.meter import Meter, peak_tflops, progress_line
from hoi.train.tracking import Tracker
from hoi.train.validation import Validation

log = logging.getLogger(__name__)


def stage_name(index: int) -> str:
    """Ray Train dataset name of resolution stage `index`."""
    return f"stage{index}"


def _generator(device: torch.device, seed: int, rank: int, step: int, micro: int
               ) -> torch.Generator:
    mixed = ((seed * 1_000_003 + rank) * 1_000_003 + step) * 1_000_003 + micro
    return torch.Generator(device).manual_seed(mixed % (2**63))


def _say(line: str) -> None:
    """One line to the driver's log. Ray Train's patched `print` would send it twice (to the
    wrapped stdout and to its logger); the process's own stdout is forwarded once."""
    print(line, file=sys.__stdout__, flush=True)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train's entry point; `config` holds the run config (as a dict) and the null text
    features (the empty prompt's T5 output, computed once on the driver)."""
    WorkerRun(from_dict(Config, config["cfg"]), torch.tensor(config["null_text"]),
              config.get("validation")).run()


class WorkerRun:
    """One worker's share of the run: engine, position, metrics."""

    def __init__(self, cfg: Config, null_text: torch.Tensor,
                 validation: dict[str, Any] | None = None):
        """validation: the validation prompts and their T5 features (`Preflight`)."""
        self.cfg = cfg
        t = cfg.train
        context = ray.train.get_context()
        self.rank, self.world = context.get_world_rank(), context.get_world_size()
        self.device = ray.train.torch.get_device()
        # where each rank runs: the worker placement a multi-node user checks first
        _say(f"worker rank {self.rank} of {self.world} on node "
             f"{ray.get_runtime_context().get_node_id()} ({self.device})")
        if self.device.type == "cpu":
            torch.set_num_threads(max(1, int(t.cpus_per_worker)))
        # Ray Train logs every report call of every rank at INFO; the step line says more
        logging.getLogger(ray_train_context.__file__).setLevel(logging.WARNING)
        # 1. Models, frozen VAE, engine.
        svimo, vid = build_models(cfg, self.world, self.device)
        vae = VideoVAE.load(cfg.encoders.vae, cfg.storage, slicing=cfg.encoders.vae_slicing,
                            tiling=cfg.encoders.vae_tiling, device=self.device)
        null_text = null_text.to(self.device)
        self.engine = build_engine(cfg, TrainSystem(cfg, svimo, vid, vae, null_text),
                                   self.world, self.device)
        if self.engine.bfloat16_enabled():
            vae.to(dtype=torch.bfloat16)
        self.ema = EMA(self.engine.module, t.ema_decay) if t.ema_decay > 0 else None
        self.meter = Meter(cfg, self.world, peak_tflops(cfg, self.device), self.device)
        # 2. Resume.
        self.state = TrainState(world_size=self.world)
        restored = resume_checkpoint(cfg)
        if restored is not None:
            fs, inner = resolve(restored[0], cfg.storage)
            with ray.train.Checkpoint(inner, filesystem=fs).as_directory() as directory:
                self.state = checkpoint.load(directory, self.engine, self.ema)
        self.resumed_from = self.state.step
        self.tracker = Tracker(cfg, self.state.step) if self.rank == 0 else None
        self.vae = vae
        self.validation = (Validation(cfg, validation["prompts"], validation["features"],
                                      null_text) if validation else None)
        if restored is not None and self.rank == 0:
            log.info("resumed at step %d (%d micro-batches into stage %d's stream)",
                     self.state.step, self.state.consumed, self.state.stage + 1)

    def run(self) -> None:
        """3. Every resolution stage not yet done, each one stream of batches, up to the
        run's last step (train.steps, or train.stop_at_step)."""
        stages = self.cfg.train_stages()
        last = self.cfg.train.stop_at_step or self.cfg.train.steps
        end = 0
        for index, (height, width, steps) in enumerate(stages):
            end += steps
            if self.state.step >= end:
                continue
            if self.state.step >= last:
                break
            if self.state.stage != index:  # a stage's own stream, read from its start
                self.state.stage, self.state.consumed = index, 0
            stage_cfg = self.cfg.at_size(height, width)
            self.engine.module.set_size(stage_cfg)
            self.meter.set_stage(stage_cfg)
            self._stage(ray.train.get_dataset_shard(stage_name(index)), min(end, last), index,
                        len(stages), stage_cfg)
        if self.tracker is not None:
            self.tracker.close()

    def _stage(self, shard: Any, end: int, stage: int, stages: int, stage_cfg: Config) -> None:
        """Train on this worker's share of the stage's stream until step `end`. The stream
        starts where the run's checkpoint left it (`hoi.train.data.StageStream`); its first
        batch must be this worker's next one (`_positioned`)."""
        t = self.cfg.train
        batches = self._positioned(
            iter(shard.iter_torch_batches(batch_size=t.batch_size, drop_last=True,
                                          prefetch_batches=t.prefetch_batches)), stage)
        self.meter.restart()
        micro = 0
        while self.state.step < end:
            waiting = time.perf_counter()
            batch = next(batches, None)
            if batch is None:
                raise RuntimeError(f"worker {self.rank}: stage {stage}'s stream ended at step "
                                   f"{self.state.step} of {end}")
            self.meter.waited(time.perf_counter() - waiting)
            phase = self.engine.module.loop.phase(self.state.step)
            generator = _generator(self.device, t.seed, self.rank, self.state.step, micro)
            # our count, not DeepSpeed's micro-step counter, which a resume does not realign
            boundary = micro + 1 == t.gradient_accumulation
            self.engine.set_gradient_accumulation_boundary(boundary)
            terms = self.engine(to_train_batch(batch, self.device), generator, phase)
            self.engine.backward(terms["total"])
            self.engine.step()
            self.meter.micro_step(terms)
            self.state.consumed += 1
            micro += 1
            if boundary:
                micro = 0
                self.state.step += 1
                self.meter.step(phase)
                if self.ema is not None:
                    self.ema.update(self.engine.module)
                self._report(stage, stages, stage_cfg)
                self._validate(stage_cfg)

    def _positioned(self, batches: Iterator[dict[str, Any]], stage: int
                    ) -> Iterator[dict[str, Any]]:
        """`batches` from this worker's next micro-batch on (`state.consumed`): a stream that
        starts earlier (a checkpoint newer than the one the stream was cut at) is read up to
        it; one that starts later would skip data, and stops the run."""
        t = self.cfg.train
        expected = stream_position(self.state.consumed, self.rank, self.world, t.batch_size)
        for batch in batches:
            first = int(batch[POSITION][0])
            if first < expected:
                continue
            if first > expected:
                raise RuntimeError(
                    f"worker {self.rank}: stage {stage + 1}'s stream starts at row {first}, "
                    f"after this checkpoint's row {expected} (step {self.state.step}): the "
                    f"stream was cut at a later checkpoint than the one restored")
            yield batch
            yield from batches
            return

    def _report(self, stage: int, stages: int, stage_cfg: Config) -> None:
        """4. Metrics every log_every steps; with a checkpoint every checkpoint_every steps
        and at the run's last step (`ray.train.report` is a barrier: every rank calls it
        equally often)."""
        t, state = self.cfg.train, self.state
        save = state.step % t.checkpoint_every == 0 or state.step in (t.steps, t.stop_at_step)
        if not (save or state.step % t.log_every == 0):
            return
        row = self.meter.report()
        lr = self.engine.get_lr()[0]
        metrics = row | {"step": state.step, "stage": stage, "lr": lr,
                         "resumed_from": self.resumed_from}
        if self.rank == 0:
            _say(progress_line(state.step, t.steps, stage, stages, stage_cfg, row, lr))
            self.tracker.log(metrics, state.step)
        if not save:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory(prefix="svimo-ckpt-") as directory:
            checkpoint.save(directory, self.engine, state, self.cfg, self.ema)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory),
                             checkpoint_dir_name=f"{CHECKPOINT_PREFIX}{state.step:08d}")

    def _validate(self, stage_cfg: Config) -> None:
        """Every train.validate_every steps and at the last: every rank samples the
        validation clips (ZeRO-3 gathers from all of them); rank 0 logs the row and pictures.
        Its time is no step's: the meter leaves it out."""
        t, step = self.cfg.train, self.state.step
        if self.validation is None or not (step % t.validate_every == 0
                                           or step == (t.stop_at_step or t.steps)):
            return
        started = time.perf_counter()
        row, pictures = self.validation(self.engine.module, self.vae, stage_cfg, self.rank)
        if self.rank == 0:
            _say(f"step {step}: validation (joint, {self.cfg.train.validate_steps} steps) video "
                 f"PSNR {row['video_psnr_db']:.2f} dB, MPJPE {row['mpjpe_mm']:.1f} mm")
            self.tracker.log({f"validation/{k}": v for k, v in row.items()}, step)
            self.tracker.log_images({f"validation/{k}": v for k, v in pictures.items()}, step)
        self.meter.exclude(time.perf_counter() - started)
