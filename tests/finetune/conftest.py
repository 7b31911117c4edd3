import pytest
import torch

# The test machine's cores are shared: one intra-op thread avoids oversubscription stalls (100x here).
torch.set_num_threads(1)

TEXTS = [
    "Below is an instruction. ### Input: The user has purchased: Super Mario Bros; Zelda; Halo 3;",
    "### Response:", "Super Mario Bros", "The Legend of Zelda", "Halo 3", "Tetris", "Portal 2",
    "Final Fantasy VII", "Minecraft", "Doom Eternal",
] * 20


@pytest.fixture(scope="session")
def tiny_lm_path(tmp_path_factory):
    from tunesift.finetune.tiny import build_tiny_causal_lm

    return build_tiny_causal_lm(TEXTS, tmp_path_factory.mktemp("tiny-lm"), seed=0, vocab_size=300)


@pytest.fixture
def tiny_lm(tiny_lm_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(tiny_lm_path).eval(), AutoTokenizer.from_pretrained(tiny_lm_path)


@pytest.fixture
def tiny_lora(tiny_lm):
    import torch
    from peft import LoraConfig, get_peft_model

    model, tok = tiny_lm
    torch.manual_seed(1)
    cfg = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, cfg)
    # LoRA B starts at zero; make the adapter non-trivial so "base vs adapted" differ
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    return peft_model, tok
