"""Labelled target tasks for the warm-up harness: by name (the text sets in ``../shared/data/text``), by
file (train/dev/test JSONL with ``text`` and ``label``), or synthetic (for tests and the ``tiny`` scale).

A task is what GOT-D's paper fine-tunes a classifier on after pre-fine-tuning (Kang et al., ICLR 2024,
§5.2-5.3): a train split from which at most a label budget of examples is drawn, an optional dev split
for choosing the epoch, and a test split scored with the task's metric (micro-F1 for ChemProt as in
SciBERT/DAPT, accuracy for the GLUE-style sentiment and entailment sets, Matthews correlation for CoLA,
binary F1 for MRPC, macro-F1 otherwise).

Where a set ships without a labelled test split (GLUE's test labels are hidden; SentEval MR/CR and MAG
come as two splits; AG News as one), the dev split serves as the test split, or fixed seeded splits are
cut (AG News: disjoint train / dev / test parts).
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from tunesift.io.tables import TextSet, read_records, text_lines


@dataclass
class LabelledSplit:
    """One split of a classification task.

    Attributes:
        texts: (n,) the input texts.
        labels: (n,) int64 label ids in ``[0, num_labels)``.
        text_pairs: (n,) second texts of sentence-pair tasks (RTE, MRPC), or None.
    """

    texts: list[str]
    labels: np.ndarray
    text_pairs: list[str] | None = None

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if self.labels.shape != (len(self.texts),):
            raise ValueError(f"labels has shape {self.labels.shape}, expected ({len(self.texts)},)")
        if self.text_pairs is not None and len(self.text_pairs) != len(self.texts):
            raise ValueError(f"text_pairs has {len(self.text_pairs)} items, expected {len(self.texts)}")

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices: Sequence[int]) -> "LabelledSplit":
        idx = np.asarray(indices, dtype=np.int64)
        return LabelledSplit(
            texts=[self.texts[i] for i in idx],
            labels=self.labels[idx],
            text_pairs=None if self.text_pairs is None else [self.text_pairs[i] for i in idx],
        )

    def joined_texts(self) -> list[str]:
        """Each example as one string (pairs joined by a space): what the LM loss and selection see."""
        if self.text_pairs is None:
            return list(self.texts)
        return [f"{a} {b}" for a, b in zip(self.texts, self.text_pairs)]


@dataclass
class ClassificationTask:
    """A labelled target task.

    Attributes:
        name: the task's name (or its folder for a task read from files).
        label_names: label id -> the label as written in the data.
        metric: a name in ``tunesift.warmup.classify.METRICS``.
        dev: None when the task has no separate dev split.
    """

    name: str
    train: LabelledSplit
    dev: LabelledSplit | None
    test: LabelledSplit
    label_names: list[str]
    metric: str
    source: str = ""
    info: dict = field(default_factory=dict)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name, "source": self.source, "metric": self.metric, "num_labels": self.num_labels,
            "train": len(self.train), "dev": 0 if self.dev is None else len(self.dev), "test": len(self.test),
            **self.info,
        }


# ----------------------------------------------------------------------------------------------------
# Where the shared data lives


def default_data_root() -> Path:
    """The folder of the named text sets: ``$TUNESIFT_TEXT_DATA``, else ``../shared/data/text`` next to
    the checkout (or next to the working directory)."""
    tried = []
    env = os.environ.get("TUNESIFT_TEXT_DATA")
    candidates = [Path(env)] if env else []
    candidates += [
        Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "text",
        Path.cwd() / ".." / "shared" / "data" / "text",
    ]
    for c in candidates:
        tried.append(str(c))
        if c.is_dir():
            return c.resolve()
    raise FileNotFoundError(
        "no folder of named text sets found (tried " + ", ".join(tried) + "); set TUNESIFT_TEXT_DATA or "
        "pass a task as a folder of train/dev/test JSONL files"
    )


# ----------------------------------------------------------------------------------------------------
# Readers of the original layouts


def _label_ids(label_splits: Sequence[Sequence[Any]]) -> tuple[list[str], list[np.ndarray]]:
    """Map labels (strings or ints) to ids 0..K-1, in sorted order of their string form."""
    names = sorted({str(v) for split in label_splits for v in split}, key=_natural_key)
    index = {n: i for i, n in enumerate(names)}
    return names, [np.asarray([index[str(v)] for v in split], dtype=np.int64) for split in label_splits]


def _natural_key(s: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", s))


def _read_tsv(path: Path, header: bool) -> list[list[str]]:
    """Plain tab splitting (GLUE/SentEval TSVs contain unbalanced quotes, so no CSV quoting)."""
    rows = []
    for lineno, line in enumerate(text_lines(path), 1):
        if lineno == 1 and header:
            continue
        line = line.rstrip("\n").rstrip("\r")
        if line.strip():
            rows.append(line.split("\t"))
    return rows


def _tsv_columns(path: Path, header: bool, text_col: int, label_col: int, pair_col: int | None = None,
                 n_cols: int | None = None) -> tuple[list[str], list[str], list[str] | None]:
    texts, labels, pairs = [], [], [] if pair_col is not None else None
    for i, row in enumerate(_read_tsv(path, header), 1 + int(header)):
        if n_cols is not None and len(row) != n_cols:
            raise ValueError(f"{path}:{i}: {len(row)} fields, expected {n_cols}")
        if not row[text_col].strip():  # SentEval CR has one row with an empty sentence
            continue
        texts.append(row[text_col].strip())
        labels.append(row[label_col].strip())
        if pairs is not None:
            pairs.append(row[pair_col].strip())
    return texts, labels, pairs


def _jsonl_columns(path: Path, text_field: str = "text", label_field: str = "label",
                   pair_field: str | None = None) -> tuple[list[str], list[Any], list[str] | None]:
    rows, lines, _ = read_records(path)
    texts, labels, pairs = [], [], [] if pair_field else None
    for row, line in zip(rows, lines):
        for f in (text_field, label_field) + ((pair_field,) if pair_field else ()):
            if f not in row or row[f] is None:
                raise ValueError(f"{path}:{line}: no field {f!r} (fields: {', '.join(map(str, row))})")
        if not isinstance(row[text_field], str):
            kind = type(row[text_field]).__name__
            raise ValueError(f"{path}:{line}: field {text_field!r} is {kind}, expected a string")
        texts.append(row[text_field])
        labels.append(row[label_field])
        if pairs is not None:
            pairs.append(str(row[pair_field]))
    return texts, labels, pairs


def _make_task(name: str, metric: str, source: str,
               splits: dict[str, tuple[list[str], list[Any], list[str] | None] | None],
               **info: Any) -> ClassificationTask:
    present = {k: v for k, v in splits.items() if v is not None}
    names, ids = _label_ids([v[1] for v in present.values()])
    built = {k: LabelledSplit(texts=v[0], labels=i, text_pairs=v[2]) for (k, v), i in zip(present.items(), ids)}
    return ClassificationTask(name=name, train=built["train"], dev=built.get("dev"), test=built["test"],
                              label_names=names, metric=metric, source=source, info=info)


def _cut(columns: tuple[list[str], list[Any], list[str] | None], share: float, seed: int):
    """Split columns into (rest, cut) with a fixed permutation, ``share`` of the rows in ``cut``."""
    texts, labels, pairs = columns
    perm = np.random.default_rng(seed).permutation(len(texts))
    n_cut = int(round(share * len(texts)))
    parts = []
    for idx in (np.sort(perm[n_cut:]), np.sort(perm[:n_cut])):
        part_pairs = None if pairs is None else [pairs[i] for i in idx]
        parts.append(([texts[i] for i in idx], [labels[i] for i in idx], part_pairs))
    return parts[0], parts[1]


# Each loader: (data root) -> ClassificationTask
TaskLoader = Callable[[Path], ClassificationTask]
TASKS: dict[str, TaskLoader] = {}

# The metric each known task is scored with (its loader uses the same); a task read from files whose
# folder is named after one of them (up to case, "-" and "_": "ChemProt", "SST-2", "sci_cite") gets it.
TASK_METRICS: dict[str, str] = {
    "chemprot": "micro_f1", "sci-cite": "macro_f1", "mag": "macro_f1", "sst-2": "accuracy", "cola": "mcc",
    "mrpc": "f1", "rte": "accuracy", "mr": "accuracy", "cr": "accuracy", "ag_news": "accuracy",
}


def _bare_name(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", name.lower())


def known_task_metric(name: str) -> str | None:
    """The metric of the known task ``name`` names (up to case and punctuation), or None."""
    bare = _bare_name(name)
    for task, metric in TASK_METRICS.items():
        if _bare_name(task) == bare:
            return metric
    return None


def _register(name: str) -> Callable[[TaskLoader], TaskLoader]:
    def deco(fn: TaskLoader) -> TaskLoader:
        TASKS[name] = fn
        return fn

    return deco


@_register("chemprot")
def _chemprot(root: Path) -> ClassificationTask:
    d = root / "chemprot"
    splits = {s: _jsonl_columns(d / f"{s}.jsonl") for s in ("train", "dev", "test")}
    return _make_task("chemprot", "micro_f1", str(d), splits)


@_register("sci-cite")
def _scicite(root: Path) -> ClassificationTask:
    d = root / "sci-cite"
    splits = {s: _jsonl_columns(d / f"{s}.jsonl") for s in ("train", "dev", "test")}
    return _make_task("sci-cite", "macro_f1", str(d), splits)


@_register("mag")
def _mag(root: Path) -> ClassificationTask:
    d = root / "mag"
    # MAG ships dev and test only: dev is the training split here. One row of dev.jsonl is a leftover
    # header ("tokens" / "category"); it is dropped.
    texts, labels, _ = _jsonl_columns(d / "dev.jsonl")
    keep = [i for i, (t, y) in enumerate(zip(texts, labels)) if not (t == "tokens" and y == "category")]
    train = ([texts[i] for i in keep], [labels[i] for i in keep], None)
    splits = {"train": train, "dev": None, "test": _jsonl_columns(d / "test.jsonl")}
    return _make_task("mag", "macro_f1", str(d), splits, note="train = the released dev split")


@_register("sst-2")
def _sst2(root: Path) -> ClassificationTask:
    d = root / "glue" / "SST-2"
    return _make_task("sst-2", "accuracy", str(d), {
        "train": _tsv_columns(d / "train.tsv", True, 0, 1, n_cols=2), "dev": None,
        "test": _tsv_columns(d / "dev.tsv", True, 0, 1, n_cols=2)}, note="test = GLUE dev (test labels are hidden)")


@_register("cola")
def _cola(root: Path) -> ClassificationTask:
    d = root / "glue" / "CoLA"
    return _make_task("cola", "mcc", str(d), {
        "train": _tsv_columns(d / "train.tsv", False, 3, 1, n_cols=4), "dev": None,
        "test": _tsv_columns(d / "dev.tsv", False, 3, 1, n_cols=4)}, note="test = GLUE dev (test labels are hidden)")


@_register("mrpc")
def _mrpc(root: Path) -> ClassificationTask:
    d = root / "glue" / "MRPC"
    return _make_task("mrpc", "f1", str(d), {
        "train": _tsv_columns(d / "train.tsv", True, 3, 0, pair_col=4, n_cols=5), "dev": None,
        "test": _tsv_columns(d / "dev.tsv", True, 3, 0, pair_col=4, n_cols=5)},
        note="test = GLUE dev (test labels are hidden)")


@_register("rte")
def _rte(root: Path) -> ClassificationTask:
    d = root / "glue" / "RTE"
    return _make_task("rte", "accuracy", str(d), {
        "train": _tsv_columns(d / "train.tsv", True, 1, 3, pair_col=2, n_cols=4), "dev": None,
        "test": _tsv_columns(d / "dev.tsv", True, 1, 3, pair_col=2, n_cols=4)},
        note="test = GLUE dev (test labels are hidden)")


def _senteval(name: str, folder: str) -> TaskLoader:
    def load(root: Path) -> ClassificationTask:
        d = root / "senteval" / folder
        return _make_task(name, "accuracy", str(d), {
            "train": _tsv_columns(d / "train.tsv", False, 1, 0, n_cols=2), "dev": None,
            "test": _tsv_columns(d / "dev.tsv", False, 1, 0, n_cols=2)}, note="test = the released dev split")

    return load


TASKS["mr"] = _senteval("mr", "MR")
TASKS["cr"] = _senteval("cr", "CR")


def _read_ag_news(path: Path) -> tuple[list[str], list[str], None]:
    texts, labels = [], []
    for i, row in enumerate(csv.reader(text_lines(path)), 1):
        if len(row) != 3:
            raise ValueError(f"{path}:{i}: {len(row)} fields, expected 3 (class, title, description)")
        texts.append(f"{row[1]}. {row[2]}".replace("\\", " "))
        labels.append(row[0])
    return texts, labels, None


@_register("ag_news")
def _ag_news(root: Path) -> ClassificationTask:
    d = root / "ag_news"
    # Only AG News' test file ships: fixed seeded cuts into disjoint parts: 20% test (seed 0), then 1/8 of
    # the rest as dev (seed 1): 5,320 train (the target's texts are drawn from these) / 760 dev / 1,520 test.
    rest, test = _cut(_read_ag_news(d / "test.csv"), 0.2, seed=0)
    train, dev = _cut(rest, 1 / 8, seed=1)
    task = _make_task("ag_news", "accuracy", str(d), {"train": train, "dev": dev, "test": test},
                      note="fixed cuts of the released test.csv: 20% test (seed 0), 1/8 of the rest dev (seed 1)")
    classes = "".join(text_lines(d / "classes.txt")).split()
    if len(classes) == task.num_labels:
        task.label_names = [classes[int(n) - 1] for n in task.label_names]
    return task


# ----------------------------------------------------------------------------------------------------
# Public loading


def load_task_from_files(path: str | os.PathLike, metric: str | None = None, text_field: str = "text",
                         label_field: str = "label", pair_field: str | None = None) -> ClassificationTask:
    """A task from files: a folder with ``train`` and ``test`` (and optionally ``dev``) files, or the path
    of the train file whose siblings are named with ``dev``/``test`` in place of ``train``.

    Files may be JSONL, CSV, TSV or Parquet (anything :func:`tunesift.io.read_records` reads).
    ``metric`` None: the metric of the known task the folder is named after (:data:`TASK_METRICS`,
    e.g. micro-F1 for a folder ``chemprot``), else macro-F1.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such task file or folder")

    def find(split: str) -> Path | None:
        if p.is_dir():
            for f in sorted(p.iterdir()):
                if f.is_file() and f.name.split(".")[0] == split:
                    return f
            return None
        if "train" not in p.name:
            raise ValueError(f"{p}: a task file must have 'train' in its name so its dev/test siblings can be found")
        sibling = p.with_name(p.name.replace("train", split))
        return sibling if sibling.exists() else None

    files = {s: find(s) for s in ("train", "dev", "test")}
    for s in ("train", "test"):
        if files[s] is None:
            raise FileNotFoundError(f"{p}: no {s} file (expected {s}.jsonl or similar)")
    splits = {s: None if f is None else _jsonl_columns(f, text_field, label_field, pair_field)
              for s, f in files.items()}
    for s, cols in splits.items():
        if cols is not None and not cols[0]:
            raise ValueError(f"{files[s]}: the {s} split is empty")
    name = p.name if p.is_dir() else p.parent.name
    metric = metric or known_task_metric(name) or "macro_f1"
    return _make_task(name, metric, str(p), splits)


def load_task(spec: str | os.PathLike, data_root: str | os.PathLike | None = None, metric: str | None = None,
              seed: int = 0) -> ClassificationTask:
    """A task by NAME (see :data:`TASKS`, plus ``synthetic``) or from files (see :func:`load_task_from_files`).

    Args:
        metric: overrides the task's metric (a name in ``tunesift.warmup.classify.METRICS``).
        seed: seed of the synthetic task (ignored otherwise).
    """
    from tunesift.warmup.metrics import METRICS

    if metric is not None and metric not in METRICS:
        raise ValueError(f"metric {metric!r} is not one of {', '.join(METRICS)}")
    name = str(spec)
    if name == "synthetic":
        task = synthetic_task(seed=seed)
    elif name.lower() in TASKS:
        root = Path(data_root) if data_root is not None else default_data_root()
        task = TASKS[name.lower()](root)
    elif Path(name).exists():
        task = load_task_from_files(name, metric)
    else:
        raise ValueError(f"task {name!r} is neither a known name ({', '.join(sorted(TASKS) + ['synthetic'])}) "
                         "nor an existing file or folder")
    if metric is not None:
        task.metric = metric
    return task


def sample_labels(split: LabelledSplit, budget: int | None, rng: np.random.Generator) -> LabelledSplit:
    """At most ``budget`` examples of ``split``, drawn uniformly without replacement (all when None or
    when the split is smaller). The drawn examples keep their order in the split."""
    if budget is None or budget >= len(split):
        return split
    if budget < 1:
        raise ValueError(f"label budget must be at least 1, got {budget}")
    return split.subset(np.sort(rng.choice(len(split), size=budget, replace=False)))


# ----------------------------------------------------------------------------------------------------
# Synthetic data (tests, the `tiny` scale, the cat/dog example)


def _domain_words(domain: int, n: int) -> list[str]:
    return [f"d{domain}w{i}" for i in range(n)]


def synthetic_texts(domain: int, n: int, rng: np.random.Generator, length: tuple[int, int] = (6, 12),
                    vocabulary: int = 40, markers: Sequence[str] = ()) -> list[str]:
    """``n`` texts of random words from one domain's vocabulary (``d{domain}w{i}``), each with the
    ``markers`` words inserted at random places."""
    words = _domain_words(domain, vocabulary)
    out = []
    for _ in range(n):
        k = int(rng.integers(length[0], length[1] + 1))
        toks = [words[j] for j in rng.integers(0, vocabulary, size=k)]
        for m in markers:
            toks.insert(int(rng.integers(0, len(toks) + 1)), m)
        out.append(" ".join(toks))
    return out


def synthetic_task(n_train: int = 400, n_dev: int = 100, n_test: int = 200, num_labels: int = 2,
                   seed: int = 0) -> ClassificationTask:
    """A tiny task in domain 0: each text holds two marker words of its label (``label{y}``, ``cue{y}``)
    among 6-12 domain words; the label is which markers it holds.

    Learnable by a tiny model in a few epochs, so a broken training loop shows as chance-level scores.
    """
    if num_labels < 2:
        raise ValueError(f"num_labels must be at least 2, got {num_labels}")
    rng = np.random.default_rng(seed)
    splits = {}
    for name, n in (("train", n_train), ("dev", n_dev), ("test", n_test)):
        labels = rng.integers(0, num_labels, size=n)
        texts = [synthetic_texts(0, 1, rng, markers=(f"label{y}", f"cue{y}"))[0] for y in labels]
        splits[name] = (texts, [f"label{y}" for y in labels], None)
    return _make_task("synthetic", "macro_f1", f"synthetic(seed={seed})", splits)


def synthetic_pool(n: int = 2000, target_share: float = 0.05, n_domains: int = 4, seed: int = 0) -> TextSet:
    """An unlabelled pool: ``target_share`` of the rows from the synthetic task's domain 0, the rest spread
    over domains 1..n_domains-1. Rows are ``{"text", "domain"}``."""
    if not 0 <= target_share <= 1:
        raise ValueError(f"target_share must be in [0, 1], got {target_share}")
    if n_domains < 2:
        raise ValueError(f"n_domains must be at least 2, got {n_domains}")
    rng = np.random.default_rng(seed + 1)
    n_target = int(round(target_share * n))
    domains = np.concatenate([np.zeros(n_target, dtype=np.int64), rng.integers(1, n_domains, size=n - n_target)])
    domains = domains[rng.permutation(n)]
    texts = [synthetic_texts(int(d), 1, rng)[0] for d in domains]
    records = [{"text": t, "domain": f"d{d}"} for t, d in zip(texts, domains)]
    return TextSet.from_texts(texts, name=f"synthetic pool(seed={seed})", records=records)
