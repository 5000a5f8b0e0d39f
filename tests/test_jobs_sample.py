"""jobs/sample.py: batch sampling through Ray Data on the session's local Ray, with bad rows,
resuming, and S3."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hoi.config import StorageConfig
from hoi.storage import list_files, read_text, write_bytes
from hoi.untrained import write_untrained_model
from jobs.sample import main
from tests.train.inputs import write_train_inputs

PROMPT = "stir the bowl with the spoon"


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> str:
    return write_untrained_model(str(tmp_path_factory.mktemp("model")), StorageConfig())


def png_bytes(seed: int = 0) -> bytes:
    rgb = np.random.default_rng(seed).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def manifest(path: Path) -> dict[str, dict]:
    """Entries by id; rows rejected before sampling by their row number."""
    entries = map(json.loads, path.read_text().splitlines())
    return {e["row"] if "row" in e else e["id"]: e for e in entries}


def test_batch_with_bad_rows_then_rerun_skips_done(ray_local: None, model: str,
                                                   tmp_path: Path) -> None:
    (tmp_path / "ref.png").write_bytes(png_bytes())
    (tmp_path / "broken.png").write_bytes(png_bytes()[:100])
    rows = [{"id": "good-1", "image": "ref.png", "prompt": PROMPT, "seed": 1},
            {"id": "good-2", "image": "ref.png", "prompt": "cut the board with the knife",
             "num_steps": 3},
            {"id": "no-image", "image": "missing.png", "prompt": PROMPT},
            {"id": "broken", "image": "broken.png", "prompt": PROMPT},
            {"id": "long", "image": "ref.png", "prompt": "stir " * 40},
            {"id": "steps", "image": "ref.png", "prompt": PROMPT, "num_steps": 10**6},
            {"id": "good-1", "image": "ref.png", "prompt": PROMPT},
            {"id": "../escape", "image": "ref.png", "prompt": PROMPT}]
    requests = tmp_path / "requests.jsonl"
    requests.write_text("\n".join(json.dumps(r) for r in rows))
    out = tmp_path / "samples"
    argv = ["--flavour", "svimo-tiny", "--sample.model", model, "--sample.input",
            str(requests), "--sample.output", str(out), "--sample.num_steps", "2",
            "--sample.cpus_per_actor", "0.5"]
    assert main(argv) == 1  # some rows failed
    entries = manifest(out / "manifest.jsonl")
    assert entries["good-1"]["status"] == entries["good-2"]["status"] == "ok"
    reasons = {k: e["reason"] for k, e in entries.items() if e["status"] == "error"}
    assert "not found" in reasons["no-image"]
    assert "decoded" in reasons["broken"]
    assert "T5 tokens" in reasons["long"]
    assert "num_steps" in reasons["steps"]
    assert "more than once" in reasons[6]  # the duplicate row; the first one ran
    assert "letters, digits" in reasons[7]
    result = json.loads((out / "good-2" / "result.json").read_text())
    assert result["num_steps"] == 3 and result["prompt"] == "cut the board with the knife"
    assert {"video.mp4", "preview.png", "motion.json"} <= set(result["files"])
    assert not (tmp_path / "escape").exists()

    # rerun: the done ids are not sampled again, the bad rows are reported again
    before = (out / "good-1" / "video.mp4").stat().st_mtime_ns
    assert main(argv) == 1
    again = manifest(out / "manifest.jsonl")
    assert again["good-1"]["skipped"] and again["good-2"]["skipped"]
    assert (out / "good-1" / "video.mp4").stat().st_mtime_ns == before
    assert again["broken"]["status"] == "error"


def test_csv_requests_and_outputs_on_s3(ray_local: None, model: str, s3, tmp_path: Path
                                        ) -> None:
    root = s3.fresh_root()
    write_bytes(f"{root}/images/ref.png", png_bytes(1), s3.storage)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, ["id", "image", "prompt", "seed"])
    writer.writeheader()
    writer.writerow({"id": "s3-1", "image": f"{root}/images/ref.png", "prompt": PROMPT,
                     "seed": 4})
    writer.writerow({"id": "s3-2", "image": f"{root}/images/nope.png", "prompt": PROMPT,
                     "seed": ""})
    write_bytes(f"{root}/requests.csv", buf.getvalue().encode(), s3.storage)
    argv = ["--flavour", "svimo-tiny", "--sample.model", model, "--sample.input",
            f"{root}/requests.csv", "--sample.output", f"{root}/samples",
            "--sample.num_steps", "1", "--sample.cpus_per_actor", "0.5",
            "--storage.endpoint_url", s3.endpoint_url]
    assert main(argv) == 1
    lines = read_text(f"{root}/samples/manifest.jsonl", s3.storage).splitlines()
    entries = {e["id"]: e for e in map(json.loads, lines)}
    assert entries["s3-1"]["status"] == "ok" and entries["s3-1"]["seed"] == 4
    assert "not found" in entries["s3-2"]["reason"]
    assert "s3-1/video.mp4" in list_files(f"{root}/samples", s3.storage)


def test_no_model_or_no_requests_stops_before_any_work(ray_local: None, tmp_path: Path,
                                                       capsys) -> None:
    assert main(["--flavour", "svimo-tiny", "--sample.input", str(tmp_path / "r.jsonl"),
                 "--sample.model", str(tmp_path / "none")]) == 2
    assert "nothing at" in capsys.readouterr().err
    assert main(["--flavour", "svimo-tiny"]) == 2
    assert "sample.input is not set" in capsys.readouterr().err


def test_held_out_clips_of_a_split_become_requests(ray_local: None, tmp_path: Path) -> None:
    overrides = write_train_inputs(str(tmp_path / "in"), StorageConfig())
    model = write_untrained_model(str(tmp_path / "m"), StorageConfig())
    out = tmp_path / "samples"
    assert main([*overrides, "--sample.model", model, "--sample.output", str(out),
                 "--from-split", "train", "--limit", "2", "--sample.num_steps", "1",
                 "--sample.cpus_per_actor", "0.5"]) == 0
    requests = [json.loads(line) for line in (out / "requests" / "train.jsonl").open()]
    assert [r["id"] for r in requests] == ["train-0", "train-1"]
    assert requests[0]["prompt"] == json.loads(
        (out / "train-0" / "result.json").read_text())["prompt"]
    first = np.asarray(Image.open(out / "requests" / "train-0.png"))
    assert first.shape == (32, 48, 3)
