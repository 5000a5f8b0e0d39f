"""jobs/ablation.py end to end at svimo-tiny size: held-out shards, variants trained from one
warm-up, both splits evaluated, the report; a rerun resumes; the paired model. Three of the
seven rows (the full model, the separate models and table 4's LoRA model: the other rows
differ from the full one only in `loop.variant`, which tests/diffusion covers, or in the
even-layer modulation, which the last test here covers) keep the test short; two training
seeds, the second for the full model and `SViMo w/o VID`, against which the others are
paired."""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from hoi.ablation import ROWS, Scores, _best, _from_warm_up, _with_variant
from hoi.config import ABLATION_MODELS, StorageConfig, load_config
from hoi.evaluation import heading
from hoi.model.svimo import SViMo
from hoi.model.vid import VID
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
            "[full, separate, lora]"]
    assert main([*argv[:-1], "[full, nothing]"]) == 2  # refused before any work
    assert "ablation.models: unknown ['nothing']" in capsys.readouterr().err
    assert main([*argv, "--loop.vid_warmup_steps", "0"]) == 2
    assert "loop.vid_warmup_steps >= 1" in capsys.readouterr().err
    assert not out.exists()
    assert main(argv) == 0
    report = (out / "results.md").read_text()
    assert report.strip() in capsys.readouterr().out
    chosen = ("SViMo w/ VID (Ours)", "VModel w/ Pred. Mot.", "LoRA Training")
    for row, *_ in ROWS:  # val, heldout and the paper's for the rows run, else the paper's
        assert report.count(f"| {row} |") == (3 if row in chosen else 1)
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert {(r["split"], r["variant"]) for r in rows} == {
        (split, row) for split in ("val", "heldout") for row in [*chosen, "ground truth"]}
    assert all(np.isfinite(float(r["mpjpe_mm"])) for r in rows if r["variant"] != "ground truth")
    # every variant went on from the same warm-up for the same joint steps
    for variant in ("full", "video_model", "motion_model", "lora"):
        history = json.loads((out / "models" / "seed0" / variant / "history.json").read_text())
        assert [h["step"] for h in history] == [2, 3, 4], variant
    # table 4's LoRA model: merged, plain
    models = out / "models" / "seed0"
    full = SViMo.from_pretrained(str(models / "full" / "svimo")).state_dict()
    merged = SViMo.from_pretrained(str(models / "lora" / "svimo")).state_dict()
    assert merged.keys() == full.keys()
    warm = SViMo.from_pretrained(str(out / "models" / "warmup" / "svimo")).state_dict()
    changed = {k for k in merged if not torch.equal(merged[k], warm[k])}
    assert any(".attn1.to_" in k or ".ff.net." in k for k in changed)  # adapters, merged
    assert not any(k.endswith("norm1.linear.weight") for k in changed)  # frozen
    assert json.loads((models / "separate" / "pipeline.json").read_text())[
        "motion_svimo"] == "motion_svimo"
    for name in ("metrics.png", "losses.png"):
        assert (out / name).stat().st_size > 10_000
    # held-out clips are the held-out combination, and only they
    evals = out / "eval" / "seed0"
    heldout = list(csv.DictReader((evals / "full" / "heldout" / "clips.csv").open()))
    assert {(c["action"], c["target"]) for c in heldout} == {("scoop", "cup")}
    val = list(csv.DictReader((evals / "full" / "val" / "clips.csv").open()))
    assert len(val) == 2 and ("scoop", "cup") not in {(c["action"], c["target"]) for c in val}

    # a rerun resumes: nothing is trained or evaluated again
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.suffix in (".json", ".safetensors")}
    assert main(argv) == 0
    assert stamps == {p: p.stat().st_mtime_ns for p in stamps}

    # a second training seed for two rows: trained from the same warm-up with other batches,
    # each row reported as the mean over the seeds, and paired against SViMo w/o VID
    two = [*argv[:-1], "[full, no_vid]", "--ablation.seeds", "[0, 1]"]
    assert main(two) == 0
    assert stamps == {p: p.stat().st_mtime_ns for p in stamps}  # seed 0's full model kept
    seeds = [json.loads((out / "models" / f"seed{s}" / "full" / "history.json").read_text())
             for s in (0, 1)]
    assert [h["step"] for h in seeds[1]] == [2, 3, 4] and seeds[0] != seeds[1]
    rows = list(csv.DictReader((out / "results.csv").open()))
    full = {r["train_seed"]: r for r in rows if r["split"] == "val"
            and r["variant"] == "SViMo w/ VID (Ours)"}
    assert set(full) == {"0", "1", "mean", "se"}
    mpjpe = [float(full[s]["mpjpe_mm"]) for s in ("0", "1")]
    assert float(full["mean"]["mpjpe_mm"]) == pytest.approx(np.mean(mpjpe))
    assert float(full["se"]["mpjpe_mm"]) == pytest.approx(abs(mpjpe[0] - mpjpe[1]) / 2)
    paired = list(csv.DictReader((out / "paired.csv").open()))
    assert {(p["split"], p["variant"]) for p in paired} == {
        ("val", "SViMo w/ VID (Ours)"), ("heldout", "SViMo w/ VID (Ours)")}
    per_clip = {r: [float(c["mpjpe_mm"]) for s in (0, 1) for c in csv.DictReader(
        (out / "eval" / f"seed{s}" / r / "val" / "clips.csv").open())] for r in ("full", "no_vid")}
    val_mpjpe = next(p for p in paired if p["split"] == "val" and p["metric"] == "mpjpe_mm")
    assert float(val_mpjpe["minus SViMo w/o VID"]) == pytest.approx(
        np.mean(per_clip["full"]) - np.mean(per_clip["no_vid"]))
    assert val_mpjpe["clips"] == "2"
    report = (out / "results.md").read_text()
    assert "## Paired against SViMo w/o VID, val split" in report and " +- " in report

    # the separate models sample jointly: the motion model's pass, then the video model's
    pipe = SViMoPipeline.from_pretrained(str(models / "separate"))
    assert pipe.modes == model_modes(str(models / "separate"), StorageConfig()) \
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


def test_paired_differences_average_the_seeds_per_clip_then_the_clips():
    def clips(*values):
        return {f"c{i}/0": {"mpjpe_mm": v} for i, v in enumerate(values)}

    ours, reference = "SViMo w/ VID (Ours)", "SViMo w/o VID"
    scores = Scores(
        tables={"val": {reference: [{"mpjpe_mm": 50.0}, {"mpjpe_mm": 54.0}],
                        ours: [{"mpjpe_mm": 45.0}, {"mpjpe_mm": 47.0}]}},
        clips={"val": {reference: [clips(50, 60, 40), clips(52, 62, 48)],
                       ours: [clips(40, 58, 40), clips(50, 60, 44)]}},
        truth={"val": {}})
    diff, se, n, per_seed = scores.paired("val", ours, "mpjpe_mm")
    by_clip, by_seed = [-6.0, -2.0, -2.0], [-4.0, -8 / 3]  # (-10, -2), (-2, -2), (0, -4)
    assert (diff, n) == (pytest.approx(-10 / 3), 3)
    assert per_seed == pytest.approx(by_seed)
    assert se == pytest.approx(np.hypot(np.std(by_clip, ddof=1) / np.sqrt(3),
                                        np.std(by_seed, ddof=1) / np.sqrt(2)))
    assert scores.mean("val")[ours]["mpjpe_mm"] == 46.0
    assert scores.se("val")[reference]["mpjpe_mm"] == pytest.approx(2.0)
    # one seed: the spread over the samples alone
    one = Scores({"val": {k: v[:1] for k, v in scores.tables["val"].items()}},
                 {"val": {k: v[:1] for k, v in scores.clips["val"].items()}}, {"val": {}})
    assert one.paired("val", ours, "mpjpe_mm")[1] == pytest.approx(
        np.std([-10, -2, 0], ddof=1) / np.sqrt(3))


def test_the_best_hand_tool_distance_is_the_one_nearest_the_ground_truth():
    table = {"a": {"hand_tool_mm": 8.3, "mpjpe_mm": 48.0}, "b": {"hand_tool_mm": 6.2,
                                                                "mpjpe_mm": 52.0},
             "ground truth": {"hand_tool_mm": 10.4}}
    assert _best(table, "hand_tool_mm", None) == 8.3
    assert _best(table, "mpjpe_mm", False) == 48.0
    assert heading("Hand-tool (mm)", None) == "Hand-tool (mm)"
    assert heading("MPJPE (mm)", False) == "MPJPE (mm) ↓"


def test_the_even_layer_row_goes_on_from_the_warm_up_less_the_odd_blocks_motion_modulation():
    cfg = load_config(flavour="svimo-tiny")
    torch.manual_seed(0)
    warm = SViMo(cfg), VID(cfg)
    even, vid = _from_warm_up(_with_variant(cfg, "even_layers"), *copy.deepcopy(warm))
    assert even.config.model.motion_modulation == "even" and vid.config is even.config
    kept, full = even.state_dict(), warm[0].state_dict()
    odd = {k for k in full if ".motion_linear." in k and int(k.split(".")[1]) % 2 == 1}
    assert odd and set(full) - set(kept) == odd
    assert all(torch.equal(value, full[name]) for name, value in kept.items())
