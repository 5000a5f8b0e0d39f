"""Step metrics of distributed training: loss terms, throughput, data wait and MFU.

Per optimiser step a worker records its loss terms (averaged over micro-steps), the seconds
spent waiting for the data iterator and the seconds of the whole step. Every
`train.log_every` steps the window is averaged across workers (one all-reduce, on the
training device: NCCL reduces CUDA tensors only) and turned into the reported row:

    samples_per_s   clips trained per second, all workers together
    tokens_per_s    samples_per_s x the joint attention sequence (text + video + motion)
    data_wait       fraction of step time spent waiting for the next batch
    tflops          model TFLOP/s achieved (hoi.model.flops: the joint step, or VID's three
                    passes in the warm-up)
    mfu             tflops / (workers x peak TFLOP/s per device), when the peak is known
    peak_host_gb    the largest peak resident memory of any worker process so far
    peak_device_gb  the largest peak of allocated GPU memory of any worker so far (GPUs)
"""

from __future__ import annotations

import resource
import time

import torch
import torch.distributed as dist

from hoi.config import Config
from hoi.model.flops import training_step_flops, warmup_step_flops

# bf16 dense peak TFLOP/s per device, by a substring of torch.cuda.get_device_name().
KNOWN_PEAKS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


def peak_tflops(cfg: Config, device: torch.device) -> float | None:
    """train.peak_tflops, else the known bf16 peak of this GPU, else None (CPUs)."""
    if cfg.train.peak_tflops is not None:
        return cfg.train.peak_tflops
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return next((peak for key, peak in KNOWN_PEAKS.items() if key in name), None)
    return None


class Meter:
    """Accumulates one logging window of steps on one worker."""

    def __init__(self, cfg: Config, world_size: int, peak: float | None, device: torch.device):
        """device: the training device, where the window's sums live and are reduced."""
        self.world_size, self.peak, self.device = world_size, peak, device
        self.set_stage(cfg)
        self._reset()

    def set_stage(self, cfg: Config) -> None:
        """Sizes of the current resolution stage (tokens and FLOPs per clip change)."""
        t = cfg.train
        self.samples_per_step = t.batch_size * t.gradient_accumulation * self.world_size
        self.tokens_per_sample = cfg.sequence_length
        # per worker: its micro-batches of one optimiser step, by phase
        clips = t.batch_size * t.gradient_accumulation
        self.flops_per_step = {
            "joint": training_step_flops(cfg, clips),
            "warmup": warmup_step_flops(cfg, clips)}

    def restart(self) -> None:
        """Start a new window now (after setup or a resume's skipping, which are no step's
        time)."""
        self._reset()

    def _reset(self) -> None:
        self.terms: dict[str, torch.Tensor] = {}
        self.micro_steps = 0
        self.steps = 0
        self.flops = 0.0
        self.wait = 0.0
        self._mark = time.perf_counter()

    def exclude(self, seconds: float) -> None:
        """Leave `seconds` of work that is no step's (validation) out of the window."""
        self._mark += seconds

    def waited(self, seconds: float) -> None:
        self.wait += seconds

    def micro_step(self, terms: dict[str, torch.Tensor]) -> None:
        """Add a micro-step's loss terms; summed on their device (no host sync per step)."""
        for name, value in terms.items():
            total = self.terms.get(name)
            value = value.detach().to(self.device, torch.float64)
            self.terms[name] = value if total is None else total + value
        self.micro_steps += 1

    def _peak_memory(self) -> torch.Tensor:
        """(host, device) peak bytes of this worker so far, on its device."""
        device = (torch.cuda.max_memory_allocated(self.device)
                  if self.device.type == "cuda" else 0)
        return torch.tensor([_host_peak_bytes(), device], dtype=torch.float64,
                            device=self.device)

    def step(self, phase: str) -> None:
        self.steps += 1
        self.flops += self.flops_per_step[phase]

    def report(self) -> dict[str, float]:
        """The window's metrics, averaged across workers (collective), and a new window."""
        seconds = time.perf_counter() - self._mark
        names = sorted(self.terms)
        timing = torch.tensor([self.wait, seconds], dtype=torch.float64, device=self.device)
        values = torch.cat([torch.stack([self.terms[n] for n in names]) / max(1, self.micro_steps),
                            timing]) if names else timing
        if dist.is_initialized():
            # on the training device: NCCL takes CUDA tensors only (gloo would hide a CPU one)
            dist.all_reduce(values)
            values /= dist.get_world_size()
        peaks = self._peak_memory()
        if dist.is_initialized():
            dist.all_reduce(peaks, op=dist.ReduceOp.MAX)
        *means, wait, seconds = values.tolist()  # the window's host syncs: here only
        host_gb, device_gb = (peaks / 2**30).tolist()
        steps = max(1, self.steps)
        row = dict(zip(names, means, strict=True))
        samples_per_s = self.samples_per_step * steps / seconds
        tflops = self.flops * self.world_size / seconds / 1e12
        row |= {"samples_per_s": samples_per_s,
                "tokens_per_s": samples_per_s * self.tokens_per_sample,
                "data_wait": wait / seconds,
                "step_seconds": seconds / steps,
                "tflops": tflops,
                "peak_host_gb": host_gb}
        if self.device.type == "cuda":
            row["peak_device_gb"] = device_gb
        if self.peak:
            row["mfu"] = tflops / (self.peak * self.world_size)
        self._reset()
        return row


def _host_peak_bytes() -> int:
    """This process's peak resident memory so far (ru_maxrss: kB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def progress_line(step: int, total: int, stage: int, stages: int, cfg: Config,
                  row: dict[str, float], lr: float) -> str:
    """One line a user can follow in the job's log."""
    terms = " ".join(f"{k} {row[k]:.3f}" for k in ("svimo", "vid") if k in row)
    mfu = f" | MFU {100 * row['mfu']:.1f}%" if "mfu" in row else ""
    device = f", {row['peak_device_gb']:.1f} GB device" if "peak_device_gb" in row else ""
    return (f"step {step}/{total} | stage {stage + 1}/{stages} {cfg.data.height}x"
            f"{cfg.data.width} | loss {row['total']:.4f} ({terms}) | lr {lr:.2e} | "
            f"{row['samples_per_s']:.2f} samples/s {row['tokens_per_s']:.0f} tokens/s | "
            f"data wait {100 * row['data_wait']:.1f}% | {row['tflops']:.3f} TFLOP/s{mfu} | "
            f"peak {row['peak_host_gb']:.1f} GB host{device}")
