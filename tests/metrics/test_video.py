"""Video metrics against hand-computed values on tiny inputs."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
from transformers import CLIPConfig, CLIPModel, ViTConfig, ViTModel

from hoi.metrics import video as V
from hoi.metrics.frechet import frechet_distance, frechet_distance_features


def texture(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth random uint8 RGB texture (H, W, 3): flow-trackable everywhere."""
    rng = np.random.default_rng(seed)
    x = cv2.GaussianBlur(rng.uniform(0, 255, (height, width, 3)).astype(np.float32), (0, 0), 2.0)
    return ((x - x.min()) / (x.max() - x.min()) * 255).astype(np.uint8)


def translating(n: int, dx: int, dy: int, height: int = 96, width: int = 128) -> torch.Tensor:
    """uint8 (n, H, W, 3): a window moving (dx, dy) px per frame over a texture, so the content
    moves by (-dx, -dy) px per frame."""
    big = texture(height + n * abs(dy) + 40, width + n * abs(dx) + 40)
    frames = [big[20 + t * dy:20 + t * dy + height, 20 + t * dx:20 + t * dx + width]
              for t in range(n)]
    return torch.from_numpy(np.stack(frames))


# ---------------------------------------------------------------------------------------------
# Consistency
# ---------------------------------------------------------------------------------------------


def test_feature_consistency_hand_computed() -> None:
    e1, e2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    diag = torch.tensor([1.0, 1.0]) / math.sqrt(2)
    # t=2: cos(e1, e1) = 1 both -> 1; t=3: cos(e1, e2) = 0 both -> 0: mean 0.5
    assert V.feature_consistency(torch.stack([e1, e1, e2])[None]).item() == pytest.approx(0.5)
    # t=2: (cos(e1, d) + cos(e1, d)) / 2 = 0.7071; t=3: (cos(e1, e2) + cos(d, e2)) / 2 = 0.3536
    expected = (1 / math.sqrt(2) + 0.5 / math.sqrt(2)) / 2
    assert V.feature_consistency(torch.stack([e1, diag, e2])[None]).item() == pytest.approx(
        expected, rel=1e-6)
    # VBench clamps negative cosines at 0: an anti-parallel frame scores 0, not -1
    assert V.feature_consistency(torch.stack([e1, -e1])[None]).item() == 0.0
    # scale-invariant
    assert V.feature_consistency(torch.stack([e1, 3 * e1, 0.5 * e1])[None]).item() == 1.0


@pytest.fixture(scope="module")
def tiny_dino(tmp_path_factory: pytest.TempPathFactory) -> V.DinoFeatures:
    path = tmp_path_factory.mktemp("dino")
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=1,
                       num_attention_heads=2, intermediate_size=32)
    torch.manual_seed(0)
    ViTModel(config, add_pooling_layer=False).save_pretrained(path)
    return V.DinoFeatures.from_pretrained(path)


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[CLIPModel, V.ClipFeatures]:
    """A full CLIPModel directory (like openai/clip-vit-base-patch32), loaded as features."""
    path = tmp_path_factory.mktemp("clip")
    config = CLIPConfig(
        text_config=dict(vocab_size=64, hidden_size=16, intermediate_size=32,
                         num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=16,
                         bos_token_id=0, eos_token_id=1, pad_token_id=1),
        vision_config=dict(image_size=32, patch_size=8, hidden_size=16, intermediate_size=32,
                           num_hidden_layers=1, num_attention_heads=2),
        projection_dim=8)
    torch.manual_seed(0)
    model = CLIPModel(config).eval()
    model.save_pretrained(path)
    return model, V.ClipFeatures.from_pretrained(path)


def test_identical_frames_score_one(tiny_dino: V.DinoFeatures, tiny_clip) -> None:
    frame = torch.from_numpy(texture(24, 40))  # non-square: DINO interpolates positions
    videos = frame.expand(2, 5, -1, -1, -1)
    assert V.subject_consistency(videos, tiny_dino).tolist() == pytest.approx([1.0, 1.0])
    assert V.background_consistency(videos, tiny_clip[1]).tolist() == pytest.approx([1.0, 1.0])


def test_changing_frames_score_below_one(tiny_dino: V.DinoFeatures, tiny_clip) -> None:
    frames = torch.from_numpy(np.stack([texture(24, 40, seed) for seed in range(4)]))[None]
    features = V.video_features(frames, tiny_dino, batch_frames=3)  # batching across chunks
    assert features.shape == (1, 4, 16)
    score = V.subject_consistency(frames, tiny_dino)
    assert score.item() == pytest.approx(V.feature_consistency(features).item())
    # random tiny networks map all frames close together, but not onto one point
    assert score.item() < 1 - 1e-4
    assert V.background_consistency(frames, tiny_clip[1]).item() < 1 - 1e-4


def test_clip_features_are_clips_projected_embedding(tiny_clip) -> None:
    """The vision half loaded from a full CLIPModel directory is CLIPModel's image features
    (no randomly re-initialised projection), on VBench's resize + centre crop + normalise."""
    model, features = tiny_clip
    frames = torch.from_numpy(np.stack([texture(48, 64, 1), texture(48, 64, 2)]))
    x = frames.permute(0, 3, 1, 2).float()
    x = torch.nn.functional.interpolate(x, size=(32, 42), mode="bicubic", align_corners=False)
    x = x.round().clamp(0, 255)[..., 5:37]  # centre crop of width 32 from 42
    mean, std = torch.tensor(V.CLIP_MEAN)[:, None, None], torch.tensor(V.CLIP_STD)[:, None, None]
    with torch.no_grad():
        expected = model.get_image_features(pixel_values=(x / 255 - mean) / std)
    expected = expected if torch.is_tensor(expected) else expected.pooler_output
    assert torch.allclose(features(frames), expected, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Flow, smoothness, dynamic degree, Overall
# ---------------------------------------------------------------------------------------------


def test_known_translation_gives_known_flow() -> None:
    frames = translating(2, dx=3, dy=2).numpy()
    flow = V.optical_flow(frames[0], frames[1])
    assert np.median(flow[..., 0]) == pytest.approx(-3.0, abs=0.1)
    assert np.median(flow[..., 1]) == pytest.approx(-2.0, abs=0.1)
    assert V.flow_score(flow) == pytest.approx(math.hypot(3, 2), abs=0.3)


def test_flow_score_is_mean_of_top_five_percent() -> None:
    flow = np.zeros((10, 10, 2), np.float32)
    flow.reshape(-1, 2)[:5] = [3.0, 4.0]  # 5 of 100 pixels move by 5 px: exactly the top 5 %
    assert V.flow_score(flow) == pytest.approx(5.0)
    flow.reshape(-1, 2)[:10] = [0.0, 1.0]
    assert V.flow_score(flow) == pytest.approx(1.0)


def test_dynamic_thresholds_follow_vbench() -> None:
    assert V.dynamic_thresholds(256, 512, 16) == (6.0, 4)
    assert V.dynamic_thresholds(416, 624, 49) == (pytest.approx(9.75), 12)
    assert V.dynamic_thresholds(96, 128, 6) == (pytest.approx(2.25), 2)  # round(1.5) = 2
    assert V.dynamic_thresholds(256, 256, 16, fps=4)[0] == 12.0


def test_dynamic_degree_moving_and_static() -> None:
    moving = translating(6, dx=3, dy=2)  # 3.6 px per frame > 2.25 px in every pair
    static = moving[:1].expand(6, -1, -1, -1)
    slow = translating(6, dx=1, dy=0)  # 1 px per frame < 2.25 px
    videos = torch.stack([moving, static, slow])
    assert V.dynamic_degree(videos).tolist() == [1.0, 0.0, 0.0]
    # half the videos dynamic -> dynamic degree 0.5
    assert V.dynamic_degree(videos[:2]).mean().item() == 0.5


def test_dynamic_degree_needs_enough_moving_pairs() -> None:
    """8 frames need round(4 * 8 / 16) = 2 moving pairs: one jump is not enough, two are."""
    still = translating(1, 0, 0)[0]
    moved = translating(2, dx=4, dy=0)[1]
    one_jump = torch.stack([still] * 4 + [moved] * 4)
    two_jumps = torch.stack([still] * 3 + [moved] * 2 + [still] * 3)
    assert V.dynamic_degree(torch.stack([one_jump, two_jumps])).tolist() == [0.0, 1.0]


def test_temporal_smoothness_identical_frames_is_one() -> None:
    videos = torch.from_numpy(texture(32, 48)).expand(1, 7, -1, -1, -1)
    assert V.temporal_smoothness(videos).item() == 1.0


def test_temporal_smoothness_hand_computed_mae() -> None:
    """Flat frames: the interpolation of two grey-100 frames is grey 100; odd frames are
    grey 110, so the MAE is 10 and the score (255 - 10) / 255."""
    video = torch.full((1, 5, 16, 16, 3), 100, dtype=torch.uint8)
    video[:, 1::2] = 110
    assert V.temporal_smoothness(video).item() == pytest.approx(245 / 255)
    # an even number of frames: the last odd frame has no right neighbour and is skipped
    video6 = torch.cat([video, torch.full((1, 1, 16, 16, 3), 0, dtype=torch.uint8)], dim=1)
    assert V.temporal_smoothness(video6).item() == pytest.approx(245 / 255)


def test_temporal_smoothness_prefers_smooth_motion() -> None:
    smooth = translating(7, dx=2, dy=1)
    jerky = smooth.clone()
    jerky[1::2] = smooth[0]  # odd frames jump back to the start
    scores = V.temporal_smoothness(torch.stack([smooth, jerky]))
    assert scores[0] > 0.99  # the midpoint warp recovers a uniform translation
    assert scores[1] < scores[0] - 0.02


def test_overall_is_the_product() -> None:
    # the paper's table 3, first row: 0.9534 * 0.9546 * 0.9883 * 0.9784 = 0.8800
    assert V.overall(0.9534, 0.9546, 0.9883, 0.9784) == pytest.approx(0.8800, abs=5e-5)


# ---------------------------------------------------------------------------------------------
# PSNR and SSIM
# ---------------------------------------------------------------------------------------------


def test_psnr_known_values() -> None:
    a = torch.full((2, 3, 16, 16, 3), 100, dtype=torch.uint8)
    b = a + 5  # MSE 25
    assert V.psnr(b, a).tolist() == pytest.approx([10 * math.log10(255**2 / 25)] * 2)
    assert V.psnr(a, a).isinf().all()
    # per-frame PSNR averaged: one frame off by 5, one by 10 (MSE 100)
    c = a.clone()
    c[:, 0] += 5
    c[:, 1:] += 10
    expected = (10 * math.log10(255**2 / 25) + 2 * 10 * math.log10(255**2 / 100)) / 3
    assert V.psnr(c, a)[0].item() == pytest.approx(expected, rel=1e-6)


def test_ssim_known_values() -> None:
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.integers(0, 256, (1, 2, 16, 20, 3), dtype=np.uint8))
    assert V.ssim(x, x).item() == pytest.approx(1.0, abs=1e-6)
    # flat images: no variance, so SSIM is the luminance term (2 m1 m2 + C1) / (m1^2 + m2^2 + C1)
    a = torch.full((1, 1, 16, 16, 3), 100, dtype=torch.uint8)
    b = torch.full((1, 1, 16, 16, 3), 110, dtype=torch.uint8)
    c1 = (0.01 * 255) ** 2
    expected = (2 * 100 * 110 + c1) / (100**2 + 110**2 + c1)
    assert V.ssim(a, b).item() == pytest.approx(expected, rel=1e-6)
    noisy = (x.int() + torch.from_numpy(rng.integers(-40, 41, x.shape))).clamp(0, 255)
    assert 0 < V.ssim(noisy.to(torch.uint8), x).item() < 0.99


def test_gaussian_window() -> None:
    w = V._gaussian_window(11, 1.5)
    assert w.sum().item() == pytest.approx(1.0)
    assert w[5] / w[6] == pytest.approx(math.exp(1 / (2 * 1.5**2)))


# ---------------------------------------------------------------------------------------------
# Fréchet distance and FVD
# ---------------------------------------------------------------------------------------------


def test_frechet_distance_diagonal_gaussians() -> None:
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    v1, v2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 4.0, 1.0])
    # |mu1 - mu2|^2 + sum (sqrt(v1) - sqrt(v2))^2 = 5 + (1 + 0 + 4)
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(10.0)
    assert frechet_distance(mu1, np.diag(v1), mu1, np.diag(v1)) == pytest.approx(0.0, abs=1e-9)


def test_frechet_distance_non_commuting_covariances() -> None:
    """2 x 2: tr sqrt(M) = sqrt(tr M + 2 sqrt(det M)) for M = S1 S2 with positive eigenvalues."""
    s1 = np.array([[2.0, 0.5], [0.5, 1.0]])
    s2 = np.array([[1.0, -0.3], [-0.3, 3.0]])
    m = s1 @ s2
    tr_sqrt = math.sqrt(np.trace(m) + 2 * math.sqrt(np.linalg.det(m)))
    expected = 1.0 + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt
    got = frechet_distance(np.zeros(2), s1, np.array([1.0, 0.0]), s2)
    assert got == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_of_samples() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(0.0, 1.0, (20000, 4))
    b = rng.normal(0.0, 2.0, (20000, 4)) + [3.0, 0.0, 0.0, 0.0]
    # 9 + 4 * (1 - 2)^2 = 13
    assert frechet_distance_features(a, b) == pytest.approx(13.0, rel=0.03)
    assert frechet_distance_features(a, a) == pytest.approx(0.0, abs=1e-6)
    # fewer samples than dimensions: singular covariances are fine
    assert frechet_distance_features(a[:3], a[:3]) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="two or more samples"):
        frechet_distance_features(a[:1], a)


class _TinyVideoNet(torch.nn.Module):
    """Stands in for i3d_torchscript.pt: the same call signature, mean colour and motion."""

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = True,
                return_features: bool = True) -> torch.Tensor:
        motion = (x[:, :, 1:] - x[:, :, :-1]).abs().mean(dim=(2, 3, 4))
        return torch.cat([x.mean(dim=(2, 3, 4)), motion], dim=1)


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_fvd_with_a_torchscript_feature_network(tmp_path) -> None:
    path = tmp_path / "i3d_torchscript.pt"
    torch.jit.save(torch.jit.script(_TinyVideoNet()), str(path))
    i3d = V.TorchScriptI3D.from_pretrained(path)
    gen = torch.Generator().manual_seed(0)
    real = torch.randint(0, 256, (12, 4, 8, 8, 3), generator=gen, dtype=torch.uint8)
    dark = (real // 4).to(torch.uint8)
    feats = i3d(real[:2])
    assert feats.shape == (2, 6)
    # features of uint8 255 are 1.0 in [-1, 1]
    assert i3d(torch.full((1, 2, 4, 4, 3), 255, dtype=torch.uint8))[0, :3].tolist() == [1.0] * 3
    assert V.fvd(real, real, i3d, batch_size=5) == pytest.approx(0.0, abs=1e-9)
    assert V.fvd(dark, real, i3d) > V.fvd(real[:6], real[6:], i3d)


def test_a_video_moves_where_the_motion_that_drove_it_has_the_hands() -> None:
    """A block slides along the top half of the frame; the driving motion covers the top half,
    the other the bottom: the change only the driving region holds (the block's path) minus
    the bottom's (none); swapped, the same with the sign flipped."""
    video = torch.full((1, 3, 8, 16, 3), 50, dtype=torch.uint8)
    for t in range(3):
        video[0, t, 1:3, 2 + 4 * t:6 + 4 * t] = 210
    top, bottom = torch.zeros_like(video), torch.zeros_like(video)
    top[0, 0, :4], bottom[0, 2, 4:] = 255, 255  # a region is any frame's coverage
    change = torch.zeros(8, 16)
    for t in (1, 2):  # frames 2 and 3 against frame 1: the block left x 2-5, and arrived
        moved = torch.zeros(8, 16, dtype=torch.bool)
        moved[1:3, 2:6] = moved[1:3, 2 + 4 * t:6 + 4 * t] = True
        change += 160.0 * moved / 2
    expected = change[:4].mean().item()
    assert V.change_where_driven(video, top, bottom).item() == pytest.approx(expected)
    assert V.change_where_driven(video, bottom, top).item() == pytest.approx(-expected)
    assert math.isnan(V.change_where_driven(video, top, top).item())
