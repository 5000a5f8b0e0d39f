"""LoRA fine-tuning of SViMo (`train.lora_rank` > 0), through peft.

peft adds rank-r adapters next to the attention and feed-forward projections named by
`train.lora_targets` (W x + (alpha / r) B A x, B starting at zero, so the model starts as the
foundation); SViMo's other foundation weights are frozen, and the motion stream's own new
parameters (its patch embedding, its adaLN modulation and its head: nothing in the foundation
to adapt) train in full, as the paper's LoRA variant does. VID trains in full.

Checkpoints hold the adapters with everything else (DeepSpeed's module state), so a run
resumes like any other; exports merge them (`merge`): W + (alpha / r) B A, a plain SViMo
state that `SViMoPipeline` loads like any other model.
"""

from __future__ import annotations

import torch

from hoi.config import TrainConfig
from hoi.model.svimo import SViMo

FULL = ("motion_patch_embed.", "motion_linear.", "motion_head.")
"""SViMo parameters (name parts) that train in full beside the adapters: the motion stream's."""
ADAPTER = "default"
"""peft's adapter name."""


def scaling(t: TrainConfig) -> float:
    return (t.lora_alpha or t.lora_rank) / t.lora_rank


def add_lora(svimo: SViMo, t: TrainConfig) -> None:
    """Adapters on train.lora_targets (seeded by train.seed: the same on every rank), and
    requires_grad on the adapters and the motion stream's parameters alone."""
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(r=t.lora_rank, lora_alpha=t.lora_alpha or t.lora_rank,
                        lora_dropout=0.0, target_modules=list(t.lora_targets))
    with torch.random.fork_rng():
        torch.manual_seed(t.seed)
        inject_adapter_in_model(config, svimo, adapter_name=ADAPTER)
    for name, p in svimo.named_parameters():
        p.requires_grad_(".lora_" in name or any(part in name for part in FULL))


def merge(state: dict[str, torch.Tensor], t: TrainConfig) -> dict[str, torch.Tensor]:
    """A state dict of SViMo with adapters (`<m>.base_layer.weight`, `<m>.lora_A.default.weight`,
    ...) -> the plain module's: `<m>.weight` = W + scaling * B @ A, computed in float32."""
    merged, s = {}, scaling(t)
    for name, value in state.items():
        if f".lora_A.{ADAPTER}." in name or f".lora_B.{ADAPTER}." in name:
            continue
        if ".base_layer." not in name:
            merged[name] = value
            continue
        module, _, leaf = name.partition(".base_layer.")
        if leaf == "weight":
            A = state[f"{module}.lora_A.{ADAPTER}.weight"].float()
            B = state[f"{module}.lora_B.{ADAPTER}.weight"].float()
            value = (value.float() + s * (B @ A)).to(value.dtype)
        merged[f"{module}.{leaf}"] = value
    return merged


def merged(svimo: SViMo, t: TrainConfig) -> SViMo:
    """A plain SViMo (no adapters) with `svimo`'s adapters merged into its weights."""
    plain = SViMo(svimo.config)
    plain.load_state_dict(merge(svimo.state_dict(), t))
    return plain
