"""Zero-shot scoring against a plain loop over texts and labels, batch invariance, truncation, and the
prompt/verbalizer readers' errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tunesift.warmup.pretrain import load_language_model
from tunesift.warmup.zeroshot import (DEFAULT_PROMPTS, Prompt, ZeroShotConfig, check_template, classify,
                                      default_prompt, encode_prompts, label_log_likelihoods, read_verbalizers,
                                      resolve_prompt)


@pytest.fixture(scope="module")
def llama(llama_dir):
    torch.set_num_threads(1)
    return load_language_model(llama_dir)


def plain_log_likelihoods(lm, texts, prompt):
    """The oracle: one unpadded forward pass per (text, label), Σ_t log p(v_t | prompt, v_<t)."""
    tok, out = lm.tokenizer, np.zeros((len(texts), len(prompt.verbalizers)))
    lm.model.eval()
    for i, text in enumerate(texts):
        context = tok(prompt.fill(text))["input_ids"]
        for k, v in enumerate(prompt.verbalizers):
            word = tok(v, add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                logits = lm.model(input_ids=torch.tensor([context + word])).logits[0]  # (T, V)
            logp = torch.log_softmax(logits.double(), -1)
            out[i, k] = sum(float(logp[len(context) - 1 + t, w]) for t, w in enumerate(word))
    return out


# one-token and two-token verbalizers (the tiny tokenizer is word-level), texts of different lengths
PROMPT = Prompt("text : {text} label :", (" label0", " label1", " d0w3 d0w7"), ("a", "b", "c"))


def test_scores_equal_a_plain_loop_over_texts_and_labels(llama, task):
    texts = task.test.texts[:9] + ["", "d0w1"]
    expected = plain_log_likelihoods(llama, texts, PROMPT)
    for batch_size in (1, 4, 64):
        ll = label_log_likelihoods(llama.model, llama.tokenizer, texts, PROMPT, ZeroShotConfig(batch_size=batch_size))
        np.testing.assert_allclose(ll.log_likelihood, expected, rtol=0, atol=1e-5)
        assert ll.tokens.tolist() == [1, 1, 2] and ll.truncated == 0
    np.testing.assert_allclose(ll.scores("mean"), expected / np.array([1, 1, 2]), atol=1e-5)
    for norm, want in (("sum", expected), ("mean", expected / np.array([1, 1, 2]))):
        result = classify(llama, texts, np.arange(len(texts)) % 3, PROMPT, ZeroShotConfig(length_norm=norm))
        assert np.array_equal(result.predictions, want.argmax(1))
        assert result.accuracy == pytest.approx(np.mean(want.argmax(1) == np.arange(len(texts)) % 3))
        assert result.correct.dtype == bool and result.length_norm == norm
    with pytest.raises(ValueError, match="causal LM"):
        classify(type("M", (), {"objective": "mlm"})(), texts, [0] * len(texts), PROMPT)
    with pytest.raises(ValueError, match="labels must be in"):
        classify(llama, texts[:2], [0, 3], PROMPT)


def test_absolute_positions_are_counted_from_the_first_real_token(llama, task):
    """GPT-2 adds absolute position embeddings: left padding without position ids would shift them."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from tunesift.warmup.pretrain import LanguageModel

    torch.manual_seed(0)
    tok = llama.tokenizer
    config = GPT2Config(vocab_size=len(tok), n_positions=128, n_embd=32, n_layer=2, n_head=2,
                        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    gpt2 = LanguageModel(GPT2LMHeadModel(config), llama.tokenizer, "causal")
    texts = task.test.texts[:6] + ["d0w1"]
    expected = plain_log_likelihoods(gpt2, texts, PROMPT)
    ll = label_log_likelihoods(gpt2.model, gpt2.tokenizer, texts, PROMPT, ZeroShotConfig(batch_size=7))
    np.testing.assert_allclose(ll.log_likelihood, expected, rtol=0, atol=1e-5)


def test_long_texts_lose_their_end_never_the_template(llama):
    tok = llama.tokenizer
    long = " ".join(f"d0w{i % 40}" for i in range(50))
    (ids,), words, truncated = encode_prompts(tok, PROMPT, [long], max_length=10)
    full = tok(PROMPT.fill(long))["input_ids"]
    n_template = len(tok(PROMPT.fill(""))["input_ids"])
    assert truncated == 1 and len(ids) == n_template + 10
    assert ids[-2:] == full[-2:] == tok(" label :", add_special_tokens=False)["input_ids"]  # the cue stays
    assert ids[:-2] == full[: len(ids) - 2]  # the text's beginning stays
    short, _, none_cut = encode_prompts(tok, PROMPT, ["d0w1 d0w2"], max_length=10)
    assert none_cut == 0 and short[0] == tok(PROMPT.fill("d0w1 d0w2"))["input_ids"]
    assert words[2] == tok(" d0w3 d0w7", add_special_tokens=False)["input_ids"] and len(words[2]) == 2


def test_default_prompts_cover_the_named_tasks():
    ag = default_prompt("ag_news", ["World", "Sports", "Business", "Sci/Tech"])
    assert ag.verbalizers == (" World", " Sports", " Business", " Technology") and "{text}" in ag.template
    for name in ("SST-2", "sst2", "mr", "cr"):
        p = default_prompt(name, ["0", "1"])
        assert p.verbalizers == (" negative", " positive") and p.template == "Review: {text}\nSentiment:"
    assert default_prompt("sst-2", ["neg", "pos"]) is None  # other label names: no default
    assert default_prompt("chemprot", ["a", "b"]) is None
    assert default_prompt("synthetic", ["label0", "label1"]).verbalizers == (" label0", " label1")
    assert set(DEFAULT_PROMPTS) == {"ag_news", "sst-2", "mr", "cr"}


def test_bad_templates_and_verbalizer_files_are_named(tmp_path):
    with pytest.raises(ValueError, match=r"--template: no \{text\} placeholder"):
        resolve_prompt("sst-2", ["0", "1"], template="Review:\nSentiment:")
    with pytest.raises(ValueError, match="appears 2 times"):
        check_template("{text} {text}")
    with pytest.raises(ValueError, match="no default zero-shot prompt.*--template"):
        resolve_prompt("chemprot", ["a", "b"])
    with pytest.raises(ValueError, match="no default verbalizers.*--verbalizer"):
        resolve_prompt("mine", ["a", "b"], template="{text} is")

    def write(name, content):
        path = tmp_path / name
        path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
        return path

    cases = [
        (write("list.json", [" a", " b"]), r"list.json: expected a JSON object .* got a JSON list"),
        (write("broken.json", '{"a": " x",\n "b": }'), r"broken.json:2: not valid JSON"),
        (write("missing.json", {"a": " x"}), r"missing.json: no verbalizer for label\(s\) 'b'"),
        (write("extra.json", {"a": " x", "b": " y", "c": " z"}), r"extra.json: 'c' not label\(s\) of the task"),
        (write("empty.json", {"a": " x", "b": "  "}), r"empty.json: label 'b': empty verbalizer"),
        (write("number.json", {"a": " x", "b": 3}), r"number.json: label 'b': the verbalizer must be a string"),
        (write("same.json", {"a": " x", "b": " x"}), r"same.json: labels 'a' and 'b' have the same verbalizer"),
    ]
    for path, message in cases:
        with pytest.raises(ValueError, match=message):
            resolve_prompt("mine", ["a", "b"], template="{text} is", verbalizer=path)
    with pytest.raises(FileNotFoundError, match="nope.json: no such verbalizer file"):
        read_verbalizers(tmp_path / "nope.json", ["a", "b"])
    good = write("good.json", {"b": " yes", "a": " no"})
    p = resolve_prompt("mine", ["a", "b"], template="Q: {text}\nA:", verbalizer=good)
    assert p.verbalizers == (" no", " yes") and p.source == str(good)
    assert p.to_dict() == {"template": "Q: {text}\nA:", "verbalizers": {"a": " no", "b": " yes"}, "source": str(good)}
    # a given template keeps the task's default verbalizers
    assert resolve_prompt("mr", ["0", "1"], template="{text} overall:").verbalizers == (" negative", " positive")
    with pytest.raises(ValueError, match="`length_norm`"):
        ZeroShotConfig(length_norm="max")


def test_verbalizers_the_tokenizer_cannot_tell_apart_are_refused(llama):
    # both words are outside the tiny vocabulary: both encode to [UNK]
    prompt = Prompt("{text} :", (" zebra", " quokka"), ("a", "b"))
    with pytest.raises(ValueError, match="encode to the same tokens"):
        encode_prompts(llama.tokenizer, prompt, ["d0w1"], max_length=8)
