"""Train SViMo + VID with the closed loop in this one process, then sample in every mode.

    python jobs/train_local.py --config configs/default.yaml --steps 600 --out outputs/local

Reads the shards at prepare.output (train and val splits). Writes svimo/ and vid/ (our
checkpoint format; svimo-masked/ and vid-masked/ after the masked stage), history.json (loss
terms per step), metrics.json (per sampling mode, on validation clips) and
previews/<mode>.{mp4,png} (and <mode>-gallery.png). For cluster-scale training use
jobs/train.py.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from hoi.cli import job_parser, parse_job
from hoi.config import ConfigError
from hoi.diffusion.sampler import MODES
from hoi.model.encoders import load_encoders
from hoi.train.local import evaluate, load_clips, train_local


def main(argv: list[str] | None = None) -> int:
    parser = job_parser(__doc__)
    parser.add_argument("--steps", type=int, default=600, help="optimiser steps")
    parser.add_argument("--batch-size", type=int, default=4, help="clips per step")
    parser.add_argument("--lr", type=float, default=1e-3, help="peak AdamW learning rate")
    parser.add_argument("--mask-steps", type=int, default=100,
                        help="extra steps with the asymmetric motion mask (CoInteract's second "
                             "stage), saved as svimo-masked/ and vid-masked/ for the video-only "
                             "mode; 0: none")
    parser.add_argument("--eval-clips", type=int, default=4, help="validation clips sampled")
    parser.add_argument("--sample-steps", type=int, default=50, help="sampling steps")
    parser.add_argument("--out", default="outputs/local", help="output directory")
    args, cfg = parse_job(parser, argv, "train_local")
    if cfg is None:
        return 2
    try:
        vae, text_encoder = load_encoders(cfg)
    except (ConfigError, OSError) as e:
        print(f"train_local: {e}", file=sys.stderr)
        return 2
    train = load_clips(cfg.prepare.output, "train", cfg, cfg.storage)
    val = load_clips(cfg.prepare.output, "val", cfg, cfg.storage, limit=args.eval_clips)
    svimo, vid, history = train_local(cfg, train, vae, text_encoder, steps=args.steps,
                                      batch_size=args.batch_size, lr=args.lr)
    out = Path(args.out)
    svimo.save_pretrained(str(out / "svimo"))
    vid.save_pretrained(str(out / "vid"))
    metrics = evaluate(cfg, svimo, vid, vae, text_encoder, val, num_steps=args.sample_steps,
                       out_dir=out / "previews", modes=MODES[:-1])
    if args.mask_steps:
        svimo.set_motion_mask(True)
        svimo, vid, more = train_local(cfg, train, vae, text_encoder, steps=args.mask_steps,
                                       batch_size=args.batch_size, lr=args.lr,
                                       models=(svimo, vid), start_step=args.steps)
        history += more
        svimo.save_pretrained(str(out / "svimo-masked"))
        vid.save_pretrained(str(out / "vid-masked"))  # VID trains on in this stage too
        masked = evaluate(cfg, svimo, vid, vae, text_encoder, val, num_steps=args.sample_steps,
                          out_dir=out / "previews-masked", modes=("joint", "video_only"))
        metrics |= {f"masked_{mode}": row for mode, row in masked.items()}
    (out / "history.json").write_text(json.dumps(history))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(json.dumps({"steps": len(history), "final_loss": history[-1]["total"],
                      "metrics": metrics}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
