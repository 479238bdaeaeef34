"""GPT-1 (Radford et al. 2018) and GPT-2 (Radford et al. 2019), from scratch.

One decoder-only Transformer for both: GPT-2 normalizes before each sub-layer (pre-LN) and after
the last block (`ln_f`), GPT-1 after each residual sum (post-LN) with no final norm. Both tie
the language-model head to the token embeddings. Generation runs through a key/value cache
preallocated for the whole sequence (no re-allocation per token).

Checkpoints are read from and written to Hugging Face's format (`GPT2LMHeadModel`,
`OpenAIGPTLMHeadModel`) through an explicit key map; HF stores the projections as `Conv1D`
(weight shape (in, out), y = x W + b), so every projection matrix is transposed on the way in
and out. This file imports only torch and the floor (contract, decoding, hf_checkpoint, layers).
"""

import math
from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contract import Sums, check_ids
from decoding import KVCache, check_prompt, check_sampling, next_token
from hf_checkpoint import HFCheckpoint, HFKey, config_fields
from layers import ACTIVATIONS, Linear, linear

# ----------------------------------------------------------------------------------- config


@dataclass
class GPTConfig:
    """Field names follow HF's GPT2Config (GPT-1's `afn` maps to activation_function)."""

    vocab_size: int = 50257  # GPT-2's byte-level BPE (50,000 merges + 256 bytes + <|endoftext|>)
    n_positions: int = 1024  # the context length
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    n_inner: int | None = None  # None: 4 * n_embd
    activation_function: str = "gelu_new"  # the tanh approximation of GELU, as OpenAI's code
    resid_pdrop: float = 0.1
    embd_pdrop: float = 0.1
    attn_pdrop: float = 0.1
    layer_norm_epsilon: float = 1e-5
    initializer_range: float = 0.02
    model_type: str = "gpt2"  # "gpt2": pre-LN + final norm; "openai-gpt": post-LN, no final norm
    bos_token_id: int | None = 50256  # <|endoftext|>: GPT-2 starts and ends documents with it
    eos_token_id: int | None = 50256

    def __post_init__(self):
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if self.model_type not in ("gpt2", "openai-gpt"):
            raise ValueError(f"model_type must be 'gpt2' or 'openai-gpt', got {self.model_type!r}")
        if self.activation_function not in ACTIVATIONS:
            raise ValueError(f"activation_function must be one of {sorted(ACTIVATIONS)}")

    @property
    def pre_ln(self):
        return self.model_type == "gpt2"

    @classmethod
    def from_preset(cls, name, **overrides):
        if name not in PRESETS:
            raise ValueError(
                f"unknown arch {name!r} (a key of gpt.PRESETS, train.py's --arch): choose from {sorted(PRESETS)}"
            )
        return cls(**{**PRESETS[name], **overrides})

    @classmethod
    def from_hf(cls, hf: dict, **overrides):
        """From the dict of an HF config.json (GPT2Config or OpenAIGPTConfig)."""
        if hf.get("model_type") not in ("gpt2", "openai-gpt"):
            raise ValueError(f"config.json: model_type must be 'gpt2' or 'openai-gpt', got {hf.get('model_type')!r}")
        for flag in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn", "add_cross_attention"):
            if hf.get(flag):
                raise ValueError(f"config.json: {flag}=true is not supported")
        hf = {**hf, "activation_function": hf.get("afn", hf.get("activation_function", "gelu_new"))}
        if hf["model_type"] == "openai-gpt" and hf["activation_function"] == "gelu":
            hf["activation_function"] = "gelu_new"  # HF's OpenAI GPT maps "gelu" to the tanh form
        kw = config_fields(cls, hf)
        return cls(**{**kw, **overrides})

    def to_hf(self):
        hf = asdict(self)
        if self.model_type == "openai-gpt":
            hf["afn"] = "gelu" if hf.pop("activation_function") == "gelu_new" else self.activation_function
            hf.pop("bos_token_id"), hf.pop("eos_token_id")
            hf["architectures"] = ["OpenAIGPTLMHeadModel"]
        else:
            hf["architectures"] = ["GPT2LMHeadModel"]
        return hf


PRESETS = {
    "gpt2": {},  # 124M
    "gpt2-medium": dict(n_embd=1024, n_layer=24, n_head=16),  # 350M
    "gpt2-large": dict(n_embd=1280, n_layer=36, n_head=20),  # 774M
    "gpt2-xl": dict(n_embd=1600, n_layer=48, n_head=25),  # 1558M
    "openai-gpt": dict(  # GPT-1: 117M, BPE of 40,478 tokens, 512 positions, post-LN
        vocab_size=40478, n_positions=512, model_type="openai-gpt", bos_token_id=None, eos_token_id=None
    ),
    # nanoGPT's Tiny Shakespeare recipes (character level; vocab_size set from the data)
    "shakespeare-char-cpu": dict(
        vocab_size=65, n_positions=64, n_embd=128, n_layer=4, n_head=4, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0
    ),
    "shakespeare-char": dict(
        vocab_size=65, n_positions=256, n_embd=384, n_layer=6, n_head=6, resid_pdrop=0.2, embd_pdrop=0.2, attn_pdrop=0.2
    ),
}

# -------------------------------------------------------------------------------- the model


class CausalSelfAttention(nn.Module):
    def __init__(self, c: GPTConfig):
        super().__init__()
        self.n_head = c.n_head
        self.c_attn = Linear(c.n_embd, 3 * c.n_embd)  # query, key, value in one matmul
        self.c_proj = Linear(c.n_embd, c.n_embd)
        self.attn_pdrop = c.attn_pdrop
        self.resid_dropout = nn.Dropout(c.resid_pdrop)

    def forward(self, x, mask=None, cache=None, pos=0):
        """x (B, T, C). mask: None (causal) or (B, 1, T, S) bool, True where a query may look.
        cache: this layer's decoding.LayerCache, to write positions pos..pos+T-1 into and attend
        over 0..pos+T-1."""
        B, T, C = x.shape
        q, k, v = self.c_attn(x).view(B, T, 3, self.n_head, -1).permute(2, 0, 3, 1, 4)  # 3 x (B, H, T, hd)
        if cache is not None:
            k, v = cache.update(k, v, pos)
        p = self.attn_pdrop if self.training else 0.0
        if mask is None and (cache is None or pos == 0 or T == 1):  # a single new query sees every key
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=T > 1 and pos == 0)
        else:  # new queries see every cached key and the causal part of their own block
            if mask is None:
                mask = torch.ones(T, pos + T, dtype=torch.bool, device=x.device).tril(pos)
            y = F.scaled_dot_product_attention(q, k, v, mask, dropout_p=p)
        return self.resid_dropout(self.c_proj(y.transpose(1, 2).reshape(B, T, C)))


class MLP(nn.Module):
    def __init__(self, c: GPTConfig):
        super().__init__()
        self.c_fc = Linear(c.n_embd, c.n_inner or 4 * c.n_embd)
        self.c_proj = Linear(c.n_inner or 4 * c.n_embd, c.n_embd)
        self.act = ACTIVATIONS[c.activation_function]
        self.dropout = nn.Dropout(c.resid_pdrop)

    def forward(self, x):
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, c: GPTConfig):
        super().__init__()
        self.pre_ln = c.pre_ln
        self.ln_1 = nn.LayerNorm(c.n_embd, eps=c.layer_norm_epsilon)
        self.attn = CausalSelfAttention(c)
        self.ln_2 = nn.LayerNorm(c.n_embd, eps=c.layer_norm_epsilon)
        self.mlp = MLP(c)

    def forward(self, x, mask=None, cache=None, pos=0):
        if self.pre_ln:  # GPT-2
            x = x + self.attn(self.ln_1(x), mask, cache, pos)
            return x + self.mlp(self.ln_2(x))
        x = self.ln_1(x + self.attn(x, mask, cache, pos))  # GPT-1
        return self.ln_2(x + self.mlp(x))


class CausalLMOutput(NamedTuple):
    logits: Tensor  # (B, T, V)
    loss: Tensor | None = None  # mean cross-entropy of next-token prediction over labels != -100
    sums: Sums | None = None  # the same as a sum over the targets, for the training loop


class GPT(HFCheckpoint, nn.Module):
    """The decoder and its language-model head (tied to the token embeddings).

    forward(input_ids, labels=None, attention_mask=None, targets=None) -> CausalLMOutput.
    `labels` follow HF's convention (the model shifts them: labels = input_ids trains next-token
    prediction); `targets` nanoGPT's (already shifted: position t predicts targets[:, t]);
    -100 positions are ignored. `attention_mask` (B, T), 1 = real token, hides padding from the
    queries (right padding keeps positions). With labels or targets on the CPU in fp32, logits
    is a transposed view of the class-major product (`.reshape`, not `.view`, to flatten it).
    With labels or targets the output's `sums` hold the loss summed over the targets, and
    `GPT.counts(batch)` their number (the training loop's contract, contract.Sums).
    """

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = c = config
        self.wte = nn.Embedding(c.vocab_size, c.n_embd)
        self.wpe = nn.Embedding(c.n_positions, c.n_embd)
        self.drop = nn.Dropout(c.embd_pdrop)
        self.h = nn.ModuleList(Block(c) for _ in range(c.n_layer))
        self.ln_f = nn.LayerNorm(c.n_embd, eps=c.layer_norm_epsilon) if c.pre_ln else None
        self._init_weights()

    def _init_weights(self):
        """N(0, 0.02) everywhere; GPT-2 scales the projections into the residual stream by
        1/sqrt(2 n_layer) (two residual additions per block)."""
        c = self.config
        for name, p in self.named_parameters():
            if p.dim() == 1:
                nn.init.ones_(p) if ".ln_" in name or name.startswith("ln_f") else nn.init.zeros_(p)
            elif c.pre_ln and name.endswith("c_proj.weight"):
                nn.init.normal_(p, std=c.initializer_range / math.sqrt(2 * c.n_layer))
            else:
                nn.init.normal_(p, std=c.initializer_range)

    def forward(
        self, input_ids, labels=None, attention_mask=None, cache=None, pos=0, check=True, logits_to_keep=0, targets=None
    ):
        B, T = _check_ids(self.config, input_ids, pos) if check else input_ids.shape
        x = self.drop(self.wte(input_ids) + self.wpe(torch.arange(pos, pos + T, device=input_ids.device)))
        mask = None
        if attention_mask is not None:
            if tuple(attention_mask.shape) != (B, pos + T):
                raise ValueError(f"attention_mask must be (batch, length) = {(B, pos + T)}, got {attention_mask.shape}")
            causal = torch.ones(T, pos + T, dtype=torch.bool, device=x.device).tril(pos)
            mask = causal & attention_mask.bool()[:, None, None, :]  # (B, 1, T, S)
            mask = mask | ~mask.any(-1, keepdim=True)  # a query at padding that sees nothing: let it see all
        for i, block in enumerate(self.h):
            x = block(x, mask, None if cache is None else cache[i], pos)
        if labels is not None:
            if targets is not None:
                raise ValueError("give labels (HF's convention) or targets (shifted), not both")
            if tuple(labels.shape) != (B, T):
                raise ValueError(f"labels must have the shape of input_ids {(B, T)}, got {tuple(labels.shape)}")
            targets = F.pad(labels[:, 1:], (0, 1), value=-100)  # position t predicts token t + 1; the last, nothing
        elif targets is not None and tuple(targets.shape) != (B, T):
            raise ValueError(f"targets must have the shape of input_ids {(B, T)}, got {tuple(targets.shape)}")
        V = self.config.vocab_size
        if check and targets is not None and ((targets >= V) | (targets < -100)).any():  # else an index error inside
            name = "labels" if labels is not None else "targets"
            raise ValueError(f"{name} has ids outside [0, vocab_size={V}) (or -100: ignored)")
        if logits_to_keep:  # only the last positions' logits (generation needs the last one)
            if targets is not None:
                raise ValueError("logits_to_keep needs no labels/targets: the loss uses every position")
            x = x[:, -logits_to_keep:]
        if self.ln_f is not None:
            x = self.ln_f(x)
        if targets is None:
            return CausalLMOutput(linear(x, self.wte.weight))  # (B, T, V)
        if x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_autocast_enabled("cpu"):
            by_class = torch.mm(self.wte.weight, x.flatten(0, 1).t())  # (V, B*T): see linear
            counts = self.counts({"input_ids": input_ids, "targets": targets})
            loss = _ClassMajorCrossEntropy.apply(by_class, targets.flatten()) * counts["targets"]  # the sum
            logits = by_class.t().view(B, T, -1)  # a transposed view
            sums = Sums({"loss": (loss, "targets")}, {}, counts)
        else:
            logits = F.linear(x, self.wte.weight)
            sums = lm_sums(logits, targets)
        return CausalLMOutput(logits, sums.loss(), sums)

    @staticmethod
    def counts(batch):
        """What the loop divides by, from a batch alone: next-token targets (not -100), tokens."""
        targets = batch["targets"] if "targets" in batch else batch["labels"][:, 1:]
        return {"targets": (targets != -100).sum(), "tokens": batch["input_ids"].numel()}

    # ------------------------------------------------------------------------- generation

    def new_cache(self, batch, length, dtype=None, device=None):
        """Key/value buffers for `length` positions (decoding.KVCache), in the weights' dtype and device by default."""
        c, p = self.config, self.wte.weight
        like = torch.empty(0, dtype=dtype or p.dtype, device=device or p.device)
        return KVCache(c.n_layer, batch, c.n_head, length, c.n_embd // c.n_head, like)

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, use_cache=True, generator=None):
        """Continue the prompts idx (B, T) by max_new_tokens tokens -> (B, T + max_new_tokens).

        temperature 0 is greedy decoding; otherwise sampling from softmax(logits / temperature)
        restricted to the top_k most likely tokens and/or the smallest set whose probability
        reaches top_p. A prompt longer than the context is an error; once prompt + new tokens
        outgrow the context, each step sees only the last n_positions tokens (recomputed
        without the cache, as nanoGPT does)."""
        check_sampling(temperature, top_k, top_p)
        check_prompt(idx)
        ctx = self.config.n_positions
        _check_ids(self.config, idx, 0)
        B, T = idx.shape
        cache = self.new_cache(B, min(ctx, T + max_new_tokens)) if use_cache else None
        out = torch.empty(B, T + max_new_tokens, dtype=idx.dtype, device=idx.device)
        out[:, :T] = idx
        pos = 0  # tokens already in the cache
        for n in range(T, T + max_new_tokens):
            if cache is not None and n <= cache.length:
                logits = self(out[:, pos:n], cache=cache, pos=pos, check=False, logits_to_keep=1).logits[:, -1]
                pos = n
            else:  # no cache, or the context is full: the last ctx tokens from scratch
                logits = self(out[:, max(0, n - ctx) : n], check=False, logits_to_keep=1).logits[:, -1]
            out[:, n] = next_token(logits.float(), temperature, top_k, top_p, generator)
        return out

    # ------------------------------------------------------------------- HF checkpoints
    # (HFCheckpoint gives from_pretrained, save_pretrained, load_hf_state_dict and hf_state_dict)
    config_class = GPTConfig
    hf_ignored = (".attn.bias", ".attn.masked_bias", "position_ids")  # buffers
    hf_tied = {"lm_head.weight": "wte.weight"}  # GPT2LMHeadModel's head: our token embeddings

    def hf_keys(self):
        """{our key: HFKey(HF key, transposed)}: HF's Conv1D weights are (in, out)."""
        gpt2 = self.config.model_type == "gpt2"
        keys = {
            "wte.weight": "transformer." + ("wte.weight" if gpt2 else "tokens_embed.weight"),
            "wpe.weight": "transformer." + ("wpe.weight" if gpt2 else "positions_embed.weight"),
        }
        if gpt2:
            keys.update({"ln_f.weight": "transformer.ln_f.weight", "ln_f.bias": "transformer.ln_f.bias"})
        keys = {k: HFKey(v) for k, v in keys.items()}
        for i in range(self.config.n_layer):
            for ours, (hf, transposed) in HF_BLOCK_KEYS.items():
                keys[f"h.{i}.{ours}"] = HFKey(f"transformer.h.{i}.{hf}", transposed)
        return keys

    def hf_rename(self, sd):  # saved from GPT2Model: no "transformer." prefix
        return sd if any(k.startswith("transformer.") for k in sd) else {"transformer." + k: v for k, v in sd.items()}

    def hf_config(self):  # config.json's dict
        return self.config.to_hf()


HF_BLOCK_KEYS = {  # ours h.{i}.* -> (HF transformer.h.{i}.*, transposed: HF's Conv1D)
    "ln_1.weight": ("ln_1.weight", False),
    "ln_1.bias": ("ln_1.bias", False),
    "attn.c_attn.weight": ("attn.c_attn.weight", True),
    "attn.c_attn.bias": ("attn.c_attn.bias", False),
    "attn.c_proj.weight": ("attn.c_proj.weight", True),
    "attn.c_proj.bias": ("attn.c_proj.bias", False),
    "ln_2.weight": ("ln_2.weight", False),
    "ln_2.bias": ("ln_2.bias", False),
    "mlp.c_fc.weight": ("mlp.c_fc.weight", True),
    "mlp.c_fc.bias": ("mlp.c_fc.bias", False),
    "mlp.c_proj.weight": ("mlp.c_proj.weight", True),
    "mlp.c_proj.bias": ("mlp.c_proj.bias", False),
}


def lm_sums(logits, targets):
    """Next-token cross-entropy of logits (B, T, V) against shifted targets (B, T), summed: Sums."""
    loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-100, reduction="sum")
    return Sums({"loss": (loss, "targets")}, {}, GPT.counts({"input_ids": targets, "targets": targets}))


class _ClassMajorCrossEntropy(torch.autograd.Function):
    """F.cross_entropy(logits, targets, ignore_index=-100) for logits stored class-major, (V, N):
    the mean over targets != -100 of logsumexp - the target's logit. The forward keeps
    exp(logits - max) (V, N), from which the backward makes the gradient in one pass:
    (softmax - one-hot) / count."""

    @staticmethod
    def forward(ctx, by_class, targets):
        valid = targets != -100
        top = by_class.amax(0)  # (N,)
        e = (by_class - top).exp_()  # (V, N)
        total = e.sum(0)  # (N,)
        picked = by_class.gather(0, targets.clamp(min=0)[None])[0]  # (N,)
        count = valid.sum()
        ctx.save_for_backward(e, total, targets, count)
        return torch.where(valid, top + total.log() - picked, 0.0).sum() / count

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        e, total, targets, count = ctx.saved_tensors
        scale = torch.where(targets != -100, grad / count, 0.0)  # (N,)
        g = e.mul_(scale / total)  # (V, N) softmax * scale, in place (a second backward raises)
        g.scatter_add_(0, targets.clamp(min=0)[None], -scale[None])
        return g, None


def _check_ids(c, ids, pos):
    B, T = check_ids(ids, "input_ids", c.vocab_size)
    if pos + T > c.n_positions:
        raise ValueError(f"input of length {pos + T} is longer than the context (n_positions={c.n_positions})")
    return B, T
