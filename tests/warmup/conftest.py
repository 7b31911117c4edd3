"""Tiny models shared by the warm-up tests (built once per session from configs, in seconds)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from tunesift.warmup.tasks import synthetic_pool, synthetic_task  # noqa: E402
from tunesift.warmup.tiny import build_tiny_model  # noqa: E402


@pytest.fixture(scope="session")
def task():
    return synthetic_task(n_train=200, n_dev=60, n_test=100)


@pytest.fixture(scope="session")
def pool():
    return synthetic_pool(n=400, target_share=0.1)


@pytest.fixture(scope="session")
def corpus(task, pool):
    return pool.texts + task.train.texts


@pytest.fixture(scope="session")
def bert_dir(tmp_path_factory, corpus):
    """A bare BertModel (no MLM head), like all-MiniLM-L6-v2."""
    return build_tiny_model(tmp_path_factory.mktemp("bert"), corpus, objective="mlm", max_length=64)


@pytest.fixture(scope="session")
def bert_mlm_dir(tmp_path_factory, corpus):
    return build_tiny_model(tmp_path_factory.mktemp("bert_mlm"), corpus, objective="mlm", max_length=64,
                            with_lm_head=True)


@pytest.fixture(scope="session")
def llama_dir(tmp_path_factory, corpus):
    return build_tiny_model(tmp_path_factory.mktemp("llama"), corpus, objective="causal", max_length=64)
