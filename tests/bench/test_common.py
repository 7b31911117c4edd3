import json
import math

import numpy as np
import pytest

from tunesift.bench.common import (
    RunStore,
    markdown_table,
    mean_std,
    measure,
    plot_bars,
    plot_lines,
    run_id,
    summarize,
    write_results,
)


def test_mean_std_matches_numpy():
    vals = [0.1, 0.4, 0.25]
    mean, std = mean_std(vals)
    assert mean == pytest.approx(np.mean(vals))
    assert std == pytest.approx(np.std(vals, ddof=1))
    assert mean_std([0.3]) == (0.3, None)
    assert mean_std([]) == (None, None)
    assert mean_std([None, float("nan"), 2.0]) == (2.0, None)
    third = 0.00078125 / 3 * 3  # identical runs give std 0 exactly, not a 1e-19 residue of the mean
    assert mean_std([third] * 3) == (third, 0.0)


def test_summarize_groups_and_orders():
    recs = [
        {"method": "b", "seed": 0, "r": 1.0},
        {"method": "a", "seed": 0, "r": 2.0},
        {"method": "b", "seed": 1, "r": 3.0},
    ]
    rows = summarize(recs, ["method"], ["r", "missing"], order=["b", "a"])
    assert [r.group["method"] for r in rows] == ["b", "a"]
    assert rows[0].n_runs == 2 and rows[0].mean["r"] == 2.0 and rows[0].std["r"] == pytest.approx(math.sqrt(2))
    assert rows[1].std["r"] is None and rows[1].mean["missing"] is None
    with pytest.raises(ValueError, match="group field"):
        summarize([{"seed": 0}], ["method"], ["r"])


def test_run_store_resume_and_settings_guard(tmp_path):
    store = RunStore(tmp_path, {"budget": 8, "methods": ("a", "b")})
    key = {"method": "a", "seed": 1}
    assert run_id(key) == "method=a,seed=1"
    assert not store.is_done(key)
    store.save(key, {"recall": 0.5})
    again = RunStore(tmp_path, {"budget": 8, "methods": ["a", "b"]})  # tuple == list after JSON
    assert again.is_done(key)
    assert again.load(key) == {"method": "a", "seed": 1, "recall": 0.5}
    assert again.records() == [{"method": "a", "seed": 1, "recall": 0.5}]
    with pytest.raises(ValueError, match="budget"):
        RunStore(tmp_path, {"budget": 9, "methods": ["a", "b"]})
    with pytest.raises(ValueError, match="letters"):
        run_id({"method": "a/b"})
    with pytest.raises(FileNotFoundError):
        store.load({"method": "b", "seed": 0})


def test_run_store_resumes_from_another_folder(tmp_path, monkeypatch):
    """The data given as an absolute path and as ``../data`` from another folder is one bench; another
    existing folder is not."""
    (tmp_path / "data").mkdir()
    (tmp_path / "other").mkdir()
    (tmp_path / "work").mkdir()
    out = tmp_path / "bench"
    RunStore(out, {"data": {"source": str(tmp_path / "data"), "fingerprint": "f"}})
    monkeypatch.chdir(tmp_path / "work")
    RunStore(out, {"data": {"source": "../data", "fingerprint": "f"}})
    with pytest.raises(ValueError, match="data"):
        RunStore(out, {"data": {"source": str(tmp_path / "other"), "fingerprint": "f"}})
    with pytest.raises(ValueError, match="data"):
        RunStore(out, {"data": {"source": str(tmp_path / "data"), "fingerprint": "g"}})


def test_measure_sees_allocation():
    import mmap

    # fresh anonymous pages: a malloc'd block could reuse memory freed by earlier tests (already resident)
    buf = mmap.mmap(-1, 64 * 2**20)
    with measure(interval=0.01) as m:
        block = np.frombuffer(buf, dtype=np.float64)
        block[:] = 1.0  # 64 MiB, touched
    assert m.seconds > 0
    assert m.peak_rss_mb - m.start_rss_mb > 40
    del block
    buf.close()


def test_write_results_and_plots(tmp_path):
    recs = [{"method": "x", "seed": s, "ndcg": 0.1 * (s + 1), "time_s": 2.0} for s in range(3)]
    recs.append({"method": "y", "seed": 0, "ndcg": 0.5, "time_s": 1.0})
    files = write_results(tmp_path, recs, ["method"], ["ndcg"], "demo", settings={"k": 1},
                          cost_metrics=["time_s"], notes="command: x")
    md = files.markdown.read_text()
    assert "| x | 3 | 0.2000 ± 0.1000 |" in md and "| y | 1 | 0.5000 |" in md and "## Cost" in md
    data = json.loads(files.json.read_text())
    assert data["summary"][0]["ndcg_mean"] == pytest.approx(0.2) and len(data["runs"]) == 4
    assert files.csv.read_text().splitlines()[0] == "method,n_runs,ndcg_mean,ndcg_std,time_s_mean,time_s_std"
    rows = summarize(recs, ["method"], ["ndcg"])
    png = plot_bars(tmp_path / "p.png", rows, ["ndcg"], "method")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows2 = summarize([{"m": "a", "budget": b, "acc": b / 10} for b in (1, 2, 4)], ["m", "budget"], ["acc"])
    png2 = plot_lines(tmp_path / "l.png", rows2, x="budget", metric="acc", series="m", log_x=True)
    assert png2.stat().st_size > 1000


def test_markdown_table_with_no_decimals_writes_small_values_in_scientific_notation():
    rows = summarize([{"m": "a", "s": 0.05}, {"m": "a", "s": 0.07}, {"m": "b", "s": 1234.4}], ["m"], ["s"])
    text = markdown_table(rows, ["s"], digits=0)
    assert "| a | 2 | 6e-02 ± 1e-02 |" in text and "| b | 1 | 1234 |" in text
