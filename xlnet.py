"""XLNet (Yang et al. 2019, "XLNet: Generalized Autoregressive Pretraining for Language
Understanding"), from scratch, with Hugging Face's numerics.

Two streams run through the same layers. The content stream h is a token's representation that may
see itself; the query stream g starts from one learned vector (`mask_emb`) at the positions to
predict and may see the content of the tokens before it in the factorization order, never its own
token. Who sees whom comes from `perm_mask` (B, T, T), 1 where i may not see j, in HF's
convention; `target_mapping` (B, P, T) picks the P predicted positions (one-hot rows). Attention
scores are Transformer-XL's relative ones, (ac + bd + ef) / sqrt(d_head): content against content
with r_w_bias, content against sinusoidal relative positions (klen down to -qlen + 1, clamped at
clamp_len) with r_r_bias and the relative shift, and with r_s_bias whether two tokens share a
segment (the memory counts as segment 0). Memory: each layer's input of the previous segment
(`mems`, at most mem_len, the first reuse_len tokens) is attended to as extra keys.

Batch first inside; the weights keep HF's (d_model, n_head, d_head) layout, so the key map is a
list of names. This file imports torch and the floor only.
"""

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contract import ClassifierOutput, Sums, check_ids, classifier_sums, sequence_counts
from hf_checkpoint import HFCheckpoint, config_fields, config_json
from layers import ACTIVATIONS, linear

# ----------------------------------------------------------------------------------- config


@dataclass
class XLNetConfig:
    """Field names are HF's (XLNetConfig), so that a config.json maps onto this class one to one."""

    vocab_size: int = 32000
    d_model: int = 768
    n_layer: int = 12
    n_head: int = 12
    d_inner: int = 3072
    ff_activation: str = "gelu"
    attn_type: str = "bi"  # bi: bidirectional with perm_mask; uni: causal (Transformer-XL)
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    dropout: float = 0.1
    mem_len: int | None = None  # tokens of memory kept per layer (None or 0: all of the last segment)
    reuse_len: int | None = None  # the first reuse_len tokens of a segment go to the memory
    use_mems_eval: bool = True
    use_mems_train: bool = False
    bi_data: bool = False  # half the batch reads the relative positions backwards (pretraining)
    clamp_len: int = -1  # relative distances beyond it are clamped (-1: never)
    same_length: bool = False
    summary_type: str = "last"  # the sequence summary of the classifier: the last token
    summary_last_dropout: float = 0.1
    pad_token_id: int = 5
    bos_token_id: int = 1
    eos_token_id: int = 2
    num_labels: int = 2

    def __post_init__(self):
        if self.d_model % self.n_head:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_head ({self.n_head})")
        if self.attn_type not in ("bi", "uni"):
            raise ValueError(f"attn_type must be 'bi' or 'uni', got {self.attn_type!r}")
        if self.ff_activation not in ACTIVATIONS:
            raise ValueError(f"ff_activation must be one of {sorted(ACTIVATIONS)}, got {self.ff_activation!r}")
        if self.summary_type != "last":
            raise ValueError(f"summary_type: only 'last' (XLNet's classifiers) is built, got {self.summary_type!r}")

    @property
    def d_head(self):
        return self.d_model // self.n_head

    @property
    def model_type(self):  # config.json's, as the other families' configs have it
        return "xlnet"

    @classmethod
    def from_preset(cls, name, **overrides):
        if name not in PRESETS:
            raise ValueError(f"unknown arch {name!r}: choose from {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    @classmethod
    def from_hf(cls, hf: dict, **overrides):
        if hf.get("model_type") != "xlnet":
            raise ValueError(f"config.json: model_type must be 'xlnet', got {hf.get('model_type')!r}")
        return cls(**{**config_fields(cls, hf), **overrides})

    def to_hf(self, architecture):
        extra = dict(model_type="xlnet", architectures=[architecture], d_head=self.d_head)
        return config_json(self, **extra, summary_use_proj=True, summary_activation="tanh")


PRESETS = {
    "xlnet-base-cased": dict(use_mems_eval=True, mem_len=None),
    "xlnet-large-cased": dict(d_model=1024, n_layer=24, n_head=16, d_inner=4096),
    "xlnet-mini": dict(d_model=256, n_layer=4, n_head=4, d_inner=1024),  # bert-mini's shape, for this CPU
    "xlnet-tiny-test": dict(vocab_size=99, d_model=32, n_layer=2, n_head=4, d_inner=64),
}

# -------------------------------------------------------- Hugging Face checkpoints: the key map

ATTN = ("q", "k", "v", "o", "r", "r_r_bias", "r_s_bias", "r_w_bias", "seg_embed")
LAYER_KEYS = [f"rel_attn.{n}" for n in ATTN] + ["rel_attn.layer_norm.weight", "rel_attn.layer_norm.bias"]
LAYER_KEYS += [f"ff.{n}.{p}" for n in ("layer_norm", "layer_1", "layer_2") for p in ("weight", "bias")]
HEAD_KEYS = {  # ours -> HF, outside the transformer
    "lm_bias": "lm_loss.bias",
    "summary.weight": "sequence_summary.summary.weight",
    "summary.bias": "sequence_summary.summary.bias",
    "classifier.weight": "logits_proj.weight",
    "classifier.bias": "logits_proj.bias",
}


class _HFCheckpoint(HFCheckpoint):
    """from_pretrained / save_pretrained through the names above: our transformer's tensors are HF's
    (under "transformer." in the models with heads), the heads are HEAD_KEYS."""

    config_class, hf_body, hf_ignored = XLNetConfig, "transformer", ("lm_loss.weight",)  # tied to the embedding
    hf_optional = ("lm_bias", "summary.", "classifier.")

    def hf_keys(self):
        keys = ["word_embedding.weight", "mask_emb"]
        keys += [f"layer.{i}.{k}" for i in range(self.config.n_layer) for k in LAYER_KEYS]
        bare = isinstance(self, XLNetModel)
        ours = "" if bare else "transformer."
        return {ours + k: ("" if bare else "transformer.") + k for k in keys} | HEAD_KEYS

    def hf_rename(self, sd):
        if isinstance(self, XLNetModel):
            return {k.removeprefix("transformer."): v for k, v in sd.items()}
        return sd if any(k.startswith("transformer.") for k in sd) else {f"transformer.{k}": v for k, v in sd.items()}

    def hf_config(self):
        return self.config.to_hf(self.hf_architecture)


# -------------------------------------------------------------------------------- the model


class RelativeAttention(nn.Module):
    """Two-stream relative multi-head attention with HF's parameters: q, k, v, o, r (d_model, n_head,
    d_head), the biases r_w (content), r_r (position), r_s (segment) and seg_embed (2, n_head, d_head)."""

    def __init__(self, c: XLNetConfig):
        super().__init__()
        shape = (c.d_model, c.n_head, c.d_head)
        for name in ("q", "k", "v", "o", "r"):
            setattr(self, name, nn.Parameter(torch.empty(shape)))
        for name in ("r_r_bias", "r_s_bias", "r_w_bias"):
            setattr(self, name, nn.Parameter(torch.empty(c.n_head, c.d_head)))
        self.seg_embed = nn.Parameter(torch.empty(2, c.n_head, c.d_head))
        self.layer_norm = nn.LayerNorm(c.d_model, eps=c.layer_norm_eps)
        self.dropout = nn.Dropout(c.dropout)
        self.scale = c.d_head**-0.5

    def core(self, q, k, v, kr, diff, mask, at=None):
        """q (B, I, H, D) against keys k, v (B, J, H, D) and relative positions kr (B, R, H, D); diff (B, I, J)
        bool: another segment; mask (B, I, J) float, 1 = may not see (HF subtracts 1e30); at: (positions
        (B, I), T) when the queries are not the T positions in order (the query stream's predictions).
        -> (B, I, H, D)."""
        ac = torch.einsum("bihd,bjhd->bhij", q + self.r_w_bias, k)
        bd = torch.einsum("bihd,brhd->bhir", q + self.r_r_bias, kr)  # (B, H, I, R): distances K .. -T + 1
        if at is None:
            bd = rel_shift(bd, ac.shape[3])
        else:  # query at position i, key j: distance i + M - j, column T - i + j (rel_shift's, row by row)
            (at, T), K = at, ac.shape[3]
            col = (T - at)[:, None, :, None] + torch.arange(K, device=q.device)  # (B, 1, I, K)
            bd = bd.gather(3, col.clamp(max=bd.shape[3] - 1).expand(-1, bd.shape[1], -1, -1))  # "uni": past the end
        score = ac + bd
        if diff is not None:
            ef = torch.einsum("bihd,shd->bhis", q + self.r_s_bias, self.seg_embed)  # (B, H, I, 2): same, other
            score = score + torch.where(diff[:, None], ef[..., 1:], ef[..., :1])
        score = score * self.scale
        if mask is not None:
            score = score - 1e30 * mask[:, None]
        prob = self.dropout(score.softmax(-1))
        return torch.einsum("bhij,bjhd->bihd", prob, v)

    def post(self, x, vec):  # (B, I, H, D) -> the output projection, dropout, residual, LayerNorm
        return self.layer_norm(x + self.dropout(torch.einsum("bihd,chd->bic", vec, self.o)))

    def forward(self, h, g, mask_h, mask_g, r, diff, mem=None, target_mapping=None):
        cat = h if mem is None else torch.cat([mem, h], 1)  # (B, J, C)
        k, v = (torch.einsum("bjc,chd->bjhd", cat, w) for w in (self.k, self.v))
        kr = torch.einsum("brc,chd->brhd", r, self.r)
        h_out = self.post(h, self.core(torch.einsum("bic,chd->bihd", h, self.q), k, v, kr, diff, mask_h))
        if g is None:
            return h_out, None
        q = torch.einsum("bmc,chd->bmhd", g, self.q)  # (B, P, H, D)
        if target_mapping is None:
            return h_out, self.post(g, self.core(q, k, v, kr, diff, mask_g))
        # each prediction attends from its position (HF maps the queries onto all T positions and back:
        # the same numbers, for the P queries only); a padding row (all zeros) gets HF's 0
        at = target_mapping.argmax(-1)  # (B, P)
        rows = lambda x: None if x is None else x.gather(1, at[..., None].expand(-1, -1, x.shape[2]))  # noqa: E731
        vec = self.core(q, k, v, kr, rows(diff), rows(mask_g), (at, h.shape[1]))
        return h_out, self.post(g, vec * target_mapping.sum(-1).to(vec.dtype)[..., None, None])


def rel_shift(x, klen):
    """HF's relative shift: x (B, H, I, R) scores against positions klen .. -qlen + 1 -> (B, H, I, klen),
    column j holding query i's score at distance i + mlen - j."""
    B, H, I, R = x.shape
    return x.reshape(B, H, R, I)[:, :, 1:].reshape(B, H, I, R - 1)[..., :klen]


class FeedForward(nn.Module):
    def __init__(self, c: XLNetConfig):
        super().__init__()
        self.layer_norm = nn.LayerNorm(c.d_model, eps=c.layer_norm_eps)
        self.layer_1, self.layer_2 = nn.Linear(c.d_model, c.d_inner), nn.Linear(c.d_inner, c.d_model)
        self.act, self.dropout = ACTIVATIONS[c.ff_activation], nn.Dropout(c.dropout)

    def forward(self, x):
        return self.layer_norm(x + self.dropout(self.layer_2(self.dropout(self.act(self.layer_1(x))))))


class Layer(nn.Module):
    def __init__(self, c: XLNetConfig):
        super().__init__()
        self.rel_attn, self.ff = RelativeAttention(c), FeedForward(c)

    def forward(self, h, g, mask_h, mask_g, r, diff, mem=None, target_mapping=None):
        h, g = self.rel_attn(h, g, mask_h, mask_g, r, diff, mem, target_mapping)
        return self.ff(h), None if g is None else self.ff(g)


class XLNetOutput(NamedTuple):
    last_hidden_state: Tensor  # (B, P, C) the query stream at the predicted positions, else (B, T, C) content
    mems: tuple | None = None  # per layer, (B, M, C): the memory for the next segment


class XLNetModel(_HFCheckpoint, nn.Module):
    """The transformer. forward(input_ids, attention_mask=None, mems=None, perm_mask=None,
    target_mapping=None, token_type_ids=None, use_mems=None) -> XLNetOutput, HF's semantics."""

    hf_architecture = "XLNetModel"

    def __init__(self, config: XLNetConfig):
        super().__init__()
        self.config = config
        self.word_embedding = nn.Embedding(config.vocab_size, config.d_model)
        self.mask_emb = nn.Parameter(torch.empty(1, 1, config.d_model))
        self.layer = nn.ModuleList(Layer(config) for _ in range(config.n_layer))
        self.dropout = nn.Dropout(config.dropout)
        init_weights(self, config.initializer_range)

    def forward(
        self,
        input_ids,
        attention_mask=None,
        mems=None,
        perm_mask=None,
        target_mapping=None,
        token_type_ids=None,
        use_mems=None,
    ):
        c = self.config
        check_inputs(c, input_ids, attention_mask, mems, perm_mask, target_mapping, token_type_ids)
        B, T = input_ids.shape
        M = 0 if mems is None else mems[0].shape[1]
        K, device, dtype = M + T, input_ids.device, self.word_embedding.weight.dtype
        use_mems = (c.use_mems_train if self.training else c.use_mems_eval) if use_mems is None else use_mems
        mask = None  # (B, T, K) float, 1 = may not see: the causal mask, padding, the permutation
        if c.attn_type == "uni":
            mask = torch.ones(T, K, device=device).triu_(M + 1)[None].expand(B, T, K)
        data = None
        if attention_mask is not None:
            data = (1.0 - attention_mask.to(dtype))[:, None, :].expand(B, T, T)
        if perm_mask is not None:
            data = perm_mask.to(dtype) if data is None else data + perm_mask.to(dtype)
        if data is not None:
            data = torch.cat([data.new_zeros(B, T, M), data], 2)  # the memory is always seen
            mask = data if mask is None else mask + data
        mask_h = None
        if mask is not None:
            mask = (mask > 0).to(dtype)
            itself = torch.cat([torch.zeros(T, M, device=device), torch.eye(T, device=device)], 1)
            mask_h = ((mask - itself) > 0).to(dtype)  # the content stream may see itself
        h = self.dropout(self.word_embedding(input_ids))  # (B, T, C)
        g = None
        if target_mapping is not None:
            g = F.dropout(self.mask_emb.expand(B, target_mapping.shape[1], -1), c.dropout, self.training)  # (B, P, C)
        diff = None
        if token_type_ids is not None:  # the memory counts as segment 0
            keys = torch.cat([token_type_ids.new_zeros(B, M), token_type_ids], 1)
            diff = token_type_ids[:, :, None] != keys[:, None, :]  # (B, T, K)
        r = self.relative_positions(T, K, B, device).to(dtype)  # (1 or B, R, C)
        if self.training and c.dropout > 0:  # a mask per sequence, as HF's (R, B, C) gets: projected per row
            r = self.dropout(r.expand(B, -1, -1))
        new_mems = []
        for i, layer in enumerate(self.layer):
            if use_mems:
                new_mems.append(self.cache(h, None if mems is None else mems[i]))
            h, g = layer(h, g, mask_h, mask, r, diff, None if mems is None else mems[i], target_mapping)
        out = self.dropout(h if g is None else g)
        return XLNetOutput(out, tuple(new_mems) if use_mems else None)

    def cache(self, h, mem):
        """The memory for the next segment: this layer's input (its first reuse_len tokens) after the old
        memory, the last mem_len tokens kept, no gradient."""
        c = self.config
        h = h[:, : c.reuse_len] if c.reuse_len else h
        new = h if mem is None else torch.cat([mem, h], 1)
        return (new[:, -c.mem_len :] if c.mem_len else new).detach()

    def relative_positions(self, T, K, B, device):
        """Sinusoids of the distances K, K - 1, .., -T + 1 ("bi"; "uni": down to 1), clamped at clamp_len;
        with bi_data, the second half of the batch gets the distances negated. -> (B, R, C), or (1, R, C)
        without bi_data: the same for every sequence, projected once (unless dropout makes them differ)."""
        c = self.config
        inv_freq = 1 / torch.pow(10000, torch.arange(0, c.d_model, 2.0, device=device) / c.d_model)
        end = -T if c.attn_type == "bi" else -1
        pos = torch.arange(K, end, -1.0, device=device)
        if c.clamp_len > 0:
            pos = pos.clamp(-c.clamp_len, c.clamp_len)

        def table(p):  # (R,) -> (R, C): sin then cos
            x = p[:, None] * inv_freq
            return torch.cat([x.sin(), x.cos()], -1)

        if not c.bi_data:
            return table(pos)[None]
        if B % 2:
            raise ValueError(f"bi_data needs an even batch size, got {B}")
        return torch.cat([table(pos)[None].expand(B // 2, -1, -1), table(-pos)[None].expand(B // 2, -1, -1)])


def check_inputs(c, input_ids, attention_mask, mems, perm_mask, target_mapping, token_type_ids):
    """Clear errors for bad input, naming the argument."""
    check_ids(input_ids, "input_ids", c.vocab_size)
    B, T = input_ids.shape
    for name, t, shape in (
        ("attention_mask", attention_mask, (B, T)),
        ("token_type_ids", token_type_ids, (B, T)),
        ("perm_mask", perm_mask, (B, T, T)),
    ):
        if t is not None and tuple(t.shape) != shape:
            raise ValueError(f"{name} must have the shape {shape}, got {tuple(t.shape)}")
    if target_mapping is not None:
        if target_mapping.dim() != 3 or target_mapping.shape[0] != B or target_mapping.shape[2] != T:
            raise ValueError(f"target_mapping must be (B, P, T) = ({B}, P, {T}), got {tuple(target_mapping.shape)}")
        rows = target_mapping.float()
        if not ((rows == 0) | (rows == 1)).all() or not (rows.sum(-1) <= 1).all() or not (rows.sum(1) <= 1).all():
            raise ValueError(
                "target_mapping: every row must be one-hot (one predicted position), or zero (padding), and no"
                " position predicted twice"
            )
    if mems is not None and (len(mems) != c.n_layer or any(m.shape[0] != B or m.shape[2] != c.d_model for m in mems)):
        shapes = [tuple(m.shape) for m in mems[:2]]
        raise ValueError(f"mems must be {c.n_layer} tensors of (B={B}, M, {c.d_model}), got {shapes}...")


def init_weights(module, std):
    """HF's initialization: N(0, std) for every matrix, embedding, attention parameter and mask_emb; zero
    biases of linear layers; unit LayerNorms."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=std)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, RelativeAttention):
            for p in (m.q, m.k, m.v, m.o, m.r, m.r_r_bias, m.r_s_bias, m.r_w_bias, m.seg_embed):
                nn.init.normal_(p, std=std)
        elif isinstance(m, XLNetModel):
            nn.init.normal_(m.mask_emb, std=std)


# ------------------------------------------------------------------------------------ heads


class LMOutput(NamedTuple):
    logits: Tensor  # (B, P, V) with target_mapping, else (B, T, V)
    mems: tuple | None = None
    loss: Tensor | None = None  # mean cross-entropy over the labels != -100
    sums: Sums | None = None


def lm_sums(logits, labels, batch):
    """The permutation LM objective as sums: cross-entropy of logits (B, P, V) against labels (B, P), -100
    ignored, per predicted token ("targets")."""
    if tuple(labels.shape) != tuple(logits.shape[:2]):
        raise ValueError(f"labels must be (B, P or T) = {tuple(logits.shape[:2])}, got {tuple(labels.shape)}")
    loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100, reduction="sum")
    correct = ((logits.argmax(-1) == labels) & (labels != -100)).sum()
    return Sums({"lm": (loss, "targets")}, {"acc": (correct, "targets")}, lm_counts(batch))


def lm_counts(batch):
    """What the loop divides by: the predicted tokens (labels != -100), sequences, real tokens."""
    return {**sequence_counts(batch), "targets": (batch["labels"] != -100).sum()}


class XLNetLMHeadModel(_HFCheckpoint, nn.Module):
    """The transformer and the LM head (the word embeddings, tied, plus a bias). forward(input_ids,
    attention_mask=None, perm_mask=None, target_mapping=None, token_type_ids=None, mems=None,
    labels=None, use_mems=None, mem_ids=None) -> LMOutput; labels (B, P) with target_mapping, else
    (B, T); mem_ids (B, M): tokens before the input, encoded (no gradient) as its memory."""

    hf_architecture = "XLNetLMHeadModel"

    def __init__(self, config: XLNetConfig):
        super().__init__()
        self.config = config
        self.transformer = XLNetModel(config)
        self.lm_bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(
        self,
        input_ids,
        attention_mask=None,
        perm_mask=None,
        target_mapping=None,
        token_type_ids=None,
        mems=None,
        labels=None,
        use_mems=None,
        mem_ids=None,
    ):
        if mem_ids is not None:  # the memory: the preceding tokens' layer inputs, encoded without gradient
            if mems is not None:
                raise ValueError("give mems or mem_ids (the tokens to encode as memory), not both")
            with torch.no_grad():
                mems = self.transformer(mem_ids, use_mems=True).mems
        out = self.transformer(input_ids, attention_mask, mems, perm_mask, target_mapping, token_type_ids, use_mems)
        logits = linear(out.last_hidden_state, self.transformer.word_embedding.weight, self.lm_bias)
        if labels is None:
            return LMOutput(logits, out.mems)
        sums = lm_sums(logits, labels, dict(input_ids=input_ids, attention_mask=attention_mask, labels=labels))
        return LMOutput(logits, out.mems, sums.loss(), sums)

    counts = staticmethod(lm_counts)

    @torch.no_grad()
    def generate(self, input_ids, max_new_tokens=20, use_mems=True):
        """Greedy continuation -> (B, T + n), as HF's generate(do_sample=False) does it: each step appends a
        dummy token that nobody sees and predicts it through the query stream. With memory (HF's schedule)
        the prompt runs once and each step runs the last two tokens and the dummy against the memory (kept
        without its last two positions); without, the whole sequence each step. A row that produced
        eos_token_id continues with pad_token_id; all rows done: the loop stops."""
        c = self.config
        check_ids(input_ids, "input_ids", c.vocab_size)
        B, device = input_ids.shape[0], input_ids.device
        ids, mems = input_ids, None
        done = torch.zeros(B, dtype=torch.bool, device=device)
        for _ in range(max_new_tokens):
            x = ids if mems is None else ids[:, -2:]
            x = torch.cat([x, torch.zeros(B, 1, dtype=ids.dtype, device=device)], 1)  # (B, L): the dummy last
            L = x.shape[1]
            perm = torch.zeros(B, L, L, device=device)
            perm[:, :, -1] = 1  # nobody sees the dummy
            mapping = torch.zeros(B, 1, L, device=device)
            mapping[:, 0, -1] = 1
            past = None if mems is None else tuple(m[:, :-2] for m in mems)
            out = self(x, perm_mask=perm, target_mapping=mapping, mems=past, use_mems=use_mems)
            token = out.logits[:, 0].argmax(-1).masked_fill(done, c.pad_token_id)
            mems = out.mems if use_mems else None
            ids = torch.cat([ids, token[:, None]], 1)
            done |= token == c.eos_token_id
            if done.all():
                break
        return ids


class XLNetForSequenceClassification(_HFCheckpoint, nn.Module):
    """HF's sequence summary on the last token (XLNet pads on the left): dense -> tanh -> dropout, then
    the classifier (`logits_proj`). forward(input_ids, attention_mask=None, token_type_ids=None,
    labels=None) -> ClassifierOutput; labels (B,) class ids, or floats for one output (MSE)."""

    hf_architecture = "XLNetForSequenceClassification"

    def __init__(self, config: XLNetConfig):
        super().__init__()
        self.config = config
        self.transformer = XLNetModel(config)
        self.summary = nn.Linear(config.d_model, config.d_model)
        self.summary_dropout = nn.Dropout(config.summary_last_dropout)
        self.classifier = nn.Linear(config.d_model, config.num_labels)
        init_weights(nn.ModuleList([self.summary, self.classifier]), config.initializer_range)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None):
        h = self.transformer(input_ids, attention_mask, token_type_ids=token_type_ids, use_mems=False)[0]
        logits = self.classifier(self.summary_dropout(torch.tanh(self.summary(h[:, -1]))))  # (B, K)
        if labels is None:
            return ClassifierOutput(logits)
        sums = classifier_sums(logits, labels, dict(input_ids=input_ids, attention_mask=attention_mask))
        return ClassifierOutput(logits, sums.loss(), sums)

    counts = staticmethod(sequence_counts)


# ---------------------------------------------------------------- permutation language modeling


def span_targets(n, num_predict, rng, alpha=6, beta=1, max_gram=5, word_starts=None):
    """zihangdai/xlnet's `_sample_mask`: which of n tokens to predict (bool (n,)): spans of 1..max_gram
    whole words (p(k) proportional to 1/k), each in a context of k * alpha / beta tokens (so about beta
    in alpha tokens are targets), then single tokens at random up to num_predict. word_starts (bool
    (n,)): where words begin (every token when None)."""
    starts = np.ones(n, dtype=bool) if word_starts is None else np.asarray(word_starts, dtype=bool)
    grams = np.arange(1, max_gram + 1)
    p = 1.0 / grams
    p /= p.sum()
    mask, count, cur = np.zeros(n, dtype=bool), 0, 0
    while cur < n and count < num_predict:
        k = int(rng.choice(grams, p=p))
        k = min(k, num_predict - count)
        ctx = k * alpha // beta
        left = int(rng.integers(ctx - k + 1))
        beg = cur + left
        while beg < n and not starts[beg]:  # a span starts a word
            beg += 1
        if beg >= n:
            break
        end, words = beg + 1, 1
        while end < n:  # k whole words
            if starts[end]:
                words += 1
                if words > k:
                    break
            end += 1
        if end >= n:
            break
        mask[beg:end] = True
        count += end - beg
        cur = end + ctx - left - k
    while count < num_predict:
        i = int(rng.integers(n))
        if not mask[i]:
            mask[i], count = True, count + 1
    return mask


def local_perm(targets, functional, perm_size, rng):
    """zihangdai/xlnet's `_local_perm` for one segment of n tokens: a factorization order that permutes
    the offsets within each chunk of perm_size tokens alike (chunks stay in order), the non-target
    tokens first (rank -1: everyone sees them, they see no target), then the targets in the sampled
    order. functional: [SEP]/[CLS] tokens (never targets, seen only by later tokens). -> perm_mask
    (n, n) float, 1 = i may not see j: a target sees the non-targets and the targets before it in the
    order; any other token sees what comes at or before it."""
    n = len(targets)
    if n % perm_size:
        raise ValueError(f"perm_size ({perm_size}) must divide the segment length ({n})")
    order = np.arange(n).reshape(-1, perm_size).T[rng.permutation(perm_size)].T.reshape(-1)  # the rank of each position
    targets, functional = np.asarray(targets, dtype=bool), np.asarray(functional, dtype=bool)
    plain = ~targets & ~functional
    rank = np.where(plain, -1, order)
    own = np.where(targets, rank, rank + 1)  # a target may not see itself
    return torch.from_numpy((own[:, None] <= rank[None, :]) & ~plain[None, :]).float()


def plm_example(ids, reuse_len, num_predict, perm_size, rng, functional_ids=(), word_starts=None):
    """One permutation-LM sample as zihangdai/xlnet's pipeline builds it: ids (T,) = the reused part (its
    first reuse_len tokens, the next segment's memory) and the rest; targets sampled per part
    (span_targets, num_predict in all), a factorization order per part (local_perm) where the reused
    part never sees the rest and the rest sees all of the reused part. -> dict(input_ids (T,),
    perm_mask (T, T), target_mapping (num_predict, T), labels (num_predict,): the targets' tokens, -100
    in padded rows)."""
    ids = torch.as_tensor(ids)
    T = len(ids)
    functional = np.isin(ids.numpy(), list(functional_ids))
    starts = None if word_starts is None else np.asarray(word_starts, dtype=bool)
    parts = [(0, reuse_len), (reuse_len, T)]
    targets, perms = np.zeros(T, dtype=bool), []
    for (a, b), share in zip(
        parts, (num_predict * reuse_len // T, num_predict - num_predict * reuse_len // T), strict=True
    ):
        t = span_targets(b - a, share, rng, word_starts=None if starts is None else starts[a:b]) & ~functional[a:b]
        targets[a:b] = t
        perms.append(local_perm(t, functional[a:b], perm_size, rng))
    perm = torch.ones(T, T)
    perm[:reuse_len, :reuse_len] = perms[0]
    perm[reuse_len:, :reuse_len] = 0  # the rest sees the reused part
    perm[reuse_len:, reuse_len:] = perms[1]
    where = np.flatnonzero(targets)[:num_predict]
    mapping, labels = torch.zeros(num_predict, T), torch.full((num_predict,), -100, dtype=torch.long)
    mapping[torch.arange(len(where)), torch.from_numpy(where)] = 1
    labels[: len(where)] = ids[where]
    return dict(input_ids=ids, perm_mask=perm, target_mapping=mapping, labels=labels)
