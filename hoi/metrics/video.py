"""Video metrics: VBench's four (as SViMo appendix B.1 uses them), Overall, PSNR, SSIM and FVD.

Videos are uint8 (B, N, H, W, 3) (or (N, H, W, 3) for one video, where a function says so).
Every per-video score is returned as a (B,) tensor; the table value of a metric is the mean
over videos (`overall` multiplies those means, as the paper does).

Where a figure differs from VBench (docs/metrics.md has the full list):
- Subject / background consistency: the same formula, transforms and features as VBench
  (DINO ViT-B/16 CLS token, CLIP ViT-B/32 projected image embedding) when the user's weights
  are the same models, loaded through `transformers` instead of torch hub / openai `clip`.
  VBench's table value weights videos by their frame count; ours averages per-video scores
  (identical when all videos have the same length, as ours do).
- Temporal smoothness (VBench's "motion smoothness"): VBench interpolates the dropped frames
  with the AMT-S network; we use optical-flow midpoint warping (OpenCV Farneback flow both
  ways, Super SloMo's linear flow approximation at t = 1/2, bilinear backward warps of both
  neighbours, averaged). A classical interpolator is worse than AMT on large or non-rigid
  motion, so our scores are lower than VBench's for the same video; compare only with
  figures computed by this module.
- Dynamic degree: VBench's rule exactly (top-5 % flow magnitude per frame pair, threshold
  6 * min(H, W) / 256 px, a video is dynamic when round(4 * T / 16) pairs exceed it, frames
  sampled at 8 fps) but with OpenCV Farneback flow instead of RAFT; Farneback under-estimates
  large displacements, so borderline videos can flip to static.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from hoi.metrics.frechet import frechet_distance_features

# ---------------------------------------------------------------------------------------------
# Feature consistency (subject and background)
# ---------------------------------------------------------------------------------------------

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def feature_consistency(features: torch.Tensor) -> torch.Tensor:
    """VBench's consistency of one feature sequence per video (SViMo eq. 8 and 9).

    For t = 2..T: (max(0, cos(d_1, d_t)) + max(0, cos(d_{t-1}, d_t))) / 2, averaged over t.
    The clamp at 0 is VBench's (the paper's formula omits it).

    Args:
        features: (B, T, D) per-frame features, T >= 2.
    Returns:
        (B,) scores in [0, 1]; 1 for a constant feature sequence.
    """
    f = F.normalize(features.double(), dim=-1)
    to_first = (f[:, 1:] * f[:, :1]).sum(-1).clamp_min(0)
    to_prev = (f[:, 1:] * f[:, :-1]).sum(-1).clamp_min(0)
    return ((to_first + to_prev) / 2).mean(dim=1).float()


def _resize_short_side(x: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    """torchvision `Resize(size)` on uint8-valued (F, 3, H, W) floats: the short side to `size`,
    the long side to int(size * long / short), rounded back to uint8 values as torchvision does
    for uint8 tensors (VBench resizes uint8 frames, then divides by 255)."""
    h, w = x.shape[-2:]
    out = (size, int(size * w / h)) if h <= w else (int(size * h / w), size)
    y = F.interpolate(x, size=out, mode=mode, align_corners=False, antialias=False)
    return y.round().clamp(0, 255)


def _center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """(F, 3, H, W) -> (F, 3, size, size), torchvision's CenterCrop offsets."""
    h, w = x.shape[-2:]
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return x[..., top:top + size, left:left + size]


def _normalise(x: torch.Tensor, mean: tuple, std: tuple) -> torch.Tensor:
    """uint8-valued (F, 3, H, W) -> (x / 255 - mean) / std."""
    m, s = x.new_tensor(mean)[:, None, None], x.new_tensor(std)[:, None, None]
    return (x / 255.0 - m) / s


def _to_chw(frames: torch.Tensor) -> torch.Tensor:
    """uint8 (F, H, W, 3) -> float (F, 3, H, W) with values 0..255."""
    return frames.permute(0, 3, 1, 2).float()


class DinoFeatures:
    """DINO ViT CLS features of frames, as VBench's subject consistency computes them.

    VBench: torch hub `facebookresearch/dino` ViT-B/16, frames resized (short side 224,
    bilinear, no antialias), ImageNet-normalised, position embeddings interpolated to the
    non-square input, the final-norm CLS token. With the same weights in `transformers`
    format (e.g. `facebook/dino-vitb16`) this is the same computation.
    """

    def __init__(self, model: torch.nn.Module, image_size: int | None = None) -> None:
        self.model = model.eval()
        self.image_size = image_size or model.config.image_size

    @classmethod
    def from_pretrained(cls, path: str | Path) -> DinoFeatures:
        """Load a `transformers` `ViTModel` from a local directory (no download)."""
        from transformers import ViTModel  # heavy import, only when features are needed

        return cls(ViTModel.from_pretrained(str(path), add_pooling_layer=False,
                                            local_files_only=True))

    @torch.no_grad()
    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 (F, H, W, 3) -> (F, D) CLS features."""
        device = next(self.model.parameters()).device
        x = _resize_short_side(_to_chw(frames), self.image_size, "bilinear")
        x = _normalise(x, IMAGENET_MEAN, IMAGENET_STD).to(device)
        out = self.model(pixel_values=x, interpolate_pos_encoding=True)
        return out.last_hidden_state[:, 0].float().cpu()


class ClipFeatures:
    """CLIP image embeddings of frames, as VBench's background consistency computes them.

    VBench: openai `clip` ViT-B/32 `encode_image` (the projected embedding) of frames resized
    (short side 224, bicubic), centre-cropped to 224 and CLIP-normalised. We load the same
    weights as `transformers` `CLIPVisionModelWithProjection` (a full `CLIPModel` directory
    such as `openai/clip-vit-base-patch32` loads into it) and use `image_embeds`.
    """

    def __init__(self, model: torch.nn.Module, image_size: int | None = None) -> None:
        self.model = model.eval()
        self.image_size = image_size or model.config.image_size

    @classmethod
    def from_pretrained(cls, path: str | Path) -> ClipFeatures:
        """Load a `CLIPVisionModelWithProjection` (or the vision half of a full `CLIPModel`)
        from a local directory (no download)."""
        from transformers import AutoConfig, CLIPVisionModelWithProjection

        config = AutoConfig.from_pretrained(str(path), local_files_only=True)
        if config.model_type == "clip":  # a full CLIPModel: its projection size is top-level
            config.vision_config.projection_dim = config.projection_dim
            config = config.vision_config
        return cls(CLIPVisionModelWithProjection.from_pretrained(
            str(path), config=config, local_files_only=True))

    @torch.no_grad()
    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 (F, H, W, 3) -> (F, D) projected image embeddings."""
        device = next(self.model.parameters()).device
        x = _center_crop(_resize_short_side(_to_chw(frames), self.image_size, "bicubic"),
                         self.image_size)
        x = _normalise(x, CLIP_MEAN, CLIP_STD).to(device)
        return self.model(pixel_values=x).image_embeds.float().cpu()


FrameFeatures = Callable[[torch.Tensor], torch.Tensor]
"""uint8 frames (F, H, W, 3) -> (F, D) features: `DinoFeatures`, `ClipFeatures` or any other."""


def video_features(videos: torch.Tensor, features: FrameFeatures, batch_frames: int = 16
                   ) -> torch.Tensor:
    """Per-frame features of every video: uint8 (B, N, H, W, 3) -> (B, N, D), computed
    `batch_frames` frames at a time."""
    flat = videos.flatten(0, 1)
    out = torch.cat([features(flat[i:i + batch_frames])
                     for i in range(0, len(flat), batch_frames)])
    return out.view(*videos.shape[:2], -1)


def subject_consistency(videos: torch.Tensor, dino: FrameFeatures, batch_frames: int = 16
                        ) -> torch.Tensor:
    """VBench subject consistency: uint8 (B, N, H, W, 3) -> (B,) with DINO features."""
    return feature_consistency(video_features(videos, dino, batch_frames))


def background_consistency(videos: torch.Tensor, clip: FrameFeatures, batch_frames: int = 16
                           ) -> torch.Tensor:
    """VBench background consistency: uint8 (B, N, H, W, 3) -> (B,) with CLIP features."""
    return feature_consistency(video_features(videos, clip, batch_frames))


# ---------------------------------------------------------------------------------------------
# Optical flow, frame interpolation, temporal smoothness and dynamic degree
# ---------------------------------------------------------------------------------------------

FARNEBACK = dict(pyr_scale=0.5, levels=4, winsize=15, iterations=3, poly_n=5, poly_sigma=1.2,
                 flags=0)
"""OpenCV Farneback parameters: the library's recommended values, 4 pyramid levels so that
displacements of a few tens of pixels at 416 x 624 are still found."""


def optical_flow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dense flow from frame a to frame b: uint8 (H, W, 3) x 2 -> float32 (H, W, 2) in pixels,
    (dx, dy) such that a[y, x] ~ b[y + dy, x + dx]."""
    ga, gb = (cv2.cvtColor(np.ascontiguousarray(x), cv2.COLOR_RGB2GRAY) for x in (a, b))
    return cv2.calcOpticalFlowFarneback(ga, gb, None, **FARNEBACK)


def _backward_warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Sample `image` (H, W, 3) at x + flow(x): float32 (H, W, 3)."""
    h, w = flow.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(image.astype(np.float32), gx + flow[..., 0], gy + flow[..., 1],
                     interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def interpolate_midpoint(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The frame halfway between a and b: uint8 (H, W, 3) x 2 -> uint8 (H, W, 3).

    Flows both ways (Farneback), Super SloMo's linear approximation of the flows from the
    middle frame at t = 1/2 (F_{t->0} = (F_{1->0} - F_{0->1}) / 4, F_{t->1} = -F_{t->0}),
    both neighbours warped backwards and averaged. Exact for static frames; a substitute for
    VBench's AMT network (no weights needed)."""
    f01, f10 = optical_flow(a, b), optical_flow(b, a)
    ft0 = (f10 - f01) / 4
    mid = (_backward_warp(a, ft0) + _backward_warp(b, -ft0)) / 2
    return np.clip(np.rint(mid), 0, 255).astype(np.uint8)


def _frames(video: torch.Tensor) -> list[np.ndarray]:
    return list(video.cpu().numpy())


def temporal_smoothness_one(video: torch.Tensor) -> float:
    """VBench temporal ("motion") smoothness of one uint8 video (N, H, W, 3), N >= 3.

    Keep frames 0, 2, 4, ..., interpolate each frame 2k + 1 from frames 2k and 2k + 2, and score
    (255 - MAE) / 255 with the MAE over all pixels and channels of the interpolated frames
    (SViMo eq. 10). A trailing odd frame without a right neighbour is skipped, as in VBench."""
    frames = _frames(video)
    errors = [np.abs(interpolate_midpoint(frames[i - 1], frames[i + 1]).astype(np.float64)
                     - frames[i]).mean()
              for i in range(1, len(frames) - 1, 2)]
    return (255.0 - float(np.mean(errors))) / 255.0


def temporal_smoothness(videos: torch.Tensor) -> torch.Tensor:
    """uint8 (B, N, H, W, 3) -> (B,) temporal smoothness (see `temporal_smoothness_one`)."""
    return torch.tensor([temporal_smoothness_one(v) for v in videos])


def flow_score(flow: np.ndarray) -> float:
    """VBench's per-pair motion score: mean of the top 5 % flow magnitudes (H, W, 2) -> px."""
    rad = np.sqrt((flow.astype(np.float64) ** 2).sum(-1)).ravel()
    cut = int(rad.size * 0.05)
    return float(np.sort(rad)[::-1][:cut].mean())


def dynamic_thresholds(height: int, width: int, num_frames: int, fps: float = 8.0
                       ) -> tuple[float, int]:
    """VBench's rule: (magnitude threshold in px, number of pairs that must exceed it).

    6 px at a short side of 256, scaled with the short side (and by 8 / fps below 8 fps);
    round(4 * T / 16) pairs for T frames (Python's round, as VBench)."""
    factor = max(1.0, 8.0 / fps)
    return factor * 6.0 * min(height, width) / 256.0, round(4 * num_frames / 16.0)


def is_dynamic(video: torch.Tensor, fps: float = 8.0) -> bool:
    """VBench dynamic degree decision for one uint8 video (N, H, W, 3) at `fps`.

    VBench first samples the video at about 8 fps (every round(fps / 8)-th frame); the
    threshold rule then uses the sampled frames. Flow is Farneback, not RAFT."""
    frames = _frames(video)[::max(1, round(fps / 8))]
    thres, count_num = dynamic_thresholds(*frames[0].shape[:2], len(frames), fps)
    scores = [flow_score(optical_flow(a, b)) for a, b in zip(frames[:-1], frames[1:], strict=True)]
    # VBench returns as soon as the count is reached inside its loop over the pairs, so a
    # video without pairs is static even when count_num is 0.
    return bool(scores) and sum(s > thres for s in scores) >= count_num


def dynamic_degree(videos: torch.Tensor, fps: float = 8.0) -> torch.Tensor:
    """uint8 (B, N, H, W, 3) -> (B,) 1.0 for a dynamic video, 0.0 for a static one; the
    table's dynamic degree is the mean (SViMo eq. 11)."""
    return torch.tensor([float(is_dynamic(v, fps)) for v in videos])


def overall(subject: float, background: float, smoothness: float, dynamic: float) -> float:
    """The paper's Overall score: the product of the four table values (means over videos)."""
    return subject * background * smoothness * dynamic


# ---------------------------------------------------------------------------------------------
# Motion-referenced: where a video moves
# ---------------------------------------------------------------------------------------------


def change_where_driven(videos: torch.Tensor, driving: torch.Tensor, other: torch.Tensor
                        ) -> torch.Tensor:
    """How much more a video moves where the motion that drove it has the hands and objects
    than where another motion has them (issue 22's second target, in pixels).

    A video's change is, per pixel, the mean over frames 2..N of its largest channel difference
    from frame 1 (grey levels). A motion's region is the pixels its motion video covers in any
    frame. Returns, per video, the mean change over the pixels only `driving`'s region holds
    minus that over the pixels only `other`'s holds: positive when the video moves where its
    own motion says, about 0 when it moves alike under either, NaN where the two regions leave
    no pixel to one of them (the same motion, say).

    uint8 (B, N, H, W, 3) x 3, the motion videos drawn with each clip's camera -> (B,)."""
    frames = videos.float()
    change = (frames[:, 1:] - frames[:, :1]).abs().amax(-1).mean(1)  # (B, H, W)
    own, theirs = (m.amax(-1).gt(0).any(1) for m in (driving, other))  # (B, H, W)
    only = lambda region: (change * region).sum((1, 2)) / region.sum((1, 2))  # noqa: E731
    return only(own & ~theirs) - only(theirs & ~own)


# ---------------------------------------------------------------------------------------------
# Ground-truth-referenced: PSNR and SSIM
# ---------------------------------------------------------------------------------------------


def psnr(videos: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio per frame (data range 255), averaged over frames.

    uint8 (B, N, H, W, 3) x 2 -> (B,) dB; a frame identical to its target scores +inf."""
    mse = (videos.double() - target.double()).square().mean(dim=(2, 3, 4))  # (B, N)
    return psnr_db(mse).mean(dim=1).float()


def psnr_db(mse: torch.Tensor, data_range: float = 255.0) -> torch.Tensor:
    """PSNR in dB of mean squared errors, for signals spanning `data_range` (255 for uint8
    pixels, 2 for [-1, 1])."""
    return 10 * torch.log10(data_range**2 / mse)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """(size,) normalised 1D gaussian."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-x.square() / (2 * sigma**2))
    return g / g.sum()


def _blur(x: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Separable 'valid' gaussian filter of (M, 1, H, W) -> (M, 1, H - s + 1, W - s + 1)."""
    x = F.conv2d(x, window.view(1, 1, -1, 1))
    return F.conv2d(x, window.view(1, 1, 1, -1))


def ssim(videos: torch.Tensor, target: torch.Tensor, window_size: int = 11, sigma: float = 1.5
         ) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) per frame, averaged over frames.

    Gaussian window 11 / sigma 1.5, K1 = 0.01, K2 = 0.03, data range 255, each RGB channel
    separately on the 'valid' region (no padding, as the reference MATLAB code and
    pytorch-msssim), mean over channels and positions.

    uint8 (B, N, H, W, 3) x 2, H and W >= window_size -> (B,) in [-1, 1]; 1 when identical."""
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    x = videos.double().permute(0, 1, 4, 2, 3).reshape(-1, 1, *videos.shape[2:4])
    y = target.double().permute(0, 1, 4, 2, 3).reshape(-1, 1, *target.shape[2:4])
    w = _gaussian_window(window_size, sigma)
    mx, my = _blur(x, w), _blur(y, w)
    sxx = _blur(x * x, w) - mx * mx
    syy = _blur(y * y, w) - my * my
    sxy = _blur(x * y, w) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    per_frame = s.view(*videos.shape[:2], 3, -1).mean(dim=(2, 3))
    return per_frame.mean(dim=1).float()


# ---------------------------------------------------------------------------------------------
# FVD
# ---------------------------------------------------------------------------------------------


VideoFeatures = Callable[[torch.Tensor], torch.Tensor]
"""uint8 videos (B, N, H, W, 3) -> (B, D) features (an I3D or any other video network)."""


class TorchScriptI3D:
    """The I3D feature extractor of the common FVD implementations (StyleGAN-V,
    common_metrics_on_video_quality): a TorchScript file `i3d_torchscript.pt` called as
    `model(x, rescale=False, resize=True, return_features=True)` on (B, 3, T, H, W) floats in
    [-1, 1]; it resizes to 224 itself and returns the 400-d pre-logit features."""

    def __init__(self, model: torch.jit.ScriptModule, device: str | torch.device = "cpu"
                 ) -> None:
        self.model = model.eval()
        self.device = torch.device(device)

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu"
                        ) -> TorchScriptI3D:
        return cls(torch.jit.load(str(path), map_location=device), device)

    @torch.no_grad()
    def __call__(self, videos: torch.Tensor) -> torch.Tensor:
        """uint8 (B, N, H, W, 3) -> (B, D)."""
        x = videos.permute(0, 4, 1, 2, 3).float().div(127.5).sub(1).to(self.device)
        return self.model(x, rescale=False, resize=True, return_features=True).float().cpu()


def fvd(videos: torch.Tensor, reference: torch.Tensor, features: VideoFeatures,
        batch_size: int = 8) -> float:
    """Fréchet video distance between two sets of videos, uint8 (B, N, H, W, 3) and
    (B', N, H, W, 3), with any video feature network (`TorchScriptI3D` for the standard FVD).
    Meaningful only with many videos (the standard uses 2048); small sets are biased upwards."""
    def embed(v: torch.Tensor) -> torch.Tensor:
        return torch.cat([features(v[i:i + batch_size]) for i in range(0, len(v), batch_size)])

    return frechet_distance_features(embed(videos), embed(reference))


__all__ = ["ClipFeatures", "DinoFeatures", "FrameFeatures", "TorchScriptI3D", "VideoFeatures",
           "background_consistency", "dynamic_degree", "dynamic_thresholds",
           "feature_consistency", "flow_score", "fvd", "interpolate_midpoint", "is_dynamic",
           "optical_flow", "overall", "psnr", "ssim", "subject_consistency",
           "temporal_smoothness", "temporal_smoothness_one", "video_features"]
