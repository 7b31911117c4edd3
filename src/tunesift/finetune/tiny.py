"""A tiny causal LM and tokenizer built offline from a config, for tests and the ``tiny`` bench scale.

The tokenizer is a byte-level BPE trained on the given texts (so decoding round-trips exactly); the
model is a 2-layer Llama, randomly initialised and optionally pre-trained for a few steps on the same texts
(so that it generates text of the domain and fine-tuning has something to adapt). Both are saved as an ordinary Hugging Face folder, so
everything downstream loads them through the same path as a real model.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable


def build_tiny_causal_lm(texts: Iterable[str], folder: str | os.PathLike, seed: int = 0, vocab_size: int = 512,
                         hidden_size: int = 32, num_layers: int = 2, num_heads: int = 4,
                         max_positions: int = 1024, pretrain_steps: int = 0, pretrain_batch_size: int = 16,
                         pretrain_lr: float = 1e-2, pretrain_max_length: int = 128) -> Path:
    """Train a byte-level BPE tokenizer on ``texts``, build a tiny ``LlamaForCausalLM``, save both.

    Reuses ``folder`` if it already holds a model (a resumed bench must see the same weights).

    Args:
        texts: training text of the tokenizer (e.g. prompts and item titles).
        seed: seed of the model's random initialisation.
        vocab_size: BPE vocabulary size (the 256 byte symbols and 3 special tokens included).
        pretrain_steps: AdamW steps of next-token training on random batches of ``texts`` (each text
            followed by EOS, cut at ``pretrain_max_length`` tokens); 0 leaves the model random.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = Path(folder)
    if all((folder / name).exists() for name in ("tokenizer.json", "config.json", "model.safetensors")):
        return folder
    if vocab_size < 260:
        raise ValueError(f"vocab_size must be at least 260 (256 bytes + special tokens), got {vocab_size}")
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    texts = list(texts)
    backend.train_from_iterator(texts, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", bos_token="<s>",
                                        eos_token="</s>")
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                         num_hidden_layers=num_layers, num_attention_heads=num_heads,
                         num_key_value_heads=num_heads, max_position_embeddings=max_positions,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
        if pretrain_steps:
            _pretrain(model, tokenizer, texts, pretrain_steps, pretrain_batch_size, pretrain_lr,
                      pretrain_max_length, seed)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(folder)
    model.save_pretrained(folder)
    return folder


def _pretrain(model, tokenizer, texts: list[str], steps: int, batch_size: int, lr: float, max_length: int,
              seed: int) -> None:
    import numpy as np
    import torch

    encoded = [ids[: max_length - 1] + [tokenizer.eos_token_id]
               for ids in tokenizer(texts, add_special_tokens=False)["input_ids"] if ids]
    if not encoded:
        raise ValueError("texts are empty: nothing to pre-train the tiny model on")
    rng = np.random.default_rng(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        batch = [encoded[i] for i in rng.choice(len(encoded), size=min(batch_size, len(encoded)), replace=False)]
        width = max(len(ids) for ids in batch)
        ids = torch.full((len(batch), width), tokenizer.pad_token_id)
        labels = torch.full((len(batch), width), -100)
        for row, seq in enumerate(batch):
            ids[row, : len(seq)] = torch.tensor(seq)
            labels[row, : len(seq)] = torch.tensor(seq)
        loss = model(input_ids=ids, attention_mask=(labels != -100).long(), labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    model.eval()
