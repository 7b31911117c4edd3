"""Target tasks: by file, synthetic, by name on ../shared/data/text (slow), and the label budget."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tunesift.warmup.tasks import (TASK_METRICS, TASKS, LabelledSplit, known_task_metric, load_task, load_task_from_files, sample_labels,
                                   synthetic_pool, synthetic_task)

SHARED_TEXT = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "text"
needs_shared = pytest.mark.skipif(not SHARED_TEXT.is_dir(), reason="../shared/data/text is absent")


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


@pytest.fixture
def task_dir(tmp_path):
    _write_jsonl(tmp_path / "train.jsonl", [{"text": "a b", "label": "pos"}, {"text": "c", "label": "neg"},
                                            {"text": "d", "label": "pos"}])
    _write_jsonl(tmp_path / "dev.jsonl", [{"text": "e", "label": "neg"}])
    _write_jsonl(tmp_path / "test.jsonl", [{"text": "f", "label": "pos"}, {"text": "g", "label": "other"}])
    return tmp_path


def test_task_from_folder_maps_labels_over_all_splits(task_dir):
    task = load_task(task_dir)
    assert task.label_names == ["neg", "other", "pos"]
    assert task.train.texts == ["a b", "c", "d"]
    assert task.train.labels.tolist() == [2, 0, 2]
    assert task.dev.labels.tolist() == [0]
    assert task.test.labels.tolist() == [2, 1]
    assert task.metric == "macro_f1" and task.num_labels == 3


def test_task_from_train_file_finds_siblings_and_metric_override(task_dir):
    task = load_task(task_dir / "train.jsonl", metric="accuracy")
    assert len(task.train) == 3 and len(task.dev) == 1 and len(task.test) == 2
    assert task.metric == "accuracy"


def test_a_folder_named_after_a_known_task_gets_its_metric(tmp_path, task_dir):
    assert sorted(TASK_METRICS) == sorted(TASKS)
    assert known_task_metric("ChemProt") == "micro_f1" and known_task_metric("SST-2") == "accuracy"
    assert known_task_metric("sci_cite") == "macro_f1" and known_task_metric("CoLA") == "mcc"
    assert known_task_metric("my-task") is None
    folder = tmp_path / "ChemProt"
    folder.mkdir()
    for name in ("train", "dev", "test"):
        (folder / f"{name}.jsonl").write_text((task_dir / f"{name}.jsonl").read_text())
    assert load_task(folder).metric == "micro_f1"
    assert load_task(folder / "train.jsonl").metric == "micro_f1"
    assert load_task(folder, metric="macro_f1").metric == "macro_f1"  # --metric still overrides
    assert load_task(task_dir).metric == "macro_f1"  # an unknown name: macro-F1


def test_task_without_dev_and_integer_labels(tmp_path):
    _write_jsonl(tmp_path / "train.jsonl", [{"text": "x", "label": 10}, {"text": "y", "label": 2}])
    _write_jsonl(tmp_path / "test.jsonl", [{"text": "z", "label": 2}])
    task = load_task_from_files(tmp_path)
    assert task.dev is None
    assert task.label_names == ["2", "10"]  # natural order, not "10" < "2"
    assert task.train.labels.tolist() == [1, 0]


def test_task_file_errors_name_the_problem(tmp_path, task_dir):
    with pytest.raises(ValueError, match="neither a known name"):
        load_task(tmp_path / "nope")
    with pytest.raises(ValueError, match="metric 'f2'"):
        load_task(task_dir, metric="f2")
    other = tmp_path / "other"
    other.mkdir()
    _write_jsonl(other / "train.jsonl", [{"text": "x", "label": 1}, {"txt": "y", "label": 0}])
    with pytest.raises(FileNotFoundError, match="no test file"):
        load_task_from_files(other)
    _write_jsonl(other / "test.jsonl", [{"text": "z", "label": 1}])
    with pytest.raises(ValueError, match=r"train.jsonl:2: no field 'text'"):
        load_task_from_files(other)
    with pytest.raises(ValueError, match="'train' in its name"):
        load_task_from_files(other / "test.jsonl")


def test_labelled_split_checks_shapes():
    with pytest.raises(ValueError, match="labels has shape"):
        LabelledSplit(texts=["a", "b"], labels=[0])
    with pytest.raises(ValueError, match="text_pairs"):
        LabelledSplit(texts=["a"], labels=[0], text_pairs=["x", "y"])
    s = LabelledSplit(texts=["a", "b"], labels=[0, 1], text_pairs=["x", "y"])
    assert s.joined_texts() == ["a x", "b y"]
    assert s.subset([1]).text_pairs == ["y"]


def test_sample_labels_is_a_seeded_uniform_subset():
    split = LabelledSplit(texts=[str(i) for i in range(100)], labels=np.arange(100) % 3)
    a = sample_labels(split, 10, np.random.default_rng(0))
    b = sample_labels(split, 10, np.random.default_rng(0))
    c = sample_labels(split, 10, np.random.default_rng(1))
    assert a.texts == b.texts and a.texts != c.texts
    idx = [int(t) for t in a.texts]
    assert len(set(idx)) == 10 and idx == sorted(idx)
    assert a.labels.tolist() == [i % 3 for i in idx]
    assert sample_labels(split, None, np.random.default_rng(0)) is split
    assert sample_labels(split, 1000, np.random.default_rng(0)) is split
    with pytest.raises(ValueError, match="label budget"):
        sample_labels(split, 0, np.random.default_rng(0))
    # uniform: every example is drawn about equally often over many draws
    counts = np.zeros(100)
    rng = np.random.default_rng(3)
    for _ in range(400):
        counts[[int(t) for t in sample_labels(split, 10, rng).texts]] += 1
    assert counts.min() > 15 and counts.max() < 70  # expected 40 each


def test_synthetic_task_and_pool():
    task = synthetic_task(n_train=50, n_dev=10, n_test=20, num_labels=3, seed=1)
    assert (len(task.train), len(task.dev), len(task.test)) == (50, 10, 20)
    assert task.label_names == ["label0", "label1", "label2"]
    for text, y in zip(task.train.texts, task.train.labels):
        assert f"label{y}" in text.split() and f"cue{y}" in text.split()
    assert synthetic_task(seed=1).train.texts == synthetic_task(seed=1).train.texts
    pool = synthetic_pool(n=1000, target_share=0.1, n_domains=3)
    domains = [r["domain"] for r in pool.records]
    assert domains.count("d0") == 100 and set(domains) == {"d0", "d1", "d2"}
    assert all(w.startswith(r["domain"]) for r in pool.records for w in r["text"].split())
    with pytest.raises(ValueError, match="target_share"):
        synthetic_pool(target_share=1.5)


@pytest.mark.slow
@needs_shared
def test_named_tasks_load_from_shared_data():
    chemprot = load_task("chemprot", data_root=SHARED_TEXT)
    assert (len(chemprot.train), len(chemprot.dev), len(chemprot.test)) == (4169, 2427, 3469)
    assert chemprot.num_labels == 13 and chemprot.metric == "micro_f1"
    scicite = load_task("sci-cite", data_root=SHARED_TEXT)
    assert (len(scicite.train), len(scicite.dev), len(scicite.test)) == (7320, 916, 1861)
    assert scicite.label_names == ["background", "method", "result"] and scicite.metric == "macro_f1"
    for name in TASKS:
        task = load_task(name, data_root=SHARED_TEXT)
        assert len(task.train) > 100 and len(task.test) > 100, name
        assert task.num_labels >= 2, name
        assert all(t.strip() for t in task.train.texts), name
    assert load_task("rte", data_root=SHARED_TEXT).train.text_pairs is not None
    assert load_task("cola", data_root=SHARED_TEXT).metric == "mcc"
    assert load_task("ag_news", data_root=SHARED_TEXT).label_names == ["World", "Sports", "Business", "Sci/Tech"]
    assert "category" not in load_task("mag", data_root=SHARED_TEXT).label_names
