"""The analytic FLOPs calculator against torch's FlopCounterMode on the real modules.

FlopCounterMode counts matrix products (mm/addmm/bmm, convolutions, fused attention on GPU),
the same set as hoi.model.flops. On CPU the fused SDPA kernel is not counted, so the models
run under SDPA's math backend, which is two counted bmm's. Counts are integers and must match
part for part, exactly. Counts depend on shapes only, so most models run on the meta device
(no arithmetic: fast, and the paper's sizes fit); one tiny case runs on the CPU to show that
meta and real runs count the same.
"""

from __future__ import annotations

import re

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from hoi.config import Config, load_config
from hoi.geometry.motion import NUM_ENTITIES
from hoi.model.flops import (
    svimo_forward_flops,
    training_step_flops,
    vid_forward_flops,
    vid_memory_length,
    warmup_step_flops,
)
from hoi.model.svimo import SViMo
from hoi.model.vid import VID

BLOCK = r"transformer_blocks\.\d+"
LAYER = r"layers\.\d+"
# part -> (modules, as a regex under the model's root, and which ops of theirs count)
SVIMO_PARTS = {
    "attention_scores": (rf"{BLOCK}\.attn1", {"aten.bmm"}),
    "attention_projections": (rf"{BLOCK}\.attn1\.(to_q|to_k|to_v|to_out\.0)", None),
    "feed_forward": (rf"{BLOCK}\.ff", None),
    "modulation": (rf"{BLOCK}\.norm[12]|(motion_)?head\.norm_out", None),
    "embeddings": (r"patch_embed\.(proj|text_proj)|motion_patch_embed|time_embedding", None),
    "heads": (r"(motion_)?head\.proj_out", None),
}
VID_PARTS = {
    "encoders": (r"video_encoder|motion_encoder", None),
    "fusion": (r"fusion", None),
    "self_attention_scores": (rf"{LAYER}\.self_attn", {"aten.bmm"}),
    "cross_attention_scores": (rf"{LAYER}\.cross_attn", {"aten.bmm"}),
    "attention_projections": (rf"{LAYER}\.(self|cross)_attn\.(to_q|to_kv|to_out)", None),
    "feed_forward": (rf"{LAYER}\.ff", None),
    "modulation": (rf"({LAYER}|head)\.modulation", None),
    "embeddings": (r"motion_embed\.\d+|time_embed|text_embed", None),
    "heads": (r"head\.linears\.\d+", None),
}


def _config(flavour: str, *overrides: str) -> Config:
    return load_config(flavour=flavour, overrides=list(overrides))


def _count(run) -> FlopCounterMode:
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc:
        run()
    return fc


def _measured(fc: FlopCounterMode, root: str, parts: dict) -> dict[str, int]:
    """Counter's FLOPs per part (parts as SVIMO_PARTS), plus "total" = the root module's."""
    counts = fc.get_flop_counts()
    out = {}
    for part, (pattern, ops) in parts.items():
        out[part] = sum(n for name, per_op in counts.items()
                        if re.fullmatch(rf"{root}\.({pattern})", name)
                        for op, n in per_op.items() if ops is None or str(op) in ops)
    out["total"] = sum(counts[root].values())
    return out


def _svimo_inputs(cfg: Config, batch: int) -> tuple[torch.Tensor, ...]:
    """(latent, text, t): every latent slot gets the same (B, F, C, h, w) tensor."""
    F, h, w = cfg.latent_shape
    latent = torch.zeros(batch, F, cfg.latent.channels, h, w)
    text = torch.zeros(batch, cfg.model.max_text_tokens, cfg.model.text_embed_dim)
    return latent, text, torch.zeros(batch, dtype=torch.long)


def _svimo_counts(model: SViMo, batch: int, motion: bool) -> dict[str, int]:
    latent, text, t = _svimo_inputs(model.config, batch)
    extra = (latent, latent) if motion else ()
    return _measured(_count(lambda: model(latent, latent, text, t, *extra)), "SViMo",
                     SVIMO_PARTS)


def _vid_inputs(cfg: Config, batch: int) -> tuple[torch.Tensor, ...]:
    F, h, w = cfg.latent_shape
    latent = torch.zeros(batch, F, cfg.latent.channels, h, w)
    motion = torch.zeros(batch, cfg.data.num_frames, NUM_ENTITIES, 3)
    text = torch.zeros(batch, cfg.model.max_text_tokens, cfg.model.text_embed_dim)
    return motion, latent, latent, torch.zeros(batch, dtype=torch.long), text


def _on(device: str, build, cfg: Config):
    with torch.device(device):
        return build(cfg).eval()


# ---------------------------------------------------------------------------------------------
# Against the counter, part for part
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("flavour", "backend", "mask", "device", "modulation"), [
    ("svimo-tiny", "sdpa", False, "cpu", "all"), ("svimo-tiny", "sdpa", True, "meta", "all"),
    ("svimo-tiny", "math", True, "meta", "all"), ("svimo-small", "sdpa", False, "meta", "all"),
    ("svimo-small", "sdpa", True, "meta", "all"), ("svimo-small", "sdpa", False, "meta", "even")])
def test_svimo_matches_the_flop_counter(flavour: str, backend: str, mask: bool,
                                        device: str, modulation: str) -> None:
    cfg = _config(flavour, "--model.attention_backend", backend,
                  "--model.motion_attention_mask", str(mask).lower(),
                  "--model.motion_modulation", modulation)
    model = _on(device, SViMo, cfg)
    for motion, batch in ((True, 2), (False, 1)):
        with torch.device(device):
            measured = _svimo_counts(model, batch, motion)
        assert sum(v for k, v in measured.items() if k != "total") == measured["total"]
        assert svimo_forward_flops(cfg, batch, motion) == measured


@pytest.mark.parametrize(("flavour", "device"), [("svimo-tiny", "cpu"), ("svimo-small", "meta")])
def test_vid_matches_the_flop_counter(flavour: str, device: str) -> None:
    cfg = _config(flavour)
    model = _on(device, VID, cfg)
    with torch.device(device):
        measured = _measured(_count(lambda: model(*_vid_inputs(cfg, 2))), "VID", VID_PARTS)
    assert sum(v for k, v in measured.items() if k != "total") == measured["total"]
    assert vid_forward_flops(cfg, 2) == measured


def test_motion_mask_saves_exactly_the_hidden_scores() -> None:
    """Text + video queries skip the motion keys: (Lt + Lv) x Lm fewer scores per head."""
    plain, masked = (_config("svimo-small", "--model.motion_attention_mask", v)
                     for v in ("false", "true"))
    m = plain.model
    hidden = (m.max_text_tokens + plain.tokens_per_stream) * plain.tokens_per_stream
    saved = (svimo_forward_flops(plain, 3)["attention_scores"]
             - svimo_forward_flops(masked, 3)["attention_scores"])
    assert saved == 4 * 3 * m.num_layers * hidden * m.hidden_size
    # without the motion stream the mask changes nothing
    assert svimo_forward_flops(plain, 3, motion=False) == svimo_forward_flops(masked, 3, False)


# ---------------------------------------------------------------------------------------------
# The paper's sizes, on the meta device
# ---------------------------------------------------------------------------------------------


def test_svimo_5b_matches_the_counter_and_is_plausible() -> None:
    cfg = _config("svimo-5b", "--model.motion_attention_mask", "true")
    model = _on("meta", SViMo, cfg)
    with torch.device("meta"):
        assert svimo_forward_flops(cfg) == _svimo_counts(model, 1, motion=True)
    # 26,590 tokens, 42 blocks of width 3072: attention is about half of the forward
    plain = _config("svimo-5b")
    assert plain.sequence_length == 26_590
    for config, motion, low, high in ((plain, True, 4e14, 8e14), (cfg, True, 4e14, 8e14),
                                      (cfg, False, 1.5e14, 3e14)):
        flops = svimo_forward_flops(config, 1, motion)
        assert low < flops["total"] < high
        assert 0.35 < flops["attention_scores"] / flops["total"] < 0.7
    # the linear part is 2 FLOPs per weight per token (the "2ND" rule)
    weights = sum(mod.weight.numel() for name, mod in model.transformer_blocks.named_modules()
                  if isinstance(mod, torch.nn.Linear) and "norm" not in name)
    flops = svimo_forward_flops(plain)
    assert flops["attention_projections"] + flops["feed_forward"] == \
        2 * plain.sequence_length * weights


@pytest.mark.parametrize("tokens", ["entity", "frame"])
def test_vid_5b_matches_the_counter(tokens: str) -> None:
    cfg = _config("svimo-5b", "--vid.tokens", tokens)
    assert vid_memory_length(cfg) == 13 * (52 * 78 + 26 * 39 + 13 * 20) + 226
    model = _on("meta", VID, cfg)
    with torch.device("meta"):
        measured = _measured(_count(lambda: model(*_vid_inputs(cfg, 1))), "VID", VID_PARTS)
    assert vid_forward_flops(cfg) == measured


# ---------------------------------------------------------------------------------------------
# Training step
# ---------------------------------------------------------------------------------------------


def test_forward_backward_is_about_three_forwards() -> None:
    """The convention behind training_step_flops: the backward of a pass costs two forwards
    (less the input gradients of the first layers, whose inputs need none: 2.9999 x at the
    paper's sizes, a little less at small ones)."""
    cfg = _config("svimo-small")
    svimo, vid = _on("meta", SViMo, cfg), _on("meta", VID, cfg)
    with torch.device("meta"), sdpa_kernel(SDPBackend.MATH), \
            FlopCounterMode(display=False) as fc:
        latent, text, t = _svimo_inputs(cfg, 1)
        video, motion = svimo(latent, latent, text, t, latent, latent)
        (video.sum() + motion.sum()).backward()
        svimo_flops = fc.get_total_flops()
        vid(*_vid_inputs(cfg, 1)).sum().backward()
        vid_flops = fc.get_total_flops() - svimo_flops
    assert 2.9 < svimo_flops / svimo_forward_flops(cfg)["total"] <= 3.0  # 2.946 at 4 x 4 patches
    assert 2.9 < vid_flops / vid_forward_flops(cfg)["total"] <= 3.0


def test_training_step_by_variant() -> None:
    svimo = svimo_forward_flops(_config("svimo-small"), 4)["total"]
    vid = vid_forward_flops(_config("svimo-small"), 4)["total"]
    expected = {"full": 3 * (svimo + vid) + vid, "guidance_only": 3 * (svimo + vid),
                "gradient_only": 3 * (svimo + vid), "no_vid": 3 * svimo}
    for variant, flops in expected.items():
        cfg = _config("svimo-small", "--loop.variant", variant)
        assert training_step_flops(cfg, 4) == pytest.approx(flops, rel=1e-12)


def test_warmup_step_trains_svimo_only_with_svimo_warmup() -> None:
    svimo = svimo_forward_flops(_config("svimo-small"), 4)["total"]
    vid = vid_forward_flops(_config("svimo-small"), 4)["total"]
    on = _config("svimo-small", "--loop.svimo_warmup", "true")
    off = _config("svimo-small", "--loop.svimo_warmup", "false")
    assert warmup_step_flops(on, 4) == pytest.approx(3 * (svimo + vid), rel=1e-12)
    assert warmup_step_flops(off, 4) == pytest.approx(3 * vid, rel=1e-12)
