"""Decoding, written once for every decoder: the sampling step (temperature, top-k, top-p, in
HF's warper order), HF's greedy loop and beam search (its stopping rules and length penalty), and
HF's logits processors (no repeated n-grams, min length, forced BOS / EOS), and the key/value
cache every decoder writes into. A model gives `log_probs(seqs, t, rows)`: the next token's
log-probabilities after seqs[:, :t] (its KVCache, if any, reordered by `rows` in beam search);
the loops own the sequences.

Imports only torch."""

import torch


def check_sampling(temperature, top_k, top_p, name=str):
    """next_token's arguments, checked before any decoding (every family's generate, and GPT's
    sampling CLI, whose `name` spells an argument as its flag)."""
    if not 0 <= temperature < float("inf"):  # NaN fails too
        raise ValueError(f"{name('temperature')} must be a finite number >= 0 (0 = greedy), got {temperature}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"{name('top_p')} must be in (0, 1], got {top_p}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"{name('top_k')} must be >= 1, got {top_k}")


def next_token(logits, temperature, top_k, top_p, generator=None):
    """logits (B, V) -> the next token (B,): argmax at temperature 0, else a sample from
    softmax(logits / temperature) within the top_k and the top_p nucleus (HF's warpers, in HF's
    order, so that one seed draws HF's tokens)."""
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits / temperature
    if top_k is not None:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        drop = probs.cumsum(-1) - probs >= top_p  # tokens after the nucleus is complete (the first always stays)
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(-1, order, drop), float("-inf"))
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(1)


def check_prompt(input_ids):
    """generate's input: at least one token per row (an encoder or a decoder has nothing to read from
    (B, 0)); the ids' range is the model's own check."""
    if input_ids.dim() != 2 or input_ids.shape[1] == 0:
        raise ValueError(f"input_ids must be (batch, length) with length >= 1, got shape {tuple(input_ids.shape)}")


def check_generation(max_new_tokens, num_beams, early_stopping, do_sample, temperature, top_k, top_p):
    """generate's arguments, checked before any work (t5.py's and bart.py's)."""
    check_sampling(temperature, top_k, top_p)
    if do_sample and num_beams > 1:
        raise ValueError("do_sample with num_beams > 1 (HF's beam sampling) is not supported: give one of them")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an integer >= 0, got {max_new_tokens!r}")
    if not isinstance(num_beams, int) or num_beams < 1:
        raise ValueError(f"num_beams must be an integer >= 1, got {num_beams!r}")
    if early_stopping not in (True, False, "never"):
        raise ValueError(f"early_stopping must be True, False or 'never', got {early_stopping!r}")


class LayerCache:
    """One decoder layer's keys and values: self-attention buffers k, v (B, H, L, hd) allocated
    once for L positions, and `memory`, the encoder output's keys and values (cross-attention,
    computed once; None in a decoder-only model)."""

    def __init__(self, k, v, memory=None):
        self.k, self.v, self.memory, self.n = k, v, memory, 0  # n: positions written

    def update(self, k, v, pos):
        """Write k, v (B, H, T, hd) at positions pos..pos+T-1 -> the keys and values of 0..pos+T-1."""
        T = k.shape[2]
        self.k[:, :, pos : pos + T], self.v[:, :, pos : pos + T] = k, v
        self.n = pos + T
        return self.k[:, :, : self.n], self.v[:, :, : self.n]

    def reorder(self, rows):  # beam search: row r continues row rows[r] (memory is the same within a sentence)
        for buffer in (self.k, self.v):
            written = buffer[:, :, : self.n]
            written.copy_(written.index_select(0, rows))


class KVCache:
    """The key/value cache of a decoder stack, one LayerCache per layer (cache[i]): every model
    (transformer.py, gpt.py, t5.py, bart.py) allocates it with its own head shape and writes it
    through LayerCache.update. memory: per layer, the encoder's (k, v), or None."""

    def __init__(self, n_layers, batch, heads, length, head_dim, like, memory=None):
        shape = (batch, heads, length, head_dim)
        mem = memory or [None] * n_layers
        self.layers = [LayerCache(like.new_empty(shape), like.new_empty(shape), mem[i]) for i in range(n_layers)]

    def __getitem__(self, i):
        return self.layers[i]

    @property
    def length(self):  # positions it holds
        return self.layers[0].k.shape[2]

    def reorder(self, rows):
        for layer in self.layers:
            layer.reorder(rows)


def greedy_search(log_probs, choose, N, L, start, pad, eos, device):
    """HF's greedy loop (or sampling, by `choose`: log-probabilities (N, V) -> tokens (N,)) over
    log_probs(seqs, t): L positions, the first the start token; finished rows get pad."""
    out = torch.full((N, L), pad, dtype=torch.long, device=device)
    out[:, 0] = start
    done = torch.zeros(N, dtype=torch.bool, device=device)
    for t in range(1, L):
        token = choose(log_probs(out, t))
        out[:, t] = token.masked_fill(done, pad)
        done |= token == (eos if eos is not None else -1)
        if done.all():
            return out[:, : t + 1]
    return out


def beam_search(log_probs, B, nb, L, start, pad, eos, length_penalty, early_stopping, device, gnmt=False):
    """HF's beam search: per row, the 2 * nb best continuations of the nb running beams; those
    ending in EOS (or at the length limit) among the first nb become finished hypotheses (the
    nb best kept), the best nb others run on. A row stops when its running beams cannot beat
    its finished ones (HF's heuristic: the best running score at the current length), or, with
    early_stopping=True, once nb hypotheses finished. log_probs(seqs (B * nb, L), t, rows): the
    next token's log-probabilities, rows (when not None) saying which row each continues (to
    reorder a cache). Hypotheses of t tokens are ranked by sum log p / lp(t): HF's lp(t) =
    t**length_penalty, or with gnmt=True Wu et al. (2016)'s ((5 + t) / 6)**length_penalty (the
    2017 paper's, which also stops a row once no running beam can beat its best finished one).
    Only real candidates finish (not the copies of the first beam that start at -1e9), so a beam
    wider than the candidates is an exhaustive search. -> (B, 1 + n), the start token first,
    HF's filler (pad, or eos where pad is 0) after EOS."""
    K, big = 2 * nb, -1.0e9
    eos = eos if eos is not None else -1
    fill = pad or eos  # HF fills with eos when pad is 0
    lp = (lambda t: ((5.0 + t) / 6.0) ** length_penalty) if gnmt else (lambda t: t**length_penalty)
    running = torch.full((B, nb, L), fill, dtype=torch.long, device=device)
    running[:, :, 0] = start
    run_scores = torch.zeros(B, nb, device=device)
    run_scores[:, 1:] = big  # the beams start identical: only the first one counts
    done, done_scores = running.clone(), torch.full((B, nb), big, device=device)
    done_flag, done_len = (
        torch.zeros(B, nb, dtype=torch.bool, device=device),
        torch.zeros(B, nb, dtype=torch.long, device=device),
    )
    improvable = torch.ones(B, 1, dtype=torch.bool, device=device)
    first_nb = (torch.arange(K, device=device) < nb)[None]
    rows = None
    pick = lambda x, i: x.gather(1, i.view(*i.shape, *[1] * (x.dim() - 2)).expand(*i.shape, *x.shape[2:]))  # noqa: E731
    for t in range(1, L):
        scores = log_probs(running.view(B * nb, L), t, rows)  # (B * nb, V)
        V = scores.shape[-1]
        top, index = (scores.view(B, nb, V) + run_scores[..., None]).view(B, nb * V).topk(K)  # (B, K)
        cand = pick(running, index // V).clone()  # (B, K, L)
        cand[:, :, t] = index % V
        hits = ((index % V == eos) | (t + 1 >= L)) & (top > big / 2)
        going = top + hits.float() * big
        keep = going.topk(nb).indices  # the best nb that go on
        running, run_scores, origin = pick(cand, keep), pick(going, keep), pick(index // V, keep)
        final = top / lp(t)
        final = final + (done_flag.all(-1, keepdim=True) & (early_stopping is True)).float() * big
        final = final + (~improvable).float() * big + (~(hits & first_nb)).float() * big
        merged = torch.cat([done_scores, final], 1).topk(nb).indices
        done, done_scores = (
            pick(torch.cat([done, cand], 1), merged),
            pick(torch.cat([done_scores, final], 1), merged),
        )
        done_flag = pick(torch.cat([done_flag, hits & first_nb], 1), merged)
        done_len = pick(torch.cat([done_len, torch.full_like(hits, t, dtype=torch.long)], 1), merged)
        rows = (origin + torch.arange(B, device=device)[:, None] * nb).flatten()
        length = (L - 1) if early_stopping == "never" and length_penalty > 0 else t
        worst = torch.where(done_flag, done_scores.min(1, keepdim=True).values, big)
        improvable = improvable & (run_scores[:, :1] / lp(length) > worst).any(-1, keepdim=True)
        if gnmt:  # the paper model's exact bound: scores only fall, and lp(L - 1) is the largest divisor
            improvable = improvable & ~(done_flag[:, :1] & (done_scores[:, :1] >= run_scores[:, :1] / lp(L - 1)))
        settled = ~improvable | (done_flag.all(-1, keepdim=True) & (early_stopping is True))  # nothing more to gain
        if settled.all() or hits.all():
            break
    return done[:, 0, : 1 + int(done_len[:, 0].max())]


def ban_repeated_ngrams(scores, seqs, n):
    """HF's no_repeat_ngram_size: -inf on each token that would repeat an n-gram of its row's sequence."""
    t = seqs.shape[1]
    if n <= 0 or t + 1 < n:
        return scores
    for r, row in enumerate(seqs.tolist()):
        prefix = tuple(row[t - n + 1 :])
        banned = [row[i + n - 1] for i in range(t - n + 1) if tuple(row[i : i + n - 1]) == prefix]
        scores[r, banned] = float("-inf")
    return scores


def constrain(
    scores, seqs, t, L, eos_token_id=None, min_length=0, no_repeat_ngram_size=0, forced_bos=None, forced_eos=None
):
    """HF's logits processors on the next token's log-probabilities (N, V) after seqs[:, :t], of L
    positions in all: EOS banned while the sequence (its start token included) is shorter than
    min_length, no repeated n-grams, and forced_bos / forced_eos the only choice at t = 1 / L - 1."""
    if t < min_length and eos_token_id is not None:
        scores[:, eos_token_id] = float("-inf")
    scores = ban_repeated_ngrams(scores, seqs[:, :t], no_repeat_ngram_size)
    for token, when in ((forced_bos, 1), (forced_eos, L - 1)):
        if token is not None and t == when:  # only `token` may come: log-probability 0
            scores = torch.full_like(scores, float("-inf")).index_fill_(
                1, torch.tensor([token], device=scores.device), 0.0
            )
    return scores
