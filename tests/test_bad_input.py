"""Bad input through the CLI: a non-zero exit, one message naming the file/line/flag, no traceback, nothing written."""

import json
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
