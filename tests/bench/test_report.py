"""benchmarks/report.py: generated tables between markers, the verdict rule, the studies' tables against a
plain computation, and the flag reference of docs/usage.md being current."""

import json
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def report(repo_script):
    return repo_script("benchmarks/report.py")


def _page(root: Path, text: str) -> Path:
    (root / "docs").mkdir(parents=True, exist_ok=True)
    page = root / "docs" / "page.md"
    page.write_text(text)
    return page


class _Fake:
    """A study whose one table is a given string."""

    def __init__(self, text):
        self.text, self.name, self.title, self.digits = text, "fake", "Fake", 4

    def available(self):
        return True

    def tables(self):
        return {"fake/t": lambda: self.text}

    def findings(self):
        return []

    link = "[Fake](x.md)"


def test_blocks_are_rewritten_checked_and_nothing_else_is_touched(report, tmp_path, capsys):
    page = _page(tmp_path, "intro | keep\n<!-- report: fake/t -->\nold table\n<!-- /report -->\noutro\n")
    assert report.run(True, tmp_path, [_Fake("| new |\n")]) == 1
    assert "fake/t" in capsys.readouterr().err and "old table" in page.read_text()  # --check writes nothing
    assert report.run(False, tmp_path, [_Fake("| new |\n")]) == 0
    assert page.read_text() == "intro | keep\n<!-- report: fake/t -->\n| new |\n<!-- /report -->\noutro\n"
    assert report.run(True, tmp_path, [_Fake("| new |\n")]) == 0
    assert report.run(True, tmp_path, [_Fake("| newer |\n")]) == 1


def test_an_unknown_table_names_the_page(report, tmp_path):
    _page(tmp_path, "<!-- report: nothing/here -->\n<!-- /report -->\n")
    with pytest.raises(SystemExit, match="docs/page.md: no table 'nothing/here'"):
        report.run(True, tmp_path, [])


def _paired(diff, low, high, mde=0.001):
    from tunesift.bench.stats import PairedDifference

    return PairedDifference(diff, low, high, 0.0, 0.01, mde, 100, 3, 3, 0.95, 0.8, 1000)


def _seeds(diff, low, high, p):
    from tunesift.bench.stats import SeedPairedDifference

    return SeedPairedDifference(diff, low, high, 0.0, p, (0, 1, 2), (diff,) * 3, 0.95)


@pytest.mark.parametrize("examples,seeds,p,effect,verdict", [
    ((0.01, 0.005, 0.015), (0.01, 0.004, 0.016), 0.01, 0.002, "better"),
    ((-0.01, -0.015, -0.005), (-0.01, -0.016, -0.004), 0.03, 0.002, "worse"),
    ((0.01, 0.005, 0.015), (0.01, -0.01, 0.03), 0.40, 0.002, "cannot tell"),     # the two tests disagree
    ((0.0005, -0.001, 0.002), (0.0, -0.01, 0.01), 0.9, 0.003, "level"),         # excludes ±0.003
    ((0.0005, -0.001, 0.002), (0.0, -0.01, 0.01), 0.9, 0.0015, "cannot tell"),  # cannot exclude +0.0015
    ((0.01, 0.005, 0.015), None, None, 0.002, "cannot tell"),                   # one seed
    ((0.01, 0.005, 0.015), (-0.01, -0.016, -0.004), 0.01, 0.002, "cannot tell"),  # opposite signs
])
def test_the_verdict_rule(report, examples, seeds, p, effect, verdict):
    f = report.Finding("s", "a − b", "m", _paired(*examples), _seeds(*seeds, p) if seeds else None, p, effect)
    assert f.verdict == verdict


def _rec_folder(root: Path) -> dict:
    """A packed rec bench: 3 seeds of random, dealrec and full on 60 test users."""
    root.mkdir(parents=True)
    (root / "bench.json").write_text(json.dumps({"data": {"source": "/x", "fingerprint": "f", "name": "toy",
                                                          "users": 100, "items": 50},
                                                 "backbone": "tiger", "scale": {"name": "tiny", "budget": 8}}))
    rng = np.random.default_rng(0)
    values = {}
    for method, shift in (("random", 0.0), ("dealrec", 0.2), ("full", 0.1)):
        for seed in range(3):
            run = root / "runs" / f"method={method},seed={seed}"
            run.mkdir(parents=True)
            arrays = {m: (rng.uniform(size=60) < 0.3 + shift).astype(float) for m in
                      ("recall@10", "recall@20", "ndcg@10", "ndcg@20")}
            values[method, seed] = arrays
            np.savez(run / "per_user.npz", **arrays)
            (run / "result.json").write_text(json.dumps({"method": method, "seed": seed, "finetune_s": 10.0 + seed,
                                                         "best_step": 50, "train_steps": 60, "stopped_early": True,
                                                         "distinct_top1": 7}))
    np.savez(root / "references.npz", **{f"popular:{m}": np.zeros(60) for m in ("recall@10", "recall@20", "ndcg@10",
                                                                                 "ndcg@20")})
    return values


def test_rec_study_tables_match_a_plain_computation(report, tmp_path, monkeypatch):
    values = _rec_folder(tmp_path / "results" / "toy")
    monkeypatch.setattr(report, "RESULTS", tmp_path / "results")
    study = report.RecStudy("toy", "Toy", order=["random", "dealrec", "full"], effect=0.1,
                            comparisons=[("dealrec", "random")])
    summary = study.summary()
    mean = np.mean([values["dealrec", s]["recall@10"] for s in range(3)])
    row = next(line for line in summary.splitlines() if line.startswith("| dealrec |"))
    assert f"| {mean:.4f} [" in row and "popular (train)" in summary
    diff = mean - np.mean([values["random", s]["recall@10"] for s in range(3)])
    (finding,) = study.findings()
    assert finding.over_examples.diff == pytest.approx(diff, abs=1e-12)
    from scipy.stats import ttest_rel

    per_seed = lambda m: [values[m, s]["recall@10"].mean() for s in range(3)]  # noqa: E731
    assert finding.over_seeds.p_value == pytest.approx(ttest_rel(per_seed("dealrec"), per_seed("random")).pvalue)
    assert "| dealrec | 50/60, 50/60, 50/60 | yes, yes, yes | 7, 7, 7 |" in study.training()
    assert f"{diff:+.4f}" in study.differences()


def test_gotd_study_removes_the_label_prior_and_pairs_the_one_none_run_with_every_seed(report, repo_script, tmp_path,
                                                                                      monkeypatch):
    prior = repo_script("benchmarks/zeroshot_prior.py")
    root = tmp_path / "results" / "zs"
    root.mkdir(parents=True)
    (root / "bench.json").write_text(json.dumps({"pool_fingerprint": "p", "pool_rows": 9, "eval": "zero-shot",
                                                 "task_info": {"name": "t", "metric": "accuracy"}}))
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 40)
    scores = {}
    for method, budget, seed in [("none", 0, 0)] + [(m, 4, s) for m in ("random", "gotd") for s in (0, 1, 2)]:
        run = root / "runs" / f"method={method},budget={budget},seed={seed}"
        run.mkdir(parents=True)
        s = rng.normal(size=(40, 2)) + np.array([2.0, 0.0]) + (labels[:, None] == np.arange(2)) * (method == "gotd")
        scores[method, seed] = s
        pred = s.argmax(1)
        np.savez(run / "per_example.npz", correct=(pred == labels).astype(np.uint8), predicted=pred, labels=labels,
                 label_scores=s)
        (run / "result.json").write_text(json.dumps({"method": method, "budget": budget, "seed": seed}))
    monkeypatch.setattr(report, "RESULTS", tmp_path / "results")
    study = report.GotdStudy("zs", "ZS", order=["none", "random", "gotd"], effect=0.01,
                             comparisons=[("gotd", "none", 4)])
    record = next(r for r in study.records if r["method"] == "gotd" and r["seed"] == 1)
    assert np.array_equal(study.correct(record, calibrated=True), prior.prior_corrected(scores["gotd", 1]) == labels)
    (finding,) = study.findings()
    none = ((scores["none", 0].argmax(1) == labels).mean())
    expected = [(scores["gotd", s].argmax(1) == labels).mean() - none for s in (0, 1, 2)]
    assert finding.over_seeds.seeds == (0, 1, 2)
    assert np.allclose(finding.over_seeds.differences, expected)
    assert "accuracy [95% CI]" in study.budget_table(4, calibrated=True)


def test_the_flag_reference_lists_every_flag_of_every_command(report):
    import argparse

    for command in report.COMMANDS:
        parser = report.command_parser(command)
        table = report.flag_table(command)
        for action in parser._actions:
            if action.option_strings and not isinstance(action, argparse._HelpAction):
                assert f"`{action.option_strings[0]}`" in table, (command, action.option_strings)


def test_the_flag_reference_in_docs_usage_is_current(report):
    """The flags of docs/usage.md are what the parser says (CI also runs `report.py --check` on every table)."""
    text = (REPO / "docs" / "usage.md").read_text(encoding="utf-8")
    tables = {f"flags/{c.replace(' ', '-')}": (lambda c=c: report.flag_table(c)) for c in report.COMMANDS}
    names = [m.group("name") for m in report.BLOCK.finditer(text)]
    assert sorted(names) == sorted(tables)
    assert report.render(text, tables, "docs/usage.md", {}) == text, "run python benchmarks/report.py"
