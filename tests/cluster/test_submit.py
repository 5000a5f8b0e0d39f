"""cluster.submit and cluster.runtime: what a submitted job gets (no cluster needed)."""

from __future__ import annotations

import shlex

import pytest

from cluster.runtime import PROJECT_ROOT, job_runtime_env, storage_paths
from cluster.submit import check_root, entrypoint
from hoi.config import load_config


def test_one_root_gives_every_job_its_paths_and_the_jobs_accept_them():
    paths = storage_paths("s3://bucket/svimo/")
    assert paths["prepare.output"] == paths["train.shards"] == "s3://bucket/svimo/shards"
    assert paths["train.storage_path"] == "s3://bucket/svimo/runs"
    overrides = [w for key, path in paths.items() for w in (f"--{key}", path)]
    cfg = load_config(overrides=overrides)  # every key is a real config field
    assert cfg.sample.output == "s3://bucket/svimo/samples"
    assert cfg.serve.results == "s3://bucket/svimo/serve"
    assert cfg.model_path(None) == "s3://bucket/svimo/runs/svimo"  # what sample/serve load


def test_the_entrypoint_puts_the_root_first_so_the_jobs_own_arguments_win():
    words = shlex.split(entrypoint("jobs/train.py", ["--train.shards", "s3://other/shards",
                                                     "--note", "two words"], "s3://b/r"))
    assert words[:2] == ["python", "jobs/train.py"]
    assert words.index("s3://b/r/shards") < words.index("s3://other/shards")
    assert words[-1] == "two words"
    cfg = load_config(overrides=words[2:-2])
    assert cfg.train.shards == "s3://other/shards" and cfg.prepare.output == "s3://b/r/shards"


def test_on_this_machine_the_job_runs_in_the_project_directory():
    command = entrypoint("jobs/prepare.py", [], None, cwd="/my project")
    assert command == "cd '/my project' && python jobs/prepare.py"


def test_a_local_root_is_refused_for_a_remote_cluster():
    check_root("/data/svimo", "http://127.0.0.1:8265")
    check_root("s3://b/r", "http://10.0.0.5:8265")
    with pytest.raises(ValueError, match="do not share"):
        check_root("/data/svimo", "http://10.0.0.5:8265")


def test_the_runtime_env_uploads_the_project_without_environments_or_outputs(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    assert "working_dir" not in job_runtime_env(upload=False)
    env = job_runtime_env(upload=True, env_vars={"OMP_NUM_THREADS": "4"})
    assert env["working_dir"] == str(PROJECT_ROOT) and (PROJECT_ROOT / "hoi").is_dir()
    assert {".venv", "outputs", ".git"} <= set(env["excludes"])
    # no keys travel unless asked for: nodes use their instance role
    assert not any(name.startswith("AWS_") for name in env["env_vars"])
    forwarded = job_runtime_env(upload=True, forward_credentials=True)["env_vars"]
    assert forwarded["AWS_ACCESS_KEY_ID"] == "key" and "AWS_SESSION_TOKEN" not in forwarded
    assert env["env_vars"]["HF_HUB_OFFLINE"] == "1" and env["env_vars"]["OMP_NUM_THREADS"] == "4"
