"""`SViMoPipeline`: a trained model + its frozen encoders behind one call, image + prompt in,
video + 3D motion out. The one object the CLI, batch sampling (`jobs/sample.py`) and the
Serve app use.

    pipe = SViMoPipeline.from_pretrained("outputs/runs/svimo-small")
    out = pipe(image, "stir the bowl with the spoon", num_steps=50, seed=0)
    out.video            # (N, H, W, 3) uint8
    out.joints           # (N, 42, 3) metres, camera frame
    out.points           # (N, 298, 3)
    out.motion_video     # (N, H, W, 3) uint8: the motion drawn by Proj
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from transformers import PreTrainedTokenizerBase

from hoi.artifacts import PIPELINE_NAME, find_model, model_config
from hoi.config import Config, StorageConfig
from hoi.diffusion.conditions import image_noise_sigma
from hoi.diffusion.sampler import Sampler, supported_modes
from hoi.geometry.camera import intrinsics
from hoi.geometry.motion import NUM_JOINTS, NUM_POINTS, denormalize, normalize, pack, unpack
from hoi.model.encoders import TextEncoder, VideoVAE, count_tokens, load_encoders
from hoi.model.svimo import SViMo
from hoi.model.vid import VID
from hoi.render.motion_video import render_motion_video
from hoi.render.mp4 import decode_mp4
from hoi.storage import join, read_text

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


class InputError(ValueError):
    """A request the pipeline cannot run, with a message saying what to change."""


@dataclass
class Generation:
    """One generated sample.

    video: (N, H, W, 3) uint8. joints (N, 42, 3) and points (N, 298, 3, 149 tool then 149
    target) in metres in the camera frame, motion_video (N, H, W, 3) uint8 (that motion drawn
    by Proj) and stream_motion_video (the DiT's motion stream, decoded by the VAE: what the
    video model itself "thinks" the motion looks like): None in video_only mode. K: (3, 3)
    intrinsics the motion is drawn with."""

    video: np.ndarray
    joints: np.ndarray | None
    points: np.ndarray | None
    motion_video: np.ndarray | None
    stream_motion_video: np.ndarray | None
    K: np.ndarray
    fps: float
    prompt: str
    mode: str
    seed: int
    num_steps: int


class SViMoPipeline:
    """SViMo + VID + the frozen VAE and T5, sampling with the closed loop (algorithm 2)."""

    def __init__(self, svimo: SViMo, vid: VID, vae: VideoVAE, text_encoder: TextEncoder,
                 *, source: str = "", motion_svimo: SViMo | None = None) -> None:
        """motion_svimo: a separate motion model ("motion_model") whose motion latent guides
        `svimo`, a video model ("video_model"), in joint mode: the paper's "VModel w/ Pred.
        Mot." baseline."""
        self.cfg: Config = svimo.config
        self.svimo, self.vid, self.vae, self.text_encoder = svimo, vid, vae, text_encoder
        self.sampler = Sampler(self.cfg, svimo, vid, vae)
        self.motion_sampler = (None if motion_svimo is None
                               else Sampler(motion_svimo.config, motion_svimo, vid, vae))
        self.null_text = text_encoder.encode([""])
        self.source = source

    # --- loading --------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, path: str, storage: StorageConfig | None = None, *,
                        vae: str | None = None, text_encoder: str | None = None,
                        tokenizer: str | None = None, device: torch.device | str | None = None,
                        dtype: torch.dtype | None = None) -> SViMoPipeline:
        """Load from a training run directory (its latest complete checkpoint), a checkpoint
        directory, or an exported model directory; local or s3://.

        The encoders are the ones the model was trained with (recorded in pipeline.json)
        unless vae / text_encoder / tokenizer name others. device: default CUDA when present;
        dtype: default bf16 on CUDA, float32 on CPU."""
        storage = storage or StorageConfig()
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
        model_dir = find_model(path, storage)
        meta = json.loads(read_text(join(model_dir, PIPELINE_NAME), storage))
        svimo = SViMo.from_pretrained(join(model_dir, meta["svimo"]), storage, device=device,
                                      dtype=dtype)
        vid = VID.from_pretrained(join(model_dir, meta["vid"]), storage, device=device,
                                  dtype=dtype)
        motion_svimo = (SViMo.from_pretrained(join(model_dir, meta["motion_svimo"]), storage,
                                              device=device, dtype=dtype)
                        if meta.get("motion_svimo") else None)
        chosen = {"vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer}
        encoders = dataclasses.replace(
            svimo.config.encoders, **{k: v for k, v in chosen.items() if v is not None})
        cfg = dataclasses.replace(svimo.config, encoders=encoders, storage=storage)
        video_vae, text = load_encoders(cfg, device=device, dtype=dtype)
        log.info("loaded %s (step %s) on %s", model_dir, meta.get("step"), device)
        return cls(svimo, vid, video_vae, text, source=model_dir, motion_svimo=motion_svimo)

    # --- what a request may contain -------------------------------------------------------------

    @property
    def frame_size(self) -> tuple[int, int, int]:
        """(num_frames, height, width) of what this model generates."""
        d = self.cfg.data
        return d.num_frames, d.height, d.width

    @property
    def modes(self) -> tuple[str, ...]:
        """Sampling modes this model supports (see `supported_modes`); with a separate motion
        model also joint."""
        return pipeline_modes(self.cfg, paired=self.motion_sampler is not None)


    # --- sampling -------------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(self, image: np.ndarray | bytes, prompt: str, *, num_steps: int = 50,
                 seed: int = 0, guidance_scale: float | None = None, mode: str = "joint",
                 joints: np.ndarray | None = None, points: np.ndarray | None = None,
                 video: np.ndarray | bytes | None = None, K: np.ndarray | None = None,
                 progress: Progress | None = None) -> Generation:
        """Generate the video and 3D motion of `prompt` starting from `image`.

        Args:
            image: the reference frame, (H', W', 3) uint8 of any size or encoded image bytes
                (PNG/JPEG/WebP); centre-cropped to the model's aspect and resized.
            prompt: e.g. "stir the bowl with the spoon".
            num_steps: denoising steps (DDIM unless diffusion.sampler says otherwise).
            seed: the same seed and inputs give the same sample.
            guidance_scale: classifier-free guidance; None: the config's.
            mode: joint | motion_to_video (needs joints (N, 42, 3) and points (N, 298, 3),
                metres, camera frame) | video_to_motion (needs video (N, H, W, 3) uint8 or MP4
                bytes) | video_only (models trained with the motion attention mask).
            K: (3, 3) intrinsics the motion is drawn with; default: the data's field of view.
            progress: called as progress(step, num_steps) after each step.
        """
        # 1. Check and convert the inputs.
        cfg, dev = self.cfg, self.vae.device
        if mode not in self.modes:
            raise InputError(f"mode {mode!r} is not one of this model's {list(self.modes)}"
                             + (" (video_only needs a model trained with "
                                "model.motion_attention_mask)" if mode == "video_only" else ""))
        if num_steps < 1:
            raise InputError(f"num_steps must be >= 1, got {num_steps}")
        check_prompt(prompt, self.text_encoder.tokenizer, cfg.model.max_text_tokens)
        n, h, w = self.frame_size
        frame = fit_image(to_image_array(image), h, w)
        K = intrinsics(h, w, cfg.data.fov_y_deg) if K is None else np.asarray(K, np.float32)
        K_t = torch.as_tensor(K, dtype=torch.float32, device=dev)[None]
        motion = self._given_motion(mode, joints, points)
        video_latent = self._given_video(mode, video)

        # 2. Conditions: prompt features and the reference image's latent (at the median
        #    noise level of training's augmentation).
        generator = torch.Generator(dev).manual_seed(seed)
        text = self.text_encoder.encode([prompt])
        sigma = image_noise_sigma(cfg, 1, training=False)
        image_latent = self.vae.encode_image(torch.tensor(frame)[None], sigma, generator)

        # 3. The closed loop; with a separate motion model, first its motion, then the video
        #    model from that motion (VID lifts the pair to 3D).
        common = {"generator": generator, "null_text": self.null_text,
                  "guidance_scale": guidance_scale, "num_steps": num_steps}
        loop_mode, motion_latent = mode, None
        if mode == "joint" and self.motion_sampler is not None:
            first = self.motion_sampler(image_latent, text, K_t, mode="joint",
                                        progress=_share(progress, 0, 2), **common)
            loop_mode, motion_latent = "motion_to_video", first.motion_latent
            progress = _share(progress, 1, 2)
        sample = self.sampler(image_latent, text, K_t, mode=loop_mode, motion=motion,
                              motion_latent=motion_latent, video_latent=video_latent,
                              progress=progress, **common)

        # 4. Pixels and metres.
        out_video = self.vae.decode(sample.video_latent)[0].cpu().numpy()
        if sample.motion is None:
            return Generation(out_video, None, None, None, None, K, cfg.data.fps, prompt, mode,
                              seed, num_steps)
        j, p = unpack(denormalize(sample.motion.float(), cfg.vid.coord_center,
                                  cfg.vid.coord_scale))
        eye = torch.eye(3, device=dev)[None]
        drawn = render_motion_video(j, p, K_t, eye, torch.zeros(1, 3, device=dev), h, w)
        stream = self.vae.decode(sample.motion_latent, stream="motion")[0].cpu().numpy()
        return Generation(out_video, j[0].cpu().numpy(), p[0].cpu().numpy(),
                          drawn[0].cpu().numpy(), stream, K, cfg.data.fps, prompt, mode, seed,
                          num_steps)

    def _given_motion(self, mode: str, joints: np.ndarray | None, points: np.ndarray | None
                      ) -> torch.Tensor | None:
        """motion_to_video's (1, N, 340, 3) normalised motion."""
        if mode != "motion_to_video":
            return None
        n = self.cfg.data.num_frames
        if joints is None or points is None:
            raise InputError("mode 'motion_to_video' needs joints (N, 42, 3) and points "
                             "(N, 298, 3) in metres, camera frame")
        joints, points = np.asarray(joints, np.float32), np.asarray(points, np.float32)
        if joints.shape != (n, NUM_JOINTS, 3) or points.shape != (n, NUM_POINTS, 3):
            raise InputError(f"motion must be joints ({n}, {NUM_JOINTS}, 3) and points "
                             f"({n}, {NUM_POINTS}, 3); got {joints.shape} and {points.shape}")
        if not (np.isfinite(joints).all() and np.isfinite(points).all()):
            raise InputError("motion holds NaN or infinite values")
        motion = pack(torch.from_numpy(joints), torch.from_numpy(points))[None]
        motion = normalize(motion, self.cfg.vid.coord_center, self.cfg.vid.coord_scale)
        return motion.to(device=self.vae.device)  # float32, as the sampler keeps the motion

    def _given_video(self, mode: str, video: np.ndarray | bytes | None
                     ) -> torch.Tensor | None:
        """video_to_motion's (1, F, C, h, w) video latent."""
        if mode != "video_to_motion":
            return None
        if video is None:
            raise InputError("mode 'video_to_motion' needs a video")
        n, h, w = self.frame_size
        frames = _decode_video(video) if isinstance(video, bytes) else np.asarray(video)
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[0] != n:
            raise InputError(f"the video must be {n} uint8 RGB frames; got {frames.dtype} "
                             f"{frames.shape}")
        frames = np.stack([fit_image(f, h, w) for f in frames])
        return self.vae.encode(torch.tensor(frames)[None])


def _share(progress: Progress | None, part: int, parts: int) -> Progress | None:
    """Progress of one of `parts` equal sampling passes reported as one count."""
    if progress is None:
        return None
    return lambda i, total: progress(part * total + i, parts * total)


# ---------------------------------------------------------------------------------------------
# Where the weights are
# ---------------------------------------------------------------------------------------------


def pipeline_modes(cfg: Config, paired: bool) -> tuple[str, ...]:
    """The modes of a pipeline whose (video) model was trained with cfg; `paired`: with a
    separate motion model, which adds joint."""
    own = supported_modes(cfg)
    return ("joint", *own) if paired and "joint" not in own else own


def model_modes(model_dir: str, storage: StorageConfig) -> tuple[str, ...]:
    """The modes of an exported model directory, without loading any weights."""
    meta = json.loads(read_text(join(model_dir, PIPELINE_NAME), storage))
    return pipeline_modes(model_config(model_dir, storage), bool(meta.get("motion_svimo")))


# ---------------------------------------------------------------------------------------------
# Prompts and images
# ---------------------------------------------------------------------------------------------

MAX_PROMPT_CHARS = 2000
"""Longer prompts are refused before tokenising (no T5 reads that many tokens)."""


def check_prompt(prompt: str, tokenizer: PreTrainedTokenizerBase, limit: int) -> None:
    """InputError unless the prompt is non-empty and fits `limit` T5 tokens."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise InputError("the prompt is empty: describe the interaction, e.g. "
                         "'stir the bowl with the spoon'")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise InputError(f"the prompt has {len(prompt)} characters; shorten it to at most "
                         f"{limit} T5 tokens")
    used = count_tokens(tokenizer, prompt)
    if used > limit:
        raise InputError(f"the prompt has {used} T5 tokens; this model reads at most {limit}: "
                         f"shorten it")


def to_image_array(image: np.ndarray | bytes) -> np.ndarray:
    """Encoded bytes or an array -> (H, W, 3) uint8 RGB; InputError when it is neither."""
    if isinstance(image, bytes):
        try:
            with Image.open(io.BytesIO(image)) as im:
                im.load()
                return np.asarray(im.convert("RGB"))
        except UnidentifiedImageError:
            raise InputError("the image is not in a format we read: send a PNG, JPEG or "
                             "WebP file") from None
        except (OSError, Image.DecompressionBombError, ValueError) as e:
            raise InputError(f"the image could not be decoded ({e}); send a PNG, JPEG or "
                             f"WebP file") from None
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[-1] != 3:
        raise InputError(f"the image must be (H, W, 3) uint8 RGB; got {array.dtype} "
                         f"{array.shape}")
    return array


def fit_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Centre-crop (H', W', 3) uint8 to the aspect of height x width, then resize (Lanczos)."""
    ih, iw = image.shape[:2]
    if (ih, iw) == (height, width):
        return image
    scale = min(ih / height, iw / width)
    ch, cw = round(height * scale), round(width * scale)
    top, left = (ih - ch) // 2, (iw - cw) // 2
    crop = Image.fromarray(image[top:top + ch, left:left + cw])
    return np.asarray(crop.resize((width, height), Image.Resampling.LANCZOS))


def _decode_video(data: bytes) -> np.ndarray:
    try:
        return decode_mp4(data)
    except Exception as e:  # any container or codec failure is the input's fault
        raise InputError(f"the video could not be decoded ({e}); send an MP4") from None
