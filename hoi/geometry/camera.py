"""Pinhole cameras in the OpenCV convention.

World -> camera: ``x_cam = R @ x_world + T``; camera axes x right, y down, z forward.
Camera -> pixels: ``(u, v) = (fx x / z + cx, fy y / z + cy)``, with pixel *centres* at integer
coordinates, so a point lands in pixel ``(round(v), round(u))``.
"""

from __future__ import annotations

import numpy as np
import torch


def project(points: torch.Tensor, K: torch.Tensor, R: torch.Tensor, T: torch.Tensor
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Project world points to pixels.

    Args:
        points: (..., P, 3) world coordinates.
        K, R: (..., 3, 3) intrinsics and world-to-camera rotation, broadcast against points'
            leading dimensions (e.g. (B, 1, 3, 3) for points of shape (B, N, P, 3)).
        T: (..., 3) world-to-camera translation.
    Returns:
        uv: (..., P, 2) pixel coordinates (u = column, v = row); depth: (..., P) camera z.
    """
    cam = points @ R.transpose(-1, -2) + T.unsqueeze(-2)
    depth = cam[..., 2]
    pix = cam @ K.transpose(-1, -2)
    uv = pix[..., :2] / depth.clamp_min(1e-6).unsqueeze(-1)
    return uv, depth


def intrinsics(height: int, width: int, fov_y_deg: float) -> np.ndarray:
    """K (3, 3) of a camera with vertical field of view `fov_y_deg`, principal point centred."""
    f = 0.5 * height / np.tan(np.deg2rad(fov_y_deg) / 2)
    return np.array([[f, 0, (width - 1) / 2], [0, f, (height - 1) / 2], [0, 0, 1]], np.float32)


def look_at(eye: np.ndarray, target: np.ndarray, up: tuple[float, float, float] = (0.0, 0.0, 1.0)
            ) -> tuple[np.ndarray, np.ndarray]:
    """(R (3, 3), T (3,)) of a camera at `eye` looking at `target`; `up` is world up."""
    z = target - eye
    z = z / np.linalg.norm(z)
    x = np.cross(z, np.asarray(up, float))
    x = x / np.linalg.norm(x)
    y = np.cross(z, x)  # points "down" in the image, as OpenCV wants
    R = np.stack([x, y, z]).astype(np.float32)
    T = (-R @ eye).astype(np.float32)
    return R, T


def crop_resize_intrinsics(K: np.ndarray, left: float, top: float, scale_x: float,
                           scale_y: float) -> np.ndarray:
    """K after cropping at (left, top) and resizing the crop by (scale_x, scale_y).

    With pixel centres at integers, resizing maps u -> (u + 0.5) * s - 0.5."""
    out = np.asarray(K, np.float64).copy()
    out[0, 0] *= scale_x
    out[1, 1] *= scale_y
    out[0, 2] = (K[0, 2] - left + 0.5) * scale_x - 0.5
    out[1, 2] = (K[1, 2] - top + 0.5) * scale_y - 0.5
    return out.astype(np.float32)
