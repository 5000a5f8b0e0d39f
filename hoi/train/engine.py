"""SViMo + VID as one DeepSpeed engine.

    svimo, vid = build_models(cfg, world_size, device)
    system = TrainSystem(cfg, svimo, vid, vae, null_text)
    engine = build_engine(cfg, system, world_size, device)
    terms = engine(batch, generator, phase); engine.backward(terms["total"]); engine.step()

The DeepSpeed config is derived from the run config in one place, `deepspeed_config`.
The frozen VAE (the closed loop's re-encoding of VID's rendered guidance) stays outside the
engine: ZeRO neither partitions nor casts it, and its weights never reach a checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from hoi.artifacts import build_with_state, exported_model_at, model_config, read_network
from hoi.config import Config, ConfigError
from hoi.diffusion.closed_loop import ClosedLoop, Phase
from hoi.diffusion.conditions import TrainBatch
from hoi.model.encoders import VideoVAE
from hoi.model.svimo import SViMo
from hoi.model.vid import VID
from hoi.model.weights import load_cogvideox, open_foundation
from hoi.train.lora import add_lora


class TrainSystem(nn.Module):
    """The trainable pair under one module, whose forward is one closed-loop step's losses.

    DeepSpeed wraps a single module and, under ZeRO-3, gathers each submodule's parameters
    in hooks around its forward; routing the whole step through this forward keeps those
    hooks and the engine's bookkeeping in their intended order."""

    def __init__(self, cfg: Config, svimo: SViMo, vid: VID, vae: VideoVAE,
                 null_text: torch.Tensor):
        super().__init__()
        self.svimo, self.vid = svimo, vid
        self._vae, self._null_text = vae, null_text
        self.loop = ClosedLoop(cfg, svimo, vid, vae, null_text)

    def set_size(self, cfg: Config) -> None:
        """Train at cfg.data's resolution from now on (a resolution stage)."""
        self.loop = ClosedLoop(cfg, self.svimo, self.vid, self._vae, self._null_text,
                               self.loop.schedule)

    def forward(self, batch: TrainBatch, generator: torch.Generator, phase: Phase
                ) -> dict[str, torch.Tensor]:
        dtype = next(self.svimo.parameters()).dtype
        return self.loop.losses(batch.to(dtype=dtype), generator, phase)


# ---------------------------------------------------------------------------------------------
# The networks, whole or sharded
# ---------------------------------------------------------------------------------------------


def build_models(cfg: Config, world_size: int, device: torch.device) -> tuple[SViMo, VID]:
    """SViMo and VID from train.init_from: an exported SViMo model (both networks, e.g. the
    shipped svimo-small foundation) or CogVideoX's transformer (SViMo; VID fresh); or both
    fresh, seeded by train.seed, the same on every rank. With train.lora_rank, SViMo gets
    LoRA adapters and only they and its motion stream train (`hoi.train.lora`).

    Under ZeRO-3 SViMo is built partitioned (`deepspeed.zero.Init`): a rank holds one module's
    whole parameters at a time while they are made, then only its share, so no rank ever
    holds all 6 B; train.init_from is then read by rank 0 alone and scattered module by
    module (`load_partitioned`). VID is small and built whole; DeepSpeed partitions it in
    `deepspeed.initialize`, as it does the adapters."""
    svimo, vid = _build_models(cfg, world_size, device)
    if cfg.train.lora_rank:
        add_lora(svimo, cfg.train)
    return svimo, vid


def _build_models(cfg: Config, world_size: int, device: torch.device) -> tuple[SViMo, VID]:
    t = cfg.train
    model_dir = None if t.init_from is None else exported_model_at(t.init_from, cfg.storage)
    if model_dir is not None:
        misfit = model_misfit(model_dir, cfg)
        if misfit is not None:
            raise ConfigError(f"train.init_from {t.init_from!r}: {misfit}")
    with torch.random.fork_rng():
        torch.manual_seed(t.seed)
        # in float32 as a fresh build, whatever the model was saved in (the shipped
        # foundation is bf16); DeepSpeed casts to the run's precision
        vid = (VID(cfg) if model_dir is None else build_with_state(
            VID, cfg, read_network(model_dir, "vid", cfg.storage), dtype=torch.float32).train())
        if resolve_zero_stage(cfg, device) != 3:
            if model_dir is not None:
                state = read_network(model_dir, "svimo", cfg.storage)
                return build_with_state(SViMo, cfg, state, dtype=torch.float32).train(), vid
            if t.init_from is not None:
                return load_cogvideox(t.init_from, cfg, cfg.storage).train(), vid
            return SViMo(cfg), vid
        import deepspeed

        deepspeed.init_distributed(verbose=False)  # over the process group Ray Train made
        with deepspeed.zero.Init(config_dict_or_path=deepspeed_config(cfg, world_size, device)):
            svimo = SViMo(cfg)
    # zero.Init made SViMo's parameters in the run's precision; DeepSpeed partitions VID in
    # initialize as it is, and ZeRO-3 keeps all parameters in one dtype
    vid = vid.to(next(svimo.parameters()).dtype)
    if t.init_from is not None:
        if dist.get_rank() != 0:
            load_partitioned(svimo, None, device)
        elif model_dir is not None:
            load_partitioned(svimo, read_network(model_dir, "svimo", cfg.storage), device)
        else:
            with open_foundation(t.init_from, cfg, cfg.storage) as weights:
                load_partitioned(svimo, weights, device)
                weights.check_all_used()
    return svimo.train(), vid


def model_misfit(model_dir: str, cfg: Config) -> str | None:
    """Why the exported model at `model_dir` cannot initialise cfg's networks (a parameter
    or buffer it lacks, has extra, or has in another shape, read from its config on the meta
    device: no weights are read), or None when it can."""
    saved = model_config(model_dir, cfg.storage)
    for cls in (SViMo, VID):
        with torch.device("meta"):
            theirs, ours = ({k: tuple(v.shape) for k, v in cls(c).state_dict().items()}
                            for c in (saved, cfg))
        if theirs != ours:
            name = next(k for k in sorted({*theirs, *ours}) if theirs.get(k) != ours.get(k))
            return (f"its {cls.__name__} does not fit the config: {name} is "
                    f"{theirs.get(name, 'missing')} there, {ours.get(name, 'missing')} here")
    return None


def load_partitioned(model: nn.Module, tensors: Mapping[str, torch.Tensor] | None,
                     device: torch.device) -> None:
    """Fill a ZeRO-3 partitioned model from `tensors` (by state-dict name), which only rank 0
    passes (the others pass None): module by module, the parameters are gathered, rank 0
    writes them, and leaving the gather broadcasts rank 0's values and keeps each rank's
    share. Buffers (whole on every rank) are broadcast from rank 0 through `device`, where
    the process group's backend reduces (NCCL: CUDA only). Every rank calls this."""
    import deepspeed

    persistent = set(model.state_dict())  # names only: no parameter is gathered for them
    for prefix, module in model.named_modules():
        params = list(module.named_parameters(prefix=prefix, recurse=False))
        if params:
            with deepspeed.zero.GatheredParameters([p for _, p in params], modifier_rank=0), \
                    torch.no_grad():
                if tensors is not None:
                    for name, p in params:
                        p.copy_(tensors[name])
        for name, buffer in module.named_buffers(prefix=prefix, recurse=False):
            if name not in persistent:  # not in a checkpoint
                continue
            value = (tensors[name] if tensors is not None else buffer).to(device, buffer.dtype)
            dist.broadcast(value, 0)
            buffer.copy_(value)


def resolve_precision(cfg: Config, device: torch.device) -> str:
    """"bf16" or "fp32": train.precision, with auto meaning bf16 on GPU only."""
    if cfg.train.precision != "auto":
        return cfg.train.precision
    return "bf16" if device.type == "cuda" else "fp32"


def resolve_zero_stage(cfg: Config, device: torch.device) -> int:
    """train.zero_stage, or 3 on GPU (shards a 6 B model) and 2 on CPU."""
    if cfg.train.zero_stage is not None:
        return cfg.train.zero_stage
    return 3 if device.type == "cuda" else 2


def deepspeed_config(cfg: Config, world_size: int, device: torch.device) -> dict[str, Any]:
    """The DeepSpeed config dict of a run: the one place it is derived from `cfg.train`.

    The optimizer and LR schedule are torch objects handed to `deepspeed.initialize`, so no
    DeepSpeed C++ Adam is compiled on first use."""
    t = cfg.train
    precision = resolve_precision(cfg, device)
    stage = resolve_zero_stage(cfg, device)
    if t.ema_decay > 0 and stage == 3:
        raise ConfigError("train.ema_decay needs whole parameters on every rank: use "
                          "train.zero_stage 2 (or 0-1) with EMA")
    zero: dict[str, Any] = {"stage": stage}
    if stage == 3:
        # gather the 16-bit weights on rank 0 when exporting inference weights
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    return {
        "train_micro_batch_size_per_gpu": t.batch_size,
        "gradient_accumulation_steps": t.gradient_accumulation,
        "train_batch_size": t.batch_size * t.gradient_accumulation * world_size,
        "gradient_clipping": t.gradient_clipping,
        "zero_optimization": zero,
        "bf16": {"enabled": precision == "bf16"},
        "steps_per_print": 10**9,  # progress is ours (hoi.train.meter)
        "wall_clock_breakdown": False,
        "zero_allow_untested_optimizer": True,
    }


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up to 1 over `warmup` steps, then cosine decay to 0.1 at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


def build_engine(cfg: Config, system: TrainSystem, world_size: int, device: torch.device):
    """deepspeed.initialize over `system` with AdamW and the warm-up + cosine schedule."""
    import deepspeed  # heavy import, and only train workers need it

    t = cfg.train
    params = [p for p in system.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=t.learning_rate, weight_decay=t.weight_decay,
                                  betas=(0.9, 0.95))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, t.steps, t.warmup_steps))
    engine, *_ = deepspeed.initialize(
        model=system, optimizer=optimizer, lr_scheduler=schedule,
        config=deepspeed_config(cfg, world_size, device), dist_init_required=False)
    return engine


class EMA:
    """Exponential moving average of the trainable weights (ZeRO stage <= 2: every rank holds
    them whole), kept in float32 on the weights' device."""

    def __init__(self, module: nn.Module, decay: float):
        self.decay = decay
        self.shadow = {name: p.detach().float().clone()
                       for name, p in module.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        for name, p in module.named_parameters():
            if name in self.shadow:
                self.shadow[name].lerp_(p.detach().float(), 1.0 - self.decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = set(self.shadow) ^ set(state)
        if missing:
            raise ValueError(f"EMA state does not match the model: {sorted(missing)[:5]}")
        for name, value in state.items():
            self.shadow[name].copy_(value)
