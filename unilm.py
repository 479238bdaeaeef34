"""UniLM (Dong et al. 2019, "Unified Language Model Pre-training for Natural Language Understanding
and Generation") on bert.py's network.

One BERT is a bidirectional encoder, a left-to-right or right-to-left language model, or a
sequence-to-sequence model, depending only on its self-attention mask: a (B, T, T) bool matrix,
True where query i may see key j (`mode_mask`). The weights are BERT's: any BERT checkpoint loads
(`UniLMForLM.from_pretrained`, a BertForMaskedLM; a checkpoint without the masked-LM transform,
such as all-MiniLM-L6-v2, starts it fresh and says so in a warning) and `save_pretrained` writes
a BertForMaskedLM folder that transformers loads.

Sequence-to-sequence fine-tuning follows microsoft/unilm's s2s-ft (`s2s_batch`): the input is
[source | target | pseudo target], the pseudo tokens ([MASK], or with keep_prob the target token
itself, with random_prob a random token) sharing the target's position ids; a target token sees
the source and the targets up to itself, a pseudo token the source, the targets before it and
itself; the loss is on the pseudo positions only (label-smoothed as s2s-ft's, per target token).
This file imports torch, the floor and bert.py (BERT's weights and layers).
"""

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from bert import BertForMaskedLM, masked_lm_logits
from contract import Sums, check_ids, masked_lm_sums, sequence_counts
from decoding import KVCache, beam_search, check_generation, constrain, greedy_search

MODES = ("bidirectional", "left-to-right", "right-to-left", "seq2seq")


def mode_mask(mode, input_ids, attention_mask=None, token_type_ids=None):
    """The (B, T, T) self-attention mask of a mode, True where query i may see key j: bidirectional
    (every real key), left-to-right (j <= i), right-to-left (j >= i), seq2seq (token_type_ids 0: the
    source, seen by every token; 1: the target, target i sees targets j <= i; the source never sees the
    target). Padded keys are never seen; every token sees itself (a padded query too, so that no row
    is empty)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    B, T = input_ids.shape
    i = torch.arange(T, device=input_ids.device)
    mask = torch.ones(B, T, T, dtype=torch.bool, device=input_ids.device)
    if mode == "left-to-right":
        mask &= i[None, :] <= i[:, None]
    elif mode == "right-to-left":
        mask &= i[None, :] >= i[:, None]
    elif mode == "seq2seq":
        if token_type_ids is None:
            raise ValueError("mode 'seq2seq' needs token_type_ids: 0 marks the source, 1 the target")
        source = token_type_ids == 0  # (B, T)
        mask = source[:, None, :] | (~source[:, :, None] & (i[None, :] <= i[:, None]))  # keys: source, or past target
    if attention_mask is not None:
        mask = mask & attention_mask.bool()[:, None, :]
    return mask | torch.eye(T, dtype=torch.bool, device=input_ids.device)


def smoothed_lm_sums(logits, targets, batch, smoothing, pad_id):
    """s2s-ft's label-smoothed loss as sums over the M labeled positions (logits (M, V), targets (M,)):
    KL(q || p) with q = 1 - smoothing on the target and smoothing / (V - 2) on every other token but
    the padding, summed, per target token ("masked"); token accuracy as a metric."""
    if smoothing == 0:
        return masked_lm_sums(logits, targets, None, batch)
    V, logp = logits.shape[-1], logits.float().log_softmax(-1)
    other = smoothing / (V - 2)
    gold = logp.gather(1, targets[:, None]).squeeze(1)
    rest = logp.sum(-1) - gold - logp[:, pad_id]
    entropy = (1 - smoothing) * torch.log(torch.tensor(1 - smoothing)) + smoothing * torch.log(torch.tensor(other))
    loss = (entropy - (1 - smoothing) * gold - other * rest).sum()
    correct = (logits.argmax(-1) == targets).sum()
    return Sums({"lm": (loss, "masked")}, {"lm_acc": (correct, "masked")}, sequence_counts(batch))


class UniLMOutput(NamedTuple):
    logits: Tensor  # (B, T, V), or (M, V) at the M labeled positions when labels are given
    loss: Tensor | None = None  # mean (smoothed) cross-entropy over the labeled positions
    sums: Sums | None = None


class UniLMForLM(BertForMaskedLM):
    """BERT with its masked-LM head under one of UniLM's masks.

    forward(input_ids, token_type_ids=None, attention_mask=None, mode="bidirectional", labels=None,
    position_ids=None, self_attention_mask=None) -> UniLMOutput. `mode` picks the mask (`mode_mask`);
    self_attention_mask (B, T, T) bool, when given, is used instead (the mixed pretraining batches
    and s2s-ft's layout carry their own). labels (B, T): the token to predict, -100 elsewhere.
    `label_smoothing` (0 by default; s2s-ft fine-tunes with 0.1) smooths the loss as s2s-ft does.
    """

    label_smoothing = 0.0

    def forward(
        self,
        input_ids,
        token_type_ids=None,
        attention_mask=None,
        mode="bidirectional",
        labels=None,
        position_ids=None,
        self_attention_mask=None,
    ):
        see = self_attention_mask
        if see is None:
            see = mode_mask(mode, input_ids, attention_mask, token_type_ids)
        hidden = self.bert(input_ids, attention_mask, token_type_ids, position_ids, self_attention_mask=see)[0]
        logits, targets = masked_lm_logits(self.bert, self.mlm, hidden, labels)  # (B, T, V), or (M, V) at labels
        if labels is None:
            return UniLMOutput(logits)
        batch = dict(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
        sums = smoothed_lm_sums(logits, targets, batch, self.label_smoothing, self.config.pad_token_id)
        return UniLMOutput(logits, sums.loss(), sums)

    counts = staticmethod(sequence_counts)

    @torch.no_grad()
    def generate(
        self,
        input_ids,
        attention_mask=None,
        mask_token_id=103,
        eos_token_id=102,
        max_new_tokens=32,
        num_beams=1,
        length_penalty=1.0,
        early_stopping=False,
        no_repeat_ngram_size=0,
        use_cache=True,
    ):
        """s2s-ft's decoding: input_ids (B, S) the sources as [CLS] source [SEP] (right-padded); at each
        step a [MASK] after the target so far (types 1, positions after the real source) predicts the
        next token, which then takes the [MASK]'s place. Greedy or beam search (decoding.py's, HF's
        length penalty and stopping rules, no repeated n-grams) -> (B, n) token ids, eos_token_id
        ([SEP]) ending each row, pad_token_id after it. With the cache, the source is encoded once and
        each step runs only the new token and the [MASK]; without it, the whole sequence (the same
        tokens: tested)."""
        check_ids(input_ids, "input_ids", self.config.vocab_size)
        check_generation(max_new_tokens, num_beams, early_stopping, False, 1.0, None, None)
        c, device = self.config, input_ids.device
        N, S = input_ids.shape[0] * num_beams, input_ids.shape[1]
        L = 1 + max_new_tokens  # decoding.py's rows: a start slot, then the tokens
        if c.max_position_embeddings < S + L:
            raise ValueError(f"a source of {S} tokens and {max_new_tokens} new ones exceed the position table")
        src = input_ids.repeat_interleave(num_beams, 0)
        real = (
            torch.ones_like(src) if attention_mask is None else attention_mask.repeat_interleave(num_beams, 0)
        ).bool()
        n = real.sum(1)  # real source tokens: the first target position
        W, bert = self.bert.embeddings.word.weight, self.bert
        cache = None
        if use_cache:
            heads, hd = c.num_attention_heads, c.hidden_size // c.num_attention_heads
            cache = KVCache(len(bert.layers), N, heads, S + L, hd, bert.embeddings.word.weight)
            x = bert.embeddings(src, torch.zeros_like(src))  # the source, once: it sees its real tokens
            eye = torch.eye(S, dtype=torch.bool, device=device)
            see = (real[:, None, :] | eye)[:, None]  # (N, 1, S, S)
            for layer, layer_cache in zip(bert.layers, cache, strict=True):
                x = layer_step(layer, x, layer_cache, 0, see)

        def log_probs(seqs, t, rows=None):  # seqs (N, L): the start slot, then y_0 .. y_{t-2}
            if rows is not None and cache is not None:
                cache.reorder(rows)
            mask_col = torch.full((N, 1), mask_token_id, device=device)
            targets = n[:, None] + torch.arange(t, device=device)  # positions of y_0 .. y_{t-2} and the [MASK]
            if cache is None:  # the whole sequence [source | y_0 .. y_{t-2} | MASK] under seq2seq's mask
                ids = torch.cat([src, seqs[:, 1:t], mask_col], 1)  # (N, S + t)
                types = torch.cat([torch.zeros_like(src), torch.ones_like(mask_col).expand(N, t)], 1)
                pos = torch.cat([torch.arange(S, device=device).expand(N, S), targets], 1)
                keep = torch.cat([real, torch.ones(N, t, dtype=torch.bool, device=device)], 1)
                see = mode_mask("seq2seq", ids, keep, types)
                h = self.bert(ids, keep.long(), types, pos, self_attention_mask=see)[0][:, -1]
            else:  # y_{t-2} (from t = 2) and the [MASK], at their cache slots S + t - q ..
                new = mask_col if t == 1 else torch.cat([seqs[:, t - 1 : t], mask_col], 1)  # (N, q)
                q = new.shape[1]
                at = S + t - q
                x = bert.embeddings(new, torch.ones_like(new), targets[:, t - q :])
                slots, queries = torch.arange(S + t, device=device), at + torch.arange(q, device=device)
                known = torch.cat([real, torch.ones(N, t, dtype=torch.bool, device=device)], 1)  # (N, S + t)
                see = known[:, None, :] & (slots[None, None, :] <= queries[None, :, None])  # (N, q, S + t)
                for layer, layer_cache in zip(bert.layers, cache, strict=True):
                    x = layer_step(layer, x, layer_cache, at, see[:, None])
                h = x[:, -1]
            scores = self.mlm.forward(h, W).float().log_softmax(-1)  # (N, V); .forward: torch's FLOP counter trips on a
            # Parameter passed to a module call under no_grad (bench.py counts FLOPs)
            return constrain(scores, seqs, t, L, no_repeat_ngram_size=no_repeat_ngram_size)

        ids = (mask_token_id, c.pad_token_id, eos_token_id)
        if num_beams == 1:
            out = greedy_search(log_probs, lambda scores: scores.argmax(-1), N, L, *ids, device)
        else:
            out = beam_search(log_probs, N // num_beams, num_beams, L, *ids, length_penalty, early_stopping, device)
        return out[:, 1:]


def layer_step(layer, x, cache, pos, see):
    """A BERT layer (layers.PostLNLayer, eval) on new tokens x (N, q, C) whose keys and values are written
    to the cache at pos..pos+q-1; see (N, 1, q, K) bool over the cache's first K = pos + q slots."""
    N, q, C = x.shape
    qkv = layer.qkv(x).view(N, q, 3, layer.n_head, -1).permute(2, 0, 3, 1, 4)  # 3 x (N, H, q, hd)
    k, v = cache.update(qkv[1], qkv[2], pos)  # (N, H, K, hd)
    y = F.scaled_dot_product_attention(qkv[0], k, v, see).transpose(1, 2).reshape(N, q, C)
    x = layer.attn_norm(x + layer.attn_out(y))
    return layer.ff_norm(x + layer.ff_out(layer.act(layer.ff_in(x))))


# ------------------------------------------------------------------- s2s-ft's fine-tuning batch


def s2s_batch(sources, targets, ids, vocab_size, keep_prob=0.1, random_prob=0.1, seeds=None, max_positions=None):
    """microsoft/unilm s2s-ft's pseudo-masked batch from token id lists (no special tokens): each source
    as [CLS] source [SEP], each target as target [SEP]; ids = (cls, sep, mask, pad). -> the forward's
    arguments: input_ids (B, S + 2 T) = [sources | targets | pseudo targets], each block padded;
    token_type_ids (0 source, 1 target and pseudo); position_ids (the source from 0, the target after
    the source's real tokens, a pseudo token at its target's position; 0 at padding); attention_mask;
    self_attention_mask (B, L, L): a source token sees the source; target token t sees the source and
    targets <= t; pseudo token t sees the source, targets < t and itself; labels: the target token at
    its pseudo position, -100 elsewhere. A pseudo token is [MASK], or with keep_prob the target
    token, with random_prob a random token (s2s-ft's defaults: 0.1 and 0.1), drawn with the pair's seed
    (seeds: one per pair, by default 0, 1, ...; a pair's batch row is the same whatever else is in the
    batch). max_positions: the model's position table, which a source and its target must fit together."""
    cls, sep, mask_id, pad = ids
    src = [[cls, *s, sep] for s in sources]
    tgt = [[*t, sep] for t in targets]
    if len(src) != len(tgt):
        raise ValueError(f"sources and targets must pair up: {len(src)} sources, {len(tgt)} targets")
    longest = max(len(s) + len(t) for s, t in zip(src, tgt, strict=True))
    if max_positions is not None and longest > max_positions:
        raise ValueError(f"a source and its target take {longest} positions; the position table allows {max_positions}")
    B, S, T = len(src), max(map(len, src)), max(map(len, tgt))
    L = S + 2 * T
    input_ids = torch.full((B, L), pad, dtype=torch.long)
    token_type_ids = torch.zeros(B, L, dtype=torch.long)
    token_type_ids[:, S:] = 1
    position_ids = torch.zeros(B, L, dtype=torch.long)
    attention_mask = torch.zeros(B, L, dtype=torch.long)
    labels = torch.full((B, L), -100, dtype=torch.long)
    for b, (s, t) in enumerate(zip(src, tgt, strict=True)):
        n, m, tt = len(s), len(t), torch.tensor(t)
        g = torch.Generator().manual_seed(b if seeds is None else seeds[b])
        u = torch.rand(m, generator=g)
        pseudo = torch.where(u < keep_prob, tt, torch.full_like(tt, mask_id))
        chance = (u >= keep_prob) & (u < keep_prob + random_prob)
        pseudo = torch.where(chance, torch.randint(0, vocab_size, (m,), generator=g), pseudo)
        input_ids[b, :n], input_ids[b, S : S + m], input_ids[b, S + T : S + T + m] = torch.tensor(s), tt, pseudo
        position_ids[b, :n] = torch.arange(n)
        position_ids[b, S : S + m] = position_ids[b, S + T : S + T + m] = torch.arange(n, n + m)
        attention_mask[b, :n] = attention_mask[b, S : S + m] = attention_mask[b, S + T : S + T + m] = 1
        labels[b, S + T : S + T + m] = tt
    self_attention_mask = pseudo_mask(S, T, attention_mask)
    return dict(
        input_ids=input_ids,
        token_type_ids=token_type_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        self_attention_mask=self_attention_mask,
        labels=labels,
    )


def pseudo_mask(S, T, attention_mask):
    """s2s-ft's (B, L, L) mask for the layout [source (S) | target (T) | pseudo (T)], attention_mask (B, L)
    marking real tokens: see s2s_batch. Padded queries see what a source token sees (no empty row)."""
    real = attention_mask.bool()
    L = S + 2 * T
    k = torch.arange(L)
    block = torch.where(k < S, 0, torch.where(k < S + T, 1, 2))  # 0 source, 1 target, 2 pseudo
    step = torch.where(block == 0, -1, (k - S) % T)  # a target's (and its pseudo's) index; -1 in the source
    q, key = (block[:, None], step[:, None]), (block[None, :], step[None, :])
    source_key = (key[0] == 0).expand(L, L)  # (L, L): query row, key column
    target_q = (q[0] == 1) & (key[0] == 1) & (key[1] <= q[1])
    pseudo_q = (q[0] == 2) & (((key[0] == 1) & (key[1] < q[1])) | (k[None, :] == k[:, None]))
    sees = source_key | target_q | pseudo_q
    return torch.where(real[:, :, None], sees[None], source_key[None]) & real[:, None, :]
