"""Speed, memory and output differences: our models against their references, in one run.

    python bench.py                  # CPU fp32, a quick table: one row per family
    python bench.py --all            # every row (--only TEXT: the rows whose name holds TEXT)
    python bench.py --json out.json  # also machine-readable results
    python bench.py --device cuda    # fp32 and bf16 on a GPU (add --compile to compile both sides)

Each row builds our module and the reference with the same weights, times them interleaved
(median of --repeats), and reports: the largest output difference on real (non-padded)
positions, the time ratio ours/reference, our achieved GFLOP/s (the FLOPs our code executes,
counted by torch's FlopCounterMode, over our time) as a share of this device's matmul peak
measured in the same run, and the peak memory of one call for both. Generation rows add their floor
(the bytes they must read at the measured bandwidth) and, on a CPU with `ctranslate2` installed, its
fp32 and int8 times on the same weights and prompts. A row is a `Case`; later models add a function
returning their cases to CASES.
"""

import argparse
import contextlib
import dataclasses
import functools
import importlib.util
import json
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import transformer as T
from machine import environment, matmul_peak, memory_bandwidth, sync


@dataclass
class Case:
    name: str
    ours: nn.Module
    ref: nn.Module
    inputs: dict  # keyword arguments of both forwards
    train: bool  # forward + backward, else inference under torch.inference_mode()
    real: torch.Tensor | None = None  # bool, broadcastable to the output: positions that must agree
    output: Callable = lambda out: out  # the tensor to compare, from a forward's result
    quick: bool = False  # in the default table (one row per family); --all runs every row
    compare: bool = True  # False: two different models (a student and its teacher), timed, not compared
    floor_bytes: float | None = None  # generation: the bytes it must read at least (decoding_bytes)
    engine: Callable | None = None  # generation: (compute_type) -> the same call in CTranslate2 (ct2_generation)


# ------------------------------------------------------------------------------------ cases


def padding_mask(batch, length, min_len, device, seed=0):
    """(B, T) bool, True at padding: lengths uniform in [min_len, T], right-padded."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(min_len, length + 1, (batch,), generator=g)
    return (torch.arange(length)[None, :] >= lengths[:, None]).to(device)


def nbytes(*parts):
    """Bytes of the parameters and buffers of modules, a tensor shared between them counted once."""
    seen = {id(t): t.numel() * t.element_size() for m in parts for t in [*m.parameters(), *m.buffers()]}
    return sum(seen.values())


def decoding_bytes(weights, steps, start, kv_per_position, memory=0):
    """The bytes a cached decoding of `steps` tokens must read at least (the floor's numerator): at each step
    the weights it uses (`weights` bytes: the decoder and its output layer), the keys and values cached so
    far (start + t positions of kv_per_position bytes: all layers and rows) and, for an encoder-decoder,
    the encoder's keys and values (`memory` bytes per step). The prompt's own pass is left out."""
    return sum(weights + memory + (start + t) * kv_per_position for t in range(steps))


def transformer_cases(device, dtype, args):
    """Ours vs torch.nn: TransformerEncoder and Transformer, batch-first, post-LN (the default)."""
    d, h, ff, B, L = args.d_model, args.nhead, 4 * args.d_model, args.batch, args.seq
    cases = []

    def twin(ours_cls, ref_cls, *a, **kw):
        torch.manual_seed(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = ref_cls(*a, **kw).to(device, dtype)
        ours = ours_cls(*a, **kw).to(device, dtype)
        ours.load_state_dict(ref.state_dict())
        return ours, ref

    layer = (d, h, ff, 0.0, "relu", 1e-5, True)  # dropout 0: outputs comparable in training too
    enc_ours, enc_ref = twin(
        lambda *a: T.TransformerEncoder(T.TransformerEncoderLayer(*layer), args.layers, nn.LayerNorm(d)),
        lambda *a: nn.TransformerEncoder(nn.TransformerEncoderLayer(*layer), args.layers, nn.LayerNorm(d)),
    )
    x = torch.randn(B, L, d, device=device, dtype=dtype)
    pad = padding_mask(B, L, L // 8, device)
    real = ~pad[..., None]
    tag = f"{args.layers}L d{d} {B}x{L}"
    cases += [
        Case(f"TransformerEncoder {tag} train", enc_ours, enc_ref, {"src": x}, True),
        Case(
            f"TransformerEncoder {tag} train, padded",
            enc_ours,
            enc_ref,
            {"src": x, "src_key_padding_mask": pad},
            True,
            real,
        ),
        Case(
            f"TransformerEncoder {tag} infer, padded",
            enc_ours,
            enc_ref,
            {"src": x, "src_key_padding_mask": pad},
            False,
            real,
        ),
    ]
    tr_ours, tr_ref = twin(T.Transformer, nn.Transformer, d, h, args.layers, args.layers, ff, 0.0, batch_first=True)
    tgt = torch.randn(B, L, d, device=device, dtype=dtype)
    tgt_pad = padding_mask(B, L, L // 8, device, seed=1)
    masks = {
        "src_key_padding_mask": pad,
        "memory_key_padding_mask": pad,
        "tgt_key_padding_mask": tgt_pad,
        "tgt_mask": nn.Transformer.generate_square_subsequent_mask(L, device=device, dtype=dtype).isinf(),
        "tgt_is_causal": True,
    }
    tag = f"{args.layers}+{args.layers}L d{d} {B}x{L}"
    inputs = {"src": x, "tgt": tgt, **masks}
    cases += [
        Case(f"Transformer {tag} train, padded", tr_ours, tr_ref, inputs, True, ~tgt_pad[..., None], quick=True),
        Case(f"Transformer {tag} infer, padded", tr_ours, tr_ref, inputs, False, ~tgt_pad[..., None]),
    ]
    return cases


def bert_cases(device, dtype, args):
    """Ours vs HF transformers: BertForPreTraining and BertModel, same weights, dropout 0 (so that
    outputs compare in training too); a bert-small shape (4 layers x 512) by default."""
    import transformers

    import bert

    config = bert.BertConfig.from_preset(args.bert_preset, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    hf_config = transformers.BertConfig(**config.to_hf("BertForPreTraining"))
    torch.manual_seed(0)
    hf_pre = transformers.BertForPreTraining(hf_config).to(device, dtype)
    ours_pre = bert.BertForPreTraining(config).to(device, dtype)
    ours_pre.load_hf_state_dict(hf_pre.state_dict())
    hf_enc, ours_enc = hf_pre.bert, ours_pre.bert
    B, L = args.bert_batch, args.bert_seq
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, config.vocab_size, (B, L), generator=g)
    lengths = torch.randint(1, L + 1, (B,), generator=g)  # uniform: about half the tokens are padding
    padded = (torch.arange(L)[None] < lengths[:, None]).long()
    types = (torch.arange(L)[None] >= lengths[:, None] // 2).long() * padded
    masked = (torch.rand(B, L, generator=g) < 0.15) & (padded == 1)  # 15% of the real tokens
    labels = torch.where(masked, ids, -100)
    nsp = torch.randint(0, 2, (B,), generator=g)
    full = torch.ones_like(padded)
    to = lambda *ts: [t.to(device) for t in ts]  # noqa: E731
    ids, padded, types, labels, nsp, full = to(ids, padded, types, labels, nsp, full)
    real = (padded == 1)[..., None]
    tag = f"{args.bert_preset} {B}x{L}"
    pre = lambda mask: dict(  # noqa: E731
        input_ids=ids, attention_mask=mask, token_type_ids=types * mask, labels=labels, next_sentence_label=nsp
    )
    loss = lambda out: out.loss  # noqa: E731
    hidden = lambda out: out[0]  # noqa: E731
    enc_inputs = dict(input_ids=ids, attention_mask=padded, token_type_ids=types)
    # fine-tuning: a classifier on a length-grouped batch (GLUE's: 0 to 5 pads per row), same weights
    cls_config = dataclasses.replace(config, num_labels=2)
    hf_cls = transformers.BertForSequenceClassification(
        transformers.BertConfig(**cls_config.to_hf("BertForSequenceClassification"))
    ).to(device, dtype)
    ours_cls = bert.BertForSequenceClassification(cls_config).to(device, dtype)
    ours_cls.load_hf_state_dict(hf_cls.state_dict())
    short = torch.arange(B) % 6 if L >= 24 else torch.zeros(B, dtype=torch.long)  # 0 to 5 pads per row
    grouped = (torch.arange(L)[None] < L - short[:, None]).long().to(device)
    y = torch.randint(0, 2, (B,), generator=g).to(device)
    cls_inputs = dict(input_ids=ids * grouped, attention_mask=grouped, token_type_ids=types * grouped, labels=y)
    return [
        Case(f"BertForPreTraining {tag} train step", ours_pre, hf_pre, pre(full), True, output=loss),
        Case(
            f"BertForPreTraining {tag} train step, half padded", ours_pre, hf_pre, pre(padded), True, None, loss, True
        ),
        Case(f"BertModel {tag} train, half padded", ours_enc, hf_enc, enc_inputs, True, real, hidden),
        Case(f"BertModel {tag} infer, half padded", ours_enc, hf_enc, enc_inputs, False, real, hidden),
        Case(
            f"BertForSequenceClassification {tag} train step, length-grouped",
            ours_cls,
            hf_cls,
            cls_inputs,
            True,
            output=loss,
        ),
    ]


def albert_cases(device, dtype, args):
    """Ours vs HF transformers: AlbertForPreTraining (MLM + SOP) and its encoder, same weights, dropout 0;
    albert-base-v2's layer (768 wide, E = 128, one shared group) applied --albert-layers times (4 by default)."""
    import transformers

    import albert

    drop = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout_prob=0.0)
    config = albert.AlbertConfig.from_preset(args.albert_preset, num_hidden_layers=args.albert_layers, **drop)
    torch.manual_seed(0)
    hf = transformers.AlbertForPreTraining(transformers.AlbertConfig(**config.to_hf("x"))).to(device, dtype)
    ours = albert.AlbertForPreTraining(config).to(device, dtype)
    ours.load_hf_state_dict(hf.state_dict())
    B, L = args.bert_batch, args.bert_seq
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, config.vocab_size, (B, L), generator=g)
    lengths = torch.randint(1, L + 1, (B,), generator=g)  # uniform: about half the tokens are padding
    padded = (torch.arange(L)[None] < lengths[:, None]).long()
    types = (torch.arange(L)[None] >= lengths[:, None] // 2).long() * padded
    labels = torch.where((torch.rand(B, L, generator=g) < 0.15) & (padded == 1), ids, -100)
    sop = torch.randint(0, 2, (B,), generator=g)
    ids, padded, types, labels, sop = (t.to(device) for t in (ids, padded, types, labels, sop))
    full = torch.ones_like(padded)
    inputs = lambda mask: dict(  # noqa: E731
        input_ids=ids, attention_mask=mask, token_type_ids=types * mask, labels=labels, sentence_order_label=sop
    )
    tag, loss = f"{args.albert_preset} x{args.albert_layers} {B}x{L}", lambda out: out.loss  # noqa: E731
    enc, real = dict(input_ids=ids, attention_mask=padded, token_type_ids=types), (padded == 1)[..., None]
    return [
        Case(f"AlbertForPreTraining {tag} train step", ours, hf, inputs(full), True, output=loss),
        Case(f"AlbertForPreTraining {tag} train step, half padded", ours, hf, inputs(padded), True, None, loss, True),
        Case(f"AlbertModel {tag} infer, half padded", ours.albert, hf.albert, enc, False, real, lambda out: out[0]),
    ]


def tinybert_cases(device, dtype, args):
    """TinyBERT's speed claim at this machine's scale: the TinyBERT4 student (4 x 312, FFN 1200) against its
    teacher all-MiniLM-L6-v2's shape (6 x 384, FFN 1536), both our BertModel, 12 heads, random weights,
    inference on the same half-padded batch of the BERT rows' size (uniform lengths)."""
    import bert

    torch.manual_seed(0)
    student = bert.BertModel(bert.BertConfig.from_preset("tinybert-4l-312"), add_pooling_layer=False)
    teacher_shape = dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)
    teacher = bert.BertModel(bert.BertConfig(**teacher_shape), add_pooling_layer=False)
    B, L = args.bert_batch, args.bert_seq
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, L + 1, (B,), generator=g)
    inputs = dict(input_ids=torch.randint(1000, 30522, (B, L), generator=g).to(device))
    inputs["attention_mask"] = (torch.arange(L)[None] < lengths[:, None]).long().to(device)
    name = f"TinyBERT4 student vs its teacher's shape (MiniLM 6x384) {B}x{L} infer, half padded"
    ours, ref = student.to(device, dtype), teacher.to(device, dtype)
    return [Case(name, ours, ref, inputs, False, output=lambda out: out[0], compare=False)]


def unilm_cases(device, dtype, args):
    """UniLM's s2s-ft decoding (bert-mini: 4 layers x 256, an 8,000-token vocabulary, random weights) with the
    key/value cache against without it (the same tokens), and against transformer.py's translation model at
    the same width (2 + 2 layers x 256, its cached greedy decoding; two models: timed, not compared). No end
    token: every row decodes the full length."""
    import bert
    import unilm

    V, S, n = 8000, args.seq, args.gen_tokens
    torch.manual_seed(0)
    m = unilm.UniLMForLM(bert.BertConfig.from_preset("bert-mini", vocab_size=V)).to(device, dtype).eval()
    shape = dict(d_model=256, nhead=4, num_encoder_layers=2, num_decoder_layers=2, dim_feedforward=1024)
    translator = T.TranslationModel(T.TransformerConfig(src_vocab_size=V, tgt_vocab_size=V, eos_id=None, **shape))
    translator = translator.to(device, dtype).eval()
    g = torch.Generator().manual_seed(0)
    src = torch.randint(5, V, (4, S), generator=g).to(device)
    src[:, 0], src[:, -1] = 101, 102  # [CLS] ... [SEP]
    decode = lambda cache: lambda model, x: model.generate(x, None, 103, None, n, use_cache=cache)  # noqa: E731
    tag = f"4x{S} -> {n} tokens"
    kv = 2 * m.config.num_hidden_layers * m.config.hidden_size * next(m.parameters()).element_size() * 4  # 4 rows
    return [
        Case(
            f"UniLM (4L d256) greedy generation, cache vs none, {tag}",
            Generate(m, decode(True)),
            Generate(m, decode(False)),
            {"input_ids": src},
            False,
            floor_bytes=decoding_bytes(nbytes(m), n, S, kv),  # the source's keys and values are the cache's start
        ),
        Case(
            f"UniLM (4L d256) vs transformer.py (2+2L d256) greedy generation, cache, {tag}",
            Generate(m, decode(True)),
            Generate(translator, lambda model, x: model.generate(x, max_len=n)),
            {"input_ids": src},
            False,
            compare=False,
        ),
    ]


def xlnet_cases(device, dtype, args):
    """Ours vs HF's XLNetLMHeadModel (xlnet-mini: 4 layers x 256, XLNet's 32,000-token vocabulary, dropout 0,
    the same weights): a permutation-LM training step (xlnet.plm_example windows; the tokens before them
    encoded as memory by each side's transformer, tasks.HFWithMemory for HF) and greedy generation with
    memory (HF's schedule on both sides, the full length)."""
    import numpy as np
    import transformers

    import tasks
    import xlnet

    config = xlnet.XLNetConfig.from_preset("xlnet-mini", dropout=0.0)
    torch.manual_seed(0)
    hf = transformers.XLNetLMHeadModel(transformers.XLNetConfig(**config.to_hf("XLNetLMHeadModel"))).to(device, dtype)
    ours = xlnet.XLNetLMHeadModel(config).to(device, dtype)
    ours.load_hf_state_dict(hf.state_dict())
    B, T, V = args.bert_batch, args.bert_seq, config.vocab_size
    rng, g = np.random.default_rng(0), torch.Generator().manual_seed(0)
    rows = [
        xlnet.plm_example(torch.randint(6, V, (T,), generator=g), T // 2, max(1, T // 6), T // 2, rng) for _ in range(B)
    ]
    x = {k: torch.stack([r[k] for r in rows]).to(device) for k in rows[0]}
    x["mem_ids"] = torch.randint(6, V, (B, T // 2), generator=g).to(device)
    n, prompt = args.gen_tokens, torch.randint(6, V, (1, 16), generator=g).to(device)
    ours.config.eos_token_id = hf.generation_config.eos_token_id = None  # the full length on both sides
    tag = f"(4L d256) {B}x{T}, memory {T // 2}"
    return [
        Case(
            f"XLNetLMHeadModel {tag} permutation-LM train step",
            ours,
            tasks.HFWithMemory(hf),
            x,
            True,
            output=lambda o: o.loss,
        ),
        Case(
            f"XLNet (4L d256) greedy generation with memory, 16+{n} tokens",
            Generate(ours, lambda m, p: m.generate(p, n)),
            Generate(hf, lambda m, p: m.generate(p, max_new_tokens=n, min_new_tokens=n, do_sample=False)),
            {"input_ids": prompt},
            False,
        ),
    ]


def ct2_generation(hf, prompt, mask, n, beams, compute_type):
    """The same greedy or beam generation in CTranslate2 (a reference engine, like HF; optional) at
    compute_type ("float32", "int8"): HF's model saved with a tokenizer whose token i is "t<i>"
    (CTranslate2 reads tokens), converted -> a function returning the new tokens' ids (B, n)."""
    import tempfile

    import ctranslate2
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast
    from transformers.utils import logging

    logging.disable_progress_bar()  # saving and converting: no bars between the rows

    words = Tokenizer(models.WordLevel({f"t{i}": i for i in range(hf.config.vocab_size)}, unk_token="t0"))
    last = hf.config.vocab_size - 1  # an end token where the row has none (CTranslate2 needs one; min_length masks it)
    given = {k: getattr(hf.config, f"{k}_token_id", None) for k in ("bos", "eos", "pad", "unk")}
    special = {f"{k}_token": f"t{last if i is None or i > last else i}" for k, i in given.items()}
    seq2seq, kw = hf.config.is_encoder_decoder, dict(device="cpu", compute_type=compute_type)
    with tempfile.TemporaryDirectory(prefix="bench-ct2-") as folder:  # read into memory, then deleted
        hf.save_pretrained(folder)
        if hf.config.model_type == "bart":  # a field transformers 5 no longer writes and the converter reads
            config = json.loads((Path(folder) / "config.json").read_text())
            (Path(folder) / "config.json").write_text(json.dumps(config | {"normalize_before": False}))
        PreTrainedTokenizerFast(tokenizer_object=words, **special).save_pretrained(folder)
        ctranslate2.converters.TransformersConverter(folder).convert(f"{folder}/ct2", quantization=compute_type)
        engine = ctranslate2.Translator if seq2seq else ctranslate2.Generator
        model = engine(f"{folder}/ct2", **kw, intra_threads=torch.get_num_threads())
    pairs = zip(prompt.tolist(), mask.tolist(), strict=True)
    rows = [[f"t{i}" for i, keep in zip(r, m, strict=True) if keep] for r, m in pairs]
    ids = lambda hyps: [[int(t[1:]) for t in h] for h in hyps]  # noqa: E731
    if seq2seq:
        opts = dict(beam_size=beams, max_decoding_length=n, min_decoding_length=n)
        if (bos := hf.generation_config.forced_bos_token_id) is not None:  # BART's first token, as HF forces it
            opts["target_prefix"] = [[f"t{bos}"]] * len(rows)
        return lambda: ids(r.hypotheses[0] for r in model.translate_batch(rows, **opts))
    opts = dict(max_length=n, min_length=n, sampling_topk=1, beam_size=beams, include_prompt_in_result=False)
    return lambda: ids(r.sequences[0] for r in model.generate_batch(rows, **opts))


class Generate(nn.Module):
    """A model's generate() as a forward, so that a generation case times like any other."""

    def __init__(self, model, generate):
        super().__init__()
        self.model, self.generate = model, generate

    def forward(self, input_ids):
        return self.generate(self.model, input_ids)


def gpt_cases(device, dtype, args):
    """Ours vs HF GPT2LMHeadModel: a training step (next-token loss) and greedy generation with
    the key/value cache, same weights, dropout 0; GPT-2's vocabulary, a smaller depth and width."""
    import transformers

    import gpt

    d, L = args.gpt_d, args.gpt_layers
    zero = dict(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    # no end-of-text token: HF's generate would stop at it (ours runs the requested length)
    config = gpt.GPTConfig.from_preset("gpt2", n_embd=d, n_layer=L, n_head=d // 64, eos_token_id=None, **zero)
    torch.manual_seed(0)
    ours = gpt.GPT(config).to(device, dtype)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(**config.to_hf())).to(device, dtype)
    hf.loss_type = "ForCausalLM"  # its default, named: HF otherwise notes that None is unrecognized
    hf.load_state_dict(ours.hf_state_dict(), strict=False)  # lm_head is tied to wte
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, config.vocab_size, (args.gpt_batch, args.gpt_seq), generator=g).to(device)
    prompt = ids[:1, :16]
    n = args.gen_tokens
    ours_gen = Generate(ours, lambda m, x: m.generate(x, n, temperature=0))
    hf_gen = Generate(
        hf, lambda m, x: m.generate(x, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0)
    )
    # the Tiny Shakespeare shape (4 layers x 128, 65 characters): per-token overhead, not weights, dominates
    small = gpt.GPTConfig.from_preset("shakespeare-char-cpu", bos_token_id=None, eos_token_id=None)
    ours_small = gpt.GPT(small).to(device, dtype)
    hf_small = transformers.GPT2LMHeadModel(transformers.GPT2Config(**small.to_hf())).to(device, dtype)
    hf_small.load_state_dict(ours_small.hf_state_dict(), strict=False)
    m = min(n, small.n_positions - 8)
    small_prompt = torch.randint(0, small.vocab_size, (1, 8), generator=g).to(device)
    tag = f"{L}L d{d}"

    def floor(model, c, start, steps):  # blocks and the tied head each step; one row's keys and values
        kv = 2 * c.n_layer * c.n_embd * model.wte.weight.element_size()
        return decoding_bytes(nbytes(*model.h, model.wte, *([model.ln_f] if model.ln_f else [])), steps, start, kv)

    return [
        Case(
            f"GPT (Shakespeare 4L d128) greedy generation, cache, 8+{m} tokens",
            Generate(ours_small, lambda model, x: model.generate(x, m, temperature=0)),
            Generate(hf_small, lambda model, x: model.generate(x, max_new_tokens=m, do_sample=False, pad_token_id=0)),
            {"input_ids": small_prompt},
            False,
            floor_bytes=floor(ours_small, small, 8, m),
        ),
        Case(
            f"GPT-2 {tag} {args.gpt_batch}x{args.gpt_seq} train step",
            ours,
            hf,
            {"input_ids": ids, "labels": ids},
            True,
            output=lambda out: out.loss,
            quick=True,
        ),
        Case(
            f"GPT-2 {tag} greedy generation, cache, 16+{n} tokens",
            ours_gen,
            hf_gen,
            {"input_ids": prompt},
            False,
            floor_bytes=floor(ours, config, 16, n),
            engine=functools.partial(ct2_generation, hf, prompt, torch.ones_like(prompt), n, 1),
        ),
    ]


def seq2seq_cases(family, ours, hf, vocab_size, device, args, decoder, hf_kw=None):
    """An encoder-decoder pair with the same weights: a training step on padded inputs (lengths
    uniform in [S/2, S]), cached greedy and beam-4 generation from 4 prompts (HF's generate with
    hf_kw too: the settings that make it do what ours does). decoder: (the bytes of the decoder and
    output layer, its layers, the width of its keys and values) for the generation rows' floor."""
    g = torch.Generator().manual_seed(0)
    B, S, T = args.batch, args.seq * 2, args.seq // 2  # inputs 128, targets 32 by default
    ids = torch.randint(3, vocab_size, (B, S), generator=g).to(device)
    mask = (~padding_mask(B, S, S // 2, device)).long()
    labels = torch.randint(3, vocab_size, (B, T), generator=g).to(device)
    n, prompt, prompt_mask, hf_kw = args.gen_tokens, ids[:4], mask[:4], dict(do_sample=False) | (hf_kw or {})

    def pair(**kw):
        return (
            Generate(ours, lambda m, x: m.generate(x, prompt_mask, max_new_tokens=n, **kw)),
            Generate(
                hf, lambda m, x: m.generate(input_ids=x, attention_mask=prompt_mask, max_new_tokens=n, **kw, **hf_kw)
            ),
        )

    inputs = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    weights, layers, width = decoder
    kv = 2 * layers * width * next(ours.parameters()).element_size()  # one row's keys and values, a position
    memory = kv * 4 * S  # the 4 sources' encoder keys and values, read at every step (shared by the beams)
    return [
        Case(
            f"{family}, {B}x{S} -> {T} train step, padded", ours, hf, inputs, True, output=lambda o: o.loss, quick=True
        ),
        Case(
            f"{family} greedy generation, cache, 4x{S} -> {n} tokens",
            *pair(),
            {"input_ids": prompt},
            False,
            floor_bytes=decoding_bytes(weights, n, 1, 4 * kv, memory),
            engine=functools.partial(ct2_generation, hf, prompt, prompt_mask, n, 1),
        ),
        Case(
            f"{family} beam-4 generation, cache, 4x{S} -> {n} tokens",
            *pair(num_beams=4),
            {"input_ids": prompt},
            False,
            floor_bytes=decoding_bytes(weights, n, 1, 16 * kv, memory),
            engine=functools.partial(ct2_generation, hf, prompt, prompt_mask, n, 4),
        ),
    ]


def t5_cases(device, dtype, args):
    """Ours vs HF T5ForConditionalGeneration (same weights, dropout 0): --t5-preset's shape and
    vocabulary, --t5-layers deep, no EOS (every row runs the requested length)."""
    import transformers

    import t5

    L, name = args.t5_layers, args.t5_preset
    config = t5.T5Config.from_preset(name, num_layers=L, dropout_rate=0.0, eos_token_id=None)
    torch.manual_seed(0)
    ours = t5.T5ForConditionalGeneration(config).to(device, dtype)
    hf = transformers.T5ForConditionalGeneration(transformers.T5Config(**config.to_hf())).to(device, dtype)
    hf.loss_type = "ForMaskedLM"  # its default (a plain cross-entropy), named: HF otherwise notes None
    hf.load_state_dict(ours.hf_state_dict(), strict=False)  # the tied head and embed_tokens are shared.weight
    head = [ours.shared] if config.tie_word_embeddings else [ours.lm_head]
    decoder = (nbytes(ours.decoder, *head), L, config.num_heads * config.d_kv)
    return seq2seq_cases(f"T5 ({name} {L}L)", ours, hf, config.vocab_size, device, args, decoder)


def bart_cases(device, dtype, args):
    """Ours vs HF BartForConditionalGeneration (same weights, dropout 0): --bart-preset's shape and
    vocabulary, --bart-layers deep (encoder and decoder each), BART's generation settings on both
    sides (forced EOS at the limit; bart-base's forced BOS)."""
    import transformers

    import bart

    L, name = args.bart_layers, args.bart_preset
    zero = dict(dropout=0.0, attention_dropout=0.0, activation_dropout=0.0)
    config = bart.BartConfig.from_preset(name, encoder_layers=L, decoder_layers=L, **zero)
    torch.manual_seed(0)
    ours = bart.BartForConditionalGeneration(config).to(device, dtype)
    hf = transformers.BartForConditionalGeneration(transformers.BartConfig(**config.to_hf())).to(device, dtype)
    hf.loss_type = "ForMaskedLM"
    hf.load_state_dict(ours.hf_state_dict(), strict=False)  # the tied head and embed_tokens are shared.weight
    for k in ("forced_bos_token_id", "forced_eos_token_id"):  # HF's generation config does not read them
        setattr(hf.generation_config, k, getattr(config, k))
    decoder = (nbytes(ours.model.decoder, ours.model.shared) + 4 * config.vocab_size, L, config.d_model)
    return seq2seq_cases(f"BART ({name} {L}+{L}L)", ours, hf, config.vocab_size, device, args, decoder)


CASES = [
    transformer_cases,
    bert_cases,
    albert_cases,
    tinybert_cases,
    unilm_cases,
    xlnet_cases,
    gpt_cases,
    t5_cases,
    bart_cases,
]


# ------------------------------------------------------------------------------- measuring


def make_step(model, case):
    """A function running one forward (and backward) of `model` on the case's inputs."""
    model.train(case.train)
    if not case.train:

        def infer():
            with torch.inference_mode():
                return case.output(model(**case.inputs))

        return infer
    out = case.output(model(**case.inputs))
    weight = torch.randn_like(out) * (1 if case.real is None else case.real)  # loss sees real positions

    def train():
        for p in model.parameters():
            p.grad = None
        out = case.output(model(**case.inputs))
        (out * weight).sum().backward()
        return out

    return train


def time_interleaved(fns, device, repeats, warmup=2):
    """Median seconds per call of each function, timed in alternating order."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    times = [[] for _ in fns]
    for r in range(repeats):
        order = range(len(fns)) if r % 2 == 0 else reversed(range(len(fns)))
        for i in order:
            sync(device)
            t0 = time.perf_counter()
            fns[i]()
            sync(device)
            times[i].append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def peak_memory(fn, device, model=None):
    """Peak bytes allocated during one call above what was allocated before it, starting with the
    model's gradients freed: activations, workspace and gradients."""
    if model is not None:
        model.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    # CPU: replay the allocator's trace recorded by the profiler and take its running maximum.
    with (
        quiet_stderr(),
        torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof,
    ):
        fn()
    events = sorted(
        (e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"), key=lambda e: e.start_ns()
    )
    current = peak = 0
    for e in events:
        current += e.nbytes()
        peak = max(peak, current)
    return peak


@contextlib.contextmanager
def quiet_stderr():
    """The profiler's C++ side prints "USDT ... profiler_start/stop" on file descriptor 2: hidden."""
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved), os.close(null)


def count_flops(fn):
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def run_case(case, device, dtype, args, peak):
    step_ours, step_ref = make_step(case.ours, case), make_step(case.ref, case)
    if args.compile:
        step_ours, step_ref = torch.compile(step_ours), torch.compile(step_ref)
    out_ours, out_ref = step_ours(), step_ref()
    diff = None  # two different models: nothing to compare (JSON null, "-" in the table)
    if case.compare:
        real = torch.ones_like(out_ours, dtype=torch.bool) if case.real is None else case.real.expand_as(out_ours)
        diff = (out_ours.float() - out_ref.float())[real].abs().max().item()
    engines = {}  # CTranslate2's fp32 and int8 runs of a generation row, when it is installed (CPU)
    if case.engine and device.type == "cpu" and dtype == torch.float32 and importlib.util.find_spec("ctranslate2"):
        engines = {ct: case.engine(ct) for ct in ("float32", "int8")}
    t_ours, t_ref, *t_engines = time_interleaved([step_ours, step_ref, *engines.values()], device, args.repeats)
    extra = {}
    for (ct, engine), t in zip(engines.items(), t_engines, strict=True):  # time, and tokens equal to ours
        # our new tokens follow the decoder's start token or the prompt; ours may end early (EOS)
        skip = 1 if case.ref.model.config.is_encoder_decoder else case.inputs["input_ids"].shape[1]
        theirs, new = torch.tensor(engine()), out_ours[:, skip:].cpu()
        k = min(theirs.shape[1], new.shape[1])
        extra |= {f"ct2_{ct}_ms": 1e3 * t, f"ct2_{ct}_same_tokens": (theirs[:, :k] == new[:, :k]).float().mean().item()}
    flops = count_flops(step_ours)
    mem_ours, mem_ref = peak_memory(step_ours, device, case.ours), peak_memory(step_ref, device, case.ref)
    floor = None  # generation: the bytes it must read at the measured bandwidth, or its FLOPs at the peak
    if case.floor_bytes:
        floor = max(case.floor_bytes / memory_bandwidth(device), flops / peak)
    return {
        "case": case.name,
        "dtype": str(dtype).replace("torch.", ""),
        "max_abs_diff": diff,
        "ours_ms": 1e3 * t_ours,
        "ref_ms": 1e3 * t_ref,
        "time_ratio": t_ours / t_ref,
        "gflops_ours": flops / t_ours / 1e9,
        "peak_fraction": flops / t_ours / peak,
        "mem_ours_mib": mem_ours / 2**20,
        "mem_ref_mib": mem_ref / 2**20,
        "mem_ratio": mem_ours / max(mem_ref, 1),
        "floor_ms": floor and 1e3 * floor,
        "ours_floor": floor and t_ours / floor,
        "ref_floor": floor and t_ref / floor,
    } | extra


def markdown(rows, peaks, bandwidth=None):
    head = (
        "| case | dtype | max abs diff | ours ms | ref ms | ours/ref | GFLOP/s ours | % of peak "
        "| peak MiB ours | ref | mem ours/ref | floor ms: ours x, ref x |\n" + "|---" * 12 + "|"
    )
    lines = [head]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['case']} | {r['dtype']} | failed: {r['error']} |")
            continue
        lines.append(
            f"| {r['case']} | {r['dtype']} | {'-' if r['max_abs_diff'] is None else format(r['max_abs_diff'], '.1e')} "
            f"| {r['ours_ms']:.1f} | {r['ref_ms']:.1f} "
            f"| **{r['time_ratio']:.2f}** | {r['gflops_ours']:.1f} | {100 * r['peak_fraction']:.0f}% "
            f"| {r['mem_ours_mib']:.1f} | {r['mem_ref_mib']:.1f} | {r['mem_ratio']:.2f} "
            + (
                f"| {r['floor_ms']:.1f}: {r['ours_floor']:.2f}x, {r['ref_floor']:.2f}x |"
                if r.get("floor_ms")
                else "| - |"
            )
        )
    engine = [r for r in rows if "ct2_float32_ms" in r]
    if engine:  # CTranslate2 on the same weights and prompts: time, and the share of its tokens equal to ours
        lines += ["", "| generation | ours ms | HF ms | CTranslate2 fp32 ms | int8 ms | ours/CT2 fp32 | ours/CT2 int8"]
        lines[-1] += " | tokens equal to ours: fp32, int8 |\n" + "|---" * 8 + "|"
        for r in engine:
            ours, f32, i8 = r["ours_ms"], r["ct2_float32_ms"], r["ct2_int8_ms"]
            lines.append(
                f"| {r['case']} | {ours:.1f} | {r['ref_ms']:.1f} | {f32:.1f} | {i8:.1f} | **{ours / f32:.2f}**"
                f" | {ours / i8:.2f} | {r['ct2_float32_same_tokens']:.1%}, {r['ct2_int8_same_tokens']:.1%} |"
            )
    lines.append("")
    lines += [f"matmul peak ({k}): {v / 1e9:.1f} GFLOP/s" for k, v in peaks.items()]
    if any(r.get("floor_ms") for r in rows):
        lines.append(
            f"memory bandwidth (reading 256 MiB: a matrix-vector product or a sum): {bandwidth / 1e9:.1f} GB/s"
        )
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtypes", default=None, help="comma list; default fp32 on CPU, fp32,bf16 on CUDA")
    p.add_argument("--repeats", type=int, default=None, help="timed calls per side (default 15; 5 in the quick table)")
    p.add_argument("--d-model", type=int, default=512)
    p.add_argument("--nhead", type=int, default=8)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--bert-preset", default="bert-small")
    p.add_argument("--bert-batch", type=int, default=16)
    p.add_argument("--bert-seq", type=int, default=128)
    p.add_argument("--albert-preset", default="albert-base-v2")
    p.add_argument("--albert-layers", type=int, default=4)
    p.add_argument("--gpt-d", type=int, default=512)
    p.add_argument("--gpt-layers", type=int, default=4)
    p.add_argument("--gpt-batch", type=int, default=8)
    p.add_argument("--gpt-seq", type=int, default=128)
    p.add_argument("--gen-tokens", type=int, default=64)
    p.add_argument("--t5-preset", default="t5-small")
    p.add_argument("--t5-layers", type=int, default=4)
    p.add_argument("--bart-preset", default="bart-base")
    p.add_argument("--bart-layers", type=int, default=3)
    p.add_argument("--compile", action="store_true", help="torch.compile both sides")
    p.add_argument("--only", default="", help="run the cases whose name contains this text (of all rows)")
    p.add_argument("--all", action="store_true", help="every row (default: one row per family, a quick table)")
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args(argv)
    args.repeats = args.repeats or (15 if args.all or args.only else 5)
    # torch.nn's reference takes the nested-tensor fast path (our comparison's point); its prototype notice is known
    warnings.filterwarnings("ignore", message="The PyTorch API of nested tensors", category=UserWarning)
    device = torch.device(args.device)
    names = args.dtypes or ("float32,bfloat16" if device.type == "cuda" else "float32")
    dtypes = [getattr(torch, n.strip()) for n in names.split(",")]
    env = environment(device)
    print(" | ".join(f"{k}: {v}" for k, v in env.items()), "\n")
    rows, peaks = [], {}
    for dtype in dtypes:
        peaks[str(dtype).replace("torch.", "")] = peak = matmul_peak(device, dtype)
        for make_cases in CASES:
            for case in make_cases(device, dtype, args):
                if args.only not in case.name or not (args.all or args.only or case.quick):
                    continue
                try:
                    rows.append(run_case(case, device, dtype, args, peak))
                    print(f"  {case.name} [{rows[-1]['dtype']}]: ratio {rows[-1]['time_ratio']:.2f}", flush=True)
                except Exception as e:  # e.g. a side that torch.compile cannot compile: report, go on
                    error = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:200]}"
                    rows.append({"case": case.name, "dtype": str(dtype).replace("torch.", ""), "error": error})
                    print(f"  {case.name}: FAILED {error}", flush=True)
    if device.type == "cpu" and not importlib.util.find_spec("ctranslate2"):
        print("CTranslate2's columns skipped: it is not installed (pip install ctranslate2)")
    print()
    bandwidth = memory_bandwidth(device) if any(r.get("floor_ms") for r in rows) else None
    print(markdown(rows, peaks, bandwidth))
    if args.json:
        with open(args.json, "w") as f:
            saved = {"env": env, "args": vars(args), "matmul_peak_flops": peaks, "memory_bandwidth": bandwidth}
            json.dump(saved | {"rows": rows}, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
