"""xlnet.py against HF transformers' XLNet: both streams with random factorization orders, padding,
two segments, memory from a previous segment, bi_data, clamp_len, the causal attention type,
gradients, the classifier, checkpoints both ways, and bad input."""

import pytest
import torch
import transformers

import xlnet as X

ATOL = 1e-4


def config(**kw):
    return X.XLNetConfig.from_preset("xlnet-tiny-test", dropout=0.0, **kw)


def twin(cls=X.XLNetLMHeadModel, hf_cls=transformers.XLNetLMHeadModel, **kw):
    c = config(**kw)
    torch.manual_seed(0)
    hf = hf_cls(transformers.XLNetConfig(**c.to_hf(cls.hf_architecture))).eval()
    ours = cls(c).eval()
    ours.load_hf_state_dict(hf.state_dict())
    return ours, hf


def batch(B=4, T=9, P=3, seed=0):
    """Left-padded rows (XLNet's convention), two segments, a random factorization order per row:
    perm_mask[b, i, j] = 1 when j comes after i in the order (i may not see j); the last P of the
    order are predicted (target_mapping one-hot rows) and may not see themselves."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(6, 99, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, :2] = mask[3, :4] = 0
    types = (torch.arange(T)[None] >= T // 2).long().expand(B, T).clone()
    perm, mapping = torch.zeros(B, T, T), torch.zeros(B, P, T)
    for b in range(B):
        order = torch.randperm(T, generator=g)
        rank = torch.empty(T, dtype=torch.long)
        rank[order] = torch.arange(T)
        perm[b] = (rank[None, :] >= rank[:, None]).float()  # j at or after i in the order: hidden from i
        perm[b].diagonal().zero_()  # the content stream's own token: XLNet's masks handle it
        for k, pos in enumerate(order[-P:]):
            mapping[b, k, pos] = 1
            perm[b, :, pos] = 1  # targets are hidden from everyone's content (partial prediction)
    return dict(input_ids=ids, attention_mask=mask, token_type_ids=types, perm_mask=perm, target_mapping=mapping)


def test_content_stream_matches_hf_on_padded_two_segment_rows():
    ours, hf = twin(X.XLNetModel, transformers.XLNetModel)
    x = {k: v for k, v in batch().items() if k not in ("perm_mask", "target_mapping")}
    with torch.no_grad():
        a, b = ours(**x).last_hidden_state, hf(**x).last_hidden_state
    real = x["attention_mask"].bool()
    torch.testing.assert_close(a[real], b[real], atol=ATOL, rtol=0)


@pytest.mark.parametrize("kw", [{}, {"bi_data": True}, {"clamp_len": 3}])
def test_query_stream_logits_and_gradients_match_hf(kw):
    ours, hf = twin(**kw)
    x = batch()
    labels = torch.randint(6, 99, (4, 3), generator=torch.Generator().manual_seed(1))
    a, b = ours(**x, labels=labels), hf(**x, labels=labels)
    torch.testing.assert_close(a.logits, b.logits, atol=ATOL, rtol=0)
    torch.testing.assert_close(a.loss, b.loss, atol=1e-5, rtol=0)
    a.loss.backward()
    b.loss.backward()
    grads = dict(hf.named_parameters())
    for ours_key, hf_key in ours.hf_key_map().items():
        mine = dict(ours.named_parameters())[ours_key].grad
        theirs = grads[hf_key].grad if hf_key in grads else None
        if theirs is None and hf_key == "lm_loss.bias":
            continue
        torch.testing.assert_close(mine, theirs, atol=ATOL, rtol=0, msg=ours_key)


def test_padding_rows_of_target_mapping_match_hf():
    """A prediction row of zeros (padding, fewer targets than P) gives HF's output for it (the query stream
    attends from each prediction's own position; HF maps the queries onto all positions and back)."""
    ours, hf = twin(X.XLNetModel, transformers.XLNetModel)
    x = batch()
    x["target_mapping"][0, 2] = 0
    x["target_mapping"][3, 0] = 0
    with torch.no_grad():
        torch.testing.assert_close(ours(**x).last_hidden_state, hf(**x).last_hidden_state, atol=ATOL, rtol=0)
    twice = x["target_mapping"].clone()
    twice[1, 1] = twice[1, 0]
    with pytest.raises(ValueError, match="predicted twice"):
        ours(**{**x, "target_mapping": twice})


@pytest.mark.parametrize("attn_type", ["bi", "uni"])
def test_query_stream_from_its_own_positions_equals_mapping_onto_all_positions(attn_type, monkeypatch):
    """The query stream's gathered rows and relative-position columns give what mapping the P queries onto
    all T positions and back gives (HF's formulation; "uni" too, which HF cannot run with a permutation)."""
    torch.manual_seed(0)
    m = X.XLNetModel(X.XLNetConfig.from_preset("xlnet-tiny-test", attn_type=attn_type, dropout=0.0)).eval()
    x = batch()
    ids, mapping = x["input_ids"], x["target_mapping"]
    perm = torch.zeros(4, 9, 9)
    perm[torch.arange(4)[:, None], :, mapping.argmax(-1)] = 1  # the targets hidden from every content token
    with torch.no_grad():
        ours = m(ids, perm_mask=perm, target_mapping=mapping).last_hidden_state
    original = X.RelativeAttention.forward

    def mapped(self, h, g, mask_h, mask_g, r, diff, mem=None, target_mapping=None):
        h_out, _ = original(self, h, None, mask_h, mask_g, r, diff, mem, None)
        k, v = (torch.einsum("bjc,chd->bjhd", h, w) for w in (self.k, self.v))
        kr = torch.einsum("brc,chd->brhd", r, self.r)
        q = torch.einsum("bmhd,bml->blhd", torch.einsum("bmc,chd->bmhd", g, self.q), target_mapping)
        return h_out, self.post(g, torch.einsum("blhd,bml->bmhd", self.core(q, k, v, kr, diff, mask_g), target_mapping))

    monkeypatch.setattr(X.RelativeAttention, "forward", mapped)
    with torch.no_grad():
        theirs = m(ids, perm_mask=perm, target_mapping=mapping).last_hidden_state
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)


def test_a_prediction_depends_only_on_tokens_before_it_in_the_order():
    """By gradients through the word embeddings: the query stream at a position depends on every token
    earlier in the factorization order, on none later, and not on its own token."""
    ours, _ = twin(X.XLNetModel, transformers.XLNetModel)
    T = 8
    order = torch.tensor([3, 0, 6, 1, 7, 2, 5, 4])
    rank = torch.empty(T, dtype=torch.long)
    rank[order] = torch.arange(T)
    perm = (rank[None, :] >= rank[:, None]).float()[None]  # i may not see j at or after it (itself: the h stream may)
    ids = torch.randint(6, 99, (1, T), generator=torch.Generator().manual_seed(0))
    w = torch.randn(32, generator=torch.Generator().manual_seed(1))
    for target in (1, 5, 4):
        mapping = torch.zeros(1, 1, T)
        mapping[0, 0, target] = 1
        emb = ours.word_embedding(ids).detach().requires_grad_(True)
        hook = ours.word_embedding.register_forward_hook(lambda mod, args, out, emb=emb: emb)
        try:
            out = ours(ids, perm_mask=perm, target_mapping=mapping).last_hidden_state  # (1, 1, C)
        finally:
            hook.remove()
        (out[0, 0] * w).sum().backward()
        touched = emb.grad[0].abs().sum(-1) > 0  # (T,)
        assert touched.tolist() == (rank < rank[target]).tolist(), (target, touched)


def test_causal_attention_type_matches_hf():
    """attn_type "uni" (Transformer-XL's causal mask; HF's model breaks when it is combined with a padding or
    permutation mask, so it is compared on its own)."""
    ours, hf = twin(X.XLNetModel, transformers.XLNetModel, attn_type="uni", mem_len=4)
    ids = batch()["input_ids"]
    with torch.no_grad():
        a, b = ours(ids, use_mems=True), hf(input_ids=ids, use_mems=True)
        torch.testing.assert_close(a.last_hidden_state, b.last_hidden_state, atol=ATOL, rtol=0)
        a2, b2 = ours(ids, mems=a.mems), hf(input_ids=ids, mems=b.mems)
    torch.testing.assert_close(a2.last_hidden_state, b2.last_hidden_state, atol=ATOL, rtol=0)


def test_memory_from_a_previous_segment_matches_hf():
    ours, hf = twin(mem_len=6, reuse_len=5)
    first, second = batch(seed=0), batch(seed=1)
    with torch.no_grad():
        a1, b1 = ours(first["input_ids"], use_mems=True), hf(input_ids=first["input_ids"], use_mems=True)
        assert len(a1.mems) == 2 and a1.mems[0].shape == (4, 5, 32)  # reuse_len tokens, within mem_len
        for m, n in zip(a1.mems, b1.mems, strict=True):
            torch.testing.assert_close(m, n.transpose(0, 1), atol=ATOL, rtol=0)  # HF keeps (M, B, C)
        a2 = ours(**second, mems=a1.mems, use_mems=True)
        b2 = hf(**second, mems=b1.mems, use_mems=True)
    torch.testing.assert_close(a2.logits, b2.logits, atol=ATOL, rtol=0)
    assert a2.mems[0].shape == (4, 6, 32)  # the last mem_len of memory + reused tokens


def test_sequence_classifier_matches_hf_and_checkpoints_round_trip(tmp_path):
    ours, hf = twin(X.XLNetForSequenceClassification, transformers.XLNetForSequenceClassification, num_labels=3)
    x = {k: v for k, v in batch().items() if k not in ("perm_mask", "target_mapping")}
    y = torch.tensor([0, 2, 1, 2])
    a, b = ours(**x, labels=y), hf(**x, labels=y)
    torch.testing.assert_close(a.logits, b.logits, atol=ATOL, rtol=0)
    torch.testing.assert_close(a.loss, b.loss, atol=1e-5, rtol=0)
    lm, _ = twin()
    lm.save_pretrained(tmp_path / "lm")
    back = transformers.XLNetLMHeadModel.from_pretrained(tmp_path / "lm").eval()
    again = X.XLNetLMHeadModel.from_pretrained(tmp_path / "lm").eval()
    x = batch()
    with torch.no_grad():
        torch.testing.assert_close(lm(**x).logits, back(**x).logits, atol=ATOL, rtol=0)
        torch.testing.assert_close(lm(**x).logits, again(**x).logits, atol=0, rtol=0)
    with pytest.warns(UserWarning, match="newly initialized.*summary"):
        X.XLNetForSequenceClassification.from_pretrained(tmp_path / "lm")  # the head starts fresh


def test_presets_have_hfs_parameter_counts():
    for name in ("xlnet-base-cased", "xlnet-large-cased"):
        c = X.XLNetConfig.from_preset(name)
        with torch.device("meta"):
            ours = sum(p.numel() for p in X.XLNetModel(c).parameters())
            theirs = sum(
                p.numel() for p in transformers.XLNetModel(transformers.XLNetConfig(**c.to_hf("x"))).parameters()
            )
        assert ours == theirs, name
    assert ours == 360_268_800  # xlnet-large-cased's transformer


def test_bad_input():
    ours, _ = twin()
    x = batch()
    with pytest.raises(ValueError, match="perm_mask must have the shape"):
        ours(**{**x, "perm_mask": x["perm_mask"][:, :5]})
    with pytest.raises(ValueError, match="target_mapping must be"):
        ours(**{**x, "target_mapping": x["target_mapping"][:, :, :5]})
    bad = x["target_mapping"].clone()
    bad[0, 0, :2] = 1  # two positions for one prediction (an all-zero row is a padded one: allowed)
    with pytest.raises(ValueError, match="one-hot"):
        ours(**{**x, "target_mapping": bad})
    with pytest.raises(ValueError, match="input_ids"):
        ours(**{**x, "input_ids": x["input_ids"] + 100})
    mems = ours(x["input_ids"], use_mems=True).mems
    with pytest.raises(ValueError, match="mems must be"):
        ours(x["input_ids"][:2], mems=mems)
    with pytest.raises(ValueError, match="n_head"):
        X.XLNetConfig(d_model=30, n_head=4)


def test_permutation_data_predicts_each_target_once_in_one_order():
    import numpy as np

    T, reuse, P = 48, 24, 8
    ids = torch.randint(6, 99, (T,), generator=torch.Generator().manual_seed(0))
    ex = X.plm_example(ids, reuse, P, 12, np.random.default_rng(0))
    rows = ex["target_mapping"].nonzero()
    assert rows[:, 0].tolist() == list(range(len(rows))) and len(rows) == P  # one target per row, each once
    targets = rows[:, 1]
    assert torch.equal(ex["labels"][: len(rows)], ids[targets])
    sees = ex["perm_mask"] == 0  # sees[i, j]: i may see j
    for part in (targets[targets < reuse], targets[targets >= reuse]):
        for i in part:
            assert not sees[i, i]  # a target never sees itself
            others = [j for j in part if j != i]
            assert all(sees[i, j] != sees[j, i] for j in others)  # of two targets, exactly one comes first
        plain = [j for j in range(*((0, reuse) if part[0] < reuse else (reuse, T))) if j not in part.tolist()]
        assert all(sees[i, j] for i in part for j in plain) and not any(sees[j, i] for i in part for j in plain)
    assert not sees[:reuse, reuse:].any() and sees[reuse:, :reuse].all()  # the reused part never sees the rest
    again = X.plm_example(ids, reuse, P, 12, np.random.default_rng(0))
    assert all(torch.equal(ex[k], again[k]) for k in ex)  # a pure function of the seed


def test_span_targets_take_about_one_in_alpha_tokens_and_chunks_keep_their_order():
    import numpy as np

    mask = X.span_targets(600, 100, np.random.default_rng(1))
    assert mask.sum() == 100  # 600 / alpha 6
    targets = np.zeros(12, dtype=bool)
    targets[[1, 4, 7, 10]] = True  # two in each chunk of 6
    perm = X.local_perm(targets, np.zeros(12, dtype=bool), 6, np.random.default_rng(2))
    assert (perm[7, [1, 4]] == 0).all() and (perm[1, [7, 10]] == 1).all()  # chunk 0's targets come first
    with pytest.raises(ValueError, match="perm_size"):
        X.local_perm(targets, np.zeros(12, dtype=bool), 5, np.random.default_rng(2))


def test_a_permutation_batch_trains_like_hf():
    import numpy as np

    ours, hf = twin()
    rng = np.random.default_rng(3)
    examples = [X.plm_example(torch.randint(6, 99, (12,)), 6, 3, 6, rng) for _ in range(2)]
    x = {k: torch.stack([e[k] for e in examples]) for k in examples[0]}
    a, b = ours(**x), hf(**x)
    torch.testing.assert_close(a.logits, b.logits, atol=ATOL, rtol=0)
    torch.testing.assert_close(a.loss, b.loss, atol=1e-5, rtol=0)


@pytest.mark.parametrize("use_mems", [True, False])
def test_greedy_generation_equals_hfs(use_mems):
    ours, hf = twin(mem_len=None)
    prompt = torch.randint(6, 99, (2, 5), generator=torch.Generator().manual_seed(4))
    mine = ours.generate(prompt, max_new_tokens=8, use_mems=use_mems)
    theirs = hf.generate(prompt, max_new_tokens=8, do_sample=False, use_mems=use_mems)
    assert torch.equal(mine, theirs)
