"""Small building blocks that several families share: activations by the names HF configs use,
token packing (the real tokens of a padded batch as one (N, C) matrix, so that position-wise
layers skip the padding), BERT's post-LN encoder layer (BERT and ALBERT; its self-attention on
fused q, k, v projections), BERT's initialization, and the decoders' linear layer whose orientation
is measured on the CPU at hand. Imports only torch."""

import time
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = {  # by the names in HF configs (hidden_act, activation_function)
    "gelu": F.gelu,  # exact (erf)
    "gelu_new": partial(F.gelu, approximate="tanh"),  # the tanh approximation (OpenAI's GPT code)
    "gelu_pytorch_tanh": partial(F.gelu, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
}


def pack_tokens(x, index):  # (B, T, C) -> (N, C): the rows at flat positions `index`
    return x.flatten(0, 1).index_select(0, index)


def unpack_tokens(x, index, B, T):  # (N, C) -> (B, T, C), zeros elsewhere
    return x.new_zeros(B * T, x.shape[-1]).index_copy(0, index, x).view(B, T, -1)


def fused_self_attention(qkv, n_head, mask=None, packed=None, dropout=0.0, scores=False):
    """Multi-head self-attention from fused projections: qkv (B, T, 3C), or (N, 3C) real tokens when
    `packed` = (index, B, T) says where they sit; mask None or (B, 1, 1, T) bool, True at real keys.
    -> the heads merged, (B, T, C) or (N, C): SDPA sees the padded layout, the rest skips padding.
    scores=True: the explicit path instead of SDPA, -> (that, the pre-softmax scores q.k / sqrt(hd)
    (B, H, T, T), unmasked): what TinyBERT distills."""
    if packed is not None:
        qkv = unpack_tokens(qkv, *packed)  # (B, T, 3C), zeros at padding
    B, T, _ = qkv.shape
    q, k, v = qkv.view(B, T, 3, n_head, -1).permute(2, 0, 3, 1, 4)  # 3 x (B, H, T, hd)
    if scores:
        s = q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5  # (B, H, T, T)
        p = (s if mask is None else s.masked_fill(~mask, float("-inf"))).softmax(-1)
        y = F.dropout(p, dropout) @ v  # (B, H, T, hd)
    else:
        y = F.scaled_dot_product_attention(q, k, v, mask, dropout)  # (B, H, T, hd)
    y = y.transpose(1, 2).reshape(B, T, -1)  # (B, T, C)
    y = pack_tokens(y, packed[0]) if packed is not None else y
    return (y, s) if scores else y


def init_bert_weights(module, std):
    """BERT's initialization (HF's): N(0, std) weights and embeddings, zero biases and padding rows, unit norms."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=std)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)
        if isinstance(m, nn.Embedding) and m.padding_idx is not None:
            nn.init.zeros_(m.weight[m.padding_idx])
        if isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class PostLNLayer(nn.Module):
    """BERT's post-LN encoder layer: x = norm(x + drop(attn(x))); x = norm(x + drop(ff(x))), built from
    a config with HF's field names (BertConfig, AlbertConfig). ff_dropout=False: ALBERT's (HF adds the
    feed-forward output back without dropout). Skips padding when given `packed` (see forward)."""

    def __init__(self, c, ff_dropout=True):
        super().__init__()
        C = c.hidden_size
        self.n_head = c.num_attention_heads
        self.qkv = nn.Linear(C, 3 * C)  # query, key and value in one matmul
        self.attn_out = nn.Linear(C, C)
        self.attn_norm = nn.LayerNorm(C, eps=c.layer_norm_eps)
        self.ff_in = nn.Linear(C, c.intermediate_size)
        self.ff_out = nn.Linear(c.intermediate_size, C)
        self.ff_norm = nn.LayerNorm(C, eps=c.layer_norm_eps)
        self.act = ACTIVATIONS[c.hidden_act]
        self.dropout = nn.Dropout(c.hidden_dropout_prob)
        self.ff_dropout = self.dropout if ff_dropout else nn.Identity()
        self.attn_dropout = c.attention_probs_dropout_prob

    def forward(self, x, mask=None, packed=None, scores=False):
        """x: (B, T, C), or (N, C) real tokens when `packed` = (index, B, T) says where they sit.
        mask: None (attend everywhere) or (B, 1, 1, T) bool, True at real keys. scores=True: also
        the attention's pre-softmax scores (B, H, T, T), -> (x, scores)."""
        p = self.attn_dropout if self.training else 0.0
        y = fused_self_attention(self.qkv(x), self.n_head, mask, packed, p, scores)
        y, s = y if scores else (y, None)
        x = self.attn_norm(x + self.dropout(self.attn_out(y)))
        x = self.ff_norm(x + self.ff_dropout(self.ff_out(self.act(self.ff_in(x)))))
        return (x, s) if scores else x


_WEIGHT_MAJOR = {}  # (weight shape, rows, dtype, bias?) -> whether weight @ x^T measured faster here


def linear(x, weight, bias=None):
    """F.linear(x, weight, bias): (..., in) -> (..., out). With at most 16 rows on the CPU (decoding) and
    a weight of 1 MB or more, computed in whichever orientation measured faster for this shape and row
    count on this CPU, F.linear's or weight @ x^T over at least 2 rows: MKL reads a large weight 2-3x
    slower in one of them on one CPU and in the other on another (docs/results.md), so each process
    times both once per shape (a few calls, interleaved) and keeps the faster. The numbers agree up to
    fp32 rounding. Smaller weights stay in cache, where the choice does not matter."""
    rows = x.reshape(-1, x.shape[-1])
    n = rows.shape[0]
    if x.device.type != "cpu" or not 0 < n <= 16 or weight.numel() < 1 << 18:
        return F.linear(x, weight, bias)
    key = (tuple(weight.shape), n, weight.dtype, bias is None)
    if key not in _WEIGHT_MAJOR:
        times = {False: [], True: []}
        with torch.no_grad():
            for flip in (False, True) * 4:
                t = time.perf_counter()
                _linear(rows, weight, bias, flip)
                times[flip].append(time.perf_counter() - t)
        _WEIGHT_MAJOR[key] = min(times[True]) < min(times[False])
    return _linear(rows, weight, bias, _WEIGHT_MAJOR[key]).view(*x.shape[:-1], -1)


def _linear(rows, weight, bias, weight_major):  # (n, in) -> (n, out)
    if not weight_major:
        return F.linear(rows, weight, bias)
    n = rows.shape[0]
    if n == 1:
        rows = rows.expand(2, -1).contiguous()
    y = torch.mm(weight, rows.t()) if bias is None else torch.addmm(bias[:, None], weight, rows.t())  # (out, n)
    return y[:, :n].t().contiguous()


class Linear(nn.Linear):
    """nn.Linear (same parameters and keys) computed by `linear` (fast decoding on the CPU)."""

    def forward(self, x):
        return linear(x, self.weight, self.bias)
