"""The 2017 Transformer (Vaswani et al., "Attention Is All You Need"), written from scratch.

Part 1 is a drop-in twin of torch.nn's `MultiheadAttention`, `TransformerEncoderLayer`,
`TransformerDecoderLayer`, `TransformerEncoder`, `TransformerDecoder` and `Transformer`: the same
constructor arguments and defaults, the same forward signatures and mask conventions (bool masks:
True = masked; float masks are added to the attention scores), the same state-dict keys, and the
same numbers. One deliberate difference: `TransformerEncoder` given a bool `src_key_padding_mask`
runs its layers on the real tokens only (in training too), so padded positions of its output hold
what torch's nested-tensor fast path gives there (zeros, then the final norm), not torch's
training-mode values. `enable_nested_tensor=False` turns that off.

Part 2 is the paper's translation model on those modules: scaled embeddings, sinusoidal (or
learned) positions, shared embeddings, label-smoothed loss, the warmup learning-rate schedule,
and greedy / beam search with a key-value cache.

This file imports only torch and the floor (contract.py, layers.py, optim.py).
"""

import copy
import math
import warnings
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contract import Sums, check_ids
from decoding import KVCache, beam_search, greedy_search
from layers import ACTIVATIONS, linear, pack_tokens, unpack_tokens
from optim import noam_lr, noam_scheduler  # noqa: F401 (the paper's schedule, part of this module's API)

# ----------------------------------------------------------------------------------- masks


def _canonical_mask(mask, name, dtype, other=None, other_name=""):
    """bool mask (True = masked) -> additive float mask (-inf = masked); float masks pass as is."""
    if mask is None:
        return None
    if mask.dtype != torch.bool and not mask.is_floating_point():
        raise TypeError(f"{name} must be a bool or floating-point tensor, got dtype {mask.dtype}")
    if other is not None and other.dtype != mask.dtype:  # torch.nn warns too, and goes on
        warnings.warn(
            f"Support for mismatched {name} and {other_name} is deprecated. Use same type for both instead.",
            stacklevel=3,
        )
    if mask.dtype == torch.bool:
        mask = torch.zeros_like(mask, dtype=dtype).masked_fill_(mask, float("-inf"))
    return mask


def generate_square_subsequent_mask(sz, device=None, dtype=None):
    """(sz, sz) float mask: -inf above the diagonal, so position i sees positions <= i."""
    return torch.triu(torch.full((sz, sz), float("-inf"), device=device, dtype=dtype), diagonal=1)


def _detect_is_causal_mask(mask, is_causal, size):
    """torch.nn's rule: is_causal=None means "look whether `mask` is the causal mask"."""
    if is_causal is not None or mask is None:
        return bool(is_causal)
    causal = generate_square_subsequent_mask(size, device=mask.device, dtype=mask.dtype)
    return mask.shape == causal.shape and bool((mask == causal).all())


def _activation(activation):  # torch.nn's rule: "relu", "gelu" or a callable
    if not (callable(activation) or activation in ("relu", "gelu")):
        raise ValueError(f"activation should be 'relu', 'gelu' or a callable, not {activation!r}")
    return activation if callable(activation) else ACTIVATIONS[activation]


# ------------------------------------------------------------------------- the torch.nn twin


class MultiheadAttention(nn.Module):
    """torch.nn.MultiheadAttention, from scratch.

    forward(query, key, value, ...) -> (attn_output, attn_weights or None). Attention runs through
    F.scaled_dot_product_attention unless `need_weights=True` (the default, as in torch), which
    takes the explicit softmax path to return the weights, averaged over heads by default.
    """

    def __init__(
        self,
        embed_dim,
        num_heads,
        dropout=0.0,
        bias=True,
        add_bias_kv=False,
        add_zero_attn=False,
        kdim=None,
        vdim=None,
        batch_first=False,
        device=None,
        dtype=None,
    ):
        super().__init__()
        if embed_dim <= 0 or num_heads <= 0:
            raise ValueError(f"embed_dim and num_heads must be > 0, got {embed_dim} and {num_heads}")
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
        fk = {"device": device, "dtype": dtype}
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.head_dim = embed_dim // num_heads
        self.kdim = kdim if kdim is not None else embed_dim
        self.vdim = vdim if vdim is not None else embed_dim
        self._qkv_same_embed_dim = self.kdim == embed_dim and self.vdim == embed_dim
        self.dropout, self.batch_first, self.add_zero_attn = dropout, batch_first, add_zero_attn
        # Parameters registered in torch.nn's order, so that state_dict() keys come out the same.
        if self._qkv_same_embed_dim:  # one packed (3E, E) projection
            self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim, **fk))
            for name in ("q_proj_weight", "k_proj_weight", "v_proj_weight"):
                self.register_parameter(name, None)
        else:
            self.q_proj_weight = nn.Parameter(torch.empty(embed_dim, embed_dim, **fk))
            self.k_proj_weight = nn.Parameter(torch.empty(embed_dim, self.kdim, **fk))
            self.v_proj_weight = nn.Parameter(torch.empty(embed_dim, self.vdim, **fk))
            self.register_parameter("in_proj_weight", None)
        if bias:
            self.in_proj_bias = nn.Parameter(torch.empty(3 * embed_dim, **fk))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **fk)
        if add_bias_kv:  # a learned key/value appended to every sequence
            self.bias_k = nn.Parameter(torch.empty(1, 1, embed_dim, **fk))
            self.bias_v = nn.Parameter(torch.empty(1, 1, embed_dim, **fk))
        else:
            self.bias_k = self.bias_v = None
        self._reset_parameters()

    def _reset_parameters(self):
        for w in (self.in_proj_weight, self.q_proj_weight, self.k_proj_weight, self.v_proj_weight):
            if w is not None:
                nn.init.xavier_uniform_(w)
        if self.in_proj_bias is not None:
            nn.init.zeros_(self.in_proj_bias)
            nn.init.zeros_(self.out_proj.bias)
        for b in (self.bias_k, self.bias_v):
            if b is not None:
                nn.init.xavier_normal_(b)

    def forward(
        self,
        query,
        key,
        value,
        key_padding_mask=None,
        need_weights=True,
        attn_mask=None,
        average_attn_weights=True,
        is_causal=False,
    ):
        batched = self._check_inputs(query, key, value, key_padding_mask, attn_mask)
        kpm = _canonical_mask(key_padding_mask, "key_padding_mask", query.dtype, attn_mask, "attn_mask")
        attn_mask = _canonical_mask(attn_mask, "attn_mask", query.dtype)
        if is_causal and attn_mask is None:
            raise ValueError(
                "is_causal=True is a hint that attn_mask is the causal mask, so attn_mask is "
                "needed too (Transformer.generate_square_subsequent_mask builds it)"
            )
        # Work batch-first, (B, L, E), keeping `query is key is value` for the packed projection.
        if not batched or not self.batch_first:
            move = (lambda x: x.unsqueeze(0)) if not batched else (lambda x: x.transpose(0, 1))
            q_in = move(query)
            k_in = q_in if key is query else move(key)
            v_in = k_in if value is key else move(value)
            query, key, value = q_in, k_in, v_in
            kpm = kpm if kpm is None or batched else kpm.unsqueeze(0)
        B, L, _ = query.shape
        S = key.shape[1]

        q, k, v = self._in_proj(query, key, value)  # (B, H, L, hd), (B, H, S, hd) x 2
        n_extra = 0
        if self.bias_k is not None:  # one more key/value for everyone
            k = torch.cat([k, self._split_heads(self.bias_k).expand(B, -1, -1, -1)], dim=2)
            v = torch.cat([v, self._split_heads(self.bias_v).expand(B, -1, -1, -1)], dim=2)
            n_extra += 1
        if self.add_zero_attn:  # and a zero key/value
            k = torch.cat([k, k.new_zeros(B, self.num_heads, 1, self.head_dim)], dim=2)
            v = torch.cat([v, v.new_zeros(B, self.num_heads, 1, self.head_dim)], dim=2)
            n_extra += 1
        # As torch.nn: the causal hint reaches the kernel only when no other mask is merged in.
        causal_kernel = is_causal and kpm is None and not need_weights
        mask = self._merge_masks(None if causal_kernel else attn_mask, kpm, B, L, S, n_extra)

        dropout_p = self.dropout if self.training else 0.0
        weights = None
        if need_weights:  # explicit path: (B, H, L, S') scores
            scores = (q * self.head_dim**-0.5) @ k.transpose(-2, -1)
            if mask is not None:
                scores = scores + mask
            weights = F.dropout(scores.softmax(dim=-1), dropout_p)
            out = weights @ v  # (B, H, L, hd)
            if average_attn_weights:
                weights = weights.mean(dim=1)
        else:
            out = F.scaled_dot_product_attention(q, k, v, mask, dropout_p, is_causal=causal_kernel)
        out = self.out_proj(self._merge_heads(out))  # (B, L, E)

        if not batched:
            return out.squeeze(0), None if weights is None else weights.squeeze(0)
        return (out if self.batch_first else out.transpose(0, 1)), weights

    # -- pieces, also used by the encoder's padding-free path and by cached decoding below --

    def _split_heads(self, x):  # (B, T, E) -> (B, H, T, hd)
        return x.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)

    def _merge_heads(self, x):  # (B, H, T, hd) -> (B, T, E)
        return x.transpose(1, 2).flatten(2)

    def _project(self, x, i):
        """The i-th input projection (0 query, 1 key, 2 value) of (B, T, D) -> (B, H, T, hd)."""
        E = self.embed_dim
        if self.in_proj_weight is not None:
            w = self.in_proj_weight[i * E : (i + 1) * E]
        else:
            w = (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight)[i]
        b = None if self.in_proj_bias is None else self.in_proj_bias[i * E : (i + 1) * E]
        return self._split_heads(F.linear(x, w, b))

    def _in_proj(self, query, key, value):
        if query is key and key is value and self.in_proj_weight is not None:  # one matmul
            qkv = F.linear(query, self.in_proj_weight, self.in_proj_bias)  # (B, T, 3E)
            return tuple(self._split_heads(t) for t in qkv.chunk(3, dim=-1))
        return self._project(query, 0), self._project(key, 1), self._project(value, 2)

    def _merge_masks(self, attn_mask, kpm, B, L, S, n_extra=0):
        """Additive masks -> one mask broadcastable to (B, H, L, S + n_extra), or None."""
        mask = None
        if attn_mask is not None:  # (L, S) or (B * H, L, S)
            mask = attn_mask.view(-1, self.num_heads, L, S) if attn_mask.dim() == 3 else attn_mask
        if kpm is not None:  # (B, S)
            kpm = kpm.view(B, 1, 1, S)
            mask = kpm if mask is None else mask + kpm
        if mask is not None and n_extra:
            mask = F.pad(mask, (0, n_extra))  # the extra keys are never masked
        return mask

    def _attend(self, q, k, v, mask=None):
        """SDPA on (B, H, *, hd) heads, then the output projection -> (B, L, E)."""
        dropout_p = self.dropout if self.training else 0.0
        return self.out_proj(self._merge_heads(F.scaled_dot_product_attention(q, k, v, mask, dropout_p)))

    def _packed_self_attention(self, x, index, B, T, mask):
        """Self-attention over real tokens only: x (N, E) holds the N real tokens of a (B, T) batch
        at flat positions `index`; projections skip the padding, SDPA sees the padded layout."""
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)  # (N, 3E)
        qkv = unpack_tokens(qkv, index, B, T)  # (B, T, 3E), zeros at padding
        q, k, v = (self._split_heads(t) for t in qkv.chunk(3, dim=-1))
        out = F.scaled_dot_product_attention(q, k, v, mask, self.dropout if self.training else 0.0)
        return self.out_proj(pack_tokens(self._merge_heads(out), index))  # (N, E)

    def _check_inputs(self, query, key, value, kpm, attn_mask):
        """Shape checks with messages that name the argument; returns whether input is batched."""
        if query.dim() not in (2, 3):
            raise ValueError(f"query must be 2-D (L, E) or 3-D, got shape {tuple(query.shape)}")
        for name, x, dim in (("query", query, self.embed_dim), ("key", key, self.kdim), ("value", value, self.vdim)):
            if x.dim() != query.dim():
                raise ValueError(f"{name} must be {query.dim()}-D like query, got shape {tuple(x.shape)}")
            if x.shape[-1] != dim:
                raise ValueError(f"{name}: expected last dimension {dim}, got shape {tuple(x.shape)}")
        batched = query.dim() == 3
        s = 1 if batched and self.batch_first else 0  # sequence dimension
        L, S = query.shape[s], key.shape[s]
        if value.shape[s] != S or (batched and not query.shape[1 - s] == key.shape[1 - s] == value.shape[1 - s]):
            raise ValueError(
                "query, key and value must share the batch size, and key and value the sequence "
                f"length; got shapes {tuple(query.shape)}, {tuple(key.shape)}, {tuple(value.shape)}"
                f" (batch_first={self.batch_first})"
            )
        B = query.shape[1 - s] if batched else 1
        if kpm is not None and tuple(kpm.shape) != ((B, S) if batched else (S,)):
            want = f"(batch, source length) = {(B, S)}" if batched else f"(source length,) = {(S,)}"
            raise ValueError(f"key_padding_mask: expected shape {want}, got {tuple(kpm.shape)}")
        if attn_mask is not None:
            shapes = [(L, S), (B * self.num_heads, L, S)]
            if tuple(attn_mask.shape) not in shapes:
                raise ValueError(
                    f"attn_mask: expected shape (L, S) = {shapes[0]} or (batch * num_heads, L, S) "
                    f"= {shapes[1]}, got {tuple(attn_mask.shape)}"
                )
        return batched


class TransformerEncoderLayer(nn.Module):
    """torch.nn.TransformerEncoderLayer: self-attention then feed-forward, post-LN by default."""

    def __init__(
        self,
        d_model,
        nhead,
        dim_feedforward=2048,
        dropout=0.1,
        activation=F.relu,
        layer_norm_eps=1e-5,
        batch_first=False,
        norm_first=False,
        bias=True,
        device=None,
        dtype=None,
    ):
        super().__init__()
        fk = {"device": device, "dtype": dtype}
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias, batch_first=batch_first, **fk)
        self.linear1 = nn.Linear(d_model, dim_feedforward, bias=bias, **fk)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model, bias=bias, **fk)
        self.norm_first = norm_first
        self.norm1 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **fk)
        self.norm2 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **fk)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.activation = _activation(activation)

    def forward(self, src, src_mask=None, src_key_padding_mask=None, is_causal=False):
        kpm = _canonical_mask(src_key_padding_mask, "src_key_padding_mask", src.dtype, src_mask, "src_mask")
        mask = _canonical_mask(src_mask, "src_mask", src.dtype)
        sa = partial(_self_attention, self.self_attn, mask=mask, kpm=kpm, is_causal=is_causal)
        return self._forward(src, sa)

    def _forward(self, x, sa):
        """The layer around a self-attention function `sa`; everything else is per position."""
        if self.norm_first:
            x = x + self.dropout1(sa(self.norm1(x)))
            return x + self._ff_block(self.norm2(x))
        x = self.norm1(x + self.dropout1(sa(x)))
        return self.norm2(x + self._ff_block(x))

    def _ff_block(self, x):
        return self.dropout2(self.linear2(self.dropout(self.activation(self.linear1(x)))))


def _self_attention(attn, x, mask, kpm, is_causal):
    return attn(x, x, x, attn_mask=mask, key_padding_mask=kpm, need_weights=False, is_causal=is_causal)[0]


class TransformerDecoderLayer(nn.Module):
    """torch.nn.TransformerDecoderLayer: self-attention, cross-attention, feed-forward."""

    def __init__(
        self,
        d_model,
        nhead,
        dim_feedforward=2048,
        dropout=0.1,
        activation=F.relu,
        layer_norm_eps=1e-5,
        batch_first=False,
        norm_first=False,
        bias=True,
        device=None,
        dtype=None,
    ):
        super().__init__()
        fk = {"device": device, "dtype": dtype}
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=batch_first, bias=bias, **fk)
        self.multihead_attn = MultiheadAttention(
            d_model, nhead, dropout=dropout, batch_first=batch_first, bias=bias, **fk
        )
        self.linear1 = nn.Linear(d_model, dim_feedforward, bias=bias, **fk)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model, bias=bias, **fk)
        self.norm_first = norm_first
        self.norm1 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **fk)
        self.norm2 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **fk)
        self.norm3 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **fk)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)
        self.activation = _activation(activation)

    def forward(
        self,
        tgt,
        memory,
        tgt_mask=None,
        memory_mask=None,
        tgt_key_padding_mask=None,
        memory_key_padding_mask=None,
        tgt_is_causal=False,
        memory_is_causal=False,
    ):
        sa = partial(_self_attention, self.self_attn, mask=tgt_mask, kpm=tgt_key_padding_mask, is_causal=tgt_is_causal)

        def ca(x):
            return self.multihead_attn(
                x,
                memory,
                memory,
                attn_mask=memory_mask,
                key_padding_mask=memory_key_padding_mask,
                is_causal=memory_is_causal,
                need_weights=False,
            )[0]

        return self._forward(tgt, sa, ca)

    def _forward(self, x, sa, ca):
        """The layer around a self-attention `sa` and a cross-attention `ca` function."""
        if self.norm_first:
            x = x + self.dropout1(sa(self.norm1(x)))
            x = x + self.dropout2(ca(self.norm2(x)))
            return x + self._ff_block(self.norm3(x))
        x = self.norm1(x + self.dropout1(sa(x)))
        x = self.norm2(x + self.dropout2(ca(x)))
        return self.norm3(x + self._ff_block(x))

    def _ff_block(self, x):
        return self.dropout3(self.linear2(self.dropout(self.activation(self.linear1(x)))))


class TransformerEncoder(nn.Module):
    """torch.nn.TransformerEncoder: `num_layers` copies of `encoder_layer`, then `norm`.

    With a bool `src_key_padding_mask` and `enable_nested_tensor=True` (the default), the layers
    run on the real tokens only, in training and inference: projections, feed-forward and norms
    skip the padding (torch.nn does the like only in inference, with nested tensors). Padded
    output positions then hold norm(0) (zeros without `norm`), as torch's fast path gives them.
    """

    def __init__(self, encoder_layer, num_layers, norm=None, enable_nested_tensor=True, mask_check=True):
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(encoder_layer) for _ in range(num_layers))
        self.num_layers = num_layers
        self.norm = norm
        self.enable_nested_tensor = self.use_nested_tensor = enable_nested_tensor  # as torch.nn
        self.mask_check = mask_check  # kept for API compatibility: we accept any padding layout

    def forward(self, src, mask=None, src_key_padding_mask=None, is_causal=None):
        first = self.layers[0]
        skip_padding = self._can_skip_padding(src, src_key_padding_mask)
        kpm = _canonical_mask(src_key_padding_mask, "src_key_padding_mask", src.dtype, mask, "mask")
        mask = _canonical_mask(mask, "mask", src.dtype)
        seq_dim = 1 if src.dim() == 3 and first.self_attn.batch_first else 0
        is_causal = _detect_is_causal_mask(mask, is_causal, src.shape[seq_dim])
        if skip_padding:
            x = self._forward_real_tokens(src, mask, src_key_padding_mask, kpm)
        else:
            x = src
            for layer in self.layers:
                x = layer(x, src_mask=mask, src_key_padding_mask=kpm, is_causal=is_causal)
        return x if self.norm is None else self.norm(x)

    def _can_skip_padding(self, src, kpm):
        return (
            self.use_nested_tensor
            and src.dim() == 3
            and kpm is not None
            and kpm.dtype == torch.bool
            and all(
                type(m) is TransformerEncoderLayer and not (m._forward_hooks or m._forward_pre_hooks)
                for m in self.layers
            )
            and bool(kpm.any())
        )

    def _forward_real_tokens(self, src, mask, bool_kpm, kpm):
        attn = self.layers[0].self_attn
        attn._check_inputs(src, src, src, kpm, mask)
        x = src if attn.batch_first else src.transpose(0, 1)  # (B, T, E)
        B, T, _ = x.shape
        index = (~bool_kpm).flatten().nonzero().squeeze(1)  # flat positions of the real tokens
        x = pack_tokens(x, index)  # (N, E)
        mask = attn._merge_masks(mask, kpm, B, T, T)  # shared by all layers
        for layer in self.layers:
            x = layer._forward(x, partial(layer.self_attn._packed_self_attention, index=index, B=B, T=T, mask=mask))
        x = unpack_tokens(x, index, B, T)  # (B, T, E), zeros at padding
        return x if attn.batch_first else x.transpose(0, 1)


class TransformerDecoder(nn.Module):
    """torch.nn.TransformerDecoder: `num_layers` copies of `decoder_layer`, then `norm`."""

    def __init__(self, decoder_layer, num_layers, norm=None):
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(decoder_layer) for _ in range(num_layers))
        self.num_layers = num_layers
        self.norm = norm

    def forward(
        self,
        tgt,
        memory,
        tgt_mask=None,
        memory_mask=None,
        tgt_key_padding_mask=None,
        memory_key_padding_mask=None,
        tgt_is_causal=None,
        memory_is_causal=False,
    ):
        seq_dim = 1 if tgt.dim() == 3 and self.layers[0].self_attn.batch_first else 0
        tgt_is_causal = _detect_is_causal_mask(tgt_mask, tgt_is_causal, tgt.shape[seq_dim])
        x = tgt
        for layer in self.layers:
            x = layer(
                x,
                memory,
                tgt_mask=tgt_mask,
                memory_mask=memory_mask,
                tgt_key_padding_mask=tgt_key_padding_mask,
                memory_key_padding_mask=memory_key_padding_mask,
                tgt_is_causal=tgt_is_causal,
                memory_is_causal=memory_is_causal,
            )
        return x if self.norm is None else self.norm(x)


class Transformer(nn.Module):
    """torch.nn.Transformer: encoder and decoder stacks, each ending in a LayerNorm (as torch.nn,
    even post-LN). forward(src, tgt, ...) -> decoder output (T, B, E), or (B, T, E) batch-first."""

    def __init__(
        self,
        d_model=512,
        nhead=8,
        num_encoder_layers=6,
        num_decoder_layers=6,
        dim_feedforward=2048,
        dropout=0.1,
        activation=F.relu,
        custom_encoder=None,
        custom_decoder=None,
        layer_norm_eps=1e-5,
        batch_first=False,
        norm_first=False,
        bias=True,
        device=None,
        dtype=None,
    ):
        super().__init__()
        fk = {"device": device, "dtype": dtype}
        args = (d_model, nhead, dim_feedforward, dropout, activation, layer_norm_eps, batch_first, norm_first, bias)
        if custom_encoder is not None:
            self.encoder = custom_encoder
        else:
            norm = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **fk)
            self.encoder = TransformerEncoder(TransformerEncoderLayer(*args, **fk), num_encoder_layers, norm)
        if custom_decoder is not None:
            self.decoder = custom_decoder
        else:
            norm = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **fk)
            self.decoder = TransformerDecoder(TransformerDecoderLayer(*args, **fk), num_decoder_layers, norm)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        self.d_model, self.nhead, self.batch_first = d_model, nhead, batch_first

    def forward(
        self,
        src,
        tgt,
        src_mask=None,
        tgt_mask=None,
        memory_mask=None,
        src_key_padding_mask=None,
        tgt_key_padding_mask=None,
        memory_key_padding_mask=None,
        src_is_causal=None,
        tgt_is_causal=None,
        memory_is_causal=False,
    ):
        b = 0 if self.batch_first else 1
        if src.dim() == 3 and src.shape[b] != tgt.shape[b]:
            raise ValueError(
                f"src and tgt must have the same batch size, got shapes {tuple(src.shape)} and {tuple(tgt.shape)}"
            )
        if src.shape[-1] != self.d_model or tgt.shape[-1] != self.d_model:
            raise ValueError(
                f"src and tgt: expected last dimension d_model={self.d_model}, "
                f"got shapes {tuple(src.shape)} and {tuple(tgt.shape)}"
            )
        memory = self.encoder(src, mask=src_mask, src_key_padding_mask=src_key_padding_mask, is_causal=src_is_causal)
        return self.decoder(
            tgt,
            memory,
            tgt_mask=tgt_mask,
            memory_mask=memory_mask,
            tgt_key_padding_mask=tgt_key_padding_mask,
            memory_key_padding_mask=memory_key_padding_mask,
            tgt_is_causal=tgt_is_causal,
            memory_is_causal=memory_is_causal,
        )

    @staticmethod
    def generate_square_subsequent_mask(sz, device=None, dtype=None):
        return generate_square_subsequent_mask(sz, device=device, dtype=dtype)


# ------------------------------------------------------------- the paper's translation model


@dataclass
class TransformerConfig:
    """The paper's model. Defaults are Transformer-base (Table 3): 65M parameters on WMT En-De."""

    src_vocab_size: int = 37000  # the paper's shared source-target BPE vocabulary
    tgt_vocab_size: int = 37000
    d_model: int = 512
    nhead: int = 8
    num_encoder_layers: int = 6
    num_decoder_layers: int = 6
    dim_feedforward: int = 2048
    dropout: float = 0.1  # on sublayer outputs and on embeddings + positions
    activation: str = "relu"
    norm_first: bool = False  # the paper is post-LN; pre-LN trains without warmup tricks
    max_len: int = 1024  # rows of the positional table: longest sequence the model accepts
    learned_pos: bool = False  # the paper found learned positions "nearly identical" (Table 3 E)
    share_embeddings: bool = True  # one embedding for source and target (needs a joint vocab)
    tie_output: bool = True  # pre-softmax projection = target embedding (Press & Wolf 2017)
    label_smoothing: float = 0.1
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2


PRESETS = {
    "transformer-base": {},
    "transformer-big": {"d_model": 1024, "nhead": 16, "dim_feedforward": 4096, "dropout": 0.3},
}


class PositionalEncoding(nn.Module):
    """Sinusoidal positions PE(p, 2i) = sin(p / 10000^(2i/d)), PE(p, 2i+1) = cos(...), or learned.

    forward(T, offset=0) -> (T, d_model), the rows for positions offset .. offset + T - 1.
    """

    def __init__(self, d_model, max_len=1024, learned=False):
        super().__init__()
        self.max_len = max_len
        if learned:
            self.table = nn.Embedding(max_len, d_model)
        else:
            pos = torch.arange(max_len, dtype=torch.float32)[:, None]  # (P, 1)
            freq = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
            pe = torch.zeros(max_len, d_model)
            pe[:, 0::2] = torch.sin(pos * freq)
            pe[:, 1::2] = torch.cos(pos * freq)[:, : d_model // 2]
            self.register_buffer("pe", pe, persistent=False)
            self.table = None

    def forward(self, T, offset=0):
        if offset + T > self.max_len:
            raise ValueError(f"sequence length {offset + T} exceeds the positional table (max_len={self.max_len})")
        if self.table is not None:
            return self.table.weight[offset : offset + T]
        return self.pe[offset : offset + T]


class Seq2SeqOutput(NamedTuple):
    logits: Tensor  # (B, T, V)
    loss: Tensor | None  # label-smoothed cross-entropy over non-pad labels, when labels are given


def label_smoothed_loss(logits, labels, pad_id, smoothing=0.1, reduction="mean"):
    """Cross-entropy with label smoothing over the labels that are not pad_id, in fp32:
    logits (B, T, V), labels (B, T) -> scalar (mean over tokens, or their sum)."""
    return F.cross_entropy(
        logits.flatten(0, 1).float(),
        labels.flatten(),
        ignore_index=pad_id,
        label_smoothing=smoothing,
        reduction=reduction,
    )


class Seq2SeqTransformer(nn.Module):
    """The paper's encoder-decoder for translation, on the modules above (batch-first).

    forward(src (B, S), tgt (B, T), labels (B, T) or None) -> Seq2SeqOutput(logits, loss), where
    tgt is the decoder input (BOS y1 .. yn) and labels the targets (y1 .. yn EOS); pad_id marks
    padding in all three. generate() decodes greedily or with beam search.
    """

    def __init__(self, config: TransformerConfig):
        super().__init__()
        c = self.config = config
        if c.share_embeddings and c.src_vocab_size != c.tgt_vocab_size:
            raise ValueError("share_embeddings needs src_vocab_size == tgt_vocab_size (a joint vocabulary)")
        self.src_embed = nn.Embedding(c.src_vocab_size, c.d_model, padding_idx=c.pad_id)
        self.tgt_embed = (
            self.src_embed if c.share_embeddings else nn.Embedding(c.tgt_vocab_size, c.d_model, padding_idx=c.pad_id)
        )
        self.pos = PositionalEncoding(c.d_model, c.max_len, c.learned_pos)
        self.dropout = nn.Dropout(c.dropout)
        args = (c.d_model, c.nhead, c.dim_feedforward, c.dropout, c.activation, 1e-5, True, c.norm_first)
        # Post-LN layers end in a norm already; pre-LN stacks need a final one.
        final_norm = nn.LayerNorm(c.d_model) if c.norm_first else None
        self.encoder = TransformerEncoder(
            TransformerEncoderLayer(*args), c.num_encoder_layers, copy.deepcopy(final_norm)
        )
        self.decoder = TransformerDecoder(TransformerDecoderLayer(*args), c.num_decoder_layers, final_norm)
        self.generator = nn.Linear(c.d_model, c.tgt_vocab_size, bias=False)
        for p in [*self.encoder.parameters(), *self.decoder.parameters(), self.generator.weight]:
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for emb in {self.src_embed, self.tgt_embed}:
            nn.init.normal_(emb.weight, std=c.d_model**-0.5)  # so that emb * sqrt(d) has unit scale
            nn.init.zeros_(emb.weight[c.pad_id])
        if c.tie_output:
            self.generator.weight = self.tgt_embed.weight

    def _embed(self, embedding, ids, offset=0):  # (B, T) -> (B, T, d)
        x = embedding(ids) * math.sqrt(self.config.d_model) + self.pos(ids.shape[1], offset)
        return self.dropout(x)

    def encode(self, src):
        """src (B, S) -> memory (B, S, d), src padding mask (B, S) with True at padding."""
        check_ids(src, "src", self.config.src_vocab_size)
        src_pad = src == self.config.pad_id
        return self.encoder(self._embed(self.src_embed, src), src_key_padding_mask=src_pad), src_pad

    def decode(self, tgt, memory, src_pad):
        """tgt (B, T) decoder input -> logits (B, T, V), each position seeing the ones before it."""
        check_ids(tgt, "tgt", self.config.tgt_vocab_size)
        x = self._embed(self.tgt_embed, tgt)
        causal = generate_square_subsequent_mask(tgt.shape[1], device=x.device, dtype=x.dtype)
        x = self.decoder(x, memory, tgt_mask=causal, memory_key_padding_mask=src_pad, tgt_is_causal=True)
        return self.generator(x)

    def forward(self, src, tgt, labels=None):
        logits = self.decode(tgt, *self.encode(src))
        loss = None
        if labels is not None:
            loss = label_smoothed_loss(logits, labels, self.config.pad_id, self.config.label_smoothing)
        return Seq2SeqOutput(logits, loss)

    # ------------------------------------------------------------------------------- decoding

    def _log_probs(self, memory, src_pad, L, use_cache):
        """log_probs(seqs, t, rows) for decoding's loops: the next token's log-probabilities (N, V)
        after seqs[:, :t], of L positions at most. With the cache (decoding.KVCache) each call runs
        the decoder on token t-1 only, reusing the keys and values of earlier steps and the
        memory's, computed once; without it, it reruns the decoder on the whole prefix."""
        cache, banned = None, [self.config.pad_id, self.config.bos_id]  # never generated
        if use_cache:
            d = self.decoder.layers[0].self_attn
            mem = [
                (layer.multihead_attn._project(memory, 1), layer.multihead_attn._project(memory, 2))
                for layer in self.decoder.layers
            ]
            cache = KVCache(len(mem), memory.shape[0], d.num_heads, L, d.head_dim, memory, mem)
            mem_mask = _canonical_mask(src_pad, "src_pad", memory.dtype)[:, None, None, :]  # (B, 1, 1, S)

        def log_probs(seqs, t, rows=None):
            if cache is None:
                logits = self.decode(seqs[:, :t], memory, src_pad)[:, -1]
            else:
                if rows is not None:  # beam search: row r continues row rows[r]
                    cache.reorder(rows)
                x = self._embed(self.tgt_embed, seqs[:, t - 1 : t], offset=t - 1)  # (B, 1, d)
                for layer, kv in zip(self.decoder.layers, cache.layers, strict=True):
                    sa = partial(_cached_self_attention, layer.self_attn, kv, t - 1)
                    x = layer._forward(x, sa, partial(_cached_cross_attention, layer.multihead_attn, kv, mem_mask))
                if self.decoder.norm is not None:
                    x = self.decoder.norm(x)
                logits = linear(x[:, -1], self.generator.weight)  # the orientation measured faster here
            logits[:, banned] = float("-inf")
            return logits.log_softmax(-1)  # (B, V)

        return log_probs

    def _max_len(self, src, max_len):
        if max_len is None:
            return min(src.shape[1] + 50, self.config.max_len - 1)
        if not 0 < max_len < self.config.max_len:
            raise ValueError(f"max_len must be in [1, {self.config.max_len - 1}] (the positional table), got {max_len}")
        return max_len

    @torch.no_grad()
    def generate(self, src, beam_size=1, length_penalty=0.6, max_len=None, use_cache=True):
        """src (B, S) -> tokens (B, T): the translation without BOS, ending in EOS then pad_id
        (or cut at max_len, default S + 50). beam_size=1 is greedy decoding."""
        if beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {beam_size}")
        if beam_size == 1:
            return self.greedy_decode(src, max_len, use_cache)
        return self.beam_search(src, beam_size, length_penalty, max_len, use_cache)

    @torch.no_grad()
    def greedy_decode(self, src, max_len=None, use_cache=True):
        c = self.config
        max_len = self._max_len(src, max_len)
        log_probs = self._log_probs(*self.encode(src), max_len + 1, use_cache)
        out = greedy_search(
            log_probs, lambda s: s.argmax(-1), src.shape[0], max_len + 1, c.bos_id, c.pad_id, c.eos_id, src.device
        )
        return _trim(out[:, 1:], c.pad_id)

    @torch.no_grad()
    def beam_search(self, src, beam_size=4, length_penalty=0.6, max_len=None, use_cache=True):
        """Beam search with the length penalty of Wu et al. (2016), as the paper uses it:
        hypotheses are ranked by log P(y) / lp(y), lp(y) = ((5 + |y|) / 6) ** length_penalty.

        decoding.beam_search with that convention: as in fairseq and HF, a hypothesis ends when
        EOS ranks among the top `beam_size` candidates of its sentence, and a sentence is done
        once `beam_size` hypotheses ended (so beam_size=1 is greedy). With a beam wider than all
        candidates, this is exhaustive search.
        """
        c, K = self.config, beam_size
        max_len = self._max_len(src, max_len)
        memory, src_pad = (x.repeat_interleave(K, 0) for x in self.encode(src))  # (B * K, S, ...)
        log_probs = self._log_probs(memory, src_pad, max_len + 1, use_cache)
        ids = c.bos_id, c.pad_id, c.eos_id
        out = beam_search(log_probs, src.shape[0], K, max_len + 1, *ids, length_penalty, True, src.device, gnmt=True)
        out, eos = out[:, 1:], out[:, 1:] == c.eos_id
        return _trim(out.masked_fill(eos.cumsum(1) - eos.long() > 0, c.pad_id), c.pad_id)  # pad after EOS


class TranslationModel(Seq2SeqTransformer):
    """The paper's model under the loop's contract (same weights and keys): label-smoothed loss
    summed over the target tokens."""

    def counts(self, batch):
        pad = self.config.pad_id
        targets = (batch["labels"] != pad).sum()
        return {"targets": targets, "tokens": targets + (batch["src"] != pad).sum()}

    def forward(self, src, tgt, labels=None):
        logits = super().forward(src, tgt).logits
        if labels is None:
            return Seq2SeqOutput(logits, None)
        loss = label_smoothed_loss(logits, labels, self.config.pad_id, self.config.label_smoothing, "sum")
        sums = Sums({"loss": (loss, "targets")}, {}, self.counts({"src": src, "labels": labels}))
        return TranslationOutput(logits, sums.loss(), sums)


class TranslationOutput(NamedTuple):
    logits: Tensor  # (B, T, V)
    loss: Tensor  # the mean over target tokens
    sums: Sums


def _trim(tokens, pad_id):  # drop the all-padding columns at the end
    return tokens[:, : max(int((tokens != pad_id).sum(1).max()), 1)]


def _cached_self_attention(attn, cache, pos, x):  # x (B, 1, d): the newest token sees every token so far
    q, k, v = attn._in_proj(x, x, x)  # (B, H, 1, hd)
    return attn._attend(q, *cache.update(k, v, pos))


def _cached_cross_attention(attn, cache, mem_mask, x):  # the memory's keys and values, computed once
    return attn._attend(attn._project(x, 0), *cache.memory, mem_mask)
