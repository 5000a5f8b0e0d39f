"""The codec's text side: a word-level tokenizer of the prompt vocabulary and a small T5."""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

from hoi.config import Config, ConfigError
from hoi.vocabulary import ACTIONS, prompt_for

PAD, EOS, UNK = "<pad>", "</s>", "<unk>"


def prompt_vocabulary(extra: Iterable[str] = ()) -> list[str]:
    """Every synthetic prompt (each action with each of its targets and tools) plus `extra`
    (the shards' prompts: TACO's may use other words), sorted and deduplicated."""
    synthetic = {prompt_for(action, target, tool)
                 for action, (tools, targets) in ACTIONS.items()
                 for tool in tools for target in targets}
    return sorted(synthetic | set(extra))


def build_tokenizer(prompts: Iterable[str], max_tokens: int) -> PreTrainedTokenizerFast:
    """A word-level tokenizer of `prompts`' words, T5-like: lower-cased, <pad> = 0, </s> = 1
    appended to every sequence, <unk> = 2 for words outside the vocabulary."""
    tok = Tokenizer(models.WordLevel(unk_token=UNK))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()  # words and runs of punctuation
    tok.train_from_iterator(list(prompts), trainers.WordLevelTrainer(
        special_tokens=[PAD, EOS, UNK], show_progress=False))
    tok.post_processor = processors.TemplateProcessing(
        single=f"$A {EOS}", pair=f"$A {EOS} $B {EOS}", special_tokens=[(EOS, tok.token_to_id(EOS))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, eos_token=EOS,
                                   unk_token=UNK, model_max_length=max_tokens)


def build_text_encoder(cfg: Config, vocab_size: int) -> T5EncoderModel:
    """A T5 encoder of width model.text_embed_dim with codec.text_layers / text_heads; its
    random initial weights come from the global RNG (seed it around the call)."""
    width, heads = cfg.model.text_embed_dim, cfg.codec.text_heads
    if width % heads:
        raise ConfigError(f"model.text_embed_dim {width} is not a multiple of codec.text_heads "
                          f"{heads}")
    return T5EncoderModel(T5Config(
        vocab_size=vocab_size, d_model=width, d_kv=width // heads, d_ff=4 * width,
        num_layers=cfg.codec.text_layers, num_heads=heads, dropout_rate=0.0,
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)).eval()
