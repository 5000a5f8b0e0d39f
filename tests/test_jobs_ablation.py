"""jobs/ablation.py end to end at svimo-tiny size: held-out shards, variants trained from one
warm-up, both splits evaluated, the report; a rerun resumes; the paired model. Four of the
seven rows (the full model, the separate models and table 4's even-layer and LoRA models:
the other rows differ from the full one only in `loop.variant`, which tests/diffusion
covers) keep the test short."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import torch

from hoi.ablation import ROWS
from hoi.config import ABLATION_MODELS, StorageConfig
from hoi.model.svimo import SViMo
from hoi.pipeline import SViMoPipeline, model_modes
from hoi.untrained import write_untrained_codec
from jobs.ablation import main


def test_ablation_end_to_end(ray_local: None, tmp_path: Path, capsys) -> None:
    out = tmp_path / "ablation"
    argv = ["--flavour", "svimo-tiny", *write_untrained_codec(str(tmp_path / "codec"), StorageConfig()),
            "--prepare.output", str(tmp_path / "shards"), "--prepare.num_train", "6",
            "--prepare.num_val", "2", "--prepare.holdout", "scoop:cup",
            "--prepare.num_heldout", "1", "--prepare.num_preview", "0",
            "--evaluate.num_steps", "2", "--evaluate.autoencoder_steps", "10",
            "--evaluate.cpus_per_actor", "0.5", "--ablation.output", str(out),
            "--loop.vid_warmup_steps", "2", "--ablation.joint_steps", "3",
            "--train.batch_size", "2", "--ablation.models",
            "[full, separate, even_layers, lora]"]
    assert main([*argv[:-1], "[full, nothing]"]) == 2  # refused before any work
    assert "ablation.models: unknown ['nothing']" in capsys.readouterr().err
    assert main([*argv, "--loop.vid_warmup_steps", "0"]) == 2
    assert "loop.vid_warmup_steps >= 1" in capsys.readouterr().err
    assert not out.exists()
    assert main(argv) == 0
    report = (out / "results.md").read_text()
    assert report.strip() in capsys.readouterr().out
    chosen = ("SViMo w/ VID (Ours)", "VModel w/ Pred. Mot.", "Only Even Layers",
              "LoRA Training")
    for row, *_ in ROWS:  # val, heldout and the paper's for the rows run, else the paper's
        assert report.count(f"| {row} |") == (3 if row in chosen else 1)
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert {(r["split"], r["variant"]) for r in rows} == {
        (split, row) for split in ("val", "heldout") for row in [*chosen, "ground truth"]}
    assert all(np.isfinite(float(r["mpjpe_mm"])) for r in rows if r["variant"] != "ground truth")
    # every variant went on from the same warm-up for the same joint steps
    for variant in ("full", "video_model", "motion_model", "even_layers", "lora"):
        history = json.loads((out / "models" / variant / "history.json").read_text())
        assert [h["step"] for h in history] == [2, 3, 4], variant
    # table 4's models: even-layer modulation in the exported config; LoRA merged, plain
    even = SViMo.from_pretrained(str(out / "models" / "even_layers" / "svimo"))
    assert even.config.model.motion_modulation == "even"
    full = SViMo.from_pretrained(str(out / "models" / "full" / "svimo")).state_dict()
    merged = SViMo.from_pretrained(str(out / "models" / "lora" / "svimo")).state_dict()
    assert merged.keys() == full.keys()
    warm = SViMo.from_pretrained(str(out / "models" / "warmup" / "svimo")).state_dict()
    changed = {k for k in merged if not torch.equal(merged[k], warm[k])}
    assert any(".attn1.to_" in k or ".ff.net." in k for k in changed)  # adapters, merged
    assert not any(k.endswith("norm1.linear.weight") for k in changed)  # frozen
    assert json.loads((out / "models" / "separate" / "pipeline.json").read_text())[
        "motion_svimo"] == "motion_svimo"
    for name in ("metrics.png", "losses.png"):
        assert (out / name).stat().st_size > 10_000
    # held-out clips are the held-out combination, and only they
    heldout = list(csv.DictReader((out / "eval" / "full" / "heldout" / "clips.csv").open()))
    assert {(c["action"], c["target"]) for c in heldout} == {("scoop", "cup")}
    val = list(csv.DictReader((out / "eval" / "full" / "val" / "clips.csv").open()))
    assert len(val) == 2 and ("scoop", "cup") not in {(c["action"], c["target"]) for c in val}

    # a rerun resumes: nothing is trained or evaluated again
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.suffix in (".json", ".safetensors")}
    assert main(argv) == 0
    assert stamps == {p: p.stat().st_mtime_ns for p in stamps}

    # the separate models sample jointly: the motion model's pass, then the video model's
    pipe = SViMoPipeline.from_pretrained(str(out / "models" / "separate"))
    assert pipe.modes == model_modes(str(out / "models" / "separate"), StorageConfig()) \
        == ("joint", "motion_to_video")
    steps = []
    n, h, w = pipe.frame_size
    image = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    gen = pipe(image, "stir the bowl with the spoon", num_steps=2,
               progress=lambda i, total: steps.append((i, total)))
    assert steps == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert gen.mode == "joint" and gen.joints.shape == (n, 42, 3)


def test_the_table_rows_are_the_configs_models():
    assert tuple(model for _, model, _ in ROWS) == ABLATION_MODELS
