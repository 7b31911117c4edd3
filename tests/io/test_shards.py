"""A folder or glob of shards read as one set: order, ids, lazy rows, and errors naming the shard."""

import json
import re

import pytest

from tunesift.io.tables import ShardRecords, read_text_set


def _jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def shards(tmp_path):
    """part-2 (2 rows), part-10 (1 row), sub/part-1 (2 rows), plus files that are not data."""
    folder = tmp_path / "pool"
    _jsonl(folder / "part-10.jsonl", [{"text": "ten a", "uid": "k"}])
    _jsonl(folder / "part-2.jsonl", [{"text": "two a", "uid": "a"}, {"text": "two b", "uid": "b", "x": 1}])
    _jsonl(folder / "sub" / "part-1.jsonl", [{"text": "sub a", "uid": "s1"}, {"text": "sub b", "uid": "s2"}])
    (folder / "_SUCCESS").write_text("")
    (folder / ".part-2.jsonl.crc").write_text("x")
    return folder


def test_a_folder_reads_its_shards_in_natural_order_with_stable_ids(shards):
    ts = read_text_set(shards, name="pool")
    assert ts.texts == ["two a", "two b", "ten a", "sub a", "sub b"]  # part-2 < part-10 < sub/part-1
    assert ts.ids == ["part-2.jsonl:0", "part-2.jsonl:1", "part-10.jsonl:0", "sub/part-1.jsonl:0",
                      "sub/part-1.jsonl:1"]
    assert [s["path"] for s in ts.extra["shards"]] == ["part-2.jsonl", "part-10.jsonl", "sub/part-1.jsonl"]
    assert [s["rows"] for s in ts.extra["shards"]] == [2, 1, 2]
    from tunesift.io.packed import PackedTexts, ShardRowIds

    assert isinstance(ts.texts, PackedTexts) and isinstance(ts.ids, ShardRowIds)  # no str object a row
    assert all(len(s["fingerprint"]) == 64 for s in ts.extra["shards"]) and len(ts.fingerprint) == 64
    # the rows' fields are read back from the shards, not held
    assert isinstance(ts.records, ShardRecords) and len(ts.records) == 5
    assert ts.records[1] == {"text": "two b", "uid": "b", "x": 1} and ts.records[-1]["uid"] == "s2"
    assert [r["uid"] for r in ts.take([4, 0, 2, 1])] == ["s2", "a", "k", "b"]
    assert [r["uid"] for r in ts.records] == ["a", "b", "k", "s1", "s2"]
    assert ts.column("uid") == ["a", "b", "k", "s1", "s2"]
    assert ts.subset([3, 1]).records == [{"text": "sub a", "uid": "s1"}, {"text": "two b", "uid": "b", "x": 1}]
    assert read_text_set(shards, id_field="uid").ids == ["a", "b", "k", "s1", "s2"]
    spilled = read_text_set(shards, name="pool", spill_dir=shards.parent / "spill")
    assert spilled.texts.spilled and spilled.texts == ts.texts and spilled.fingerprint == ts.fingerprint
    # a new shard leaves the ids of the others as they were
    _jsonl(shards / "part-3.jsonl", [{"text": "three"}])
    assert read_text_set(shards).ids[:3] == ["part-2.jsonl:0", "part-2.jsonl:1", "part-3.jsonl:0"]


def test_a_glob_and_other_formats(tmp_path, shards):
    import pyarrow as pa
    import pyarrow.parquet as pq

    ts = read_text_set(str(shards / "part-*.jsonl"))
    assert ts.ids == ["part-2.jsonl:0", "part-2.jsonl:1", "part-10.jsonl:0"]
    assert read_text_set(str(shards / "**" / "*.jsonl")).texts[-1] == "sub b"
    pq_dir = tmp_path / "pq"
    pq_dir.mkdir()
    pq.write_table(pa.Table.from_pylist([{"text": "p0"}, {"text": "p1"}]), pq_dir / "b.parquet")
    pq.write_table(pa.Table.from_pylist([{"text": "q0"}]), pq_dir / "a.parquet")
    assert read_text_set(pq_dir).ids == ["a.parquet:0", "b.parquet:0", "b.parquet:1"]
    csv_dir = tmp_path / "csv"
    csv_dir.mkdir()
    (csv_dir / "0.csv").write_text('text,n\n"a, b",1\n')
    assert read_text_set(csv_dir).records[0] == {"text": "a, b", "n": "1"}


def test_bad_shard_sets_are_refused_naming_the_folder_glob_or_shard(tmp_path, shards):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"empty: a folder with no \.jsonl"):
        read_text_set(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match=r"nothing-\*\.jsonl: the glob matches no file"):
        read_text_set(str(tmp_path / "nothing-*.jsonl"))
    (shards / "part-3.parquet").write_bytes(b"")
    with pytest.raises(ValueError, match=r"mixes shard formats \(jsonl: part-10.jsonl, parquet: part-3.parquet\)"):
        read_text_set(shards)
    (shards / "part-3.parquet").unlink()
    (shards / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match=r"notes.txt: not a \.jsonl, \.csv, \.tsv or \.parquet shard"):
        read_text_set(shards)
    (shards / "notes.txt").unlink()
    # errors inside a shard name that shard's file and line, as for one file
    _jsonl(shards / "part-11.jsonl", [{"text": "ok"}, {"body": "no text"}])
    with pytest.raises(ValueError, match=r"part-11.jsonl:line 2: no field 'text'"):
        read_text_set(shards)
    (shards / "part-11.jsonl").write_text('{"text": "ok"}\n{"text": oops}\n')
    with pytest.raises(ValueError, match=r"part-11.jsonl:2: invalid JSON"):
        read_text_set(shards)
    (shards / "part-11.jsonl").unlink()
    _jsonl(shards / "sub" / "part-0.jsonl", [{"text": "dup", "uid": "k"}])
    with pytest.raises(ValueError, match=r"sub/part-0.jsonl:line 1: id 'k' repeats .*part-10.jsonl:line 1"):
        read_text_set(shards, id_field="uid")
    (tmp_path / "blank").mkdir()
    (tmp_path / "blank" / "a.jsonl").write_text("\n")
    with pytest.raises(ValueError, match=r"blank: the pool is empty \(its 1 shards hold no rows\)"):
        read_text_set(tmp_path / "blank", name="pool")


def test_shards_are_read_in_batches_and_rows_streamed_back(tmp_path, monkeypatch):
    """A shard larger than one read batch gives the same set; take() keeps only the rows asked for; a shard
    that changed under the run is named."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tunesift.io import tables

    folder = tmp_path / "pool"
    _jsonl(folder / "a.jsonl", [{"text": f"a{i}", "n": i} for i in range(7)])
    pq.write_table(pa.table({"text": [f"b{i}" for i in range(5)], "n": list(range(5))}), tmp_path / "b.parquet",
                   row_group_size=2)
    whole = read_text_set(folder)
    monkeypatch.setattr(tables, "READ_BATCH_ROWS", 3)
    batched = read_text_set(folder)
    assert batched.texts == whole.texts == [f"a{i}" for i in range(7)] and batched.ids == whole.ids
    assert [s["rows"] for s in batched.extra["shards"]] == [7]
    assert [r["n"] for r in batched.take([6, 0, 3, 6])] == [6, 0, 3, 6]
    streamed = list(tables._iter_parquet(tmp_path / "b.parquet", batch_rows=2))  # a batch of 2 rows at a time
    assert [(row["text"], n) for row, n in streamed] == [(f"b{i}", i + 1) for i in range(5)]
    ids = tmp_path / "ids"  # a repeated id found across read batches, named with its line and the first one's
    _jsonl(ids / "c.jsonl", [{"text": "x", "uid": "u"}, {"text": "y", "uid": "v"}, {"text": "z", "uid": "w"},
                             {"text": "z2", "uid": "u"}])
    with pytest.raises(ValueError, match=r"c.jsonl:line 4: id 'u' repeats line 1"):
        read_text_set(ids, id_field="uid")
    _jsonl(folder / "a.jsonl", [{"text": f"a{i}"} for i in range(8)])  # one row more than when it was read
    with pytest.raises(ValueError, match=r"a.jsonl: now holds more than 7 rows, 7 when it was read"):
        batched.take([0])
    _jsonl(folder / "a.jsonl", [{"text": f"a{i}"} for i in range(4)])
    with pytest.raises(ValueError, match=r"a.jsonl: now holds 4 rows, 7 when it was read"):
        list(batched.records)



def test_id_field_values_are_packed_and_checked_unique_by_their_hashes(tmp_path, monkeypatch):
    from tunesift.io import tables
    from tunesift.io.packed import PackedValues

    folder = tmp_path / "pool"
    _jsonl(folder / "a.jsonl", [{"text": "x", "uid": 7}, {"text": "y", "uid": "7"}, {"text": "z", "uid": "ü"}])
    _jsonl(folder / "b.jsonl", [{"text": "w", "uid": 2.5}])
    ts = read_text_set(folder, id_field="uid")
    assert isinstance(ts.ids, PackedValues) and list(ts.ids) == [7, "7", "ü", 2.5]  # 7 and "7" are two ids
    monkeypatch.setattr(tables, "_digest", lambda encoded: 0)  # every hash collides: the ids themselves decide
    assert read_text_set(folder, id_field="uid").ids == [7, "7", "ü", 2.5]
    _jsonl(folder / "c.jsonl", [{"text": "v", "uid": "ü"}, {"text": "u", "uid": 7}])
    with pytest.raises(ValueError, match=r"c.jsonl:line 1: id 'ü' repeats .*a.jsonl:line 3; ids must be unique"):
        read_text_set(folder, id_field="uid")  # the first repeat in reading order, as a row-by-row check
    _jsonl(folder / "c.jsonl", [{"text": "v", "uid": [1, 2]}])
    with pytest.raises(ValueError, match=r"c.jsonl:line 1: field 'uid' is list; --id-field values must be strings"):
        read_text_set(folder, id_field="uid")


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_one_file_with_a_spill_dir_reads_as_one_shard_with_the_in_memory_sets_ids_and_errors(tmp_path, fmt):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tunesift.io.packed import PackedTexts, RowNumbers

    rows = [{"text": f"t{i}", "uid": f"u{i}"} for i in range(5)]
    path = tmp_path / f"pool.{fmt}"
    if fmt == "jsonl":
        _jsonl(path, rows)
    elif fmt == "csv":
        path.write_text("text,uid\n" + "".join(f"{r['text']},{r['uid']}\n" for r in rows))
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)
    memory = read_text_set(path, name="pool")
    streamed = read_text_set(path, name="pool", spill_dir=tmp_path / "spill")
    assert isinstance(streamed.texts, PackedTexts) and streamed.texts.spilled and isinstance(streamed.ids, RowNumbers)
    assert isinstance(streamed.records, ShardRecords) and streamed.extra == {} == memory.extra
    assert streamed.texts == memory.texts and streamed.ids == memory.ids == list(range(5))
    assert streamed.fingerprint == memory.fingerprint and list(streamed.records) == memory.records
    assert streamed.take([4, 1]) == memory.take([4, 1]) and streamed.column("uid") == memory.column("uid")
    assert read_text_set(path, id_field="uid", spill_dir=tmp_path / "spill").ids == memory.column("uid")
    for kwargs in ({"text_field": "body"}, {"id_field": "nope"}):
        with pytest.raises(ValueError) as in_memory:
            read_text_set(path, name="pool", **kwargs)
        with pytest.raises(ValueError, match=re.escape(str(in_memory.value))):
            read_text_set(path, name="pool", spill_dir=tmp_path / "spill", **kwargs)
