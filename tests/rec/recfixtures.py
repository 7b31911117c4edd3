"""Tiny recommendation data for the rec tests (imported by the test modules; not a conftest)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared"
GAMES = SHARED / "data" / "rec" / "games"


def tiny_sequences(n_users: int = 24, n_items: int = 20, seed: int = 0, max_train: int = 12):
    """Random (train, valid, test) item lists; every user has at least one training item."""
    rng = np.random.default_rng(seed)
    train = [[int(x) for x in rng.integers(1, n_items + 1, size=rng.integers(1, max_train + 1))] for _ in range(n_users)]
    valid = [[int(x) for x in rng.integers(1, n_items + 1, size=rng.integers(0, 3))] for _ in range(n_users)]
    test = [[int(x) for x in rng.integers(1, n_items + 1, size=rng.integers(0, 3))] for _ in range(n_users)]
    return train, valid, test


def tiny_titles(n_items: int = 20) -> list[str]:
    return [""] + [f"Game {i} Edition" for i in range(1, n_items + 1)]


def tiny_recdata(n_users: int = 24, n_items: int = 20, seed: int = 0, name: str = "games", max_train: int = 12):
    from tunesift.rec.data import RecData

    train, valid, test = tiny_sequences(n_users, n_items, seed, max_train)
    return RecData(users=list(range(1, n_users + 1)), train=train, valid=valid, test=test,
                   titles=tiny_titles(n_items), item_ids=[None, *range(1, n_items + 1)], name=name,
                   source="tiny", fingerprint=f"tiny-{seed}-{n_users}-{n_items}")


def write_dealrec_folder(folder: Path, n_users: int = 24, n_items: int = 20, seed: int = 0,
                         titles: bool = True) -> tuple[list, list, list]:
    """The DEALRec layout: sequential_{train,valid,test}.txt and items.jsonl."""
    folder.mkdir(parents=True, exist_ok=True)
    train, valid, test = tiny_sequences(n_users, n_items, seed)
    for name, seqs in (("train", train), ("valid", valid), ("test", test)):
        lines = [" ".join(str(x) for x in [u + 1, *seq]) for u, seq in enumerate(seqs)]
        (folder / f"sequential_{name}.txt").write_text("\n".join(lines) + "\n")
    if titles:
        with open(folder / "items.jsonl", "w") as f:
            for i, t in enumerate(tiny_titles(n_items)[1:], 1):
                f.write(json.dumps({"item_id": i, "title": t, "categories": ["Games"]}) + "\n")
    return train, valid, test


def build_tiny_lm(folder: Path) -> Path:
    """A 2-layer Llama (hidden 32) with a byte-level BPE tokenizer, saved as a local HF folder."""
    from tunesift.finetune.tiny import build_tiny_causal_lm

    texts = tiny_titles(40)[1:] * 3 + [
        "Below is an instruction that describes a task, paired with an input that provides further context.",
        "The user has purchased the following game products before, with titles as:",
        "### Instruction: ### Input: ### Response:",
    ] * 5
    return build_tiny_causal_lm(texts, folder, seed=0, vocab_size=300, hidden_size=32, num_layers=2, num_heads=2)


# a tiny causal LM for the LLM and effort tests
WORDS = "the a game zelda mario sonic halo doom portal tetris kirby metroid fifa racing puzzle quest".split()


def build_tiny_lm(folder, seed: int = 0):
    """A 2-layer Llama (hidden 32) and a word-level tokenizer saved as a Hugging Face folder."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(["<pad>", "<unk>", "<s>", "</s>", *WORDS])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", bos_token="<s>",
                                        eos_token="</s>", pad_token="<pad>")
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         bos_token_id=2, eos_token_id=3, pad_token_id=0, tie_word_embeddings=False)
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
