import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from tunesift.output import ranks_from_order, write_selection


def test_ranks_from_order():
    assert ranks_from_order(np.array([2, 0, 1]), 3).tolist() == [2, 3, 1]
    with pytest.raises(ValueError, match="permutation"):
        ranks_from_order(np.array([0, 0, 1]), 3)


def test_write_selection_files(tmp_path):
    ids = ["a", "b", "c", "d"]
    scores = np.array([0.1, 0.9, 0.5, 0.3])
    order = np.array([1, 2, 3, 0])
    rows = [{"text": "b"}, {"text": "c"}]
    paths = write_selection(tmp_path, ids, scores, order, 2, rows, {"method": "x", "seed": 3},
                            columns={"gradient": -scores})
    t = pq.read_table(paths["scores"]).to_pydict()
    assert t["id"] == ids and t["rank"] == [4, 1, 2, 3] and t["selected"] == [False, True, True, False]
    assert t["gradient"] == pytest.approx((-scores).tolist())
    lines = [json.loads(x) for x in paths["selected"].read_text().splitlines()]
    assert lines == rows
    m = json.loads(paths["manifest"].read_text())
    assert m["seed"] == 3 and m["budget"] == 2 and "numpy" in m["versions"]
    with pytest.raises(ValueError, match="budget 5"):
        write_selection(tmp_path, ids, scores, order, 5, rows, {})


def test_the_manifest_records_torch_threads(tmp_path):
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        paths = write_selection(tmp_path, ["a", "b"], np.array([0.2, 0.1]), np.array([0, 1]), 1, None, {})
        assert json.loads(paths["manifest"].read_text())["versions"]["torch_threads"] == "1"
    finally:
        torch.set_num_threads(threads)


def test_library_bars_silences_transformers_own_switch_and_restores_both():
    pytest.importorskip("transformers")
    from huggingface_hub.utils import are_progress_bars_disabled
    from transformers.utils import logging as hf_logging

    from tunesift.output import library_bars

    assert hf_logging.is_progress_bar_enabled() and not are_progress_bars_disabled()
    with library_bars(False):
        # transformers draws "Loading weights" through its own switch, not huggingface_hub's
        assert not hf_logging.is_progress_bar_enabled() and are_progress_bars_disabled()
    assert hf_logging.is_progress_bar_enabled() and not are_progress_bars_disabled()
    with library_bars(True):
        assert hf_logging.is_progress_bar_enabled()
