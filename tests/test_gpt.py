"""gpt.py against Hugging Face transformers: GPT-2 and GPT-1 logits, loss, gradients, checkpoints,
greedy generation; the key/value cache; sampling filters; bad input."""

import json
import warnings

import pytest
import torch
import transformers

import gpt as G

ATOL = 1e-4
SMALL = dict(vocab_size=101, n_positions=64, n_embd=32, n_layer=2, n_head=4)
NO_DROPOUT = dict(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)


def twin(kind, tmp_path, init_range=0.02, **kw):
    """An HF model with random weights (saved, then loaded by ours)."""
    torch.manual_seed(0)
    if kind == "gpt2":
        hf = transformers.GPT2LMHeadModel(
            transformers.GPT2Config(**SMALL, initializer_range=init_range, bos_token_id=0, eos_token_id=0, **kw)
        )
    else:
        hf = transformers.OpenAIGPTLMHeadModel(
            transformers.OpenAIGPTConfig(**SMALL, initializer_range=init_range, **kw)
        )
    hf.save_pretrained(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ours = G.GPT.from_pretrained(tmp_path)
    return ours, hf


@pytest.mark.parametrize("kind", ["gpt2", "openai-gpt"])
def test_logits_loss_and_gradients_match_hf(tmp_path, kind):
    ours, hf = twin(kind, tmp_path, **NO_DROPOUT)
    assert ours.config.pre_ln == (kind == "gpt2") and (ours.ln_f is None) == (kind == "openai-gpt")
    ids = torch.randint(0, 101, (3, 20), generator=torch.Generator().manual_seed(1))
    labels = ids.clone()
    labels[0, 5:9] = -100
    a, b = hf(input_ids=ids, labels=labels), ours(ids, labels=labels)
    torch.testing.assert_close(b.logits, a.logits, atol=ATOL, rtol=0)
    torch.testing.assert_close(b.loss, a.loss, atol=ATOL, rtol=0)
    a.loss.backward()
    b.loss.backward()
    hf_params, ours_params = dict(hf.named_parameters()), dict(ours.named_parameters())
    for k, (h, transposed) in ours.hf_key_map().items():
        g = hf_params[h].grad
        torch.testing.assert_close(ours_params[k].grad, g.t() if transposed else g, atol=ATOL, rtol=1e-4, msg=k)


@pytest.mark.parametrize("kind", ["gpt2", "openai-gpt"])
def test_right_padded_batch(tmp_path, kind):
    """With an attention_mask, real positions of a right-padded batch equal HF's (and each row alone)."""
    ours, hf = twin(kind, tmp_path)
    ours.eval(), hf.eval()
    ids = torch.randint(0, 101, (3, 12), generator=torch.Generator().manual_seed(2))
    mask = torch.ones(3, 12, dtype=torch.long)
    mask[1, 7:], mask[2, 3:] = 0, 0
    with torch.no_grad():
        a, b = hf(input_ids=ids, attention_mask=mask).logits, ours(ids, attention_mask=mask).logits
        alone = ours(ids[1:2, :7]).logits
    real = mask.bool()
    torch.testing.assert_close(b[real], a[real], atol=ATOL, rtol=0)
    torch.testing.assert_close(b[1, :7], alone[0], atol=ATOL, rtol=0)


@pytest.mark.parametrize("kind", ["gpt2", "openai-gpt"])
def test_greedy_generation_equals_hf_and_cache(tmp_path, kind):
    """40 new tokens: ours greedy == HF generate(do_sample=False), with and without our cache.
    (A wide init spreads the logits so that fp32 rounding cannot flip an argmax.)"""
    ours, hf = twin(kind, tmp_path, init_range=0.3)
    ours.eval(), hf.eval()
    prompt = torch.randint(0, 101, (2, 6), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = hf.generate(prompt, max_new_tokens=40, do_sample=False, pad_token_id=0)
    cached = ours.generate(prompt, 40, temperature=0)
    assert torch.equal(cached, ref) and cached.shape == (2, 46)
    assert torch.equal(ours.generate(prompt, 40, temperature=0, use_cache=False), cached)
    sample = lambda cache: ours.generate(  # noqa: E731
        prompt, 30, temperature=0.9, top_k=20, use_cache=cache, generator=torch.Generator().manual_seed(4)
    )
    assert torch.equal(sample(True), sample(False))


def test_cached_step_logits_equal_full_forward():
    torch.manual_seed(0)
    model = G.GPT(G.GPTConfig(**SMALL)).eval()
    ids = torch.randint(0, 101, (2, 15))
    with torch.no_grad():
        full = model(ids).logits
        cache = model.new_cache(2, 64)
        parts = [model(ids[:, :9], cache=cache).logits]
        parts += [model(ids[:, n : n + 1], cache=cache, pos=n).logits for n in range(9, 12)]
        parts += [model(ids[:, 12:], cache=cache, pos=12).logits]  # a block of 3 after single steps
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=0)


def test_few_row_head_and_logits_to_keep(monkeypatch):
    """layers.linear's decoding path (few rows) equals F.linear in both orientations (F.linear's and
    weight @ x^T), with the faster one measured once per shape and row count; logits_to_keep=k gives
    the last k positions of the full logits, and refuses labels."""
    import layers

    torch.manual_seed(0)
    weight, bias = torch.randn(4099, 64), torch.randn(4099)  # 1 MB: the decoding path
    for flip in (False, True):
        monkeypatch.setattr(layers, "_WEIGHT_MAJOR", {})
        monkeypatch.setattr(layers, "_linear", lambda r, w, b, _, f=layers._linear, flip=flip: f(r, w, b, flip))
        for rows in (1, 2, 3, 16, 17):
            x = torch.randn(1, rows, 64)
            # fp32 rounding: the two orientations sum the 64 products in another order (|y| reaches ~30)
            want = torch.nn.functional.linear(x, weight)
            torch.testing.assert_close(G.linear(x, weight), want, atol=1e-5, rtol=1e-6)
            want = torch.nn.functional.linear(x, weight, bias)
            torch.testing.assert_close(G.linear(x, weight, bias), want, atol=1e-5, rtol=1e-6)
        assert set(layers._WEIGHT_MAJOR) == {((4099, 64), n, torch.float32, b) for n in (1, 2, 3, 16) for b in (0, 1)}
        for rows in (1, 3):  # gradients through the decoding path too
            x = torch.randn(1, rows, 64, requires_grad=True)
            w, b = weight.clone().requires_grad_(), bias.clone().requires_grad_()
            g = torch.randn(1, rows, 4099)
            ours = torch.autograd.grad((G.linear(x, w, b) * g).sum(), (x, w, b))
            ref = torch.autograd.grad((torch.nn.functional.linear(x, w, b) * g).sum(), (x, w, b))
            for a, r in zip(ours, ref, strict=True):
                torch.testing.assert_close(a, r, atol=1e-4, rtol=1e-5)
    model = G.GPT(G.GPTConfig(**SMALL)).eval()
    ids = torch.randint(0, 101, (2, 11))
    with torch.no_grad():
        full = model(ids).logits
        for k in (1, 3):
            torch.testing.assert_close(model(ids, logits_to_keep=k).logits, full[:, -k:], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="logits_to_keep"):
        model(ids, labels=ids, logits_to_keep=1)


def test_class_major_loss_and_targets():
    """The CPU loss (class-major product, its own cross-entropy) equals F.linear + F.cross_entropy
    with ignored targets, in value and gradients; targets= (shifted) equals labels= (HF's)."""
    torch.manual_seed(0)
    weight = torch.randn(301, 24, requires_grad=True)
    x = torch.randn(40, 24, requires_grad=True)
    targets = torch.randint(0, 301, (40,))
    targets[::7] = -100
    ref = torch.nn.functional.cross_entropy(torch.nn.functional.linear(x, weight), targets, ignore_index=-100)
    ref_grads = torch.autograd.grad(ref, (weight, x))
    loss = G._ClassMajorCrossEntropy.apply(torch.mm(weight, x.t()), targets)
    torch.testing.assert_close(loss, ref, atol=1e-6, rtol=0)
    for a, b in zip(torch.autograd.grad(loss, (weight, x)), ref_grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    model = G.GPT(G.GPTConfig(**SMALL, **NO_DROPOUT))
    ids = torch.randint(0, 101, (2, 12))
    by_labels = model(ids, labels=ids)
    by_targets = model(ids[:, :-1], targets=ids[:, 1:])
    torch.testing.assert_close(by_labels.logits[:, :-1], by_targets.logits, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="not both"):
        model(ids, labels=ids, targets=ids)
    with pytest.raises(ValueError, match="targets must have the shape"):
        model(ids, targets=ids[:, 1:])


def test_generation_past_the_context_crops():
    """Prompt + new tokens longer than n_positions: each step sees the last n_positions tokens."""
    torch.manual_seed(0)
    model = G.GPT(G.GPTConfig(**{**SMALL, "n_positions": 8}, initializer_range=0.3)).eval()
    prompt = torch.randint(0, 101, (1, 5))
    out = model.generate(prompt, 10, temperature=0)
    assert out.shape == (1, 15) and torch.equal(out[:, :5], prompt)
    for n in range(5, 15):  # token n is the argmax after the (at most 8) tokens before it
        with torch.no_grad():
            ctx = out[:, max(0, n - 8) : n]
            assert out[0, n] == model(ctx).logits[0, -1].argmax()


def test_top_k_and_top_p_keep_only_allowed_tokens():
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0, -1.0]]).repeat(2000, 1)
    g = torch.Generator().manual_seed(0)
    k = G.next_token(logits, 1.0, 2, None, g)
    assert set(k.tolist()) == {0, 1}
    probs = logits[0].softmax(-1)  # 0.64, 0.23, 0.09, ...: the nucleus of 0.8 is {0, 1}, of 0.9 {0, 1, 2}
    assert set(G.next_token(logits, 1.0, None, 0.8, g).tolist()) == {0, 1}
    assert set(G.next_token(logits, 1.0, None, 0.9, g).tolist()) == {0, 1, 2}
    assert set(G.next_token(logits, 1.0, None, 0.1, g).tolist()) == {0}  # the most likely always stays
    assert set(G.next_token(logits, 1.0, 3, 0.8, g).tolist()) == {0, 1}
    frequencies = torch.bincount(G.next_token(logits, 1.0, None, None, g), minlength=6) / 2000
    assert (frequencies - probs).abs().max() < 0.04  # no filter: samples follow the softmax
    assert torch.equal(G.next_token(logits[:3], 0, None, None, g), torch.zeros(3, dtype=torch.long))


def test_bad_input():
    model = G.GPT(G.GPTConfig(**SMALL))
    with pytest.raises(ValueError, match="longer than the context"):
        model(torch.zeros(1, 65, dtype=torch.long))
    with pytest.raises(ValueError, match="longer than the context"):
        model.generate(torch.zeros(1, 65, dtype=torch.long), 1)
    with pytest.raises(ValueError, match="outside"):
        model(torch.full((1, 3), 101))
    with pytest.raises(ValueError, match="input_ids must be"):
        model(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="temperature"):
        model.generate(torch.zeros(1, 3, dtype=torch.long), 1, temperature=-1)
    for p in (0, 1.5):
        with pytest.raises(ValueError, match="top_p"):
            model.generate(torch.zeros(1, 3, dtype=torch.long), 1, top_p=p)
    with pytest.raises(ValueError, match="labels must have"):
        model(torch.zeros(2, 3, dtype=torch.long), labels=torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="divisible"):
        G.GPTConfig(n_embd=30, n_head=4)


@pytest.mark.parametrize("kind", ["gpt2", "openai-gpt"])
def test_save_pretrained_round_trip(tmp_path, kind):
    torch.manual_seed(0)
    config = G.GPTConfig(**SMALL, model_type=kind, bos_token_id=0, eos_token_id=0)
    ours = G.GPT(config).eval()
    ours.save_pretrained(tmp_path)
    cls = transformers.GPT2LMHeadModel if kind == "gpt2" else transformers.OpenAIGPTLMHeadModel
    hf, info = cls.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == kind
    ids = torch.randint(0, 101, (2, 10))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, hf.eval()(input_ids=ids).logits, atol=ATOL, rtol=0)
    again = G.GPT.from_pretrained(tmp_path)
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in ours.state_dict().items())


def test_bad_checkpoint(tmp_path):
    from safetensors.torch import load_file, save_file

    ours, _ = twin("gpt2", tmp_path / "ok")
    sd = load_file(tmp_path / "ok" / "model.safetensors")
    for message, state in {
        "lacks": {k: v for k, v in sd.items() if k != "transformer.h.1.mlp.c_fc.weight"},
        "shape": {**sd, "transformer.wpe.weight": torch.zeros(3, 32)},
        "does not know": {**sd, "transformer.h.5.mlp.c_fc.weight": torch.zeros(1)},
    }.items():
        folder = tmp_path / message.replace(" ", "_")
        folder.mkdir()
        (folder / "config.json").write_text((tmp_path / "ok" / "config.json").read_text())
        save_file(state, folder / "model.safetensors")
        with pytest.raises(ValueError, match=message):
            G.GPT.from_pretrained(folder)


def test_untied_head_is_warned_about(tmp_path):
    """GPT2LMHeadModel's lm_head is tied to wte: one that differs is dropped, with a warning."""
    ours, hf = twin("gpt2", tmp_path)
    sd = {**hf.state_dict(), "lm_head.weight": torch.zeros(101, 32)}
    with pytest.warns(UserWarning, match=r"lm_head\.weight differs from transformer\.wte\.weight"):
        ours.load_hf_state_dict(sd)
    assert torch.equal(ours.wte.weight, hf.transformer.wte.weight)


@pytest.mark.parametrize("preset", sorted(G.PRESETS))
def test_presets_match_hf_sizes(preset):
    config = G.GPTConfig.from_preset(preset)
    hf_config = config.to_hf()
    cls = transformers.GPT2LMHeadModel if config.model_type == "gpt2" else transformers.OpenAIGPTLMHeadModel
    cfg_cls = transformers.GPT2Config if config.model_type == "gpt2" else transformers.OpenAIGPTConfig
    with torch.device("meta"):
        ours, hf = G.GPT(config), cls(cfg_cls(**hf_config))
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731 (HF's tied head is counted once)
    assert count(ours) == count(hf)
    if preset == "gpt2":
        assert count(ours) == 124_439_808
