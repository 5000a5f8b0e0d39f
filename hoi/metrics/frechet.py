"""The Fréchet distance between Gaussians fitted to feature sets: FVD's and the interaction
FID's common core, in numpy (no scipy)."""

from __future__ import annotations

import numpy as np
import torch


def feature_statistics(features: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(M, D) features -> mean (D,) and unbiased covariance (D, D), float64."""
    x = np.asarray(features, dtype=np.float64)
    return x.mean(axis=0), np.atleast_2d(np.cov(x, rowvar=False))


def _sqrt_psd(a: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix."""
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(w.clip(min=0))) @ v.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
                     ) -> float:
    """Fréchet (2-Wasserstein) distance between N(mu1, sigma1) and N(mu2, sigma2):

        |mu1 - mu2|^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^(1/2)).

    tr((S1 S2)^(1/2)) is computed as tr((S1^(1/2) S2 S1^(1/2))^(1/2)), whose argument is
    symmetric PSD, so no complex parts or scipy `sqrtm` are needed, and singular covariances
    (fewer samples than dimensions) are handled."""
    s1 = _sqrt_psd(sigma1)
    cross = np.linalg.eigvalsh(s1 @ sigma2 @ s1).clip(min=0)
    dist = (np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2)
            - 2 * np.sqrt(cross).sum())
    return float(max(dist, 0.0))


def frechet_distance_features(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor
                              ) -> float:
    """Fréchet distance between the Gaussians fitted to feature sets a (M, D) and b (M', D),
    M, M' >= 2 (a covariance needs two samples)."""
    if min(len(a), len(b)) < 2:
        raise ValueError(f"a Fréchet distance needs two or more samples per set, got "
                         f"{len(a)} and {len(b)}")
    return frechet_distance(*feature_statistics(a), *feature_statistics(b))
