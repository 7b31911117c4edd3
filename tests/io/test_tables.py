import json

import numpy as np
import pytest

from tunesift.io.tables import TextSet, read_text_set


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_jsonl_csv_tsv_parquet_read_the_same_rows(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"text": "a cat", "uid": "u1"}, {"text": "a dog, barking", "uid": "u2"}]
    _write(tmp_path / "d.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n\n")
    _write(tmp_path / "d.csv", 'text,uid\na cat,u1\n"a dog, barking",u2\n')
    _write(tmp_path / "d.tsv", "text\tuid\na cat\tu1\na dog, barking\tu2\n")
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    for name in ("d.jsonl", "d.csv", "d.tsv", "d.parquet"):
        ts = read_text_set(tmp_path / name, id_field="uid")
        assert ts.texts == ["a cat", "a dog, barking"], name
        assert ts.ids == ["u1", "u2"], name
        assert len(ts.fingerprint) == 64
    assert read_text_set(tmp_path / "d.jsonl").ids == [0, 1]  # row numbers by default


def test_saved_hf_dataset(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"body": ["x y", "z"]}).save_to_disk(str(tmp_path / "ds"))
    ts = read_text_set(tmp_path / "ds", text_field="body")
    assert ts.texts == ["x y", "z"]
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": ["t"]}),
                          "test": datasets.Dataset.from_dict({"text": ["u", "v"]})}).save_to_disk(str(tmp_path / "dd"))
    assert read_text_set(f"{tmp_path / 'dd'}:test").texts == ["u", "v"]
    with pytest.raises(ValueError, match="splits"):
        read_text_set(tmp_path / "dd")


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("bad.jsonl", '{"text": "ok"}\n{"text": oops}\n', r"bad.jsonl:2: invalid JSON"),
        ("list.jsonl", '{"text": "ok"}\n[1, 2]\n', r"list.jsonl:2: expected a JSON object"),
        ("nofield.jsonl", '{"text": "ok"}\n{"body": "x"}\n', r"nofield.jsonl:line 2: no field 'text'"),
        ("num.jsonl", '{"text": 3}\n', r"num.jsonl:line 1: field 'text' is int"),
        ("empty.jsonl", "\n\n", r"empty"),
        ("ragged.csv", "text,x\na,1\nb,2,3\n", r"ragged.csv:3: 3 fields, the header has 2"),
        ("data.txt", "hello\n", r"unknown file type"),
    ],
)
def test_bad_input_names_file_line_and_reason(tmp_path, name, content, message):
    _write(tmp_path / name, content)
    with pytest.raises(ValueError, match=message):
        read_text_set(tmp_path / name, name="pool")


def test_duplicate_or_missing_ids(tmp_path):
    _write(tmp_path / "d.jsonl", '{"text": "a", "id": 1}\n{"text": "b", "id": 1}\n')
    with pytest.raises(ValueError, match=r"line 2: id 1 repeats line 1"):
        read_text_set(tmp_path / "d.jsonl", id_field="id")
    with pytest.raises(ValueError, match=r"no field 'uid'"):
        read_text_set(tmp_path / "d.jsonl", id_field="uid")


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_text_set("/nonexistent/pool.jsonl")


def test_from_texts_and_subset():
    ts = TextSet.from_texts(["a", "b", "c"], ids=["x", "y", "z"])
    sub = ts.subset([2, 0])
    assert sub.texts == ["c", "a"] and sub.ids == ["z", "x"]
    with pytest.raises(TypeError, match="item 1 is int"):
        TextSet.from_texts(["a", 1])
    assert ts.column("text") == ["a", "b", "c"]
    with pytest.raises(ValueError, match="row 1 has no field 'domain'"):
        ts.column("domain")
    assert np.array_equal(ts.fingerprint, TextSet.from_texts(["a", "b", "c"]).fingerprint)
