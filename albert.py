"""ALBERT (Lan et al. 2019, "ALBERT: A Lite BERT for Self-supervised Learning of Language
Representations"), from scratch.

ALBERT is BERT's post-LN encoder with two ways to spend fewer parameters:
- Factorized embeddings: tokens are embedded in E dimensions (128) and projected to the hidden
  size H by one (E, H) matrix, so the vocabulary costs V x E instead of V x H. The masked-LM head
  goes the other way (H -> E, then the tied embeddings).
- Cross-layer sharing: `num_hidden_groups` groups of `inner_group_num` layers hold all the
  weights; layer i of `num_hidden_layers` runs the group int(i / (L / G)) (every group is run
  L / G times; with one group, as in every released ALBERT, one layer's weights run L times).
  Sharing saves parameters, not activations: each application keeps its own activations for the
  backward pass, so training memory is that of an unshared model of the same depth.
Its pretraining pairs masked-LM with sentence-order prediction (SOP: two consecutive segments, in
order or swapped) instead of BERT's next-sentence prediction; the SOP head is a linear layer on
the pooled [CLS].

Numerics are HF's (`transformers.AlbertModel` and heads), checkpoints are read and written in
HF's format through an explicit key map (`from_pretrained` takes any HF ALBERT folder or hub
name), and, as bert.py does, the encoder skips padded tokens (real tokens packed into an (N, C)
matrix outside attention) and the MLM head projects only the labeled positions. Imports only
torch and the floor.
"""

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contract import ClassifierOutput, Sums, check_ids, classifier_sums, masked_lm_sums, sequence_counts
from hf_checkpoint import HFCheckpoint, config_fields, config_json
from layers import ACTIVATIONS, PostLNLayer, init_bert_weights, pack_tokens, unpack_tokens

# ----------------------------------------------------------------------------------- config


@dataclass
class AlbertConfig:
    """Field names are HF's. The defaults are albert-base-v2's (HF's own defaults are xxlarge's),
    and `to_hf` writes every field, so that no reader falls back to another size."""

    vocab_size: int = 30000  # the SentencePiece vocabulary of the paper
    embedding_size: int = 128  # E: the factorized embedding size
    hidden_size: int = 768  # H
    num_hidden_layers: int = 12  # L: layer applications
    num_hidden_groups: int = 1  # G: groups of shared weights (L must be a multiple)
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    inner_group_num: int = 1  # layers per group, each group run as a block
    hidden_act: str = "gelu_new"  # tanh GELU (v2); v1 uses the exact "gelu"
    hidden_dropout_prob: float = 0.0
    attention_probs_dropout_prob: float = 0.0
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    classifier_dropout_prob: float = 0.1  # before the SOP head and the sequence classifier
    pad_token_id: int = 0
    bos_token_id: int = 2
    eos_token_id: int = 3
    num_labels: int = 2  # sequence classification: 1 means regression (MSE)
    model_type: str = "albert"

    def __post_init__(self):
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads"
                f" ({self.num_attention_heads})"
            )
        if self.num_hidden_groups < 1 or self.num_hidden_layers % self.num_hidden_groups:
            raise ValueError(
                f"num_hidden_layers ({self.num_hidden_layers}) must be a multiple of num_hidden_groups"
                f" ({self.num_hidden_groups}, >= 1): each group runs L / G times"
            )
        if self.inner_group_num < 1:
            raise ValueError(f"inner_group_num must be >= 1, got {self.inner_group_num}")
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"hidden_act must be one of {sorted(ACTIVATIONS)}, got {self.hidden_act!r}")
        if self.model_type != "albert":
            raise ValueError(f"model_type must be 'albert', got {self.model_type!r}")

    @classmethod
    def from_preset(cls, name, **overrides):
        if name not in PRESETS:
            raise ValueError(
                f"unknown arch {name!r} (a key of albert.PRESETS, train.py's --arch): choose from {sorted(PRESETS)}"
            )
        return cls(**{**PRESETS[name], **overrides})

    @classmethod
    def from_hf(cls, hf: dict, **overrides):
        """From the dict of an HF config.json (AlbertConfig); HF's defaults (xxlarge) where it is silent."""
        if hf.get("model_type") != "albert":
            raise ValueError(f"config.json: model_type must be 'albert', got {hf.get('model_type')!r}")
        return cls(**{**HF_DEFAULTS, **config_fields(cls, hf), **overrides})

    def to_hf(self, architecture):
        """The dict of an HF config.json for `architecture` (e.g. "AlbertForPreTraining")."""
        return config_json(self, architectures=[architecture])


HF_DEFAULTS = dict(  # transformers.AlbertConfig's defaults (albert-xxlarge), for config.json files that omit fields
    hidden_size=4096, num_attention_heads=64, intermediate_size=16384
)
_V1 = dict(hidden_act="gelu", hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)  # the v1 releases
_SIZES = {  # the paper's Table 1 shapes (E = 128 throughout)
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
    "xlarge": dict(hidden_size=2048, num_hidden_layers=24, num_attention_heads=16, intermediate_size=8192),
    "xxlarge": dict(hidden_size=4096, num_hidden_layers=12, num_attention_heads=64, intermediate_size=16384),
}
PRESETS = {  # the released configs (as HF's hub config.json files: v2 and xxlarge-v1 without dropout)
    **{f"albert-{size}-v2": shape for size, shape in _SIZES.items()},
    **{
        f"albert-{size}-v1": {**shape, **(_V1 if size != "xxlarge" else {"hidden_act": "gelu"})}
        for size, shape in _SIZES.items()
    },
    # small shapes for this CPU: BERT-mini's and BERT-tiny's layers, one shared group
    "albert-mini": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024),
    "albert-tiny-test": dict(
        vocab_size=150,
        embedding_size=16,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    ),
}

# -------------------------------------------------------- Hugging Face checkpoints: the key map

HF_KEYS = {  # ours -> HF, inside the encoder ("albert." in front for models with heads)
    "embeddings.word.weight": "embeddings.word_embeddings.weight",
    "embeddings.position.weight": "embeddings.position_embeddings.weight",
    "embeddings.token_type.weight": "embeddings.token_type_embeddings.weight",
    "embeddings.norm.weight": "embeddings.LayerNorm.weight",
    "embeddings.norm.bias": "embeddings.LayerNorm.bias",
    "mapping_in.weight": "encoder.embedding_hidden_mapping_in.weight",
    "mapping_in.bias": "encoder.embedding_hidden_mapping_in.bias",
    "pooler.weight": "pooler.weight",
    "pooler.bias": "pooler.bias",
}
HF_LAYER_KEYS = {  # ours groups.{g}.{j}.* -> HF encoder.albert_layer_groups.{g}.albert_layers.{j}.*
    "qkv.weight": ("attention.query.weight", "attention.key.weight", "attention.value.weight"),
    "qkv.bias": ("attention.query.bias", "attention.key.bias", "attention.value.bias"),
    "attn_out.weight": "attention.dense.weight",
    "attn_out.bias": "attention.dense.bias",
    "attn_norm.weight": "attention.LayerNorm.weight",
    "attn_norm.bias": "attention.LayerNorm.bias",
    "ff_in.weight": "ffn.weight",
    "ff_in.bias": "ffn.bias",
    "ff_out.weight": "ffn_output.weight",
    "ff_out.bias": "ffn_output.bias",
    "ff_norm.weight": "full_layer_layer_norm.weight",
    "ff_norm.bias": "full_layer_layer_norm.bias",
}
HF_HEAD_KEYS = {  # heads, outside the encoder
    "mlm.dense.weight": "predictions.dense.weight",
    "mlm.dense.bias": "predictions.dense.bias",
    "mlm.norm.weight": "predictions.LayerNorm.weight",
    "mlm.norm.bias": "predictions.LayerNorm.bias",
    "mlm.bias": "predictions.bias",
    "sop.weight": "sop_classifier.classifier.weight",
    "sop.bias": "sop_classifier.classifier.bias",
    "classifier.weight": "classifier.weight",
    "classifier.bias": "classifier.bias",
}
# HF key endings that hold nothing of their own: buffers, and the MLM decoder tied to the word embeddings and bias
_HF_REDUNDANT = ("embeddings.position_ids", "embeddings.token_type_ids", "predictions.decoder.weight")
_HF_REDUNDANT += ("predictions.decoder.bias",)


class _HFCheckpoint(HFCheckpoint):
    """from_pretrained / save_pretrained through the key maps above (hf_checkpoint.HFCheckpoint). The
    encoder's tensors must all be in a checkpoint; heads and the pooler may start fresh."""

    config_class, hf_body, hf_ignored = AlbertConfig, "encoder", _HF_REDUNDANT
    hf_optional = ("mlm.", "sop.", "classifier.", "pooler.", "albert.pooler.")
    hf_architecture = "AlbertModel"

    def hf_keys(self):
        """{our state-dict key: HF key, or a tuple of HF keys concatenated along dim 0}, all heads'."""
        bare = isinstance(self, AlbertModel)
        prefix = ours = "" if bare else "albert."
        keys = {ours + k: prefix + v for k, v in HF_KEYS.items()}
        c = self.config
        for g in range(c.num_hidden_groups):
            for j in range(c.inner_group_num):
                layer = f"{prefix}encoder.albert_layer_groups.{g}.albert_layers.{j}."
                for k, v in HF_LAYER_KEYS.items():
                    keys[f"{ours}groups.{g}.{j}.{k}"] = (
                        tuple(layer + x for x in v) if isinstance(v, tuple) else layer + v
                    )
        return {**keys, **HF_HEAD_KEYS}

    def hf_rename(self, sd):
        """A head model's checkpoint into the bare encoder: drop "albert."; the other way, add it."""
        if isinstance(self, AlbertModel):
            return {k.removeprefix("albert."): v for k, v in sd.items()}
        if any(k.startswith("albert.") for k in sd):
            return sd
        heads = {*HF_HEAD_KEYS.values()}
        return {(k if k in heads else "albert." + k): v for k, v in sd.items()}

    def hf_config(self):
        return self.config.to_hf(self.hf_architecture)


# -------------------------------------------------------------------------------- the model


class AlbertEmbeddings(nn.Module):
    """Word + token type + position embeddings in E dimensions, LayerNorm, dropout."""

    def __init__(self, c: AlbertConfig):
        super().__init__()
        E = c.embedding_size
        self.word = nn.Embedding(c.vocab_size, E, padding_idx=c.pad_token_id)
        self.position = nn.Embedding(c.max_position_embeddings, E)
        self.token_type = nn.Embedding(c.type_vocab_size, E)
        self.norm = nn.LayerNorm(E, eps=c.layer_norm_eps)
        self.dropout = nn.Dropout(c.hidden_dropout_prob)

    def forward(self, input_ids, token_type_ids=None, position_ids=None):  # (B, T) -> (B, T, E)
        if position_ids is None:
            position_ids = torch.arange(input_ids.shape[1], device=input_ids.device)[None]
        x = self.word(input_ids)
        x = x + (self.token_type.weight[0] if token_type_ids is None else self.token_type(token_type_ids))
        return self.dropout(self.norm(x + self.position(position_ids)))


class AlbertOutput(NamedTuple):
    last_hidden_state: Tensor  # (B, T, H); zeros at padded positions when padding was skipped
    pooler_output: Tensor | None  # (B, H): tanh(W h_[CLS] + b), None without a pooler
    hidden_states: tuple | None = None  # the projected embeddings and every layer application's output


class AlbertModel(_HFCheckpoint, nn.Module):
    """The encoder: E-sized embeddings, their projection to H, `num_hidden_layers` applications of
    the shared layer groups and (optionally) the pooler.

    forward(input_ids, attention_mask=None, token_type_ids=None, position_ids=None,
    output_hidden_states=False) -> AlbertOutput. `skip_padding = False` runs padded positions
    through every layer like HF does (same real-position outputs, slower)."""

    def __init__(self, config: AlbertConfig, add_pooling_layer=True):
        super().__init__()
        c = self.config = config
        self.embeddings = AlbertEmbeddings(c)
        self.mapping_in = nn.Linear(c.embedding_size, c.hidden_size)
        self.groups = nn.ModuleList(
            nn.ModuleList(PostLNLayer(c, ff_dropout=False) for _ in range(c.inner_group_num))
            for _ in range(c.num_hidden_groups)
        )
        self.pooler = nn.Linear(c.hidden_size, c.hidden_size) if add_pooling_layer else None
        self.skip_padding = True
        _init_weights(self, c)

    def layer_groups(self):
        """The group each of the num_hidden_layers applications runs: int(i / (L / G)), as HF."""
        L, G = self.config.num_hidden_layers, self.config.num_hidden_groups
        return [self.groups[int(i / (L / G))] for i in range(L)]

    def forward(
        self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None, output_hidden_states=False
    ):
        _check_inputs(self.config, input_ids, attention_mask, token_type_ids, position_ids)
        B, T = input_ids.shape
        x = self.embeddings(input_ids, token_type_ids, position_ids)  # (B, T, E)
        mask = packed = None
        if attention_mask is not None:
            real = attention_mask.bool()  # (B, T)
            if not real.all():
                mask = real[:, None, None, :]  # (B, 1, 1, T): which keys each query may see
                if self.skip_padding:
                    packed = (real.flatten().nonzero().squeeze(1), B, T)  # flat positions of the real tokens
                    x = pack_tokens(x, packed[0])  # (N, E)
        x = self.mapping_in(x)  # (..., H)
        hidden = [x] if output_hidden_states else None
        for group in self.layer_groups():
            for layer in group:
                x = layer(x, mask, packed)
            if hidden is not None:
                hidden.append(x)
        if packed is not None:
            x = unpack_tokens(x, *packed)  # (B, T, H)
            hidden = hidden and [unpack_tokens(h, *packed) for h in hidden]
        pooled = torch.tanh(self.pooler(x[:, 0])) if self.pooler is not None else None
        return AlbertOutput(x, pooled, None if hidden is None else tuple(hidden))


def _check_inputs(c, input_ids, attention_mask, token_type_ids, position_ids):
    """Clear errors for bad input, naming the argument (HF fails later with an index error)."""
    check_ids(input_ids, "input_ids", c.vocab_size)
    if input_ids.shape[1] > c.max_position_embeddings:
        raise ValueError(
            f"input_ids has length {input_ids.shape[1]}; the position table allows at most {c.max_position_embeddings}"
        )
    for name, t in (("attention_mask", attention_mask), ("token_type_ids", token_type_ids)):
        if t is not None and tuple(t.shape) != tuple(input_ids.shape):
            raise ValueError(f"{name} must have the shape of input_ids {tuple(input_ids.shape)}, got {tuple(t.shape)}")
    tt = token_type_ids
    if tt is not None and tt.numel() and (tt.min() < 0 or tt.max() >= c.type_vocab_size):
        raise ValueError(f"token_type_ids must be in [0, type_vocab_size={c.type_vocab_size})")
    pos = position_ids
    if pos is not None and (
        pos.shape[-1] != input_ids.shape[1] or (pos.numel() and pos.max() >= c.max_position_embeddings)
    ):
        raise ValueError(
            f"position_ids must be (batch or 1, {input_ids.shape[1]}) with values below "
            f"max_position_embeddings={c.max_position_embeddings}, got shape {tuple(pos.shape)}"
        )


def _init_weights(module, c):
    init_bert_weights(module, c.initializer_range)


# ------------------------------------------------------------------------------------ heads


class AlbertMLMHead(nn.Module):
    """H -> E dense -> activation -> LayerNorm(E) -> the word embeddings (tied, V x E) transposed, plus a bias."""

    def __init__(self, c: AlbertConfig):
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.embedding_size)
        self.act = ACTIVATIONS[c.hidden_act]
        self.norm = nn.LayerNorm(c.embedding_size, eps=c.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(c.vocab_size))

    def forward(self, x, word_embeddings):  # (..., H) -> (..., V)
        return F.linear(self.norm(self.act(self.dense(x))), word_embeddings, self.bias)


def _mlm(albert, head, hidden, labels):
    """MLM logits and targets: with labels, only the labeled positions (label != -100) are projected
    to the vocabulary: (M, V) in row-major order and their labels (M,); else (B, T, V) and None."""
    W = albert.embeddings.word.weight
    if labels is None:
        return head(hidden, W), None
    if tuple(labels.shape) != tuple(hidden.shape[:2]):
        raise ValueError(f"labels must have the shape of input_ids {tuple(hidden.shape[:2])}, got {labels.shape}")
    where = (labels != -100).flatten().nonzero().squeeze(1)  # (M,)
    return head(pack_tokens(hidden, where), W), labels.flatten()[where]


def pretraining_sums(mlm_logits, targets, sop_logits, batch):
    """ALBERT's objective as sums (contract.masked_lm_sums): masked-LM and sentence-order prediction."""
    return masked_lm_sums(mlm_logits, targets, sop_logits, batch, "sop", "sentence_order_label")


class PreTrainingOutput(NamedTuple):
    mlm_logits: Tensor  # (B, T, V), or (M, V) at the M labeled positions when labels are given
    sop_logits: Tensor  # (B, 2): 0 = the segments in order, 1 = swapped
    loss: Tensor | None = None  # mean masked-LM cross-entropy + mean SOP cross-entropy
    mlm_loss: Tensor | None = None
    sop_loss: Tensor | None = None
    sums: Sums | None = None


class MaskedLMOutput(NamedTuple):
    logits: Tensor  # (B, T, V), or (M, V) at the M labeled positions when labels are given
    loss: Tensor | None = None
    sums: Sums | None = None


# ------------------------------------------------------------------------- models with heads


class AlbertForPreTraining(_HFCheckpoint, nn.Module):
    """ALBERT's pretraining model: the encoder, the masked-LM head (tied to the word embeddings) and
    the sentence-order head (dropout, then a linear layer on the pooled [CLS]).

    forward(input_ids, attention_mask=None, token_type_ids=None, position_ids=None, labels=None,
    sentence_order_label=None) -> PreTrainingOutput. `labels` (B, T): the original token at masked
    positions, -100 elsewhere; `sentence_order_label` (B,): 0 in order, 1 swapped."""

    hf_architecture = "AlbertForPreTraining"

    def __init__(self, config: AlbertConfig):
        super().__init__()
        self.config = config
        self.albert = AlbertModel(config)
        self.mlm = AlbertMLMHead(config)
        self.dropout = nn.Dropout(config.classifier_dropout_prob)
        self.sop = nn.Linear(config.hidden_size, 2)
        _init_weights(self.sop, config)
        _init_weights(self.mlm, config)

    def forward(
        self,
        input_ids,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        labels=None,
        sentence_order_label=None,
    ):
        hidden, pooled, _ = self.albert(input_ids, attention_mask, token_type_ids, position_ids)
        mlm_logits, targets = _mlm(self.albert, self.mlm, hidden, labels)
        sop_logits = self.sop(self.dropout(pooled))  # (B, 2)
        if labels is None and sentence_order_label is None:
            return PreTrainingOutput(mlm_logits, sop_logits)
        batch = dict(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
        sums = pretraining_sums(
            mlm_logits, targets, sop_logits, {**batch, "sentence_order_label": sentence_order_label}
        )
        mean = {k: s / sums.counts[c] for k, (s, c) in sums.losses.items()}
        return PreTrainingOutput(mlm_logits, sop_logits, sums.loss(), mean.get("mlm"), mean.get("sop"), sums)

    counts = staticmethod(sequence_counts)


class AlbertForMaskedLM(_HFCheckpoint, nn.Module):
    """The encoder (no pooler) and the masked-LM head. forward(input_ids, attention_mask=None,
    token_type_ids=None, position_ids=None, labels=None) -> MaskedLMOutput."""

    hf_architecture = "AlbertForMaskedLM"

    def __init__(self, config: AlbertConfig):
        super().__init__()
        self.config = config
        self.albert = AlbertModel(config, add_pooling_layer=False)
        self.mlm = AlbertMLMHead(config)
        _init_weights(self.mlm, config)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None, labels=None):
        hidden = self.albert(input_ids, attention_mask, token_type_ids, position_ids).last_hidden_state
        logits, targets = _mlm(self.albert, self.mlm, hidden, labels)
        if labels is None:
            return MaskedLMOutput(logits)
        sums = pretraining_sums(
            logits, targets, None, dict(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
        )
        return MaskedLMOutput(logits, sums.loss(), sums)

    counts = staticmethod(sequence_counts)


class AlbertForSequenceClassification(_HFCheckpoint, nn.Module):
    """A classifier (num_labels > 1, cross-entropy) or regressor (num_labels == 1, MSE) on the pooled
    [CLS] after dropout. forward(input_ids, attention_mask=None, token_type_ids=None,
    position_ids=None, labels=None) -> ClassifierOutput."""

    hf_architecture = "AlbertForSequenceClassification"

    def __init__(self, config: AlbertConfig):
        super().__init__()
        self.config = config
        self.albert = AlbertModel(config)
        self.dropout = nn.Dropout(config.classifier_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        _init_weights(self.classifier, config)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None, labels=None):
        pooled = self.albert(input_ids, attention_mask, token_type_ids, position_ids).pooler_output
        logits = self.classifier(self.dropout(pooled))  # (B, num_labels)
        if labels is None:
            return ClassifierOutput(logits)
        if labels.shape[0] != logits.shape[0]:
            raise ValueError(f"labels must have {logits.shape[0]} rows (the batch), got shape {tuple(labels.shape)}")
        sums = classifier_sums(logits, labels, dict(input_ids=input_ids, attention_mask=attention_mask))
        return ClassifierOutput(logits, sums.loss(), sums)

    counts = staticmethod(sequence_counts)
