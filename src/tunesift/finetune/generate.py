"""Batched beam-search generation of each prompt's response (BIGRec inference).

BIGRec / DEALRec generate with 4 beams, one returned sequence and up to 128 new tokens, prompts
left-padded in batches; the response is the decoded text after the prompt. Here prompts are sorted by
length before batching (less padding; the order of the results is restored), and a prompt longer than
``max_prompt_tokens`` loses its OLDEST tokens (left truncation keeps the "### Response:" cue at the end;
the authors' collator cuts on the right, which would drop it — the prompt builder normally keeps
prompts under the limit, so this only matters for malformed inputs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass
class GenerationSettings:
    """Beam search settings (defaults: BIGRec's ``inference.py``).

    Attributes:
        num_beams: beams per prompt (1 = greedy).
        max_new_tokens: generation stops after this many tokens or at the end-of-sequence token.
        batch_size: prompts per forward pass (each expands to ``num_beams`` sequences).
        max_prompt_tokens: longer prompts are cut from the left.
    """

    num_beams: int = 4
    max_new_tokens: int = 128
    batch_size: int = 8
    max_prompt_tokens: int = 512

    def __post_init__(self):
        for name in ("num_beams", "max_new_tokens", "batch_size", "max_prompt_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}")


def clean_response(text: str) -> str:
    """The generated title as BIGRec's evaluation reads it: surrounding whitespace and quotes removed."""
    return text.strip().strip('"').strip()


def prepare_tokenizer_for_generation(tokenizer) -> None:
    """Left padding, and a pad token (the end-of-sequence token if the tokenizer has none)."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has neither a pad token nor an end-of-sequence token")
        tokenizer.pad_token = tokenizer.eos_token


def generate_responses(model, tokenizer, prompts: Sequence[str], settings: GenerationSettings | None = None,
                       progress: bool = True, desc: str = "generating") -> list[str]:
    """Generate one response per prompt with beam search.

    Args:
        model: a causal LM (a PEFT model generates with its adapters on); its device is used.
        tokenizer: its tokenizer (switched to left padding).
        prompts: (n,) full prompts ending where the response starts.

    Returns:
        (n,) decoded responses (new tokens only, special tokens skipped, cleaned by ``clean_response``),
        in the order of ``prompts``.
    """
    import torch
    from tqdm.auto import tqdm
    from transformers import GenerationConfig

    settings = settings or GenerationSettings()
    if isinstance(prompts, str):
        raise TypeError("prompts must be a sequence of strings, not one string")
    prepare_tokenizer_for_generation(tokenizer)
    device = next(model.parameters()).device
    encoded = tokenizer(list(prompts), add_special_tokens=True)["input_ids"]
    encoded = [ids[-settings.max_prompt_tokens:] for ids in encoded]
    for i, ids in enumerate(encoded):
        if not ids:
            raise ValueError(f"prompt {i} is empty after tokenisation")
    order = np.argsort([-len(ids) for ids in encoded], kind="stable")
    config = GenerationConfig(num_beams=settings.num_beams, num_return_sequences=1, do_sample=False,
                              max_new_tokens=settings.max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                              eos_token_id=tokenizer.eos_token_id,
                              bos_token_id=getattr(tokenizer, "bos_token_id", None))
    out: list[str] = [""] * len(encoded)
    was_training = model.training
    model.eval()
    bar = tqdm(total=len(encoded), desc=desc, unit="prompt", disable=not progress)
    try:
        with torch.inference_mode():
            for start in range(0, len(order), settings.batch_size):
                idx = order[start : start + settings.batch_size]
                batch = tokenizer.pad({"input_ids": [encoded[i] for i in idx]}, padding=True, return_tensors="pt")
                input_ids = batch["input_ids"].to(device)  # (B, T), left-padded
                attention_mask = batch["attention_mask"].to(device)
                sequences = model.generate(input_ids=input_ids, attention_mask=attention_mask,
                                           generation_config=config)
                new_tokens = sequences[:, input_ids.shape[1]:]  # (B, <= max_new_tokens)
                texts = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
                for i, text in zip(idx, texts):
                    out[i] = clean_response(text)
                bar.update(len(idx))
    finally:
        bar.close()
        model.train(was_training)
    return out
