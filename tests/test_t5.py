"""t5.py: HF parity (v1.0 and v1.1, padded batches, gradients, encoder-only, checkpoints), greedy
generation equal to HF's with and without the cache, span corruption's invariants, bad input."""

import numpy as np
import pytest
import torch
import transformers

import t5

transformers.logging.set_verbosity_error()  # HF's notes on tying and generation settings
V1_0, V1_1 = {}, dict(feed_forward_proj="gated-gelu", tie_word_embeddings=False)
SMALL = dict(relative_attention_num_buckets=8, relative_attention_max_distance=20)  # buckets of both kinds at T=30


def pair(tmp_path, over, cls=t5.T5ForConditionalGeneration, hf_cls=transformers.T5ForConditionalGeneration):
    """Ours at random init and HF's loaded from our save_pretrained folder."""
    torch.manual_seed(0)
    ours = cls(t5.T5Config.from_preset("t5-tiny-test", **SMALL, **over)).eval()
    ours.save_pretrained(tmp_path)
    return ours, hf_cls.from_pretrained(tmp_path).eval()


def batch():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(2, 99, (3, 30), generator=g)
    mask = torch.ones(3, 30, dtype=torch.long)
    mask[1, 20:], mask[2, 5:] = 0, 0  # right padding
    labels = torch.randint(2, 99, (3, 25), generator=g)
    labels[2, 10:] = -100  # a short target
    return ids, mask, labels


@pytest.mark.parametrize("preset", sorted(t5.PRESETS))
def test_parameter_counts_equal_hfs(preset):
    c = t5.T5Config.from_preset(preset)
    with torch.device("meta"):
        ours = t5.T5ForConditionalGeneration(c)
        hf = transformers.T5ForConditionalGeneration(transformers.T5Config(**c.to_hf()))
        if not c.tie_word_embeddings:  # transformers 5 ties a fresh model's head; a v1.1 checkpoint's is its own
            hf.lm_head.weight = torch.nn.Parameter(torch.empty_like(hf.lm_head.weight))
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731  (tied tensors once)
    assert count(ours) == count(hf)


@pytest.mark.parametrize("over", [V1_0, V1_1], ids=["v1.0", "v1.1"])
def test_logits_loss_and_gradients_equal_hfs(over, tmp_path):
    ours, hf = pair(tmp_path, over)
    ids, mask, labels = batch()
    a = ours(ids, mask, labels=labels)
    b = hf(input_ids=ids, attention_mask=mask, labels=labels)
    assert (a.logits - b.logits).abs().max() < 1e-4 and abs(a.loss - b.loss) < 1e-5
    assert a.sums.counts["targets"] == (labels != -100).sum() and a.sums.loss() == a.loss
    a.loss.backward(), b.loss.backward()
    theirs = dict(hf.named_parameters())
    for name, hf_name in ours.hf_key_map().items():
        if hf_name in theirs:  # HF's tied copies (embed_tokens) are not separate parameters
            g1, g2 = dict(ours.named_parameters())[name].grad, theirs[hf_name].grad
            assert (g1 - g2).abs().max() < 1e-5 * max(1.0, g2.abs().max()), name
    dec = ours.shift_right(labels)  # the -100s become pad, the start token first
    assert dec[2, 11:].eq(0).all() and dec[:, 0].eq(0).all() and torch.equal(dec[:, 1:11], labels[:, :10])


def test_encoder_and_bare_model_equal_hfs(tmp_path):
    ids, mask, labels = batch()
    ours, hf = pair(tmp_path / "enc", V1_1, t5.T5EncoderModel, transformers.T5EncoderModel)
    out, want = ours(ids, mask), hf(input_ids=ids, attention_mask=mask).last_hidden_state
    real = mask.bool()  # ours skips the padding (zeros there); HF's values at padding are never read
    assert (out - want)[real].abs().max() < 1e-5 and out[~real].eq(0).all()
    ours, hf = pair(tmp_path / "model", V1_0, t5.T5Model, transformers.T5Model)
    dec = torch.randint(0, 99, (3, 7))
    want = hf(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).last_hidden_state
    assert (ours(ids, mask, dec) - want).abs().max() < 1e-5
    full = t5.T5ForConditionalGeneration(t5.T5Config.from_preset("t5-tiny-test", **SMALL))
    full.save_pretrained(tmp_path / "full")
    enc = t5.T5EncoderModel.from_pretrained(tmp_path / "full")  # a full checkpoint: the encoder's part
    assert torch.equal(enc(ids, mask), full.encode(ids, mask)[0])


@pytest.mark.parametrize("over", [V1_0, V1_1], ids=["v1.0", "v1.1"])
def test_checkpoints_round_trip_both_ways(over, tmp_path):
    ours, hf = pair(tmp_path / "ours", over)
    again = t5.T5ForConditionalGeneration.from_pretrained(tmp_path / "ours")
    assert again.config == ours.config
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in ours.state_dict().items())
    hf.save_pretrained(tmp_path / "hf")  # transformers 5 writes tie_word_embeddings: true even for v1.1
    back = t5.T5ForConditionalGeneration.from_pretrained(tmp_path / "hf").eval()
    assert back.config.tie_word_embeddings == ours.config.tie_word_embeddings
    ids, mask, labels = batch()
    assert torch.equal(back(ids, mask, labels=labels).logits, ours(ids, mask, labels=labels).logits)


@pytest.mark.parametrize("over", [V1_0, V1_1], ids=["v1.0", "v1.1"])
def test_greedy_generation_equals_hfs_with_and_without_the_cache(over, tmp_path):
    ours, hf = pair(tmp_path, {**over, "initializer_factor": 4.0})  # larger weights: varied tokens
    ids, mask, _ = batch()
    out = ours.generate(ids, mask, max_new_tokens=12)
    want = hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=12, do_sample=False, num_beams=1)
    assert torch.equal(out, want) and out.shape == (3, 13) and len(set(out.flatten().tolist())) > 4
    assert torch.equal(ours.generate(ids, mask, max_new_tokens=12, use_cache=False), out)
    r = max(range(3), key=lambda i: len(set(out[i].tolist())))  # the most varied row: a token new at k >= 2 ends it
    k = next(k for k in range(2, 13) if out[r, k] not in out[r, 1:k])
    ours.config.eos_token_id = eos = int(out[r, k])
    out = ours.generate(ids, mask, max_new_tokens=12)
    want = hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=12, do_sample=False, eos_token_id=eos)
    assert torch.equal(out, want) and out[r, k] == eos and out[r, k + 1 :].eq(0).all()
    assert ours.generate(ids, mask, max_new_tokens=0).tolist() == [[0]] * 3


def test_sampling_draws_hfs_tokens_for_one_seed(tmp_path):
    """do_sample with HF's defaults (top_k 50), with temperature + top_k, with top_p: the seed that
    HF samples with gives the same tokens here, cached and not; top_k 1 is greedy."""
    ours, hf = pair(tmp_path, {**V1_1, "initializer_factor": 4.0})
    ids, mask, _ = batch()
    for kw in [{}, dict(temperature=0.7, top_k=5), dict(top_p=0.8, top_k=None)]:
        torch.manual_seed(7)
        want = hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=12, do_sample=True, **kw)
        for cache in (True, False):
            torch.manual_seed(7)
            out = ours.generate(ids, mask, max_new_tokens=12, do_sample=True, use_cache=cache, **kw)
            assert torch.equal(out, want), kw
    assert len(set(out[:, 1:].flatten().tolist())) > 8  # samples, not one repeated argmax
    greedy = ours.generate(ids, mask, max_new_tokens=12)
    assert torch.equal(ours.generate(ids, mask, max_new_tokens=12, do_sample=True, top_k=1), greedy)
    for kw, name in [(dict(temperature=-1.0), "temperature"), (dict(top_p=0.0), "top_p"), (dict(num_beams=2), "beam")]:
        with pytest.raises(ValueError, match=name):
            ours.generate(ids, mask, do_sample=True, **kw)


@pytest.mark.parametrize("over", [V1_0, V1_1], ids=["v1.0", "v1.1"])
def test_beam_search_and_ngram_blocking_equal_hfs(over, tmp_path):
    """num_beams 4 under HF's three stopping rules and length penalties, with and without
    no_repeat_ngram_size: HF's sequences exactly, cached == uncached; some hypotheses end early."""
    ours, hf = pair(tmp_path, {**over, "initializer_factor": 4.0})
    ids, mask, _ = batch()
    ids, mask, early = ids[:, :12], mask[:, :12], 0
    eos = int(ours.generate(ids, mask, max_new_tokens=3)[0, 2])  # a token the model produces early: it ends beams
    ours.config.eos_token_id = hf.generation_config.eos_token_id = eos
    for early_stopping, length_penalty, ngram in [(False, 1.0, 0), (True, 0.6, 0), ("never", 2.0, 0), (False, 1.0, 2)]:
        kw = dict(max_new_tokens=10, num_beams=4, length_penalty=length_penalty, early_stopping=early_stopping)
        out = ours.generate(ids, mask, no_repeat_ngram_size=ngram, **kw)
        want = hf.generate(input_ids=ids, attention_mask=mask, no_repeat_ngram_size=ngram, do_sample=False, **kw)
        assert torch.equal(out, want), (early_stopping, length_penalty, ngram)
        assert torch.equal(ours.generate(ids, mask, no_repeat_ngram_size=ngram, use_cache=False, **kw), out)
        early += int((out[:, 1:-1] == eos).any(-1).sum())
        if ngram:  # no bigram twice in a row's hypothesis
            for row in out.tolist():
                pairs = list(zip(row, row[1:], strict=False))
                real = pairs[: pairs.index((eos, eos))] if (eos, eos) in pairs else pairs  # the filler after EOS
                assert len(set(real)) == len(real)
    assert early > 0
    greedy = dict(max_new_tokens=10, no_repeat_ngram_size=1)  # greedy with blocking: no token twice
    assert torch.equal(
        ours.generate(ids, mask, **greedy), hf.generate(input_ids=ids, attention_mask=mask, do_sample=False, **greedy)
    )


def test_bad_input_is_named(tmp_path):
    ours = t5.T5ForConditionalGeneration(t5.T5Config.from_preset("t5-tiny-test"))
    ids, mask, labels = batch()
    cases = [
        (dict(input_ids=ids), "give decoder_input_ids"),
        (dict(input_ids=ids.clamp(max=98) + 1, labels=labels), "input_ids has token ids outside"),
        (dict(input_ids=ids.float(), labels=labels), "input_ids must be a"),
        (
            dict(input_ids=ids, attention_mask=mask[:, :-1], labels=labels),
            r"attention_mask must have the shape \(3, 30\)",
        ),
        (dict(input_ids=ids, attention_mask=mask.float(), labels=labels), "attention_mask must be bool or integer"),
        (dict(input_ids=ids, labels=labels[:2]), r"labels must be \(batch=3"),
        (dict(input_ids=ids, labels=labels + 100), "labels has ids outside"),
        (dict(input_ids=ids, decoder_input_ids=labels[:, :3].clamp(min=0), labels=labels), "differ"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            ours(**kwargs)
    with pytest.raises(ValueError, match="max_new_tokens must be an integer >= 0"):
        ours.generate(ids, max_new_tokens=-1)
    with pytest.raises(ValueError, match="num_beams must be an integer >= 1"):
        ours.generate(ids, num_beams=0)
    with pytest.raises(ValueError, match="early_stopping must be True, False or 'never'"):
        ours.generate(ids, num_beams=2, early_stopping="sometimes")
    with pytest.raises(ValueError, match="feed_forward_proj must be"):
        t5.T5Config(feed_forward_proj="gated-nope")
    with pytest.raises(ValueError, match="model_type must be 't5'"):
        t5.T5Config.from_hf({"model_type": "bart"})


# ---- span corruption


def test_input_and_target_lengths_are_t5s():
    assert t5.input_and_target_lengths(512) == (568, 114)  # T5's 512 -> 114 (nanoT5, HF's run_t5_mlm)
    for n in (64, 128, 512):  # the corrupted input of `tokens` raw tokens is exactly n long
        tokens, targets = t5.input_and_target_lengths(n)
        inputs, out = t5.span_corruption(np.arange(tokens), np.random.default_rng(0), 10_000, 1)
        assert (len(inputs), len(out)) == (n, targets)


def test_span_corruption_reconstructs_and_follows_t5s_counts():
    ids = np.arange(100, 668)  # 568 distinct tokens
    first = 32099  # <extra_id_0>
    for seed in range(20):
        inputs, targets = t5.span_corruption(ids, np.random.default_rng(seed), first, eos_id=1)
        noise, spans = t5.span_lengths(len(ids))
        assert (noise, spans) == (85, 28) and inputs[-1] == targets[-1] == 1
        sentinels = [t for t in inputs if t > 1000]
        assert sentinels == list(range(first, first - spans, -1))  # one per span, descending from the top
        assert [t for t in targets if t > 1000] == sentinels and targets[0] == first
        assert len(targets) - 1 - spans == noise  # noise tokens: 15% exactly as T5 rounds it
        spans_of, current = {}, None  # each sentinel's tokens in the targets
        for t in targets[:-1]:
            if t > 1000:
                current = spans_of[t] = []
            else:
                current.append(t)
        assert min(map(len, spans_of.values())) > 0 and np.mean([len(v) for v in spans_of.values()]) == noise / spans
        rebuilt = [x for t in inputs[:-1] for x in (spans_of[t] if t > 1000 else [t])]
        assert rebuilt == list(ids)  # inputs + targets give the original back
    a = t5.span_corruption(ids, np.random.default_rng(7), first, 1)
    b = t5.span_corruption(ids, np.random.default_rng(7), first, 1)
    c = t5.span_corruption(ids, np.random.default_rng(8), first, 1)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True)) and not np.array_equal(a[0], c[0])
    with pytest.raises(ValueError, match="at least 2 tokens"):
        t5.span_corruption([5], np.random.default_rng(0), first, 1)
