"""LoRA fine-tuning (`hoi.train.lora`): what trains, that the adapted model starts as the
foundation, that merged weights are the adapted model, and a LoRA run through Ray Train +
DeepSpeed that trains only what it should, resumes, exports plain weights and samples."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hoi.config import StorageConfig, load_config
from hoi.model.svimo import SViMo
from hoi.pipeline import SViMoPipeline
from hoi.train import lora
from hoi.train.engine import build_models
from hoi.train.job import exported_model, fit
from tests.model.foundation import TINY_I2V, write_foundation
from tests.model.test_svimo import _inputs
from tests.train.inputs import write_train_inputs

LORA = ["--train.lora_rank", "4", "--train.lora_alpha", "8"]


def _forward(model, cfg):
    (video, image, motion, guidance), text, t = _inputs(cfg)
    with torch.no_grad():
        return model(video, image, text, t, motion, guidance)


def test_adapters_and_the_motion_stream_train_the_rest_is_frozen():
    cfg = load_config(flavour="svimo-tiny", overrides=LORA)
    svimo, vid = build_models(cfg, 1, torch.device("cpu"))
    trainable = {n for n, p in svimo.named_parameters() if p.requires_grad}
    adapters = {n for n in trainable if ".lora_" in n}
    blocks = cfg.model.num_layers
    assert len(adapters) == blocks * 6 * 2  # q, k, v, out, ff in, ff out: A and B each
    assert trainable - adapters == {n for n, _ in svimo.named_parameters()
                                    if any(part in n for part in lora.FULL)}
    assert all(p.requires_grad for p in vid.parameters())
    frozen = sum(p.numel() for n, p in svimo.named_parameters() if n not in trainable)
    assert frozen > 10 * sum(p.numel() for n, p in svimo.named_parameters() if n in adapters)


def test_the_adapted_model_starts_as_the_foundation_and_merges_into_itself():
    cfg = load_config(flavour="svimo-tiny", overrides=LORA)
    torch.manual_seed(0)
    plain = SViMo(cfg)
    with torch.no_grad():  # non-zero gates and heads, so that every layer shows
        for p in plain.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    adapted = SViMo(cfg)
    adapted.load_state_dict(plain.state_dict())
    lora.add_lora(adapted, cfg.train)
    for got, expected in zip(_forward(adapted, cfg), _forward(plain, cfg), strict=True):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)  # B = 0 at the start
    with torch.no_grad():  # trained adapters
        for name, p in adapted.named_parameters():
            if ".lora_B." in name:
                p.copy_(torch.randn_like(p) * 0.1)
    merged = SViMo(cfg)
    merged.load_state_dict(lora.merge(adapted.state_dict(), cfg.train), strict=True)
    after = _forward(adapted, cfg)
    for got, expected in zip(_forward(merged, cfg), after, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert (after[0] - _forward(plain, cfg)[0]).abs().max() > 1e-3  # the adapters act


@pytest.mark.slow
def test_a_lora_run_trains_what_it_should_resumes_exports_plain_weights_and_samples(
        tmp_path, ray_local):
    write_foundation(tmp_path / "transformer")  # LoRA adapts a foundation: its gates are open
    run = [*write_train_inputs(str(tmp_path / "inputs"), StorageConfig()), *LORA, *TINY_I2V,
           "--train.init_from", str(tmp_path / "transformer"),
           "--train.num_workers", "2", "--train.cpus_per_worker", "0.5",
           "--train.batch_size", "2", "--train.learning_rate", "1e-2", "--train.warmup_steps",
           "1", "--train.log_every", "1", "--train.steps", "3", "--train.checkpoint_every", "1",
           "--train.storage_path", str(tmp_path / "runs"), "--train.run_name", "lora"]
    stopped = fit(load_config(overrides=[*run, "--train.stop_at_step", "2"]))
    assert stopped.metrics["step"] == 2
    cfg = load_config(overrides=run)
    resumed = fit(cfg)
    assert resumed.metrics["resumed_from"] == 2 and resumed.metrics["step"] == 3
    model = exported_model(cfg, resumed)
    trained = SViMo.from_pretrained(f"{model}/svimo").state_dict()  # plain names: merged
    start, _ = build_models(load_config(overrides=[*run, "--train.lora_rank", "0"]), 1,
                            torch.device("cpu"))
    for name, value in start.state_dict().items():
        moved = not torch.equal(trained[name], value)
        target = any(name.endswith(f"{t}.weight") for t in cfg.train.lora_targets)
        assert moved == (target or any(part in name for part in lora.FULL)), name
    pipe = SViMoPipeline.from_pretrained(model)
    n, h, w = pipe.frame_size
    image = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    gen = pipe(image, "stir the bowl with the spoon", num_steps=2)
    assert gen.joints.shape == (n, 42, 3) and np.isfinite(gen.joints).all()
