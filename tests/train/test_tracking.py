"""Experiment tracking: TensorBoard event files (local and on moto S3) that TensorBoard's
reading rules turn into the curves of the run that went on, and MLflow runs (a real sqlite
store) that a resumed run logs on into."""

from __future__ import annotations

import struct
from collections import defaultdict
from pathlib import Path

import mlflow
from tensorboardX.proto import event_pb2

from hoi.config import Config, load_config
from hoi.storage import list_files, read_bytes
from hoi.train.tracking import RUN_TAG, TENSORBOARD_DIR, Tracker, scalars

ROW = {"total": 0.5, "svimo": 0.4, "vid": 0.1, "samples_per_s": 2.0, "tokens_per_s": 1000.0,
       "data_wait": 0.25, "step_seconds": 1.5, "tflops": 0.01, "peak_host_gb": 3.0,
       "step": 10, "stage": 0, "lr": 1e-3, "resumed_from": 0}


def read_events(files: list[bytes]) -> dict[str, dict[int, float]]:
    """{tag: {step: value}} as TensorBoard reads event files in order: a session START at
    step s (what `purge_step` writes) drops the earlier events from step s on. An image's
    value is its height."""
    curves: dict[str, dict[int, float]] = defaultdict(dict)
    for data in files:
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
            pos += 12 + length + 4  # length, its CRC, the record, its CRC
            if event.HasField("session_log") and event.session_log.status == \
                    event_pb2.SessionLog.START:
                for curve in curves.values():
                    for step in [s for s in curve if s >= event.step]:
                        del curve[step]
            for value in event.summary.value:  # an image by its height
                curves[value.tag][event.step] = (value.image.height if value.HasField("image")
                                                 else value.simple_value)
    return dict(curves)


def _cfg(storage_path: str, *overrides: str) -> Config:
    return load_config(flavour="svimo-tiny", overrides=[
        "--train.storage_path", storage_path, "--train.run_name", "run", *overrides])


def test_every_row_of_the_step_line_becomes_a_tag():
    assert scalars(ROW) == {
        "loss/total": 0.5, "loss/svimo": 0.4, "loss/vid": 0.1, "perf/samples_per_s": 2.0,
        "perf/tokens_per_s": 1000.0, "perf/data_wait": 0.25, "perf/step_seconds": 1.5,
        "perf/tflops": 0.01, "perf/peak_host_gb": 3.0, "train/stage": 0.0, "train/lr": 1e-3}


def _run(cfg: Config, start: int, steps: range, offset: float = 0.0) -> None:
    tracker = Tracker(cfg, start)
    for step in steps:
        tracker.log(ROW | {"total": step + offset}, step)
    tracker.close()


def test_a_resumed_run_s_curve_is_the_run_that_went_on(tmp_path: Path):
    cfg = _cfg(str(tmp_path / "runs"), "--train.log_every", "1")
    _run(cfg, 0, range(1, 7))        # logged up to step 6, then died; checkpoint at step 4
    _run(cfg, 4, range(5, 9), 100)   # resumed from step 4: steps 5-8 again, other values
    files = sorted((tmp_path / "runs" / "run" / TENSORBOARD_DIR).iterdir())
    assert len(files) == 2
    curves = read_events([f.read_bytes() for f in files])
    assert curves["loss/total"] == {s: s + 100.0 * (s > 4) for s in range(1, 9)}
    assert set(curves) == set(scalars(ROW))


def test_event_files_reach_s3(s3, tmp_path: Path):
    root = f"s3://{s3.bucket}/tracking"
    cfg = _cfg(root, "--storage.endpoint_url", s3.endpoint_url)
    tracker = Tracker(cfg, 0)
    tracker.log(ROW, 10)
    names = list_files(f"{root}/run/{TENSORBOARD_DIR}", s3.storage)
    assert len(names) == 1  # uploaded at each row, not only at the end
    tracker.log(ROW | {"total": 0.25}, 20)
    tracker.close()
    data = read_bytes(f"{root}/run/{TENSORBOARD_DIR}/{names[0]}", s3.storage)
    assert read_events([data])["loss/total"] == {10: 0.5, 20: 0.25}


def test_mlflow_gets_the_same_rows_and_a_resumed_run_logs_on_into_its_run(tmp_path: Path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    cfg = _cfg(str(tmp_path / "runs"), "--train.mlflow_uri", uri, "--train.tensorboard",
               "false")
    _run(cfg, 0, range(1, 3))
    _run(cfg, 2, range(3, 5))
    client = mlflow.MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("svimo").experiment_id])
    assert len(runs) == 1 and runs[0].data.tags[RUN_TAG] == str(tmp_path / "runs" / "run")
    history = client.get_metric_history(runs[0].info.run_id, "loss/total")
    assert sorted((m.step, m.value) for m in history) == [(s, float(s)) for s in range(1, 5)]
    assert set(runs[0].data.metrics) == set(scalars(ROW))
    assert runs[0].data.params["train.run_name"] == "run" and runs[0].info.status == "FINISHED"
    assert not (tmp_path / "runs" / "run" / TENSORBOARD_DIR).exists()


def test_no_tracking_writes_nothing(tmp_path: Path):
    _run(_cfg(str(tmp_path / "runs"), "--train.tensorboard", "false"), 0, range(1, 3))
    assert not (tmp_path / "runs").exists()
