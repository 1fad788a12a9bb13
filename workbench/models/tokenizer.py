"""A character-level tokenizer built in code (no files to download)."""

from __future__ import annotations

import string

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

SPECIAL = ["<pad>", "<s>", "</s>", "<unk>"]
CHARS = string.digits + "+-*=() " + string.ascii_letters + ".,?:/\\{}_^#" + "\n"  # newline last: earlier ids kept


def char_tokenizer() -> PreTrainedTokenizerFast:
    """One token per character of :data:`CHARS`, plus pad, bos, eos and unk."""
    vocab = {tok: i for i, tok in enumerate(SPECIAL + list(dict.fromkeys(CHARS)))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # newlines too, unlike "."
    core.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        padding_side="left",
    )
