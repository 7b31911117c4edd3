"""Read a user's examples from JSONL, CSV/TSV, Parquet or a saved Hugging Face dataset.

Every malformed row fails with the file, the line (or row) and the reason; nothing fails deep inside
numpy or pandas.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

FORMATS = ("jsonl", "csv", "tsv", "parquet", "hf")


@dataclass
class TextSet:
    """Rows of one input file, with the text of each and a unique id.

    Attributes:
        path: where the rows came from.
        records: the rows with all their original fields, in file order.
        texts: ``records[i][text_field]``.
        ids: ``records[i][id_field]``, or the 0-based row number when no id field is given.
        fingerprint: sha256 of the file's bytes (or of the rows for an in-memory set).
    """

    path: str
    records: list[dict]
    texts: list[str]
    ids: list[Any]
    text_field: str = "text"
    id_field: str | None = None
    fingerprint: str = ""
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.texts)

    def column(self, name: str) -> list[Any]:
        """All values of one field; a clear error naming the first row without it."""
        out = []
        for i, r in enumerate(self.records):
            if name not in r or r[name] is None:
                raise ValueError(
                    f"{self.path}: row {i + 1} has no field {name!r} (fields: {', '.join(map(str, r))})"
                )
            out.append(r[name])
        return out

    def subset(self, indices: Sequence[int]) -> "TextSet":
        idx = list(indices)
        return TextSet(
            path=self.path,
            records=[self.records[i] for i in idx],
            texts=[self.texts[i] for i in idx],
            ids=[self.ids[i] for i in idx],
            text_field=self.text_field,
            id_field=self.id_field,
            fingerprint=self.fingerprint,
        )

    @classmethod
    def from_texts(cls, texts: Sequence[str], ids: Sequence[Any] | None = None, name: str = "<memory>",
                   records: Sequence[dict] | None = None) -> "TextSet":
        """Build a set in memory (the Python API's entry point for lists of strings)."""
        texts = list(texts)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"{name}: item {i} is {type(t).__name__}, expected str")
        ids = list(range(len(texts))) if ids is None else list(ids)
        if len(ids) != len(texts):
            raise ValueError(f"{name}: {len(ids)} ids for {len(texts)} texts")
        recs = [dict(r) for r in records] if records is not None else [{"text": t} for t in texts]
        h = hashlib.sha256()
        for t in texts:
            h.update(t.encode("utf-8"))
            h.update(b"\0")
        return cls(path=name, records=recs, texts=texts, ids=ids, fingerprint=h.hexdigest())


def _detect_format(path: Path) -> str:
    if path.is_dir():
        if (path / "dataset_info.json").exists() or (path / "state.json").exists() or (
            path / "dataset_dict.json"
        ).exists():
            return "hf"
        raise ValueError(f"{path}: a folder, but not a saved Hugging Face dataset (no dataset_info.json)")
    name = path.name.lower()
    for suffix, fmt in ((".jsonl", "jsonl"), (".ndjson", "jsonl"), (".json", "jsonl"), (".csv", "csv"),
                        (".tsv", "tsv"), (".parquet", "parquet"), (".pq", "parquet")):
        if name.endswith(suffix) or name.endswith(suffix + ".gz"):
            return fmt
    raise ValueError(f"{path}: unknown file type; expected one of .jsonl, .csv, .tsv, .parquet or a saved "
                     "Hugging Face dataset folder")


def text_lines(path: str | os.PathLike) -> Iterator[str]:
    """The lines of a UTF-8 text file (gzip-compressed when it ends in .gz), line endings kept and a
    leading byte-order mark dropped, decoded one line at a time so that an undecodable byte is reported
    with the file and line (``ValueError``), not as a codec traceback."""
    path = Path(path)
    if path.name.endswith(".gz"):
        import gzip

        f = gzip.open(path, "rb")
    else:
        f = open(path, "rb")
    with f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not UTF-8 text (byte 0x{raw[e.start]:02x} at column "
                                 f"{e.start + 1}); expected UTF-8") from None
            yield line[1:] if lineno == 1 and line.startswith("\ufeff") else line


def read_jsonl(path: Path) -> tuple[list[dict], list[int]]:
    """All JSON objects of a JSONL file (blank lines skipped) and their line numbers."""
    rows, lines = [], []
    for lineno, line in enumerate(text_lines(path), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{lineno}: expected a JSON object per line, got {type(row).__name__}")
        rows.append(row)
        lines.append(lineno)
    return rows, lines


def _read_delimited(path: Path, delimiter: str) -> tuple[list[dict], list[int]]:
    rows, lines = [], []
    csv.field_size_limit(1 << 30)
    reader = csv.reader(text_lines(path), delimiter=delimiter,
                        quoting=csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL)
    try:
        header = next(reader)
    except StopIteration:
        return [], []
    except csv.Error as e:
        raise ValueError(f"{path}:1: cannot parse header ({e})") from None
    if len(set(header)) != len(header):
        raise ValueError(f"{path}:1: duplicate column names in header {header}")
    while True:
        try:
            values = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            raise ValueError(f"{path}:{reader.line_num}: cannot parse row ({e})") from None
        if not values:
            continue
        if len(values) != len(header):
            raise ValueError(f"{path}:{reader.line_num}: {len(values)} fields, the header has {len(header)}")
        rows.append(dict(zip(header, values)))
        lines.append(reader.line_num)
    return rows, lines


def _read_parquet(path: Path) -> tuple[list[dict], list[int]]:
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as e:  # pyarrow raises several types for a corrupt file
        raise ValueError(f"{path}: not a readable Parquet file ({e})") from None
    return rows, list(range(1, len(rows) + 1))


def _read_hf(path: Path, split: str | None) -> tuple[list[dict], list[int]]:
    try:
        import datasets
    except ImportError:
        raise ImportError("reading a saved Hugging Face dataset needs `pip install tunesift[hf]`") from None
    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        if split is None:
            if len(ds) != 1:
                raise ValueError(f"{path}: a DatasetDict with splits {list(ds)}; name one as PATH:SPLIT")
            split = next(iter(ds))
        if split not in ds:
            raise ValueError(f"{path}: no split {split!r}; splits are {list(ds)}")
        ds = ds[split]
    rows = ds.to_list()
    return rows, list(range(1, len(rows) + 1))


def _fingerprint(path: Path) -> str:
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for p in files:
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def _resolve(path: str | os.PathLike) -> tuple[Path, str | None]:
    """``PATH`` or ``PATH:SPLIT`` (one split of a saved DatasetDict)."""
    spec, split = str(path), None
    p = Path(spec)
    if not p.exists() and ":" in spec:
        spec, split = spec.rsplit(":", 1)
        p = Path(spec)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or folder")
    return p, split


def read_records(path: str | os.PathLike, format: str | None = None) -> tuple[list[dict], list[int], str]:
    """Read all rows of a file as dicts.

    Returns:
        (rows, line numbers (or 1-based row numbers for Parquet / HF), format).
    """
    p, split = _resolve(path)
    fmt = format or _detect_format(p)
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is not one of {FORMATS}")
    if fmt == "jsonl":
        rows, lines = read_jsonl(p)
    elif fmt in ("csv", "tsv"):
        rows, lines = _read_delimited(p, "\t" if fmt == "tsv" else ",")
    elif fmt == "parquet":
        rows, lines = _read_parquet(p)
    else:
        rows, lines = _read_hf(p, split)
    return rows, lines, fmt


def read_text_set(
    path: str | os.PathLike,
    text_field: str = "text",
    id_field: str | None = None,
    format: str | None = None,
    name: str = "input",
) -> TextSet:
    """Read a file into a :class:`TextSet`, checking every row.

    Args:
        path: a .jsonl/.csv/.tsv/.parquet file or a saved Hugging Face dataset folder (``PATH:SPLIT``
            picks one split of a DatasetDict).
        text_field: the field holding the text of each row.
        id_field: the field holding a unique id; the 0-based row number when None.
        name: what the set is, for error messages ("pool", "target").
    """
    rows, lines, fmt = read_records(path, format)
    where = "line" if fmt in ("jsonl", "csv", "tsv") else "row"
    if not rows:
        raise ValueError(f"{path}: the {name} is empty (no rows)")
    texts, ids, seen = [], [], {}
    for i, (row, line) in enumerate(zip(rows, lines)):
        if text_field not in row:
            raise ValueError(
                f"{path}:{where} {line}: no field {text_field!r} (fields: {', '.join(map(str, row))}); "
                "choose one with --text-field"
            )
        text = row[text_field]
        if not isinstance(text, str):
            raise ValueError(f"{path}:{where} {line}: field {text_field!r} is {type(text).__name__}, expected a string")
        if id_field is None:
            rid = i
        else:
            if id_field not in row or row[id_field] is None:
                raise ValueError(f"{path}:{where} {line}: no field {id_field!r} for --id-field")
            rid = row[id_field]
            if rid in seen:
                raise ValueError(f"{path}:{where} {line}: id {rid!r} repeats {where} {seen[rid]}; ids must be unique")
            seen[rid] = line
        texts.append(text)
        ids.append(rid)
    return TextSet(path=str(path), records=rows, texts=texts, ids=ids, text_field=text_field,
                   id_field=id_field, fingerprint=_fingerprint(_resolve(path)[0]))
