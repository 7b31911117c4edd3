"""Effort scores in padded batches against a plain one-sample-at-a-time ``loss.backward()`` loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tunesift.rec.effort import (
    TokenizedSample,
    shared_prefix_length,
    IGNORE_INDEX,
    linear_squared_norms,
    default_effort_parameters,
    effort_scores,
    length_batches,
    select_parameters,
    tokenize_samples,
)
from tunesift.rec.llm import load_causal_lm

from recfixtures import WORDS, build_tiny_lm  # noqa: E402

LAST_V_B = "base_model.model.model.layers.1.self_attn.v_proj.lora_B.default.weight"


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    folder = build_tiny_lm(tmp_path_factory.mktemp("tiny-llama"))
    model, tokenizer = load_causal_lm(folder, device="cpu", lora_r=4, lora_alpha=8, seed=0)
    with torch.no_grad():  # lora_B starts at zero; give it values so every LoRA matrix gets gradients
        generator = torch.Generator().manual_seed(1)
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    return model, tokenizer


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    prompts = [" ".join(rng.choice(WORDS, size=int(rng.integers(2, 14)))) for _ in range(7)]
    responses = [" " + " ".join(rng.choice(WORDS, size=int(rng.integers(1, 4)))) for _ in range(7)]
    return prompts, responses


def loop_norms(model, tokenizer, prompts, responses, loss_on, names):
    """The authors' procedure: one sample at a time, Hugging Face's loss, ``loss.backward()``, read ``.grad``."""
    named = dict(model.named_parameters())
    norms = []
    for index, prompt in enumerate(prompts):
        full = prompt if responses is None else prompt + responses[index]
        ids = tokenizer(full)["input_ids"] + [tokenizer.eos_token_id]
        labels = list(ids)
        if loss_on == "response":
            n_prompt = len(tokenizer(prompt)["input_ids"])
            labels[:n_prompt] = [-100] * n_prompt
        model.zero_grad(set_to_none=True)
        loss = model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss
        loss.backward()
        squared = sum(float(named[name].grad.double().pow(2).sum()) for name in names if named[name].grad is not None)
        norms.append(squared**0.5)
    model.zero_grad(set_to_none=True)
    return np.array(norms)


_loop_cache: dict[str, np.ndarray] = {}


@pytest.mark.parametrize("loss_on", ["prompt", "response"])
@pytest.mark.parametrize("padding_side", ["left", "right"])
@pytest.mark.parametrize("batch_size", [1, 3, 7])
def test_batched_norms_equal_the_one_at_a_time_loop(lm, data, loss_on, padding_side, batch_size):
    model, tokenizer = lm
    prompts, responses = data
    if loss_on not in _loop_cache:
        _loop_cache[loss_on] = loop_norms(model, tokenizer, prompts, responses, loss_on, [LAST_V_B])
    expected = _loop_cache[loss_on]
    got = effort_scores(model, tokenizer, prompts, responses=responses, batch_size=batch_size, loss_on=loss_on,
                        padding_side=padding_side, progress=False)
    assert got.shape == (len(prompts),) and got.dtype == np.float64
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
    assert np.all(expected > 0) and np.ptp(expected) > 1e-3  # the check compares real, differing numbers


@pytest.mark.parametrize(
    "param_filter",
    [
        r"layers\.0\.self_attn\.q_proj\.lora_A",  # the first layer: backward through the whole model
        r"lora_",  # every LoRA matrix, both layers
        lambda name: name.endswith("layers.1.self_attn.v_proj.lora_A.default.weight") or "layers.0.self_attn.v_proj.lora_B" in name,
        r"model\.layers\.1\.mlp\.down_proj\.weight$",  # a frozen base weight is selectable too (64 x 32)
        r"model\.norm\.weight$",  # not an nn.Linear: the vmapped-backward path
    ],
    ids=["first-layer-lora_A", "all-lora", "callable", "base-linear", "rms-norm"],
)
def test_param_filter_selects_other_parameters(lm, data, param_filter):
    model, tokenizer = lm
    prompts, responses = data
    names = select_parameters(model, param_filter)
    expected_trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    for name, parameter in model.named_parameters():  # the loop oracle needs .grad on the chosen ones
        parameter.requires_grad_(name in names)
    try:
        expected = loop_norms(model, tokenizer, prompts, responses, "prompt", names)
    finally:
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(name in expected_trainable)
    got = effort_scores(model, tokenizer, prompts, responses=responses, batch_size=4, param_filter=param_filter,
                        padding_side="left", progress=False)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
    assert np.all(expected > 0)
    # effort_scores leaves requires_grad as it found it
    assert {n for n, p in model.named_parameters() if p.requires_grad} == expected_trainable


def test_default_parameters_are_the_last_layer_v_proj_lora_b(lm):
    model, _ = lm
    assert default_effort_parameters(model) == [LAST_V_B]
    assert select_parameters(model, None) == [LAST_V_B]
    with pytest.raises(ValueError, match="param_filter"):
        select_parameters(model, r"no_such_parameter")
    with pytest.raises(TypeError, match="param_filter"):
        select_parameters(model, 3)


@pytest.mark.parametrize("tokens,n_in,n_out", [(5, 4, 6), (3, 40, 50), (9, 2, 30)])
def test_outer_and_gram_norms_equal_the_materialised_gradient(tokens, n_in, n_out):
    generator = torch.Generator().manual_seed(tokens)
    x = torch.randn(3, tokens, n_in, generator=generator, dtype=torch.float64)
    delta = torch.randn(3, tokens, n_out, generator=generator, dtype=torch.float64)
    exact = torch.stack([sum(torch.outer(delta[b, t], x[b, t]) for t in range(tokens)).pow(2).sum() for b in range(3)])
    for method in ("outer", "gram", "auto"):
        torch.testing.assert_close(linear_squared_norms(x, delta, method), exact)


def test_dropout_option_runs_in_train_mode_and_is_seeded(lm, data):
    model, tokenizer = lm
    prompts, _ = data
    assert not model.training
    kwargs = dict(batch_size=4, param_filter=r"lora_B", progress=False)
    plain = effort_scores(model, tokenizer, prompts, **kwargs)
    with_dropout = effort_scores(model, tokenizer, prompts, dropout=True, seed=5, **kwargs)
    again = effort_scores(model, tokenizer, prompts, dropout=True, seed=5, **kwargs)
    other = effort_scores(model, tokenizer, prompts, dropout=True, seed=6, **kwargs)
    assert not model.training  # mode restored
    np.testing.assert_array_equal(with_dropout, again)
    assert not np.allclose(with_dropout, plain) and not np.allclose(with_dropout, other)
    assert np.all(np.isfinite(with_dropout))


def test_scores_follow_text_order_and_padding_does_not_matter(lm, data):
    model, tokenizer = lm
    prompts, _ = data
    alone = np.array([effort_scores(model, tokenizer, [p], progress=False)[0] for p in prompts])
    reversed_scores = effort_scores(model, tokenizer, prompts[::-1], batch_size=7, progress=False)
    np.testing.assert_allclose(reversed_scores[::-1], alone, rtol=1e-5)


def test_tokenize_samples_masks_the_prompt(lm):
    _, tokenizer = lm
    [sample] = tokenize_samples(tokenizer, ["zelda mario"], [" halo"], loss_on="response")
    vocab = tokenizer.get_vocab()
    assert sample.input_ids == [vocab["zelda"], vocab["mario"], vocab["halo"], tokenizer.eos_token_id]
    assert sample.labels == [IGNORE_INDEX, IGNORE_INDEX, vocab["halo"], tokenizer.eos_token_id]
    [whole] = tokenize_samples(tokenizer, ["zelda mario"], [" halo"], loss_on="prompt")
    assert whole.labels == whole.input_ids
    [cut] = tokenize_samples(tokenizer, ["zelda mario halo doom"], max_length=3)
    assert len(cut.input_ids) == 3 and cut.input_ids[-1] != tokenizer.eos_token_id


def test_bad_input_names_the_field(lm):
    model, tokenizer = lm
    with pytest.raises(ValueError, match="loss_on"):
        effort_scores(model, tokenizer, ["zelda"], loss_on="all", progress=False)
    with pytest.raises(ValueError, match="responses"):
        effort_scores(model, tokenizer, ["zelda"], loss_on="response", progress=False)
    with pytest.raises(ValueError, match="responses"):
        effort_scores(model, tokenizer, ["zelda", "mario"], responses=[" halo"], progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        effort_scores(model, tokenizer, ["zelda"], batch_size=0, progress=False)
    with pytest.raises(ValueError, match="sample 1"):
        effort_scores(model, tokenizer, ["zelda mario", "halo"], responses=[" doom", ""], loss_on="response",
                      add_eos=False, progress=False)
    assert effort_scores(model, tokenizer, [], progress=False).shape == (0,)


@pytest.fixture(scope="module")
def shared_data():
    """Prompts that all start with the same 7 words, as BIGRec prompts start with the same template."""
    rng = np.random.default_rng(1)
    prompts = ["the game zelda mario sonic halo doom " + " ".join(rng.choice(WORDS, size=int(rng.integers(1, 9))))
               for _ in range(6)]
    prompts.append("the game zelda mario sonic halo doom")  # a sample that is nothing but the prefix
    responses = [" " + " ".join(rng.choice(WORDS, size=int(rng.integers(1, 4)))) for _ in range(7)]
    return prompts, responses


@pytest.mark.parametrize("loss_on", ["prompt", "response"])
@pytest.mark.parametrize(
    "param_filter",
    [None, r"layers\.1\.self_attn\.(q|v)_proj\.lora", r"layers\.1\..*proj\.weight$",
     r"layers\.0\.self_attn\.v_proj\.lora_A|layers\.1\.mlp\.up_proj\.weight"],
    ids=["default", "last-layer-lora", "last-layer-base-weights", "two-layers"],
)
def test_shared_prefix_equals_the_one_at_a_time_loop(lm, shared_data, loss_on, param_filter, monkeypatch):
    import tunesift.rec.effort as effort

    model, tokenizer = lm
    prompts, responses = shared_data
    names = select_parameters(model, param_filter)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name in names)
    try:
        expected = loop_norms(model, tokenizer, prompts, responses, loss_on, names)
    finally:
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(name in trainable)
    calls = []
    original = effort.per_sample_grad_norms_shared_prefix
    monkeypatch.setattr(effort, "per_sample_grad_norms_shared_prefix",
                        lambda *a, **k: calls.append(1) or original(*a, **k))
    for batch_size in (1, 4):
        got = effort_scores(model, tokenizer, prompts, responses=responses, batch_size=batch_size, loss_on=loss_on,
                            param_filter=param_filter, share_prefix=True, progress=False)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
    assert calls  # the shared-prefix path really ran
    assert {n for n, p in model.named_parameters() if p.requires_grad} == trainable


def test_shared_prefix_is_chosen_automatically_when_it_applies(lm, shared_data, monkeypatch):
    import tunesift.rec.effort as effort

    model, tokenizer = lm
    prompts, responses = shared_data
    calls = []
    original = effort.per_sample_grad_norms_shared_prefix
    monkeypatch.setattr(effort, "per_sample_grad_norms_shared_prefix",
                        lambda *a, **k: calls.append(1) or original(*a, **k))
    shared = effort_scores(model, tokenizer, prompts, responses=responses, min_prefix=4, progress=False)
    used = len(calls)
    assert used >= 1
    plain = effort_scores(model, tokenizer, prompts, responses=responses, share_prefix=False, progress=False)
    assert len(calls) == used
    np.testing.assert_allclose(shared, plain, rtol=1e-5)
    effort_scores(model, tokenizer, prompts, responses=responses, min_prefix=50, progress=False)  # prefix too short
    effort_scores(model, tokenizer, prompts, responses=responses, min_prefix=4, dropout=True, progress=False)
    effort_scores(model, tokenizer, prompts, param_filter=r"layers\.0\..*lora_B", min_prefix=4, progress=False)
    assert len(calls) == used
    with pytest.raises(ValueError, match="share_prefix"):
        effort_scores(model, tokenizer, prompts, share_prefix=True, dropout=True, progress=False)
    with pytest.raises(ValueError, match="share_prefix"):
        effort_scores(model, tokenizer, prompts, share_prefix=True, param_filter=r"model\.norm\.weight$",
                      progress=False)


def test_length_batches_cover_every_sample_within_the_budgets():
    lengths = [508, 371, 368, 292, 200, 190, 180, 100, 90, 90, 80, 10]
    batches = length_batches(lengths, batch_size=4, max_tokens=800)
    covered = [i for b in batches for i in range(b.start, b.stop)]
    assert covered == list(range(len(lengths)))
    for b in batches:
        size = b.stop - b.start
        assert 1 <= size <= 4
        assert size == 1 or size * lengths[b.start] <= 800
    assert [b.stop - b.start for b in batches] == [1, 2, 1, 3, 4, 1]
    for b in batches:  # no sample shorter than 3/4 of its batch's longest
        assert lengths[b.stop - 1] >= 0.75 * lengths[b.start]
    assert [b.stop - b.start for b in length_batches(lengths, 4, 800, min_fill=0)] == [1, 2, 2, 4, 3]
    default = length_batches(lengths, batch_size=4)  # budget 4 x median (185)
    assert all((b.stop - b.start) * lengths[b.start] <= 4 * 185 or b.stop - b.start == 1 for b in default)
    with pytest.raises(ValueError, match="min_fill"):
        length_batches(lengths, 4, min_fill=1.5)
    assert length_batches([], 4) == []
    with pytest.raises(ValueError, match="sorted"):
        length_batches([1, 2], 4)


def test_shared_prefix_length_is_the_common_prefix_less_one_token():
    def sample(ids):
        return TokenizedSample(list(ids), list(ids))

    common = list(range(100, 120))  # 20 common tokens
    samples = [sample(common + [1, 2]), sample(common + [3]), sample(common + [4, 5, 6])]
    assert shared_prefix_length(samples) == 19  # the 20th token's label is still the same for all
    assert shared_prefix_length(samples[:1]) == 0  # nothing to share
    assert shared_prefix_length(samples, min_prefix=20) == 0
    assert shared_prefix_length([sample(common + [1]), sample(common[:5] + [9] + common[6:])]) == 0  # 4 < 16
    assert shared_prefix_length([sample(common + [1]), sample(common[:5] + [9] + common[6:])], min_prefix=1) == 4
    labels_differ = [sample(common + [1]), TokenizedSample(common + [2], [IGNORE_INDEX] * 10 + common[10:] + [2])]
    assert shared_prefix_length(labels_differ, min_prefix=1) == 0  # the labels must agree too
