import math

import pytest
import torch

from tunesift.finetune.lora import (
    IGNORE,
    LoraTrainSettings,
    encode_samples,
    token_loss_sum,
    train_lora,
    validation_loss,
    _collate,
)

SAMPLES = [
    ("Below is an instruction. ### Response:\n", "Super Mario Bros"),
    ("### Input: Zelda; Halo 3;\n### Response:\n", "Tetris"),
    ("### Input: Portal 2;\n### Response:\n", "Minecraft"),
    ("### Input: Doom Eternal; Tetris; Halo 3; Minecraft;\n### Response:\n", "Final Fantasy VII"),
    ("### Input: Halo 3;\n### Response:\n", "Portal 2"),
]


def test_encode_masks_the_prompt_only_when_asked(tiny_lm):
    _, tok = tiny_lm
    p_ids = tok(SAMPLES[0][0])["input_ids"]
    r_ids = tok(SAMPLES[0][1], add_special_tokens=False)["input_ids"]
    full, masked = encode_samples(tok, SAMPLES[:1])[0], encode_samples(tok, SAMPLES[:1], train_on_prompt=False)[0]
    assert full.input_ids == p_ids + r_ids + [tok.eos_token_id] == full.labels
    assert masked.input_ids == full.input_ids
    assert masked.labels == [IGNORE] * len(p_ids) + r_ids + [tok.eos_token_id]
    cut = encode_samples(tok, SAMPLES[:1], max_length=4)[0]
    assert cut.truncated and cut.input_ids == full.input_ids[:4]
    with pytest.raises(TypeError, match="sample 0"):
        encode_samples(tok, [42])


@pytest.mark.parametrize("train_on_prompt", [True, False])
def test_token_loss_sum_matches_hf_loss(tiny_lm, train_on_prompt):
    model, tok = tiny_lm
    enc = encode_samples(tok, SAMPLES, train_on_prompt=train_on_prompt)
    ids, mask, labels = _collate(enc, tok.pad_token_id)
    loss, n = token_loss_sum(model, ids, mask, labels)
    # oracle: Hugging Face's own shifted cross-entropy (mean over label tokens), times their count
    ref = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    assert n == int((labels[:, 1:] != IGNORE).sum())
    assert float(loss.detach()) / n == pytest.approx(float(ref.detach()), rel=1e-5)


def _train(tiny_lora_factory, micro):
    model, tok = tiny_lora_factory()
    s = LoraTrainSettings(learning_rate=1e-2, epochs=1, batch_size=5, micro_batch_size=micro, warmup_steps=0,
                          max_grad_norm=None, patience=0, seed=3)
    train_lora(model, tok, SAMPLES, settings=s, progress=False)
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def test_update_does_not_depend_on_micro_batch_size(tiny_lm_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    def factory():
        torch.manual_seed(0)
        m = AutoModelForCausalLM.from_pretrained(tiny_lm_path)
        cfg = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"])
        return get_peft_model(m, cfg), AutoTokenizer.from_pretrained(tiny_lm_path)

    whole, split = _train(factory, 5), _train(factory, 2)
    assert whole.keys() == split.keys()
    moved = 0
    for name in whole:
        torch.testing.assert_close(whole[name], split[name], rtol=1e-4, atol=1e-6)
        moved += int(whole[name].abs().sum() > 0)
    assert moved == len(whole)  # lora_B left zero would make this test vacuous


def test_training_lowers_loss_and_restores_best(tiny_lora):
    model, tok = tiny_lora
    val = SAMPLES[:2]
    enc_val = encode_samples(tok, val)
    before = validation_loss(model, enc_val, tok.pad_token_id)
    s = LoraTrainSettings(learning_rate=3e-2, epochs=30, batch_size=2, micro_batch_size=2, warmup_steps=2,
                          patience=3, seed=0)
    result = train_lora(model, tok, SAMPLES, val, settings=s, progress=False)
    assert result.best_val_loss < before
    assert result.n_train == 5 and result.n_val == 2 and result.steps == len([1 for _ in result.history]) * 3
    # the weights left in the model are those of the best validation
    assert validation_loss(model, enc_val, tok.pad_token_id) == pytest.approx(result.best_val_loss, rel=1e-5)
    vals = [h["val_loss"] for h in result.history]
    assert min(vals) == pytest.approx(result.best_val_loss)
    if result.stopped_early:
        assert all(v >= result.best_val_loss for v in vals[-3:])


def test_settings_are_validated():
    with pytest.raises(ValueError, match="`micro_batch_size`"):
        LoraTrainSettings(micro_batch_size=0)
    with pytest.raises(ValueError, match="`precision`"):
        LoraTrainSettings(precision="fp8")
    with pytest.raises(ValueError, match="`learning_rate`"):
        LoraTrainSettings(learning_rate=math.nan)


def test_no_trainable_parameters_is_an_error(tiny_lm):
    model, tok = tiny_lm
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="trainable"):
        train_lora(model, tok, SAMPLES, progress=False)
