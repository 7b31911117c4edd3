import pytest
from recfixtures import tiny_recdata

from tunesift.rec.data import RecData
from tunesift.rec.prompts import PROMPT_STYLES, build_samples, style_for, token_counter

GAMES_PROMPT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. Write a "
    "response that appropriately completes the request.\n\n### Instruction:\nGiven the game products that the user "
    "purchased before, please recommend a new game product that the user likes to the user.\n\n### Input:\nThe user "
    "has purchased the following game products before, with titles as: Halo 3; Tetris;\n\n### Response:\n"
)


def _data():
    titles = ["", "Halo 3", "Tetris", "Portal 2", "Doom", "Zelda"]
    return RecData(users=["u1", "u2", "u3"], train=[[1, 2, 3], [4], []], valid=[[5, 1], [], []],
                   test=[[4, 2], [3], [1]], titles=titles, item_ids=[None, *range(1, 6)], name="games")


def test_template_is_methods_md_alpaca_text():
    assert PROMPT_STYLES["games"].prompt(["Halo 3", "Tetris"]) == GAMES_PROMPT
    assert style_for("ml-100k") is PROMPT_STYLES["movies"] and style_for("unknown") is PROMPT_STYLES["items"]


def test_train_valid_test_samples():
    data = _data()
    train = build_samples(data, "train")
    assert [s.user for s in train] == ["u1", "u2"]  # u3 has no training item
    assert train[0].prompt == GAMES_PROMPT and train[0].response == "Portal 2"
    assert train[0].history == [1, 2] and train[0].target_items == [3]
    assert train[0].text == GAMES_PROMPT + "Portal 2"
    assert train[1].history == [] and train[1].prompt.endswith("with titles as: ;\n\n### Response:\n")
    valid = build_samples(data, "valid")
    assert [s.user for s in valid] == ["u1"]
    assert valid[0].history == [1, 2, 3] and valid[0].response == "Zelda" and valid[0].targets == ["Zelda"]
    test = build_samples(data, "test")
    assert [s.user for s in test] == ["u1", "u2", "u3"]
    assert test[0].history == [1, 2, 3, 5, 1] and test[0].targets == ["Doom", "Tetris"]
    assert test[0].response == "Doom" and test[2].history == []
    with pytest.raises(ValueError, match="split"):
        build_samples(data, "dev")


def _dealrec_loop(style, titles, suffix, count, max_tokens):
    """DEALRec's gen_fewshot.py truncation: drop the oldest title while the text is too long."""
    k = 0
    while count([style.prompt(titles[k:]) + suffix])[0] > max_tokens and k < len(titles) - 1:
        k += 1
    return k


@pytest.mark.parametrize("max_tokens", [60, 75, 90, 400])
def test_truncation_matches_dealrec_loop_whitespace(max_tokens):
    data = tiny_recdata(n_users=30, n_items=20, seed=3, max_train=25)
    count = token_counter(None)
    for split in ("train", "valid", "test"):
        for s in build_samples(data, split, max_tokens=max_tokens):
            u = s.user_index
            full = {"train": data.train[u][:-1], "valid": data.train[u], "test": data.train[u] + data.valid[u]}[split]
            titles = [data.titles[i] for i in full]
            suffix = s.response if split != "test" else ""
            k = _dealrec_loop(PROMPT_STYLES["games"], titles, suffix, count, max_tokens)
            assert s.n_dropped == k and s.history == full[k:]
            assert s.n_tokens == count([s.prompt + suffix])[0]
            assert s.n_tokens <= max_tokens or len(s.history) <= 1


def test_truncation_matches_dealrec_loop_hf_tokenizer(tmp_path):
    from recfixtures import build_tiny_lm
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(build_tiny_lm(tmp_path / "lm"))
    data = tiny_recdata(n_users=20, n_items=20, seed=4, max_train=25)
    count = token_counter(tok)
    assert count(["Halo 3"]) == [len(tok("Halo 3")["input_ids"])]
    samples = build_samples(data, "train", tokenizer=tok, max_tokens=120)
    assert any(s.n_dropped for s in samples)
    for s in samples:
        titles = [data.titles[i] for i in data.train[s.user_index][:-1]]
        k = _dealrec_loop(PROMPT_STYLES["games"], titles, s.response, count, 120)
        assert s.n_dropped == k


def test_counter_accepts_callable_and_rejects_junk():
    assert token_counter(len)(["abc", "de"]) == [3, 2]
    with pytest.raises(TypeError, match="tokenizer"):
        token_counter(42)
