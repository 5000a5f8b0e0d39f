"""jobs/evaluate.py end to end on a tiny checkpoint: tables, per-clip rows, plots."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import torch
from transformers import CLIPConfig, CLIPModel, ViTConfig, ViTModel

from hoi.config import StorageConfig
from jobs.evaluate import main
from tests.train.inputs import TRAIN_CLIPS, write_tiny_model, write_train_inputs


def tiny_feature_networks(root: Path) -> list[str]:
    """Random DINO (ViTModel) and CLIP directories; the overrides that name them."""
    torch.manual_seed(0)
    ViTModel(ViTConfig(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=1,
                       num_attention_heads=2, intermediate_size=32),
             add_pooling_layer=False).save_pretrained(root / "dino")
    CLIPModel(CLIPConfig(
        text_config=dict(vocab_size=64, hidden_size=16, intermediate_size=32,
                         num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=16,
                         bos_token_id=0, eos_token_id=1, pad_token_id=1),
        vision_config=dict(image_size=32, patch_size=8, hidden_size=16, intermediate_size=32,
                           num_hidden_layers=1, num_attention_heads=2),
        projection_dim=8)).save_pretrained(root / "clip")
    return ["--evaluate.dino", str(root / "dino"), "--evaluate.clip", str(root / "clip")]


def test_evaluate_writes_the_table(ray_local: None, tmp_path: Path, capsys) -> None:
    overrides = write_train_inputs(str(tmp_path / "in"), StorageConfig())
    model = write_tiny_model(str(tmp_path / "m"), StorageConfig())
    out = tmp_path / "eval"
    argv = [*overrides, *tiny_feature_networks(tmp_path), "--evaluate.model", model,
            "--evaluate.split", "train", "--evaluate.limit", "3", "--evaluate.seeds", "[0, 1]",
            "--evaluate.num_steps", "2", "--evaluate.output", str(out),
            "--evaluate.cpus_per_actor", "0.5", "--evaluate.name", "tiny",
            "--evaluate.autoencoder_steps", "20"]
    assert main(argv) == 0
    table = {row["model"]: row for row in csv.DictReader((out / "table.csv").open())}
    assert set(table) == {"tiny", "ground truth"}
    tiny, truth = table["tiny"], table["ground truth"]
    for key in ("subj", "bkg", "tsmoo", "dyn", "overall", "mpjpe_mm", "chamfer_cm2", "fid",
                "psnr", "ssim", "vmc_hit", "pen_mm"):
        assert math.isfinite(float(tiny[key])), key
    assert tiny["fvd"] == "" and truth["mpjpe_mm"] == ""  # no I3D; no GT for the truth
    # the truth's own motion video shows its joints where they project
    assert float(truth["vmc_hit"]) > 0.95
    overall = float(tiny["subj"]) * float(tiny["bkg"]) * float(tiny["tsmoo"]) * float(tiny["dyn"])
    assert abs(float(tiny["overall"]) - overall) < 1e-6
    clips = list(csv.DictReader((out / "clips.csv").open()))
    assert len(clips) == 3 * 2 and {c["seed"] for c in clips} == {"0", "1"}
    assert (out / "plots.png").stat().st_size > 10_000
    assert (out / "motion_autoencoder" / "config.json").is_file()
    assert "| tiny |" in (out / "table.md").read_text()
    assert f"{len(clips)} samples" in capsys.readouterr().out
    assert TRAIN_CLIPS >= 3


def test_actors_that_would_starve_the_reads_are_refused(ray_local: None, capsys) -> None:
    # two 1-CPU actors on the 2-CPU test cluster leave nothing to read the clips with
    assert main(["--flavour", "svimo-tiny", "--evaluate.concurrency", "2",
                 "--evaluate.cpus_per_actor", "1"]) == 2
    err = capsys.readouterr().err
    assert "reserves 2.25 CPU" in err and "lower evaluate.concurrency, cpus_per_actor" in err
