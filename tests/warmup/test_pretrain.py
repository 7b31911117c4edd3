"""Pre-fine-tuning: masking statistics, losses against transformers' own, batch-size invariance,
fresh heads, and training that lowers the loss reproducibly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tunesift.warmup.pretrain import (IGNORE_INDEX, LanguageModel, PretrainConfig, clone_language_model,
                                      encode, infer_objective, linear_schedule, lm_loss, load_language_model,
                                      head_parameters, mask_tokens, model_losses, pad_batch, pretrain,
                                      set_unigram_output_bias, token_losses, unigram_log_prior, warm_up_head)


def test_masking_follows_bert_80_10_10():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 1000, (200, 300), generator=g)
    maskable = torch.ones_like(ids, dtype=torch.bool)
    maskable[:, 0] = False  # e.g. [CLS]
    maskable[:, 250:] = False  # e.g. padding
    inputs, labels = mask_tokens(ids, maskable, mask_token_id=4, vocab_size=1000, probability=0.15,
                                 generator=torch.Generator().manual_seed(1))
    chosen = labels != IGNORE_INDEX
    assert not chosen[~maskable].any()
    assert torch.equal(labels[chosen], ids[chosen])
    assert torch.equal(inputs[~chosen], ids[~chosen])
    n = int(chosen.sum())
    assert n / int(maskable.sum()) == pytest.approx(0.15, abs=0.005)
    masked = (inputs == 4) & chosen
    kept = (inputs == ids) & chosen
    assert int(masked.sum()) / n == pytest.approx(0.8, abs=0.01)
    # kept = the 10% left alone plus random draws that hit the original id (1/1000)
    assert int(kept.sum()) / n == pytest.approx(0.1, abs=0.01)
    assert int((chosen & ~masked & ~kept).sum()) / n == pytest.approx(0.1, abs=0.01)
    again = mask_tokens(ids, maskable, 4, 1000, 0.15, torch.Generator().manual_seed(1))
    assert torch.equal(again[0], inputs) and torch.equal(again[1], labels)


def test_pad_batch_and_encode(bert_dir):
    ids, mask = pad_batch([[1, 2, 3], [4]], pad_id=0)
    assert ids.tolist() == [[1, 2, 3], [4, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    lm = load_language_model(bert_dir)
    seqs = encode(lm.tokenizer, ["d0w1 " * 50], max_length=10)
    assert len(seqs[0]) == 10 and seqs[0][0] == lm.tokenizer.cls_token_id and seqs[0][-1] == lm.tokenizer.sep_token_id


def test_infer_objective():
    from transformers import BertConfig, GPT2Config, LlamaConfig

    assert infer_objective(BertConfig()) == "mlm"
    assert infer_objective(BertConfig(architectures=["BertModel"])) == "mlm"
    assert infer_objective(BertConfig(architectures=["BertLMHeadModel"], is_decoder=True)) == "causal"
    assert infer_objective(LlamaConfig()) == "causal"
    assert infer_objective(GPT2Config()) == "causal"


def test_pretrain_config_names_bad_fields():
    with pytest.raises(ValueError, match="`mlm_probability`"):
        PretrainConfig(mlm_probability=0)
    with pytest.raises(ValueError, match="`batch_size`"):
        PretrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="objective"):
        PretrainConfig(objective="seq2seq")
    with pytest.raises(ValueError, match="`max_steps`"):
        PretrainConfig(max_steps=0)


def test_linear_schedule():
    assert [linear_schedule(s, 10, 2) for s in range(10)] == pytest.approx(
        [0.5, 1.0, 1.0, 7 / 8, 6 / 8, 5 / 8, 4 / 8, 3 / 8, 2 / 8, 1 / 8])
    assert linear_schedule(0, 5, 0) == 1.0


def test_bare_encoder_gets_a_fresh_seeded_head(bert_dir):
    from transformers import BertModel

    bare = BertModel.from_pretrained(bert_dir)
    a = load_language_model(bert_dir, seed=0)
    b = load_language_model(bert_dir, seed=0)
    c = load_language_model(bert_dir, seed=1)
    assert a.objective == "mlm"
    assert a.fresh_parameters and all(k.startswith("cls.") for k in a.fresh_parameters)
    enc = a.model.bert.state_dict()
    for k, v in bare.state_dict().items():
        if not k.startswith("pooler."):
            assert torch.equal(enc[k], v), k
    head = "cls.predictions.transform.dense.weight"
    assert torch.equal(a.model.state_dict()[head], b.model.state_dict()[head])
    assert not torch.equal(a.model.state_dict()[head], c.model.state_dict()[head])
    # the decoder is tied to the word embeddings
    decoder, embeddings = a.model.cls.predictions.decoder.weight, a.model.bert.embeddings.word_embeddings.weight
    assert decoder.data_ptr() == embeddings.data_ptr()


def test_checkpoint_with_head_loads_it(bert_mlm_dir):
    lm = load_language_model(bert_mlm_dir)
    assert lm.objective == "mlm" and lm.fresh_parameters == []


def test_mlm_loss_matches_transformers(bert_mlm_dir, task):
    lm = load_language_model(bert_mlm_dir)
    lm.model.eval()
    seqs = encode(lm.tokenizer, task.test.texts[:8], 32)
    ids, mask = pad_batch(seqs, lm.tokenizer.pad_token_id)
    special = torch.isin(ids, torch.tensor(lm.tokenizer.all_special_ids))
    inputs, labels = mask_tokens(ids, mask.bool() & ~special, lm.tokenizer.mask_token_id, len(lm.tokenizer), 0.3,
                                 torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = lm.model(input_ids=inputs, attention_mask=mask, labels=labels)
        total, n = token_losses(out.logits, labels, "mlm")
    assert float(total / n) == pytest.approx(float(out.loss), rel=1e-5)


def test_masked_positions_only_head_equals_full_logits(bert_dir, task):
    lm = load_language_model(bert_dir, seed=2)
    lm.model.eval()
    ids, mask = pad_batch(encode(lm.tokenizer, task.test.texts[:8], 32), lm.tokenizer.pad_token_id)
    special = torch.isin(ids, torch.tensor(lm.tokenizer.all_special_ids))
    inputs, labels = mask_tokens(ids, mask.bool() & ~special, lm.tokenizer.mask_token_id, len(lm.tokenizer), 0.15,
                                 torch.Generator().manual_seed(0))
    with torch.no_grad():
        fast_sum, fast_n = model_losses(lm.model, inputs, mask, labels, "mlm")
        full_sum, full_n = token_losses(lm.model(input_ids=inputs, attention_mask=mask).logits, labels, "mlm")
        hf = lm.model(input_ids=inputs, attention_mask=mask, labels=labels).loss
    assert int(fast_n) == int(full_n) > 0
    assert float(fast_sum) == pytest.approx(float(full_sum), rel=1e-5)
    assert float(fast_sum / fast_n) == pytest.approx(float(hf), rel=1e-5)


def test_causal_loss_matches_transformers_and_a_plain_loop(llama_dir, task):
    lm = load_language_model(llama_dir)
    assert lm.objective == "causal" and lm.fresh_parameters == []
    texts = task.test.texts[:6]
    result = lm_loss(lm, texts, max_length=32, batch_size=4)
    # oracle: transformers' mean loss of each text alone, weighted by its number of predicted tokens
    sums, counts = 0.0, 0
    with torch.no_grad():
        for s in encode(lm.tokenizer, texts, 32):
            ids = torch.tensor([s])
            sums += float(lm.model(input_ids=ids, labels=ids).loss) * (len(s) - 1)
            counts += len(s) - 1
    assert result.tokens == counts
    assert result.loss == pytest.approx(sums / counts, rel=1e-5)
    assert result.perplexity == pytest.approx(np.exp(result.loss))


@pytest.mark.parametrize("which", ["bert_dir", "llama_dir"])
def test_lm_loss_does_not_depend_on_batch_size(which, request, task):
    lm = load_language_model(request.getfixturevalue(which))
    texts = task.test.texts[:20]
    ref = lm_loss(lm, texts, max_length=32, batch_size=1, seed=5)
    for bs in (3, 20):
        other = lm_loss(lm, texts, max_length=32, batch_size=bs, seed=5)
        assert other.tokens == ref.tokens
        assert other.loss == pytest.approx(ref.loss, rel=1e-5)
    if lm.objective == "mlm":  # another seed draws other masks
        assert lm_loss(lm, texts, max_length=32, seed=6).tokens != ref.tokens or \
            lm_loss(lm, texts, max_length=32, seed=6).loss != pytest.approx(ref.loss, rel=1e-5)


@pytest.mark.parametrize("which", ["bert_dir", "llama_dir"])
def test_pretraining_lowers_the_loss_and_is_reproducible(which, request, task):
    torch.set_num_threads(1)
    folder = request.getfixturevalue(which)
    texts = task.train.texts[:64]
    config = PretrainConfig(learning_rate=3e-3, epochs=4, batch_size=16, max_length=32, seed=0, device="cpu")
    base = load_language_model(folder, seed=0)
    before = lm_loss(base, texts, max_length=32)
    lm = clone_language_model(base)
    result = pretrain(lm, texts, config)
    after = lm_loss(lm, texts, max_length=32)
    assert result.steps == 16 and result.examples == 4 * 64 and result.losses.shape == (16,)
    assert after.loss < before.loss - 0.5
    assert lm_loss(base, texts, max_length=32).loss == pytest.approx(before.loss)  # the clone was trained, not base
    again = clone_language_model(load_language_model(folder, seed=0))
    assert np.allclose(pretrain(again, texts, config).losses, result.losses, atol=1e-5)


@pytest.mark.parametrize("which,adapted", [("bert_dir", ("query", "value")), ("llama_dir", ("q_proj", "v_proj"))])
def test_lora_pretraining_changes_only_the_adapted_weights_and_merges(which, adapted, request, task):
    torch.set_num_threads(1)
    folder = request.getfixturevalue(which)
    texts = task.train.texts[:64]
    config = PretrainConfig(learning_rate=1e-2, epochs=4, batch_size=16, max_length=32, seed=0, device="cpu",
                            lora_r=4)
    base = load_language_model(folder, seed=0)
    before = lm_loss(base, texts, max_length=32).loss
    lm = clone_language_model(base)
    result = pretrain(lm, texts, config)
    assert not hasattr(lm.model, "peft_config") and type(lm.model) is type(base.model)  # merged: a plain model
    start = dict(base.model.named_parameters())
    changed = {n for n, p in lm.model.named_parameters() if not torch.equal(p, start[n])}
    assert changed and all(n.rsplit(".", 2)[-2] in adapted for n in changed), sorted(changed)[:5]
    assert lm_loss(lm, texts, max_length=32).loss < before  # q, v adapters of a tiny model: a small step
    again = clone_language_model(load_language_model(folder, seed=0))
    assert np.allclose(pretrain(again, texts, config).losses, result.losses, atol=1e-5)  # seeded adapters
    with pytest.raises(ValueError, match="lora_r"):
        PretrainConfig(lora_r=-1)


def test_max_steps_and_objective_checks(bert_dir, task):
    lm = load_language_model(bert_dir)
    result = pretrain(lm, task.train.texts[:64], PretrainConfig(max_steps=3, batch_size=8, device="cpu"))
    assert result.steps == 3 and result.examples == 24
    with pytest.raises(ValueError, match="loaded for 'mlm'"):
        pretrain(lm, ["x"], PretrainConfig(objective="causal", device="cpu"))
    with pytest.raises(ValueError, match="empty"):
        pretrain(lm, [], PretrainConfig(device="cpu"))
    with pytest.raises(FileNotFoundError, match="no such model folder"):
        load_language_model(str(bert_dir) + "-missing")


def test_head_parameters_are_the_untied_head():
    from transformers import BertConfig, BertForMaskedLM

    model = BertForMaskedLM(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                       intermediate_size=32, max_position_embeddings=32))
    names = sorted(n for n, _ in head_parameters(model))
    # the decoder's weight is the word embeddings' (base model); its bias is the head's own
    assert names == ["cls.predictions.bias", "cls.predictions.transform.LayerNorm.bias",
                     "cls.predictions.transform.LayerNorm.weight", "cls.predictions.transform.dense.bias",
                     "cls.predictions.transform.dense.weight"]
    with pytest.raises(ValueError, match="no separate base model"):
        head_parameters(model.bert)


def test_unigram_log_prior_and_output_bias(bert_dir, task):
    prior = unigram_log_prior([[1, 2, 2], [2, 3, 0]], 5, exclude=[0], smoothing=1.0)
    counts = np.array([0, 1, 3, 1, 0]) + 1.0  # id 0 excluded, every id smoothed
    assert np.allclose(prior.numpy(), np.log(counts / counts.sum()), atol=1e-6)
    lm = load_language_model(bert_dir, seed=0)
    texts = task.train.texts[:64]
    fresh = lm_loss(lm, texts, max_length=32).loss
    set_unigram_output_bias(lm, texts, max_length=32)
    assert torch.equal(lm.model.cls.predictions.bias, lm.model.cls.predictions.decoder.bias)
    assert lm_loss(lm, texts, max_length=32).loss < fresh - 0.5


def test_head_warm_up_trains_the_head_alone(bert_dir, task):
    torch.set_num_threads(1)
    texts = task.train.texts[:64]
    lm = load_language_model(bert_dir, seed=0)
    base_before = {k: v.clone() for k, v in lm.model.base_model.state_dict().items()}
    head_before = {n: p.detach().clone() for n, p in head_parameters(lm.model)}
    flags_before = [p.requires_grad for p in lm.model.parameters()]
    loss_before = lm_loss(lm, texts, max_length=32).loss
    config = PretrainConfig(learning_rate=5e-2, epochs=10, max_steps=30, batch_size=16, max_length=32, device="cpu")
    result = warm_up_head(lm, texts, config)
    assert result.steps == 30
    # every encoder weight (the word embeddings, which the decoder shares, included) is bit-for-bit unchanged
    for k, v in lm.model.base_model.state_dict().items():
        assert torch.equal(v, base_before[k]), k
    changed = [n for n, p in head_parameters(lm.model) if not torch.equal(p.detach(), head_before[n])]
    assert len(changed) == len(head_before)
    assert [p.requires_grad for p in lm.model.parameters()] == flags_before
    assert lm_loss(lm, texts, max_length=32).loss < loss_before - 0.3
    # the same seed and settings give the same head
    again = load_language_model(bert_dir, seed=0)
    warm_up_head(again, texts, config)
    for (n, p), (_, q) in zip(head_parameters(lm.model), head_parameters(again.model)):
        assert torch.allclose(p, q, atol=1e-6), n


def test_language_model_follows_its_device(bert_dir, task):
    lm = load_language_model(bert_dir)
    assert isinstance(lm, LanguageModel) and lm.device.type == "cpu"
    if torch.cuda.is_available():
        pretrain(lm, task.train.texts[:16], PretrainConfig(max_steps=1, device="cuda"))
        assert lm.device.type == "cuda"
        assert np.isfinite(lm_loss(lm, task.test.texts[:8]).loss)


@pytest.mark.slow
def test_packaged_smollm2_is_a_causal_lm_with_a_sane_loss():
    llm = pytest.importorskip("tunesift.rec.llm")
    try:
        folder = llm.convert_default_llm()
    except (ImportError, FileNotFoundError) as e:
        pytest.skip(f"SmolLM2 is not installed: {e}")
    lm = load_language_model(folder)
    assert lm.objective == "causal" and lm.fresh_parameters == []
    texts = ["The cat sat on the mat.", "Proteins fold into three-dimensional structures."]
    loss = lm_loss(lm, texts, max_length=32, batch_size=2)
    assert 1.0 < loss.loss < 7.0  # a trained model on plain English: perplexity in the tens
