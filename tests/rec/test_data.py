import json
import os
import pickle

import numpy as np
import pytest
from recfixtures import GAMES, tiny_titles, write_dealrec_folder

from tunesift.rec.data import (
    RecData,
    load_rec_data,
    load_restricted_npy,
    read_dealrec,
    read_interaction_table,
    read_recbole,
    split_by_global_time,
)


def test_dealrec_folder_roundtrip(tmp_path):
    train, valid, test = write_dealrec_folder(tmp_path / "games")
    data = load_rec_data(tmp_path / "games")
    assert data.format == "dealrec" and data.name == "games"
    assert data.users == list(range(1, 25))
    assert data.train == train and data.valid == valid and data.test == test
    assert data.titles == tiny_titles(20) and data.n_items == 20
    counts = data.counts()
    assert counts["train_interactions"] == sum(map(len, train))
    assert counts["users_with_valid"] == sum(1 for v in valid if v)
    assert data.warnings == {}


def test_title_maps_npy_matches_items_jsonl(tmp_path):
    folder = tmp_path / "games"
    write_dealrec_folder(folder)
    titles = tiny_titles(20)
    maps = {"seqid2title": {str(i): t for i, t in enumerate(titles) if i},
            "recid2title": {i - 1: t for i, t in enumerate(titles) if i}}
    np.save(folder / "title_maps.npy", np.array(maps, dtype=object), allow_pickle=True)  # as DEALRec wrote it
    assert load_restricted_npy(folder / "title_maps.npy") == maps
    a = read_dealrec(folder, titles="items.jsonl")
    b = read_dealrec(folder, titles="title_maps.npy")
    assert a.titles == b.titles


class _Hostile:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_restricted_unpickler_refuses_code(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "title_maps.npy"
    np.save(path, np.array({"seqid2title": _Hostile(marker)}, dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="refusing to load"):
        load_restricted_npy(path)
    assert not marker.exists()
    # a plain pickle that is not an object .npy is refused as well
    raw = tmp_path / "raw.npy"
    raw.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ValueError, match="not a .npy"):
        load_restricted_npy(raw)


def test_dealrec_bad_inputs(tmp_path):
    folder = tmp_path / "d"
    write_dealrec_folder(folder)
    text = (folder / "sequential_train.txt").read_text().splitlines()
    text[2] = text[2] + " x7"
    (folder / "sequential_train.txt").write_text("\n".join(text) + "\n")
    with pytest.raises(ValueError, match=r"sequential_train.txt:3: item id 'x7'"):
        read_dealrec(folder)
    write_dealrec_folder(folder)
    lines = (folder / "sequential_valid.txt").read_text().splitlines()
    (folder / "sequential_valid.txt").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(ValueError, match="users differ"):
        read_dealrec(folder)
    write_dealrec_folder(folder)
    (folder / "sequential_test.txt").unlink()
    with pytest.raises(FileNotFoundError, match="sequential_test.txt"):
        read_dealrec(folder)


def test_dealrec_counts_missing_titles_and_empty_users(tmp_path):
    folder = tmp_path / "d"
    train, _, _ = write_dealrec_folder(folder)
    rows = [json.loads(x) for x in (folder / "items.jsonl").read_text().splitlines()]
    used = sorted({i for s in train for i in s})
    dropped = used[:2]
    with open(folder / "items.jsonl", "w") as f:
        for r in rows:
            if r["item_id"] not in dropped:
                f.write(json.dumps(r) + "\n")
    lines = (folder / "sequential_train.txt").read_text().splitlines()
    lines[0] = "1"  # user 1 without training items
    (folder / "sequential_train.txt").write_text("\n".join(lines) + "\n")
    data = read_dealrec(folder)
    assert data.warnings["users_without_train_items"] == 1
    assert data.warnings["items_without_title"] >= 1
    assert data.titles[dropped[1]] == f"item {dropped[1]}"


def test_global_time_split_oracle():
    # ten interactions given out of time order; the 8:1:1 cut is by time across all users
    users = ["b", "a", "a", "b", "c", "a", "b", "c", "a", "c"]
    items = [10, 11, 12, 10, 13, 14, 11, 12, 13, 10]
    times = [5, 1, 2, 9, 3, 7, 4, 6, 8, 10]
    data = split_by_global_time(users, items, times, {10: "Ten", 11: "Eleven", 12: "Twelve", 13: "Thirteen"})
    # time order: t1 a11, t2 a12, t3 c13, t4 b11, t5 b10, t6 c12, t7 a14, t8 a13 | t9 b10 | t10 c10
    assert data.users == ["a", "b", "c"]
    assert data.item_ids == [None, 10, 11, 12, 13, 14]
    ix = {orig: k for k, orig in enumerate(data.item_ids) if orig is not None}
    assert data.train == [[ix[11], ix[12], ix[14], ix[13]], [ix[11], ix[10]], [ix[13], ix[12]]]
    assert data.valid == [[], [ix[10]], []]
    assert data.test == [[], [], [ix[10]]]
    assert data.warnings["items_without_title"] == 1 and data.titles[ix[14]] == "item 14"


def _table_rows():
    return [
        {"user": "u1", "item": "i1", "timestamp": 1, "title": "Alpha"},
        {"user": "u2", "item": "i2", "timestamp": 2, "title": "Beta"},
        {"user": "u1", "item": "i2", "timestamp": 3, "title": "Beta"},
        {"user": "u2", "item": "i3", "timestamp": 4, "title": "Gamma\nDeluxe"},
        {"user": "u1", "item": "i3", "timestamp": 5, "title": "Gamma\nDeluxe"},
        {"user": "u2", "item": "i1", "timestamp": 6, "title": "Alpha"},
        {"user": "u1", "item": "i4", "timestamp": 7, "title": "Delta"},
        {"user": "u2", "item": "i4", "timestamp": 8, "title": "Delta"},
        {"user": "u1", "item": "i5", "timestamp": 9, "title": "Epsilon"},
        {"user": "u2", "item": "i5", "timestamp": 10, "title": "Epsilon"},
    ]


def test_interaction_table_formats_agree(tmp_path):
    import pandas as pd

    rows = _table_rows()
    frame = pd.DataFrame(rows)
    frame.to_csv(tmp_path / "t.csv", index=False)
    frame.to_parquet(tmp_path / "t.parquet")
    with open(tmp_path / "t.jsonl", "w") as f:
        for r in rows[::-1]:  # file order must not matter, only time
            f.write(json.dumps(r) + "\n")
    loaded = [read_interaction_table(tmp_path / f"t.{ext}") for ext in ("csv", "parquet", "jsonl")]
    for d in loaded:
        assert d.train == loaded[0].train and d.valid == loaded[0].valid and d.test == loaded[0].test
        assert d.titles == ["", "Alpha", "Beta", "Gamma Deluxe", "Delta", "Epsilon"]
    d = loaded[0]
    assert d.users == ["u1", "u2"] and d.split == "leave-one-out" and d.name == "items"  # not the file's name
    # each user's last item is the test item, the one before it the validation item
    assert d.train == [[1, 2, 3], [2, 3, 1]] and d.valid == [[4], [4]] and d.test == [[5], [5]]
    t = read_interaction_table(tmp_path / "t.csv", split="time")  # global 80/10/10 cut-offs by time
    assert t.split == "time" and t.train == [[1, 2, 3, 4], [2, 3, 1, 4]] and t.valid == [[5], []] and t.test == [[], [5]]


def test_interaction_table_errors(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("user,item,time\n1,2,3\n")
    with pytest.raises(ValueError, match="no column 'timestamp'"):
        read_interaction_table(p)
    p.write_text("user,item,timestamp\n1,2,3\n1,3,yesterday\n")
    with pytest.raises(ValueError, match=r"t.csv:line 3: timestamp 'yesterday'"):
        read_interaction_table(p)
    p.write_text("user,item,timestamp\n1,,3\n")
    with pytest.raises(ValueError, match="empty item"):
        read_interaction_table(p)
    p.write_text("user,item,timestamp\n1,2,2024-01-02T10:00:00\n1,3,2024-01-01\n")
    d = read_interaction_table(p)
    # ISO dates order by time: the 2024-01-01 item is first (train), the later one last (test)
    assert [d.item_ids[i] for i in d.train[0]] == [3] and [d.item_ids[i] for i in d.test[0]] == [2]


def test_recbole_atomic_files(tmp_path):
    (tmp_path / "mini.inter").write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        + "".join(f"{u}\t{i}\t4\t{t}\n" for t, (u, i) in enumerate(
            [(1, 5), (2, 6), (1, 6), (2, 7), (1, 7), (2, 5), (1, 8), (2, 8), (1, 9), (2, 9)]))
    )
    (tmp_path / "mini.item").write_text(
        "item_id:token\tmovie_title:token_seq\trelease_year:token\n"
        + "".join(f"{i}\tMovie {i}\t1999\n" for i in range(5, 10))
    )
    d = load_rec_data(tmp_path)
    assert d.format == "recbole" and d.name == "mini"
    assert d.titles == ["", "Movie 5", "Movie 6", "Movie 7", "Movie 8", "Movie 9"]
    assert d.train == [[1, 2, 3], [2, 3, 1]] and d.valid == [[4], [4]] and d.test == [[5], [5]]
    t = load_rec_data(tmp_path, split="time")
    assert t.train == [[1, 2, 3, 4], [2, 3, 1, 4]] and t.valid == [[5], []] and t.test == [[], [5]]
    (tmp_path / "mini.inter").write_text("user_id:token\titem_id:token\n1\t2\t3\n")
    with pytest.raises(ValueError, match="3 fields, the header has 2"):
        read_recbole(tmp_path)


def test_leave_one_out_gives_one_test_and_one_validation_item_per_user_who_has_them():
    from tunesift.rec.data import split_interactions

    users = ["a"] * 4 + ["b"] * 2 + ["c"]
    items = [1, 2, 3, 4, 5, 6, 7]
    times = [3, 1, 2, 4, 9, 8, 5]  # a's order by time: 2, 3, 1, 4
    d = split_interactions(users, items, times, {})
    ids = lambda seqs: [[d.item_ids[i] for i in seq] for seq in seqs]  # noqa: E731
    assert ids(d.train) == [[2, 3], [6], [7]] and ids(d.valid) == [[1], [], []] and ids(d.test) == [[4], [5], []]


def _together(tmp_path, users=300):
    """An export whose users' histories start together: user k has 3 + k % 7 interactions from t = 0."""
    import csv

    path = tmp_path / "interactions.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["user", "item", "timestamp", "title"])
        for u in range(users):
            for t in range(3 + u % 7):
                w.writerow([f"u{u}", f"i{(7 * u + t) % 50}", t, f"Item {(7 * u + t) % 50}"])
    return path


def test_a_split_that_leaves_most_users_without_a_test_item_is_warned_and_counted(tmp_path, caplog):
    path = _together(tmp_path)
    with caplog.at_level("WARNING", logger="tunesift"):
        d = read_interaction_table(path, split="time")
    assert sum(1 for t in d.test if t) < 150
    assert d.warnings["users_without_test_items"] == sum(1 for t in d.test if not t)
    assert "have no test item after the time split; --split leave-one-out" in caplog.text
    d = read_interaction_table(path)  # leave-one-out: every user has one of each
    assert all(d.test) and all(d.valid) and "users_without_test_items" not in d.warnings


def test_split_is_refused_for_a_dealrec_folder(tmp_path):
    from recfixtures import write_dealrec_folder

    write_dealrec_folder(tmp_path / "games")
    with pytest.raises(ValueError, match="--split applies to interaction tables and RecBole files"):
        load_rec_data(tmp_path / "games", split="time")
    assert load_rec_data(tmp_path / "games").split == "files"
    with pytest.raises(ValueError, match="--split must be one of leave-one-out, time"):
        load_rec_data(_together(tmp_path, 5), split="random")


@pytest.mark.slow
def test_both_splits_on_movielens_as_an_interaction_table(tmp_path):
    """MovieLens-100K (fetched by setup) written as a CSV table: leave-one-out gives every user a test and a
    validation item; the global time split gives few users a test item, and says so."""
    import csv

    from tunesift.rec.data import movielens_100k

    try:
        folder = movielens_100k(download=False)
    except FileNotFoundError:
        pytest.skip("MovieLens-100K is not in the cache (scripts/setup.sh fetches it)")
    ml = load_rec_data(folder, split="time")
    path = tmp_path / "ml.csv"
    with open(folder / "ml-100k.inter") as f, open(path, "w", newline="") as out:
        rows = csv.reader(f, delimiter="\t")
        header = next(rows)
        w = csv.writer(out)
        w.writerow(["user", "item", "timestamp"])
        u, i, t = (header.index(c) for c in ("user_id:token", "item_id:token", "timestamp:float"))
        for r in rows:
            w.writerow([r[u], r[i], r[t]])
    loo = read_interaction_table(path)
    assert loo.n_users == 943 and all(loo.test) and all(loo.valid)
    assert sum(len(s) for s in loo.test) == 943 and "users_without_test_items" not in loo.warnings
    time = read_interaction_table(path, split="time")
    assert time.train == ml.train and time.test == ml.test  # the RecBole reader's time split, the same cut-offs
    with_test = sum(1 for s in time.test if s)
    assert with_test < 943 / 2 and time.warnings["users_without_test_items"] == 943 - with_test


def test_recdata_rejects_out_of_range_items():
    with pytest.raises(ValueError, match="outside 1..2"):
        RecData(users=[1], train=[[3]], valid=[[]], test=[[]], titles=["", "a", "b"], item_ids=[None, 1, 2])


@pytest.mark.slow
@pytest.mark.skipif(not GAMES.exists(), reason="../shared/data/rec/games not present")
def test_games_counts():
    data = load_rec_data(GAMES)
    c = data.counts()
    assert (c["users"], c["items"], c["train_interactions"]) == (49156, 17332, 299987)
    assert (c["users_with_valid"], c["users_with_test"]) == (9609, 8696)
    assert data.warnings == {}
    via_pickle = read_dealrec(GAMES, titles="title_maps.npy")
    assert via_pickle.titles == data.titles


@pytest.mark.slow
def test_movielens_100k_from_recbole_wheel(tmp_path_factory):
    from tunesift.rec.data import movielens_100k

    try:
        folder = movielens_100k()
    except FileNotFoundError as e:  # no network to PyPI
        pytest.skip(str(e))
    data = load_rec_data(folder, name="movies")
    c = data.counts()
    assert c["users"] == 943 and c["items"] == 1682
    assert c["train_interactions"] + c["valid_interactions"] + c["test_interactions"] == 100000
    assert c["test_interactions"] == c["valid_interactions"] == 943  # leave-one-out: one of each per user
    assert load_rec_data(folder, split="time").counts()["train_interactions"] == 80000


def test_categories_are_read_and_make_the_item_texts(tmp_path):
    from tunesift.rec.data import read_dealrec, read_recbole

    folder = tmp_path / "d"
    write_dealrec_folder(folder, n_users=4, n_items=3)
    lines = [json.dumps({"item_id": 1, "title": "A", "categories": ["Games", "PC"]}),
             json.dumps({"item_id": 2, "title": "B", "categories": "Toys, Kids"}),
             json.dumps({"item_id": 3, "title": "C"})]
    (folder / "items.jsonl").write_text("\n".join(lines) + "\n")
    data = read_dealrec(folder)
    assert data.item_texts() == ["A; Games, PC", "B; Toys, Kids", "C"]
    assert data.subset_users([0]).categories == data.categories
    (folder / "items.jsonl").write_text(json.dumps({"item_id": 1, "title": "A", "categories": {"x": 1}}) + "\n")
    with pytest.raises(ValueError, match="items.jsonl:1: `categories` must be a list of strings"):
        read_dealrec(folder)
    rb = tmp_path / "rb"
    rb.mkdir()
    (rb / "x.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\n" +
                                "".join(f"u{k % 3}\ti{k % 4}\t{k}\n" for k in range(30)))
    (rb / "x.item").write_text("item_id:token\tmovie_title:token_seq\tclass:token_seq\n"
                               "i0\tToy Story\tAnimation Comedy\ni1\tHeat\tAction\ni2\tAlien\t\ni3\tUp\tAnimation\n")
    texts = read_recbole(rb).item_texts()
    assert texts == ["Toy Story; Animation, Comedy", "Heat; Action", "Alien", "Up; Animation"]


def test_dealrec_item_beyond_the_catalogue_is_refused_with_its_file_and_line(tmp_path):
    # item 999 with 20 items in items.jsonl once grew the catalogue to 999 items that the models then ranked
    folder = tmp_path / "d"
    write_dealrec_folder(folder, n_users=6, n_items=20)
    lines = (folder / "sequential_valid.txt").read_text().splitlines()
    lines[2] = lines[2].split()[0] + " 999"
    (folder / "sequential_valid.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"sequential_valid.txt:3: item id 999 is beyond the catalogue "
                                         r"\(items.jsonl lists item ids up to 20"):
        read_dealrec(folder)
