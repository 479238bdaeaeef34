"""bart.py: HF parity (padded batches, gradients, the bare model, the classifier, checkpoints both
ways), greedy, sampled and beam generation equal to HF's with HF's logits processors (forced
BOS/EOS, min_length, no_repeat_ngram_size) with and without the cache, bad input."""

import json

import numpy as np
import pytest
import torch
import transformers

import bart

transformers.logging.set_verbosity_error()  # HF's notes on tying and generation settings


def pair(tmp_path, cls=bart.BartForConditionalGeneration, hf_cls=transformers.BartForConditionalGeneration, **over):
    """Ours at random init (a nonzero final_logits_bias) and HF's loaded from our save_pretrained folder."""
    torch.manual_seed(0)
    ours = cls(bart.BartConfig.from_preset("bart-tiny-test", **over)).eval()
    if hasattr(ours, "final_logits_bias"):
        ours.final_logits_bias.normal_()
    ours.save_pretrained(tmp_path)
    return ours, hf_cls.from_pretrained(tmp_path).eval()


def batch():
    """Rows of BART's shape: <s> ... </s>, right-padded with pad (1); labels with a short target."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 99, (3, 30), generator=g)
    ids[:, 0] = 0
    mask = torch.ones(3, 30, dtype=torch.long)
    for r, n in enumerate((30, 20, 5)):
        ids[r, n - 1], ids[r, n:], mask[r, n:] = 2, 1, 0
    labels = torch.randint(3, 99, (3, 25), generator=g)
    labels[2, 10:] = -100
    return ids, mask, labels


@pytest.mark.parametrize("preset", sorted(bart.PRESETS))
def test_config_and_parameter_counts_equal_hfs(preset):
    c = bart.BartConfig.from_preset(preset)
    with torch.device("meta"):
        ours = bart.BartForConditionalGeneration(c)
        hf = transformers.BartForConditionalGeneration(transformers.BartConfig(**c.to_hf()))
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731  (tied tensors once)
    assert count(ours) == count(hf)
    defaults, hf_defaults = bart.BartConfig(), transformers.BartConfig()
    for f in ("vocab_size", "d_model", "dropout", "attention_dropout", "activation_dropout", "pad_token_id"):
        assert getattr(defaults, f) == getattr(hf_defaults, f), f
    assert (defaults.decoder_start_token_id, defaults.forced_eos_token_id) == (2, 2)


def test_logits_loss_and_gradients_equal_hfs(tmp_path):
    ours, hf = pair(tmp_path)
    ids, mask, labels = batch()
    a = ours(ids, mask, labels=labels)
    b = hf(input_ids=ids, attention_mask=mask, labels=labels)
    assert (a.logits - b.logits).abs().max() < 1e-4 and abs(a.loss - b.loss) < 1e-5
    assert a.sums.counts["targets"] == (labels != -100).sum() and a.sums.loss() == a.loss
    a.loss.backward(), b.loss.backward()
    theirs = dict(hf.named_parameters())
    for name, hf_names in ours.hf_key_map().items():
        names = (hf_names,) if isinstance(hf_names, str) else hf_names
        if all(n in theirs for n in names):  # HF's tied copies (embed_tokens) are not separate parameters
            g1, g2 = dict(ours.named_parameters())[name].grad, torch.cat([theirs[n].grad for n in names])
            assert (g1 - g2).abs().max() < 1e-5 * max(1.0, g2.abs().max()), name
    dec = ours.shift_right(labels)  # the start token </s> first, -100 -> pad
    assert dec[:, 0].eq(2).all() and dec[2, 11:].eq(1).all() and torch.equal(dec[:, 1:11], labels[:, :10])
    a, b = ours(ids, mask), hf(input_ids=ids, attention_mask=mask)  # no decoder ids: the inputs shifted right
    assert (a.logits - b.logits).abs().max() < 1e-4


def test_bare_model_and_classifier_equal_hfs(tmp_path):
    ids, mask, _ = batch()
    ours, hf = pair(tmp_path / "model", bart.BartModel, transformers.BartModel)
    dec = torch.randint(0, 99, (3, 7))
    dec_mask = torch.ones(3, 7, dtype=torch.long)
    dec_mask[1, 5:] = 0
    want = hf(input_ids=ids, attention_mask=mask, decoder_input_ids=dec, decoder_attention_mask=dec_mask)
    out = ours(ids, mask, dec, dec_mask)
    assert (out - want.last_hidden_state)[dec_mask.bool()].abs().max() < 1e-5
    for num_labels, labels in ((3, torch.tensor([0, 2, 1])), (1, torch.tensor([0.5, -1.0, 2.0]))):
        ours, hf = pair(
            tmp_path / f"cls{num_labels}",
            bart.BartForSequenceClassification,
            transformers.BartForSequenceClassification,
            num_labels=num_labels,
        )
        a, b = ours(ids, mask, labels=labels), hf(input_ids=ids, attention_mask=mask, labels=labels)
        assert (a.logits - b.logits).abs().max() < 1e-5 and abs(a.loss - b.loss) < 1e-5
    full = bart.BartForConditionalGeneration(bart.BartConfig.from_preset("bart-tiny-test"))
    full.save_pretrained(tmp_path / "full")
    body = bart.BartModel.from_pretrained(tmp_path / "full")  # a full checkpoint: the body's part
    assert torch.equal(body(ids, mask), full.model(ids, mask))
    with pytest.warns(UserWarning, match="newly initialized.*classification_head"):
        bart.BartForSequenceClassification.from_pretrained(tmp_path / "full")


def test_checkpoints_round_trip_both_ways(tmp_path):
    ours, hf = pair(tmp_path / "ours")
    again = bart.BartForConditionalGeneration.from_pretrained(tmp_path / "ours")
    assert again.config == ours.config
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in ours.state_dict().items())
    hf.save_pretrained(tmp_path / "hf")
    back = bart.BartForConditionalGeneration.from_pretrained(tmp_path / "hf").eval()
    ids, mask, labels = batch()
    assert torch.equal(back(ids, mask, labels=labels).logits, ours(ids, mask, labels=labels).logits)


def test_from_pretrained_a_hub_name_downloads_config_and_weights(tmp_path, monkeypatch):
    """from_pretrained("facebook/bart-base") asks the hub for config.json and the weights only, and reads
    a config.json with bart-base's extra fields (as HF, it ignores the ones BART's code never reads)."""
    import huggingface_hub

    _, hf = pair(tmp_path / "ours")
    hf.save_pretrained(tmp_path / "hub")
    config = json.loads((tmp_path / "hub" / "config.json").read_text())
    config |= dict(normalize_before=False, add_final_layer_norm=False, add_bias_logits=False, num_beams=4)
    config |= dict(forced_bos_token_id=0, no_repeat_ngram_size=3, task_specific_params={"summarization": {}})
    (tmp_path / "hub" / "config.json").write_text(json.dumps(config))
    asked = []

    def download(repo_id, allow_patterns):
        asked.append((repo_id, allow_patterns))
        return str(tmp_path / "hub")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", download)
    ours = bart.BartForConditionalGeneration.from_pretrained("facebook/bart-base").eval()
    assert asked[0][0] == "facebook/bart-base" and {"config.json", "*.safetensors"} <= set(asked[0][1])
    assert ours.config.forced_bos_token_id == 0 and ours.config.vocab_size == hf.config.vocab_size
    ids, mask, _ = batch()
    with torch.no_grad():
        assert (ours(ids, mask).logits - hf.eval()(input_ids=ids, attention_mask=mask).logits).abs().max() < 1e-4


def hf_generate(hf, ids, mask, **kw):
    """HF's generate with BART's config defaults named: forced BOS/EOS only when given."""
    kw = dict(forced_bos_token_id=None, forced_eos_token_id=None, do_sample=False) | kw
    hf.generation_config.forced_bos_token_id = kw.pop("forced_bos_token_id")
    hf.generation_config.forced_eos_token_id = kw.pop("forced_eos_token_id")
    return hf.generate(input_ids=ids, attention_mask=mask, **kw)


@pytest.mark.parametrize("num_beams", [1, 4])
def test_generation_equals_hfs_with_its_logits_processors(num_beams, tmp_path):
    """Greedy and beam-4 generation: HF's sequences, plain, with forced BOS and EOS, with
    no_repeat_ngram_size 3 and min_length; cached == uncached; EOS ends some rows early."""
    ours, hf = pair(tmp_path, init_std=0.5, forced_eos_token_id=None)  # larger weights: varied tokens
    ids, mask, _ = batch()
    eos = int(ours.generate(ids, mask, max_new_tokens=3)[0, 2])  # a token the model produces early: it ends rows
    ours.config.eos_token_id = hf.generation_config.eos_token_id = eos
    early = 0
    for kw in [
        {},
        dict(forced_bos_token_id=0, forced_eos_token_id=eos),
        dict(no_repeat_ngram_size=3, min_length=6),
        dict(forced_bos_token_id=0, no_repeat_ngram_size=2, length_penalty=0.6, early_stopping=True),
    ]:
        kw = dict(max_new_tokens=10, num_beams=num_beams) | kw
        out = ours.generate(ids, mask, **kw)
        assert torch.equal(out, hf_generate(hf, ids, mask, **kw)), kw
        assert torch.equal(ours.generate(ids, mask, use_cache=False, **kw), out), kw
        if kw.get("forced_bos_token_id") == 0:
            assert out[:, 1].eq(0).all()
        early += int((out[:, 1:-1] == eos).any(-1).sum())
    assert early > 0 and len(set(out.flatten().tolist())) > 4
    assert ours.generate(ids, mask, max_new_tokens=0).tolist() == [[2]] * 3


def test_sampling_draws_hfs_tokens_for_one_seed(tmp_path):
    ours, hf = pair(tmp_path, init_std=0.5, forced_eos_token_id=None)
    ids, mask, _ = batch()
    for kw in [{}, dict(temperature=0.7, top_k=5), dict(top_p=0.8, top_k=None)]:
        torch.manual_seed(7)
        want = hf_generate(hf, ids, mask, max_new_tokens=12, do_sample=True, **kw)
        for cache in (True, False):
            torch.manual_seed(7)
            assert torch.equal(ours.generate(ids, mask, max_new_tokens=12, do_sample=True, use_cache=cache, **kw), want)


def test_bad_input_is_named():
    ours = bart.BartForConditionalGeneration(bart.BartConfig.from_preset("bart-tiny-test"))
    ids, mask, labels = batch()
    long, outside = torch.full((1, 129), 5), ids.clone()
    outside[0, 1] = 99
    cases = [
        (dict(input_ids=long), "longer than max_position_embeddings=128"),
        (dict(input_ids=outside, labels=labels), "input_ids has token ids outside"),
        (dict(input_ids=ids, attention_mask=mask[:, :-1]), r"attention_mask must have the shape \(3, 30\)"),
        (dict(input_ids=ids, attention_mask=mask.float()), "attention_mask must be bool or integer"),
        (dict(input_ids=ids, labels=labels[:2]), r"labels must be \(batch=3"),
        (dict(input_ids=ids, labels=labels + 100), "labels has ids outside"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            ours(**kwargs)
    for kw, message in [(dict(max_new_tokens=-1), "max_new_tokens"), (dict(num_beams=0), "num_beams")]:
        with pytest.raises(ValueError, match=message):
            ours.generate(ids, **kw)
    cls = bart.BartForSequenceClassification(bart.BartConfig.from_preset("bart-tiny-test"))
    uneven = ids.clone()
    uneven[0, 3] = 2  # row 0 holds two eos tokens, the others one
    with pytest.raises(ValueError, match="same number .* of eos tokens"):
        cls(uneven, mask)
    with pytest.raises(ValueError, match="model_type must be 'bart'"):
        bart.BartConfig.from_hf({"model_type": "t5"})
    with pytest.raises(ValueError, match="divisible by encoder_attention_heads"):
        bart.BartConfig(d_model=30)


# ---- noising (fairseq's DenoisingDataset semantics)

MASK, STOP = -1, -2  # ids outside the document's: a mask and a full stop


def document(n=1000, seed=0):
    """<s> (0), n distinct inner tokens, </s> (1): the output shows which originals survive."""
    return np.concatenate([[0], np.arange(10, 10 + n), [1]])


def test_token_masking_and_deletion_touch_exactly_their_share():
    doc = document()
    masked = bart.add_noise(doc, np.random.default_rng(0), "mask", MASK, STOP, 2000)
    assert len(masked) == len(doc) and (masked == MASK).sum() == 150  # ceil(15% of 1000), each a mask
    assert np.array_equal(masked[masked != MASK], doc[np.isin(doc, masked)])  # the rest in place
    deleted = bart.add_noise(doc, np.random.default_rng(0), "delete", MASK, STOP, 2000)
    assert len(deleted) == len(doc) - 150 and np.all(np.diff(deleted[1:-1]) > 0)  # a subsequence, in order
    for out in (masked, deleted):
        assert out[0] == 0 and out[-1] == 1  # <s> and </s> never move


def test_text_infilling_spans_are_poisson_and_one_mask_each():
    rng = np.random.default_rng(0)
    draws = [bart.poisson_spans(300, rng, 3.0) for _ in range(200)]
    assert all(d.sum() == 300 for d in draws)  # the budget, 30% of 1,000 tokens, exactly
    assert np.mean(np.concatenate([d[:-1] for d in draws])) == pytest.approx(3.0, abs=0.1)  # Poisson(3)'s mean
    removed, masks, runs = [], [], []
    for seed in range(30):
        doc = document()
        out = bart.add_noise(doc, np.random.default_rng(seed), "infill", MASK, STOP, 2000)
        gone = ~np.isin(doc, out)
        edges = np.flatnonzero(np.diff(np.concatenate([[0], gone.astype(int), [0]])))
        starts, ends = edges[::2], edges[1::2]  # the runs of removed originals
        removed.append(gone.sum() / 1000)
        runs += list(ends - starts)
        kept = out[out != MASK]
        assert np.array_equal(kept, doc[~gone]) and out[0] == 0 and out[-1] == 1
        # each run of removed tokens became one mask, and 0-length spans inserted masks
        assert (out == MASK).sum() >= len(starts)
        for s in starts:
            assert out[list(out).index(doc[s - 1]) + 1] == MASK
        masks.append((out == MASK).sum() - len(starts))
    # spans start at distinct tokens but may overlap and merge (as in fairseq): a bit under 30% disappears
    assert 0.24 < np.mean(removed) < 0.30 and np.mean(runs) > 3.0 and sum(masks) > 0


def test_sentence_permutation_and_rotation():
    rng = np.random.default_rng(0)
    sentences = [list(range(10 * i + 10, 10 * i + 10 + 3 + i % 4)) + [STOP] for i in range(12)]
    doc = np.array([0, *[t for s in sentences for t in s], 1])
    out = bart.add_noise(doc, rng, "permute", MASK, STOP, 2000)
    split = lambda x: sorted(tuple(s) for s in " ".join(map(str, x[1:-1])).split(str(STOP)) if s.strip())  # noqa: E731
    assert split(out) == split(doc) and not np.array_equal(out, doc) and (out[0], out[-1]) == (0, 1)
    rotated = bart.add_noise(document(50), rng, "rotate", MASK, STOP, 2000)
    inner, orig = list(rotated[1:-1]), list(document(50)[1:-1])
    k = orig.index(inner[0])
    assert inner == orig[k:] + orig[:k] and (rotated[0], rotated[-1]) == (0, 1)
    both = bart.add_noise(doc, np.random.default_rng(1), "infill+permute", MASK, STOP, 2000)
    assert (both == MASK).any() and both[0] == 0 and both[-1] == 1


@pytest.mark.parametrize("noising", bart.NOISINGS)
def test_noising_is_deterministic_per_seed(noising):
    doc = np.array([0, *[t for i in range(20) for t in (10 + 3 * i, 11 + 3 * i, STOP)], 1])
    a, b = (bart.add_noise(doc, np.random.default_rng(5), noising, MASK, STOP, 2000) for _ in range(2))
    c = bart.add_noise(doc, np.random.default_rng(6), noising, MASK, STOP, 2000)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_noising_bad_input_is_named():
    doc = document(20)
    with pytest.raises(ValueError, match="noising must be one of"):
        bart.add_noise(doc, np.random.default_rng(0), "shuffle", MASK, STOP, 2000)
    with pytest.raises(ValueError, match=r"ratio must be in \[0, 1\]"):
        bart.span_noise(doc, np.random.default_rng(0), MASK, 1.5)
    with pytest.raises(ValueError, match="poisson_lambda must be > 0"):
        bart.span_noise(doc, np.random.default_rng(0), MASK, 0.3, poisson_lambda=0)
