"""jobs/evaluate.py end to end on a tiny checkpoint, on S3: tables, per-clip rows, plots."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import pytest
import torch
from transformers import CLIPConfig, CLIPModel, ViTConfig, ViTModel

from hoi.config import StorageConfig
from hoi.storage import exists, join, read_bytes, read_text, write_bytes
from hoi.untrained import write_untrained_model
from jobs.evaluate import main
from tests.train.inputs import TRAIN_CLIPS, write_train_inputs


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


class TinyI3D(torch.nn.Module):
    """Stands in for i3d_torchscript.pt: its call signature, mean colour and motion."""

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = True,
                return_features: bool = True) -> torch.Tensor:
        motion = (x[:, :, 1:] - x[:, :, :-1]).abs().mean(dim=(2, 3, 4))
        return torch.cat([x.mean(dim=(2, 3, 4)), motion], dim=1)


def _upload(local: Path, root: str, storage: StorageConfig) -> None:
    for path in local.rglob("*"):
        if path.is_file():
            write_bytes(join(root, path.relative_to(local).as_posix()), path.read_bytes(),
                        storage)


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_evaluate_on_s3_writes_the_table(ray_local: None, s3, tmp_path: Path, capsys) -> None:
    """Everything on S3 (moto): shards, model, codec, DINO, CLIP, the I3D file, the motion
    autoencoder it trains and the tables it writes; FVD from the TorchScript I3D."""
    root = s3.fresh_root()
    overrides = write_train_inputs(root, s3.storage)
    model = write_untrained_model(f"{root}/m", s3.storage)
    networks = tmp_path / "networks"
    names = tiny_feature_networks(networks)
    torch.jit.save(torch.jit.script(TinyI3D()), str(networks / "i3d_torchscript.pt"))
    _upload(networks, f"{root}/networks", s3.storage)
    out = f"{root}/eval"
    argv = [*overrides, "--storage.endpoint_url", s3.endpoint_url,
            "--evaluate.dino", f"{root}/networks/dino", "--evaluate.clip",
            f"{root}/networks/clip", "--evaluate.i3d", f"{root}/networks/i3d_torchscript.pt",
            "--evaluate.model", model, "--evaluate.split", "train", "--evaluate.limit", "3",
            "--evaluate.seeds", "[0, 1]", "--evaluate.num_steps", "2", "--evaluate.output", out,
            "--evaluate.cpus_per_actor", "0.5", "--evaluate.name", "tiny",
            "--evaluate.autoencoder_steps", "20"]
    assert names and main(argv) == 0
    table = {row["model"]: row for row in csv.DictReader(
        io.StringIO(read_text(f"{out}/table.csv", s3.storage)))}
    assert set(table) == {"tiny", "ground truth"}
    tiny, truth = table["tiny"], table["ground truth"]
    for key in ("subj", "bkg", "tsmoo", "dyn", "overall", "mpjpe_mm", "chamfer_cm2", "fid",
                "fvd", "psnr", "ssim", "vmc_hit", "pen_mm"):
        assert math.isfinite(float(tiny[key])), key
    assert truth["mpjpe_mm"] == ""  # no ground truth for the ground truth
    # the truth's own motion video shows its joints where they project
    assert float(truth["vmc_hit"]) > 0.95
    overall = float(tiny["subj"]) * float(tiny["bkg"]) * float(tiny["tsmoo"]) * float(tiny["dyn"])
    assert abs(float(tiny["overall"]) - overall) < 1e-6
    clips = list(csv.DictReader(io.StringIO(read_text(f"{out}/clips.csv", s3.storage))))
    assert len(clips) == 3 * 2 and {c["seed"] for c in clips} == {"0", "1"}
    assert len(read_bytes(f"{out}/plots.png", s3.storage)) > 10_000
    assert exists(f"{out}/motion_autoencoder/config.json", s3.storage)
    assert "| tiny |" in read_text(f"{out}/table.md", s3.storage)
    assert f"{len(clips)} samples" in capsys.readouterr().out
    assert TRAIN_CLIPS >= 3
    assert not Path("s3:").exists()  # nothing written to a local folder named after S3


def test_actors_that_would_starve_the_reads_are_refused(ray_local: None, capsys) -> None:
    # two 1-CPU actors on the 2-CPU test cluster leave nothing to read the clips with
    assert main(["--flavour", "svimo-tiny", "--evaluate.concurrency", "2",
                 "--evaluate.cpus_per_actor", "1"]) == 2
    err = capsys.readouterr().err
    assert "reserves 2.25 CPU" in err and "lower evaluate.concurrency, cpus_per_actor" in err
