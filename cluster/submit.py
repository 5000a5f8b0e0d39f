"""Submit one of the jobs to a Ray cluster with the project's runtime env and storage root.

    python -m cluster.submit --address http://HEAD:8265 --root s3://my-bucket/svimo \\
        jobs/train.py --config configs/default.yaml --train.num_workers 16

is `ray job submit --working-dir . --runtime-env-json '{...}' -- python jobs/train.py ...`
with the excludes of `cluster.runtime.job_runtime_env` (and, asked for, this shell's AWS
keys: nodes with an instance role need none), and with `--root`
expanded into every job's paths (`cluster.runtime.storage_paths`; arguments given after the
script win). The project is uploaded as the job's working dir for a remote cluster; on a
cluster of this machine (a loopback address) the job runs in the project directory itself,
so relative paths mean what they mean here (`--upload` uploads anyway). It follows the job's
log until the job ends. Exit code: 0 when the job succeeded, 1 when it failed or was
stopped, 2 when it could not be submitted. Ctrl-C stops following, not the job
(`ray job stop <id>` stops it).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
from pathlib import Path
from urllib.parse import urlparse

from ray.job_submission import JobStatus, JobSubmissionClient

from cluster.runtime import PROJECT_ROOT, job_runtime_env, storage_paths
from hoi.storage import is_s3

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def entrypoint(script: str, args: list[str], root: str | None, python: str = "python",
               cwd: str | Path | None = None) -> str:
    """The job's shell command: `[cd <cwd> &&] python <script> <root's paths> <args>`."""
    paths = storage_paths(root) if root else {}
    words = [python, script, *[w for key, path in paths.items() for w in (f"--{key}", path)],
             *args]
    command = shlex.join(words)
    return command if cwd is None else f"cd {shlex.quote(str(cwd))} && {command}"


def is_local(address: str) -> bool:
    """Whether a dashboard address is on this machine."""
    return urlparse(address).hostname in LOOPBACK


def check_root(root: str | None, address: str) -> None:
    """A local root is one directory only for nodes on this machine: refuse it for a remote
    cluster, whose nodes would each write their own."""
    if root and not is_s3(root) and not is_local(address):
        raise ValueError(f"--root {root} is a local path, which the nodes of the cluster at "
                         f"{address} do not share; give an s3:// root (or shared storage)")


async def _follow(client: JobSubmissionClient, job_id: str) -> None:
    async for lines in client.tail_job_logs(job_id):
        print(lines, end="", flush=True)


def submit(address: str, script: str, args: list[str], root: str | None = None,
           env_vars: dict[str, str] | None = None, follow: bool = True,
           python: str = "python", upload: bool | None = None,
           forward_credentials: bool = False) -> tuple[str, JobStatus | None]:
    """Submit `python script args` (with the root's paths); returns the job id and, when
    following, its final status. `upload` None: only to a remote cluster."""
    check_root(root, address)
    if root and not is_s3(root):
        root = os.path.abspath(root)
    upload = not is_local(address) if upload is None else upload
    client = JobSubmissionClient(address)
    job_id = client.submit_job(
        entrypoint=entrypoint(script, args, root, python, None if upload else PROJECT_ROOT),
        runtime_env=job_runtime_env(upload, env_vars, forward_credentials))
    if not follow:
        return job_id, None
    asyncio.run(_follow(client, job_id))
    return job_id, client.get_job_status(job_id)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--address", required=True,
                        help="the cluster's dashboard, e.g. http://127.0.0.1:8265")
    parser.add_argument("--root", help="local dir or s3://bucket/prefix for every job's paths")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="environment variable of the job (repeatable)")
    parser.add_argument("--python", default="python", help="the nodes' Python (default python)")
    parser.add_argument("--upload", action="store_true",
                        help="upload the project as working dir even to a cluster of this "
                             "machine (always done for a remote one)")
    parser.add_argument("--forward-aws-credentials", action="store_true",
                        help="give the job this shell's AWS keys (only for nodes without an "
                             "instance role)")
    parser.add_argument("--no-wait", action="store_true", help="submit and return the job id")
    parser.add_argument("script", help="e.g. jobs/train.py")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="the job's own arguments")
    ns = parser.parse_args(argv)
    try:
        env = dict(item.split("=", 1) for item in ns.env)
    except ValueError:
        parser.error("--env takes NAME=VALUE")
    try:
        job_id, status = submit(ns.address, ns.script, ns.args, ns.root, env,
                                follow=not ns.no_wait, python=ns.python,
                                upload=True if ns.upload else None,
                                forward_credentials=ns.forward_aws_credentials)
    except (ValueError, RuntimeError, ConnectionError) as e:
        print(f"cluster.submit: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ncluster.submit: stopped following; the job runs on", file=sys.stderr)
        return 1
    print(f"job {job_id}: {status.value if status else 'submitted'}", file=sys.stderr)
    return 0 if status in (None, JobStatus.SUCCEEDED) else 1


if __name__ == "__main__":
    sys.exit(main())
