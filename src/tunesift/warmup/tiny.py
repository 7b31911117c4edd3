"""Tiny models built from a config, with a word-level tokenizer fitted on the texts at hand.

They stand in for the real encoder/decoder in the tests and at the bench's ``tiny`` scale: the same code
paths (a saved local folder, a bare encoder that needs a fresh MLM head, a causal LM), in seconds.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Sequence

SPECIAL_TOKENS = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}


def fit_word_tokenizer(texts: Sequence[str], max_vocabulary: int = 2000, objective: str = "mlm"):
    """A lower-cased whitespace/punctuation word-level ``PreTrainedTokenizerFast`` over the most frequent
    words of ``texts``. "mlm": BERT-style ``[CLS] a [SEP] (b [SEP])``; "causal": ``[CLS]`` as the
    beginning-of-text token, ``[SEP]`` as the end-of-text token, ``[PAD]`` for padding."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    if max_vocabulary < 1:
        raise ValueError(f"max_vocabulary must be positive, got {max_vocabulary}")
    normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    pre = pre_tokenizers.Whitespace()
    counts: Counter = Counter()
    for t in texts:
        counts.update(w for w, _ in pre.pre_tokenize_str(normalizer.normalize_str(t)))
    specials = list(SPECIAL_TOKENS.values())
    vocab = {tok: i for i, tok in enumerate(specials)}
    for word, _ in counts.most_common(max_vocabulary):
        vocab.setdefault(word, len(vocab))
    tok = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre
    cls_id, sep_id = vocab["[CLS]"], vocab["[SEP]"]
    if objective == "mlm":
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
        kw = dict(cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
                  model_input_names=["input_ids", "token_type_ids", "attention_mask"])
    elif objective == "causal":
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A", pair="[CLS] $A $B:1", special_tokens=[("[CLS]", cls_id)])
        kw = dict(bos_token="[CLS]", eos_token="[SEP]")
    else:
        raise ValueError(f"objective must be 'mlm' or 'causal', got {objective!r}")
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", **kw)


def build_tiny_model(folder: str | os.PathLike, texts: Sequence[str], objective: str = "mlm", hidden_size: int = 32,
                     num_layers: int = 2, num_heads: int = 2, max_length: int = 128, max_vocabulary: int = 2000,
                     with_lm_head: bool = False, seed: int = 0) -> Path:
    """Save a randomly initialised tiny model and its tokenizer to ``folder`` and return the folder.

    Args:
        objective: "mlm" (a BERT encoder) or "causal" (a Llama decoder).
        with_lm_head: for "mlm", save ``BertForMaskedLM`` instead of a bare ``BertModel`` (the bare one
            mirrors sentence encoders such as all-MiniLM-L6-v2, which ship without an MLM head).
    """
    import torch
    from transformers import BertConfig, BertForMaskedLM, BertModel, LlamaConfig, LlamaForCausalLM

    tokenizer = fit_word_tokenizer(texts, max_vocabulary, objective)
    vocab_size = len(tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if objective == "mlm":
            config = BertConfig(vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=num_layers,
                                num_attention_heads=num_heads, intermediate_size=4 * hidden_size,
                                max_position_embeddings=max_length + 2, pad_token_id=tokenizer.pad_token_id)
            model = BertForMaskedLM(config) if with_lm_head else BertModel(config)
        else:
            config = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=num_layers,
                                 num_attention_heads=num_heads, num_key_value_heads=num_heads,
                                 intermediate_size=4 * hidden_size, max_position_embeddings=max_length + 2,
                                 pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                                 eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True)
            model = LlamaForCausalLM(config)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    from tunesift.warmup.pretrain import quiet_transformers

    with quiet_transformers():
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    return folder
