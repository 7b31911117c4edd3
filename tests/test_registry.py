"""The registries: plug-in modules imported on first use, loudly; a plug-in registered from outside the
package reaches the CLI with no other edit; and an order that does not depend on import order."""

import sys
from dataclasses import dataclass

import numpy as np
import pytest

from tunesift.cli import main
from tunesift.registry import EXECUTORS, POOL_METHODS, REC_BACKBONES, REC_METHODS, WARMUP_EVALS, Registry


def test_a_plug_in_that_fails_to_import_fails_loudly_and_is_retried(tmp_path, monkeypatch):
    (tmp_path / "broken_plugin_mod.py").write_text("raise ImportError('a typo in the plug-in')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = Registry("thing", plugins=("broken_plugin_mod",))
    for _ in range(2):  # not a silently shorter list the second time
        with pytest.raises(ImportError, match="a typo in the plug-in"):
            registry.names()
    missing = Registry("thing", plugins=("tunesift.no_such_plugin",))
    with pytest.raises(ModuleNotFoundError, match="tunesift.no_such_plugin"):
        "x" in missing  # noqa: B015


def test_order_is_the_plug_in_list_whatever_was_imported_first(tmp_path, monkeypatch):
    for name in ("plug_b", "plug_a"):
        (tmp_path / f"{name}.py").write_text(
            "from test_registry_holder import R\n"
            f"@R.register({name!r})\nclass X:\n    pass\n")
    holder = type(sys)("test_registry_holder")
    holder.R = Registry("thing", plugins=("plug_a", "plug_b"))
    monkeypatch.setitem(sys.modules, "test_registry_holder", holder)
    monkeypatch.syspath_prepend(str(tmp_path))
    __import__("plug_b")  # imported before the registry loads: registered first
    holder.R.register("from-a-test")(type("Y", (), {}))
    assert holder.R.names() == ["plug_a", "plug_b", "from-a-test"]


def test_every_role_lists_its_plug_ins():
    assert POOL_METHODS.names() == ["random", "gotd", "dsir", "knn", "tsds"]
    assert {"dealrec", "random", "ccs"} <= set(REC_METHODS.names())
    assert REC_BACKBONES.names() == ["bigrec", "tiger"]
    assert EXECUTORS.names() == ["local", "ray"]
    assert WARMUP_EVALS.names() == ["finetune", "zero-shot"]


def test_a_pool_method_registered_from_a_test_shows_in_help_and_runs(tmp_path, capsys):
    from tunesift.pool.base import PoolMethod, Ranking, scores_from_order

    @POOL_METHODS.register("first-rows")
    @dataclass
    class FirstRows(PoolMethod):
        name = "first-rows"

        def rank(self, pool, target, ctx):
            order = np.arange(len(pool))
            return Ranking(scores=scores_from_order(order), order=order)

    try:
        with pytest.raises(SystemExit):
            main(["gotd", "--help"])
        assert "first-rows" in capsys.readouterr().out
        (tmp_path / "pool.jsonl").write_text("".join(f'{{"text": "row {i}"}}\n' for i in range(6)))
        (tmp_path / "target.jsonl").write_text('{"text": "t"}\n')
        out = tmp_path / "out"
        assert main(["gotd", "--pool", str(tmp_path / "pool.jsonl"), "--target", str(tmp_path / "target.jsonl"),
                     "--budget", "2", "--method", "first-rows", "--out", str(out), "--no-progress"]) == 0
        import json

        rows = [json.loads(r) for r in (out / "selected.jsonl").read_text().splitlines()]
        assert [r["text"] for r in rows] == ["row 0", "row 1"]
    finally:
        POOL_METHODS._items.pop("first-rows", None)
