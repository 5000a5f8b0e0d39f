"""Build SViMo from a CogVideoX foundation checkpoint (diffusers layout, e.g. CogVideoX-5B-I2V).

The text and video path is copied name for name (`svimo.py` mirrors diffusers' module names);
the motion stream starts as a copy of its video twin, so that training starts from the
foundation model's behaviour (SPEC section 3):

- `motion_patch_embed` <- `patch_embed.proj` (the 16 guidance channels take the place of the
  16 image channels);
- every block's `norm{1,2}.motion_linear` <- the video rows (shift, scale, gate) of
  `norm{1,2}.linear`;
- `motion_head` <- `norm_final`, `norm_out`, `proj_out`.

The learned positional table. CogVideoX-5B-I2V adds a table learned at 480 x 720
(60 x 90 latents, 30 x 45 x 13 tokens) and diffusers refuses any other size; the paper trains
at 240 x 368 and 416 x 624. Fine-tuning projects either drop the table (and lose the
position signal the weights were trained with) or resample it. We resample: the visual part,
viewed as a (13, 30, 45) grid of vectors, is trilinearly interpolated to the model's token
grid (13 x 26 x 39 at 416 x 624), the text part is kept; at the foundation's own size the
resampling is the identity, so the diffusers-equivalence holds exactly there. RoPE positions
are stretched over the same 30 x 45 base grid as CogVideoX's pipeline does
(`model.rope_base_grid`), so both position signals agree on where a token is.
"""

from __future__ import annotations

import json
import os

import safetensors.torch
import torch

from hoi.config import Config, ConfigError, StorageConfig
from hoi.model.pretrained import build_with_state
from hoi.model.svimo import SViMo, resample_grid
from hoi.storage import local_dir

SINGLE_FILE = "diffusion_pytorch_model.safetensors"
INDEX_FILE = "diffusion_pytorch_model.safetensors.index.json"

# diffusers name prefix -> ours (everything else is identical)
RENAMES = {
    "patch_embed.pos_embedding": "pos_embedding",
    "norm_final.": "head.norm_final.",
    "norm_out.": "head.norm_out.",
    "proj_out.": "head.proj_out.",
}


def load_cogvideox(path: str, cfg: Config, storage: StorageConfig | None = None, *,
                   device: torch.device | str | None = None,
                   dtype: torch.dtype | None = None) -> SViMo:
    """SViMo initialised from a diffusers `CogVideoXTransformer3DModel` directory.

    Args:
        path: the transformer directory (config.json + safetensors, single or sharded), or a
            pipeline root with a `transformer/` subdirectory; local or s3://.
        cfg: the run config; its model sizes must match the checkpoint's (checked).
    """
    with local_dir(path, storage or StorageConfig()) as root:
        if os.path.isdir(os.path.join(root, "transformer")):
            root = os.path.join(root, "transformer")
        with open(os.path.join(root, "config.json")) as f:
            foundation = json.load(f)
        check_compatible(foundation, cfg)
        state = svimo_state(_read_state(root), foundation, cfg)
        return build_with_state(SViMo, cfg, state, device=device, dtype=dtype)


def check_compatible(foundation: dict, cfg: Config) -> None:
    """Raise a ConfigError listing every size where `cfg` and the checkpoint disagree."""
    m, C = cfg.model, cfg.latent.channels
    p = foundation.get("patch_size", 2)
    expected = {
        "num_layers": m.num_layers, "num_attention_heads": m.num_heads,
        "attention_head_dim": m.head_dim, "time_embed_dim": m.time_embed_dim,
        "text_embed_dim": m.text_embed_dim, "patch_size": m.patch_size,
        "max_text_seq_length": m.max_text_tokens, "in_channels": 2 * C, "out_channels": C,
        "temporal_compression_ratio": cfg.latent.temporal_compression,
        "use_rotary_positional_embeddings": True,
        "use_learned_positional_embeddings": m.learned_positional_embedding,
        "patch_size_t": None, "ofs_embed_dim": None,
    }
    problems = [f"{key}: checkpoint {foundation.get(key)!r}, config {value!r}"
                for key, value in expected.items() if foundation.get(key) != value]
    base = [foundation["sample_height"] // p, foundation["sample_width"] // p]
    if list(m.rope_base_grid or cfg.token_grid[1:]) != base:
        problems.append(f"model.rope_base_grid: the checkpoint was trained on a {base} token "
                        f"grid, config has {m.rope_base_grid}")
    if problems:
        raise ConfigError("the CogVideoX checkpoint does not fit this config (an I2V "
                          "checkpoint of the same sizes is needed):\n  " + "\n  ".join(problems))


def svimo_state(state: dict[str, torch.Tensor], foundation: dict, cfg: Config
                ) -> dict[str, torch.Tensor]:
    """diffusers state dict -> SViMo state dict: renamed, motion twins, resampled table."""
    out = {}
    for key, value in state.items():
        for old, new in RENAMES.items():
            if key.startswith(old):
                key = new + key[len(old):]
                break
        out[key] = value
    dim = cfg.model.hidden_size
    out["motion_patch_embed.weight"] = out["patch_embed.proj.weight"].clone()
    out["motion_patch_embed.bias"] = out["patch_embed.proj.bias"].clone()
    for i in range(cfg.model.num_layers):
        for norm in ("norm1", "norm2"):
            prefix = f"transformer_blocks.{i}.{norm}."
            # rows [0, 3 dim) of CogVideoX's linear are the video's shift, scale, gate
            out[prefix + "motion_linear.weight"] = out[prefix + "linear.weight"][:3 * dim].clone()
            out[prefix + "motion_linear.bias"] = out[prefix + "linear.bias"][:3 * dim].clone()
    for key in [k for k in out if k.startswith("head.")]:
        out["motion_" + key] = out[key].clone()
    if "pos_embedding" in out:
        out["pos_embedding"] = resample_positions(out["pos_embedding"], foundation, cfg)
    return out


def resample_positions(table: torch.Tensor, foundation: dict, cfg: Config) -> torch.Tensor:
    """(1, L_text + F' h' w', D) at the checkpoint's grid -> (1, L_text + F h w, D) at ours."""
    p, tc = foundation["patch_size"], foundation["temporal_compression_ratio"]
    src = ((foundation["sample_frames"] - 1) // tc + 1,
           foundation["sample_height"] // p, foundation["sample_width"] // p)
    return resample_grid(table, foundation["max_text_seq_length"], src, cfg.token_grid)


def _read_state(root: str) -> dict[str, torch.Tensor]:
    """All tensors of a single-file or sharded safetensors checkpoint (memory-mapped)."""
    single = os.path.join(root, SINGLE_FILE)
    if os.path.exists(single):
        return safetensors.torch.load_file(single)
    index = os.path.join(root, INDEX_FILE)
    if not os.path.exists(index):
        raise FileNotFoundError(f"neither {SINGLE_FILE} nor {INDEX_FILE} under {root!r}")
    with open(index) as f:
        shards = sorted(set(json.load(f)["weight_map"].values()))
    state: dict[str, torch.Tensor] = {}
    for shard in shards:
        state.update(safetensors.torch.load_file(os.path.join(root, shard)))
    return state
