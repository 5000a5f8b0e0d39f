"""Building the networks for a DeepSpeed ZeRO-3 run on two ranks (gloo, spawned processes):
SViMo is partitioned from its first parameter (no rank holds it whole), and both a fresh
build and a foundation checkpoint loaded into the partitions equal what one process builds
whole."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from cluster.local import free_port
from hoi.artifacts import export_networks
from hoi.config import ConfigError, load_config
from hoi.model.svimo import SViMo
from hoi.model.vid import VID
from hoi.train import lora
from hoi.train.engine import TrainSystem, build_engine, build_models, model_misfit
from tests.model.foundation import TINY_I2V, write_foundation

WORLD = 2


def _build_on_rank(rank: int, port: int, overrides: list[str], expected_path: str) -> None:
    import deepspeed

    # what a launcher (torchrun, Ray Train) sets for each rank
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_WORLD_SIZE=str(WORLD))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    cfg = load_config(flavour="svimo-tiny", overrides=["--train.zero_stage", "3", *overrides])
    svimo, vid = build_models(cfg, WORLD, torch.device("cpu"))
    params = list(svimo.named_parameters())
    for name, p in params:  # partitioned: an empty tensor, and this rank's share of it
        assert p.numel() == 0 and p.ds_tensor.numel() == math.ceil(p.ds_numel / WORLD), name
    assert not any(hasattr(p, "ds_id") for p in vid.parameters())  # VID: whole, until initialize
    # one dtype for all (ZeRO-3 requires it): the run's precision
    dtype = torch.bfloat16 if cfg.train.precision == "bf16" else torch.float32
    assert {p.dtype for p in [*svimo.parameters(), *vid.parameters()]} == {dtype}
    expected = torch.load(expected_path)
    with deepspeed.zero.GatheredParameters([p for _, p in params]):
        for name, p in params:
            assert torch.equal(p.data, expected[name].to(dtype)), name
    for name, buffer in svimo.named_buffers():
        # zero.Init makes torch's float constructors build in its dtype, so a fresh sin-cos
        # table is computed in float32 rather than float64 (3e-8 apart, the same on each rank)
        torch.testing.assert_close(buffer, expected[name], rtol=0, atol=1e-6)
    dist.barrier()  # neither rank tears the group down while the other is still in it
    dist.destroy_process_group()


def write_model(path: Path, overrides: list[str]) -> tuple[SViMo, VID]:
    """Export a seeded pair of random networks (no zero-initialised part left) to `path` in
    bf16, as the shipped foundation is; returns them, rounded to bf16 and back."""
    cfg = load_config(flavour="svimo-tiny", overrides=overrides)
    torch.manual_seed(1)
    svimo, vid = SViMo(cfg), VID(cfg)
    with torch.no_grad():
        for p in [*svimo.parameters(), *vid.parameters()]:
            p.normal_(0, 0.1)
    svimo, vid = svimo.to(torch.bfloat16), vid.to(torch.bfloat16)
    export_networks(path, svimo, vid, cfg, step=7)
    return svimo.float(), vid.float()


@pytest.mark.parametrize("start, precision", [("fresh", "fp32"), ("foundation", "bf16"),
                                              ("exported", "bf16")])
def test_zero3_builds_svimo_partitioned_and_equal_to_a_whole_build(start, precision,
                                                                   tmp_path: Path):
    overrides = [*TINY_I2V, "--train.precision", precision]
    if start == "foundation":
        write_foundation(tmp_path / "transformer")
        overrides += ["--train.init_from", str(tmp_path / "transformer")]
    if start == "exported":
        write_model(tmp_path / "model", TINY_I2V)
        overrides += ["--train.init_from", str(tmp_path / "model")]
    # the same function without ZeRO-3: the whole model, in this process
    cfg = load_config(flavour="svimo-tiny", overrides=[*overrides, "--train.zero_stage", "2"])
    whole, _ = build_models(cfg, 1, torch.device("cpu"))
    torch.save(whole.state_dict(), tmp_path / "expected.pt")
    mp.spawn(_build_on_rank, args=(free_port(), overrides, str(tmp_path / "expected.pt")),
             nprocs=WORLD, join=True)


def test_an_exported_model_initialises_both_networks(tmp_path: Path):
    """train.init_from naming an exported SViMo model (a checkpoint's model/, the shipped
    foundation): SViMo and VID both start from it, in training mode; one that does not fit
    the config is named before anything is loaded."""
    svimo, vid = write_model(tmp_path / "model", TINY_I2V)
    # a run directory whose latest complete checkpoint holds that model names it too
    checkpoint = tmp_path / "run" / "checkpoint-00000007"
    shutil.copytree(tmp_path / "model", checkpoint / "model")
    files = [str(f.relative_to(checkpoint)) for f in checkpoint.rglob("*") if f.is_file()]
    (checkpoint / "train_state.json").write_text(json.dumps({"step": 7, "files": files}))
    for init_from in ("model", "run"):
        cfg = load_config(flavour="svimo-tiny", overrides=[
            *TINY_I2V, "--train.zero_stage", "2", "--train.init_from", str(tmp_path / init_from)])
        built = build_models(cfg, 1, torch.device("cpu"))
        for network, expected in zip(built, (svimo, vid), strict=True):
            assert network.training and {p.dtype for p in network.parameters()} == {torch.float32}
            state = network.state_dict()
            assert state.keys() == expected.state_dict().keys()
            assert all(torch.equal(state[k], v) for k, v in expected.state_dict().items())
    assert model_misfit(str(tmp_path / "model"), cfg) is None
    deeper = load_config(flavour="svimo-tiny", overrides=[
        *TINY_I2V, "--model.num_layers", "3", "--train.init_from", str(tmp_path / "model")])
    misfit = model_misfit(str(tmp_path / "model"), deeper)
    assert misfit is not None and "SViMo" in misfit and "blocks.2" in misfit
    with pytest.raises(ConfigError, match="blocks.2"):
        build_models(deeper, 1, torch.device("cpu"))


def test_the_shipped_foundation_fits_the_main_jobs_config():
    """configs/default.yaml starts training from assets/svimo-small: it fits that config, and
    both networks load from it (bf16 on disk, float32 built); a change of svimo-small's
    sizes that it no longer fits fails here, not in a user's job."""
    repo = Path(__file__).resolve().parents[2]
    cfg = load_config(repo / "configs/default.yaml")
    assert cfg.train.init_from == "assets/svimo-small"
    cfg = load_config(repo / "configs/default.yaml", overrides=[
        "--train.init_from", str(repo / cfg.train.init_from)])
    assert model_misfit(cfg.train.init_from, cfg) is None
    svimo, vid = build_models(cfg, 1, torch.device("cpu"))
    assert {p.dtype for p in [*svimo.parameters(), *vid.parameters()]} == {torch.float32}
    # trained, not fresh: the zero-initialised modulation is not zero
    assert svimo.transformer_blocks[0].norm1.linear.weight.abs().max() > 0


def test_foundation_buffers_are_broadcast_from_the_training_device(monkeypatch):
    """`load_partitioned` broadcasts the buffers (the positional table) from rank 0 through
    the training device: under NCCL a host tensor would fail. The meta device stands in for
    cuda, as in tests/train/test_meter.py; copying the meta value back then fails, after the
    broadcast."""
    from hoi.model.svimo import SViMo
    from hoi.train.engine import load_partitioned

    seen = []
    monkeypatch.setattr(dist, "broadcast", lambda tensor, src, *a, **k: seen.append(
        (tensor.device, src)))
    cfg = load_config(flavour="svimo-tiny", overrides=TINY_I2V)
    model = SViMo(cfg)  # whole: gathering a parameter that is not partitioned changes nothing
    with pytest.raises((NotImplementedError, RuntimeError), match="meta"):
        load_partitioned(model, dict(model.state_dict()), torch.device("meta"))
    assert seen == [(torch.device("meta"), 0)]


def _lora_on_rank(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_WORLD_SIZE=str(WORLD))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    cfg = load_config(flavour="svimo-tiny", overrides=[
        "--train.zero_stage", "3", "--train.precision", "bf16", "--train.lora_rank", "4"])
    svimo, vid = build_models(cfg, WORLD, torch.device("cpu"))
    null_text = torch.zeros(1, cfg.model.max_text_tokens, cfg.model.text_embed_dim)
    engine = build_engine(cfg, TrainSystem(cfg, svimo, vid, None, null_text), WORLD,
                          torch.device("cpu"))
    for name, p in engine.module.svimo.named_parameters():  # adapters partitioned too
        assert hasattr(p, "ds_id") and p.numel() == 0, name
        assert p.requires_grad == (".lora_" in name or any(k in name for k in lora.FULL)), name
    state = engine._zero3_consolidated_16bit_state_dict()  # collective
    if rank == 0:
        merged = lora.merge(state, cfg.train)
        bases = {k.replace(".base_layer.", "."): v for k, v in state.items() if ".base_layer." in k}
        assert len(bases) == 2 * 6 * cfg.model.num_layers  # weight and bias of each target
        for name, value in bases.items():  # B = 0 at the start: the merge adds nothing
            assert merged[name].dtype == torch.bfloat16 and torch.equal(merged[name], value)
        torch.save(merged, out)
    dist.barrier()
    dist.destroy_process_group()


def test_zero3_partitions_lora_adapters_and_the_export_merges_them(tmp_path: Path):
    mp.spawn(_lora_on_rank, args=(free_port(), str(tmp_path / "merged.pt")), nprocs=WORLD,
             join=True)
    merged = torch.load(tmp_path / "merged.pt")
    cfg = load_config(flavour="svimo-tiny")
    svimo_state = {k.removeprefix("svimo."): v for k, v in merged.items()
                   if k.startswith("svimo.")}
    SViMo(cfg).load_state_dict(svimo_state, strict=True)  # plain names, every one
    assert not any("lora" in name for name in merged)
