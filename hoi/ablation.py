"""The paper's ablations (its tables 3 and 4) at small scale, end to end: `jobs/ablation.py`.

1. Shards with one action/target combination held out of training (`prepare.holdout`): the
   val split has new seeds, the heldout split only that combination.
2. VID warms up once (`loop.vid_warmup_steps`; SViMo's video stream with it where
   `loop.svimo_warmup`); every variant then trains on from a copy of both for the same joint
   steps, once per training seed of `ablation.seeds`, on the same clips, and for one seed
   the same batches and noise (`train_local`, one process): full,
   guidance_only, gradient_only, no_vid, and the two halves of "VModel w/ Pred. Mot.",
   video_model and motion_model, exported together as one paired model; and table 4's
   even_layers (SViMo's motion modulation in even blocks only: the warm-up's weights less
   the odd blocks' motion modulation, which the warm-up does not train) and lora (adapters
   of rank ablation.lora_rank on the warm-up's SViMo, the motion stream in full; exported
   merged), both with the full closed loop.
3. `hoi.evaluation.run` scores each row on both splits, per training seed (the same metrics
   as jobs/evaluate.py, the same sampling seeds).
4. `results.md` (our rows, means and standard errors over the training seeds, next to the
   paper's; each row's per-clip difference from `SViMo w/o VID`), `results.csv`,
   `paired.csv`, `metrics.png` and `losses.png` (the video loss per variant, the paper's
   figure 7) in the output directory.

Every stage is skipped when its output exists, so a rerun resumes.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import json
import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hoi import evaluation
from hoi.artifacts import PIPELINE_NAME, export_networks
from hoi.config import Config, ConfigError
from hoi.data import prepare
from hoi.data.shards import load_clips
from hoi.evaluation import TRUTH
from hoi.metrics.stats import standard_error
from hoi.model.encoders import load_encoders
from hoi.model.svimo import SViMo
from hoi.model.vid import VID
from hoi.train import lora
from hoi.train.local import encode, train_local
from hoi.vocabulary import HELDOUT_SPLIT

log = logging.getLogger(__name__)

# (table row, the model directory it is evaluated from, the loop.variants trained for it), in
# the order of config.ABLATION_MODELS
ROWS = (
    ("SViMo w/ VID (Ours)", "full", ("full",)),
    ("SViMo w/ Inter. Guid.", "guidance_only", ("guidance_only",)),
    ("SViMo w/ Grad. Cons.", "gradient_only", ("gradient_only",)),
    ("SViMo w/o VID", "no_vid", ("no_vid",)),
    ("VModel w/ Pred. Mot.", "separate", ("video_model", "motion_model")),
    ("Only Even Layers", "even_layers", ("even_layers",)),
    ("LoRA Training", "lora", ("lora",)),
)
SPLITS = ("val", HELDOUT_SPLIT)

# The paper's tables 3 and 4 (CogVideoX-5B scale, TACO): Subj., Bkg., TSmoo., Dyn., Overall, then
# MPJPE, MSmoo. and Cham. in the paper's units (unstated; metres and m² fit TACO's scale), FID.
PAPER_COLUMNS = ("subj", "bkg", "tsmoo", "dyn", "overall", "mpjpe", "msmoo", "chamfer", "fid")
PAPER = {
    "SViMo w/ VID (Ours)": (0.9534, 0.9546, 0.9883, 0.9784, 0.8800, 0.0121, 0.0053, 0.0019, 0.0100),
    "SViMo w/ Inter. Guid.": (0.9522, 0.9546, 0.9877, 0.9768, 0.8770, 0.0157, 0.0060, 0.0022,
                              0.0100),
    "SViMo w/ Grad. Cons.": (0.9499, 0.9525, 0.9881, 0.9757, 0.8723, 0.0141, 0.0058, 0.0021,
                             0.0124),
    "SViMo w/o VID": (0.9543, 0.9545, 0.9883, 0.9686, 0.8719, 0.0195, 0.0070, 0.0037, 0.0546),
    "VModel w/ Pred. Mot.": (0.9356, 0.9392, 0.9858, 0.9675, 0.8381, 0.0202, 0.0074, 0.0040,
                             0.0575),
    "Only Even Layers": (0.9535, 0.9552, 0.9884, 0.9757, 0.8783, 0.0297, 0.0103, 0.0127,
                         0.1368),
    "LoRA Training": (0.9458, 0.9523, 0.9892, 0.9688, 0.8631, 0.0671, 0.0211, 0.0555, 0.4671),
}
# Our columns shown in results.md: the paper's that run without feature networks, then ours.
SHOWN = ("tsmoo", "dyn", "mpjpe_mm", "msmoo_mm", "chamfer_cm2", "fid", "psnr", "ssim",
         "vmc_hit", "contact", "hand_tool_mm")


def run(cfg: Config, *, progress: bool = True) -> dict[str, Any]:
    """The whole ablation, or the rows of ablation.models, into ablation.output; Ray must be
    initialised (prepare and evaluate use Ray Data). Returns the Scores, the report's path
    and the stages' timings."""
    if not cfg.prepare.holdout or not cfg.prepare.num_heldout:
        raise ConfigError("the ablation needs prepare.holdout and prepare.num_heldout "
                          "(configs/ablation.yaml sets them)")
    if cfg.loop.vid_warmup_steps < 1:
        raise ConfigError("the ablation's shared warm-up needs loop.vid_warmup_steps >= 1")
    rows = [r for r in ROWS if r[1] in cfg.ablation.models]
    out = Path(cfg.ablation.output)
    out.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    timings: dict[str, float] = {}

    def timed(stage: str, fn, *args, **kwargs):
        t0 = time.monotonic()
        result = fn(*args, **kwargs)
        timings[stage] = timings.get(stage, 0.0) + time.monotonic() - t0
        return result

    timed("prepare", prepare.run, cfg, progress=progress)
    histories = timed("train", train_variants, cfg, out / "models", rows, progress=progress)
    scores = timed("evaluate", evaluate_rows, cfg, out, rows)
    timings["total"] = time.monotonic() - start
    report = write_report(cfg, out, scores, histories, timings)
    return {"scores": scores, "report": str(report), "timings": timings}


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


def train_variants(cfg: Config, root: Path, rows: list = ROWS, *,
                   progress: bool = True) -> dict[int, dict[str, list[dict[str, float]]]]:
    """Train what is missing under root: warmup/ (`_warm_up`), then seed<s>/<variant> for
    every training seed of ablation.seeds; the separate models are exported together as
    seed<s>/separate/. Returns the loss history of every variant, by seed."""
    warmup_steps, joint_steps = cfg.loop.vid_warmup_steps, cfg.ablation.joint_steps
    variants = [v for *_, row_variants in rows for v in row_variants]
    missing = [(seed, v) for seed in cfg.ablation.seeds for v in variants
               if not (root / f"seed{seed}" / v / "history.json").is_file()]
    if missing:
        vae, text_encoder = load_encoders(cfg)
        clips = load_clips(cfg.prepare.output, "train", cfg.data, cfg.storage)
        clips = encode(cfg, clips, vae, text_encoder, progress=progress)
        warm = _warm_up(_with_variant(cfg, "full"), clips, vae, text_encoder, root / "warmup",
                        progress)
    histories: dict[int, dict[str, list[dict[str, float]]]] = {}
    for seed in cfg.ablation.seeds:
        seeded = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=seed))
        for variant in variants:
            target = root / f"seed{seed}" / variant
            if (seed, variant) in missing:
                log.info("ablation: training %s (seed %d) for %d joint steps", variant, seed,
                         joint_steps)
                svimo, vid = _from_warm_up(_with_variant(seeded, variant), *copy.deepcopy(warm))
                svimo, vid, history = train_local(svimo.config, clips, vae, text_encoder,
                                                  steps=joint_steps, models=(svimo, vid),
                                                  start_step=warmup_steps, progress=progress)
                if svimo.config.train.lora_rank:
                    svimo = lora.merged(svimo, svimo.config.train)
                export_networks(target, svimo, vid, svimo.config, warmup_steps + joint_steps)
                (target / "history.json").write_text(json.dumps(history))
            histories.setdefault(seed, {})[variant] = json.loads(
                (target / "history.json").read_text())
        if "video_model" in variants:
            pair_separate(root / f"seed{seed}")
    return histories


def _warm_up(cfg: Config, clips, vae, text_encoder, directory: Path, progress: bool
             ) -> tuple[SViMo, VID]:
    """The warm-up (VID; SViMo's video stream too with `loop.svimo_warmup`), trained once
    and kept in directory."""
    if (directory / "vid" / "config.json").is_file():
        return (SViMo.from_pretrained(str(directory / "svimo")),
                VID.from_pretrained(str(directory / "vid")))
    log.info("ablation: VID warm-up, %d steps", cfg.loop.vid_warmup_steps)
    svimo, vid, history = train_local(cfg, clips, vae, text_encoder,
                                      steps=cfg.loop.vid_warmup_steps, progress=progress)
    svimo.save_pretrained(str(directory / "svimo"))
    vid.save_pretrained(str(directory / "vid"))
    (directory / "history.json").write_text(json.dumps(history))
    return svimo, vid


def pair_separate(root: Path) -> None:
    """separate/: the video model with the motion model's SViMo as its motion_svimo."""
    video, motion, pair = root / "video_model", root / "motion_model", root / "separate"
    if (pair / PIPELINE_NAME).is_file():
        return
    pair.mkdir(parents=True, exist_ok=True)
    meta = json.loads((video / PIPELINE_NAME).read_text())
    for name, source in (("svimo", video / "svimo"), ("vid", video / "vid"),
                         ("motion_svimo", motion / "svimo")):
        shutil.copytree(source, pair / name, dirs_exist_ok=True)
    meta["motion_svimo"] = "motion_svimo"
    (pair / PIPELINE_NAME).write_text(json.dumps(meta, indent=2))


def _with_variant(cfg: Config, variant: str) -> Config:
    """The config a variant trains with: its loop.variant, or table 4's rows (the full loop
    with even-layer motion modulation, or with LoRA)."""
    if variant == "even_layers":
        return dataclasses.replace(_with_variant(cfg, "full"), model=dataclasses.replace(
            cfg.model, motion_modulation="even"))
    if variant == "lora":
        return dataclasses.replace(_with_variant(cfg, "full"), train=dataclasses.replace(
            cfg.train, lora_rank=cfg.ablation.lora_rank))
    return dataclasses.replace(cfg, loop=dataclasses.replace(cfg.loop, variant=variant))


def _from_warm_up(cfg: Config, svimo: SViMo, vid: VID) -> tuple[SViMo, VID]:
    """The warm-up's networks set up for a variant's config: SViMo rebuilt with the
    even-layer modulation (the odd blocks' motion modulation dropped), or given adapters."""
    if cfg.model.motion_modulation != svimo.config.model.motion_modulation:
        rebuilt = SViMo(cfg)
        missing, _ = rebuilt.load_state_dict(svimo.state_dict(), strict=False)
        if missing:
            raise RuntimeError(f"the warm-up's SViMo lacks {missing[:3]}")
        svimo = rebuilt
    if cfg.train.lora_rank:
        lora.add_lora(svimo, cfg.train)
    svimo.config = vid.config = cfg
    return svimo, vid


# ---------------------------------------------------------------------------------------------
# Evaluation and the report
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Scores:
    """What evaluating every row on every split gave, once per training seed (in the order of
    ablation.seeds)."""

    tables: dict[str, dict[str, list[dict[str, float]]]]
    """{split: {row: [table values per seed]}}."""
    clips: dict[str, dict[str, list[dict[str, dict[str, float]]]]]
    """{split: {row: [{sample: per-sample values} per seed]}}, from each clips.csv."""
    truth: dict[str, dict[str, float]]
    """{split: the ground truth's reference-free row} (the same clips for every row)."""

    def mean(self, split: str) -> dict[str, dict[str, float]]:
        """{row: each column's mean over the seeds}, the ground truth's row last."""
        return {row: {k: _mean([t.get(k, math.nan) for t in per_seed])
                      for k in per_seed[0]}
                for row, per_seed in self.tables[split].items()} | {TRUTH: self.truth[split]}

    def se(self, split: str) -> dict[str, dict[str, float]]:
        """{row: each column's standard error over the seeds} (NaN with one seed)."""
        return {row: {k: standard_error([t.get(k, math.nan) for t in per_seed])
                      for k in per_seed[0]}
                for row, per_seed in self.tables[split].items()}

    def paired(self, split: str, row: str, key: str) -> tuple[float, float, int, list[float]]:
        """`row` minus REFERENCE on the same samples: the mean difference; its standard
        error, from the spread over the samples (of the differences averaged over the seeds)
        and over the training seeds (of each seed's mean difference) together, the root of
        the sum of the two squared; the number of samples, and each seed's mean difference."""
        per_seed = [{clip: values[key] - ref[clip][key] for clip, values in ours.items()}
                    for ours, ref in zip(self.clips[split][row], self.clips[split][REFERENCE],
                                         strict=True)]
        by_clip = [_mean([d[clip] for d in per_seed]) for clip in per_seed[0]]
        by_seed = [_mean(list(d.values())) for d in per_seed]
        errors = [e for e in map(standard_error, (by_clip, by_seed)) if math.isfinite(e)]
        return (_mean(by_clip), math.sqrt(sum(e * e for e in errors)) if errors else math.nan,
                len(by_clip), by_seed)


REFERENCE = "SViMo w/o VID"
"""The row the others are paired against: the same SViMo without VID."""
PAIRED = ("mpjpe_mm", "chamfer_cm2", "msmoo_mm", "psnr", "ssim", "vmc_hit")
"""The per-clip columns of the paired differences: those better one way (not Hand-tool)."""


def evaluate_rows(cfg: Config, out: Path, rows: list = ROWS) -> Scores:
    """One `hoi.evaluation.run` per training seed, row and split (kept as
    eval/seed<s>/<model>/<split>/ and reused on a rerun)."""
    scores = Scores({s: {} for s in SPLITS}, {s: {} for s in SPLITS}, {})
    for seed in cfg.ablation.seeds:
        for split in SPLITS:
            for row, model, _ in rows:
                target = out / "eval" / f"seed{seed}" / model / split
                result = target / "table.json"
                if not result.is_file():
                    e = dataclasses.replace(
                        cfg.evaluate, model=str(out / "models" / f"seed{seed}" / model),
                        split=split, name=row, shards=cfg.prepare.output, output=str(target),
                        motion_autoencoder=str(out / "motion_autoencoder"))
                    log.info("ablation: evaluating %s (seed %d) on %s", row, seed, split)
                    table = evaluation.run(dataclasses.replace(cfg, evaluate=e))["table"]
                    result.write_text(json.dumps(table))
                table = json.loads(result.read_text())
                scores.tables[split].setdefault(row, []).append(table[row])
                scores.clips[split].setdefault(row, []).append(_read_clips(target / "clips.csv"))
                scores.truth[split] = table[TRUTH]
    return scores


def _read_clips(path: Path) -> dict[str, dict[str, float]]:
    """{"<clip_id>/<sampling seed>": that sample's values} of an evaluation's clips.csv."""
    with path.open() as f:
        return {f"{r['clip_id']}/{r['seed']}": {k: float(r[k]) if r[k] else math.nan
                                                for k, *_ in evaluation.COLUMNS if k in r}
                for r in csv.DictReader(f)}


def write_report(cfg: Config, out: Path, scores: Scores,
                 histories: dict[int, dict[str, list[dict[str, float]]]],
                 timings: dict[str, float]) -> Path:
    """results.md, results.csv (every seed's row, then, with several seeds, their mean and
    standard error), paired.csv, metrics.png, losses.png."""
    heads = {key: (head, up, fmt) for key, head, up, fmt in evaluation.COLUMNS}
    seeds = list(cfg.ablation.seeds)
    spread = (f"the mean over the {len(seeds)} training seeds {seeds}, +- its standard error"
              if len(seeds) > 1 else f"training seed {seeds[0]}")
    lines = ["# Ablation at small scale (paper tables 3 and 4)", "",
             f"svimo-small, {_count(cfg)}; every variant: warm-up {cfg.loop.vid_warmup_steps} "
             f"steps (shared), then {cfg.ablation.joint_steps} joint steps of "
             f"{cfg.train.batch_size} clips at lr {cfg.train.learning_rate}; sampling "
             f"{cfg.evaluate.num_steps} steps, seeds {list(cfg.evaluate.seeds)}. Held out: "
             f"`{cfg.prepare.holdout}`. Each cell: {spread}.", ""]
    for split in SPLITS:
        mean, se = scores.mean(split), scores.se(split)
        lines += [f"## Ours, {split} split", "",
                  "| variant | " + " | ".join(
                      evaluation.heading(*heads[k][:2]) for k in SHOWN) + " |",
                  "|" + " --- |" * (len(SHOWN) + 1)]
        for row, values in mean.items():
            cells = [_cell(values.get(k), heads[k][2],
                           None if row == TRUTH else _best(mean, k, heads[k][1]),
                           se.get(row, {}).get(k)) for k in SHOWN]
            lines.append(f"| {row} | " + " | ".join(cells) + " |")
        lines.append("")
    paired_rows = []
    if REFERENCE in scores.tables[SPLITS[0]] and len(scores.tables[SPLITS[0]]) > 1:
        for split in SPLITS:
            others = [row for row in scores.tables[split] if row != REFERENCE]
            reference = scores.clips[split][REFERENCE][0]
            keys = [k for k in PAIRED if k in next(iter(reference.values()))]
            n = len(reference)
            lines += [f"## Paired against {REFERENCE}, {split} split", "",
                      f"Each row's value minus {REFERENCE}'s on the same sample ({n} samples), "
                      f"averaged over them and the training seeds, +- its standard error (the "
                      f"spreads over the samples and over the seeds together); in brackets each "
                      f"seed's mean difference. Negative is better where ↓.", "",
                      "| variant | " + " | ".join(
                          evaluation.heading(*heads[k][:2]) for k in keys) + " |",
                      "|" + " --- |" * (len(keys) + 1)]
            for row in others:
                cells = []
                for k in keys:
                    diff, err, clips, per_seed = scores.paired(split, row, k)
                    paired_rows.append([split, row, k, diff, err, clips, *per_seed])
                    fmt = heads[k][2]
                    cells.append(f"{fmt.format(diff)} +- {fmt.format(err)} ("
                                 + ", ".join(fmt.format(d) for d in per_seed) + ")")
                lines.append(f"| {row} | " + " | ".join(cells) + " |")
            lines.append("")
    lines += ["## The paper's tables 3 and 4", "",
              "| variant | " + " | ".join(PAPER_COLUMNS) + " |",
              "|" + " --- |" * (len(PAPER_COLUMNS) + 1)]
    lines += [f"| {row} | " + " | ".join(f"{v:.4f}" for v in values) + " |"
              for row, values in PAPER.items()]
    lines += ["", "Timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()), "",
              "![metrics](metrics.png)", "", "![losses](losses.png)", ""]
    report = out / "results.md"
    report.write_text("\n".join(lines))
    keys = [k for k, *_ in evaluation.COLUMNS]
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["split", "variant", "train_seed", *keys])
        for split in SPLITS:
            stats = ({"mean": scores.mean(split), "se": scores.se(split)}
                     if len(seeds) > 1 else {})
            for row, per_seed in scores.tables[split].items():
                for seed, values in zip(seeds, per_seed, strict=True):
                    writer.writerow([split, row, seed, *[values.get(k, "") for k in keys]])
                for stat, table in stats.items():
                    writer.writerow([split, row, stat, *[table[row].get(k, "") for k in keys]])
            writer.writerow([split, TRUTH, "", *[scores.truth[split].get(k, "") for k in keys]])
    with open(out / "paired.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["split", "variant", "metric", f"minus {REFERENCE}", "se", "clips",
                         *[f"seed {s}" for s in seeds]])
        writer.writerows(paired_rows)
    plot_metrics(scores, out / "metrics.png")
    plot_losses(histories[seeds[0]], out / "losses.png", title=f"training seed {seeds[0]}")
    return report


def plot_metrics(scores: Scores, path: Path) -> None:
    """One panel per motion/video metric: a bar per variant (the mean over the training
    seeds, with its standard error), per split."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    keys = ("mpjpe_mm", "chamfer_cm2", "fid", "psnr", "vmc_hit", "hand_tool_mm")
    heads = {key: head for key, head, *_ in evaluation.COLUMNS}
    rows = list(scores.tables[SPLITS[0]])
    fig = Figure(figsize=(15, 7), dpi=100)
    FigureCanvasAgg(fig)
    for ax, key in zip(fig.subplots(2, 3).flat, keys, strict=True):
        width = 0.8 / len(SPLITS)
        for i, split in enumerate(SPLITS):
            mean, se = scores.mean(split), scores.se(split)
            ax.bar([x + (i - (len(SPLITS) - 1) / 2) * width for x in range(len(rows))],
                   [mean[r].get(key, math.nan) for r in rows], width=width, label=split,
                   yerr=[se[r].get(key, math.nan) for r in rows], capsize=3)
        truth = scores.truth[SPLITS[0]].get(key)
        if truth is not None and math.isfinite(truth):
            ax.axhline(truth, color="k", ls="--", lw=1, label=TRUTH)
        ax.set_xticks(range(len(rows)), [r.replace(" ", "\n", 1) for r in rows], fontsize=7)
        ax.set_title(heads[key])
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)


def plot_losses(histories: dict[str, list[dict[str, float]]], path: Path, *, title: str,
                window: int = 25) -> None:
    """SViMo's video and motion latent losses per variant over the joint steps (moving
    average), like the paper's figure 7."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4), dpi=100)
    FigureCanvasAgg(fig)
    for ax, key in zip(fig.subplots(1, 2), ("svimo_video", "svimo_motion"), strict=True):
        for variant, history in histories.items():
            values = torch.tensor([h[key] for h in history if key in h])
            if len(values) >= window:
                values = values.unfold(0, window, 1).mean(dim=1)
            ax.plot([h["step"] for h in history][-len(values):], values.tolist(), label=variant)
        ax.set(title=f"{key} (moving average of {window}), {title}", xlabel="step",
               yscale="log")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)


def _count(cfg: Config) -> str:
    p = cfg.prepare
    return (f"{p.num_train} train clips, {p.num_val} val clips (new seeds), {p.num_heldout} "
            f"held-out clips")


def _best(table: dict[str, dict[str, float]], key: str, up: bool | None) -> float | None:
    """The best row's value: the highest, the lowest, or (up None) the nearest the ground
    truth's."""
    values = [v[key] for row, v in table.items()
              if row != TRUTH and math.isfinite(v.get(key, math.nan))]
    if not values:
        return None
    if up is None:
        truth = table.get(TRUTH, {}).get(key, math.nan)
        return min(values, key=lambda v: abs(v - truth)) if math.isfinite(truth) else None
    return max(values) if up else min(values)


def _cell(value: float | None, fmt: str, best: float | None, se: float | None = None) -> str:
    if value is None or not math.isfinite(value):
        return ""
    text = fmt.format(value)
    text = f"**{text}**" if best is not None and fmt.format(best) == text else text
    return f"{text} +- {fmt.format(se)}" if se is not None and math.isfinite(se) else text


def _mean(values: list[float]) -> float:
    return float(np.mean(values))
