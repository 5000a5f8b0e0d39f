"""Experiment tracking from rank 0: every row the step line prints, as TensorBoard scalars
under the run's storage, and in MLflow when `train.mlflow_uri` names a tracking server.

    <train.storage_path>/<train.run_name>/tensorboard/events.out.tfevents.*

TensorBoard's event files are written where the run lives: directly on a local path, and on
s3:// from a local copy uploaded after every row (an event file is a few kB; TensorBoard
reads s3:// log directories itself). A resumed run (a restarted worker group, or the run
started again) opens a new event file that purges the steps after its checkpoint, so the
curves show what the run that went on trained. MLflow keeps one run per training run: the
run is tagged with the run's path and a resumed run logs on into it.

Tags, in both: `loss/<term>` (total, svimo, vid, ...), `perf/<name>` (samples_per_s,
tokens_per_s, data_wait, step_seconds, tflops, mfu, peak memory), `train/lr`, `train/stage`,
and with `train.validate_every` `validation/<metric>` (video_psnr_db, mpjpe_mm, ...); the
validation pictures (`validation/preview`, `validation/gallery`) go to TensorBoard only
(MLflow keeps pictures as artifacts, which need an artifact store of their own).
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from hoi.config import Config
from hoi.storage import is_s3, join, write_bytes

log = logging.getLogger(__name__)

TENSORBOARD_DIR = "tensorboard"
PERF = ("samples_per_s", "tokens_per_s", "data_wait", "step_seconds", "tflops", "mfu",
        "peak_host_gb", "peak_device_gb")
"""Rows of the meter that are not loss terms."""
NOT_LOGGED = ("step", "resumed_from")
RUN_TAG = "svimo.run"
"""MLflow tag holding the training run's path: a resumed run finds its MLflow run by it."""


def scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """A reported row -> {tag: value}: `perf/...`, `train/lr`, `train/stage`, `loss/...`;
    names with a group already (`validation/mpjpe_mm`) keep it."""
    out = {}
    for name, value in metrics.items():
        if name in NOT_LOGGED or not isinstance(value, (int, float)):
            continue
        group = ("" if "/" in name else "perf/" if name in PERF
                 else "train/" if name in ("lr", "stage") else "loss/")
        out[f"{group}{name}"] = float(value)
    return out


class Tracker:
    """Rank 0's experiment log; `log` a reported row at its step, `close` at the end."""

    def __init__(self, cfg: Config, start_step: int):
        """start_step: the step the run starts or resumes at (0 for a new run)."""
        t = cfg.train
        self.cfg, self.run = cfg, join(t.storage_path, t.run_name)
        self.tensorboard = self.mlflow = self.remote = None
        if t.tensorboard:
            from tensorboardX import SummaryWriter  # light, but only rank 0 needs it

            self.remote = join(self.run, TENSORBOARD_DIR) if is_s3(self.run) else None
            local = (tempfile.mkdtemp(prefix="svimo-tensorboard-") if self.remote
                     else join(self.run, TENSORBOARD_DIR))
            # purge_step: TensorBoard drops the earlier files' events after the checkpoint's
            # step (a run that died went on past it); the
            # suffix keeps a file of a quick restart (same second, same host) from replacing
            # the one before it
            self.tensorboard = SummaryWriter(local, purge_step=start_step + 1 if start_step else None,
                                             flush_secs=3600,
                                             filename_suffix=f".{start_step:08d}.{os.getpid()}")
        if t.mlflow_uri:
            self.mlflow = _mlflow_run(cfg, self.run)

    def log(self, metrics: dict[str, Any], step: int) -> None:
        values = scalars(metrics)
        if self.tensorboard is not None:
            for tag, value in values.items():
                self.tensorboard.add_scalar(tag, value, step)
            self.tensorboard.flush()
            self._upload()
        if self.mlflow is not None:
            from mlflow.entities import Metric

            client, run_id = self.mlflow
            now = int(time.time() * 1000)
            client.log_batch(run_id, metrics=[Metric(tag, value, now, step)
                                              for tag, value in values.items()])

    def log_images(self, images: dict[str, np.ndarray], step: int) -> None:
        """(H, W, 3) uint8 pictures, to TensorBoard (MLflow gets the metrics only: its
        artifacts need a store of their own)."""
        if self.tensorboard is None or not images:
            return
        for tag, image in images.items():
            self.tensorboard.add_image(tag, image, step, dataformats="HWC")
        self.tensorboard.flush()
        self._upload()

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
            self._upload()
        if self.mlflow is not None:
            client, run_id = self.mlflow
            client.set_terminated(run_id)

    def _upload(self) -> None:
        """The event file, whole, to the run's s3:// directory. A failed upload is a warning,
        not the end of the run: the next one carries everything again."""
        if self.remote is None:
            return
        for path in Path(self.tensorboard.logdir).iterdir():
            try:
                write_bytes(join(self.remote, path.name), path.read_bytes(), self.cfg.storage)
            except OSError as e:
                log.warning("TensorBoard: could not upload %s (%s); retried at the next row",
                            path.name, e)


def check_mlflow(uri: str) -> None:
    """Raises unless the MLflow tracking server (or store) at `uri` answers, within seconds
    (MLflow's own retries of an absent server take minutes)."""
    import mlflow

    quick = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
    saved = {name: os.environ.get(name) for name in quick}
    os.environ.update(quick)
    try:
        mlflow.MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name)
            else:
                os.environ[name] = value


def _mlflow_run(cfg: Config, run: str):
    """(client, run id) of the MLflow run tagged with `run`, created (with the run config as
    its parameters) when there is none yet."""
    import mlflow  # only rank 0 of a run with train.mlflow_uri needs it
    from mlflow.entities import Param

    t = cfg.train
    client = mlflow.MlflowClient(tracking_uri=t.mlflow_uri)
    experiment = client.get_experiment_by_name(t.mlflow_experiment)
    experiment_id = (experiment.experiment_id if experiment is not None
                     else client.create_experiment(t.mlflow_experiment))
    found = client.search_runs([experiment_id], filter_string=f"tags.`{RUN_TAG}` = '{run}'",
                               max_results=1)
    if found:
        run_id = found[0].info.run_id
        client.update_run(run_id, status="RUNNING")
        log.info("MLflow: logging on into run %s of %s", run_id, t.mlflow_uri)
        return client, run_id
    created = client.create_run(experiment_id, run_name=t.run_name, tags={RUN_TAG: run})
    params = [Param(key, str(value)[:6000])
              for key, value in _flat(cfg.to_dict()).items()]
    for i in range(0, len(params), 100):  # MLflow takes at most 100 parameters a batch
        client.log_batch(created.info.run_id, params=params[i:i + 100])
    log.info("MLflow: run %s of %s", created.info.run_id, t.mlflow_uri)
    return client, created.info.run_id


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out |= _flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out
