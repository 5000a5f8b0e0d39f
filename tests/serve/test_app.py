"""The svimo app over HTTP: the whole flow, bad input, overload, many clients, autoscaling."""

from __future__ import annotations

import io
import json
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from ray import serve

from serve.broker import LocalRedis
from tests.serve.conftest import (
    DOWNSCALE_DELAY_S,
    LEASE_S,
    MAX_IMAGE_BYTES,
    MAX_QUEUED,
    MAX_REPLICAS,
    MAX_VIDEO_BYTES,
)


def png(width: int = 96, height: int = 64, seed: int = 0) -> bytes:
    rgb = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def submit(url: str, image: bytes | None = None, **fields) -> requests.Response:
    data = {"prompt": "stir the bowl with the spoon", **fields}
    return requests.post(f"{url}/v1/generations", data=data,
                         files={"image": ("ref.png", image or png(), "image/png")}, timeout=30)


def wait_done(url: str, job_id: str, timeout_s: float = 120,
              headers: dict[str, str] | None = None) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = requests.get(f"{url}/v1/generations/{job_id}", timeout=10,
                              headers=headers).json()
        if status["status"] in ("done", "failed"):
            return status
        time.sleep(0.2)
    raise AssertionError(f"{job_id} not finished in {timeout_s} s: {status}")


def test_whole_flow(svimo_url: str) -> None:
    config = requests.get(f"{svimo_url}/v1/config", timeout=10).json()
    r = submit(svimo_url, num_steps=3, seed=7)
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["status"] == "queued" and job["position"] >= 0
    status = wait_done(svimo_url, job["id"])
    assert status["status"] == "done", status
    assert status["step"] == status["num_steps"] == 3
    names = set(status["files"])
    assert {"video.mp4", "motion_video.mp4", "preview.mp4", "preview.png", "motion.json",
            "motion.npz"} <= names
    video = requests.get(svimo_url + status["files"]["video.mp4"], timeout=10)
    assert video.headers["content-type"] == "video/mp4" and video.content[4:8] == b"ftyp"
    motion = requests.get(svimo_url + status["files"]["motion.json"], timeout=10).json()
    assert np.asarray(motion["joints"]).shape == (config["num_frames"], 42, 3)
    assert np.asarray(motion["points"]).shape == (config["num_frames"], 298, 3)
    assert len(motion["bones"]) == 40
    health = requests.get(f"{svimo_url}/healthz", timeout=10).json()
    assert health["status"] == "ok"


def read_events(response: requests.Response) -> list[tuple[str, dict]]:
    """(name, data) of each event of a text/event-stream response, comments left out."""
    events, name, data = [], "message", []
    for line in response.iter_lines(decode_unicode=True):
        if line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
        elif line == "" and data:
            events.append((name, json.loads("\n".join(data))))
            name, data = "message", []
    return events


def test_events_stream_the_position_and_steps_then_the_files(svimo_url: str) -> None:
    drain(svimo_url)
    job = submit(svimo_url, num_steps=8).json()["id"]
    with requests.get(f"{svimo_url}/v1/generations/{job}/events", stream=True,
                      timeout=120) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = read_events(r)
    assert {name for name, _ in events} == {"status"}, events
    answers = [data for _, data in events]
    assert answers[-1]["status"] == "done" and "video.mp4" in answers[-1]["files"], answers
    assert answers[-1] == requests.get(f"{svimo_url}/v1/generations/{job}", timeout=10).json()
    assert all(a != b for a, b in zip(answers, answers[1:], strict=False))  # changes only
    steps = [a["step"] for a in answers if a["status"] == "running"]
    assert steps == sorted(steps) and len(set(steps)) >= 2, answers
    missing = requests.get(f"{svimo_url}/v1/generations/{'0' * 32}/events", timeout=10)
    assert missing.status_code == 404


def flat(width: int, height: int, fmt: str) -> bytes:
    """A one-colour image: tiny as a file, whatever its pixel count."""
    buf = io.BytesIO()
    Image.new("RGB", (width, height), "red").save(buf, format=fmt)
    return buf.getvalue()


BAD_SUBMISSIONS = [
    # (what, files, form fields, expected status, words the message must hold)
    ("text as image", {"image": ("a.png", b"hello", "image/png")}, {}, 415, "PNG, JPEG"),
    ("truncated PNG", {"image": ("a.png", png()[:200], "image/png")}, {}, 422, "decoded"),
    ("GIF", {"image": ("a.gif", flat(96, 64, "GIF"), "image/gif")}, {}, 415, "GIF"),
    ("too many pixels", {"image": ("a.png", flat(2100, 2000, "PNG"), "image/png")}, {}, 413, "pixels"),
    ("image too large", {"image": ("a.png", bytes(MAX_IMAGE_BYTES + 10), "image/png")}, {},
     413, "the image has"),
    ("body too large", {"image": ("a.png", bytes(MAX_IMAGE_BYTES + MAX_VIDEO_BYTES + 100_000),
                                  "image/png")}, {}, 413, "the request has"),
    ("no image", {}, {}, 422, "image"),
    ("image as a field", {}, {"image": "x"}, 422, "image"),
    ("empty prompt", None, {"prompt": " "}, 422, "prompt is empty"),
    ("long prompt", None, {"prompt": "stir " * 50}, 422, "T5 tokens"),
    ("zero steps", None, {"num_steps": "0"}, 422, "num_steps"),
    ("too many steps", None, {"num_steps": "9"}, 422, "[1, 8]"),
    ("steps not a number", None, {"num_steps": "many"}, 422, "num_steps"),
    ("negative seed", None, {"seed": "-1"}, 422, "seed"),
    ("guidance NaN", None, {"guidance": "nan"}, 422, "guidance"),
    ("video_to_motion without a video", None, {"mode": "video_to_motion"}, 422,
     "needs a video"),
    ("motion_to_video without a motion", None, {"mode": "motion_to_video"}, 422,
     "needs a motion"),
    ("a motion in joint mode", {"image": ("a.png", png(), "image/png"),
                                "motion": ("m.npz", b"PK", "application/octet-stream")}, {},
     422, "takes no ['motion']"),
    ("intrinsics in joint mode", None, {"K": "[[1, 0, 0], [0, 1, 0], [0, 0, 1]]"}, 422,
     "takes no ['K']"),
    ("an unknown mode", None, {"mode": "dance"}, 422, "is not one of"),
    ("unknown field", None, {"steps": "3"}, 422, "unknown field"),
]


def test_bad_submissions_get_4xx_saying_what_to_fix(svimo_url: str) -> None:
    for what, files, fields, code, words in BAD_SUBMISSIONS:
        data = {"prompt": "stir the bowl with the spoon", **fields}
        if files is None:
            files = {"image": ("ref.png", png(), "image/png")}
        r = requests.post(f"{svimo_url}/v1/generations", data=data, files=files or None,
                          timeout=30)
        assert r.status_code == code, (what, r.status_code, r.text)
        assert words in r.text, (what, r.text)
    r = requests.post(f"{svimo_url}/v1/generations", json={"prompt": "x"}, timeout=10)
    assert r.status_code == 422
    for path in ("/v1/generations/nope", "/v1/generations/" + "0" * 32,
                 "/v1/generations/" + "0" * 32 + "/files/video.mp4"):
        assert requests.get(svimo_url + path, timeout=10).status_code == 404, path


def test_video_only_mode_gives_a_video_without_motion(svimo_url: str) -> None:
    r = submit(svimo_url, mode="video_only", num_steps=2)
    assert r.status_code == 202, r.text
    status = wait_done(svimo_url, r.json()["id"])
    assert status["status"] == "done"
    assert "video.mp4" in status["files"] and "motion.json" not in status["files"]
    missing = requests.get(f"{svimo_url}/v1/generations/{r.json()['id']}/files/motion.json",
                           timeout=10)
    assert missing.status_code == 404


# Anything a client might send: the right fields with wrong values, unknown fields, no file,
# wrong files. Valid submissions may be among them and are queued like any other.
_text = st.text(max_size=40)
_field_values = {
    "prompt": st.one_of(_text, st.just("stir the bowl with the spoon")),
    "num_steps": st.one_of(_text, st.integers(-10, 20).map(str)),
    "seed": st.one_of(_text, st.integers(-2**70, 2**70).map(str)),
    "guidance": st.one_of(_text, st.floats(allow_nan=True).map(str)),
    "mode": st.one_of(_text, st.sampled_from(["joint", "video_only", "video_to_motion"])),
}
_fields = st.fixed_dictionaries({}, optional={**_field_values, "other": _text})
_image = st.one_of(st.none(), st.binary(max_size=300),
                   st.builds(lambda cut: png()[:cut], st.integers(0, 400)),
                   st.just(png()), st.just(flat(8, 8, "JPEG")))


@settings(max_examples=60, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fields=_fields, image=_image, path=st.text(max_size=30))
def test_fuzzed_requests_never_get_a_5xx(svimo_url: str, fields: dict, image: bytes | None,
                                         path: str) -> None:
    files = None if image is None else {"image": ("x", image, "application/octet-stream")}
    r = requests.post(f"{svimo_url}/v1/generations", data=fields, files=files, timeout=30)
    assert r.status_code < 500, (fields, r.status_code, r.text)
    assert r.status_code in (202, 400, 411, 413, 415, 422, 429), r.status_code
    quoted = urllib.parse.quote(path, safe="")
    for url in (f"{svimo_url}/v1/generations/{quoted}",
                f"{svimo_url}/v1/generations/{'a' * 32}/files/{quoted}"):
        assert requests.get(url, timeout=10).status_code < 500, url


def test_openapi_schema_documents_the_api(svimo_url: str) -> None:
    schema = requests.get(f"{svimo_url}/openapi.json", timeout=10).json()
    assert {"/v1/generations", "/v1/generations/{job_id}", "/healthz",
            "/v1/config"} <= set(schema["paths"])
    assert requests.get(f"{svimo_url}/docs", timeout=10).status_code == 200


def sampler_replicas() -> int:
    app = serve.status().applications["default"]
    return app.deployments["SamplingReplica"].replica_states.get("RUNNING", 0)


def drain(url: str, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        health = requests.get(f"{url}/healthz", timeout=10).json()
        if health["queued"] == health["running"] == 0:
            return
        time.sleep(0.5)
    raise AssertionError(f"the queue did not drain: {health}")


BURST = 50
"""Submissions of the burst test: 20, then 30 more while those run."""


def test_concurrent_submissions_complete_scale_out_and_overflow_is_refused(svimo_url: str
                                                                          ) -> None:
    drain(svimo_url)  # the fuzz may have queued work
    with ThreadPoolExecutor(20) as pool:
        first = list(pool.map(lambda i: submit(svimo_url, png(seed=i), seed=i, num_steps=8),
                              range(20)))
        assert [r.status_code for r in first] == [202] * 20, [r.text for r in first]
        # more than the queue holds: what does not fit is refused with a time to come back
        # (jobs finishing meanwhile free places, so some of these still get in)
        extra = list(pool.map(lambda i: submit(svimo_url, seed=i, num_steps=8),
                              range(BURST - len(first))))
        health = requests.get(f"{svimo_url}/healthz", timeout=10).json()
    assert health["queued"] + health["running"] <= MAX_QUEUED, health
    refused = [r for r in extra if r.status_code == 429]
    accepted = [r.json()["id"] for r in [*first, *extra] if r.status_code == 202]
    assert refused and {r.status_code for r in extra} <= {202, 429}, [r.text for r in extra]
    assert all(int(r.headers["Retry-After"]) >= 1 for r in refused)
    most = 0
    for job_id in accepted:  # every accepted job ends done, with its files
        deadline = time.monotonic() + 240
        while (status := requests.get(f"{svimo_url}/v1/generations/{job_id}",
                                      timeout=10).json())["status"] not in ("done", "failed"):
            most = max(most, sampler_replicas())
            running = requests.get(f"{svimo_url}/healthz", timeout=10).json()["running"]
            assert running <= MAX_REPLICAS, f"{running} jobs run at once on {most} replicas"
            assert time.monotonic() < deadline, status
            time.sleep(0.3)
        assert status["status"] == "done" and "video.mp4" in status["files"], status
        assert status["attempts"] == 1, status  # two ingress replicas, each job run once
    most = max(most, sampler_replicas())
    assert most == MAX_REPLICAS, f"the sampler never scaled out (at most {most} replica)"


def test_idle_samplers_scale_to_zero_and_a_job_brings_one_back(svimo_url: str) -> None:
    drain(svimo_url)
    deadline = time.monotonic() + DOWNSCALE_DELAY_S + 60
    while sampler_replicas() > 0:
        assert time.monotonic() < deadline, f"{sampler_replicas()} idle replicas stayed"
        time.sleep(1)
    status = wait_done(svimo_url, submit(svimo_url, num_steps=2).json()["id"])
    assert status["status"] == "done" and status["attempts"] == 1, status


def test_a_job_whose_sampler_replica_dies_runs_again_and_completes(svimo_url: str) -> None:
    import ray

    drain(svimo_url)
    ids = [submit(svimo_url, seed=i, num_steps=8).json()["id"] for i in range(4)]
    deadline = time.monotonic() + 60
    while True:  # catch a job while its replica works on it
        running = [s for s in (requests.get(f"{svimo_url}/v1/generations/{i}", timeout=10)
                               .json() for i in ids) if s["status"] == "running"]
        if running:
            break
        assert time.monotonic() < deadline, "no job started"
    replicas = [a for a in ray.util.list_named_actors(all_namespaces=True)
                if "#SamplingReplica#" in a["name"]]
    assert replicas, ray.util.list_named_actors(all_namespaces=True)
    for actor in replicas:  # every sampler replica: the running job's one among them
        ray.kill(ray.get_actor(actor["name"], namespace=actor["namespace"]), no_restart=False)
    statuses = [wait_done(svimo_url, i, timeout_s=240) for i in ids]
    assert [s["status"] for s in statuses] == ["done"] * 4, statuses
    victim = next(s for s in statuses if s["id"] == running[0]["id"])
    assert victim["attempts"] == 2, victim


def get_until_answered(url: str, timeout_s: float = 120) -> dict:
    """GET through a restarting ingress: the proxy answers 5xx or nothing meanwhile."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            r = requests.get(url, timeout=10)
            if r.status_code == 200:
                return r.json()
        except requests.RequestException:
            pass
        assert time.monotonic() < deadline, f"{url} unanswered for {timeout_s} s"
        time.sleep(0.5)


def test_jobs_queued_behind_a_dying_ingress_still_complete(svimo_url: str) -> None:
    import ray

    drain(svimo_url)
    ids = [submit(svimo_url, seed=i, num_steps=8).json()["id"] for i in range(6)]
    ingresses = [a for a in ray.util.list_named_actors(all_namespaces=True)
                 if "#SViMoAPI#" in a["name"]]
    assert len(ingresses) == 2, ingresses
    for ingress in ingresses:
        ray.kill(ray.get_actor(ingress["name"], namespace=ingress["namespace"]),
                 no_restart=False)
    deadline = time.monotonic() + 240
    for job_id in ids:
        while (status := get_until_answered(f"{svimo_url}/v1/generations/{job_id}"))[
                "status"] not in ("done", "failed"):
            assert time.monotonic() < deadline, status
            time.sleep(0.5)
        assert status["status"] == "done" and "video.mp4" in status["files"], status
        assert status["attempts"] == 1, status  # its message was on Redis: run once


def test_queued_and_running_jobs_survive_a_redis_restart(svimo_url: str,
                                                         redis_server: LocalRedis) -> None:
    """Redis killed (SIGKILL) while jobs wait and one runs, started again from its
    append-only file: every job ends done with its files, each run once (the reaper does not
    take the beats missed during the outage for a dead sampler)."""
    drain(svimo_url)
    ids = [submit(svimo_url, seed=i, num_steps=8).json()["id"] for i in range(5)]
    deadline = time.monotonic() + 60
    while not any(requests.get(f"{svimo_url}/v1/generations/{i}", timeout=10).json()["status"]
                  == "running" for i in ids):
        assert time.monotonic() < deadline, "no job started"
        time.sleep(0.2)
    redis_server.kill()
    down = requests.get(f"{svimo_url}/v1/generations/{ids[0]}", timeout=30)
    time.sleep(LEASE_S / 2)
    redis_server.start()
    assert down.status_code == 503 and down.headers["Retry-After"], down.text
    statuses = [wait_done(svimo_url, i, timeout_s=240) for i in ids]
    assert [(s["status"], s["attempts"]) for s in statuses] == [("done", 1)] * 5, statuses
    assert all("video.mp4" in s["files"] for s in statuses)


def test_an_app_whose_redis_does_not_answer_does_not_start(svimo_url: str, tiny_model: str,
                                                           tmp_path) -> None:
    """No silent in-memory fallback: the ingress refuses to start, naming serve.broker."""
    from cluster.local import free_port
    from hoi.config import load_config
    from serve.app import build_app

    broker = f"redis://127.0.0.1:{free_port()}/0"
    cfg = load_config(flavour="svimo-tiny", overrides=[
        "--serve.model", tiny_model, "--serve.results", str(tmp_path / "results"),
        "--serve.broker", broker, "--serve.min_replicas", "0"])
    try:
        with pytest.raises(RuntimeError, match="Deploying application nobroker failed"):
            serve.run(build_app(cfg), name="nobroker", route_prefix="/nobroker")
        why = serve.status().applications["nobroker"].deployments["SViMoAPI"].message
        assert "Redis does not answer" in why and broker in why, why
    finally:
        serve.delete("nobroker")
