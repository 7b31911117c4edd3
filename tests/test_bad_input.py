"""Bad input through the CLI: a non-zero exit, one message naming the file/line/flag, no traceback, nothing written."""

import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "rec"))
from recfixtures import write_dealrec_folder  # noqa: E402

from tunesift.cli import main  # noqa: E402

BAD = b"caf\xe9 au lait"  # latin-1, not UTF-8


def _pool(tmp_path, kind):
    good = [{"text": f"text {i}"} for i in range(6)]
    if kind == "jsonl":
        p = tmp_path / "pool.jsonl"
        p.write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in good[:3]) + b'{"text": "' + BAD + b'"}\n')
        return p, "pool.jsonl:4"
    sep = "," if kind == "csv" else "\t"
    p = tmp_path / f"pool.{kind}"
    p.write_bytes(b"text\n" + b"".join(r["text"].encode() + b"\n" for r in good[:2]) + BAD + sep.encode() + b"\n")
    return p, f"pool.{kind}:4"


@pytest.mark.parametrize("kind", ["jsonl", "csv", "tsv"])
def test_undecodable_pool_file_names_the_file_and_line(tmp_path, capsys, kind):
    pool, where = _pool(tmp_path, kind)
    target = tmp_path / "target.jsonl"
    target.write_text('{"text": "t"}\n')
    out = tmp_path / "out"
    assert main(["gotd", "--pool", str(pool), "--target", str(target), "--budget", "2", "--out", str(out),
                 "--method", "random", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert where in err and "not UTF-8 text (byte 0xe9" in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("victim,where", [("sequential_train.txt", "sequential_train.txt:3"),
                                          ("sequential_test.txt", "sequential_test.txt:2"),
                                          ("items.jsonl", "items.jsonl:5")])
def test_undecodable_dealrec_files_name_the_file_and_line(tmp_path, capsys, victim, where):
    folder = tmp_path / "games"
    write_dealrec_folder(folder, n_users=6, n_items=8)
    lines = (folder / victim).read_bytes().split(b"\n")
    row = int(where.rsplit(":", 1)[1]) - 1
    lines[row] = lines[row][:-1] + BAD if victim != "items.jsonl" else b'{"item_id": 5, "title": "' + BAD + b'"}'
    (folder / victim).write_bytes(b"\n".join(lines))
    out = tmp_path / "out"
    assert main(["dealrec", "--data", str(folder), "--budget", "2", "--out", str(out), "--method", "random",
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert where in err and "not UTF-8 text" in err and "Traceback" not in err
    assert not out.exists()


def test_undecodable_recbole_file_names_the_file_and_line(tmp_path, capsys):
    folder = tmp_path / "rb"
    folder.mkdir()
    (folder / "x.inter").write_bytes(b"user_id:token\titem_id:token\ttimestamp:float\nu1\ti1\t1\nu1\ti" + BAD + b"\t2\n")
    out = tmp_path / "out"
    assert main(["dealrec", "--data", str(folder), "--budget", "1", "--out", str(out), "--method", "random",
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "x.inter:3" in err and "not UTF-8 text" in err and not out.exists()


def test_a_model_folder_that_is_not_there_leaves_nothing_behind(tmp_path, capsys):
    folder = tmp_path / "games"
    write_dealrec_folder(folder, n_users=6, n_items=8)
    out = tmp_path / "out"
    assert main(["dealrec", "--data", str(folder), "--budget", "2", "--out", str(out), "--llm",
                 str(tmp_path / "no-such-llm"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "no-such-llm: no such model folder" in err and "Traceback" not in err
    assert not out.exists()  # no OUT/cache either
    assert main(["dealrec", "--data", str(folder), "--budget", "2", "--out", str(out), "--backbone", "tiger",
                 "--tiger-item-embedder", str(tmp_path / "no-such-encoder"), "--no-progress"]) == 2
    assert "no-such-encoder: no such model folder" in capsys.readouterr().err
    assert not out.exists()


def _files(tmp_path):
    (tmp_path / "ok.jsonl").write_text('{"text": "a"}\n{"text": "b"}\n')
    (tmp_path / "broken.jsonl").write_text('{"text": "a"}\n{"text": "b"}\n{"text": "c"\n')
    (tmp_path / "nofield.jsonl").write_text('{"text": "a"}\n{"body": "b"}\n')
    write_dealrec_folder(tmp_path / "games", n_users=6, n_items=8)


GOTD = ["gotd", "--target", "{tmp}/ok.jsonl", "--budget", "1", "--no-progress"]
DEALREC = ["dealrec", "--data", "{tmp}/games", "--budget", "2", "--no-progress"]


@pytest.mark.parametrize("argv,message", [
    pytest.param([*GOTD, "--pool", "{tmp}/broken.jsonl", "--method", "random"],
                 "broken.jsonl:3: invalid JSON", id="malformed-jsonl-line"),
    pytest.param([*GOTD, "--pool", "{tmp}/nofield.jsonl", "--method", "random"],
                 "nofield.jsonl:line 2: no field 'text'", id="missing-text-field"),
    pytest.param(["gotd", "--pool", "{tmp}/ok.jsonl", "--target", "{tmp}/nofield.jsonl", "--budget", "1",
                  "--method", "random", "--no-progress"],
                 "choose one with --target-text-field", id="missing-target-text-field"),
    pytest.param([*GOTD, "--pool", "{tmp}/ok.jsonl", "--domain-field", "text", "--domains-keep", "0"],
                 "`domains_keep` must be at least 1", id="domains-keep-0-keeps-nothing"),
    pytest.param([*GOTD, "--pool", "{tmp}/nofield.jsonl", "--method", "random"],
                 "choose one with --text-field", id="missing-pool-text-field-names-the-flag"),
    pytest.param([*GOTD, "--pool", "{tmp}/missing.jsonl", "--method", "random"],
                 "missing.jsonl: no such file or folder", id="missing-input-file"),
    pytest.param([*GOTD[:-3], "--budget", "5", "--pool", "{tmp}/ok.jsonl", "--method", "random"],
                 "budget must be in 1..2", id="budget-larger-than-pool"),
    pytest.param([*GOTD, "--pool", "{tmp}/ok.jsonl", "--embedder", "{tmp}/no-encoder"],
                 "no-encoder: no such model folder", id="missing-embedder"),
    pytest.param([*GOTD, "--pool", "{tmp}/ok.jsonl", "--method", "random", "--epsilon", "0.1"],
                 "--epsilon applies to gotd only", id="flag-of-another-pool-method"),
    pytest.param([*DEALREC, "--method", "random", "--lambda", "0.3"],
                 "--lambda applies to dealrec, greedy only", id="flag-of-another-rec-method"),
    pytest.param([*DEALREC, "--method", "random", "--tiger-rqvae-levels", "2"],
                 "--tiger-rqvae-levels applies to tiger only", id="flag-of-another-backbone"),
    pytest.param(["dealrec", "--data", "{tmp}/no-data", "--budget", "2"],
                 "no-data: no such file or folder", id="missing-rec-data"),
    pytest.param(["bench", "gotd", "--scale", "tiny", "--model", "{tmp}/no-model", "--methods", "random",
                  "--budgets", "50", "--seeds", "1", "--no-progress"],
                 "no-model: no such model folder", id="missing-bench-model"),
])
def test_bad_input_exits_2_naming_the_culprit_and_writes_nothing(tmp_path, capsys, argv, message):
    _files(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    out = tmp_path / "out"
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv] + ["--out", str(out)]
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's errors
        code = e.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err and "Traceback" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no OUT, no cache


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root may write anywhere")
def test_an_out_the_user_cannot_write_is_refused_when_the_flag_is_read(tmp_path, capsys):
    _files(tmp_path)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(SystemExit) as e:
            main([*[a.replace("{tmp}", str(tmp_path)) for a in GOTD], "--pool", str(tmp_path / "ok.jsonl"),
                  "--method", "random", "--out", str(locked / "out")])
        assert e.value.code == 2
        assert "is not writable by this user" in capsys.readouterr().err
        assert not (locked / "out").exists()
    finally:
        locked.chmod(0o700)
