"""BART (Lewis et al. 2020, "BART: Denoising Sequence-to-Sequence Pre-training for Natural Language
Generation, Translation, and Comprehension"), from scratch.

The 2017 encoder-decoder (post-LN blocks with biases, GELU instead of ReLU), with learned
positions (HF's table starts at offset 2: fairseq's padding convention), a layer norm on the
embeddings of each stack, an output layer tied to the embeddings plus a bias over the vocabulary
(`final_logits_bias`), and `</s>` as the decoder start. The blocks keep torch.nn's names and
one packed query/key/value projection, which HF's separate projections fill through the key
map. Pretraining is denoising: the encoder reads corrupted text, the decoder writes the
original. Checkpoints are read from and written to Hugging Face's format (`BartModel`,
`BartForConditionalGeneration`, `BartForSequenceClassification`).
"""

import math
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contract import (
    ClassifierOutput,
    Sums,
    check_ids,
    check_labels,
    check_mask,
    classifier_sums,
    seq2seq_counts,
    seq2seq_sums,
    sequence_counts,
    shift_right,
)
from decoding import KVCache, beam_search, check_generation, check_prompt, constrain, greedy_search, next_token
from hf_checkpoint import HFCheckpoint, config_fields, config_json
from layers import ACTIVATIONS, linear, pack_tokens, unpack_tokens

# ----------------------------------------------------------------------------------- config


@dataclass
class BartConfig:
    """Field names and defaults follow HF's BartConfig (its defaults are bart-large's shape)."""

    vocab_size: int = 50265
    max_position_embeddings: int = 1024
    d_model: int = 1024
    encoder_layers: int = 12
    encoder_ffn_dim: int = 4096
    encoder_attention_heads: int = 16
    decoder_layers: int = 12
    decoder_ffn_dim: int = 4096
    decoder_attention_heads: int = 16
    dropout: float = 0.1  # embeddings and residual branches
    attention_dropout: float = 0.0  # on the attention weights
    activation_dropout: float = 0.0  # inside the feed-forward, after the activation
    activation_function: str = "gelu"  # exact (erf)
    init_std: float = 0.02
    scale_embedding: bool = False  # token embeddings times sqrt(d_model) (off in bart-base/large)
    classifier_dropout: float = 0.0
    num_labels: int = 3  # BartForSequenceClassification (HF's default: MNLI's 3)
    pad_token_id: int = 1
    bos_token_id: int = 0
    eos_token_id: int = 2
    decoder_start_token_id: int = 2  # </s>
    forced_bos_token_id: int | None = None  # generation: the first token, when set (bart-large: <s>)
    forced_eos_token_id: int | None = 2  # generation: the token at the length limit
    model_type: str = "bart"

    def __post_init__(self):
        if self.activation_function not in ACTIVATIONS:
            raise ValueError(
                f"activation_function must be one of {sorted(ACTIVATIONS)}, got {self.activation_function!r}"
            )
        for heads, name in ((self.encoder_attention_heads, "encoder"), (self.decoder_attention_heads, "decoder")):
            if self.d_model % heads:
                raise ValueError(f"d_model ({self.d_model}) must be divisible by {name}_attention_heads ({heads})")

    @classmethod
    def from_preset(cls, name, **overrides):
        if name not in PRESETS:
            raise ValueError(
                f"unknown arch {name!r} (a key of bart.PRESETS, train.py's --arch): choose from {sorted(PRESETS)}"
            )
        return cls(**{**PRESETS[name], **overrides})

    @classmethod
    def from_hf(cls, hf: dict, **overrides):
        """From the dict of an HF config.json (BartConfig)."""
        if hf.get("model_type") != "bart":
            raise ValueError(f"config.json: model_type must be 'bart', got {hf.get('model_type')!r}")
        return cls(**{**config_fields(cls, hf), **overrides})

    def to_hf(self, architecture="BartForConditionalGeneration"):
        return config_json(self, architectures=[architecture], is_encoder_decoder=True, tie_word_embeddings=True)


_RELEASED = dict(dropout=0.1, attention_dropout=0.1, activation_dropout=0.1, forced_bos_token_id=0)


def _shape(d, layers, ffn, heads, **kw):  # encoder and decoder alike
    both = dict(encoder_layers=layers, decoder_layers=layers, encoder_ffn_dim=ffn, decoder_ffn_dim=ffn)
    return dict(d_model=d, **both, encoder_attention_heads=heads, decoder_attention_heads=heads, **kw)


PRESETS = {
    "bart-base": _shape(768, 6, 3072, 12, **_RELEASED),  # 139,420,416 parameters
    "bart-large": _shape(1024, 12, 4096, 16, **_RELEASED),  # 406,291,456
    # CPU sizes: about transformer.py's Multi30k model (7.8M with an 8,000 vocabulary), and a test size
    "bart-small": _shape(256, 3, 1024, 8, vocab_size=8000, max_position_embeddings=512),
    "bart-tiny-test": _shape(32, 2, 64, 4, vocab_size=99, max_position_embeddings=128, dropout=0.0),
}

# -------------------------------------------------------------------------------- the model


class Attention(nn.Module):
    """Multi-head attention with one packed (3d, d) input projection (HF's q, k, v projections
    concatenated by the key map): one matmul in self-attention, slices in cross-attention."""

    def __init__(self, d, heads, dropout):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * d, d))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * d))
        self.out_proj = nn.Linear(d, d)
        nn.init.xavier_uniform_(self.in_proj_weight)  # torch.nn's default; HF's init draws every weight again

    def split(self, x):  # (B, T, d) -> (B, H, T, hd)
        return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)

    def project(self, x, i):  # the i-th projection (0 query, 1 key, 2 value) -> (B, H, T, hd)
        d = x.shape[-1]
        return self.split(F.linear(x, self.in_proj_weight[i * d : (i + 1) * d], self.in_proj_bias[i * d : (i + 1) * d]))

    def qkv(self, x):  # the three projections of x (B, T, d) in one matmul
        return [self.split(t) for t in F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)]

    def sdpa(self, q, k, v, mask=None, is_causal=False):  # (B, H, T, hd) -> (B, T, d), before out_proj
        p = self.dropout if self.training else 0.0
        return F.scaled_dot_product_attention(q, k, v, mask, p, is_causal=is_causal).transpose(1, 2).flatten(2)

    def attend(self, q, k, v, mask=None, is_causal=False):
        return self.out_proj(self.sdpa(q, k, v, mask, is_causal))

    def packed(self, x, index, B, T, mask):
        """Self-attention of the N real tokens x (N, d) of a (B, T) batch, at flat positions
        `index`: projections skip the padding, SDPA sees the padded layout -> (N, d)."""
        qkv = unpack_tokens(F.linear(x, self.in_proj_weight, self.in_proj_bias), index, B, T)  # (B, T, 3d)
        y = self.sdpa(*[self.split(t) for t in qkv.chunk(3, dim=-1)], mask)
        return self.out_proj(pack_tokens(y, index))


class Layer(nn.Module):
    """A post-LN block: self-attention, cross-attention (decoder), feed-forward; each sub-layer's
    output dropped out, added to its input, then normalized. torch.nn's names (norm1..3, linear1,
    linear2, multihead_attn), which the key map turns into HF's."""

    def __init__(self, c: BartConfig, decoder):
        super().__init__()
        d, heads, ffn = (
            (c.d_model, c.decoder_attention_heads, c.decoder_ffn_dim)
            if decoder
            else (c.d_model, c.encoder_attention_heads, c.encoder_ffn_dim)
        )
        self.self_attn = Attention(d, heads, c.attention_dropout)
        if decoder:
            self.multihead_attn = Attention(d, heads, c.attention_dropout)
        self.linear1, self.linear2 = nn.Linear(d, ffn), nn.Linear(ffn, d)
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.norm3 = nn.LayerNorm(d) if decoder else None
        self.act, self.p, self.p_act = ACTIVATIONS[c.activation_function], c.dropout, c.activation_dropout

    def forward(self, x, sa, ca=None):
        """x (B, T, d), or (N, d) real tokens; sa, ca: the self- and cross-attention of x."""
        x = self.norm1(x + F.dropout(sa(x), self.p, self.training))
        if ca is not None:
            x = self.norm2(x + F.dropout(ca(x), self.p, self.training))
        h = self.linear2(F.dropout(self.act(self.linear1(x)), self.p_act, self.training))
        return (self.norm2 if ca is None else self.norm3)(x + F.dropout(h, self.p, self.training))


class Stack(nn.Module):
    """The encoder or the decoder: the token embeddings (the shared table, given) plus learned
    positions, a layer norm and dropout, then post-LN layers."""

    def __init__(self, c: BartConfig, decoder):
        super().__init__()
        n = c.decoder_layers if decoder else c.encoder_layers
        self.layers = nn.ModuleList(Layer(c, decoder) for _ in range(n))
        self.embed_positions = nn.Embedding(c.max_position_embeddings + 2, c.d_model)
        self.layernorm_embedding = nn.LayerNorm(c.d_model)
        self.dropout = nn.Dropout(c.dropout)
        self.scale, self.max_len = math.sqrt(c.d_model) if c.scale_embedding else 1.0, c.max_position_embeddings

    def embed(self, x, pos=0):  # token embeddings (B, T, d) at positions pos.. -> the first layer's input
        if pos + x.shape[1] > self.max_len:
            raise ValueError(f"sequences longer than max_position_embeddings={self.max_len}: {pos + x.shape[1]}")
        positions = torch.arange(pos + 2, pos + 2 + x.shape[1], device=x.device)  # HF's offset of 2
        return self.dropout(self.layernorm_embedding(x * self.scale + self.embed_positions(positions)))


def _cached_self_attention(attn, cache, pos, x):  # x (N, 1, d): the newest token sees every token so far
    q, k, v = attn.qkv(x)
    return attn.attend(q, *cache.update(k, v, pos))


def _additive(mask, dtype):  # bool, True = masked -> 0 / -inf
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(mask, -math.inf)


class Seq2SeqLMOutput(NamedTuple):
    logits: Tensor  # (B, T_dec, V)
    loss: Tensor | None = None  # mean cross-entropy over labels != -100
    sums: Sums | None = None  # the same summed over the targets, for the training loop
    encoder_last_hidden_state: Tensor | None = None  # (B, T_enc, d)


class BartModel(HFCheckpoint, nn.Module):
    """The shared embeddings, the encoder and the decoder.

    forward(input_ids, attention_mask=None, decoder_input_ids=None, decoder_attention_mask=None)
    -> the decoder's last hidden states (B, T_dec, d_model); without decoder_input_ids, the input
    ids shifted right (BART's denoising setup). Masks: 1 = token, 0 = padding."""

    def __init__(self, config: BartConfig):
        super().__init__()
        self.config = c = config
        self.shared = nn.Embedding(c.vocab_size, c.d_model, padding_idx=c.pad_token_id)
        self.encoder, self.decoder = Stack(c, decoder=False), Stack(c, decoder=True)
        self._init_weights()

    def _init_weights(self):
        """HF's: every matrix and embedding N(0, init_std), biases 0, the pad embedding 0, norms 1."""
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif "norm" in name:
                nn.init.ones_(p)
            else:
                nn.init.normal_(p, std=self.config.init_std)
        with torch.no_grad():
            for module in self.modules():
                if isinstance(module, nn.Embedding) and module.padding_idx is not None:
                    module.weight[module.padding_idx].zero_()

    @property
    def body(self):  # the BartModel inside a head class (self for the bare model)
        return getattr(self, "model", self)

    def encode(self, input_ids, attention_mask=None):  # -> (B, T, d), the mask (B, T) bool
        m = self.body
        B, S = check_ids(input_ids, "input_ids", self.config.vocab_size)
        mask = check_mask(attention_mask, "attention_mask", (B, S), input_ids.device)
        x = m.encoder.embed(m.shared(input_ids))
        if mask.all():
            for layer in m.encoder.layers:
                x = layer(x, lambda x, a=layer.self_attn: a.attend(*a.qkv(x)))
            return x, mask
        # padding: every position-wise op (projections, feed-forward, norms) runs on the N real tokens only
        index = mask.flatten().nonzero().squeeze(1)  # their flat positions
        keys = torch.zeros(B, 1, 1, S, dtype=x.dtype, device=x.device).masked_fill(~mask.view(B, 1, 1, S), -math.inf)
        x = pack_tokens(x, index)  # (N, d)
        for layer in m.encoder.layers:
            x = layer(x, partial(layer.self_attn.packed, index=index, B=B, T=S, mask=keys))
        return unpack_tokens(x, index, B, S), mask  # (B, S, d), zeros at padding

    def decode(self, ids, memory, memory_mask, attention_mask=None):
        """Decoder ids (B, T) -> hidden states (B, T, d); memory_mask (B, S) bool, True = token."""
        m = self.body
        B, L = check_ids(ids, "decoder_input_ids", self.config.vocab_size)
        keys = check_mask(attention_mask, "decoder_attention_mask", (B, L), ids.device)
        x = m.decoder.embed(m.shared(ids))
        self_mask = None  # causal, by SDPA's flag, without padding
        if not keys.all():  # additive: -inf above the diagonal and at padded keys
            causal = torch.ones(L, L, dtype=torch.bool, device=ids.device).triu(1)
            self_mask = _additive(causal, x.dtype) + _additive(~keys, x.dtype).view(B, 1, 1, L)
        memory_mask = None if memory_mask.all() else _additive(~memory_mask, x.dtype)[:, None, None, :]  # (B, 1, 1, S)
        for layer in m.decoder.layers:
            sa, ca = layer.self_attn, layer.multihead_attn
            x = layer(
                x,
                lambda x, a=sa: a.attend(*a.qkv(x), self_mask, is_causal=self_mask is None),
                lambda x, a=ca: a.attend(a.project(x, 0), a.project(memory, 1), a.project(memory, 2), memory_mask),
            )
        return x

    def shift_right(self, ids):  # (B, T) -> decoder inputs: the start token, then ids[:, :-1] (-100 -> pad)
        return shift_right(ids, self.config.decoder_start_token_id, self.config.pad_token_id)

    def hidden(self, input_ids, attention_mask=None, decoder_input_ids=None, decoder_attention_mask=None):
        """-> (the decoder's states (B, T_dec, d), the encoder's (B, T, d))."""
        memory, mask = self.encode(input_ids, attention_mask)
        if decoder_input_ids is None:
            decoder_input_ids = self.shift_right(input_ids)
        return self.decode(decoder_input_ids, memory, mask, decoder_attention_mask), memory

    def forward(self, input_ids, attention_mask=None, decoder_input_ids=None, decoder_attention_mask=None):
        return self.hidden(input_ids, attention_mask, decoder_input_ids, decoder_attention_mask)[0]

    # ------------------------------------------------------------------- HF checkpoints
    # (HFCheckpoint gives from_pretrained, save_pretrained, load_hf_state_dict and hf_state_dict)
    config_class, hf_body, hf_architecture = BartConfig, "BART", "BartModel"
    hf_optional = ("classification_head.", "final_logits_bias")  # heads that may start fresh

    @property
    def prefix(self):  # where the body sits: "model." in the head classes, as in HF's
        return "" if self.body is self else "model."

    def hf_rename(self, sd):  # a bare BartModel's keys <-> a head class's "model."-prefixed ones
        body = ("shared.", "encoder.", "decoder.")
        if self.prefix:
            return {("model." + k if k.startswith(body) else k): v for k, v in sd.items()}
        return {k.removeprefix("model."): v for k, v in sd.items()}

    @property
    def hf_tied(self):  # {HF key: our key it copies}
        p = self.prefix
        tied = {f"{p}encoder.embed_tokens.weight": f"{p}shared.weight"}
        return tied | {f"{p}decoder.embed_tokens.weight": f"{p}shared.weight", "lm_head.weight": f"{p}shared.weight"}

    def hf_keys(self):
        """{our key: HF key or keys (concatenated)} for every BART class (each takes its part)."""
        c, p = self.config, self.prefix
        keys = {f"{p}shared.weight": f"{p}shared.weight", "final_logits_bias": "final_logits_bias"}
        for leaf in ("dense.weight", "dense.bias", "out_proj.weight", "out_proj.bias"):
            keys[f"classification_head.{leaf}"] = f"classification_head.{leaf}"
        for stack, n in (("encoder", c.encoder_layers), ("decoder", c.decoder_layers)):
            for name in ("embed_positions.weight", "layernorm_embedding.weight", "layernorm_embedding.bias"):
                keys[f"{p}{stack}.{name}"] = f"{p}{stack}.{name}"
            norms = ["self_attn_layer_norm", "final_layer_norm"]
            if stack == "decoder":
                norms.insert(1, "encoder_attn_layer_norm")
            for i in range(n):
                ours, hf = f"{p}{stack}.layers.{i}.", f"{p}{stack}.layers.{i}."
                attns = {"self_attn": "self_attn", "multihead_attn": "encoder_attn"} if stack == "decoder" else {}
                for a, h in (attns or {"self_attn": "self_attn"}).items():
                    for kind in ("weight", "bias"):
                        keys[f"{ours}{a}.in_proj_{kind}"] = tuple(f"{hf}{h}.{x}_proj.{kind}" for x in "qkv")
                        keys[f"{ours}{a}.out_proj.{kind}"] = f"{hf}{h}.out_proj.{kind}"
                for kind in ("weight", "bias"):
                    keys[f"{ours}linear1.{kind}"], keys[f"{ours}linear2.{kind}"] = f"{hf}fc1.{kind}", f"{hf}fc2.{kind}"
                    for j, norm in enumerate(norms, 1):
                        keys[f"{ours}norm{j}.{kind}"] = f"{hf}{norm}.{kind}"
        return keys

    def hf_config(self):
        return self.config.to_hf(self.hf_architecture)


class BartForConditionalGeneration(BartModel):
    """BART with its language-model head (the embeddings, plus final_logits_bias).

    forward(input_ids, attention_mask=None, decoder_input_ids=None, decoder_attention_mask=None,
    labels=None) -> Seq2SeqLMOutput. Without decoder_input_ids: the labels shifted right when
    given (decoder_start_token_id first, -100 -> pad), else the input ids shifted right. With
    labels the output's `sums` hold the loss summed over the targets, and `counts(batch)` their
    number (the training loop's contract, contract.Sums)."""

    hf_architecture = "BartForConditionalGeneration"
    label_smoothing = 0.0  # of the training loss (0.1 in fairseq's fine-tuning recipes); not in HF's config

    def __init__(self, config: BartConfig):
        nn.Module.__init__(self)
        self.config = config
        self.model = BartModel(config)
        self.register_buffer("final_logits_bias", torch.zeros(1, config.vocab_size))

    def logits(self, x):  # (B, T, d) -> (B, T, V)
        return linear(x, self.model.shared.weight) + self.final_logits_bias

    def forward(self, input_ids, attention_mask=None, decoder_input_ids=None, decoder_attention_mask=None, labels=None):
        if labels is not None:
            check_labels(labels, input_ids, decoder_input_ids, self.config.vocab_size)
            if decoder_input_ids is None:
                decoder_input_ids = self.shift_right(labels)
        h, memory = self.hidden(input_ids, attention_mask, decoder_input_ids, decoder_attention_mask)
        logits = self.logits(h)
        if labels is None:
            return Seq2SeqLMOutput(logits, encoder_last_hidden_state=memory)
        sums = seq2seq_sums(logits, labels, input_ids, attention_mask, self.label_smoothing)
        return Seq2SeqLMOutput(logits, sums.loss(), sums, memory)

    counts = staticmethod(seq2seq_counts)  # the loop's contract: targets, real tokens

    # ------------------------------------------------------------------------- generation

    @torch.no_grad()
    def generate(
        self,
        input_ids,
        attention_mask=None,
        max_new_tokens=20,
        num_beams=1,
        length_penalty=1.0,
        early_stopping=False,
        no_repeat_ngram_size=0,
        min_length=0,
        forced_bos_token_id=None,
        forced_eos_token_id=None,
        do_sample=False,
        temperature=1.0,
        top_k=50,
        top_p=None,
        generator=None,
        use_cache=True,
    ):
        """Greedy decoding, sampling or beam search -> (B, 1 + n): decoder_start_token_id (</s>),
        then at most max_new_tokens tokens, as HF's generate returns them (finished rows padded;
        beam search: each row's best hypothesis by sum log p / length**length_penalty, HF's
        stopping rules). HF's logits processors: min_length (EOS banned while the sequence, the
        start token included, is shorter), no_repeat_ngram_size, forced_bos_token_id (the first
        token) and forced_eos_token_id (the token at the length limit); None takes the config's
        value, as HF's generation config does (BART: forced EOS 2; bart-base/large: forced BOS 0).
        Sampling: decoding.next_token (temperature, top_k, top_p). The encoder runs once, cross-attention
        keys/values are computed once, the decoder's own are cached."""
        check_generation(max_new_tokens, num_beams, early_stopping, do_sample, temperature, top_k, top_p)
        check_prompt(input_ids)
        c = self.config
        ids = c.decoder_start_token_id, c.pad_token_id, c.eos_token_id
        bos = c.forced_bos_token_id if forced_bos_token_id is None else forced_bos_token_id
        eos = c.forced_eos_token_id if forced_eos_token_id is None else forced_eos_token_id
        for name, i in (("forced_bos_token_id", bos), ("forced_eos_token_id", eos)):
            if i is not None and not 0 <= i < c.vocab_size:
                raise ValueError(f"{name} must be an id in [0, vocab_size={c.vocab_size}), got {i}")
        memory, mask = self.encode(input_ids, attention_mask)
        N, L = memory.shape[0] * num_beams, 1 + max_new_tokens  # rows (a row per beam), positions
        memory, mask = memory.repeat_interleave(num_beams, 0), mask.repeat_interleave(num_beams, 0)
        layers, cache = self.model.decoder.layers, None
        if use_cache:  # the memory's keys and values computed once; the decoder's own written step by step
            kv = [
                (layer.multihead_attn.project(memory, 1), layer.multihead_attn.project(memory, 2)) for layer in layers
            ]
            heads, hd = kv[0][0].shape[1], kv[0][0].shape[3]
            cache = KVCache(len(layers), N, heads, L, hd, memory, kv)
            memory_mask = _additive(~mask, memory.dtype)[:, None, None, :]  # (N, 1, 1, S)

        def log_probs(seqs, t, rows=None):  # seqs (N, >= t): the next token's log-probabilities (N, V)
            if cache is not None:
                if rows is not None:  # beam search: row r continues row rows[r]
                    cache.reorder(rows)
                x = self.model.decoder.embed(self.model.shared(seqs[:, t - 1 : t]), pos=t - 1)
                for layer, kv in zip(layers, cache.layers, strict=True):
                    sa = partial(_cached_self_attention, layer.self_attn, kv, t - 1)
                    ca, mem = layer.multihead_attn, kv.memory
                    x = layer(x, sa, lambda x, a=ca, mem=mem: a.attend(a.project(x, 0), *mem, memory_mask))
            else:
                x = self.decode(seqs[:, :t], memory, mask)
            scores = self.logits(x[:, -1]).float().log_softmax(-1)
            scores = constrain(scores, seqs, t, L, c.eos_token_id, min_length, no_repeat_ngram_size, bos, eos)
            return scores

        if num_beams == 1:
            choose = lambda scores: next_token(scores, temperature if do_sample else 0, top_k, top_p, generator)  # noqa: E731
            return greedy_search(log_probs, choose, N, L, *ids, memory.device)
        return beam_search(log_probs, N // num_beams, num_beams, L, *ids, length_penalty, early_stopping, memory.device)


class BartClassificationHead(nn.Module):
    """dropout, dense d -> d, tanh, dropout, out_proj d -> num_labels (HF's names)."""

    def __init__(self, c: BartConfig):
        super().__init__()
        self.dense, self.out_proj = nn.Linear(c.d_model, c.d_model), nn.Linear(c.d_model, c.num_labels)
        self.dropout = nn.Dropout(c.classifier_dropout)

    def forward(self, x):  # (B, d) -> (B, num_labels)
        return self.out_proj(self.dropout(torch.tanh(self.dense(self.dropout(x)))))


class BartForSequenceClassification(BartModel):
    """A classifier (num_labels > 1, cross-entropy) or regressor (1, MSE) on the decoder's state at
    each row's last EOS of input_ids (the decoder reads the input shifted right, so that state has
    seen the whole sequence). Every row must hold the same number of EOS tokens, as HF checks.

    forward(input_ids, attention_mask=None, labels=None) -> contract.ClassifierOutput."""

    hf_architecture = "BartForSequenceClassification"

    def __init__(self, config: BartConfig):
        nn.Module.__init__(self)
        self.config = config
        self.model = BartModel(config)
        self.classification_head = BartClassificationHead(config)
        for p in self.classification_head.parameters():  # HF's init
            nn.init.normal_(p, std=config.init_std) if p.dim() > 1 else nn.init.zeros_(p)

    def forward(self, input_ids, attention_mask=None, labels=None):
        c = self.config
        B, _ = check_ids(input_ids, "input_ids", c.vocab_size)
        eos = input_ids == c.eos_token_id
        n = eos.sum(1)
        if (n != n[0]).any() or n[0] == 0:
            raise ValueError(
                f"input_ids: every row must hold the same number (>= 1) of eos tokens (id {c.eos_token_id}),"
                f" got {sorted(set(n.tolist()))}"
            )
        h = self.hidden(input_ids, attention_mask)[0]  # (B, T, d)
        logits = self.classification_head(h[eos].view(B, -1, h.shape[-1])[:, -1])
        if labels is None:
            return ClassifierOutput(logits)
        if labels.shape[0] != B:
            raise ValueError(f"labels must have {B} rows (the batch), got shape {tuple(labels.shape)}")
        sums = classifier_sums(logits, labels, dict(input_ids=input_ids, attention_mask=attention_mask))
        return ClassifierOutput(logits, sums.loss(), sums)

    counts = staticmethod(sequence_counts)


# -------------------------------------------------------------------------------- noising
# fairseq's DenoisingDataset, on one document of token ids (<s> ... </s>; the ends never move or
# change), drawing from a NumPy Generator: deterministic per seed. The target is the original.


def span_noise(ids, rng, mask_id, ratio, poisson_lambda=None, replace_length=1, random_ratio=0.0, vocab_size=None):
    """fairseq's add_whole_word_mask on subword tokens: ceil(ratio * n) of the n inner tokens are
    noised, in spans starting at random distinct tokens. Span lengths: 1 (poisson_lambda None:
    token masking or deletion) or Poisson(lambda) draws until they cover the budget, the last one
    cut to fit (text infilling); a 0-length span becomes an inserted mask. replace_length 1: each
    span becomes one mask (a random token with probability random_ratio), 0: it is deleted, -1:
    each of its tokens becomes a mask. Spans stop before </s>; overlapping spans merge."""
    if not 0 <= ratio <= 1:
        raise ValueError(f"the noise ratio must be in [0, 1], got {ratio}")
    if poisson_lambda is not None and poisson_lambda <= 0:
        raise ValueError(f"poisson_lambda must be > 0, got {poisson_lambda}")
    out, n = np.array(ids), len(ids)
    budget = math.ceil((n - 2) * ratio)
    if budget == 0 or n < 3:
        return out
    lengths, inserts = np.ones(budget, dtype=np.int64), 0
    if poisson_lambda is not None:
        lengths = poisson_spans(budget, rng, poisson_lambda)
        inserts, lengths = int((lengths == 0).sum()), lengths[lengths > 0]
    starts = rng.permutation(np.arange(1, n - 1))[: len(lengths)]
    lengths, swap = lengths[: len(starts)], rng.random(len(starts)) < random_ratio

    def mask(pos, swap):  # the masks, some of them random tokens
        out[pos] = mask_id
        if swap.any():
            out[pos[swap]] = rng.integers(1, vocab_size, int(swap.sum()))

    keep = np.ones(n, dtype=bool)
    keep[starts] = replace_length != 0
    if replace_length != 0:
        mask(starts, swap)
    pos, left = starts, lengths - 1
    while len(pos):  # each span goes on to its next token while its length lasts, never onto </s>
        go = (left > 0) & (pos + 1 < n - 1)
        pos, left, swap = pos[go] + 1, left[go] - 1, swap[go]
        if replace_length == -1:
            mask(pos, swap)
        else:
            keep[pos] = False
    out = out[keep]
    return insert_noise(out, rng, mask_id, inserts, random_ratio, vocab_size) if inserts else out


def poisson_spans(budget, rng, poisson_lambda):
    """fairseq's span lengths: Poisson(lambda) draws until they cover `budget` tokens, the last
    one cut so that they sum to it exactly (zeros included: they become insertions)."""
    lengths = rng.poisson(poisson_lambda, budget)
    while lengths.sum() < budget:
        lengths = np.concatenate([lengths, rng.poisson(poisson_lambda, budget)])
    i = int(np.searchsorted(np.cumsum(lengths), budget))  # the first span that reaches the budget
    lengths[i] = budget - lengths[:i].sum()
    return lengths[: i + 1]


def insert_noise(ids, rng, mask_id, count, random_ratio=0.0, vocab_size=None):
    """fairseq's add_insertion_noise: `count` masks (a random_ratio share of them random tokens)
    inserted at random places between <s> and </s>."""
    n = len(ids)
    where = rng.permutation(n + count - 2)[:count] + 1
    noise = np.zeros(n + count, dtype=bool)
    noise[where] = True
    out = np.empty(n + count, dtype=np.asarray(ids).dtype)
    r = math.ceil(count * random_ratio)
    out[where[r:]] = mask_id
    if r:
        out[where[:r]] = rng.integers(1, vocab_size, r)
    out[~noise] = ids
    return out


def permute_sentences(ids, rng, full_stop_id, ratio=1.0):
    """fairseq's permute_sentences: the sentences (each ending at a run of full_stop_id; the text
    before </s> ends one too) of a share `ratio` of them shuffled among their places."""
    ids = np.asarray(ids)
    full = ids == full_stop_id
    full[-2] = True
    ends = np.flatnonzero(full[1:] & ~full[:-1]) + 2  # a full stop after a token that is not one
    k = math.ceil(len(ends) * ratio)
    chosen = rng.permutation(len(ends))[:k]
    order = np.arange(len(ends))
    order[chosen] = chosen[rng.permutation(k)]
    starts = np.concatenate([[1], ends[:-1]])
    return np.concatenate([ids[:1], *(ids[starts[i] : ends[i]] for i in order), ids[ends[-1] :]])


def rotate_document(ids, rng):
    """fairseq's add_rolling_noise: the inner tokens rotated to start at a random one."""
    ids = np.asarray(ids)
    k = int(rng.integers(1, max(1, len(ids) - 1) + 1))
    return np.concatenate([ids[:1], ids[k:-1], ids[1:k], ids[-1:]])


NOISINGS = ("mask", "delete", "infill", "permute", "rotate", "infill+permute")


def add_noise(ids, rng, noising, mask_id, full_stop_id, vocab_size, mask_ratio=None, poisson_lambda=3.0):
    """The paper's noisings (Table 1) of a document <s> ... </s>: "mask" (15% of the tokens, one
    mask each, BERT's share), "delete" (15% deleted), "infill" (30% in Poisson(3) spans, one mask
    per span), "permute" (sentences shuffled), "rotate" (the document rotated), and BART-large's
    "infill+permute". Steps in fairseq's order: permute, then the spans, then the rotation."""
    if noising not in NOISINGS:
        raise ValueError(f"noising must be one of {', '.join(NOISINGS)}, got {noising!r}")
    if len(ids) < 3:
        raise ValueError(f"add_noise: a document is <s> ... </s> with at least one token inside, got {len(ids)} ids")
    kinds = noising.split("+")
    if "permute" in kinds:
        ids = permute_sentences(ids, rng, full_stop_id)
    spans = {"mask": (0.15, None, 1), "delete": (0.15, None, 0), "infill": (0.3, poisson_lambda, 1)}
    for kind, (ratio, lam, replace) in spans.items():
        if kind in kinds:
            ratio = ratio if mask_ratio is None else mask_ratio
            ids = span_noise(ids, rng, mask_id, ratio, lam, replace, vocab_size=vocab_size)
    return rotate_document(ids, rng) if "rotate" in kinds else np.asarray(ids)
