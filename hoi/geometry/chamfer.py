"""Chamfer distance between point sets, in plain torch (pytorch3d cannot be installed here).

Convention of ``pytorch3d.loss.chamfer_distance`` with its defaults (``norm=2``,
``point_reduction="mean"``), without its batch reduction: for every point the *squared*
Euclidean distance to the nearest point of the other set, averaged over the points of its set,
and the two directions summed:

    D(a, b) = mean_i min_j |a_i - b_j|^2 + mean_j min_i |a_i - b_j|^2.

Nearest neighbours are searched without autograd over the full distance matrix, chunked over
the batch so that memory stays bounded; the distances to the chosen neighbours are then
recomputed with autograd. The gradient is that of the min (a subgradient at ties), as in
pytorch3d, but autograd keeps only O(P + Q) per set instead of the P x Q matrix.
"""

from __future__ import annotations

import torch

DEFAULT_CHUNK_ELEMENTS = 2**25
"""Largest number of pairwise coordinate differences (sets x P x Q x 3) held at once."""


def nearest_indices(a: torch.Tensor, b: torch.Tensor, chunk_elements: int = DEFAULT_CHUNK_ELEMENTS
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest neighbours between two batches of point sets (no autograd).

    Args:
        a: (M, P, 3); b: (M, Q, 3).
        chunk_elements: bound on M' x P x Q x 3 elements computed at once.
    Returns:
        a_to_b: (M, P) index into b of each point of a; b_to_a: (M, Q) index into a.
    """
    m, p, q = a.shape[0], a.shape[1], b.shape[1]
    sets_per_chunk = max(1, chunk_elements // (p * q * 3))
    a_to_b, b_to_a = [], []
    with torch.no_grad():
        for start in range(0, m, sets_per_chunk):
            a_c = a[start:start + sets_per_chunk].detach()
            b_c = b[start:start + sets_per_chunk].detach()
            # Explicit differences rather than |a|^2 + |b|^2 - 2ab: no cancellation, so a set
            # against itself finds itself exactly.
            d2 = (a_c.unsqueeze(-2) - b_c.unsqueeze(-3)).square().sum(-1)  # (m', P, Q)
            a_to_b.append(d2.argmin(-1))
            b_to_a.append(d2.argmin(-2))
    return torch.cat(a_to_b), torch.cat(b_to_a)


def _gather_points(points: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """points (M, P, 3), index (M, K) -> (M, K, 3)."""
    return torch.gather(points, 1, index.unsqueeze(-1).expand(-1, -1, points.shape[-1]))


def chamfer_distance(a: torch.Tensor, b: torch.Tensor,
                     chunk_elements: int = DEFAULT_CHUNK_ELEMENTS) -> torch.Tensor:
    """Symmetric Chamfer distance (squared, point-averaged) between sets a and b.

    Args:
        a: (..., P, 3); b: (..., Q, 3); leading dimensions broadcast against each other.
        chunk_elements: memory bound of the nearest-neighbour search (see `nearest_indices`).
    Returns:
        (...) one distance per pair of sets; differentiable in a and b.
    """
    if a.shape[-2] == 0 or b.shape[-2] == 0:
        raise ValueError("chamfer_distance needs at least one point in each set")
    lead = torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    a_flat = a.expand(*lead, *a.shape[-2:]).reshape(-1, *a.shape[-2:])
    b_flat = b.expand(*lead, *b.shape[-2:]).reshape(-1, *b.shape[-2:])
    a_to_b, b_to_a = nearest_indices(a_flat, b_flat, chunk_elements)
    a_term = (a_flat - _gather_points(b_flat, a_to_b)).square().sum(-1).mean(-1)
    b_term = (b_flat - _gather_points(a_flat, b_to_a)).square().sum(-1).mean(-1)
    return (a_term + b_term).reshape(lead)


__all__ = ["DEFAULT_CHUNK_ELEMENTS", "chamfer_distance", "nearest_indices"]
