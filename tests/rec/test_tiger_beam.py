import os
import time

import pytest
import torch

from tunesift.rec.tiger.beam import BeamResult, ItemTrie, beams_to_topk, constrained_beam_search, score_items

torch.set_num_threads(1)

transformers = pytest.importorskip("transformers")

# level l of a semantic ID lies in its own id range: 2..9, 10..17, 18..25, and 26..30 for the collision code
LEVELS = [(2, 10), (10, 18), (18, 26), (26, 31)]
VOCAB = 31


def _t5(seed=0, dropout=0.0):
    torch.manual_seed(seed)
    config = transformers.T5Config(vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2,
                                   num_heads=2, dropout_rate=dropout, decoder_start_token_id=0, pad_token_id=0,
                                   eos_token_id=1)
    return transformers.T5ForConditionalGeneration(config).eval()


def _catalogue(n_items=40, seed=0):
    """(n_items, 4) unique random semantic IDs, in random row order."""
    g = torch.Generator().manual_seed(seed)
    rows: set[tuple[int, ...]] = set()
    while len(rows) < n_items:
        rows.add(tuple(int(torch.randint(lo, hi, (1,), generator=g)) for lo, hi in LEVELS))
    items = torch.tensor(sorted(rows))
    return items[torch.randperm(n_items, generator=g)]


def _histories(n_rows=12, length=9, seed=0):
    """Right-padded random histories of 1..length tokens: ids (B, T) with 0 at padding, mask (B, T)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, VOCAB, (n_rows, length), generator=g)
    lengths = torch.randint(1, length + 1, (n_rows,), generator=g)
    mask = (torch.arange(length)[None, :] < lengths[:, None]).long()
    return ids * mask, mask


@pytest.fixture(scope="module")
def setup():
    model, items = _t5(), _catalogue()
    ids, mask = _histories()
    return model, items, ItemTrie.build(items), ids, mask, score_items(model, ids, mask, items)


def _oracle_ranking(oracle):
    return torch.argsort(-oracle, dim=1, stable=True)  # ties by lower item index


# ---- the trie ------------------------------------------------------------------------------------------


def test_trie_tables_on_a_hand_example():
    items = torch.tensor([[3, 11, 18, 26], [2, 10, 19, 26], [2, 10, 18, 26], [2, 11, 18, 27]])
    trie = ItemTrie.build(items)
    assert [t.tolist() for t in trie.tokens] == [[2, 3], [10, 11], [18, 19], [26, 27]]
    # depth-1 nodes: (2,), (3,); depth-2: (2,10), (2,11), (3,11); depth-3: (2,10,18), (2,10,19), (2,11,18), (3,11,18)
    assert trie.children[0].tolist() == [[0, 1]]
    assert trie.children[1].tolist() == [[0, 1], [-1, 2]]
    assert trie.children[2].tolist() == [[0, 1], [2, -1], [3, -1]]
    assert trie.children[3].tolist() == [[2, -1], [1, -1], [-1, 3], [0, -1]]  # leaves are item rows
    assert all(c.dtype == torch.int32 for c in trie.children) and trie.n_items == 4 and trie.depth == 4
    tokens, child = trie.next_tokens(2, torch.tensor([[0, 2]]))
    assert tokens.tolist() == [18, 19] and child.tolist() == [[[0, 1], [3, -1]]]
    with pytest.raises(ValueError, match="depth"):
        trie.next_tokens(4, torch.tensor([0]))


def test_walking_the_trie_reaches_every_item():
    items = _catalogue(200, seed=3)
    trie = ItemTrie.build(items)
    node = torch.zeros(len(items), dtype=torch.long)
    for depth in range(trie.depth):
        tokens, child = trie.next_tokens(depth, node)  # (S,), (n, S)
        slot = torch.searchsorted(tokens, items[:, depth].contiguous())
        assert torch.equal(tokens[slot], items[:, depth])
        node = child.gather(1, slot[:, None]).squeeze(1).long()
        assert (node >= 0).all()
    assert torch.equal(node, torch.arange(len(items)))
    # every valid (node, token) pair is some item's prefix: the number of leaves equals the number of items
    assert int((trie.children[-1] >= 0).sum()) == len(items)


def test_trie_rejects_duplicates_and_bad_input():
    items = torch.tensor([[2, 10, 18, 26], [3, 10, 18, 26], [2, 10, 18, 26], [4, 11, 18, 26], [4, 11, 18, 26]])
    with pytest.raises(ValueError, match=r"rows \[0, 2\] are \[2, 10, 18, 26\].*rows \[3, 4\]"):
        ItemTrie.build(items)
    with pytest.raises(ValueError, match="item_tokens"):
        ItemTrie.build(torch.tensor([2, 10, 18]))
    with pytest.raises(ValueError, match="integer"):
        ItemTrie.build(torch.rand(3, 4))
    with pytest.raises(ValueError, match="non-negative"):
        ItemTrie.build(torch.tensor([[-1, 10]]))
    with pytest.raises(TypeError, match="item_tokens"):
        ItemTrie.build([[2, 10]])


def test_trie_memory_stays_modest_at_catalogue_scale():
    g = torch.Generator().manual_seed(0)
    codes = torch.unique(torch.randint(0, 256, (17_500, 3), generator=g), dim=0)[:17_332]
    items = torch.cat([codes + 2 + 256 * torch.arange(3), torch.full((len(codes), 1), 770)], dim=1)
    trie = ItemTrie.build(items)
    assert sum(c.numel() for c in trie.children) <= 256 + 256 * 256 + 17_332 * 256 + 17_332
    assert trie.children[2].shape[0] <= 17_332


# ---- exactness against the exhaustive oracle ------------------------------------------------------------


@pytest.mark.parametrize("use_cache", [True, False])
def test_exhaustive_beam_search_is_the_oracle_ranking(setup, use_cache):
    model, items, trie, ids, mask, oracle = setup
    ranking = _oracle_ranking(oracle)
    for num_beams in (len(items), len(items) + 5):
        result = constrained_beam_search(model, ids, mask, trie, num_beams=num_beams, use_cache=use_cache)
        assert isinstance(result, BeamResult)
        assert result.items.dtype == torch.int64 and result.scores.dtype == torch.float32
        assert result.items.shape == result.scores.shape == (len(ids), num_beams)
        assert torch.equal(result.items[:, : len(items)], ranking)
        torch.testing.assert_close(result.scores[:, : len(items)], oracle.gather(1, ranking), atol=1e-5, rtol=0)
        assert (result.items[:, len(items):] == -1).all() and (result.scores[:, len(items):] == float("-inf")).all()


def test_score_items_is_the_models_own_label_loss(setup):
    model, items, _, ids, mask, oracle = setup
    for row, item in [(0, 0), (3, 7), (11, 39), (5, 20)]:
        out = model(input_ids=ids[row : row + 1], attention_mask=mask[row : row + 1], labels=items[item][None])
        torch.testing.assert_close(oracle[row, item], -out.loss.detach() * items.shape[1], atol=1e-5, rtol=0)
    torch.testing.assert_close(score_items(model, ids, mask, items, batch_size=7), oracle, atol=1e-6, rtol=0)
    assert torch.equal(score_items(model, ids, mask, items, batch_size=1)[:1], score_items(model, ids[:1], mask[:1],
                                                                                              items, batch_size=1))


def _token_logprobs(model, ids, mask, items):
    """(B, n, L) log p(t_l | history, t_<l) of every item's every token, from the model's plain forward."""
    n, length = items.shape
    decoder_ids = torch.cat([torch.zeros(n, 1, dtype=torch.long), items[:, :-1]], dim=1).repeat(len(ids), 1)
    with torch.no_grad():
        logits = model(input_ids=ids.repeat_interleave(n, 0), attention_mask=mask.repeat_interleave(n, 0),
                       decoder_input_ids=decoder_ids).logits  # (B*n, L, V)
    logp = logits.log_softmax(-1).gather(-1, items.repeat(len(ids), 1)[..., None])
    return logp.view(len(ids), n, length)


def _surely_found(token_logp, items, num_beams, tol=1e-4):
    """(B, n) True where every prefix of the item is among the best `num_beams` prefixes of its length over the
    whole catalogue (counting near-ties against it): beam search must then keep it at every step."""
    partial = token_logp.cumsum(-1)  # (B, n, L) score of each item's length-(l+1) prefix
    sure = torch.ones(partial.shape[:2], dtype=torch.bool)
    for depth in range(items.shape[1]):
        _, group = torch.unique(items[:, : depth + 1], dim=0, return_inverse=True)  # (n,) prefix id
        n_groups = int(group.max()) + 1
        best = torch.full((len(partial), n_groups), float("-inf")).scatter_reduce(
            1, group.expand(len(partial), -1), partial[..., depth], reduce="amax")  # (B, G)
        own = partial[..., depth]  # (B, n)
        rivals = (best[:, None, :] > own[..., None] - tol).sum(-1) - 1  # other prefixes as good or nearly
        sure &= rivals < num_beams
    return sure


def test_narrow_beams_are_valid_distinct_sorted_and_exactly_scored():
    model, items = _t5(seed=1), _catalogue(seed=1)
    trie = ItemTrie.build(items)
    ids, mask = _histories(n_rows=64, seed=1)
    token_logp = _token_logprobs(model, ids, mask, items)
    oracle = score_items(model, ids, mask, items)
    torch.testing.assert_close(oracle, token_logp.sum(-1), atol=1e-5, rtol=0)
    for num_beams in (5, 10, 20):
        result = constrained_beam_search(model, ids, mask, trie, num_beams=num_beams)
        found, scores = result.items, result.scores
        assert ((found >= 0) & (found < len(items))).all()
        assert all(len(set(row)) == num_beams for row in found.tolist())
        assert (scores[:, 1:] <= scores[:, :-1]).all()
        torch.testing.assert_close(scores, oracle.gather(1, found), atol=1e-5, rtol=0)
        # the j-th best found item cannot beat the j-th best item overall
        assert (scores <= oracle.sort(dim=1, descending=True).values[:, :num_beams] + 1e-5).all()
        # an item whose every prefix is globally among the best num_beams is always found
        sure = _surely_found(token_logp, items, num_beams)
        hit = torch.zeros_like(sure).scatter_(1, found, True)
        assert hit[sure].all()
        # in particular the best item, when it is also the best prefix at every depth
        top = oracle.argmax(dim=1)
        top_is_sure = sure.gather(1, top[:, None]).squeeze(1)
        assert (found[top_is_sure] == top[top_is_sure, None]).any(dim=1).all()
        assert top_is_sure.float().mean() > 0.5  # not vacuous: true for 70% of rows at 5 beams, 97% at 20
    # with the same pruning, the step-by-step cache and the whole-prefix forward agree
    reference = constrained_beam_search(model, ids, mask, trie, num_beams=20, use_cache=False)
    assert torch.equal(reference.items, found)
    torch.testing.assert_close(reference.scores, scores, atol=1e-5, rtol=0)


def test_greedy_search_follows_the_best_prefix_at_every_step(setup):
    """num_beams=1 is constrained greedy decoding: at each depth it takes the best valid next token."""
    model, items, trie, ids, mask, _ = setup
    result = constrained_beam_search(model, ids, mask, trie, num_beams=1)
    for row in range(len(ids)):
        prefix: list[int] = []
        for depth in range(items.shape[1]):
            decoder_ids = torch.tensor([[0] + prefix])
            with torch.no_grad():
                logits = model(input_ids=ids[row : row + 1], attention_mask=mask[row : row + 1],
                               decoder_input_ids=decoder_ids).logits[0, -1]
            match = (items[:, :depth] == torch.tensor(prefix, dtype=torch.long)).all(dim=1)
            allowed = items[match, depth].unique()
            prefix.append(int(allowed[logits[allowed].argmax()]))
        expected = int((items == torch.tensor(prefix)).all(dim=1).nonzero())
        assert result.items[row, 0].item() == expected


# ---- invariances ----------------------------------------------------------------------------------------


def test_batch_size_padding_and_repeat_invariance(setup):
    model, items, trie, ids, mask, _ = setup
    full = constrained_beam_search(model, ids, mask, trie, num_beams=6, batch_size=256)
    small = constrained_beam_search(model, ids, mask, trie, num_beams=6, batch_size=3)
    again = constrained_beam_search(model, ids, mask, trie, num_beams=6, batch_size=256)
    assert torch.equal(small.items, full.items)
    torch.testing.assert_close(small.scores, full.scores, atol=1e-5, rtol=0)
    assert torch.equal(again.items, full.items) and torch.equal(again.scores, full.scores)
    # extra padding columns, and each row alone without any padding
    wider = constrained_beam_search(model, torch.cat([ids, torch.zeros(len(ids), 4, dtype=ids.dtype)], 1),
                                    torch.cat([mask, torch.zeros(len(ids), 4, dtype=mask.dtype)], 1), trie, 6)
    assert torch.equal(wider.items, full.items)
    torch.testing.assert_close(wider.scores, full.scores, atol=1e-5, rtol=0)
    for row in range(len(ids)):
        n = int(mask[row].sum())
        alone = constrained_beam_search(model, ids[row : row + 1, :n], mask[row : row + 1, :n], trie, 6)
        assert torch.equal(alone.items[0], full.items[row])
        torch.testing.assert_close(alone.scores[0], full.scores[row], atol=1e-5, rtol=0)


def test_ties_go_to_the_lower_token_then_the_lower_item():
    model, items = _t5(), _catalogue()
    with torch.no_grad():
        model.lm_head.weight.zero_()  # every next-token distribution is uniform: all items tie
    trie = ItemTrie.build(items)
    ids, mask = _histories(n_rows=3)
    everything = constrained_beam_search(model, ids, mask, trie, num_beams=len(items))
    assert (everything.items == torch.arange(len(items))).all()
    assert torch.equal(everything.scores, torch.full_like(everything.scores, everything.scores[0, 0].item()))
    # pruning keeps the lexicographically first prefixes; the final list is in item order
    lexicographic = sorted(range(len(items)), key=lambda i: items[i].tolist())
    narrow = constrained_beam_search(model, ids, mask, trie, num_beams=5)
    assert (narrow.items == torch.tensor(sorted(lexicographic[:5]))).all()


def test_a_catalogue_smaller_than_the_beam_is_padded():
    model, items = _t5(), _catalogue(3, seed=4)
    ids, mask = _histories(n_rows=5, seed=4)
    oracle = score_items(model, ids, mask, items)
    for use_cache in (True, False):
        result = constrained_beam_search(model, ids, mask, ItemTrie.build(items), num_beams=5, use_cache=use_cache)
        assert torch.equal(result.items[:, :3], _oracle_ranking(oracle))
        torch.testing.assert_close(result.scores[:, :3], oracle.sort(dim=1, descending=True).values, atol=1e-5,
                                   rtol=0)
        assert (result.items[:, 3:] == -1).all() and torch.isneginf(result.scores[:, 3:]).all()
        assert beams_to_topk(result, 4)[:, 3].eq(-1).all()


def test_single_item_catalogue_and_empty_batch():
    model = _t5()
    trie = ItemTrie.build(torch.tensor([[2, 10, 18, 26]]))
    ids, mask = _histories(n_rows=2)
    result = constrained_beam_search(model, ids, mask, trie, num_beams=2)
    assert result.items.tolist() == [[0, -1], [0, -1]] and torch.isfinite(result.scores[:, 0]).all()
    empty = constrained_beam_search(model, ids[:0], mask[:0], trie, num_beams=2)
    assert empty.items.shape == empty.scores.shape == (0, 2)


def test_training_flag_is_restored_and_eval_mode_is_used():
    model, items = _t5(dropout=0.5), _catalogue()
    trie = ItemTrie.build(items)
    ids, mask = _histories(n_rows=4)
    reference = constrained_beam_search(model, ids, mask, trie, num_beams=8)  # model is in eval mode
    oracle = score_items(model, ids, mask, items)
    model.train()
    result = constrained_beam_search(model, ids, mask, trie, num_beams=8)
    assert model.training
    assert torch.equal(result.items, reference.items) and torch.equal(result.scores, reference.scores)
    assert torch.equal(score_items(model, ids, mask, items), oracle) and model.training
    assert all(m.training for m in model.modules())


def test_length_normalize_divides_by_the_id_length(setup):
    model, _, trie, ids, mask, _ = setup
    total = constrained_beam_search(model, ids, mask, trie, num_beams=5)
    mean = constrained_beam_search(model, ids, mask, trie, num_beams=5, length_normalize=True)
    assert torch.equal(mean.items, total.items)
    torch.testing.assert_close(mean.scores, total.scores / 4)


def test_beams_to_topk(setup):
    model, _, trie, ids, mask, _ = setup
    result = constrained_beam_search(model, ids, mask, trie, num_beams=5)
    assert torch.equal(beams_to_topk(result, 3), result.items[:, :3])
    assert torch.equal(beams_to_topk(result, 5), result.items)
    with pytest.raises(ValueError, match="exceed"):
        beams_to_topk(result, 6)
    with pytest.raises(ValueError, match="`k`"):
        beams_to_topk(result, 0)


def test_inputs_are_validated(setup):
    model, items, trie, ids, mask, _ = setup
    with pytest.raises(ValueError, match="num_beams"):
        constrained_beam_search(model, ids, mask, trie, num_beams=0)
    with pytest.raises(ValueError, match="batch_size"):
        constrained_beam_search(model, ids, mask, trie, num_beams=2, batch_size=0)
    with pytest.raises(ValueError, match="attention_mask"):
        constrained_beam_search(model, ids, mask[:, :-1], trie, num_beams=2)
    bad = mask.clone()
    bad[2] = 0
    with pytest.raises(ValueError, match=r"rows \[2\]"):
        constrained_beam_search(model, ids, bad, trie, num_beams=2)
    with pytest.raises(ValueError, match="input_ids"):
        constrained_beam_search(model, ids.float(), mask, trie, num_beams=2)
    with pytest.raises(ValueError, match="vocabulary"):
        constrained_beam_search(model, ids, mask, ItemTrie.build(torch.tensor([[2, 10, 18, VOCAB]])), num_beams=2)
    with pytest.raises(TypeError, match="ItemTrie"):
        constrained_beam_search(model, ids, mask, items, num_beams=2)
    with pytest.raises(ValueError, match="vocabulary"):
        score_items(model, ids, mask, torch.tensor([[2, 10, 18, VOCAB]]))


def test_whole_prefix_path_serves_any_encoder_decoder():
    torch.manual_seed(0)
    config = transformers.BartConfig(vocab_size=VOCAB, d_model=16, encoder_layers=1, decoder_layers=1,
                                     encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                                     decoder_ffn_dim=32, max_position_embeddings=32, dropout=0.0, pad_token_id=0,
                                     bos_token_id=0, eos_token_id=1, decoder_start_token_id=0,
                                     forced_eos_token_id=None)
    model = transformers.BartForConditionalGeneration(config).eval()
    items = _catalogue(12, seed=5)
    ids, mask = _histories(n_rows=4, seed=5)
    with pytest.raises(TypeError, match="use_cache=False"):
        constrained_beam_search(model, ids, mask, ItemTrie.build(items), num_beams=12)
    result = constrained_beam_search(model, ids, mask, ItemTrie.build(items), num_beams=12, use_cache=False)
    oracle = score_items(model, ids, mask, items)
    assert torch.equal(result.items, _oracle_ranking(oracle))
    torch.testing.assert_close(result.scores, oracle.gather(1, result.items), atol=1e-5, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_search_follows_the_model_device(setup):
    model, items, trie, ids, mask, _ = setup
    cpu = constrained_beam_search(model, ids, mask, trie, num_beams=len(items))
    gpu_model = _t5().cuda()
    gpu = constrained_beam_search(gpu_model, ids, mask, trie, num_beams=len(items))
    oracle = score_items(gpu_model, ids, mask, items)
    assert gpu.items.device.type == "cuda" and oracle.device.type == "cuda"
    torch.testing.assert_close(gpu.scores.cpu(), cpu.scores, atol=1e-4, rtol=0)
    torch.testing.assert_close(gpu.scores, oracle.gather(1, gpu.items), atol=1e-5, rtol=0)


# ---- timing (reported, not asserted): TUNESIFT_BENCH=1 pytest tests/rec/test_tiger_beam.py -k timing -s ------


@pytest.mark.skipif(os.environ.get("TUNESIFT_BENCH") != "1", reason="timing report; set TUNESIFT_BENCH=1")
def test_timing_report():
    torch.set_num_threads(2)
    n_users = int(os.environ.get("TUNESIFT_BENCH_USERS", "2000"))
    torch.manual_seed(0)
    config = transformers.T5Config(vocab_size=3100, d_model=128, d_kv=64, d_ff=1024, num_layers=4,
                                   num_decoder_layers=4, num_heads=6, dropout_rate=0.0, decoder_start_token_id=0,
                                   pad_token_id=0, eos_token_id=1)
    model = transformers.T5ForConditionalGeneration(config).eval()
    g = torch.Generator().manual_seed(0)
    codes = torch.unique(torch.randint(0, 256, (16_000, 3), generator=g), dim=0)
    codes = codes[torch.randperm(len(codes), generator=g)[:15_000].sort().values]
    codes = torch.cat([codes, codes[torch.randint(0, 800, (17_332 - 15_000,), generator=g)]])  # collisions
    _, group = torch.unique(codes, dim=0, return_inverse=True)
    order = torch.argsort(group, stable=True)
    collision = torch.empty_like(group)
    collision[order] = torch.arange(len(group)) - torch.searchsorted(group[order], group[order])
    items = torch.cat([codes + 2 + 256 * torch.arange(3), (770 + collision)[:, None]], dim=1)
    start = time.perf_counter()
    trie = ItemTrie.build(items)
    print(f"\ntrie: {time.perf_counter() - start:.2f} s, tables {[tuple(c.shape) for c in trie.children]}")
    ids = torch.randint(2, 3100, (n_users, 60), generator=g)
    mask = torch.ones_like(ids)
    results = {}
    for use_cache in (True, False):
        start = time.perf_counter()
        results[use_cache] = constrained_beam_search(model, ids, mask, trie, num_beams=20, use_cache=use_cache)
        seconds = time.perf_counter() - start
        per_thousand = 1000 * seconds / n_users
        print(f"use_cache={use_cache}: {seconds:.1f} s for {n_users} users = {per_thousand:.1f} s per 1,000")
    print("same items:", torch.equal(results[True].items, results[False].items))
