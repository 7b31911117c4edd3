"""Read a user's examples from JSONL, CSV/TSV, Parquet or a saved Hugging Face dataset, or from a
folder or glob of JSONL / CSV / TSV / Parquet shards.

Every malformed row fails with the file (the shard), the line (or row) and the reason; nothing fails
deep inside numpy or pandas. A sharded set keeps only the texts and ids in memory: its rows' other
fields are read back from the shards when asked for (:class:`ShardRecords`).
"""

from __future__ import annotations

import bisect
import csv
import glob
import hashlib
import itertools
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

FORMATS = ("jsonl", "csv", "tsv", "parquet", "hf")


@dataclass
class TextSet:
    """Rows of one input file, with the text of each and a unique id.

    Attributes:
        path: where the rows came from (a file, a folder of shards or a glob).
        records: the rows with all their original fields, in file order (a list, or for shards a
            :class:`ShardRecords` that reads them back from the files).
        texts: ``records[i][text_field]`` (for shards a :class:`tunesift.io.packed.PackedTexts`: one
            UTF-8 buffer, not a str object a row).
        ids: ``records[i][id_field]``, or when no id field is given the 0-based row number (one file)
            or ``"<shard path relative to the folder>:<0-based row in the shard>"`` (shards; computed
            when asked for, :class:`tunesift.io.packed.ShardRowIds`).
        fingerprint: sha256 of the file's bytes (or of the rows for an in-memory set; for shards,
            of the shards' names and fingerprints).
        extra: ``{"shards": [{"path", "format", "rows", "fingerprint"}, ...]}`` for sharded sets.
    """

    path: str
    records: Sequence[dict]
    texts: Sequence[str]
    ids: Sequence[Any]
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

    def take(self, indices: Sequence[int]) -> list[dict]:
        """The rows at ``indices``, in that order (for shards: each shard read once)."""
        if isinstance(self.records, ShardRecords):
            return self.records.take(indices)
        return [self.records[i] for i in indices]

    def subset(self, indices: Sequence[int]) -> "TextSet":
        idx = list(indices)
        return TextSet(
            path=self.path,
            records=self.take(idx),
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


def iter_jsonl(path: Path) -> Iterator[tuple[dict, int]]:
    """The JSON objects of a JSONL file one at a time (blank lines skipped), with their line numbers."""
    for lineno, line in enumerate(text_lines(path), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{lineno}: expected a JSON object per line, got {type(row).__name__}")
        yield row, lineno


def read_jsonl(path: Path) -> tuple[list[dict], list[int]]:
    """All JSON objects of a JSONL file (blank lines skipped) and their line numbers."""
    return _unzip(iter_jsonl(path))


def _unzip(pairs: Iterable[tuple[dict, int]]) -> tuple[list[dict], list[int]]:
    rows, lines = [], []
    for row, line in pairs:
        rows.append(row)
        lines.append(line)
    return rows, lines


def _iter_delimited(path: Path, delimiter: str) -> Iterator[tuple[dict, int]]:
    csv.field_size_limit(1 << 30)
    reader = csv.reader(text_lines(path), delimiter=delimiter,
                        quoting=csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL)
    try:
        header = next(reader)
    except StopIteration:
        return
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
        yield dict(zip(header, values)), reader.line_num


def _read_delimited(path: Path, delimiter: str) -> tuple[list[dict], list[int]]:
    return _unzip(_iter_delimited(path, delimiter))


def _iter_parquet(path: Path, batch_rows: int = 65536) -> Iterator[tuple[dict, int]]:
    """A Parquet file's rows one at a time (read a batch of ``batch_rows`` at a time), with 1-based row numbers."""
    import pyarrow.parquet as pq

    row = 0
    try:
        batches = pq.ParquetFile(path).iter_batches(batch_size=batch_rows)
        for batch in batches:
            for record in batch.to_pylist():
                row += 1
                yield record, row
    except Exception as e:  # pyarrow raises several types for a corrupt file
        raise ValueError(f"{path}: not a readable Parquet file ({e})") from None


def _read_parquet(path: Path) -> tuple[list[dict], list[int]]:
    return _unzip(_iter_parquet(path))


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


def iter_records(path: str | os.PathLike, format: str) -> Iterator[tuple[dict, int]]:
    """The rows of a file of one of :data:`SHARD_FORMATS` one at a time, each with its line number (1-based
    row number for Parquet), checked as :func:`read_records` checks them: memory is one row (one batch
    for Parquet) whatever the file's size."""
    p = Path(path)
    if format == "jsonl":
        return iter_jsonl(p)
    if format in ("csv", "tsv"):
        return _iter_delimited(p, "\t" if format == "tsv" else ",")
    if format == "parquet":
        return _iter_parquet(p)
    raise ValueError(f"format {format!r} cannot be streamed; expected one of {SHARD_FORMATS}")


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


SHARD_FORMATS = ("jsonl", "csv", "tsv", "parquet")
READ_BATCH_ROWS = 65536  # rows of a shard checked and packed at a time


@dataclass(frozen=True)
class Shard:
    """One file of a sharded set: where it is, how to read it, and its rows' place in the set.

    Attributes:
        path: the file.
        name: its path relative to the folder (or to the glob's fixed prefix), with ``/``.
        format: one of :data:`SHARD_FORMATS`.
        start: index in the whole set of its first row.
        rows: how many rows it holds.
        fingerprint: sha256 of its bytes.
    """

    path: Path
    name: str
    format: str
    start: int
    rows: int
    fingerprint: str


class ShardRecords(Sequence):
    """The rows of a sharded set, read back from the shards instead of held in memory.

    :meth:`take` and iteration stream the shards (memory: the rows asked for, plus one row or Parquet
    batch); indexing one row reads its whole shard and keeps it until another shard is indexed, so
    a scan in row order reads each shard once (for a few rows; use :meth:`take` for many).
    """

    def __init__(self, shards: Sequence[Shard]):
        self.shards = list(shards)
        self._starts = [s.start for s in self.shards]
        self._n = self.shards[-1].start + self.shards[-1].rows if self.shards else 0
        self._cached: tuple[int, list[dict]] | None = None

    def __len__(self) -> int:
        return self._n

    def _stream(self, k: int) -> Iterator[dict]:
        """Shard k's rows one at a time; an error if it no longer holds the rows it held when read."""
        shard, count = self.shards[k], 0
        for row, _ in iter_records(shard.path, shard.format):
            count += 1
            if count > shard.rows:
                break
            yield row
        if count != shard.rows:
            now = f"more than {shard.rows}" if count > shard.rows else str(count)
            raise ValueError(f"{shard.path}: now holds {now} rows, {shard.rows} when it was read; the shard "
                             "changed during the run")

    def _rows(self, k: int) -> list[dict]:
        if self._cached is None or self._cached[0] != k:
            self._cached = (k, list(self._stream(k)))
        return self._cached[1]

    def locate(self, index: int) -> tuple[int, int]:
        """(shard number, row within the shard) of row ``index`` of the set."""
        if not -self._n <= index < self._n:
            raise IndexError(f"row {index} out of range for {self._n} rows")
        index %= self._n
        k = bisect.bisect_right(self._starts, index) - 1
        return k, index - self.shards[k].start

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.take(range(*index.indices(self._n)))
        k, row = self.locate(int(index))
        return self._rows(k)[row]

    def __iter__(self) -> Iterator[dict]:
        for k in range(len(self.shards)):
            yield from self._stream(k)

    def take(self, indices: Iterable[int]) -> list[dict]:
        """The rows at ``indices`` in that order; each shard holding one of them is streamed once and only
        the rows asked for are kept."""
        wanted = [self.locate(int(i)) for i in indices]
        by_shard: dict[int, set[int]] = {}
        for k, row in wanted:
            by_shard.setdefault(k, set()).add(row)
        found: dict[tuple[int, int], dict] = {}
        for k in sorted(by_shard):
            rows = by_shard[k]
            for i, record in enumerate(self._stream(k)):
                if i in rows:
                    found[(k, i)] = record
        return [found[w] for w in wanted]


def _natural_key(name: str) -> list:
    """``part-2`` before ``part-10``: digit runs compare as numbers (str and int alternate)."""
    return [int(t) if i % 2 else t for i, t in enumerate(re.split(r"(\d+)", name))]


def _detect_format_or_none(path: Path) -> str | None:
    try:
        return _detect_format(path)
    except ValueError:
        return None


def _shard_format(path: Path) -> str | None:
    fmt = _detect_format_or_none(path)
    return fmt if fmt in SHARD_FORMATS else None


def _hidden(name: str) -> bool:
    # Spark/Hive markers (_SUCCESS, .part-0.crc) and editors' files are not data
    return any(part.startswith((".", "_")) for part in name.split("/"))


def shard_files(spec: str | os.PathLike) -> list[tuple[Path, str, str]] | None:
    """The shards named by ``spec``: (file, name relative to the folder / glob prefix, format), in
    natural order of the names; None when ``spec`` is one file or a saved Hugging Face dataset.

    A folder is searched recursively; files and folders whose name starts with ``.`` or ``_`` are
    skipped. Raises ``FileNotFoundError`` for a glob that matches no file and ``ValueError`` for a
    folder without shards, a file that is not a table, or shards of more than one format.
    """
    text = str(spec)
    path = Path(text)
    if path.is_dir():
        if _detect_format_or_none(path) == "hf":
            return None
        base = path
        candidates = [p for p in path.rglob("*") if p.is_file()]
        what = f"{path}: a folder"
    elif not path.exists() and glob.has_magic(text):
        parts = Path(text).parts
        fixed = next((i for i, part in enumerate(parts) if glob.has_magic(part)), len(parts))
        base = Path(*parts[:fixed]) if fixed else Path(".")
        candidates = [Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file()]
        if not candidates:
            raise FileNotFoundError(f"{text}: the glob matches no file")
        what = f"{text}: the glob"
    else:
        return None
    shards, unknown = [], []
    for p in candidates:
        name = p.relative_to(base).as_posix()
        if _hidden(name):
            continue
        fmt = _shard_format(p)
        (shards if fmt else unknown).append((p, name, fmt))
    if unknown:
        raise ValueError(f"{unknown[0][0]}: not a .jsonl, .csv, .tsv or .parquet shard ({what} of shards may "
                         "hold nothing else; move it out or name the shards with a glob)")
    if not shards:
        raise ValueError(f"{what} with no .jsonl, .csv, .tsv or .parquet shards in it")
    formats = sorted({fmt for _, _, fmt in shards})
    if len(formats) > 1:
        first = {fmt: next(n for _, n, f in shards if f == fmt) for fmt in formats}
        raise ValueError(f"{what} mixes shard formats ({', '.join(f'{f}: {first[f]}' for f in formats)}); "
                         "one set must be one format")
    return sorted(shards, key=lambda s: _natural_key(s[1]))


def _texts_and_ids(rows: list[dict], lines: list[int], where: str, path: str, text_field: str,
                   id_field: str | None, seen: dict | None,
                   field_option: str = "text_field") -> tuple[list[str], list[Any]]:
    """Check every row's text (and id) field; ``seen`` maps ids to where they were first met (None: the
    caller checks that ids are unique)."""
    texts, ids = [], []
    for i, (row, line) in enumerate(zip(rows, lines)):
        if text_field not in row:
            raise ValueError(
                f"{path}:{where} {line}: no field {text_field!r} (fields: {', '.join(map(str, row))}); "
                f"choose one with {field_option}"
            )
        text = row[text_field]
        if not isinstance(text, str):
            raise ValueError(f"{path}:{where} {line}: field {text_field!r} is {type(text).__name__}, expected a string")
        if id_field is None:
            rid = i
        else:
            if id_field not in row:
                raise ValueError(f"{path}:{where} {line}: no field {id_field!r} (fields: {', '.join(map(str, row))}); "
                                 "choose one with --id-field")
            if row[id_field] is None:
                raise ValueError(f"{path}:{where} {line}: field {id_field!r} is empty; --id-field needs an id in every row")
            rid = row[id_field]
            if seen is not None:
                if rid in seen:
                    first_path, first_line = seen[rid]
                    at = f"{where} {first_line}" if first_path == path else f"{first_path}:{where} {first_line}"
                    raise ValueError(f"{path}:{where} {line}: id {rid!r} repeats {at}; ids must be unique")
                seen[rid] = (path, line)
        texts.append(text)
        ids.append(rid)
    return texts, ids


def read_text_set(
    path: str | os.PathLike,
    text_field: str = "text",
    id_field: str | None = None,
    format: str | None = None,
    name: str = "input",
    spill_dir: str | os.PathLike | None = None,
    field_option: str = "text_field",
) -> TextSet:
    """Read a file, or a folder or glob of shards, into a :class:`TextSet`, checking every row.

    Args:
        path: a .jsonl/.csv/.tsv/.parquet file, a saved Hugging Face dataset folder (``PATH:SPLIT``
            picks one split of a DatasetDict), or a folder / glob (``shards/part-*.parquet``) of shards
            of one of those four formats, read in natural order of their names (``part-2`` before
            ``part-10``), a batch of rows in memory at a time.
        text_field: the field holding the text of each row.
        id_field: the field holding a unique id (unique across shards); when None, the 0-based row
            number (one file) or ``"<shard name>:<row in the shard>"`` (shards: stable when shards are
            added).
        name: what the set is, for error messages ("pool", "target").
        spill_dir: keep the texts (and ``id_field``'s values) in an unlinked temporary file in this folder,
            memory-mapped (:class:`tunesift.io.packed.PackedTexts`), so texts larger than RAM can be held,
            and read one JSONL/CSV/TSV/Parquet file as shards are read: a batch of rows at a time, its rows
            read back from the file when asked for (:class:`ShardRecords`); None: all in memory.
        field_option: how the caller sets ``text_field`` (a command's ``--target-text-field``), named
            in the error when a row lacks the field.
    """
    shards = None if format is not None else shard_files(path)
    if shards is not None:
        return _read_shards(str(path), shards, text_field, id_field, name, spill_dir, field_option=field_option)
    if spill_dir is not None:  # one file streamed as a set of one shard, its texts spilled
        p, split = _resolve(path)
        fmt = format or _detect_format(p)
        if fmt in SHARD_FORMATS and split is None and p.is_file():
            return _read_shards(str(path), [(p, p.name, fmt)], text_field, id_field, name, spill_dir, single=True,
                                field_option=field_option)
    rows, lines, fmt = read_records(path, format)
    where = _position_word(fmt)
    if not rows:
        raise ValueError(f"{path}: the {name} is empty (no rows)")
    texts, ids = _texts_and_ids(rows, lines, where, str(path), text_field, id_field, {}, field_option)
    return TextSet(path=str(path), records=rows, texts=texts, ids=ids, text_field=text_field,
                   id_field=id_field, fingerprint=_fingerprint(_resolve(path)[0]))


def _read_shards(spec: str, files: list[tuple[Path, str, str]], text_field: str, id_field: str | None,
                 name: str, spill_dir: str | os.PathLike | None = None, single: bool = False,
                 field_option: str = "text_field") -> TextSet:
    """A set of shards read a batch of rows at a time. ``single``: ``files`` is one file read this way, which
    keeps a one-file set's ids (row numbers), fingerprint (its bytes) and manifest (no shard list)."""
    from array import array

    from tunesift.io.packed import PackedTexts, PackedValues, RowNumbers, ShardRowIds

    texts = PackedTexts(spill_dir=spill_dir)  # the text bytes and an offset a row, not a str object each
    # --id-field's values as JSON texts, packed the same way (no file opened without one)
    ids: Any = PackedValues(spill_dir=spill_dir) if id_field is not None else None
    digests = array("q")  # 8 bytes of each id's hash: uniqueness is checked without a dict of every id
    shards: list[Shard] = []
    total = hashlib.sha256()
    for path, shard_name, fmt in files:
        where = _position_word(fmt)
        start = len(texts)
        records = iter_records(path, fmt)
        while True:  # a batch of rows at a time: a shard need not fit in memory
            rows, lines = _unzip(itertools.islice(records, READ_BATCH_ROWS))
            if not rows:
                break
            t, i = _texts_and_ids(rows, lines, where, str(path), text_field, id_field, None, field_option)
            texts.extend(t)
            if id_field is not None:
                encoded = [_encode_id(v, path, where, line, id_field) for v, line in zip(i, lines)]
                ids.extend_encoded(encoded)
                digests.extend(_digest(e) for e in encoded)
            del rows, lines, t, i
        fingerprint = _fingerprint(path)
        shards.append(Shard(path=path, name=shard_name, format=fmt, start=start, rows=len(texts) - start,
                            fingerprint=fingerprint))
        total.update(f"{shard_name}\0{fingerprint}\0".encode())
    if not texts:
        raise ValueError(f"{spec}: the {name} is empty " + ("(no rows)" if single else
                                                             f"(its {len(files)} shards hold no rows)"))
    info = [{"path": s.name, "format": s.format, "rows": s.rows, "fingerprint": s.fingerprint} for s in shards]
    if id_field is not None:
        _check_unique_ids(ids, digests, shards)
    elif single:  # a file's rows are numbered 0..N-1
        ids = RowNumbers(len(texts))
    else:  # "<shard>:<row>", computed when asked for
        ids = ShardRowIds([s.name for s in shards], [s.start for s in shards], len(texts))
    return TextSet(path=spec, records=ShardRecords(shards), texts=texts, ids=ids, text_field=text_field,
                   id_field=id_field, fingerprint=shards[0].fingerprint if single else total.hexdigest(),
                   extra={} if single else {"shards": info})


def _encode_id(value: Any, path: Path, where: str, line: int, id_field: str) -> str:
    from tunesift.io.packed import PackedValues

    try:
        return PackedValues.encode(value)
    except TypeError:
        raise ValueError(f"{path}:{where} {line}: field {id_field!r} is {type(value).__name__}; --id-field "
                         "values must be strings or numbers") from None


def _digest(encoded: str) -> int:
    return int.from_bytes(hashlib.blake2b(encoded.encode("utf-8"), digest_size=8).digest(), "little", signed=True)


def _check_unique_ids(ids: Any, digests: Any, shards: list[Shard]) -> None:
    """The error a row-by-row check would raise at the first repeated id (naming both rows), found from the
    ids' 8-byte hashes: only the rows whose hash repeats are compared."""
    import numpy as np

    h = np.frombuffer(digests, dtype=np.int64)
    order = np.argsort(h, kind="stable")
    same = np.flatnonzero(h[order][1:] == h[order][:-1])
    if not same.size:
        return
    first_at: dict[str, int] = {}
    for j in np.unique(np.concatenate([order[same], order[same + 1]])).tolist():  # ascending rows
        key = ids.encoded(j)
        if key not in first_at:
            first_at[key] = j
            continue
        (p1, w1, l1), (p2, w2, l2) = _where(shards, first_at[key]), _where(shards, j)
        at = f"{w1} {l1}" if p1 == p2 else f"{p1}:{w1} {l1}"
        raise ValueError(f"{p2}:{w2} {l2}: id {ids[j]!r} repeats {at}; ids must be unique")


def _position_word(fmt: str) -> str:
    """How a format's positions are named in messages: text formats by line, the others by row."""
    return "line" if fmt in ("jsonl", "csv", "tsv") else "row"


def _where(shards: list[Shard], index: int) -> tuple[str, str, int]:
    """(path, "line" or "row", line number) of row ``index`` of a sharded set (its shard read again)."""
    k, row = ShardRecords(shards).locate(index)
    shard = shards[k]
    for i, (_, line) in enumerate(iter_records(shard.path, shard.format)):
        if i == row:
            return str(shard.path), _position_word(shard.format), line
    raise ValueError(f"{shard.path}: shorter than when it was read; the shard changed during the run")
