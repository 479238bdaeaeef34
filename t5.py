"""T5 (Raffel et al. 2020, "Exploring the Limits of Transfer Learning with a Unified Text-to-Text
Transformer"), v1.0 and v1.1, from scratch.

An encoder-decoder Transformer with four departures from the 2017 one: RMS norms (scale only, no
mean, no bias) before each sub-layer and after each stack; no biases anywhere; no position
embeddings but a learned bias per head on the attention scores, looked up by the bucket of the
relative distance (bidirectional in the encoder, causal in the decoder), computed by each stack's
first layer and reused by all of its layers; and no 1/sqrt(d) scaling of the scores (the
initialization of the query projection absorbs it). v1.0 uses ReLU and ties the output layer to
the embeddings (rescaling the decoder output by d_model**-0.5); v1.1 and FLAN-T5 a GELU-gated
feed-forward (gelu_new) and an untied head.

Pretraining is span corruption (`span_corruption`): 15% of the tokens, in spans of mean length 3,
are replaced in the input by one sentinel each, and the target lists each sentinel followed by
the tokens it hides. Checkpoints are read from and written to Hugging Face's format
(`T5ForConditionalGeneration`, `T5Model`, `T5EncoderModel`) through an explicit key map.
"""

import math
import os
from dataclasses import asdict, dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contract import Sums, check_ids, check_labels, check_mask, seq2seq_counts, seq2seq_sums, shift_right
from decoding import KVCache, beam_search, check_generation, check_prompt, constrain, greedy_search, next_token
from hf_checkpoint import HFCheckpoint, config_fields, read_hf_weights, read_json, resolve_checkpoint
from layers import ACTIVATIONS, linear, pack_tokens, unpack_tokens

# ----------------------------------------------------------------------------------- config


@dataclass
class T5Config:
    """Field names follow HF's T5Config."""

    vocab_size: int = 32128  # SentencePiece's 32,000 + 100 sentinels, padded to a multiple of 128
    d_model: int = 512
    d_kv: int = 64  # per head: T5 does not tie it to d_model / num_heads
    d_ff: int = 2048
    num_layers: int = 6  # encoder layers
    num_decoder_layers: int | None = None  # None: num_layers
    num_heads: int = 8
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128  # distances beyond it share the last bucket
    dropout_rate: float = 0.1
    layer_norm_epsilon: float = 1e-6
    initializer_factor: float = 1.0
    feed_forward_proj: str = "relu"  # v1.0: "relu"; v1.1, FLAN: "gated-gelu" (gelu_new(x W0) * x W1)
    tie_word_embeddings: bool = True  # v1.0: the head is the embedding matrix; v1.1: a matrix of its own
    scale_decoder_outputs: bool | None = None  # x * d_model**-0.5 before the head (None: tie_word_embeddings)
    pad_token_id: int = 0
    eos_token_id: int | None = 1  # None: generation runs max_new_tokens
    decoder_start_token_id: int = 0  # the decoder starts from <pad>
    model_type: str = "t5"

    def __post_init__(self):
        if self.num_decoder_layers is None:
            self.num_decoder_layers = self.num_layers
        if self.scale_decoder_outputs is None:
            self.scale_decoder_outputs = self.tie_word_embeddings
        if self.act not in ACTIVATIONS or self.feed_forward_proj.count("-") > int(self.gated):
            raise ValueError(
                f"feed_forward_proj must be an activation or gated-<activation> ({sorted(ACTIVATIONS)}),"
                f" got {self.feed_forward_proj!r}"
            )

    @property
    def gated(self):
        return self.feed_forward_proj.startswith("gated-")

    @property
    def act(self):  # HF maps "gated-gelu" to the tanh form
        name = self.feed_forward_proj.split("-")[-1]
        return "gelu_new" if self.feed_forward_proj == "gated-gelu" else name

    @classmethod
    def from_preset(cls, name, **overrides):
        if name not in PRESETS:
            raise ValueError(
                f"unknown arch {name!r} (a key of t5.PRESETS, train.py's --arch): choose from {sorted(PRESETS)}"
            )
        return cls(**{**PRESETS[name], **overrides})

    @classmethod
    def from_hf(cls, hf: dict, **overrides):
        """From the dict of an HF config.json (T5Config)."""
        if hf.get("model_type") != "t5":
            raise ValueError(f"config.json: model_type must be 't5', got {hf.get('model_type')!r}")
        kw = config_fields(cls, hf)
        kw["decoder_start_token_id"] = hf.get("decoder_start_token_id") or kw.get("pad_token_id", 0)
        return cls(**{**kw, **overrides})

    def to_hf(self):
        return {**asdict(self), "architectures": ["T5ForConditionalGeneration"], "is_encoder_decoder": True}


V1_1 = dict(feed_forward_proj="gated-gelu", tie_word_embeddings=False, d_kv=64)
PRESETS = {
    "t5-small": dict(d_model=512, d_ff=2048, num_layers=6, num_heads=8),  # 60M
    "t5-base": dict(d_model=768, d_ff=3072, num_layers=12, num_heads=12),  # 223M
    "t5-large": dict(d_model=1024, d_ff=4096, num_layers=24, num_heads=16),  # 738M
    "t5-v1_1-small": dict(**V1_1, d_model=512, d_ff=1024, num_layers=8, num_heads=6),  # 77M
    "t5-v1_1-base": dict(**V1_1, d_model=768, d_ff=2048, num_layers=12, num_heads=12),  # 248M
    "flan-t5-small": dict(**V1_1, d_model=512, d_ff=1024, num_layers=8, num_heads=6),  # 77M
    "flan-t5-base": dict(**V1_1, d_model=768, d_ff=2048, num_layers=12, num_heads=12),  # 248M
    # CPU sizes: about transformer.py's Multi30k model (7.6M with an 8,000 vocabulary), and a test size
    "t5-multi30k": dict(vocab_size=8000, d_model=256, d_kv=32, d_ff=1024, num_layers=3, num_heads=8),
    "t5-tiny-test": dict(vocab_size=99, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, dropout_rate=0.0),
}
PRESETS["t5-v1_1-tiny-test"] = {**PRESETS["t5-tiny-test"], **V1_1, "d_kv": 8}

# -------------------------------------------------------------------------------- the model


class RMSNorm(nn.Module):
    """HF's T5LayerNorm: x / rms(x) * weight, the mean square in fp32, no mean, no bias."""

    def __init__(self, d, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        x = x * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * (x.to(self.weight.dtype) if self.weight.dtype in (torch.float16, torch.bfloat16) else x)


def relative_position_bucket(relative, bidirectional, num_buckets=32, max_distance=128):
    """T5's buckets of key position - query position: half of the buckets (all, causal) hold exact
    distances 0..n/2-1, the other half distances up to max_distance on a log scale; bidirectional
    buckets spend half of them on keys to the right."""
    buckets = torch.zeros_like(relative)
    if bidirectional:
        num_buckets //= 2
        buckets += (relative > 0).long() * num_buckets
        distance = relative.abs()
    else:  # the decoder: keys to the right are masked anyway
        distance = (-relative).clamp(min=0)
    exact = num_buckets // 2
    log_part = (
        exact + (torch.log(distance.float() / exact) / math.log(max_distance / exact) * (num_buckets - exact)).long()
    )
    return buckets + torch.where(distance < exact, distance, log_part.clamp(max=num_buckets - 1))


class Attention(nn.Module):
    """Multi-head attention without biases or score scaling; `bias` (position bias + mask) is
    added to the scores. The first layer of a stack owns the relative-position table."""

    def __init__(self, c: T5Config, relative=False, bidirectional=True):
        super().__init__()
        inner = c.num_heads * c.d_kv
        self.h, self.bidirectional, self.c = c.num_heads, bidirectional, c
        self.q, self.k, self.v = (nn.Linear(c.d_model, inner, bias=False) for _ in range(3))
        self.o = nn.Linear(inner, c.d_model, bias=False)
        self.relative_attention_bias = nn.Embedding(c.relative_attention_num_buckets, c.num_heads) if relative else None
        self.p = c.dropout_rate

    def position_bias(self, T, S, pos=0):  # -> (1, H, T, S): queries at pos..pos+T-1, keys at 0..S-1
        device = self.relative_attention_bias.weight.device
        relative = torch.arange(S, device=device)[None, :] - torch.arange(pos, pos + T, device=device)[:, None]
        c = self.c
        buckets = relative_position_bucket(
            relative, self.bidirectional, c.relative_attention_num_buckets, c.relative_attention_max_distance
        )
        return self.relative_attention_bias(buckets).permute(2, 0, 1)[None]

    def split(self, t, packed=None):  # (B, T, inner), or (N, inner) real tokens -> (B, H, T, d_kv)
        t = unpack_tokens(t, *packed) if packed is not None else t
        return t.view(t.shape[0], t.shape[1], self.h, -1).transpose(1, 2)

    def forward(self, x, bias, kv=None, cache=None, pos=0, packed=None):
        """x (B, T, d), or (N, d) real tokens where `packed` = (index, B, T) says where they sit
        (the encoder skips padding); bias (B or 1, H, T, S); kv: the keys and values (B, H, S,
        d_kv) when given (cross-attention, computed once); cache: this layer's decoding.LayerCache, to
        write positions pos..pos+T-1 into (decoder self-attention)."""
        q = self.split(self.q(x), packed)
        B, _, T, _ = q.shape
        k, v = kv if kv is not None else (self.split(self.k(x), packed), self.split(self.v(x), packed))
        if cache is not None:
            k, v = cache.update(k, v, pos)
        p = self.p if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), dropout_p=p, scale=1.0)
        y = y.transpose(1, 2).reshape(B, T, -1)  # (B, T, inner)
        return self.o(pack_tokens(y, packed[0]) if packed is not None else y)


class FeedForward(nn.Module):
    def __init__(self, c: T5Config):
        super().__init__()
        self.gated, self.act = c.gated, ACTIVATIONS[c.act]
        if c.gated:
            self.wi_0, self.wi_1 = nn.Linear(c.d_model, c.d_ff, bias=False), nn.Linear(c.d_model, c.d_ff, bias=False)
        else:
            self.wi = nn.Linear(c.d_model, c.d_ff, bias=False)
        self.wo = nn.Linear(c.d_ff, c.d_model, bias=False)
        self.dropout = nn.Dropout(c.dropout_rate)

    def forward(self, x):
        h = self.act(self.wi_0(x)) * self.wi_1(x) if self.gated else self.act(self.wi(x))
        return self.wo(self.dropout(h))


class Block(nn.Module):
    """Pre-norm residual sub-layers: self-attention, cross-attention (decoder), feed-forward."""

    def __init__(self, c: T5Config, decoder, first):
        super().__init__()
        self.ln_attn = RMSNorm(c.d_model, c.layer_norm_epsilon)
        self.attn = Attention(c, relative=first, bidirectional=not decoder)
        if decoder:
            self.ln_cross = RMSNorm(c.d_model, c.layer_norm_epsilon)
            self.cross = Attention(c)
        self.ln_ff = RMSNorm(c.d_model, c.layer_norm_epsilon)
        self.ff = FeedForward(c)
        self.dropout = nn.Dropout(c.dropout_rate)

    def forward(self, x, bias, memory_kv=None, memory_bias=None, cache=None, pos=0, packed=None):
        x = x + self.dropout(self.attn(self.ln_attn(x), bias, cache=cache, pos=pos, packed=packed))
        if memory_kv is not None:
            x = x + self.dropout(self.cross(self.ln_cross(x), memory_bias, kv=memory_kv))
        return x + self.dropout(self.ff(self.ln_ff(x)))


class Stack(nn.Module):
    """The encoder or the decoder: blocks, then a final norm and dropout."""

    def __init__(self, c: T5Config, decoder):
        super().__init__()
        n = c.num_decoder_layers if decoder else c.num_layers
        self.decoder = decoder
        self.block = nn.ModuleList(Block(c, decoder, first=i == 0) for i in range(n))
        self.final_layer_norm = RMSNorm(c.d_model, c.layer_norm_epsilon)
        self.dropout = nn.Dropout(c.dropout_rate)

    def forward(self, x, mask, memory=None, memory_mask=None, cache=None, pos=0, memory_kv=None):
        """x (B, T, d) embedded; mask (B, 1, T or 1, S) bool, True where a query may look; memory
        (B, S', d) the encoder's output (decoder), or its per-layer keys/values `memory_kv`. The
        encoder runs its projections and feed-forwards on the real tokens only (zeros at padding)."""
        B, T = x.shape[:2]
        S = pos + T if self.decoder else mask.shape[-1]
        bias = self.block[0].attn.position_bias(T, S, pos) + additive(mask, x.dtype)  # one for every layer
        if memory is not None and memory_kv is None:
            memory_kv = self.memory_kv(memory, memory_mask[:, 0, 0])
        memory_bias = additive(memory_mask, x.dtype) if memory_kv is not None else None
        packed = None if self.decoder or mask.all() else (mask.flatten().nonzero().squeeze(1), B, T)
        x = self.dropout(x if packed is None else pack_tokens(x, packed[0]))  # (B, T, d) or (N, d)
        for i, block in enumerate(self.block):
            kv = memory_kv[i] if memory_kv is not None else None
            x = block(x, bias, kv, memory_bias, None if cache is None else cache[i], pos, packed)
        x = self.dropout(self.final_layer_norm(x))
        return x if packed is None else unpack_tokens(x, *packed)

    def memory_kv(self, memory, real):
        """The encoder output's keys and values (B, H, S, d_kv) for each layer's cross-attention,
        projected from its real tokens (real: (B, S) bool)."""
        B, S, _ = memory.shape
        packed = None if real.all() else (real.flatten().nonzero().squeeze(1), B, S)
        x = memory if packed is None else pack_tokens(memory, packed[0])
        return [(b.cross.split(b.cross.k(x), packed), b.cross.split(b.cross.v(x), packed)) for b in self.block]


def additive(mask, dtype):  # bool mask (True: may look) -> 0 / the dtype's lowest, as HF adds it
    return torch.zeros((), dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)


class Seq2SeqLMOutput(NamedTuple):
    logits: Tensor  # (B, T_dec, V)
    loss: Tensor | None = None  # mean cross-entropy over labels != -100
    sums: Sums | None = None  # the same summed over the targets, for the training loop
    encoder_last_hidden_state: Tensor | None = None  # (B, T_enc, d)


class T5Model(HFCheckpoint, nn.Module):
    """The shared embeddings, the encoder and the decoder.

    forward(input_ids, attention_mask=None, decoder_input_ids=..., decoder_attention_mask=None)
    -> the decoder's last hidden states (B, T_dec, d_model). Masks: 1 = token, 0 = padding."""

    has_decoder, has_head = True, False  # the subclasses' parts

    def __init__(self, config: T5Config):
        super().__init__()
        self.config = c = config
        self.shared = nn.Embedding(c.vocab_size, c.d_model)
        self.encoder = Stack(c, decoder=False)
        if self.has_decoder:
            self.decoder = Stack(c, decoder=True)
        if self.has_head and not c.tie_word_embeddings:
            self.lm_head = nn.Linear(c.d_model, c.vocab_size, bias=False)
        self._init_weights()

    def _init_weights(self):
        """HF's T5 initialization: N(0, factor) embeddings and untied head, projections at
        1/sqrt(fan-in) (the query's also over d_kv: the score scaling it replaces), norms at 1."""
        c, f = self.config, self.config.initializer_factor
        std = {"q": (c.d_model * c.d_kv) ** -0.5, "k": c.d_model**-0.5, "v": c.d_model**-0.5}
        std |= {"o": (c.num_heads * c.d_kv) ** -0.5, "wi": c.d_model**-0.5, "wi_0": c.d_model**-0.5}
        std |= {"wi_1": c.d_model**-0.5, "wo": c.d_ff**-0.5, "relative_attention_bias": c.d_model**-0.5}
        std |= {"shared": 1.0, "lm_head": 1.0}
        for name, p in self.named_parameters():
            parts = name.split(".")
            if parts[-2].startswith("ln_") or parts[-2] == "final_layer_norm":
                nn.init.constant_(p, f)
            else:
                nn.init.normal_(p, std=f * std[parts[-2]])

    def encode(self, input_ids, attention_mask=None):  # -> (B, T, d), the mask (B, T) bool
        c = self.config
        B, T = check_ids(input_ids, "input_ids", c.vocab_size)
        mask = check_mask(attention_mask, "attention_mask", (B, T), input_ids.device)
        return self.encoder(self.shared(input_ids), mask[:, None, None, :]), mask

    def decode(self, ids, memory, memory_mask, attention_mask=None, cache=None, pos=0, memory_kv=None):
        """Decoder ids (B, T) at positions pos..pos+T-1 -> hidden states (B, T, d); memory_mask (B, S) bool."""
        B, T = check_ids(ids, "decoder_input_ids", self.config.vocab_size)
        keys = check_mask(attention_mask, "decoder_attention_mask", (B, pos + T), ids.device)
        mask = torch.ones(T, pos + T, dtype=torch.bool, device=ids.device).tril(pos) & keys[:, None, None, :]
        return self.decoder(self.shared(ids), mask, memory, memory_mask[:, None, None, :], cache, pos, memory_kv)

    def forward(self, input_ids, attention_mask=None, decoder_input_ids=None, decoder_attention_mask=None):
        if decoder_input_ids is None:
            raise ValueError("decoder_input_ids is required: the decoder starts from decoder_start_token_id (pad)")
        memory, mask = self.encode(input_ids, attention_mask)
        return self.decode(decoder_input_ids, memory, mask, decoder_attention_mask)

    # ------------------------------------------------------------------- HF checkpoints
    # (HFCheckpoint gives from_pretrained, save_pretrained, load_hf_state_dict and hf_state_dict)
    config_class = T5Config
    hf_ignored = ("EncDecAttention.relative_attention_bias.weight",)  # old checkpoints: a table never used
    hf_body = "T5"

    @property
    def hf_tied(self):  # {HF key: our key it copies}
        tied = {"encoder.embed_tokens.weight": "shared.weight", "decoder.embed_tokens.weight": "shared.weight"}
        return tied | ({"lm_head.weight": "shared.weight"} if self.config.tie_word_embeddings else {})

    def hf_keys(self):
        """{our key: HF key} of T5ForConditionalGeneration (the other classes take their part)."""
        c = self.config
        keys = {"shared.weight": "shared.weight", "lm_head.weight": "lm_head.weight"}
        for stack, n in (("encoder", c.num_layers), ("decoder", c.num_decoder_layers)):
            keys[f"{stack}.final_layer_norm.weight"] = f"{stack}.final_layer_norm.weight"
            for i in range(n):
                ff = 2 if stack == "decoder" else 1
                names = {
                    "attn": "layer.0.SelfAttention",
                    "ln_attn": "layer.0.layer_norm",
                    "ff": f"layer.{ff}.DenseReluDense",
                }
                names |= {
                    "ln_ff": f"layer.{ff}.layer_norm",
                    "cross": "layer.1.EncDecAttention",
                    "ln_cross": "layer.1.layer_norm",
                }
                for ours, hf in names.items():
                    for leaf in ("q", "k", "v", "o", "wi", "wi_0", "wi_1", "wo", "relative_attention_bias", "weight"):
                        suffix = "" if leaf == "weight" else f".{leaf}"
                        keys[f"{stack}.block.{i}.{ours}{suffix}.weight"] = f"{stack}.block.{i}.{hf}{suffix}.weight"
        return keys

    @classmethod
    def from_pretrained(cls, name_or_dir, ignore_mismatched_sizes=False, **overrides):
        """As HFCheckpoint's, except that a head stored apart from the embeddings (v1.1, whatever
        config.json's tie_word_embeddings says: transformers 5 always writes true) stays apart."""
        folder = resolve_checkpoint(name_or_dir)
        hf, sd = read_json(os.path.join(folder, "config.json")), read_hf_weights(folder)
        if (
            "lm_head.weight" in sd
            and "shared.weight" in sd
            and not torch.equal(sd["lm_head.weight"], sd["shared.weight"])
        ):
            overrides = {"tie_word_embeddings": False, **overrides}
        model = cls(cls.config_class.from_hf(hf, **overrides))
        model.load_hf_state_dict(sd, ignore_mismatched_sizes, folder)
        return model

    def hf_config(self):
        return self.config.to_hf()


class T5EncoderModel(T5Model):
    """The encoder alone: forward(input_ids, attention_mask=None) -> hidden states (B, T, d_model),
    zeros at padding (the encoder runs on the real tokens only; HF's values there are never read)."""

    has_decoder = False

    def forward(self, input_ids, attention_mask=None):
        return self.encode(input_ids, attention_mask)[0]


class T5ForConditionalGeneration(T5Model):
    """T5 with its language-model head.

    forward(input_ids, attention_mask=None, decoder_input_ids=None, decoder_attention_mask=None,
    labels=None) -> Seq2SeqLMOutput. Without decoder_input_ids, they are the labels shifted right
    (decoder_start_token_id first, -100 -> pad). With labels the output's `sums` hold the loss
    summed over the targets, and `T5ForConditionalGeneration.counts(batch)` their number (the
    training loop's contract, contract.Sums)."""

    has_head = True
    label_smoothing = 0.0  # of the training loss; T5 has none, a task may set it (HF's config has no such field)

    def logits(self, x):  # (B, T, d) -> (B, T, V)
        if self.config.scale_decoder_outputs:
            x = x * self.config.d_model**-0.5
        return linear(x, self.shared.weight if self.config.tie_word_embeddings else self.lm_head.weight)

    def forward(self, input_ids, attention_mask=None, decoder_input_ids=None, decoder_attention_mask=None, labels=None):
        if labels is not None:
            check_labels(labels, input_ids, decoder_input_ids, self.config.vocab_size)
            if decoder_input_ids is None:
                decoder_input_ids = self.shift_right(labels)
        elif decoder_input_ids is None:
            raise ValueError("give decoder_input_ids (starting with decoder_start_token_id) or labels")
        memory, mask = self.encode(input_ids, attention_mask)
        logits = self.logits(self.decode(decoder_input_ids, memory, mask, decoder_attention_mask))
        if labels is None:
            return Seq2SeqLMOutput(logits, encoder_last_hidden_state=memory)
        sums = seq2seq_sums(logits, labels, input_ids, attention_mask, self.label_smoothing)
        return Seq2SeqLMOutput(logits, sums.loss(), sums, memory)

    def shift_right(self, labels):  # (B, T) -> decoder inputs: the start token, then labels[:, :-1] (-100 -> pad)
        return shift_right(labels, self.config.decoder_start_token_id, self.config.pad_token_id)

    @staticmethod
    def counts(batch):  # the loop's contract: targets (not -100), real tokens of both sides
        return seq2seq_counts(batch)

    # ------------------------------------------------------------------------- generation

    def new_cache(self, batch, length, like):
        """The decoder's self-attention keys/values for `length` positions (decoding.KVCache)."""
        c = self.config
        return KVCache(c.num_decoder_layers, batch, c.num_heads, length, c.d_kv, like)

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
        do_sample=False,
        temperature=1.0,
        top_k=50,
        top_p=None,
        generator=None,
        use_cache=True,
    ):
        """Greedy decoding, sampling or beam search -> (B, 1 + n): decoder_start_token_id, then at
        most max_new_tokens tokens (it stops when every row is done), as HF's generate returns them:
        greedy and sampled rows that have produced eos_token_id are padded with pad_token_id; beam
        search returns each row's best finished hypothesis, scored sum log p / length**length_penalty,
        with HF's stopping rules (early_stopping True, False or "never") and HF's filler after EOS.
        do_sample draws each token from softmax(logits / temperature) within the top_k (HF's
        default 50; None: all) and the top_p nucleus, as HF's warpers do (one seed, HF's tokens).
        no_repeat_ngram_size n > 0 forbids any n-gram from appearing twice. The encoder runs once,
        cross-attention keys/values are computed once, the decoder's own are cached."""
        check_generation(max_new_tokens, num_beams, early_stopping, do_sample, temperature, top_k, top_p)
        check_prompt(input_ids)
        memory, mask = self.encode(input_ids, attention_mask)
        N, L = memory.shape[0] * num_beams, 1 + max_new_tokens  # rows (a row per beam), positions
        memory_kv = [
            (k.repeat_interleave(num_beams, 0), v.repeat_interleave(num_beams, 0))
            for k, v in self.decoder.memory_kv(memory, mask)
        ]
        mask = mask.repeat_interleave(num_beams, 0)
        cache = self.new_cache(N, L, memory) if use_cache else None

        def log_probs(seqs, t, rows=None):  # seqs (N, >= t): the next token's log-probabilities (N, V)
            if rows is not None and cache is not None:  # beam search: row r continues row rows[r]
                cache.reorder(rows)
            if cache is not None:
                h = self.decode(seqs[:, t - 1 : t], None, mask, cache=cache, pos=t - 1, memory_kv=memory_kv)
            else:
                h = self.decode(seqs[:, :t], None, mask, memory_kv=memory_kv)
            scores = self.logits(h[:, -1]).float().log_softmax(-1)
            return constrain(scores, seqs, t, L, no_repeat_ngram_size=no_repeat_ngram_size)

        c, device = self.config, memory.device
        ids = c.decoder_start_token_id, c.pad_token_id, c.eos_token_id
        if num_beams == 1:
            choose = lambda scores: next_token(scores, temperature if do_sample else 0, top_k, top_p, generator)  # noqa: E731
            return greedy_search(log_probs, choose, N, L, *ids, device)
        return beam_search(log_probs, N // num_beams, num_beams, L, *ids, length_penalty, early_stopping, device)


# -------------------------------------------------------------------------- span corruption


def span_lengths(length, noise_density=0.15, mean_noise_span_length=3.0):
    """T5's arithmetic: (noise tokens, noise spans) of a sequence of `length` tokens."""
    if not 0 < noise_density < 1 or not mean_noise_span_length >= 1:
        raise ValueError(
            f"noise_density must be in (0, 1) and mean_noise_span_length >= 1, got {noise_density}"
            f" and {mean_noise_span_length}"
        )
    noise = min(max(int(np.round(length * noise_density)), 1), length - 1)
    return noise, max(int(np.round(noise / mean_noise_span_length)), 1)


def input_and_target_lengths(inputs_length, noise_density=0.15, mean_noise_span_length=3.0):
    """T5's compute_input_and_target_lengths: the most raw tokens whose corrupted input (with its
    sentinels and EOS) fits inputs_length, and the target length they give (512 -> 568, 114)."""

    def lengths(tokens):
        noise = int(round(tokens * noise_density))
        spans = int(round(noise / mean_noise_span_length))
        return tokens - noise + spans + 1, noise + spans + 1

    tokens = inputs_length
    while lengths(tokens + 1)[0] <= inputs_length:
        tokens += 1
    targets = lengths(tokens)[1]
    if noise_density == 0.5 and targets > inputs_length:  # T5's correction at density 0.5
        tokens, targets = tokens - 1, targets - 1
    return tokens, targets


def _segments(rng, items, segments):  # `items` split at random into `segments` non-empty runs -> their lengths
    cuts = np.sort(rng.choice(items - 1, segments - 1, replace=False)) + 1 if segments > 1 else np.zeros(0, int)
    return np.diff(np.concatenate([[0], cuts, [items]]))


def noise_mask(length, rng, noise_density=0.15, mean_noise_span_length=3.0):
    """T5's random_spans_noise_mask: a bool array, True on the noise tokens, which form `spans`
    runs of random lengths (as many as the arithmetic gives) interleaved with non-noise runs, the
    first run non-noise."""
    noise, spans = span_lengths(length, noise_density, mean_noise_span_length)
    if spans > length - noise:
        raise ValueError(
            f"noise_density {noise_density}: {spans} noise spans need as many non-noise tokens of {length}"
        )
    runs = np.stack([_segments(rng, length - noise, spans), _segments(rng, noise, spans)], 1).reshape(-1)
    return np.repeat(np.tile([False, True], spans), runs)


def span_corruption(ids, rng, first_sentinel, eos_id, noise_density=0.15, mean_noise_span_length=3.0):
    """One example of T5's objective: token ids -> (inputs, targets). Each noise span becomes one
    sentinel in the inputs (first_sentinel, first_sentinel - 1, ...: <extra_id_0> is the top id);
    the targets are the same operation on the other runs: each sentinel, then the tokens it hides.
    Both end with eos_id."""
    ids = np.asarray(ids)
    if len(ids) < 2:
        raise ValueError(f"span_corruption needs at least 2 tokens, got {len(ids)}")
    noise = noise_mask(len(ids), rng, noise_density, mean_noise_span_length)
    return tuple(np.append(_one_sentinel_per_run(ids, m, first_sentinel), eos_id) for m in (noise, ~noise))


def _one_sentinel_per_run(ids, mask, first_sentinel):  # every run of True in mask -> one sentinel, in order
    starts = mask & ~np.concatenate([[False], mask[:-1]])
    sentinels = first_sentinel - (np.cumsum(starts) - 1)
    return np.where(starts, sentinels, ids)[~mask | starts]
