import json

import numpy as np
import pytest

from tunesift.io.atomic import atomic_write, write_json, write_jsonl, write_parquet


def test_crash_leaves_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "out.json"
    write_json(path, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_write(path) as f:
            f.write('{"v": 2, "half')
            raise RuntimeError("crash mid-write")
    assert json.loads(path.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_writers_roundtrip(tmp_path):
    import pyarrow.parquet as pq

    write_jsonl(tmp_path / "a.jsonl", [{"x": np.int64(1)}, {"x": np.float32(0.5)}])
    assert [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()] == [{"x": 1}, {"x": 0.5}]
    write_parquet(tmp_path / "t.parquet", {"id": ["a", "b"], "score": np.array([1.0, 2.0])})
    t = pq.read_table(tmp_path / "t.parquet").to_pydict()
    assert t == {"id": ["a", "b"], "score": [1.0, 2.0]}


def test_written_files_follow_the_umask_not_mkstemps_0600(tmp_path):
    from tunesift.io import atomic

    write_json(tmp_path / "m.json", {"a": 1})
    assert (tmp_path / "m.json").stat().st_mode & 0o777 == 0o666 & ~atomic._UMASK  # 0644 under umask 022


def test_parquet_in_row_groups_reads_back_the_same_table_and_one_group_is_write_table(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = 1000
    cols = {"id": [f"shard-{i // 100}.jsonl:{i % 100}" for i in range(n)], "score": np.linspace(0, 1, n),
            "selected": np.arange(n) < 10}
    write_parquet(tmp_path / "groups.parquet", cols, row_group_rows=300)
    assert pq.ParquetFile(tmp_path / "groups.parquet").num_row_groups == 4
    assert pq.read_table(tmp_path / "groups.parquet").equals(pa.table(cols))
    write_parquet(tmp_path / "one.parquet", cols)
    pq.write_table(pa.table(cols), tmp_path / "reference.parquet")
    assert (tmp_path / "one.parquet").read_bytes() == (tmp_path / "reference.parquet").read_bytes()
    with pytest.raises(ValueError, match="different lengths"):
        write_parquet(tmp_path / "bad.parquet", {"a": [1, 2], "b": [1]})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["groups.parquet", "one.parquet", "reference.parquet"]


def test_atomic_npy_is_renamed_only_when_complete(tmp_path):
    from tunesift.io.atomic import atomic_npy

    with atomic_npy(tmp_path / "m.npy", (5, 2)) as out:
        out[:] = np.arange(10, dtype=np.float32).reshape(5, 2)
    assert np.array_equal(np.load(tmp_path / "m.npy"), np.arange(10).reshape(5, 2))
    with pytest.raises(RuntimeError):
        with atomic_npy(tmp_path / "m.npy", (5, 2)) as out:
            raise RuntimeError("crash mid-write")
    assert np.load(tmp_path / "m.npy").sum() == 45 and [p.name for p in tmp_path.iterdir()] == ["m.npy"]
