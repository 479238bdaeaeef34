"""decoding.py's pieces on their own (each family's tests check its generate against HF's)."""

import torch

from decoding import KVCache, beam_search, greedy_search


def test_kv_cache_writes_at_pos_returns_the_prefix_and_reorders_written_rows():
    torch.manual_seed(0)
    like = torch.empty(0, dtype=torch.float64)
    cache = KVCache(2, batch=3, heads=2, length=6, head_dim=4, like=like, memory=[("k0", "v0"), ("k1", "v1")])
    assert cache.length == 6 and cache[1].memory == ("k1", "v1") and cache[0].k.dtype == torch.float64
    k, v = torch.randn(3, 2, 6, 4, dtype=torch.float64), torch.randn(3, 2, 6, 4, dtype=torch.float64)
    got = cache[0].update(k[:, :, :3], v[:, :, :3], 0)  # a block, then single steps
    for pos in (3, 4):
        got = cache[0].update(k[:, :, pos : pos + 1], v[:, :, pos : pos + 1], pos)
    assert torch.equal(got[0], k[:, :, :5]) and torch.equal(got[1], v[:, :, :5])
    cache.reorder(torch.tensor([2, 2, 0]))  # beam search: row r continues row rows[r]
    assert torch.equal(cache[0].k[:, :, :5], k[[2, 2, 0], :, :5]) and torch.equal(
        cache[0].v[:, :, :5], v[[2, 2, 0], :, :5]
    )


def table_log_probs(table):
    """log_probs(seqs, t, rows) of a model whose next token depends on the last one only."""
    return lambda seqs, t, rows=None: table[seqs[:, t - 1]]


def test_gnmt_length_penalty_changes_the_ranking_as_its_formula_says():
    """Start 0, pad 1, EOS 2. From 0: EOS at once (log p -1.2) or word 3 (-0.5), then EOS (-1.5).
    Short: -1.2 / lp(1); long: -2.0 / lp(2). HF's lp(t) = t**a, GNMT's ((5 + t) / 6)**a."""
    table = torch.full((4, 4), -1e4)
    table[0, 2], table[0, 3], table[3, 2] = -1.2, -0.5, -1.5
    short, long_ = [0, 2], [0, 3, 2]
    for alpha in (0.0, 0.6, 1.0, 2.0):
        for gnmt, lp in ((False, lambda t, a=alpha: t**a), (True, lambda t, a=alpha: ((5 + t) / 6) ** a)):
            want = short if -1.2 / lp(1) > -2.0 / lp(2) else long_
            out = beam_search(table_log_probs(table), 1, 2, 4, 0, 1, 2, alpha, True, "cpu", gnmt=gnmt)[0].tolist()
            assert out[: len(want)] == want, (alpha, gnmt)
    # the two penalties disagree at alpha 1: HF's prefers the long one, GNMT's the short one
    assert -1.2 / 1 < -2.0 / 2 and -1.2 / 1 > -2.0 / (7 / 6)
    greedy = greedy_search(table_log_probs(table), lambda s: s.argmax(-1), 1, 4, 0, 1, 2, "cpu")
    assert greedy[0].tolist() == long_
