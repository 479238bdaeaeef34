"""transformer.py against torch.nn: a grid of options, outputs and gradients; the paper model."""

import contextlib
import inspect
import itertools
import math
import warnings

import pytest
import torch

import transformer as T

E, H, B, L, S = 8, 2, 3, 5, 6  # tiny sizes: the grid is large
ATOL = 1e-5


def twin(ours_cls, torch_cls, *args, **kwargs):
    """The same module built by both libraries, with torch's weights copied into ours."""
    torch.manual_seed(0)
    ref = torch_cls(*args, **kwargs)
    ours = ours_cls(*args, **kwargs)
    assert list(ours.state_dict()) == list(ref.state_dict())
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ours, ref


def run_both(ours, ref, inputs, kwargs, real=None, train=True, grad=True):
    """Forward (and backward) through both; compare outputs, input and parameter grads.

    `real` (broadcastable to the output) selects the positions that must match; the loss only
    looks at those, so gradients must match everywhere."""
    ours.train(train)
    ref.train(train)
    results = []
    for m in (ours, ref):
        xs = [x.clone().requires_grad_(grad) for x in inputs]
        with torch.set_grad_enabled(grad):
            out = m(*xs, **kwargs)
        out, w = out if isinstance(out, tuple) else (out, None)
        results.append((out, w, xs))
    (o1, w1, x1), (o2, w2, x2) = results
    mask = torch.ones_like(o1, dtype=torch.bool) if real is None else real.expand_as(o1)
    assert torch.allclose(o1[mask], o2[mask], atol=ATOL), (o1 - o2)[mask].abs().max()
    if w1 is not None or w2 is not None:
        assert torch.allclose(w1, w2, atol=ATOL)
    if not grad:
        return
    g = torch.randn_like(o1) * mask
    for (o, w, _), m in zip(results, (ours, ref), strict=True):
        m.zero_grad()
        ((o * g).sum() + (0 if w is None else w.sum())).backward()
    for a, b in zip(x1, x2, strict=True):
        assert torch.allclose(a.grad, b.grad, atol=ATOL), (a.grad - b.grad).abs().max()
    for (name, p1), (_, p2) in zip(ours.named_parameters(), ref.named_parameters(), strict=True):
        if p2.grad is None:
            assert p1.grad is None or not p1.grad.any(), name
        else:
            assert torch.allclose(p1.grad, p2.grad, atol=ATOL), (name, (p1.grad - p2.grad).abs().max())


def make_kpm(batch, length, kind):
    """Key padding mask with right padding; every row keeps >= 2 real positions."""
    pad = torch.zeros(batch, length, dtype=torch.bool)
    pad[1, length - 2 :] = True
    pad[2, 2:] = True
    return pad if kind == "bool" else torch.zeros(batch, length).masked_fill(pad, float("-inf"))


def make_attn_mask(rows, length, kind, heads_batch=None):
    g = torch.Generator().manual_seed(1)
    shape = (rows, length) if heads_batch is None else (heads_batch, rows, length)
    m = torch.rand(shape, generator=g) < 0.3
    m[..., 0] = False  # never a fully masked row
    if kind == "bool":
        return m
    return torch.randn(shape, generator=g).masked_fill(m, float("-inf"))


# ---------------------------------------------------------------------------------- attention

MASKS = ["none", "kpm-bool", "kpm-float", "attn2d-bool", "attn3d-float", "both-bool", "causal"]


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("extra", ["none", "bias_kv", "zero_attn", "both"])
@pytest.mark.parametrize("kv_dims", [None, (6, 10)])
@pytest.mark.parametrize("weights", ["none", "avg", "per-head"])
@pytest.mark.parametrize("masks", MASKS)
@pytest.mark.parametrize("batched", [True, False])
def test_mha_parity(batch_first, bias, extra, kv_dims, weights, masks, batched):
    kdim, vdim = kv_dims or (None, None)
    ours, ref = twin(
        T.MultiheadAttention,
        torch.nn.MultiheadAttention,
        E,
        H,
        bias=bias,
        add_bias_kv=extra in ("bias_kv", "both"),
        add_zero_attn=extra in ("zero_attn", "both"),
        kdim=kdim,
        vdim=vdim,
        batch_first=batch_first,
    )
    Ls = S if masks != "causal" else L  # the causal mask is square
    nb = B if batched else 1

    def seq(n, d):
        x = torch.randn(nb, n, d) if batch_first else torch.randn(n, nb, d)
        if batched:
            return x
        return x[0] if batch_first else x[:, 0]

    q = seq(L, E)
    k, v = seq(Ls, kdim or E), seq(Ls, vdim or E)
    kw = {"need_weights": weights != "none", "average_attn_weights": weights == "avg"}
    if masks.startswith("kpm") or masks == "both-bool":
        kpm = make_kpm(B, Ls, "float" if masks == "kpm-float" else "bool")
        kw["key_padding_mask"] = kpm if batched else kpm[1]
    if masks in ("attn2d-bool", "both-bool"):
        kw["attn_mask"] = make_attn_mask(L, Ls, "bool")
    if masks == "attn3d-float":
        kw["attn_mask"] = make_attn_mask(L, Ls, "float", heads_batch=nb * H)
    if masks == "causal":
        kw["attn_mask"], kw["is_causal"] = T.generate_square_subsequent_mask(L), True
    self_attn = kv_dims is None and masks != "causal" and Ls == L
    inputs = [q] if self_attn else [q, k, v]
    if self_attn:  # query is key is value: exercises the packed projection
        ours, ref = _Wrap(ours), _Wrap(ref)
    run_both(ours, ref, inputs, kw, train=True)
    run_both(ours, ref, inputs, kw, train=False, grad=False)  # torch's fast path where it applies


class _Wrap(torch.nn.Module):
    """Calls attention with the same tensor as query, key and value."""

    def __init__(self, attn):
        super().__init__()
        self.attn = attn

    def forward(self, x, **kw):
        return self.attn(x, x, x, **kw)


# ------------------------------------------------------------------------------------- layers

LAYER_MASKS = ["none", "kpm-bool", "kpm-float", "causal-hint", "mask3d-float", "both-bool"]


def layer_masks(kind, n, prefix, batched=True):
    kw = {}
    if kind in ("kpm-bool", "kpm-float", "both-bool"):
        kpm = make_kpm(B, n, "float" if kind == "kpm-float" else "bool")
        kw[f"{prefix}key_padding_mask"] = kpm if batched else kpm[1]
    return kw, (kpm if "kpm" in kind or kind == "both-bool" else None)


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("activation", ["relu", "gelu", "callable"])
@pytest.mark.parametrize("masks", LAYER_MASKS)
@pytest.mark.parametrize("batched", [True, False])
def test_encoder_layer_parity(batch_first, norm_first, bias, activation, masks, batched):
    act = torch.tanh if activation == "callable" else activation
    args = (E, H, 16, 0.0, act, 1e-5, batch_first, norm_first, bias)
    ours, ref = twin(T.TransformerEncoderLayer, torch.nn.TransformerEncoderLayer, *args)
    nb = B if batched else 1
    x = torch.randn(nb, L, E) if batch_first else torch.randn(L, nb, E)
    if not batched:
        x = x[0] if batch_first else x[:, 0]
    kw = {}
    if masks in ("kpm-bool", "kpm-float", "both-bool"):
        kpm = make_kpm(B, L, "float" if masks == "kpm-float" else "bool")
        kw["src_key_padding_mask"] = kpm if batched else kpm[1]
    if masks == "causal-hint":
        kw["src_mask"], kw["is_causal"] = T.generate_square_subsequent_mask(L), True
    if masks == "mask3d-float":
        kw["src_mask"] = make_attn_mask(L, L, "float", heads_batch=nb * H)
    if masks == "both-bool":
        kw["src_mask"] = make_attn_mask(L, L, "bool")
    run_both(ours, ref, [x], kw, train=True)
    # torch 2.13's fused encoder-layer kernel returns NaN with a 3-D float src_mask on CPU (any
    # values); there we compare with torch's regular path, elsewhere with the fused one.
    fused = masks != "mask3d-float"
    with _fastpath(fused):
        run_both(ours, ref, [x], kw, train=False, grad=False)


@contextlib.contextmanager
def _fastpath(enabled):
    before = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(enabled)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(before)


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("masks", ["none", "tgt-causal", "causal-kpm", "memory-mask", "all-float"])
@pytest.mark.parametrize("batched", [True, False])
def test_decoder_layer_parity(batch_first, norm_first, bias, masks, batched):
    args = (E, H, 16, 0.0, "gelu", 1e-5, batch_first, norm_first, bias)
    ours, ref = twin(T.TransformerDecoderLayer, torch.nn.TransformerDecoderLayer, *args)
    nb = B if batched else 1
    tgt = torch.randn(nb, L, E) if batch_first else torch.randn(L, nb, E)
    mem = torch.randn(nb, S, E) if batch_first else torch.randn(S, nb, E)
    if not batched:
        tgt, mem = (t[0] if batch_first else t[:, 0] for t in (tgt, mem))
    kw = {}
    kind = "float" if masks == "all-float" else "bool"
    if masks in ("tgt-causal", "causal-kpm", "all-float"):
        causal = T.generate_square_subsequent_mask(L)
        kw["tgt_mask"] = causal if kind == "float" else causal.isinf()
        kw["tgt_is_causal"] = True
    if masks in ("causal-kpm", "all-float"):
        kpm_t, kpm_m = make_kpm(B, L, kind), make_kpm(B, S, kind)
        kw["tgt_key_padding_mask"] = kpm_t if batched else kpm_t[1]
        kw["memory_key_padding_mask"] = kpm_m if batched else kpm_m[1]
    if masks in ("memory-mask", "all-float"):
        kw["memory_mask"] = make_attn_mask(L, S, kind)
    run_both(ours, ref, [tgt, mem], kw, train=True)
    run_both(ours, ref, [tgt, mem], kw, train=False, grad=False)


# ------------------------------------------------------------------------------------- stacks


def real_positions(kpm, batch_first):
    """(B, T) padding mask -> bool mask over the (.., E) output selecting real positions."""
    real = ~kpm if batch_first else (~kpm).T
    return real[..., None]


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("nested", [True, False])
@pytest.mark.parametrize("masks", ["none", "kpm-bool", "kpm-bool+causal", "kpm-float", "kpm+mask3d"])
def test_encoder_parity(batch_first, norm_first, nested, masks):
    layer_args = (E, H, 16, 0.0, "relu", 1e-5, batch_first, norm_first)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns when its nested path can't be used
        ref = torch.nn.TransformerEncoder(
            torch.nn.TransformerEncoderLayer(*layer_args), 3, torch.nn.LayerNorm(E), enable_nested_tensor=nested
        )
    ours = T.TransformerEncoder(T.TransformerEncoderLayer(*layer_args), 3, torch.nn.LayerNorm(E), nested)
    ours.load_state_dict(ref.state_dict(), strict=True)
    T_ = 7
    x = torch.randn(B, T_, E) if batch_first else torch.randn(T_, B, E)
    kw, real = {}, None
    if masks != "none":
        kpm = make_kpm(B, T_, "float" if masks == "kpm-float" else "bool")
        kw["src_key_padding_mask"] = kpm
        real = real_positions(kpm.isinf() if masks == "kpm-float" else kpm, batch_first)
    if masks == "kpm-bool+causal":
        kw["mask"] = T.generate_square_subsequent_mask(T_)  # detected as causal (is_causal=None)
    if masks == "kpm+mask3d":
        kw["mask"] = make_attn_mask(T_, T_, "bool", heads_batch=B * H)
    run_both(ours, ref, [x], kw, real=real, train=True)
    run_both(ours, ref, [x], kw, real=real, train=False, grad=False)


def test_encoder_padded_outputs_match_torch_fast_path():
    """In inference, torch's nested-tensor path gives norm(0) at padding; so do we, and our
    training-mode run agrees with its own eval run everywhere (no dropout)."""
    args = (E, H, 16, 0.0, "relu", 1e-5, True)
    torch.manual_seed(0)
    ref = torch.nn.TransformerEncoder(torch.nn.TransformerEncoderLayer(*args), 2, torch.nn.LayerNorm(E))
    ours = T.TransformerEncoder(T.TransformerEncoderLayer(*args), 2, torch.nn.LayerNorm(E))
    ours.load_state_dict(ref.state_dict())
    torch.nn.init.normal_(ref.norm.bias)
    ours.norm.bias.data.copy_(ref.norm.bias)
    x, kpm = torch.randn(B, 7, E), make_kpm(B, 7, "bool")
    ref.eval(), ours.eval()
    with torch.no_grad():
        a, b = ref(x, src_key_padding_mask=kpm), ours(x, src_key_padding_mask=kpm)
    assert torch.allclose(a, b, atol=ATOL)
    assert torch.allclose(b[kpm], ref.norm.bias.expand_as(b[kpm]))
    ours.train()
    assert torch.allclose(ours(x, src_key_padding_mask=kpm), b, atol=ATOL)


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("causal", ["flag", "detected", "bool-mask"])
def test_decoder_parity(batch_first, norm_first, causal):
    layer_args = (E, H, 16, 0.0, "relu", 1e-5, batch_first, norm_first)
    torch.manual_seed(0)
    ref = torch.nn.TransformerDecoder(torch.nn.TransformerDecoderLayer(*layer_args), 2, torch.nn.LayerNorm(E))
    ours = T.TransformerDecoder(T.TransformerDecoderLayer(*layer_args), 2, torch.nn.LayerNorm(E))
    ours.load_state_dict(ref.state_dict(), strict=True)
    tgt = torch.randn(B, L, E) if batch_first else torch.randn(L, B, E)
    mem = torch.randn(B, S, E) if batch_first else torch.randn(S, B, E)
    mask = T.generate_square_subsequent_mask(L)
    kw = {"memory_key_padding_mask": make_kpm(B, S, "bool")}
    if causal == "flag":
        kw.update(tgt_mask=mask, tgt_is_causal=True)
    elif causal == "detected":
        kw.update(tgt_mask=mask)
    else:
        kw.update(tgt_mask=mask.isinf(), memory_key_padding_mask=kw["memory_key_padding_mask"])
    run_both(ours, ref, [tgt, mem], kw, train=True)
    run_both(ours, ref, [tgt, mem], kw, train=False, grad=False)


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("padding", [False, True])
def test_transformer_parity(batch_first, norm_first, activation, padding):
    kw_model = dict(
        d_model=E,
        nhead=H,
        num_encoder_layers=2,
        num_decoder_layers=2,
        dim_feedforward=16,
        dropout=0.0,
        activation=activation,
        batch_first=batch_first,
        norm_first=norm_first,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours, ref = twin(T.Transformer, torch.nn.Transformer, **kw_model)
    src = torch.randn(B, S, E) if batch_first else torch.randn(S, B, E)
    tgt = torch.randn(B, L, E) if batch_first else torch.randn(L, B, E)
    kw = {"tgt_mask": T.Transformer.generate_square_subsequent_mask(L)}
    if padding:
        kpm = make_kpm(B, S, "bool")
        kw.update(src_key_padding_mask=kpm, memory_key_padding_mask=kpm, tgt_key_padding_mask=make_kpm(B, L, "bool"))
    run_both(ours, ref, [src, tgt], kw, train=True)
    run_both(ours, ref, [src, tgt], kw, train=False, grad=False)


TWINS = ["MultiheadAttention", "TransformerEncoderLayer", "TransformerDecoderLayer"]
TWINS += ["TransformerEncoder", "TransformerDecoder", "Transformer"]


@pytest.mark.parametrize("name", TWINS)
@pytest.mark.parametrize("method", ["__init__", "forward"])
def test_same_signatures_as_torch(name, method):
    """Same argument names, order, kinds and defaults as torch.nn."""
    ours, ref = (inspect.signature(getattr(getattr(m, name), method)).parameters.values() for m in (T, torch.nn))
    assert [(p.name, p.default, p.kind) for p in ours] == [(p.name, p.default, p.kind) for p in ref]


def test_custom_encoder_decoder_and_defaults():
    enc = T.TransformerEncoder(T.TransformerEncoderLayer(E, H, 16), 1)
    dec = T.TransformerDecoder(T.TransformerDecoderLayer(E, H, 16), 1)
    m = T.Transformer(E, H, custom_encoder=enc, custom_decoder=dec)
    assert m.encoder is enc and m.decoder is dec
    ref = torch.nn.Transformer()
    assert list(T.Transformer().state_dict()) == list(ref.state_dict())
    mask = T.Transformer.generate_square_subsequent_mask(4)
    assert torch.equal(mask, torch.nn.Transformer.generate_square_subsequent_mask(4))


def test_mismatched_mask_types_warn_like_torch():
    ours, ref = twin(T.MultiheadAttention, torch.nn.MultiheadAttention, E, H, batch_first=True)
    x = torch.randn(B, L, E)
    kw = {"key_padding_mask": make_kpm(B, L, "float"), "attn_mask": make_attn_mask(L, L, "bool")}
    for m in (ours, ref):
        with pytest.warns(UserWarning, match="mismatched key_padding_mask and attn_mask"):
            m(x, x, x, **kw)
    run_both(_Wrap(ours), _Wrap(ref), [x], kw)


# ----------------------------------------------------------------------------------- bad input


def test_bad_input_errors():
    with pytest.raises(ValueError, match="embed_dim .*divisible by num_heads"):
        T.MultiheadAttention(10, 3)
    with pytest.raises(ValueError, match="activation"):
        T.TransformerEncoderLayer(E, H, activation="swish")
    attn = T.MultiheadAttention(E, H, batch_first=True)
    x = torch.randn(B, L, E)
    with pytest.raises(ValueError, match="query: expected last dimension 8"):
        attn(torch.randn(B, L, E + 1), x, x)
    with pytest.raises(ValueError, match="key must be 3-D"):
        attn(x, x[0], x)
    with pytest.raises(ValueError, match="key_padding_mask: expected shape"):
        attn(x, x, x, key_padding_mask=torch.zeros(B, L + 1, dtype=torch.bool))
    with pytest.raises(ValueError, match="attn_mask: expected shape"):
        attn(x, x, x, attn_mask=torch.zeros(L, L + 1, dtype=torch.bool))
    with pytest.raises(ValueError, match="attn_mask: expected shape"):
        attn(x, x, x, attn_mask=torch.zeros(B, L, L, dtype=torch.bool))  # must be B * num_heads
    with pytest.raises(TypeError, match="key_padding_mask must be a bool or floating-point"):
        attn(x, x, x, key_padding_mask=torch.zeros(B, L, dtype=torch.long))
    with pytest.raises(ValueError, match="is_causal=True .*attn_mask"):
        attn(x, x, x, is_causal=True)
    enc = T.TransformerEncoder(T.TransformerEncoderLayer(E, H, 16, batch_first=True), 1)
    with pytest.raises(ValueError, match="key_padding_mask: expected shape"):
        enc(x, src_key_padding_mask=torch.zeros(B, L - 1, dtype=torch.bool))  # padding-free path too
    tr = T.Transformer(E, H, 1, 1, 16, batch_first=True)
    with pytest.raises(ValueError, match="d_model=8"):
        tr(x, torch.randn(B, L, E + 2))
    with pytest.raises(ValueError, match="same batch size"):
        tr(x, torch.randn(B + 1, L, E))
    model = T.Seq2SeqTransformer(small_config(max_len=8))
    with pytest.raises(ValueError, match="exceeds the positional table"):
        model(torch.randint(3, 11, (2, 9)), torch.randint(3, 11, (2, 3)))
    with pytest.raises(ValueError, match="src has token ids outside"):
        model(torch.full((2, 4), 11), torch.randint(3, 11, (2, 3)))
    with pytest.raises(ValueError, match="max_len"):
        model.generate(torch.randint(3, 11, (2, 4)), max_len=8)


# ------------------------------------------------------------------------------ the paper model


def small_config(**kw):
    base = dict(
        src_vocab_size=11,
        tgt_vocab_size=11,
        d_model=16,
        nhead=2,
        num_encoder_layers=2,
        num_decoder_layers=2,
        dim_feedforward=32,
        dropout=0.0,
        max_len=32,
    )
    return T.TransformerConfig(**{**base, **kw})


def random_src(batch=4, length=6, vocab=11, seed=0):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(3, vocab, (batch, length), generator=g)
    src[1, 4:] = 0  # padding
    src[3, 2:] = 0
    return src


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("learned_pos", [False, True])
@pytest.mark.parametrize("share", [False, True])
def test_cached_decoding_equals_uncached(norm_first, learned_pos, share):
    torch.manual_seed(0)
    cfg = small_config(norm_first=norm_first, learned_pos=learned_pos, share_embeddings=share, tie_output=share)
    model = T.Seq2SeqTransformer(cfg).eval()
    src = random_src()
    memory, src_pad = model.encode(src)
    ys = torch.randint(3, 11, (4, 7))
    cached = model._log_probs(memory, src_pad, 8, use_cache=True)
    uncached = model._log_probs(memory, src_pad, 8, use_cache=False)
    for t in range(1, 8):  # the cached step reproduces every position of the full pass
        assert torch.allclose(cached(ys, t), uncached(ys, t), atol=1e-5)
    for beam in (1, 3):
        a = model.generate(src, beam_size=beam, max_len=12, use_cache=True)
        b = model.generate(src, beam_size=beam, max_len=12, use_cache=False)
        assert torch.equal(a, b)


@pytest.mark.parametrize("alpha", [0.0, 0.6, 1.0])
def test_beam_one_is_greedy(alpha):
    torch.manual_seed(0)
    model = T.Seq2SeqTransformer(small_config(tie_output=False, norm_first=True)).eval()
    torch.nn.init.normal_(model.generator.weight)  # peaky, varied distributions: EOS wins sometimes
    src = random_src(batch=8, seed=3)
    greedy = model.greedy_decode(src, max_len=10)
    assert (greedy == model.config.eos_id).any(1).sum() >= 2 and greedy.unique().numel() >= 4  # not degenerate
    assert torch.equal(model.beam_search(src, beam_size=1, length_penalty=alpha, max_len=10), greedy)


def test_wide_beam_finds_exhaustive_optimum():
    """Vocabulary: pad, bos, eos + 3 words; up to 4 tokens. Every hypothesis fits in the beam."""
    torch.manual_seed(2)
    cfg = small_config(src_vocab_size=6, tgt_vocab_size=6)
    model = T.Seq2SeqTransformer(cfg).eval()
    with torch.no_grad():
        model.generator.weight.mul_(3)
    src = torch.tensor([[3, 4, 5, 3], [5, 5, 0, 0]])
    max_len, alpha, words = 4, 0.6, [3, 4, 5]
    memory, src_pad = model.encode(src)
    for i in range(src.shape[0]):
        best, best_seq = -math.inf, None
        for n in range(1, max_len + 1):
            for body in itertools.product(words, repeat=n - 1):
                for last in [cfg.eos_id, *words] if n == max_len else [cfg.eos_id]:
                    seq = [*body, last]
                    ys = torch.tensor([[cfg.bos_id, *seq[:-1]]])
                    lp = model.decode(ys, memory[i : i + 1], src_pad[i : i + 1]).log_softmax(-1)[0]
                    score = lp[torch.arange(n), torch.tensor(seq)].sum().item() / ((5 + n) / 6) ** alpha
                    if score > best:
                        best, best_seq = score, seq
        got = model.beam_search(src[i : i + 1], beam_size=200, length_penalty=alpha, max_len=max_len)[0]
        assert got[got != cfg.pad_id].tolist() == best_seq
        # a narrow beam is allowed to miss it, but must still return a valid hypothesis
        narrow = model.beam_search(src[i : i + 1], beam_size=2, length_penalty=alpha, max_len=max_len)[0]
        assert 1 <= (narrow != cfg.pad_id).sum() <= max_len


def test_label_smoothed_loss_and_tied_embeddings():
    torch.manual_seed(0)
    cfg = small_config(label_smoothing=0.1)
    model = T.Seq2SeqTransformer(cfg)
    assert model.generator.weight is model.src_embed.weight is model.tgt_embed.weight
    src, tgt = random_src(), torch.randint(3, 11, (4, 5))
    labels = tgt.clone()
    labels[0, 3:] = cfg.pad_id
    logits, loss = model(src, tgt, labels)
    logp = logits.log_softmax(-1)[labels != cfg.pad_id]
    y = labels[labels != cfg.pad_id]
    manual = (0.9 * -logp.gather(1, y[:, None]).squeeze(1) + 0.1 * -logp.mean(-1)).mean()
    assert torch.allclose(loss, manual, atol=1e-6)
    # the embedding scale of the paper: emb * sqrt(d) has unit-ish scale
    assert abs(model.src_embed.weight[3:].std().item() * math.sqrt(cfg.d_model) - 1) < 0.2


def test_noam_schedule():
    assert T.noam_lr(4000, 512) == pytest.approx(512**-0.5 * 4000**-0.5)
    assert T.noam_lr(100, 512) < T.noam_lr(4000, 512) > T.noam_lr(20000, 512)
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = T.noam_scheduler(opt, 512, warmup=10)
    lrs = []
    for _ in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(T.noam_lr(1, 512, 10)) and max(lrs) == lrs[9]


def test_sinusoidal_table():
    pe = T.PositionalEncoding(6, max_len=5)(5)
    p, i = 3, 1
    assert pe[p, 2 * i].item() == pytest.approx(math.sin(p / 10000 ** (2 * i / 6)), abs=1e-6)
    assert pe[p, 2 * i + 1].item() == pytest.approx(math.cos(p / 10000 ** (2 * i / 6)), abs=1e-6)


@pytest.mark.slow  # a training run or several: `pytest -m 'not slow'` skips it
def test_learns_to_reverse():
    """End to end: a few hundred Adam steps with the paper's schedule learn to reverse a sequence."""
    torch.manual_seed(0)
    cfg = small_config(d_model=32, nhead=4, dim_feedforward=64, label_smoothing=0.0, max_len=16)
    model = T.Seq2SeqTransformer(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=1.0, betas=(0.9, 0.98), eps=1e-9)
    sched = T.noam_scheduler(opt, cfg.d_model, warmup=100)
    for _ in range(400):
        src = torch.randint(3, 11, (32, 5))
        tgt = torch.cat([torch.full((32, 1), cfg.bos_id), src.flip(1)], 1)
        labels = torch.cat([src.flip(1), torch.full((32, 1), cfg.eos_id)], 1)
        loss = model(src, tgt, labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    model.eval()
    src = torch.randint(3, 11, (16, 5))
    out = model.generate(src, beam_size=2, max_len=8)
    assert (out[:, :5] == src.flip(1)).float().mean() > 0.95
    assert (out[:, 5] == cfg.eos_id).all()


def test_dropout_is_active_in_training():
    torch.manual_seed(0)
    attn = T.MultiheadAttention(E, H, dropout=0.5, batch_first=True)
    x = torch.randn(B, L, E)
    assert not torch.equal(attn(x, x, x, need_weights=False)[0], attn(x, x, x, need_weights=False)[0])
    attn.eval()
    assert torch.equal(attn(x, x, x)[0], attn(x, x, x)[0])


def test_readme_example_runs():
    """The usage example in README.md runs as written."""
    import pathlib
    import re

    readme = (pathlib.Path(__file__).parent.parent / "README.md").read_text()
    scope = {}
    exec(re.findall(r"```python\n(.*?)```", readme, re.S)[0], scope)
    assert scope["loss"].item() > 0 and scope["tokens"].shape[0] == 2
