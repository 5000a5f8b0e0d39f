"""Multi-head attention behind one function, with three interchangeable backends.

- ``sdpa``: ``torch.nn.functional.scaled_dot_product_attention`` (default; on GPUs it picks
  flash / cuDNN / memory-efficient kernels itself);
- ``flash``: ``flash_attn.flash_attn_func`` (GPU, fp16/bf16, when the package is installed);
- ``math``: softmax(q k^T / sqrt(d)) v written out in float32, the reference.

The only mask SViMo needs is CoInteract's asymmetric co-attention: the joint sequence is
[text, video, motion] and text and video queries must not see motion keys, while motion
queries see everything. Because the hidden keys are exactly a suffix, the mask is applied
*structurally*: queries before ``prefix`` attend to keys before ``prefix`` only, the others to
all keys. Two unmasked calls then do the work of one masked call, for every backend, without
ever building a dense (L x L) mask (2.8 GB at 26,590 tokens in bf16) and without leaving the
fast kernels, which take no arbitrary masks.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

Backend = Literal["sdpa", "flash", "math"]
BACKENDS: tuple[Backend, ...] = ("sdpa", "flash", "math")


def flash_available() -> bool:
    """Whether the ``flash`` backend can run here (flash_attn importable and a CUDA device)."""
    if not torch.cuda.is_available():
        return False
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        return False
    return True


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, backend: Backend = "sdpa",
              prefix: int | None = None) -> torch.Tensor:
    """Scaled dot-product attention over (B, heads, L, head_dim) tensors.

    Args:
        q, k, v: (B, heads, L, d), all the same length L.
        backend: "sdpa", "flash" or "math" (see the module docstring).
        prefix: when given, queries [0, prefix) attend only to keys [0, prefix) (text and video
            not seeing motion); queries [prefix, L) attend to all keys.
    Returns:
        (B, heads, L, d) in q's dtype.
    """
    kernel = _KERNELS[backend]
    if prefix is None or prefix >= q.shape[2]:
        return kernel(q, k, v)
    head = kernel(q[:, :, :prefix], k[:, :, :prefix], v[:, :, :prefix])
    tail = kernel(q[:, :, prefix:], k, v)
    return torch.cat([head, tail], dim=2)


def prefix_mask(length: int, prefix: int, device: torch.device | None = None) -> torch.Tensor:
    """The dense boolean (L, L) mask that `attention(prefix=...)` applies: True = may attend.

    For reference implementations and tests; the backends never build it."""
    mask = torch.ones(length, length, dtype=torch.bool, device=device)
    mask[:prefix, prefix:] = False
    return mask


def math_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                   mask: torch.Tensor | None = None) -> torch.Tensor:
    """The textbook formula in float32; `mask` is a boolean (Lq, Lk), True = may attend."""
    scores = (q.float() @ k.float().transpose(-1, -2)) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return (scores.softmax(dim=-1) @ v.float()).to(q.dtype)


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return F.scaled_dot_product_attention(q, k, v)


def _flash(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    if not flash_available():
        raise RuntimeError("attention backend 'flash' needs a CUDA device and the flash_attn "
                           "package (pip install -e '.[gpu]'); use 'sdpa' otherwise")
    from flash_attn import flash_attn_func

    if q.dtype not in (torch.float16, torch.bfloat16):
        raise RuntimeError(f"flash_attn runs in float16/bfloat16, got {q.dtype}")
    # flash_attn wants (B, L, heads, d)
    out = flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2)


_KERNELS = {"sdpa": _sdpa, "flash": _flash, "math": math_attention}
