"""API keys: the keys file and its command, and a second app with keys next to the open one
(route prefix /keyed, its own queue on the same Redis): 401 without a key, each key sees only
its own generations, a key's share of the queue, and the page asks for the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from serve import keys
from tests.serve.conftest import PREFIX
from tests.serve.test_app import png, wait_done


def test_the_keys_command_prints_a_key_once_and_keeps_its_hash(tmp_path: Path, capsys) -> None:
    path = tmp_path / "keys.txt"
    assert keys.main(["add", "alice", "--file", str(path), "--max-queued", "1"]) == 0
    key = capsys.readouterr().out.strip()
    assert len(key) >= 40 and key not in path.read_text()
    assert keys.parse(path.read_text(), "keys.txt") == {keys.digest(key): keys.Key("alice", 1)}
    assert keys.main(["add", "alice", "--file", str(path)]) == 2  # taken
    assert "taken" in capsys.readouterr().err


@pytest.mark.parametrize("text, words", [
    ("alice sha256:abc", "64 hex"),
    ("alice", "want 'name sha256"),
    (f"alice {keys.digest('k')} 2 x", "want 'name sha256"),
    (f"al/ce {keys.digest('k')}", "not [A-Za-z0-9"),
    (f"alice {keys.digest('k')}\nalice {keys.digest('j')}", "not unique"),
    (f"alice {keys.digest('k')} 0", "max_queued"),
    ("# nothing but a comment", "no keys"),
])
def test_a_bad_keys_file_says_which_line(text: str, words: str) -> None:
    with pytest.raises(keys.KeysError, match=words.replace("[", r"\[")):
        keys.parse(text, "keys.txt")


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_without_a_key_every_generation_route_answers_401(keyed) -> None:
    url, issued = keyed
    config = requests.get(f"{url}/v1/config", timeout=10).json()
    assert config["auth"] is True
    assert requests.get(f"{url}/healthz", timeout=10).status_code == 200
    refused = [
        requests.post(f"{url}/v1/generations", data={"prompt": "stir the bowl"},
                      files={"image": ("a.png", png(), "image/png")}, timeout=30),
        requests.post(f"{url}/v1/generations", data={"prompt": "stir the bowl"},
                      files={"image": ("a.png", png(), "image/png")}, timeout=30,
                      headers=_auth("not-a-key")),
        requests.get(f"{url}/v1/generations/{'0' * 32}", timeout=10),
        requests.get(f"{url}/v1/generations/{'0' * 32}/events", timeout=10),
        requests.get(f"{url}/v1/generations/{'0' * 32}/files/video.mp4", timeout=10),
    ]
    for r in refused:
        assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer", r.text


def test_a_generation_is_its_keys_alone_and_a_key_has_its_share(keyed) -> None:
    url, issued = keyed
    alice, bob = _auth(issued["alice"]), _auth(issued["bob"])
    first = requests.post(f"{url}/v1/generations", headers=alice, timeout=30,
                          data={"prompt": "stir the bowl with the spoon", "num_steps": "8"},
                          files={"image": ("a.png", png(), "image/png")})
    assert first.status_code == 202, first.text
    # alice's share is one job queued or running: her second waits for the first
    second = requests.post(f"{url}/v1/generations", headers=alice, timeout=30,
                           data={"prompt": "stir the bowl with the spoon"},
                           files={"image": ("a.png", png(), "image/png")})
    assert second.status_code == 429 and "'alice'" in second.text, second.text
    assert int(second.headers["Retry-After"]) >= 1
    job = first.json()["id"]
    assert requests.get(f"{url}/v1/generations/{job}", headers=bob,
                        timeout=10).status_code == 404
    status = wait_done(url, job, headers=alice)
    assert status["status"] == "done", status
    video = status["files"]["video.mp4"]
    assert video.startswith(f"{PREFIX}/v1/generations/{job}/files/")  # under the prefix
    base = url[: -len(PREFIX)]
    assert requests.get(base + video, headers=bob, timeout=10).status_code == 404
    mine = requests.get(base + video, headers=alice, timeout=10)
    assert mine.status_code == 200 and mine.content[4:8] == b"ftyp"
    # her place is free again; bob's jobs never counted against it
    again = requests.post(f"{url}/v1/generations", headers=alice, timeout=30,
                          data={"prompt": "stir the bowl with the spoon"},
                          files={"image": ("a.png", png(), "image/png")})
    assert again.status_code == 202, again.text
    assert wait_done(url, again.json()["id"], headers=alice)["status"] == "done"
