import pickle

import numpy as np
import pytest

from tunesift.io.packed import PackedTexts, ShardRowIds


def test_packed_texts_behave_as_the_list_they_pack():
    texts = ["plain", "", "Ünïcödé — naïve ✓", "line\nbreak", "x" * 1000, "\x00nul"]
    packed = PackedTexts(texts[:2])
    packed.extend(texts[2:])
    assert len(packed) == len(texts) and list(packed) == texts and packed == texts
    assert [packed[i] for i in range(-6, 6)] == texts + texts
    assert packed[1:5] == texts[1:5] and packed[::-2] == texts[::-2] and isinstance(packed[1:3], list)
    assert packed + ["more"] == texts + ["more"] and ["first"] + packed == ["first"] + texts
    with pytest.raises(IndexError, match="index 6 out of range for 6 items"):
        packed[6]
    assert pickle.loads(pickle.dumps(packed)) == texts
    assert packed.nbytes == sum(len(t.encode()) for t in texts) + 8 * 7


def test_spilled_texts_live_in_an_unnamed_mapped_file_and_behave_the_same(tmp_path):
    texts = ["plain", "", "Ünïcödé — naïve ✓", "line\nbreak", "x" * 100_000, "\x00nul"]
    spill = tmp_path / "spill"
    packed = PackedTexts(texts[:1], spill_dir=spill)
    assert packed.spilled and list(packed) == texts[:1]  # read before the next extend: remapped after it
    packed.extend(texts[1:4])
    assert packed[3] == "line\nbreak" and len(packed) == 4
    packed.extend(texts[4:])
    assert packed == texts and packed[-1] == "\x00nul" and packed[2:5] == texts[2:5]
    assert packed.nbytes == PackedTexts(texts).nbytes  # the buffer is on disk, not in the process
    assert list(spill.iterdir()) == []  # unlinked on creation: nothing to clean up, whatever ends the run
    assert pickle.loads(pickle.dumps(packed)) == texts and not pickle.loads(pickle.dumps(packed)).spilled
    assert PackedTexts(["", ""], spill_dir=spill) == ["", ""]  # an empty buffer maps nothing


def test_shard_row_ids_are_shard_and_row_with_empty_shards_skipped():
    sizes = {"a.jsonl": 3, "empty.jsonl": 0, "b.jsonl": 2, "c.jsonl": 0}
    loop = [f"{name}:{row}" for name, n in sizes.items() for row in range(n)]
    starts = np.concatenate([[0], np.cumsum(list(sizes.values()))[:-1]]).tolist()
    ids = ShardRowIds(list(sizes), starts, 5)
    assert list(ids) == loop and [ids[i] for i in range(5)] == loop and ids[-1] == "b.jsonl:1"
    assert ids[1:4] == loop[1:4] and ids == loop and len(ids) == 5
