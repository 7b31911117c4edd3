"""The selection picture: drawn from scores.parquet columns, with clear errors on bad input."""

from __future__ import annotations

import numpy as np
import pytest

from tunesift.io.atomic import write_parquet
from tunesift.rec.plot import plot_selection, read_scores

PNG = b"\x89PNG\r\n\x1a\n"


def dealrec_columns(n: int = 200, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    influence, effort = rng.normal(size=n), rng.gamma(2.0, size=n)
    score = (influence - influence.min()) / np.ptp(influence) + 0.3 * (effort - effort.min()) / np.ptp(effort)
    stratum = np.minimum((score - score.min()) / np.ptp(score) * 10, 9).astype(np.int64)
    stratum[np.argsort(-score)[:20]] = -1  # hard-pruned
    selected = np.zeros(n, bool)
    selected[rng.choice(np.flatnonzero(stratum >= 0), size=30, replace=False)] = True
    return {"id": np.arange(n), "score": score, "selected": selected, "influence": influence, "effort": effort,
            "stratum": stratum}


def test_dealrec_picture_from_a_scores_file(tmp_path):
    columns = dealrec_columns()
    write_parquet(tmp_path / "scores.parquet", columns)
    read = read_scores(tmp_path)
    np.testing.assert_array_equal(read["stratum"], columns["stratum"])
    out = plot_selection(tmp_path, tmp_path / "pics" / "selection.png", title="t")
    assert out.read_bytes()[:8] == PNG


def test_baseline_picture_without_dealrec_columns(tmp_path):
    rng = np.random.default_rng(1)
    columns = {"score": rng.normal(size=50), "selected": np.arange(50) < 5}
    assert plot_selection(columns, tmp_path / "s.png").read_bytes()[:8] == PNG


@pytest.mark.parametrize("change, message", [
    ({"score": None}, r"lack the column\(s\) \['score'\]"),
    ({"selected": np.ones(3, bool)}, "must be non-empty columns of one length"),
    ({"score": np.full(200, np.nan)}, "non-finite"),
])
def test_bad_scores_are_clear_errors(tmp_path, change, message):
    columns = dealrec_columns()
    for key, value in change.items():
        if value is None:
            del columns[key]
        else:
            columns[key] = value
    with pytest.raises(ValueError, match=message):
        plot_selection(columns, tmp_path / "s.png")
    assert not (tmp_path / "s.png").exists()
    with pytest.raises(FileNotFoundError, match="no such scores file"):
        read_scores(tmp_path / "nowhere")
