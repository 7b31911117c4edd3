import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from recfixtures import build_tiny_lm, tiny_recdata, write_dealrec_folder

import tunesift.rec  # noqa: F401  (registers the methods)
from tunesift.cli import main
from tunesift.rec import select_samples
from tunesift.registry import REC_METHODS

torch.set_num_threads(1)

FAST = dict(surrogate_epochs=2, surrogate_batch_size=8, hidden_size=16, max_len=8, lissa_depth=20,
            effort_batch_size=4, max_tokens=200)


@pytest.fixture(scope="module")
def lm_path(tmp_path_factory):
    return str(build_tiny_lm(tmp_path_factory.mktemp("lm")))


@pytest.fixture(scope="module")
def data():
    return tiny_recdata(n_users=24, n_items=20, seed=0)


@pytest.mark.parametrize("method", REC_METHODS.names())
def test_every_method_picks_exactly_budget(method, data, lm_path, tmp_path):
    result = select_samples(data, 6, method=method, seed=1, out_dir=tmp_path, llm=lm_path, device="cpu",
                            progress=False, **FAST)
    assert len(result.users) == 6 and len(set(result.users)) == 6
    assert result.pool.tolist() == list(range(24))  # every tiny user has a training item
    assert [r["user"] for r in result.rows] == result.users
    assert [data.users[i] for i in result.indices] == result.users
    n = result.pool.size
    assert result.ranking.scores.shape == (n,)
    table = pq.read_table(tmp_path / "scores.parquet").to_pydict()
    assert {"id", "score", "rank", "selected", "influence", "effort", "stratum"} <= set(table)
    assert sum(table["selected"]) == 6 and sorted(table["rank"]) == list(range(1, n + 1))
    chosen = {i for i, sel in zip(table["id"], table["selected"]) if sel}
    assert chosen == set(result.users)
    uses_effort = REC_METHODS.get(method).uses_effort
    assert np.isfinite(table["effort"]).all() == uses_effort
    rows = [json.loads(x) for x in (tmp_path / "selected.jsonl").read_text().splitlines()]
    assert [r["user"] for r in rows] == result.users
    assert all(r["prompt"].endswith("### Response:\n") and r["response"] for r in rows)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["method"] == method and manifest["seed"] == 1 and "total" in manifest["timings_s"]
    if method not in ("random", "dealrec-no-influence"):  # every other method reads the surrogate
        assert "surrogate" in manifest["timings_s"]


def test_rerun_uses_cache_and_fresh_runs_reproduce(data, lm_path, tmp_path):
    first = select_samples(data, 5, "dealrec", seed=2, out_dir=tmp_path / "a", llm=lm_path, device="cpu",
                           progress=False, **FAST)
    again = select_samples(data, 5, "dealrec", seed=2, out_dir=tmp_path / "a", llm=lm_path, device="cpu",
                           progress=False, **FAST)
    stages = again.manifest["stages"]
    assert stages["surrogate"]["cached"] and stages["influence"]["cached"] and stages["effort"]["cached"]
    assert not first.manifest["stages"]["effort"]["cached"]
    fresh = select_samples(data, 5, "dealrec", seed=2, out_dir=tmp_path / "b", llm=lm_path, device="cpu",
                           progress=False, **FAST)
    for other in (again, fresh):
        assert other.users == first.users
        np.testing.assert_array_equal(other.ranking.columns["influence"], first.ranking.columns["influence"])
        np.testing.assert_allclose(other.ranking.columns["effort"], first.ranking.columns["effort"], rtol=1e-6)
    info = first.manifest["stages"]["influence"]
    assert info["parameters"] == ["blocks.1.attention.output.weight"] and "lissa" in info
    assert first.manifest["method_info"]["lambda"] == 0.3  # DEALRec's λ for Games
    # a changed setting invalidates only what depends on it
    changed = select_samples(data, 5, "dealrec", seed=2, out_dir=tmp_path / "a", llm=lm_path, device="cpu",
                             progress=False, **{**FAST, "lissa_depth": 30})
    st = changed.manifest["stages"]
    assert st["surrogate"]["cached"] and not st["influence"]["cached"] and st["effort"]["cached"]
    # the first settings' influence stays in its own slot beside the new one: going back recomputes nothing
    back = select_samples(data, 5, "dealrec", seed=2, out_dir=tmp_path / "a", llm=lm_path, device="cpu",
                          progress=False, **FAST)
    assert all(back.manifest["stages"][s]["cached"] for s in ("surrogate", "influence", "effort"))
    np.testing.assert_array_equal(back.ranking.columns["influence"], first.ranking.columns["influence"])
    # other candidates (max_users): the surrogate (trained on every user) is reused, the scores are not
    subset = select_samples(data, 5, "dealrec", seed=2, out_dir=tmp_path / "a", llm=lm_path, device="cpu",
                            progress=False, max_users=12, **FAST)
    st = subset.manifest["stages"]
    assert st["surrogate"]["cached"] and not st["influence"]["cached"] and not st["effort"]["cached"]
    assert subset.pool.size == 12


def test_effort_resumes_after_a_crash(data, lm_path, tmp_path, monkeypatch):
    import tunesift.rec.effort as effort_module

    real = effort_module.effort_scores
    calls = []

    def crashing(*args, **kwargs):
        calls.append(len(args[2]))
        if len(calls) == 2:
            raise RuntimeError("simulated crash")
        return real(*args, **kwargs)

    monkeypatch.setattr(effort_module, "effort_scores", crashing)
    settings = {**FAST, "effort_chunk": 10}
    with pytest.raises(RuntimeError, match="simulated"):
        select_samples(data, 5, "greedy", out_dir=tmp_path, llm=lm_path, device="cpu", progress=False, **settings)
    calls.clear()
    monkeypatch.setattr(effort_module, "effort_scores", lambda *a, **k: (calls.append(len(a[2])), real(*a, **k))[1])
    resumed = select_samples(data, 5, "greedy", out_dir=tmp_path, llm=lm_path, device="cpu", progress=False,
                             **settings)
    assert calls == [10, 4]  # the first chunk of 10 came from disk
    clean = select_samples(data, 5, "greedy", out_dir=tmp_path / "clean", llm=lm_path, device="cpu",
                           progress=False, **settings)
    np.testing.assert_allclose(resumed.ranking.columns["effort"], clean.ranking.columns["effort"], rtol=1e-6)


def test_api_errors(data):
    with pytest.raises(ValueError, match="budget must be in 1..24"):
        select_samples(data, 25, "random", progress=False)
    with pytest.raises(TypeError, match="unknown setting"):
        select_samples(data, 2, "random", progress=False, lisa_depth=3)
    with pytest.raises(ValueError, match="unknown rec method"):
        select_samples(data, 2, "nope", progress=False)
    with pytest.raises(ValueError, match="`influence_solver`"):
        select_samples(data, 2, "random", progress=False, influence_solver="cg")
    with pytest.raises(ValueError, match="`llm_dtype` must be one of float32, bfloat16, float16, got 'fp8'"):
        select_samples(data, 2, "random", progress=False, llm_dtype="fp8")


def test_llm_dtype_reaches_the_model_and_stays_close_to_float32(data, lm_path, tmp_path):
    """bfloat16 effort: the LLM really runs in bf16 (own cache entry), scores close to float32's."""
    from tunesift.output import Timer
    from tunesift.rec.bigrec import BigRec
    from tunesift.rec.pipeline import RecContext, RecSettings
    from tunesift.rec.stages import StageCache

    efforts = {}
    for dtype in ("float32", "bfloat16"):
        settings = RecSettings.from_flat("bigrec", **{**FAST, "llm": lm_path, "llm_dtype": dtype})
        backbone = BigRec(settings.backbone, device="cpu", progress=False)
        ctx = RecContext(data, np.arange(24), 4, 0, settings, backbone, StageCache(tmp_path / "cache"), Timer(),
                         "cpu", progress=False)
        efforts[dtype] = ctx.effort()
        model, _ = backbone.effort_model
        assert {p.dtype for n, p in model.named_parameters() if "lora" not in n} == {getattr(torch, dtype)}
        assert ctx.stage_info["effort"]["dtype"] == dtype and not ctx.stage_info["effort"]["cached"]
    assert not np.array_equal(efforts["float32"], efforts["bfloat16"])
    np.testing.assert_allclose(efforts["bfloat16"], efforts["float32"], rtol=0.1)


def test_cli_end_to_end(tmp_path, lm_path, capsys):
    folder = tmp_path / "games"
    write_dealrec_folder(folder, n_users=24, n_items=20, seed=5)
    out = tmp_path / "out"
    args = ["dealrec", "--data", str(folder), "--budget", "5", "--out", str(out), "--llm", lm_path,
            "--surrogate-epochs", "2", "--surrogate-batch-size", "8", "--hidden-size", "16", "--max-len", "8",
            "--lissa-depth", "20", "--effort-batch-size", "4", "--strata", "4", "--lambda", "0.5",
            "--seed", "3", "--device", "cpu", "--no-progress"]
    assert main(args) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["method_settings"] == {"lam": 0.5, "strata": 4, "hard_prune": 0.1}
    assert manifest["data"]["counts"]["users"] == 24 and manifest["data"]["fingerprint"]
    assert {"surrogate", "influence", "effort", "samples", "select", "total"} <= set(manifest["timings_s"])
    assert "converged" in manifest["stages"]["influence"]["lissa"]
    table = pq.read_table(out / "scores.parquet").to_pydict()
    assert sum(table["selected"]) == 5 and max(table["stratum"]) <= 3
    rows = [json.loads(x) for x in (out / "selected.jsonl").read_text().splitlines()]
    assert len(rows) == 5 and {"user", "prompt", "response"} <= set(rows[0])
    assert (out / "selection.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # same command, other method, reusing the cached surrogate; a flag of another method is refused
    ccs = [*args[:6], str(out / "ccs"), *args[7:], "--method", "ccs", "--no-plot"]
    assert main(ccs) == 2
    assert "--lambda applies to dealrec" in capsys.readouterr().err
    i = ccs.index("--lambda")
    assert main(ccs[:i] + ccs[i + 2:]) == 0
    assert not (out / "ccs" / "selection.png").exists()
    # bad input: a clear error, exit code 2
    assert main(["dealrec", "--data", str(folder), "--budget", "99", "--out", str(out), "--method", "random",
                 "--no-progress"]) == 2
    assert "budget must be in 1..24" in capsys.readouterr().err
    assert main([*args, "--threads", "0"]) == 2
    assert "--threads must be at least 1, got 0" in capsys.readouterr().err
    assert main([*args, "--llm-dtype", "half"]) == 2
    assert "`llm_dtype` must be one of float32, bfloat16, float16, got 'half'" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["grand", "el2n"])
def test_early_scores_saved_chunk_by_chunk_match_one_pass_and_resume(data, tmp_path, monkeypatch, kind):
    import tunesift.rec.influence as influence_module
    import tunesift.rec.methods as methods_module
    from tunesift.output import Timer
    from tunesift.rec.pipeline import RecContext, RecSettings
    from tunesift.rec.stages import StageCache
    from tunesift.rec.bigrec import BigRec

    def scores(chunk, cache):
        settings = RecSettings.from_flat("bigrec", **FAST, early_chunk=chunk)
        ctx = RecContext(data, np.arange(24), 4, 0, settings, BigRec(settings.backbone, device="cpu", progress=False),
                         StageCache(cache), Timer(), "cpu", progress=False)
        return ctx.early_scores(kind)

    whole = scores(10_000, tmp_path / "one")
    module, fn = (influence_module, "per_sample_gradient_norms") if kind == "grand" else (methods_module, "el2n_scores")
    real, calls = getattr(module, fn), []

    def dying(model, batch, *args, **kwargs):
        calls.append(int(batch[0].shape[0]))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(model, batch, *args, **kwargs)

    monkeypatch.setattr(module, fn, dying)
    with pytest.raises(KeyboardInterrupt):
        scores(8, tmp_path / "chunked")
    assert calls == [8, 8, 8]
    calls.clear()
    resumed = scores(8, tmp_path / "chunked")
    assert calls == [8]  # the first two chunks came from disk
    np.testing.assert_allclose(resumed, whole, rtol=1e-6, atol=1e-9)
    assert list((tmp_path / "chunked" / kind).glob("*.npy"))
    assert not list((tmp_path / "chunked").glob("*/*.parts-*"))  # the parts go once the result is saved


@pytest.mark.parametrize("stage", ["grand", "el2n", "influence", "effort"])
def test_a_cached_stage_reads_back_in_candidate_order(data, lm_path, tmp_path, stage):
    # regression: GraNd / EL2N are computed over length-sorted rows; their cache once held that order,
    # so a second method on the same seed (CCS after EL2N) read scores of other users
    from tunesift.output import Timer
    from tunesift.rec.bigrec import BigRec
    from tunesift.rec.pipeline import RecContext, RecSettings
    from tunesift.rec.stages import StageCache

    def run(cache):
        settings = RecSettings.from_flat("bigrec", **FAST, llm=lm_path, early_chunk=8, effort_chunk=8)
        ctx = RecContext(data, np.arange(24), 4, 0, settings, BigRec(settings.backbone, device="cpu", progress=False),
                         StageCache(cache), Timer(), "cpu", progress=False)
        return ctx.run(stage), ctx.stage_info[stage]["cached"]

    computed, cached = run(tmp_path)
    assert not cached
    loaded, cached = run(tmp_path)
    assert cached
    np.testing.assert_array_equal(loaded, computed)
    uncached, _ = run(None)
    np.testing.assert_allclose(uncached, computed, rtol=1e-6, atol=1e-9)


def test_influence_saved_piece_by_piece_resumes_with_the_same_numbers(data, tmp_path, monkeypatch):
    from tunesift.output import Timer
    from tunesift.rec.bigrec import BigRec
    from tunesift.rec.influence import InfluenceParts
    from tunesift.rec.pipeline import RecContext, RecSettings
    from tunesift.rec.stages import StageCache

    def influence(chunk, cache):
        settings = RecSettings.from_flat("bigrec", **FAST, influence_chunk=chunk)
        ctx = RecContext(data, np.arange(24), 4, 0, settings, BigRec(settings.backbone, device="cpu", progress=False),
                         StageCache(cache), Timer(), "cpu", progress=False)
        return ctx.influence(), ctx.stage_info["influence"]

    whole, info = influence(10_000, tmp_path / "one")
    assert info["chunk"] == 24 and info["lissa"]["converged"] in (True, False) and info["path"] == "positionwise"
    unkilled, _ = influence(5, tmp_path / "unkilled")
    np.testing.assert_allclose(unkilled, whole, rtol=1e-4, atol=1e-9)  # 5 chunks: sums per chunk

    calls = {"gradient_sum": 0, "scores": 0, "inverse_hvp": 0}
    real = {name: getattr(InfluenceParts, name) for name in calls}

    def counting(name, die_at=None):
        def wrapped(self, *args):
            calls[name] += 1
            if calls[name] == die_at:
                raise KeyboardInterrupt
            return real[name](self, *args)
        return wrapped

    for name in calls:
        monkeypatch.setattr(InfluenceParts, name, counting(name, die_at=3 if name == "scores" else None))
    with pytest.raises(KeyboardInterrupt):
        influence(5, tmp_path / "killed")
    assert calls == {"gradient_sum": 5, "inverse_hvp": 1, "scores": 3}
    for name in calls:
        calls[name] = 0
        monkeypatch.setattr(InfluenceParts, name, counting(name))
    resumed, info = influence(5, tmp_path / "killed")
    assert calls == {"gradient_sum": 0, "inverse_hvp": 0, "scores": 3}  # H⁻¹v and two score chunks from disk
    assert info["ihvp_cached"] and "lissa" in info
    np.testing.assert_array_equal(resumed, unkilled)
    assert list((tmp_path / "killed" / "influence").glob("*.npy"))
    assert not list((tmp_path / "killed").glob("*/*.parts-*"))


def test_stage_cache_keeps_one_slot_per_key_and_a_half_written_slot_never_counts(tmp_path, monkeypatch):
    import tunesift.rec.stages as stages

    cache = stages.StageCache(tmp_path)
    a, b = np.arange(4.0), -np.arange(4.0)
    cache.save_array("effort", "key-a", a, {"seed": 0})
    cache.save_array("effort", "key-b", b, {"seed": 1})
    np.testing.assert_array_equal(cache.load_array("effort", "key-a"), a)  # b did not replace a
    np.testing.assert_array_equal(cache.load_array("effort", "key-b"), b)
    assert cache.info("effort", "key-a") == {"seed": 0} and cache.info("effort", "key-b") == {"seed": 1}
    assert cache.load_array("effort", "key-c") is None and cache.info("effort", "key-c") == {}

    # a crash after the data file, before its record: the new slot does not count, the old ones still
    # read their own data (one shared slot per stage once served the new data under the old key)
    def crash(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(stages, "write_json", crash)
    with pytest.raises(KeyboardInterrupt):
        cache.save_array("effort", "key-c", np.ones(4))
    assert (tmp_path / "effort" / "key-c.npy").exists() and cache.load_array("effort", "key-c") is None
    np.testing.assert_array_equal(cache.load_array("effort", "key-a"), a)
    # a record whose key is not its file's name (copied by hand) is not trusted either
    (tmp_path / "effort" / "key-d.json").write_text('{"key": "key-a", "info": {}}')
    np.save(tmp_path / "effort" / "key-d.npy", b)
    assert cache.load_array("effort", "key-d") is None
    assert stages.StageCache(None).load_array("effort", "key-a") is None


# -- a user's own interaction table (issue 36) --------------------------------------------------------


def _table(path, users=12):
    """An interaction table with the user's own string ids and titles; every user's history starts at t = 0."""
    import csv

    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["user", "item", "timestamp", "title"])
        for u in range(users):
            for t in range(4 + u % 3):
                item = (5 * u + 3 * t) % 17
                w.writerow([f"user-{u}", f"i{1000 + item}", t, f"Game {item}"])
    return path


def test_selected_rows_carry_the_tables_own_item_ids_and_titles(tmp_path, lm_path):
    from tunesift.rec.data import load_rec_data

    data = load_rec_data(_table(tmp_path / "interactions.csv"))
    result = select_samples(data, 4, "random", seed=0, out_dir=tmp_path / "out", llm=lm_path, device="cpu",
                            progress=False, **FAST)
    rows = [json.loads(x) for x in (tmp_path / "out" / "selected.jsonl").read_text().splitlines()]
    own = {f"i{1000 + k}" for k in range(17)}
    for row in rows:
        assert row["user"].startswith("user-")
        assert row["history"] and set(row["history"]) <= own and set(row["target_items"]) <= own
        assert row["targets"] == [f"Game {int(i[1:]) - 1000}" for i in row["target_items"]]
    table = pq.read_table(tmp_path / "out" / "scores.parquet").to_pydict()
    assert set(table["id"]) == set(data.users) and all(u.startswith("user-") for u in table["id"])
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["data"]["split"] == "leave-one-out" and manifest["data"]["name"] == "items"
    assert result.manifest == manifest  # the in-memory manifest is the written one


def test_tiger_rows_carry_the_tables_own_item_ids():
    from types import SimpleNamespace

    from tunesift.rec.tiger.backbone import Tiger

    data = tiny_recdata(n_users=3, n_items=5)
    data.item_ids = [None, "a", "b", "c", "d", "e"]
    backbone = SimpleNamespace(tokens=np.arange(6 * 3).reshape(6, 3))
    rows = Tiger.sample_rows(backbone, data, [0, 2])
    for row, u in zip(rows, [0, 2]):
        assert row["train_items"] == [data.item_ids[i] for i in data.train[u]]
        assert row["titles"] == [data.titles[i] for i in data.train[u]]


def test_score_says_the_order_and_the_methods_own_score_has_its_column(data, lm_path, tmp_path):
    select_samples(data, 6, "dealrec", seed=1, out_dir=tmp_path, llm=lm_path, device="cpu", progress=False, **FAST)
    table = pq.read_table(tmp_path / "scores.parquet").to_pydict()
    by_rank = np.argsort(table["rank"])
    assert np.all(np.diff(np.asarray(table["score"])[by_rank]) < 0)  # higher score = picked earlier, always
    combined = np.asarray(table["method_score"])
    picked = np.asarray(table["selected"])
    assert combined[~picked].max() > combined[picked].min()  # strata: the picks are not the top combined scores


def test_lambda_and_wording_come_from_the_data_set_never_from_a_file_name(tmp_path, caplog):
    from tunesift.rec.cli import dataset_defaults
    from tunesift.rec.data import load_rec_data
    from tunesift.rec.methods import DealRec

    table = load_rec_data(_table(tmp_path / "games.csv"))  # a file named like a data set is still a table
    assert table.name == "items"
    line = dataset_defaults(table, DealRec(), "bigrec", None)
    assert "data set 'items' (a table names no data set)" in line and "λ 0.5" in line and "wording 'items'" in line
    write_dealrec_folder(tmp_path / "games")
    folder = load_rec_data(tmp_path / "games")
    assert "data set 'games' (the DEALRec folder's name)" in dataset_defaults(folder, DealRec(), "bigrec", None)
    assert "λ 0.3" in dataset_defaults(folder, DealRec(), "tiger", None)
    assert "λ 0.7 (--lambda)" in dataset_defaults(folder, DealRec(lam=0.7), "tiger", None)
    assert "wording" not in dataset_defaults(folder, DealRec(), "tiger", None)
    named = load_rec_data(_table(tmp_path / "t.csv"), name="book")
    assert "data set 'book' (--name)" in dataset_defaults(named, DealRec(), "bigrec", "book")


def test_messages_name_the_real_cause(tmp_path, lm_path, capsys):
    path = _table(tmp_path / "interactions.csv", users=12)
    base = ["dealrec", "--data", str(path), "--llm", lm_path, "--device", "cpu", "--no-progress", "--no-plot"]
    assert main(base + ["--budget", "8", "--max-users", "5", "--out", str(tmp_path / "a")]) == 2
    assert "users drawn by --max-users 5 from the 12 with a training item" in capsys.readouterr().err
    assert main(base + ["--budget", "2", "--method", "random", "--lambda", "0.3", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "--lambda applies to dealrec, greedy only, and this command does not run any of them" in err
    assert "surrogate" not in err
    with pytest.raises(SystemExit) as exit_:
        main(["gotd", "--pool", str(path), "--target", str(path), "--budget", "1", "--out", str(tmp_path / "c"),
              "--lambda", "0.3"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: tunesift gotd") and "--lambda is a flag of `tunesift dealrec`" in err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


def test_a_cached_rerun_says_the_surrogate_was_read_not_trained(data, lm_path, tmp_path, caplog):
    with caplog.at_level("INFO", logger="tunesift"):
        select_samples(data, 4, "dealrec", seed=3, out_dir=tmp_path, llm=lm_path, device="cpu", progress=False, **FAST)
    assert "surrogate trained: best epoch" in caplog.text
    caplog.clear()
    with caplog.at_level("INFO", logger="tunesift"):
        select_samples(data, 4, "dealrec", seed=3, out_dir=tmp_path, llm=lm_path, device="cpu", progress=False, **FAST)
    assert "surrogate read from the cache: it was trained to best epoch" in caplog.text
    assert "surrogate trained" not in caplog.text


def test_the_api_takes_threads_and_our_calls_raise_no_deprecation_warning(data, lm_path, tmp_path):
    import warnings

    before = torch.get_num_threads()
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        warnings.simplefilter("error", DeprecationWarning)
        result = select_samples(data, 4, "dealrec", seed=4, llm=lm_path, device="cpu", progress=False, threads=1,
                                **FAST)
    assert result.manifest["versions"]["torch_threads"] == "1" and torch.get_num_threads() == before
    assert {"versions", "n_examples", "budget", "command"} <= set(result.manifest)
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        select_samples(data, 4, "random", threads=0, llm=lm_path, progress=False)
