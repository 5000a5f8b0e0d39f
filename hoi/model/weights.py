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

import contextlib
import json
import os
from collections.abc import Iterator

import torch
from safetensors import safe_open

from hoi.artifacts import build_with_state
from hoi.config import Config, ConfigError, StorageConfig
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
    with open_foundation(path, cfg, storage) as weights:
        state = {name: weights[name] for name in svimo_names(cfg)}
        weights.check_all_used()
    return build_with_state(SViMo, cfg, state, device=device, dtype=dtype)


def svimo_names(cfg: Config) -> list[str]:
    """Names of SViMo's state dict for `cfg` (built on the meta device: no memory)."""
    with torch.device("meta"):
        return list(SViMo(cfg).state_dict())


@contextlib.contextmanager
def open_foundation(path: str, cfg: Config, storage: StorageConfig | None = None
                    ) -> Iterator[FoundationWeights]:
    """The checkpoint at `path` (see `load_cogvideox`) as `FoundationWeights`, after checking
    it fits `cfg`; an s3:// checkpoint is copied to a local temporary directory first."""
    with local_dir(path, storage or StorageConfig()) as root:
        if os.path.isdir(os.path.join(root, "transformer")):
            root = os.path.join(root, "transformer")
        with open(os.path.join(root, "config.json")) as f:
            foundation = json.load(f)
        check_compatible(foundation, cfg)
        yield FoundationWeights(root, foundation, cfg)


class FoundationWeights:
    """A diffusers CogVideoX transformer checkpoint's tensors under SViMo's names, each read
    when asked for (safetensors' lazy reader: a 5B checkpoint is never in memory at once):
    renamed, the motion twins copied from their video twins, the positional table resampled
    to the config's token grid."""

    def __init__(self, root: str, foundation: dict, cfg: Config):
        self.foundation, self.cfg = foundation, cfg
        single = os.path.join(root, SINGLE_FILE)
        index = os.path.join(root, INDEX_FILE)
        if os.path.exists(single):
            with safe_open(single, "pt") as f:
                files = dict.fromkeys(f.keys(), single)
        elif os.path.exists(index):
            with open(index) as f:
                files = {key: os.path.join(root, shard)
                         for key, shard in json.load(f)["weight_map"].items()}
        else:
            raise FileNotFoundError(f"neither {SINGLE_FILE} nor {INDEX_FILE} under {root!r}")
        self._files = files
        self._used: set[str] = set()

    def _read(self, key: str) -> torch.Tensor:
        if key not in self._files:
            raise KeyError(f"the CogVideoX checkpoint has no tensor {key!r}")
        self._used.add(key)
        with safe_open(self._files[key], "pt") as f:
            return f.get_tensor(key)

    def __getitem__(self, name: str) -> torch.Tensor:
        """SViMo's tensor `name`."""
        dim = self.cfg.model.hidden_size
        if name.startswith("motion_patch_embed."):
            return self._read("patch_embed.proj." + name.split(".", 1)[1])
        if ".motion_linear." in name:
            # rows [0, 3 dim) of CogVideoX's linear are the video's shift, scale, gate
            return self._read(name.replace(".motion_linear.", ".linear."))[:3 * dim].clone()
        if name.startswith("motion_head."):
            return self[name[len("motion_"):]]
        if name == "pos_embedding":
            return resample_positions(self._read("patch_embed.pos_embedding"), self.foundation,
                                      self.cfg)
        for old, new in RENAMES.items():
            if name.startswith(new):
                return self._read(old + name[len(new):])
        return self._read(name)

    def check_all_used(self) -> None:
        """Raise a ConfigError when the checkpoint holds tensors SViMo did not take (a
        checkpoint of another architecture with the same sizes)."""
        unused = sorted(set(self._files) - self._used)
        if unused:
            raise ConfigError(f"the CogVideoX checkpoint has {len(unused)} tensors SViMo has no "
                              f"place for, e.g. {unused[:3]}")

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


def resample_positions(table: torch.Tensor, foundation: dict, cfg: Config) -> torch.Tensor:
    """(1, L_text + F' h' w', D) at the checkpoint's grid -> (1, L_text + F h w, D) at ours,
    float32 like SViMo's own table (diffusers saves its table in float64)."""
    p, tc = foundation["patch_size"], foundation["temporal_compression_ratio"]
    src = ((foundation["sample_frames"] - 1) // tc + 1,
           foundation["sample_height"] // p, foundation["sample_width"] // p)
    return resample_grid(table.float(), foundation["max_text_seq_length"], src, cfg.token_grid)
