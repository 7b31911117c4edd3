from tunesift.finetune.tiny import build_tiny_causal_lm


def test_tiny_model_roundtrips_text_and_is_reused(tiny_lm_path, tiny_lm):
    model, tok = tiny_lm
    text = "Zelda: Breath of the Wild é"
    assert tok.decode(tok(text)["input_ids"]) == text
    assert model.config.num_hidden_layers == 2 and model.config.vocab_size == len(tok)
    mtime = (tiny_lm_path / "model.safetensors").stat().st_mtime_ns
    assert build_tiny_causal_lm(["other"], tiny_lm_path) == tiny_lm_path
    assert (tiny_lm_path / "model.safetensors").stat().st_mtime_ns == mtime
