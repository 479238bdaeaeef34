"""BERT (Devlin et al. 2018), RoBERTa (Liu et al. 2019) and TinyBERT (Jiao et al. 2019), from scratch.

One post-LN encoder serves the three: RoBERTa is BERT with other embeddings conventions (its
position ids start after the padding id, one token type, no next-sentence head) and TinyBERT is a
small BERT shape. Checkpoints are read from and written to Hugging Face's format through an
explicit key map (`HF_KEYS`), so `from_pretrained` takes any HF BERT/RoBERTa folder or hub name
and `transformers` loads what `save_pretrained` writes.

Two things make it faster than HF's implementation with the same numbers:
- With padding, the encoder runs on the real tokens only: embeddings are gathered into a packed
  (N, C) matrix, every linear layer and norm sees N rows instead of B*T, and the tokens are
  scattered back to (B, T) only around the attention kernel (SDPA). Padded positions of the
  output hold zeros (HF's hold values nobody should read); real positions agree to fp32 rounding.
- Given labels, the masked-LM head projects to the vocabulary only the positions that have a
  label: with 15% masking that is ~7x less work in the largest matmul of pretraining.
The query, key and value projections are one (C, 3C) matmul.

Inputs follow HF: `input_ids` (B, T), `attention_mask` (B, T) with 1 at real tokens and 0 at
padding, `token_type_ids` (B, T). This file imports only torch and the floor (contract, hf_checkpoint, layers);
`transformers` is never needed to run it.
"""

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contract import (
    ClassifierOutput,
    Sums,
    check_ids,
    classifier_loss_sum,
    classifier_sums,
    masked_lm_sums,
    sequence_counts,
)
from hf_checkpoint import HFCheckpoint, config_fields, config_json
from layers import ACTIVATIONS, PostLNLayer, init_bert_weights, pack_tokens, unpack_tokens

# ----------------------------------------------------------------------------------- config


@dataclass
class BertConfig:
    """Field names are HF's, so that a config.json maps onto this class one to one."""

    vocab_size: int = 30522  # the uncased WordPiece vocabulary of the paper
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072  # 4x hidden, as in the Transformer
    hidden_act: str = "gelu"  # exact (erf) GELU; "gelu_new" is the tanh approximation
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2  # segments A and B
    initializer_range: float = 0.02  # N(0, 0.02) for every weight matrix and embedding
    layer_norm_eps: float = 1e-12  # TF BERT's epsilon; RoBERTa uses 1e-5
    pad_token_id: int = 0
    model_type: str = "bert"  # "roberta": positions start at pad_token_id + 1, classifier head on <s>
    num_labels: int = 2  # sequence classification: 1 means regression (MSE)
    classifier_dropout: float | None = None  # None: hidden_dropout_prob

    def __post_init__(self):
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                f"({self.num_attention_heads})"
            )
        if self.model_type not in ("bert", "roberta"):
            raise ValueError(f"model_type must be 'bert' or 'roberta', got {self.model_type!r}")
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"hidden_act must be one of {sorted(ACTIVATIONS)}, got {self.hidden_act!r}")

    @property
    def max_length(self):
        """The longest input the position table allows (RoBERTa spends pad_token_id + 1 rows)."""
        offset = self.pad_token_id + 1 if self.model_type == "roberta" else 0
        return self.max_position_embeddings - offset

    @classmethod
    def from_preset(cls, name, **overrides):
        if name not in PRESETS:
            raise ValueError(
                f"unknown arch {name!r} (a key of bert.PRESETS, train.py's --arch): choose from {sorted(PRESETS)}"
            )
        return cls(**{**PRESETS[name], **overrides})

    @classmethod
    def from_hf(cls, hf: dict, **overrides):
        """From the dict of an HF config.json (BertConfig or RobertaConfig)."""
        if hf.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"only absolute position embeddings are supported, got {hf['position_embedding_type']!r}")
        if hf.get("model_type") not in ("bert", "roberta"):
            raise ValueError(f"config.json: model_type must be 'bert' or 'roberta', got {hf.get('model_type')!r}")
        return cls(**{**config_fields(cls, hf), **overrides})

    def to_hf(self, architecture):
        """The dict of an HF config.json for `architecture` (e.g. "BertForPreTraining")."""
        hf = config_json(self, architectures=[architecture], position_embedding_type="absolute")
        if self.model_type == "roberta":
            hf.update(bos_token_id=0, eos_token_id=2)
        return hf


PRESETS = {
    "bert-base": {},
    "bert-large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
    # the small BERTs of Turc et al. 2019 ("Well-Read Students Learn Better"), heads = hidden / 64
    "bert-tiny": dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=512),
    "bert-mini": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024),
    "bert-small": dict(hidden_size=512, num_hidden_layers=4, num_attention_heads=8, intermediate_size=2048),
    "bert-medium": dict(hidden_size=512, num_hidden_layers=8, num_attention_heads=8, intermediate_size=2048),
    "tinybert-4l-312": dict(hidden_size=312, num_hidden_layers=4, num_attention_heads=12, intermediate_size=1200),
    "roberta-base": dict(
        vocab_size=50265,
        max_position_embeddings=514,  # 512 positions after the padding id's
        type_vocab_size=1,
        layer_norm_eps=1e-5,
        pad_token_id=1,
        model_type="roberta",
    ),
}

# -------------------------------------------------------- Hugging Face checkpoints: the key map

# ours -> HF, inside the encoder ("bert." or "roberta." in front for models with heads). A tuple
# means that our tensor is the concatenation of HF's along dim 0 (the fused q, k, v projection).
HF_KEYS = {
    "embeddings.word.weight": "embeddings.word_embeddings.weight",
    "embeddings.position.weight": "embeddings.position_embeddings.weight",
    "embeddings.token_type.weight": "embeddings.token_type_embeddings.weight",
    "embeddings.norm.weight": "embeddings.LayerNorm.weight",
    "embeddings.norm.bias": "embeddings.LayerNorm.bias",
    "pooler.weight": "pooler.dense.weight",
    "pooler.bias": "pooler.dense.bias",
}
HF_LAYER_KEYS = {  # ours layers.{i}.* -> HF encoder.layer.{i}.*
    "qkv.weight": ("attention.self.query.weight", "attention.self.key.weight", "attention.self.value.weight"),
    "qkv.bias": ("attention.self.query.bias", "attention.self.key.bias", "attention.self.value.bias"),
    "attn_out.weight": "attention.output.dense.weight",
    "attn_out.bias": "attention.output.dense.bias",
    "attn_norm.weight": "attention.output.LayerNorm.weight",
    "attn_norm.bias": "attention.output.LayerNorm.bias",
    "ff_in.weight": "intermediate.dense.weight",
    "ff_in.bias": "intermediate.dense.bias",
    "ff_out.weight": "output.dense.weight",
    "ff_out.bias": "output.dense.bias",
    "ff_norm.weight": "output.LayerNorm.weight",
    "ff_norm.bias": "output.LayerNorm.bias",
}
HEAD_MODULES = ("mlm", "nsp", "classifier")  # our modules outside the encoder
HF_HEAD_KEYS = {  # heads, outside the encoder, per model type
    "bert": {
        "mlm.dense.weight": "cls.predictions.transform.dense.weight",
        "mlm.dense.bias": "cls.predictions.transform.dense.bias",
        "mlm.norm.weight": "cls.predictions.transform.LayerNorm.weight",
        "mlm.norm.bias": "cls.predictions.transform.LayerNorm.bias",
        "mlm.bias": "cls.predictions.bias",
        "nsp.weight": "cls.seq_relationship.weight",
        "nsp.bias": "cls.seq_relationship.bias",
        "classifier.weight": "classifier.weight",
        "classifier.bias": "classifier.bias",
    },
    "roberta": {
        "mlm.dense.weight": "lm_head.dense.weight",
        "mlm.dense.bias": "lm_head.dense.bias",
        "mlm.norm.weight": "lm_head.layer_norm.weight",
        "mlm.norm.bias": "lm_head.layer_norm.bias",
        "mlm.bias": "lm_head.bias",
        "classifier.dense.weight": "classifier.dense.weight",
        "classifier.dense.bias": "classifier.dense.bias",
        "classifier.out.weight": "classifier.out_proj.weight",
        "classifier.out.bias": "classifier.out_proj.bias",
    },
}
# HF key endings that carry nothing of their own: a buffer, and the MLM decoder (cls.predictions.decoder
# or lm_head.decoder) tied to the word embeddings
_HF_REDUNDANT = ("embeddings.position_ids", ".decoder.weight", ".decoder.bias")


class _HFCheckpoint(HFCheckpoint):
    """from_pretrained / save_pretrained for the models below (hf_checkpoint.HFCheckpoint), through
    the key maps above. The encoder's tensors must all be in a checkpoint; heads and the pooler may
    start fresh."""

    config_class, hf_body, hf_ignored = BertConfig, "encoder", _HF_REDUNDANT
    hf_optional = (*(m + "." for m in HEAD_MODULES), "pooler.", "bert.pooler.")
    hf_architectures = {}  # model_type -> the HF class this model saves as

    def hf_keys(self):
        """{our state-dict key: HF key, or a tuple of HF keys concatenated along dim 0}, all heads'."""
        bare = isinstance(self, BertModel)
        prefix = "" if bare else self.config.model_type + "."  # HF's attribute holding the encoder
        ours = "" if bare else "bert."  # ours
        keys = {ours + k: prefix + v for k, v in HF_KEYS.items()}
        for i in range(self.config.num_hidden_layers):
            layer = f"{prefix}encoder.layer.{i}."
            for k, v in HF_LAYER_KEYS.items():
                keys[f"{ours}layers.{i}.{k}"] = tuple(layer + x for x in v) if isinstance(v, tuple) else layer + v
        return {**keys, **HF_HEAD_KEYS[self.config.model_type]}

    def hf_rename(self, sd):
        """A head model's checkpoint into the bare encoder: drop the encoder's prefix; the other way, add it."""
        prefix = self.config.model_type + "."
        if isinstance(self, BertModel):
            return {k.removeprefix(prefix): v for k, v in sd.items()}
        if any(k.startswith(prefix) for k in sd):
            return sd
        heads = {*HF_HEAD_KEYS[self.config.model_type].values()}
        return {(k if k in heads else prefix + k): v for k, v in sd.items()}

    def hf_config(self):
        if self.config.model_type not in self.hf_architectures:
            raise ValueError(f"{type(self).__name__} has no HF counterpart for model_type {self.config.model_type!r}")
        return self.config.to_hf(self.hf_architectures[self.config.model_type])


# -------------------------------------------------------------------------------- the model


class BertEmbeddings(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.config = c
        self.word = nn.Embedding(c.vocab_size, c.hidden_size, padding_idx=c.pad_token_id)
        roberta = c.model_type == "roberta"
        self.position = nn.Embedding(
            c.max_position_embeddings, c.hidden_size, padding_idx=c.pad_token_id if roberta else None
        )
        self.token_type = nn.Embedding(c.type_vocab_size, c.hidden_size)
        self.norm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.dropout = nn.Dropout(c.hidden_dropout_prob)

    def forward(self, input_ids, token_type_ids=None, position_ids=None):  # (B, T) -> (B, T, C)
        B, T = input_ids.shape
        if position_ids is None:
            if self.config.model_type == "roberta":  # padding keeps pad_token_id, real tokens count from it
                real = (input_ids != self.config.pad_token_id).long()
                position_ids = real.cumsum(1) * real + self.config.pad_token_id
            else:
                position_ids = torch.arange(T, device=input_ids.device)[None]
        x = self.word(input_ids) + self.position(position_ids)
        x = x + (self.token_type.weight[0] if token_type_ids is None else self.token_type(token_type_ids))
        return self.dropout(self.norm(x))


class BertOutput(NamedTuple):
    last_hidden_state: Tensor  # (B, T, C); zeros at padded positions when padding was skipped
    pooler_output: Tensor | None  # (B, C): tanh(W h_[CLS] + b), None without a pooler
    hidden_states: tuple | None = None  # embeddings and every layer's output, each (B, T, C)
    attention_scores: tuple | None = None  # every layer's pre-softmax q.k / sqrt(hd), (B, H, T, T), unmasked


class BertModel(_HFCheckpoint, nn.Module):
    """The encoder: embeddings, `num_hidden_layers` post-LN layers and (optionally) the pooler.

    forward(input_ids, attention_mask=None, token_type_ids=None, position_ids=None,
    output_hidden_states=False, output_attention_scores=False, self_attention_mask=None) -> BertOutput.
    Set `skip_padding = False` to run padded positions through every layer like HF does (same
    real-position outputs, slower). The attention scores take the explicit attention path (TinyBERT
    distills them); self_attention_mask (B, T, T) bool says who sees whom instead of the padding mask
    (UniLM's masks, which hide padded keys and let every row see at least itself).
    """

    hf_architectures = {"bert": "BertModel", "roberta": "RobertaModel"}

    def __init__(self, config: BertConfig, add_pooling_layer=True):
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.layers = nn.ModuleList(PostLNLayer(config) for _ in range(config.num_hidden_layers))
        self.pooler = nn.Linear(config.hidden_size, config.hidden_size) if add_pooling_layer else None
        self.skip_padding = True
        _init_weights(self, config)

    def forward(
        self,
        input_ids,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        output_hidden_states=False,
        output_attention_scores=False,
        self_attention_mask=None,
    ):
        _check_inputs(self.config, input_ids, attention_mask, token_type_ids, position_ids)
        B, T = input_ids.shape
        x = self.embeddings(input_ids, token_type_ids, position_ids)  # (B, T, C)
        mask = packed = None
        if attention_mask is not None:
            real = attention_mask.bool()  # (B, T)
            if not real.all():
                mask = real[:, None, None, :]  # (B, 1, 1, T): which keys each query may see
                if self.skip_padding:
                    packed = (real.flatten().nonzero().squeeze(1), B, T)  # flat positions of the real tokens
                    x = pack_tokens(x, packed[0])  # (N, C)
        if self_attention_mask is not None:  # (B, T, T), True where query i may see key j: it replaces the
            if tuple(self_attention_mask.shape) != (B, T, T):  # padding mask, so it must hide padded keys itself
                raise ValueError(
                    f"self_attention_mask must be (B, T, T) = {(B, T, T)}, got {tuple(self_attention_mask.shape)}"
                )
            mask = self_attention_mask[:, None]  # (B, 1, T, T)
        hidden = [x] if output_hidden_states else None  # kept only when asked: they cost memory
        scores = [] if output_attention_scores else None
        for layer in self.layers:
            if scores is None:
                x = layer(x, mask, packed)
            else:
                x, s = layer(x, mask, packed, scores=True)
                scores.append(s)
            if hidden is not None:
                hidden.append(x)
        if packed is not None:
            x = unpack_tokens(x, *packed)  # (B, T, C)
            hidden = hidden and [unpack_tokens(h, *packed) for h in hidden]
        pooled = torch.tanh(self.pooler(x[:, 0])) if self.pooler is not None else None
        return BertOutput(x, pooled, *(None if h is None else tuple(h) for h in (hidden, scores)))


def _check_inputs(c, input_ids, attention_mask, token_type_ids, position_ids):
    """Clear errors for bad input, naming the argument (HF fails later with an index error)."""
    check_ids(input_ids, "input_ids", c.vocab_size)
    if input_ids.shape[1] > c.max_length:
        raise ValueError(f"input_ids has length {input_ids.shape[1]}; the position table allows at most {c.max_length}")
    for name, t in (("attention_mask", attention_mask), ("token_type_ids", token_type_ids)):
        if t is not None and tuple(t.shape) != tuple(input_ids.shape):
            raise ValueError(f"{name} must have the shape of input_ids {tuple(input_ids.shape)}, got {tuple(t.shape)}")
    if attention_mask is not None and not (attention_mask.is_floating_point() or attention_mask.dtype in _MASK_INTS):
        raise ValueError(f"attention_mask must be bool, integer or float (1 = real token), got {attention_mask.dtype}")
    tt = token_type_ids
    if tt is not None and tt.numel() and (tt.min() < 0 or tt.max() >= c.type_vocab_size):
        raise ValueError(f"token_type_ids must be in [0, type_vocab_size={c.type_vocab_size})")
    pos = position_ids
    T = input_ids.shape[1]
    if pos is not None and (pos.shape[-1] != T or (pos.numel() and pos.max() >= c.max_position_embeddings)):
        raise ValueError(
            f"position_ids must be (batch or 1, {T}) with values below "
            f"max_position_embeddings={c.max_position_embeddings}, got shape {tuple(pos.shape)}"
        )


_MASK_INTS = (torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def _init_weights(module, c):
    init_bert_weights(module, c.initializer_range)


# ------------------------------------------------------------------------------------ heads


class BertMLMHead(nn.Module):
    """dense -> activation -> LayerNorm -> the word embeddings (tied) transposed, plus a bias."""

    def __init__(self, c: BertConfig):
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.hidden_size)
        self.act = F.gelu if c.model_type == "roberta" else ACTIVATIONS[c.hidden_act]  # RoBERTa's is always GELU
        self.norm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(c.vocab_size))

    def forward(self, x, word_embeddings):  # (..., C) -> (..., V)
        return F.linear(self.norm(self.act(self.dense(x))), word_embeddings, self.bias)


def masked_lm_logits(bert, head, hidden, labels):
    """Logits of the masked-LM head and their targets. With labels, only the labeled positions
    (label != -100) are projected to the vocabulary: logits (M, V) for those M positions, in
    row-major order, and their labels (M,)."""
    W = bert.embeddings.word.weight
    if labels is None:
        return head(hidden, W), None  # (B, T, V)
    if tuple(labels.shape) != tuple(hidden.shape[:2]):
        raise ValueError(f"labels must have the shape of input_ids {tuple(hidden.shape[:2])}, got {labels.shape}")
    where = (labels != -100).flatten().nonzero().squeeze(1)  # (M,)
    return head(pack_tokens(hidden, where), W), labels.flatten()[where]  # (M, V), (M,)


def pretraining_sums(mlm_logits, targets, nsp_logits, batch):
    """BERT's objective as sums (contract.masked_lm_sums): masked-LM and next-sentence prediction."""
    return masked_lm_sums(mlm_logits, targets, nsp_logits, batch)


# With labels, every output also holds `sums`: its losses as sums, with their counts (contract.Sums).


class PreTrainingOutput(NamedTuple):
    mlm_logits: Tensor  # (B, T, V), or (M, V) at the M labeled positions when labels are given
    nsp_logits: Tensor  # (B, 2): 0 = B follows A, 1 = B is random
    loss: Tensor | None = None  # mean masked-LM cross-entropy + mean NSP cross-entropy
    mlm_loss: Tensor | None = None
    nsp_loss: Tensor | None = None
    sums: Sums | None = None


class MaskedLMOutput(NamedTuple):
    logits: Tensor  # (B, T, V), or (M, V) at the M labeled positions when labels are given
    loss: Tensor | None = None
    sums: Sums | None = None


# ------------------------------------------------------------------------- models with heads


class BertForPreTraining(_HFCheckpoint, nn.Module):
    """BERT's pretraining model: the encoder, the masked-LM head (tied to the word embeddings) and the
    next-sentence head on the pooled [CLS].

    forward(input_ids, attention_mask=None, token_type_ids=None, position_ids=None, labels=None,
    next_sentence_label=None) -> PreTrainingOutput. `labels` (B, T) hold the original token at
    masked positions and -100 elsewhere; `next_sentence_label` (B,) is 0 when B follows A.
    """

    hf_architectures = {"bert": "BertForPreTraining"}

    def __init__(self, config: BertConfig):
        super().__init__()
        if config.model_type != "bert":
            raise ValueError("BertForPreTraining is BERT's MLM + NSP; RoBERTa pretrains with BertForMaskedLM")
        self.config = config
        self.bert = BertModel(config)
        self.mlm = BertMLMHead(config)
        self.nsp = nn.Linear(config.hidden_size, 2)
        _init_weights(self.nsp, config)
        _init_weights(self.mlm.dense, config)

    def forward(
        self,
        input_ids,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        labels=None,
        next_sentence_label=None,
    ):
        hidden, pooled = self.bert(input_ids, attention_mask, token_type_ids, position_ids)[:2]
        mlm_logits, targets = masked_lm_logits(self.bert, self.mlm, hidden, labels)
        nsp_logits = self.nsp(pooled)  # (B, 2)
        if labels is None and next_sentence_label is None:
            return PreTrainingOutput(mlm_logits, nsp_logits)
        batch = dict(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
        sums = pretraining_sums(mlm_logits, targets, nsp_logits, {**batch, "next_sentence_label": next_sentence_label})
        mean = {k: s / sums.counts[c] for k, (s, c) in sums.losses.items()}
        return PreTrainingOutput(mlm_logits, nsp_logits, sums.loss(), mean.get("mlm"), mean.get("nsp"), sums)

    counts = staticmethod(sequence_counts)


class BertForMaskedLM(_HFCheckpoint, nn.Module):
    """The encoder (no pooler) and the masked-LM head: RoBERTa's pretraining model, and BERT's
    without NSP. forward(input_ids, attention_mask=None, token_type_ids=None, position_ids=None,
    labels=None) -> MaskedLMOutput."""

    hf_architectures = {"bert": "BertForMaskedLM", "roberta": "RobertaForMaskedLM"}

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.bert = BertModel(config, add_pooling_layer=False)
        self.mlm = BertMLMHead(config)
        _init_weights(self.mlm.dense, config)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None, labels=None):
        hidden = self.bert(input_ids, attention_mask, token_type_ids, position_ids).last_hidden_state
        logits, targets = masked_lm_logits(self.bert, self.mlm, hidden, labels)
        if labels is None:
            return MaskedLMOutput(logits)
        sums = pretraining_sums(
            logits, targets, None, dict(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
        )
        return MaskedLMOutput(logits, sums.loss(), sums)

    counts = staticmethod(sequence_counts)


class RobertaClassifier(nn.Module):
    """RoBERTa's sequence head on <s>: dropout -> dense -> tanh -> dropout -> out (no pooler)."""

    def __init__(self, c: BertConfig):
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.hidden_size)
        self.out = nn.Linear(c.hidden_size, c.num_labels)
        self.dropout = nn.Dropout(c.hidden_dropout_prob if c.classifier_dropout is None else c.classifier_dropout)

    def forward(self, hidden):  # (B, T, C) -> (B, num_labels)
        return self.out(self.dropout(torch.tanh(self.dense(self.dropout(hidden[:, 0])))))


class BertForSequenceClassification(_HFCheckpoint, nn.Module):
    """A classifier (num_labels > 1, cross-entropy) or regressor (num_labels == 1, MSE) on the
    sequence: BERT's on the pooled [CLS] after dropout, RoBERTa's `RobertaClassifier` on <s>.

    forward(input_ids, attention_mask=None, token_type_ids=None, position_ids=None, labels=None)
    -> ClassifierOutput; labels (B,) are class ids, or floats for regression.
    """

    hf_architectures = {"bert": "BertForSequenceClassification", "roberta": "RobertaForSequenceClassification"}

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        roberta = config.model_type == "roberta"
        self.bert = BertModel(config, add_pooling_layer=not roberta)
        if roberta:
            self.classifier = RobertaClassifier(config)
        else:
            p = config.hidden_dropout_prob if config.classifier_dropout is None else config.classifier_dropout
            self.dropout = nn.Dropout(p)
            self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        _init_weights(self.classifier, config)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None, labels=None):
        hidden, pooled = self.bert(input_ids, attention_mask, token_type_ids, position_ids)[:2]
        if self.config.model_type == "roberta":
            logits = self.classifier(hidden)
        else:
            logits = self.classifier(self.dropout(pooled))  # (B, num_labels)
        if labels is None:
            return ClassifierOutput(logits)
        if labels.shape[0] != logits.shape[0]:
            raise ValueError(f"labels must have {logits.shape[0]} rows (the batch), got shape {tuple(labels.shape)}")
        sums = classifier_sums(logits, labels, dict(input_ids=input_ids, attention_mask=attention_mask))
        return ClassifierOutput(logits, sums.loss(), sums)

    counts = staticmethod(sequence_counts)


# ------------------------------------------------------------------------------- early exit


class EarlyExitOutput(NamedTuple):
    logits: Tensor  # (B, K): the last layer's classifier (the plain model's)
    exit_logits: tuple  # every layer's exit, (B, K) each; the last is `logits`
    loss: Tensor | None = None  # the objective's mean over the sequences, when labels are given
    sums: Sums | None = None


class ExitHead(nn.Module):
    """An internal exit on a layer's [CLS]: dense -> tanh (a pooler of its own) -> dropout -> classifier."""

    def __init__(self, c):
        super().__init__()
        self.pooler = nn.Linear(c.hidden_size, c.hidden_size)
        self.dropout = nn.Dropout(c.hidden_dropout_prob if c.classifier_dropout is None else c.classifier_dropout)
        self.classifier = nn.Linear(c.hidden_size, c.num_labels)

    def forward(self, cls):  # (B, C) -> (B, K)
        return self.classifier(self.dropout(torch.tanh(self.pooler(cls))))


class EarlyExitBert(nn.Module):
    """A BERT classifier with an exit after every layer. It holds the plain model's modules under
    the same names (bert.*, classifier.*), so the last exit is the plain classifier, plus `exits`
    (one ExitHead per layer below the top).

    forward(..., labels=None) runs every layer (training) -> EarlyExitOutput; its loss is the
    `objective`'s: "pabee" (Zhou et al. 2020) weights exit j's loss by j (all trained jointly),
    "deebert" (Xin et al. 2020) averages the internal exits' (the rest frozen, already fine-tuned).
    infer(..., entropy=S or patience=P) runs each sample only up to its exit -> (logits (B, K),
    layers used (B,))."""

    def __init__(self, plain: BertForSequenceClassification, objective="pabee"):
        super().__init__()
        c = plain.config
        if c.model_type != "bert" or c.num_labels < 2:
            raise ValueError("early exit needs a BERT classifier (model_type bert, num_labels >= 2)")
        if objective not in ("pabee", "deebert"):
            raise ValueError(f"objective must be 'pabee' or 'deebert', got {objective!r}")
        self.config, self.objective = c, objective
        self.bert, self.dropout, self.classifier = plain.bert, plain.dropout, plain.classifier
        self.exits = nn.ModuleList(ExitHead(c) for _ in range(c.num_hidden_layers - 1))
        _init_weights(self.exits, c)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None):
        out = self.bert(input_ids, attention_mask, token_type_ids, output_hidden_states=True)
        internal = [head(h[:, 0]) for head, h in zip(self.exits, out.hidden_states[1:-1], strict=True)]
        final = self.classifier(self.dropout(out.pooler_output))
        if labels is None:
            return EarlyExitOutput(final, (*internal, final))
        losses = [classifier_loss_sum(x, labels) for x in (*internal, final)]
        if self.objective == "pabee":  # the loss of exit j weighted by j (PABEE's weighted average)
            loss = sum((j + 1) * x for j, x in enumerate(losses)) / sum(range(1, len(losses) + 1))
        else:  # deebert: the internal exits only
            loss = sum(losses[:-1]) / (len(losses) - 1)
        sums = classifier_sums(final, labels, dict(input_ids=input_ids, attention_mask=attention_mask), loss)
        return EarlyExitOutput(final, (*internal, final), sums.loss(), sums)

    counts = staticmethod(sequence_counts)

    @torch.no_grad()
    def infer(self, input_ids, attention_mask=None, token_type_ids=None, entropy=None, patience=None):
        """Exit where the exit's prediction entropy < `entropy`, or once `patience` internal exits in a
        row agree with the one before. entropy=0 or patience >= num_layers - 1 never exits early:
        the plain classifier's computation, unchanged."""
        if (entropy is None) == (patience is None):
            raise ValueError("infer: give exactly one of entropy (a threshold) or patience (an integer)")
        B = input_ids.shape[0]
        n_layers = len(self.bert.layers)
        _check_inputs(self.config, input_ids, attention_mask, token_type_ids, None)
        x = self.bert.embeddings(input_ids, token_type_ids)  # (B, T, C)
        mask = None
        if attention_mask is not None and not attention_mask.bool().all():
            mask = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T)
        alive = torch.arange(B, device=input_ids.device)  # the batch rows still running
        logits = torch.empty(B, self.config.num_labels, device=input_ids.device)
        layers = torch.full((B,), n_layers, device=input_ids.device)
        prev, streak = None, torch.zeros(B, dtype=torch.long, device=input_ids.device)
        for i, layer in enumerate(self.bert.layers):
            x = layer(x, mask)
            if i == n_layers - 1:
                logits[alive] = self.classifier(self.dropout(torch.tanh(self.bert.pooler(x[:, 0])))).float()
                break
            exit_logits = self.exits[i](x[:, 0]).float()  # (b, K)
            pred = exit_logits.argmax(-1)
            if patience is not None:  # PABEE: consecutive exits agreeing with the previous one
                streak = (streak + 1) * (pred == prev) if prev is not None else streak
                done = streak >= patience
            else:  # DeeBERT: a confident exit
                p = exit_logits.log_softmax(-1)
                done = -(p.exp() * p).sum(-1) < entropy
            logits[alive[done]], layers[alive[done]] = exit_logits[done], i + 1
            keep = ~done
            if not keep.any():
                break
            x, alive, prev, streak = x[keep], alive[keep], pred[keep], streak[keep]
            mask = None if mask is None else mask[keep]
        return logits, layers


# ------------------------------------------------------------------ TinyBERT's distillation


def layer_map(student_layers, teacher_layers):
    """TinyBERT's g: the teacher layer that student layer m learns, for m = 0 (the embeddings) .. M.
    g(m) = m * N // M spreads the student over the teacher, the last layer onto the last; where N is
    a multiple of M (TinyBERT's code asserts it) this is its mapping, e.g. 12 -> 4: 0, 3, 6, 9, 12."""
    if not 0 < student_layers <= teacher_layers:
        raise ValueError(
            f"the student's num_hidden_layers ({student_layers}) must be in [1, teacher's {teacher_layers}]"
        )
    return [m * teacher_layers // student_layers for m in range(student_layers + 1)]


def hidden_mse_sum(student, teacher, real=None):
    """Squared error of two layers' outputs (B, T, C) each, averaged over the width and summed over the
    real tokens (real (B, T) bool, None: all): divided by the real-token count it is TinyBERT's
    MSELoss over (B, T, C) when nothing is padded (its code averages padded positions in too)."""
    d = (student.float() - teacher.float()).pow(2).mean(-1)  # (B, T)
    return d.sum() if real is None else d[real].sum()


def attention_mse_sum(student, teacher, real=None):
    """Squared error of two layers' pre-softmax attention scores (B, H, T, T) each, averaged over the
    heads and summed over the (query, key) pairs of real tokens: divided by the pair count (sum over
    sequences of n^2) it is TinyBERT's MSELoss when nothing is padded (its code zeroes the masked
    keys' entries and keeps padded queries' rows in the mean; we count real pairs only)."""
    if student.shape != teacher.shape:
        raise ValueError(
            f"attention scores of shape {tuple(student.shape)} (student) and {tuple(teacher.shape)} (teacher): "
            "the attention loss needs the same num_attention_heads and length"
        )
    d = (student.float() - teacher.float()).pow(2).mean(1)  # (B, T, T)
    return d.sum() if real is None else (d * (real[:, :, None] & real[:, None, :])).sum()


def soft_cross_entropy_sum(student_logits, teacher_logits, temperature=1.0):
    """TinyBERT's prediction-layer loss: the cross-entropy of the student's distribution against the
    teacher's, both logits (B, K) divided by `temperature`, averaged over the K classes as its code does
    ((-p log q).mean()) and summed over the sequences."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    p = (teacher_logits.float() / temperature).softmax(-1)
    return -(p * (student_logits.float() / temperature).log_softmax(-1)).mean(-1).sum()


def distill_counts(batch):
    """sequence_counts and the attention loss's divisor: "pairs", the real (query, key) pairs."""
    mask, (B, T) = batch.get("attention_mask"), batch["input_ids"].shape
    return {**sequence_counts(batch), "pairs": B * T * T if mask is None else mask.sum(1).pow(2).sum()}


class DistillOutput(NamedTuple):
    logits: Tensor | None  # the student's classifier logits (B, K); None for a bare BertModel student
    loss: Tensor
    sums: Sums


class TinyBertDistiller(nn.Module):
    """TinyBERT's Transformer distillation (Jiao et al. 2019) of `student` from a frozen `teacher`, each a
    BertModel or a model around one (`.bert`).

    stage "intermediate": student layer m (0: the embeddings) learns teacher layer layer_map(M, N)[m]:
    its output through `fit_dense` (width Cs -> Ct; nn.Identity when the widths agree) by MSE
    ("hidden"), and, for m >= 1, its pre-softmax attention scores by MSE ("attention"; the same head
    count needed); general distillation (unlabeled text) and task distillation's first step.
    stage "prediction": soft cross-entropy of the classifiers' logits at `temperature` (MSE to the
    labels for a regressor, as TinyBERT's code); both BertForSequenceClassification.

    forward(input_ids, attention_mask=None, token_type_ids=None, labels=None) -> DistillOutput; with
    labels (B,) the student's accuracy is a metric. The teacher stays in eval mode, without gradients;
    `student` is what to save."""

    def __init__(self, student, teacher, stage="intermediate", temperature=1.0):
        super().__init__()
        if stage not in ("intermediate", "prediction"):
            raise ValueError(f"stage must be 'intermediate' or 'prediction', got {stage!r}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        s, t = (m if isinstance(m, BertModel) else m.bert for m in (student, teacher))
        cs, ct = s.config, t.config
        if stage == "prediction":
            for name, m in (("student", student), ("teacher", teacher)):
                if not isinstance(m, BertForSequenceClassification):
                    raise ValueError(
                        f"prediction distillation needs a {name} with a classifier (fine-tuned on the task)"
                    )
            if cs.num_labels != ct.num_labels:
                raise ValueError(f"num_labels: the student has {cs.num_labels}, the teacher {ct.num_labels}")
        elif cs.num_attention_heads != ct.num_attention_heads:
            raise ValueError(
                f"the attention loss needs equal num_attention_heads: student {cs.num_attention_heads}, "
                f"teacher {ct.num_attention_heads}"
            )
        self.layers = layer_map(cs.num_hidden_layers, ct.num_hidden_layers)
        self.student, self.teacher, self.stage, self.temperature = student, teacher, stage, temperature
        self.config = cs
        wide = cs.hidden_size != ct.hidden_size
        self.fit_dense = nn.Linear(cs.hidden_size, ct.hidden_size) if wide else nn.Identity()
        _init_weights(self.fit_dense, cs)
        teacher.requires_grad_(False)
        teacher.eval()

    def train(self, mode=True):
        super().train(mode)
        self.teacher.eval()  # no dropout in the targets
        return self

    counts = staticmethod(distill_counts)

    def save_pretrained(self, folder):  # the student: what distillation makes
        self.student.save_pretrained(folder)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None):
        inputs = dict(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        counts = distill_counts(inputs)
        real = None if attention_mask is None else attention_mask.bool()
        if self.stage == "prediction":
            logits = self.student(**inputs).logits  # (B, K)
            with torch.no_grad():
                target = self.teacher(**inputs).logits
            if self.config.num_labels == 1:
                loss = classifier_loss_sum(logits, labels)
            else:
                loss = soft_cross_entropy_sum(logits, target, self.temperature)
            losses = {"pred": (loss, "sequences")}
        else:
            bert = self.student if isinstance(self.student, BertModel) else self.student.bert
            out = bert(**inputs, output_hidden_states=True, output_attention_scores=True)
            with torch.no_grad():
                teacher = self.teacher if isinstance(self.teacher, BertModel) else self.teacher.bert
                target = teacher(**inputs, output_hidden_states=True, output_attention_scores=True)
            hidden = sum(
                hidden_mse_sum(self.fit_dense(out.hidden_states[m]), target.hidden_states[g], real)
                for m, g in enumerate(self.layers)
            )
            scores = zip(out.attention_scores, (target.attention_scores[g - 1] for g in self.layers[1:]), strict=True)
            attention = sum(attention_mse_sum(a, b, real) for a, b in scores)
            losses = {"hidden": (hidden, "tokens"), "attention": (attention, "pairs")}
            logits = None
        metrics = {}
        if logits is not None and labels is not None and self.config.num_labels > 1:
            metrics["acc"] = ((logits.argmax(-1) == labels.view(-1)).sum(), "sequences")
        sums = Sums(losses, metrics, counts)
        return DistillOutput(logits, sums.loss(), sums)
