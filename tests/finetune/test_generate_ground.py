import numpy as np
import pytest
import torch

from tunesift.finetune.generate import GenerationSettings, clean_response, generate_responses
from tunesift.finetune.ground import (
    base_model,
    ground_and_score,
    item_states,
    last_token_states,
    model_fingerprint,
)

PROMPTS = ["### Input: Zelda; Halo 3;\n### Response:\n", "Tetris", "### Input: Doom Eternal; Tetris; Minecraft;\n### Response:\n"]


def greedy_oracle(model, tok, prompt, max_new):
    ids = torch.tensor([tok(prompt)["input_ids"]])
    out = []
    with torch.no_grad():
        for _ in range(max_new):
            nxt = int(model(input_ids=ids).logits[0, -1].argmax())
            if nxt == tok.eos_token_id:
                break
            out.append(nxt)
            ids = torch.cat([ids, torch.tensor([[nxt]])], 1)
    return clean_response(tok.decode(out, skip_special_tokens=True))


def test_greedy_generation_matches_a_plain_loop(tiny_lora):
    model, tok = tiny_lora
    got = generate_responses(model, tok, PROMPTS, GenerationSettings(num_beams=1, max_new_tokens=6, batch_size=3),
                             progress=False)
    assert got == [greedy_oracle(model, tok, p, 6) for p in PROMPTS]


def test_beam_search_does_not_depend_on_batching(tiny_lora):
    model, tok = tiny_lora
    s = GenerationSettings(num_beams=3, max_new_tokens=5, batch_size=3)
    batched = generate_responses(model, tok, PROMPTS, s, progress=False)
    alone = [generate_responses(model, tok, [p], s, progress=False)[0] for p in PROMPTS]
    assert batched == alone
    assert any(batched)


def test_generation_settings_validated():
    with pytest.raises(ValueError, match="`num_beams`"):
        GenerationSettings(num_beams=0)
    assert clean_response('  "Halo 3"\n') == "Halo 3"


def test_last_token_states_oracle_and_batch_invariance(tiny_lm):
    model, tok = tiny_lm
    texts = ["Super Mario Bros", "Halo 3", "The Legend of Zelda: a much longer title", ""]
    batched = last_token_states(model, tok, texts, batch_size=4)
    one = last_token_states(model, tok, texts, batch_size=1)
    np.testing.assert_allclose(batched, one, rtol=1e-4, atol=1e-5)
    with torch.no_grad():  # oracle: unpadded forward, final normed hidden state at the last token
        ids = torch.tensor([tok(texts[2])["input_ids"]])
        ref = model.model(input_ids=ids).last_hidden_state[0, -1].numpy()
        empty = model.model(input_ids=torch.tensor([[tok.eos_token_id]])).last_hidden_state[0, -1].numpy()
    np.testing.assert_allclose(batched[2], ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(batched[3], empty, rtol=1e-4, atol=1e-5)


def test_item_states_use_the_base_model_and_the_cache(tiny_lora, tmp_path, monkeypatch):
    model, tok = tiny_lora
    titles = ["Halo 3", "Tetris", "Portal 2"]
    with base_model(model):
        base = last_token_states(model, tok, titles)
    adapted = last_token_states(model, tok, titles)
    assert not np.allclose(base, adapted)  # the adapter matters...
    cached = item_states(model, tok, titles, cache_dir=tmp_path, progress=False)
    np.testing.assert_allclose(cached, base, rtol=1e-5)  # ...and item states ignore it
    assert len(list((tmp_path / "item_states").glob("*.npy"))) == 1
    import tunesift.finetune.ground as ground

    monkeypatch.setattr(ground, "last_token_states", lambda *a, **k: (_ for _ in ()).throw(AssertionError("recomputed")))
    np.testing.assert_array_equal(item_states(model, tok, titles, cache_dir=tmp_path, progress=False), cached)
    fp = model_fingerprint(model)
    with torch.no_grad():
        next(p for n, p in model.named_parameters() if "embed_tokens" in n).add_(1.0)
    assert model_fingerprint(model) != fp


def test_ground_and_score_ranks_by_l2():
    items = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
    gens = np.array([[0.9, 0.1], [0.0, 0.0]])
    # user 0: distances 0.906, 0.141, 1.931, 3.6 -> order 1, 0, 2, 3; user 1: order 0, 1, 2, 3
    g = ground_and_score(gens, items, [[0], [2, 3]], ks=[1, 2, 3], chunk_size=1)
    assert g.top_items.tolist() == [[1, 0, 2], [0, 1, 2]]
    assert [r.tolist() for r in g.truth_ranks] == [[1], [2, 3]]
    assert g.metrics.recall[1] == 0.0 and g.metrics.recall[2] == pytest.approx(0.5)
    assert g.metrics.recall[3] == pytest.approx((1 + 0.5) / 2)
    with pytest.raises(ValueError, match="same d"):
        ground_and_score(gens, items[:, :1], [[0], [1]], ks=[1])
