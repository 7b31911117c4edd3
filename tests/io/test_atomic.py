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
