"""The distributed training job on the session's local Ray (2 CPUs): Ray Train workers
running DeepSpeed on gloo, Ray Data streaming the shards, checkpoints, resume, a killed worker,
S3 through moto, and the errors raised before any worker starts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

from hoi import artifacts
from hoi.config import Config, StorageConfig, load_config
from hoi.data.prepare import render_synthetic
from hoi.data.shards import collate_clips
from hoi.data.synthetic import generate_clip
from hoi.model.svimo import SViMo
from hoi.model.vid import VID
from hoi.render.motion_video import render_motion_video
from hoi.storage import list_files, read_bytes, read_text, write_text
from hoi.train.data import resize_clips, resume_start
from hoi.train.engine import deepspeed_config, lr_factor
from hoi.train.job import TrainError, exported_model, fit, preflight
from hoi.train.latents import encode_pass
from hoi.train.tracking import TENSORBOARD_DIR, scalars
from tests.train.inputs import write_train_inputs, write_val_clips
from tests.train.test_tracking import read_events

LOCAL = StorageConfig()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    return write_train_inputs(str(tmp_path_factory.mktemp("train-inputs")), LOCAL)


# Two workers of 0.5 CPU, one encoder of 0.5 CPU and reads of 0.25 CPU fit the session's
# 2-CPU Ray (ENVIRONMENT.md: whole-CPU workers would starve the data pipeline).
RUN = ["--train.num_workers", "2", "--train.cpus_per_worker", "0.5", "--train.batch_size", "2",
       "--train.learning_rate", "1e-3", "--train.warmup_steps", "1", "--train.log_every", "1"]


def _cfg(*overrides: str) -> Config:
    return load_config(overrides=list(overrides))


# ---------------------------------------------------------------------------------------------
# Pieces
# ---------------------------------------------------------------------------------------------


def test_the_stream_module_loads_neither_diffusers_nor_transformers():
    """The stream's coordinator and its read tasks unpickle hoi.train.data in processes of
    their own: only the encoder actor needs the codec's libraries, whose import costs each
    of them seconds."""
    code = ("import sys, hoi.train.data; "
            "print(sorted({'diffusers', 'transformers'} & set(sys.modules)))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, cwd=Path(__file__).parents[2]).stdout.strip()
    assert loaded == "[]"


def test_deepspeed_config_comes_from_the_run_config():
    cfg = _cfg("--train.batch_size", "3", "--train.gradient_accumulation", "2",
               "--train.gradient_clipping", "0.5")
    cpu = deepspeed_config(cfg, 4, torch.device("cpu"))
    assert cpu["train_batch_size"] == 24 and cpu["train_micro_batch_size_per_gpu"] == 3
    assert cpu["gradient_accumulation_steps"] == 2 and cpu["gradient_clipping"] == 0.5
    assert cpu["zero_optimization"]["stage"] == 2 and not cpu["bf16"]["enabled"]
    gpu = deepspeed_config(cfg, 4, torch.device("cuda"))
    assert gpu["zero_optimization"]["stage"] == 3 and gpu["bf16"]["enabled"]
    # EMA needs whole weights on each rank
    with pytest.raises(Exception, match="ema_decay"):
        deepspeed_config(_cfg("--train.ema_decay", "0.99"), 1, torch.device("cuda"))


def test_learning_rate_warms_up_then_decays_to_a_tenth():
    factors = [lr_factor(s, 100, 10) for s in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:], strict=False))
    assert lr_factor(100, 100, 10) == pytest.approx(0.1)


def test_stages_must_sum_to_the_steps_and_fit_the_patches():
    cfg = _cfg("--train.steps", "5", "--train.stages", "[[16, 32, 2], [32, 48, 3]]")
    assert cfg.train_stages() == [(16, 32, 2), (32, 48, 3)]
    assert cfg.at_size(16, 32).latent_shape == (3, 2, 4)
    with pytest.raises(Exception, match="sum to 4"):
        _cfg("--train.steps", "5", "--train.stages", "[[16, 32, 2], [32, 48, 2]]")
    with pytest.raises(Exception, match="not a multiple"):
        _cfg("--train.steps", "2", "--train.stages", "[[24, 32, 2]]")


def test_resizing_a_clip_redraws_its_motion_video_at_the_new_size():
    data = load_config(flavour="svimo-tiny").data
    clip, look = generate_clip(3, data)
    render_synthetic([clip], [look], data)
    batch = collate_clips([clip])
    small = resize_clips(batch, 16, 24)
    assert small["video"].shape == (1, 9, 16, 24, 3) and small["video"].dtype == torch.uint8
    # intrinsics scaled with pixel centres kept: the principal point stays centred
    assert small["K"][0, 0, 0] == pytest.approx(batch["K"][0, 0, 0] / 2)
    assert small["K"][0, 0, 2] == pytest.approx((24 - 1) / 2, abs=1e-4)
    redrawn = render_motion_video(batch["joints"], batch["points"], small["K"], batch["R"],
                                  batch["T"], 16, 24)
    assert torch.equal(small["motion_video"], redrawn) and redrawn.float().mean() > 0
    # the RGB keeps its colours: the mean image barely moves
    mean_before = batch["video"].float().mean((1, 2, 3))
    assert torch.allclose(small["video"].float().mean((1, 2, 3)), mean_before, atol=4)


def test_a_checkpoint_with_a_missing_file_does_not_verify(tmp_path):
    (tmp_path / "deepspeed").mkdir()
    (tmp_path / "deepspeed" / "a.pt").write_bytes(b"x")
    with pytest.raises(artifacts.CheckpointError, match="no train_state.json"):
        artifacts.verify(tmp_path)
    state = {"step": 3, "consumed": 1, "world_size": 2,
             "files": ["deepspeed/a.pt", "deepspeed/b.pt"]}
    (tmp_path / "train_state.json").write_text(json.dumps(state))
    with pytest.raises(artifacts.CheckpointError, match="1 listed files are missing"):
        artifacts.verify(tmp_path)
    (tmp_path / "deepspeed" / "b.pt").write_bytes(b"y")
    assert artifacts.verify(tmp_path) == artifacts.TrainState(step=3, consumed=1,
                                                                 world_size=2)


# ---------------------------------------------------------------------------------------------
# Errors before any worker starts
# ---------------------------------------------------------------------------------------------


def test_bad_inputs_fail_before_any_worker_starts(inputs, tmp_path, ray_local):
    with pytest.raises(TrainError, match="train.shards: no directory"):
        preflight(_cfg(*inputs, "--train.shards", str(tmp_path / "nowhere")))
    corrupt = tmp_path / "corrupt"
    (corrupt / "train").mkdir(parents=True)
    (corrupt / "train" / "shard-00000.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(TrainError, match="corrupt"):
        preflight(_cfg(*inputs, "--train.shards", str(corrupt)))
    with pytest.raises(TrainError, match="need at least 10"):
        preflight(_cfg(*inputs, "--train.num_workers", "5", "--train.batch_size", "2"))
    with pytest.raises(TrainError, match="encoders"):
        preflight(_cfg(*inputs, "--encoders.vae", str(tmp_path / "no-vae")))
    # the shipped svimo-small foundation does not fit the tiny flavour: named, with the way out
    foundation = Path(__file__).resolve().parents[2] / "assets" / "svimo-small"
    with pytest.raises(TrainError, match=r"does not fit the config.*init_from null"):
        preflight(_cfg(*inputs, "--train.init_from", str(foundation)))
    started = time.monotonic()
    with pytest.raises(TrainError, match=r"train.mlflow_uri 'http://127.0.0.1:9'"):
        preflight(_cfg(*inputs, "--train.mlflow_uri", "http://127.0.0.1:9"))
    assert time.monotonic() - started < 60  # not MLflow's minutes of retries
    with pytest.raises(TrainError, match="reserves 8.75 CPU "):
        fit(_cfg(*inputs, "--train.num_workers", "4", "--train.cpus_per_worker", "2"))


# ---------------------------------------------------------------------------------------------
# Training runs
# ---------------------------------------------------------------------------------------------


LOSS_TERMS = ("total", "svimo", "svimo_video", "svimo_motion", "vid")


def _losses(result) -> dict[int, dict[str, float]]:
    """Loss terms by step, from the run's checkpoints (one per step here: their metrics are
    what Ray Train keeps of a run's reports)."""
    return {m["step"]: {k: m[k] for k in LOSS_TERMS if k in m}
            for _, m in result.best_checkpoints}


def _weights(model: str, storage: StorageConfig) -> dict[str, torch.Tensor]:
    return {**SViMo.from_pretrained(f"{model}/svimo", storage).state_dict(),
            **VID.from_pretrained(f"{model}/vid", storage).state_dict()}


def test_a_run_on_latents_stopped_at_the_boundary_and_mid_stage_resumes_as_if_never_stopped(
        s3, ray_local, tmp_path):
    """On S3 (shards, encoders, latents, runs): two workers, ZeRO-2, two micro-batches per
    step, EMA, a warm-up step that trains VID and SViMo's video stream, then two resolution
    stages of two steps. One run encodes online and goes straight through. The other reads
    the encode pass's precomputed latents, and is stopped at the stage boundary
    (train.stop_at_step: its checkpoint is stage 1's last step), then after the first step of
    stage 2, and run again, its stream cut at the checkpoint's row. Before the last run Ray
    Train's registry is set back to the boundary, as a worker group that died after uploading
    step 3's checkpoint but before the controller registered it leaves it: the run resumes
    from the storage's latest complete checkpoint all the same, where its stream was cut.
    Same seed, so the same noise, data order (kept by the ingest config) and weights: every
    step's losses and the final (EMA) weights agree to the precision of the latents (the
    online encoder's to 1e-5). They could differ beyond it only if the resume skipped other
    batches, drew other noise or restored another optimizer, LR or EMA state, or the latents
    were not what the online stream encodes. The stopped run's TensorBoard files (on S3) and
    its MLflow run (a sqlite store) hold every step once, as the run that went on logged
    it."""
    root = s3.fresh_root()
    write_val_clips(f"{root}/shards", s3.storage)
    run = [*write_train_inputs(root, s3.storage), *RUN, "--storage.endpoint_url",
           s3.endpoint_url, "--prepare.output", f"{root}/shards",
           "--train.storage_path", f"{root}/runs", "--train.steps", "4",
           "--train.stages", "[[16, 32, 2], [32, 48, 2]]", "--train.checkpoint_every", "1",
           "--train.keep_checkpoints", "4", "--train.ema_decay", "0.5",
           "--train.gradient_accumulation", "2", "--loop.vid_warmup_steps", "1",
           "--loop.svimo_warmup", "true"]
    straight_cfg = _cfg(*run, "--train.run_name", "straight")
    straight = fit(straight_cfg)
    for key in ("svimo", "vid", "samples_per_s", "tokens_per_s", "data_wait", "tflops"):
        assert np.isfinite(straight.metrics[key]), key
    assert 0 <= straight.metrics["data_wait"] < 1
    # the paused run reads latents, and also tracks and validates: none may change what it
    # trains
    encode_pass(_cfg(*run), progress=False)
    checked = preflight(_cfg(*run))
    assert checked.latents and "precomputed latents" in checked.summary
    mlflow_uri = f"sqlite:///{tmp_path}/mlflow.db"
    run += ["--train.run_name", "paused", "--train.mlflow_uri", mlflow_uri,
            "--train.validate_every", "2", "--train.validate_steps", "2"]
    at_boundary = fit(_cfg(*run, "--train.stop_at_step", "2"))
    assert at_boundary.metrics["step"] == 2 and at_boundary.metrics["stage"] == 0
    boundary = artifacts.verify(f"s3://{at_boundary.checkpoint.path}", s3.storage)
    assert (boundary.step, boundary.stage, boundary.consumed) == (2, 0, 4)
    registry = f"{root}/runs/paused/checkpoint_manager_snapshot.json"
    registered_at_boundary = read_text(registry, s3.storage)
    assert "checkpoint-00000002" in registered_at_boundary
    stopped_cfg = _cfg(*run, "--train.stop_at_step", "3")
    stopped = fit(stopped_cfg)
    assert stopped.metrics["resumed_from"] == 2 and stopped.metrics["step"] == 3
    # stage 2 (32 x 48) resumes at row 2 micro-batches x 2 clips x 2 workers
    assert resume_start(stopped_cfg, 1) == 8 and resume_start(stopped_cfg, 0) == 0
    write_text(registry, registered_at_boundary, s3.storage)
    resumed_cfg = _cfg(*run)
    resumed = fit(resumed_cfg)
    assert resumed.metrics["resumed_from"] == 3 and resumed.metrics["step"] == 4
    end = artifacts.verify(f"s3://{resumed.checkpoint.path}", s3.storage)
    assert (end.step, end.stage, end.consumed) == (4, 1, 4)
    expected, got = _losses(straight), _losses(resumed)
    assert sorted(expected) == [1, 2, 3, 4] and sorted(got) == [1, 2, 4]  # 3: not registered
    got |= _losses(stopped)
    for step in expected:
        assert got[step] == pytest.approx(expected[step], rel=1e-4, abs=1e-6), step
    # tracking: three event files (one per invocation) and one MLflow run, each step's row once
    events = f"{root}/runs/paused/{TENSORBOARD_DIR}"
    names = list_files(events, s3.storage)
    curves = read_events([read_bytes(f"{events}/{name}", s3.storage) for name in sorted(names)])
    assert len(names) == 3 and set(scalars(resumed.metrics)) <= set(curves)
    assert curves["loss/total"] == pytest.approx(
        {step: terms["total"] for step, terms in got.items()}, rel=1e-6)
    client = mlflow.MlflowClient(tracking_uri=mlflow_uri)
    (tracked,) = client.search_runs([client.get_experiment_by_name("svimo").experiment_id])
    assert sorted(m.step for m in client.get_metric_history(tracked.info.run_id, "loss/total")) \
        == [1, 2, 3, 4]
    # validation every 2 steps and where a run stops: steps 2 (stage 1, 16 x 32), 3 and 4
    # (stage 2, 32 x 48), metrics and pictures
    for tag in ("validation/video_psnr_db", "validation/mpjpe_mm"):
        assert sorted(curves[tag]) == [2, 3, 4] and all(map(np.isfinite, curves[tag].values()))
    assert curves["validation/gallery"] == {2: 2 * 15 * 16, 3: 2 * 8 * 32,
                                            4: 2 * 8 * 32}  # upscaled
    assert sorted(m.step for m in client.get_metric_history(tracked.info.run_id,
                                                            "validation/mpjpe_mm")) == [2, 3, 4]
    # the exported (EMA) weights, on S3, and what the export names
    model = exported_model(resumed_cfg, resumed)
    assert model.startswith("s3://") and model.endswith("checkpoint-00000004/model")
    pipeline = json.loads(read_text(f"{model}/pipeline.json", s3.storage))
    assert pipeline["step"] == 4 and pipeline["encoders"]["vae"].endswith("codec/vae")
    reference = _weights(exported_model(straight_cfg, straight), s3.storage)
    weights = _weights(model, s3.storage)
    assert reference.keys() == weights.keys()
    for name, value in reference.items():
        torch.testing.assert_close(weights[name], value, rtol=1e-4, atol=1e-5, msg=name)


def _train_worker_pids() -> list[int]:
    """PIDs of Ray Train worker processes (Ray names them `ray::RayTrainWorker...`)."""
    pids = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if f.read().startswith(b"ray::RayTrainWorker"):
                    pids.append(int(entry))
        except (OSError, ValueError):
            continue
    return pids


def _kill_a_worker_after(run: Path, name: str, killed: dict) -> None:
    """Wait until Ray Train has registered checkpoint `name` of the run directory `run` (its
    snapshot names it), then SIGKILL one train worker process."""
    snapshot = run / "checkpoint_manager_snapshot.json"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if snapshot.exists() and name in snapshot.read_text():
            pids = _train_worker_pids()
            if pids:
                killed["pid"] = max(pids)
                os.kill(killed["pid"], signal.SIGKILL)
            return
        time.sleep(0.2)


def test_a_killed_worker_is_replaced_and_the_run_resumes_from_its_checkpoint(
        inputs, tmp_path, ray_local):
    cfg = _cfg(*inputs, *RUN, "--train.storage_path", str(tmp_path / "runs"), "--train.run_name",
               "killed", "--train.steps", "8", "--train.checkpoint_every", "3",
               "--train.zero_stage", "3", "--train.max_failures", "1",
               "--loop.vid_warmup_steps", "1", "--loop.svimo_warmup", "true")
    killed: dict = {}
    watcher = threading.Thread(target=_kill_a_worker_after,
                               args=(tmp_path / "runs" / "killed", "checkpoint-00000003", killed))
    watcher.start()
    result = fit(cfg)
    watcher.join()
    assert "pid" in killed, "no train worker was found to kill"
    # finished every step, restarting from a checkpoint taken after the kill's trigger
    assert result.metrics["step"] == 8 and result.metrics["resumed_from"] in (3, 6)
    state = artifacts.verify(Path(result.checkpoint.path))
    assert state.step == 8 and state.world_size == 2
    kept = {p.parent.name for p in (tmp_path / "runs" / "killed").glob(
        f"*/{artifacts.STATE_NAME}")}
    assert kept == {"checkpoint-00000006", "checkpoint-00000008"}  # keep_checkpoints 2
    # ZeRO-3's partitions were gathered into whole inference weights
    svimo = SViMo.from_pretrained(str(Path(exported_model(cfg, result)) / "svimo"))
    assert all(p.numel() > 0 for p in svimo.parameters())
