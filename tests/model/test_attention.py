"""The attention backends agree with the textbook formula, with and without the motion mask."""

from __future__ import annotations

import pytest
import torch

from hoi.model.attention import attention, flash_available, math_attention, prefix_mask


def _qkv(length: int, dtype=torch.float32, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 3, length, 16, generator=g).to(device, dtype) for _ in range(3)]


@pytest.mark.parametrize("backend", ["sdpa", "math"])
@pytest.mark.parametrize("prefix", [None, 7])
def test_backend_matches_dense_reference(backend, prefix):
    q, k, v = _qkv(12)
    mask = None if prefix is None else prefix_mask(12, prefix)
    expected = math_attention(q, k, v, mask)
    torch.testing.assert_close(attention(q, k, v, backend=backend, prefix=prefix), expected,
                               rtol=1e-5, atol=1e-5)


def test_prefix_queries_ignore_the_suffix():
    """Changing the motion keys/values (the suffix) leaves text+video outputs untouched and
    changes the motion queries' outputs."""
    q, k, v = _qkv(12)
    k2, v2 = k.clone(), v.clone()
    k2[:, :, 7:] += 1.0
    v2[:, :, 7:] -= 2.0
    a = attention(q, k, v, prefix=7)
    b = attention(q, k2, v2, prefix=7)
    assert torch.equal(a[:, :, :7], b[:, :, :7])
    assert not torch.allclose(a[:, :, 7:], b[:, :, 7:])
    # and the prefix part is exactly attention over the prefix alone (video-only mode)
    torch.testing.assert_close(a[:, :, :7], attention(q[:, :, :7], k[:, :, :7], v[:, :, :7]))


def test_flash_backend_refuses_clearly_without_gpu():
    if flash_available():
        pytest.skip("flash_attn is installed here; the GPU test covers it")
    q, k, v = _qkv(8)
    with pytest.raises(RuntimeError, match="flash_attn"):
        attention(q, k, v, backend="flash")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("backend", ["sdpa", "flash"])
def test_gpu_backends_bf16(backend):
    if backend == "flash" and not flash_available():
        pytest.skip("flash_attn is not installed")
    q, k, v = _qkv(300, torch.bfloat16, "cuda")
    expected = math_attention(q, k, v, prefix_mask(300, 200, q.device))
    out = attention(q, k, v, backend=backend, prefix=200)
    torch.testing.assert_close(out.float(), expected.float(), rtol=2e-2, atol=2e-2)
