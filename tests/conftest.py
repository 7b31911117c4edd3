"""Fixtures shared by several test modules."""

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_script():
    """``repo_script("benchmarks/bench_runs.py")``: a script of the repository (not part of the package),
    imported from its path."""

    def load(relative: str):
        path = REPO / relative
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    """A tiny local BERT encoder with a word-level tokenizer (for `gotd --embedder`)."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("encoder")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + [f"w{i}" for i in range(40)]
    core = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                  sep_token="[SEP]")
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=64)).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture
def split_executor():
    """``split_executor(parts)``: the local executor, but a job split into parts has ``parts`` of them (run
    here one after the other): the parts' path of the OT solve and kNN without Ray."""
    from tunesift.executor import LocalExecutor

    class Split(LocalExecutor):
        def __init__(self, parts):
            super().__init__()
            self.parts = parts

        def parallelism(self):
            return self.parts

    return Split
