"""`jobs/evaluate.py`: sample held-out clips with a model and score them with every metric.

1. The interaction FID's motion autoencoder: loaded, or trained once on the train split's
   motions and saved (`evaluate.motion_autoencoder`).
2. Ray Data streams the held-out clips (`read_clips`) to an actor pool; each actor holds one
   `SViMoPipeline` and the feature networks, samples each clip's first frame + prompt once
   per seed, and scores the sample against the clip (`score`).
3. The driver averages per clip, computes the set metrics (interaction FID, FVD) and writes
   `table.md` / `table.csv` (the paper's columns, then ours), `clips.csv` (one row per clip
   and seed) and `plots.png` to `evaluate.output` (local or s3://, like every input). The ground truth's own row is there too:
   the level of the reference-free metrics on real data.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import math
from typing import Any

import numpy as np
import ray
import torch

from hoi import resources
from hoi.artifacts import find_model
from hoi.config import Config
from hoi.data.shards import read_clips, read_motions
from hoi.geometry.motion import pack, to_camera, unpack
from hoi.metrics.autoencoder import MotionAutoencoder, train_motion_autoencoder
from hoi.metrics.consistency import (
    contact_stability,
    hand_object_penetration,
    video_motion_consistency,
)
from hoi.metrics.frechet import frechet_distance_features
from hoi.metrics.motion import hand_tool_distance, motion_smoothness, mpjpe, object_chamfer
from hoi.metrics.video import (
    ClipFeatures,
    DinoFeatures,
    TorchScriptI3D,
    dynamic_degree,
    psnr,
    ssim,
    subject_consistency,
    temporal_smoothness,
)
from hoi.metrics.video import background_consistency as bkg_consistency
from hoi.metrics.video import overall as overall_score
from hoi.pipeline import SViMoPipeline
from hoi.resources import Reservation, ResourceError
from hoi.storage import (
    absolute,
    exists,
    join,
    local_dir,
    local_file,
    makedirs,
    write_bytes,
    write_text,
)

log = logging.getLogger(__name__)

# (column, heading, higher is better (None: nearest the ground truth's value is), format): the
# paper's columns (tables 1, 3, 4), then ground-truth-referenced video scores, then the metrics
# the paper lacks.
COLUMNS = [
    ("subj", "Subj.", True, "{:.4f}"), ("bkg", "Bkg.", True, "{:.4f}"),
    ("tsmoo", "TSmoo.", True, "{:.4f}"), ("dyn", "Dyn.", True, "{:.4f}"),
    ("overall", "Overall", True, "{:.4f}"),
    ("mpjpe_mm", "MPJPE (mm)", False, "{:.1f}"), ("msmoo_mm", "MSmoo. (mm)", False, "{:.2f}"),
    ("chamfer_cm2", "Cham. (cm²)", False, "{:.2f}"), ("fid", "FID", False, "{:.3f}"),
    ("psnr", "PSNR (dB)", True, "{:.2f}"), ("ssim", "SSIM", True, "{:.4f}"),
    ("fvd", "FVD", False, "{:.1f}"),
    ("vmc_hit", "VMC hit", True, "{:.3f}"), ("vmc_px", "VMC px", False, "{:.2f}"),
    ("pen_mm", "Pen. (mm)", False, "{:.2f}"), ("contact", "Contact", True, "{:.3f}"),
    ("hand_tool_mm", "Hand-tool (mm)", None, "{:.1f}"),
]


READ_CPUS = 0.25
"""CPUs of each task that reads held-out clips."""
TRUTH = "ground truth"
"""The table row of the held-out clips' own reference-free scores."""


class EvaluateError(RuntimeError):
    """The evaluation cannot start (no model, no held-out clips)."""


def run(cfg: Config) -> dict[str, Any]:
    """Evaluate cfg.evaluate.model on the held-out split; Ray must be initialised. Returns the
    table rows {name: {column: value}} and the output paths."""
    e = cfg.evaluate
    shards = e.shards or cfg.train.shards
    output = absolute(e.output)
    cfg = dataclasses.replace(cfg, evaluate=dataclasses.replace(
        e, output=output, shards=absolute(shards),
        model=absolute(cfg.model_path(e.model)),
        motion_autoencoder=absolute(e.motion_autoencoder
                                     or join(output, "motion_autoencoder"))))
    e = cfg.evaluate
    try:  # the actors and a read task at once, or the actors wait for the reads forever
        log.info("resources: %s", resources.check([
            Reservation("evaluation actor", {"CPU": e.cpus_per_actor, "GPU": e.gpus_per_actor},
                        e.concurrency),
            Reservation("read task", {"CPU": READ_CPUS}, 1)]))
    except ResourceError as err:
        raise EvaluateError(f"{err}: lower evaluate.concurrency, cpus_per_actor or "
                            f"gpus_per_actor") from None
    try:
        model_dir = find_model(e.model, cfg.storage)
        clips = read_clips(e.shards, cfg.storage, split=e.split, num_cpus=READ_CPUS)
    except FileNotFoundError as err:
        raise EvaluateError(str(err)) from None
    ensure_motion_autoencoder(cfg)
    if e.limit is not None:
        clips = clips.limit(e.limit)
    scored = clips.map_batches(
        ClipEvaluator, fn_constructor_kwargs={"cfg": cfg, "model_dir": model_dir},
        batch_size=1, compute=ray.data.ActorPoolStrategy(size=e.concurrency),
        num_cpus=e.cpus_per_actor, num_gpus=e.gpus_per_actor or None)
    rows = [json.loads(r["scores"]) for r in scored.iter_rows()]
    if not rows:
        raise EvaluateError(f"no {e.split} clips under {e.shards!r}")
    name = e.name or _model_name(model_dir)
    table = {name: aggregate([r["sample"] for r in rows]),
             TRUTH: aggregate([r["truth"] for r in rows])}
    table[name] |= set_metrics(rows)
    out, storage = e.output, cfg.storage
    makedirs(out, storage)
    markdown = table_markdown(table)
    write_text(join(out, "table.md"), markdown, storage)
    write_text(join(out, "table.csv"), table_csv(table), storage)
    write_text(join(out, "clips.csv"), clips_csv([r["sample"] | r["ids"] for r in rows]),
               storage)
    write_bytes(join(out, "plots.png"), plot(rows, name), storage)
    return {"table": table, "markdown": markdown, "output": out, "clips": len(rows)}


# ---------------------------------------------------------------------------------------------
# Per clip, in the actors
# ---------------------------------------------------------------------------------------------


class ClipEvaluator:
    """A Ray Data actor: clips in, one JSON row of scores per clip and seed out."""

    def __init__(self, cfg: Config, model_dir: str) -> None:
        e = cfg.evaluate
        self.cfg = cfg
        storage = cfg.storage
        self.pipe = SViMoPipeline.from_pretrained(model_dir, storage)
        self.autoencoder = MotionAutoencoder.from_pretrained(e.motion_autoencoder, storage)
        # the feature networks from local or s3:// paths (copied to a temporary directory)
        self.dino = self.clip = self.i3d = None
        if e.dino:
            with local_dir(e.dino, storage) as path:
                self.dino = DinoFeatures.from_pretrained(path)
        if e.clip:
            with local_dir(e.clip, storage) as path:
                self.clip = ClipFeatures.from_pretrained(path)
        if e.i3d:
            with local_file(e.i3d, storage) as path:
                self.i3d = TorchScriptI3D.from_pretrained(path)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[str]]:
        out = []
        for i in range(len(batch["clip_id"])):
            clip = {k: v[i] for k, v in batch.items()}
            truth = self.truth(clip)
            for seed in self.cfg.evaluate.seeds:
                e = self.cfg.evaluate
                gen = self.pipe(clip["video"][0], str(clip["prompt"]), num_steps=e.num_steps,
                                seed=seed, mode=e.mode, K=clip["K"],
                                video=clip["video"] if e.mode == "video_to_motion" else None)
                out.append(json.dumps(self.score(gen, clip, truth, seed)))
        return {"scores": out}

    def truth(self, clip: dict[str, Any]) -> dict[str, Any]:
        """The clip's ground truth in the camera frame, batched (B = 1)."""
        joints, points = unpack(camera_motion(clip["joints"], clip["points"], clip["R"],
                                              clip["T"])[None])
        return {"video": torch.tensor(clip["video"])[None],
                "motion_video": torch.tensor(clip["motion_video"])[None],
                "joints": joints, "points": points, "K": torch.tensor(clip["K"])[None]}

    def score(self, gen, clip: dict[str, Any], truth: dict[str, Any], seed: int
              ) -> dict[str, Any]:
        """{"ids", "sample": scores vs the truth, "truth": the truth's own reference-free
        scores, "features": for the set metrics}."""
        video = torch.tensor(gen.video)[None]
        joints, points = torch.tensor(gen.joints)[None], torch.tensor(gen.points)[None]
        stream = torch.tensor(gen.stream_motion_video)[None]
        t = truth
        sample = self.video_scores(video) | self.motion_scores(joints, points, stream, t["K"])
        sample |= {
            "psnr": psnr(video, t["video"]).item(), "ssim": ssim(video, t["video"]).item(),
            "mpjpe_mm": 1000 * mpjpe(joints, t["joints"]).item(),
            "msmoo_mm": 1000 * motion_smoothness(joints, t["joints"]).item(),
            "chamfer_cm2": 1e4 * object_chamfer(points, t["points"]).item()}
        reference = (self.video_scores(t["video"])
                     | self.motion_scores(t["joints"], t["points"], t["motion_video"], t["K"]))
        features = {"motion": self.autoencoder.encode(pack(joints, points)).tolist(),
                    "truth_motion": self.autoencoder.encode(
                        pack(t["joints"], t["points"])).tolist()}
        if self.i3d is not None:
            features |= {"video": self.i3d(video).tolist(),
                         "truth_video": self.i3d(t["video"]).tolist()}
        ids = {"clip_id": str(clip["clip_id"]), "seed": seed, "action": str(clip["action"]),
               "tool": str(clip["tool"]), "target": str(clip["target"])}
        return {"ids": ids, "sample": sample, "truth": reference, "features": features}

    def video_scores(self, video: torch.Tensor) -> dict[str, float]:
        """Reference-free video metrics of one video (1, N, H, W, 3)."""
        scores = {"tsmoo": temporal_smoothness(video).item(),
                  "dyn": dynamic_degree(video, fps=self.cfg.data.fps).item(),
                  "subj": math.nan, "bkg": math.nan}
        if self.dino is not None:
            scores["subj"] = subject_consistency(video, self.dino).item()
        if self.clip is not None:
            scores["bkg"] = bkg_consistency(video, self.clip).item()
        return scores

    @staticmethod
    def motion_scores(joints: torch.Tensor, points: torch.Tensor, motion_video: torch.Tensor,
                      K: torch.Tensor) -> dict[str, float]:
        """Reference-free motion metrics, and the motion against a motion video."""
        eye, zero = torch.eye(3)[None], torch.zeros(1, 3)
        vmc = video_motion_consistency(joints, points, K, eye, zero, motion_video)
        return {"vmc_hit": vmc.hit_rate.item(), "vmc_px": vmc.pixel_error.item(),
                "pen_mm": 1000 * hand_object_penetration(joints, points).depth.item(),
                "contact": contact_stability(joints, points).item(),
                "hand_tool_mm": 1000 * hand_tool_distance(joints, points).item()}


# ---------------------------------------------------------------------------------------------
# Over the set
# ---------------------------------------------------------------------------------------------


def aggregate(rows: list[dict[str, float]]) -> dict[str, float]:
    """Mean of each metric over rows, ignoring NaN (undefined for a clip); Overall as the
    product of the four VBench means."""
    names = {k for r in rows for k in r}
    table = {k: _nanmean([r.get(k, math.nan) for r in rows]) for k in names}
    table["overall"] = overall_score(table["subj"], table["bkg"], table["tsmoo"], table["dyn"])
    return table


def set_metrics(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Interaction FID (and FVD when I3D features exist) of the samples against the truth."""
    feats = {k: np.array([f for r in rows for f in r["features"][k]])
             for k in rows[0]["features"]}
    if len(rows) < 2:
        log.warning("FID and FVD need two or more samples, there is %d: left empty", len(rows))
        return {}
    metrics = {"fid": frechet_distance_features(feats["motion"], feats["truth_motion"])}
    if "video" in feats:
        metrics["fvd"] = frechet_distance_features(feats["video"], feats["truth_video"])
    return metrics


def ensure_motion_autoencoder(cfg: Config) -> None:
    """Train the FID's autoencoder on the train split's camera-frame motions unless it exists
    (local or s3://). Only the motion columns of the shards are read, no video."""
    path, storage = cfg.evaluate.motion_autoencoder, cfg.storage
    if exists(join(path, "config.json"), storage):
        return
    rows = read_motions(cfg.evaluate.shards, storage, "train")
    motions = torch.stack([camera_motion(m["joints"], m["points"], m["R"], m["T"])
                           for m in rows])
    log.info("training the interaction-FID motion autoencoder on %d train motions", len(rows))
    model, losses = train_motion_autoencoder(motions, steps=cfg.evaluate.autoencoder_steps)
    log.info("motion autoencoder: loss %.4f -> %.4f", losses[0], losses[-1])
    model.save_pretrained(path, storage)


def camera_motion(joints: np.ndarray, points: np.ndarray, R: np.ndarray, T: np.ndarray
                  ) -> torch.Tensor:
    """A clip's world-frame joints (N, 42, 3) and points (N, 298, 3) -> camera-frame motion
    (N, 340, 3), the frame samples are generated in."""
    motion = pack(torch.tensor(joints), torch.tensor(points))[None]
    return to_camera(motion, torch.tensor(R)[None], torch.tensor(T)[None])[0]


def heading(head: str, up: bool | None) -> str:
    """A column's heading with an arrow saying which way is better; none where the ground
    truth's value is best."""
    return head if up is None else f"{head} {'↑' if up else '↓'}"


def table_markdown(table: dict[str, dict[str, float]]) -> str:
    """table.md: arrows say which way is better; empty: not computed."""
    heads = [heading(head, up) for _, head, up, _ in COLUMNS]
    lines = ["| model | " + " | ".join(heads) + " |", "|" + " --- |" * (len(COLUMNS) + 1)]
    for name, values in table.items():
        cells = [_cell(values.get(key), fmt) for key, _, _, fmt in COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def table_csv(table: dict[str, dict[str, float]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["model", *[key for key, *_ in COLUMNS]])
    for name, values in table.items():
        writer.writerow([name, *[values.get(key, "") for key, *_ in COLUMNS]])
    return out.getvalue()


def clips_csv(rows: list[dict[str, Any]]) -> str:
    keys = ["clip_id", "seed", "action", "tool", "target",
            *[k for k, *_ in COLUMNS if k in rows[0]]]
    out = io.StringIO()
    writer = csv.DictWriter(out, keys, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def plot(rows: list[dict[str, Any]], name: str) -> bytes:
    """PNG: per-clip MPJPE and PSNR histograms, and the reference-free metrics of the samples
    next to the ground truth's."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 3.6), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3)
    for ax, key, label in ((axes[0], "mpjpe_mm", "MPJPE (mm)"), (axes[1], "psnr", "PSNR (dB)")):
        ax.hist([r["sample"][key] for r in rows], bins=min(20, max(3, len(rows))))
        ax.set(xlabel=label, ylabel="samples", title=f"{label} per sample")
    keys = ["tsmoo", "dyn", "vmc_hit", "contact"]
    x = np.arange(len(keys))
    for offset, (which, label) in zip((-0.2, 0.2), (("sample", name), ("truth", TRUTH)),
                                      strict=True):
        values = [_nanmean([r[which][k] for r in rows]) for k in keys]
        axes[2].bar(x + offset, values, width=0.4, label=label)
    axes[2].set_xticks(x, keys)
    axes[2].set(title="reference-free metrics", ylim=(0, 1.05))
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png")
    return png.getvalue()


def _cell(value: float | None, fmt: str) -> str:
    return "" if value is None or not math.isfinite(value) else fmt.format(value)


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def _model_name(model_dir: str) -> str:
    parts = model_dir.rstrip("/").split("/")
    return "/".join(parts[-3:-1]) if parts[-1] == "model" else parts[-1]
