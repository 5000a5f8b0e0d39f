"""The paper's ablations (its tables 3 and 4) at small scale, end to end: `jobs/ablation.py`.

1. Shards with one action/target combination held out of training (`prepare.holdout`): the
   val split has new seeds, the heldout split only that combination.
2. VID warms up once (`loop.vid_warmup_steps`; SViMo's video stream with it where
   `loop.svimo_warmup`); every variant then trains on from a copy of both for the same joint
   steps, on the same clips, batches and noise (`train_local`, one process): full,
   guidance_only, gradient_only, no_vid, and the two halves of "VModel w/ Pred. Mot.",
   video_model and motion_model, exported together as one paired model; and table 4's
   even_layers (SViMo's motion modulation in even blocks only: the warm-up's weights less
   the odd blocks' motion modulation, which the warm-up does not train) and lora (adapters
   of rank ablation.lora_rank on the warm-up's SViMo, the motion stream in full; exported
   merged), both with the full closed loop.
3. `hoi.evaluation.run` scores each row on both splits (the same metrics as jobs/evaluate.py).
4. `results.md` (our rows next to the paper's), `results.csv`, `metrics.png` and
   `losses.png` (the video loss per variant, the paper's figure 7) in the output directory.

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

import torch

from hoi import evaluation
from hoi.artifacts import PIPELINE_NAME, export_networks
from hoi.config import Config, ConfigError
from hoi.data import prepare
from hoi.data.shards import load_clips
from hoi.evaluation import TRUTH
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
    initialised (prepare and evaluate use Ray Data). Returns {split: {row: {column: value}}}
    and the report's path."""
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
    tables = timed("evaluate", evaluate_rows, cfg, out, rows)
    timings["total"] = time.monotonic() - start
    report = write_report(cfg, out, tables, histories, timings)
    return {"tables": tables, "report": str(report), "timings": timings}


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


def train_variants(cfg: Config, root: Path, rows: list = ROWS, *,
                   progress: bool = True) -> dict[str, list[dict[str, float]]]:
    """Train what is missing under root: warmup/ (`_warm_up`), then one directory per
    variant; the separate models are exported together as separate/. Returns the loss
    history of every variant."""
    warmup_steps, joint_steps = cfg.loop.vid_warmup_steps, cfg.ablation.joint_steps
    variants = [v for *_, row_variants in rows for v in row_variants]
    histories: dict[str, list[dict[str, float]]] = {}
    missing = [v for v in variants if not (root / v / "history.json").is_file()]
    if missing:
        vae, text_encoder = load_encoders(cfg)
        clips = load_clips(cfg.prepare.output, "train", cfg.data, cfg.storage)
        clips = encode(cfg, clips, vae, text_encoder, progress=progress)
        warm = _warm_up(_with_variant(cfg, "full"), clips, vae, text_encoder, root / "warmup",
                        progress)
    for variant in variants:
        target = root / variant
        if variant in missing:
            log.info("ablation: training %s for %d joint steps", variant, joint_steps)
            svimo, vid = _from_warm_up(_with_variant(cfg, variant), *copy.deepcopy(warm))
            svimo, vid, history = train_local(svimo.config, clips, vae, text_encoder,
                                              steps=joint_steps, models=(svimo, vid),
                                              start_step=warmup_steps, progress=progress)
            if svimo.config.train.lora_rank:
                svimo = lora.merged(svimo, svimo.config.train)
            export_networks(target, svimo, vid, svimo.config, warmup_steps + joint_steps)
            (target / "history.json").write_text(json.dumps(history))
        histories[variant] = json.loads((target / "history.json").read_text())
    if "video_model" in variants:
        pair_separate(root)
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


def evaluate_rows(cfg: Config, out: Path, rows: list = ROWS
                  ) -> dict[str, dict[str, dict[str, float]]]:
    """{split: {row: table values}}, one `hoi.evaluation.run` per row and split (kept as
    eval/<model>/<split>/ and reused on a rerun); the ground truth's reference-free row too."""
    tables: dict[str, dict[str, dict[str, float]]] = {split: {} for split in SPLITS}
    for split in SPLITS:
        for row, model, _ in rows:
            target = out / "eval" / model / split
            result = target / "table.json"
            if not result.is_file():
                e = dataclasses.replace(
                    cfg.evaluate, model=str(out / "models" / model), split=split, name=row,
                    shards=cfg.prepare.output, output=str(target),
                    motion_autoencoder=str(out / "motion_autoencoder"))
                log.info("ablation: evaluating %s on %s", row, split)
                table = evaluation.run(dataclasses.replace(cfg, evaluate=e))["table"]
                result.write_text(json.dumps(table))
            table = json.loads(result.read_text())
            tables[split][row] = table[row]
        tables[split][TRUTH] = table[TRUTH]  # the same clips for every row
    return tables


def write_report(cfg: Config, out: Path,
                 tables: dict[str, dict[str, dict[str, float]]],
                 histories: dict[str, list[dict[str, float]]], timings: dict[str, float]
                 ) -> Path:
    """results.md, results.csv, metrics.png, losses.png."""
    heads = {key: (head, up, fmt) for key, head, up, fmt in evaluation.COLUMNS}
    lines = ["# Ablation at small scale (paper tables 3 and 4)", "",
             f"svimo-small, {_count(cfg)}; every variant: warm-up {cfg.loop.vid_warmup_steps} "
             f"steps (shared), then {cfg.ablation.joint_steps} joint steps of "
             f"{cfg.train.batch_size} clips at lr {cfg.train.learning_rate}; sampling {cfg.evaluate.num_steps} steps, seeds "
             f"{list(cfg.evaluate.seeds)}. Held out: `{cfg.prepare.holdout}`.", ""]
    for split in SPLITS:
        lines += [f"## Ours, {split} split", "",
                  "| variant | " + " | ".join(
                      f"{heads[k][0]} {'↑' if heads[k][1] else '↓'}" for k in SHOWN) + " |",
                  "|" + " --- |" * (len(SHOWN) + 1)]
        for row, values in tables[split].items():
            cells = [_cell(values.get(k), heads[k][2],
                           None if row == TRUTH else _best(tables[split], k, heads[k][1]))
                     for k in SHOWN]
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
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["split", "variant", *[k for k, *_ in evaluation.COLUMNS]])
        for split in SPLITS:
            for row, values in tables[split].items():
                writer.writerow([split, row, *[values.get(k, "") for k, *_ in
                                               evaluation.COLUMNS]])
    plot_metrics(tables, out / "metrics.png")
    plot_losses(histories, out / "losses.png")
    return report


def plot_metrics(tables: dict[str, dict[str, dict[str, float]]], path: Path) -> None:
    """One panel per motion/video metric: a bar per variant, per split."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    keys = ("mpjpe_mm", "chamfer_cm2", "fid", "psnr", "vmc_hit", "hand_tool_mm")
    heads = {key: head for key, head, *_ in evaluation.COLUMNS}
    rows = [row for row in tables[SPLITS[0]] if row != TRUTH]
    fig = Figure(figsize=(15, 7), dpi=100)
    FigureCanvasAgg(fig)
    for ax, key in zip(fig.subplots(2, 3).flat, keys, strict=True):
        width = 0.8 / len(SPLITS)
        for i, split in enumerate(SPLITS):
            values = [tables[split][r].get(key, math.nan) for r in rows]
            ax.bar([x + (i - (len(SPLITS) - 1) / 2) * width for x in range(len(rows))], values,
                   width=width, label=split)
        truth = tables[SPLITS[0]][TRUTH].get(key)
        if truth is not None and math.isfinite(truth):
            ax.axhline(truth, color="k", ls="--", lw=1, label=TRUTH)
        ax.set_xticks(range(len(rows)), [r.replace(" ", "\n", 1) for r in rows], fontsize=7)
        ax.set_title(heads[key])
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)


def plot_losses(histories: dict[str, list[dict[str, float]]], path: Path,
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
        ax.set(title=f"{key} (moving average of {window})", xlabel="step", yscale="log")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)


def _count(cfg: Config) -> str:
    p = cfg.prepare
    return (f"{p.num_train} train clips, {p.num_val} val clips (new seeds), {p.num_heldout} "
            f"held-out clips")


def _best(table: dict[str, dict[str, float]], key: str, up: bool) -> float | None:
    values = [v[key] for row, v in table.items()
              if row != TRUTH and math.isfinite(v.get(key, math.nan))]
    return (max(values) if up else min(values)) if values else None


def _cell(value: float | None, fmt: str, best: float | None) -> str:
    if value is None or not math.isfinite(value):
        return ""
    text = fmt.format(value)
    return f"**{text}**" if best is not None and fmt.format(best) == text else text
