"""A tiny random causal LM for AbstractCore's HuggingFace provider, built at test time (nothing downloads).

`build_tiny_llama(dir)`: a 2-layer Llama (hidden 32, ~10k parameters) with a character-level BPE tokenizer
made offline with the `tokenizers` library (lowercase letters and space, no merges; anything else is
<unk>) and a small chat template, saved with `save_pretrained`. Its answers are random letters. The
vocabulary is kept at 31 tokens on purpose: random logits are near uniform, so the end token comes
after ~30 sampled tokens (with 260 byte tokens answers ran to 40-110 tokens, 15-30 s on a loaded
2-core machine). A few seconds to build on 2 cores.
"""

from __future__ import annotations

from pathlib import Path

SPECIALS = ["<unk>", "<s>", "</s>", "<pad>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}\n{{ m['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant\n{% endif %}"
)


def _tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + ["\u0120"]  # Ġ: byte-level space
    vocab = {token: i for i, token in enumerate(SPECIALS + letters)}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_llama(directory: Path, *, seed: int = 0) -> Path:
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    directory = Path(directory)
    tokenizer = _tokenizer()
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
    )
    model.save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))
    return directory


_built: dict[str, Path] = {}


def cached_tiny_llama(factory) -> Path:
    """The tiny LM, built once per test session under pytest's `tmp_path_factory`."""
    path = _built.get("llama")
    if path is None or not (path / "config.json").is_file():
        path = _built["llama"] = build_tiny_llama(factory.mktemp("tiny-llama") / "model")
    return path
