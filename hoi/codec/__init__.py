"""The small codec of the CPU flavours (`jobs/train_codec.py`): a CogVideoX-layout VAE trained on the shards' videos, a
word-level tokenizer of the prompt vocabulary and a small randomly initialised T5 encoder.

They stand in for CogVideoX-5B-I2V's VAE and T5 v1.1 XXL, which are far too large for a CPU.
The VAE has the real one's architecture (4x time, 16 channels, and 8x space, or less where the
flavour's frames are small: svimo-small codes 4 x 4 px a latent pixel); only widths and depth
shrink. The T5 is a frozen feature
extractor: seeded random weights give each prompt distinct features, which is all the DiT needs.

Data is read straight from the Parquet shards with pyarrow, not through Ray Data: the job is one
process that needs every training clip in memory for many epochs (32 small clips are a few MB),
so a streaming, distributed reader would only add a cluster start and a copy.

A codec trained once at length can be shipped and installed instead (`codec.asset`,
`asset_misfit`, `install_asset`): configs/default.yaml installs assets/codec-small.

Output under `cfg.codec.output` (local or s3://): vae/, tokenizer/, text_encoder/ (load them by
setting encoders.vae / encoders.tokenizer / encoders.text_encoder), codec.json (settings,
validation PSNR, latent scaling factor, losses) and reconstruction.png (what the PSNR looks
like: validation frames and their reconstructions).
"""

from __future__ import annotations


class CodecError(RuntimeError):
    """The codec cannot be trained: no shards, no clips in them, or a diverging loss."""
