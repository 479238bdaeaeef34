"""train.py: the one training loop, for every model.

    python train.py --model transformer --dataset multi30k --preset multi30k        # translation
    python train.py --model bert --preset bert-mini-cpu --dataset data/prepared/bert-128
    python train.py --model hf-bert ...        # HF's BertForPreTraining, same loop, data, init
    python train.py --preset shakespeare-char-cpu --dataset data/prepared/lm-shakespeare-char  # GPT
    python train.py --out-dir out/shakespeare --sample "ROMEO:"                      # text from a GPT run
    python train.py --out-dir out/m30k --resume                                     # continue exactly
    torchrun --nproc_per_node=8 train.py --preset bert-base-8gpu ...                # DDP
    python train.py --out-dir out/m30k --evaluate                                   # test BLEU
    python train.py --out-dir out/m30k --plot                                       # PNG curves

Every field of TrainConfig is a flag (`python train.py --help` lists them); `--preset` sets a
group first, explicit flags win. A model family is a task (TranslationTask, PretrainingTask, LMTask):
its data, model, loss and validation; the Run around it is shared: DDP, accumulation, AdamW,
warmup schedules, AMP, checkpoints with exact resume, logs and curves.

The batch is stated per optimizer step, all processes and micro-batches together: in tokens for
translation (batch_tokens, padding included), in sequences for BERT and GPT (batch_size); each
micro-batch holds 1 / (grad_accum * world_size) of it. Losses are summed over the step's
targets and divided by the step's totals (all-reduced), so accumulation and DDP give the update
of one big batch.
"""

import argparse
import contextlib
import json
import math
import os
import platform
import random
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

import data
import transformer as T


@dataclass
class TrainConfig:
    model: str = "transformer"  # transformer | bert | hf-bert | gpt | hf-gpt2
    glue_task: str = ""  # bert, hf-bert: fine-tune on this GLUE task (finetune_glue.py) instead of pretraining
    dataset: str = "multi30k"  # translation: multi30k | iwslt14; bert, gpt: a folder made by `python data.py`
    src_lang: str = "de"
    tgt_lang: str = "en"
    out_dir: str = "out/run"
    # data
    vocab_size: int = 8000  # one joint subword vocabulary for both languages
    tokenizer: str = "bpe"  # bpe | unigram
    max_len: int = 128  # training pairs with a longer side (in tokens) are dropped
    # model: the paper's defaults are in transformer.TransformerConfig
    d_model: int = 512
    nhead: int = 8
    num_layers: int = 6  # encoder and decoder each
    dim_feedforward: int = 2048
    dropout: float = 0.1
    norm_first: bool = False
    share_embeddings: bool = True  # source, target and output embeddings are one matrix
    label_smoothing: float = 0.1
    # model (bert, gpt...): a bert.PRESETS / gpt.PRESETS shape, optionally started from an HF checkpoint
    arch: str = "bert-mini"
    context: int = 0  # gpt: tokens per training window (0: the arch's n_positions)
    init_from: str = ""  # an HF folder / hub name to start from (fine-tuning, continued pretraining)
    mask_prob: float = 0.0  # bert: re-mask training samples at load time at this rate (0: as prepared)
    max_predictions: int = 0  # with mask_prob: masked tokens per sample at most (0: all the rate gives)
    pos_init: str = "normal"  # bert from scratch: normal | sinusoidal (the learned position table
    # starts from the Transformer's sinusoids, scaled to the initializer's std)
    # optimization: AdamW, decay only on >= 2-D tensors (not biases, norms); Adam(0.9, 0.98, 1e-9)
    # with the paper's warmup then inverse-sqrt decay for translation; linear decay for BERT
    batch_tokens: int = 25000  # translation, per optimizer step; the paper: ~25k source + 25k target tokens
    batch_size: int = 256  # bert, gpt: sequences per optimizer step
    grad_accum: int = 1
    lr: float = 7e-4  # peak, reached at step `warmup` (the paper's schedule peaks at d^-0.5 warmup^-0.5)
    warmup: int = 4000
    schedule: str = "noam"  # noam (inverse sqrt) | linear (to 0 at decay_steps) | cosine (to min_lr)
    decay_steps: int = 0  # linear, cosine: the step where the decay ends (0: max_steps)
    min_lr: float = 0.0  # cosine: the floor
    beta2: float = 0.98
    eps: float = 1e-9
    weight_decay: float = 0.0
    llrd: float = 1.0  # layer-wise lr decay: layer i of L gets lr * llrd^(L-1-i), embeddings lr * llrd^L
    clip: float = 0.0  # max gradient norm, 0 = no clipping
    max_epochs: int = 20
    max_steps: int = 0  # stop after this many optimizer steps (0: by epochs)
    # evaluation, checkpoints, logs
    eval_every: int = 0  # steps between validations (0: at each epoch's end)
    save_every: int = 0  # steps between checkpoints (0: at each epoch's end)
    keep_last: int = 5  # checkpoints kept, and averaged for the final evaluation
    log_every: int = 20
    eval_iters: int = 20  # gpt: batches of the validation estimate
    beam: int = 4
    length_penalty: float = 0.6
    seed: int = 1337
    device: str = "auto"  # auto: cuda if available
    bf16: bool = True  # autocast to bf16 on CUDA
    cpu_bf16: bool = False  # autocast to bf16 on CPU too: ~2x faster steps where the CPU has AVX512-BF16/AMX
    compile: bool = False
    tensorboard: bool = False
    wandb: bool = False
    # GLUE fine-tuning (finetune_glue.py): early exit and backdoor poisoning of the training set
    early_exit: str = ""  # "": plain classifier | pabee: exits after every layer, trained jointly |
    # deebert: exits trained on a frozen fine-tuned model (init_from: that run's HF export)
    poison_rate: float = 0.0  # share of training samples given a trigger and the target label
    poison_target: int = 1
    poison_triggers: str = "cf mn bb tq mb"
    poison_position: str = "random"  # random | start | end (word position of the inserted trigger)


_BERT_OPTIMIZER = dict(  # AdamW as in BERT; epochs do not bound a run, steps do
    model="bert", schedule="linear", beta2=0.999, eps=1e-6, weight_decay=0.01, clip=1.0, dropout=0.1, max_epochs=10**6
)
_GPT_OPTIMIZER = dict(  # nanoGPT's: AdamW(0.9, 0.99), decay 0.1 on matrices, warmup 100, cosine to lr / 10
    model="gpt",
    lr=1e-3,
    min_lr=1e-4,
    warmup=100,
    schedule="cosine",
    beta2=0.99,
    eps=1e-8,
    weight_decay=0.1,
    clip=1.0,
    max_epochs=10**6,
    eval_every=250,
    save_every=250,
    log_every=10,
)
PRESETS = {
    # The run of docs/results.md: small enough for a 2-core CPU in about an hour.
    "multi30k": dict(
        d_model=256,
        nhead=4,
        num_layers=3,
        dim_feedforward=1024,
        dropout=0.1,
        batch_tokens=2048,
        lr=8e-4,
        warmup=400,
        max_epochs=16,
        clip=1.0,
    ),
    "transformer-base": dict(),  # the paper's base model (8 GPUs: --grad-accum 1 under torchrun)
    "transformer-big": dict(d_model=1024, nhead=16, dim_feedforward=4096, dropout=0.3, lr=5e-4),
    "tiny": dict(d_model=32, nhead=4, num_layers=1, dim_feedforward=64, vocab_size=500, batch_tokens=512, warmup=10),
    # BERT (Devlin et al. 2018, appendix A.2): batch 256, lr 1e-4, Adam(0.9, 0.999, 1e-6), L2 0.01,
    # warmup 10k then linear decay, dropout 0.1, 1M steps: seq 128 for 900k, then seq 512 for 100k
    # (continue with --resume --dataset <the seq-512 folder> --max-steps 1000000).
    "bert-base-8gpu": dict(
        **_BERT_OPTIMIZER,
        arch="bert-base",
        batch_size=256,  # 8 processes x 32
        lr=1e-4,
        warmup=10_000,
        max_steps=900_000,
        decay_steps=1_000_000,
        eval_every=10_000,
        save_every=10_000,
        log_every=100,
    ),
    "bert-base-1gpu": dict(grad_accum=8),  # applied on top of bert-base-8gpu: the same batch of 256
    # docs/results.md's run 4: bert-mini (4 layers x 256) from scratch on books + wiki, 32 x 128 tokens
    # per step, 40% of the tokens masked in training, bf16 autocast: about 1.9 h on 2 CPU cores
    "bert-mini-cpu": dict(
        **_BERT_OPTIMIZER,
        arch="bert-mini",
        batch_size=32,
        lr=1e-3,
        warmup=200,
        max_steps=14000,
        mask_prob=0.4,
        pos_init="sinusoidal",
        eval_every=1000,
        save_every=1000,
        log_every=50,
        cpu_bf16=True,
    ),
    # nanoGPT's Tiny Shakespeare character-level recipes (config/train_shakespeare_char.py, and its
    # README's CPU variant), on the folder of `python data.py lm --source shakespeare --tokenizer char`
    "shakespeare-char-cpu": dict(
        **_GPT_OPTIMIZER,
        arch="shakespeare-char-cpu",
        batch_size=12,
        context=64,
        max_steps=2000,
        dropout=0.0,
        eval_iters=20,
    ),
    "shakespeare-char": dict(
        **_GPT_OPTIMIZER,
        arch="shakespeare-char",
        batch_size=64,
        context=256,
        max_steps=5000,
        dropout=0.2,
        eval_iters=200,
    ),
    "bert-tiny-test": dict(
        model="bert", arch="bert-tiny", batch_size=8, lr=1e-3, warmup=2, schedule="linear", max_steps=4, dropout=0.0
    ),
}
PRESETS["bert-base-1gpu"] = {**PRESETS["bert-base-8gpu"], **PRESETS["bert-base-1gpu"]}


# -------------------------------------------------------------------------------- command line


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), help="a group of settings, applied before the flags")
    p.add_argument("--resume", action="store_true", help="continue the run in --out-dir from its last checkpoint")
    p.add_argument("--evaluate", action="store_true", help="only evaluate --out-dir's checkpoints on the test set")
    p.add_argument("--plot", action="store_true", help="only draw --out-dir's learning curves to PNG")
    p.add_argument("--split", default="test", help="with --evaluate: test, or valid (to choose decoding settings)")
    p.add_argument("--compare", nargs="*", default=[], help="with --plot: other runs to draw on the same axes")
    p.add_argument(
        "--export-hf", default=None, metavar="DIR", help="write a BERT run's last checkpoint as an HF folder"
    )
    p.add_argument("--sample", metavar="PROMPT", help="print text a GPT run (or --init-from an HF GPT) writes")
    p.add_argument("--max-new-tokens", type=int, default=500, help="with --sample")
    p.add_argument("--temperature", type=float, default=0.8, help="with --sample (0: greedy)")
    p.add_argument("--top-k", type=int, default=200, help="with --sample")
    p.add_argument("--top-p", type=float, default=None, help="with --sample")
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.type is bool or isinstance(f.default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS)
        else:
            p.add_argument(flag, type=type(f.default), default=argparse.SUPPRESS, help=f"default {f.default!r}")
    args = vars(p.parse_args(argv))
    names = ("preset", "resume", "evaluate", "plot", "split", "compare", "export_hf", "sample")
    names += ("max_new_tokens", "temperature", "top_k", "top_p")
    actions = {k: args.pop(k) for k in names}
    return actions, args  # args: only the fields given explicitly


def make_config(preset, overrides, base=None):
    values = asdict(base) if base is not None else {}
    if preset:
        values.update(PRESETS[preset])
    values.update(overrides)
    return TrainConfig(**values)


# ----------------------------------------------------------------------------------- the run


def model_config(c, tok):
    """The model's config from the run's config and its tokenizer's vocabulary."""
    return T.TransformerConfig(
        src_vocab_size=tok.get_vocab_size(),
        tgt_vocab_size=tok.get_vocab_size(),
        d_model=c.d_model,
        nhead=c.nhead,
        num_encoder_layers=c.num_layers,
        num_decoder_layers=c.num_layers,
        dim_feedforward=c.dim_feedforward,
        dropout=c.dropout,
        norm_first=c.norm_first,
        share_embeddings=c.share_embeddings,
        tie_output=c.share_embeddings,
        label_smoothing=c.label_smoothing,
        max_len=max(c.max_len, 256) + 64,  # room for test sentences longer than training ones
        pad_id=tok.token_to_id(data.PAD),
        bos_id=tok.token_to_id(data.BOS),
        eos_id=tok.token_to_id(data.EOS),
    )


def micro_size(cfg, world, field):
    """A micro-batch's share of the optimizer step's batch (cfg.<field>), which must split evenly."""
    total, parts = getattr(cfg, field), cfg.grad_accum * world
    if total % parts:
        raise ValueError(f"{field} ({total}) must be divisible by grad_accum * world_size ({cfg.grad_accum} * {world})")
    return total // parts


class TranslationTask:
    """--model transformer: the paper's model on a translation dataset. Batches of pairs cut by
    token count; label-smoothed loss per target token; validation loss, perplexity, greedy BLEU."""

    def __init__(self, cfg, world):
        self.cfg = cfg
        self.micro_size = micro_size(cfg, world, "batch_tokens")  # tokens per micro-batch
        self.tok = data.translation_tokenizer(cfg.dataset, cfg.src_lang, cfg.tgt_lang, cfg.vocab_size, cfg.tokenizer)
        self.train_pairs = data.encode_pairs(
            self.tok, data.read_parallel(cfg.dataset, "train", cfg.src_lang, cfg.tgt_lang), cfg.max_len
        )
        self.valid_text = data.read_parallel(cfg.dataset, "valid", cfg.src_lang, cfg.tgt_lang)
        self.valid_pairs = data.encode_pairs(self.tok, self.valid_text)
        self.lengths = [max(len(s), len(t)) for s, t in self.train_pairs]
        self.pad = self.tok.token_to_id(data.PAD)
        self.info = {"train_pairs": len(self.train_pairs)}

    def build_model(self):
        return T.Seq2SeqTransformer(model_config(self.cfg, self.tok))

    def epoch_batches(self, epoch):
        """Micro-batches (index lists) of one epoch, by token count, shuffled per epoch."""
        return data.token_batches(self.lengths, self.micro_size, seed=self.cfg.seed, epoch=epoch)

    def collate(self, indices):
        return data.collate_translation([self.train_pairs[i] for i in indices])

    def counts(self, batch):
        """[target tokens (the loss's divisor), all real tokens (for tokens/s)]"""
        src, _, labels = batch
        targets = int((labels != self.pad).sum())
        return [targets, int((src != self.pad).sum()) + targets]

    def loss(self, model, batch, totals, device):
        """-> (this micro-batch's share of the step's mean loss, [summed loss]) ."""
        src, tgt_in, labels = (x.to(device) for x in batch)
        logits = model(src, tgt_in).logits
        loss = T.label_smoothed_loss(logits, labels, self.pad, self.cfg.label_smoothing, reduction="sum")
        return loss / totals[0], [loss.item()]

    def row(self, stats, totals):
        return {"loss": stats[0] / totals[0]}

    @torch.no_grad()
    def validate(self, model, autocast):
        """Validation cross-entropy (no smoothing, per target token), perplexity and greedy BLEU."""
        device = next(model.parameters()).device
        pad, total, n = model.config.pad_id, 0.0, 0
        for b in data.token_batches([max(len(s), len(t)) for s, t in self.valid_pairs], 8192, shuffle=False):
            src, tgt_in, labels = (x.to(device) for x in data.collate_translation([self.valid_pairs[i] for i in b]))
            with autocast():
                logits = model(src, tgt_in).logits
            total += float(T.label_smoothed_loss(logits, labels, pad, smoothing=0.0, reduction="sum"))
            n += int((labels != pad).sum())
        hyps = translate(model, self.tok, [s for s, _ in self.valid_text], beam=1)
        bleu = bleu_scores(hyps, [t for _, t in self.valid_text], self.cfg.tgt_lang)
        return {"val_loss": total / n, "val_ppl": math.exp(total / n), "val_bleu": bleu["bleu"]}


class PretrainingTask:
    """--model bert (ours) or hf-bert (HF's BertForPreTraining, same initial weights): masked-LM +
    next-sentence prediction on the binary shards of `python data.py bert`. The loss is the mean
    MLM cross-entropy over the step's masked tokens plus the mean NSP cross-entropy over its
    sequences; logs MLM / NSP accuracy; validates on the held-out split (fixed masks)."""

    def __init__(self, cfg, world):
        self.cfg = cfg
        self.micro_size = micro_size(cfg, world, "batch_size")  # sequences per micro-batch
        self.train_data = data.PretrainingData(cfg.dataset, "train")
        self.valid_data = data.PretrainingData(cfg.dataset, "valid")
        from tokenizers import Tokenizer

        self.tok = Tokenizer.from_file(str(Path(cfg.dataset) / "tokenizer.json"))
        if self.tok.padding or self.tok.truncation:  # data.py saves the tokenizer it used, plain
            raise ValueError(
                f"{cfg.dataset}: its tokenizer.json pads or truncates, so the samples were made of"
                " sentences padded to a fixed length; prepare the data again (data.py now uses it plain)"
            )
        self.vocab = data.Vocab.of(self.tok)
        self.spec = self.train_data.spec
        self.info = {
            "train_samples": len(self.train_data),
            "valid_samples": len(self.valid_data),
            "spec": asdict(self.spec),
        }
        self.epoch = 0  # dynamic masking draws new masks each epoch

    def build_model(self):
        import bert

        c = self.cfg
        if c.init_from:
            config = bert.BertConfig.from_hf(
                json.loads((Path(T.resolve_checkpoint(c.init_from)) / "config.json").read_text())
            )
        else:
            config = bert.BertConfig.from_preset(
                c.arch,
                vocab_size=self.vocab.size,
                pad_token_id=self.vocab.pad,
                hidden_dropout_prob=c.dropout,
                attention_probs_dropout_prob=c.dropout,
                max_position_embeddings=max(512, self.spec.max_seq_length),
            )
        if config.vocab_size != self.vocab.size:
            raise ValueError(
                f"the model's vocabulary ({config.vocab_size}) differs from the data's ({self.vocab.size})"
            )
        ours = bert.BertForPreTraining.from_pretrained(c.init_from) if c.init_from else bert.BertForPreTraining(config)
        if c.pos_init not in ("normal", "sinusoidal"):
            raise ValueError(f"pos_init must be 'normal' or 'sinusoidal', got {c.pos_init!r}")
        if c.pos_init == "sinusoidal" and not c.init_from:
            table = ours.bert.embeddings.position.weight  # (P, d)
            pe = T.PositionalEncoding(table.shape[1], table.shape[0]).pe
            with torch.no_grad():
                table.copy_(pe * (config.initializer_range / pe.std()))
        if c.model == "bert":
            return ours
        import transformers  # hf-bert: HF's model, starting from exactly our initial weights

        hf = transformers.BertForPreTraining(transformers.BertConfig(**config.to_hf("BertForPreTraining")))
        missing, unexpected = hf.load_state_dict(ours.hf_state_dict(), strict=False)
        if unexpected or any("decoder" not in k for k in missing):
            raise RuntimeError(f"hf-bert: weights did not map: missing {missing}, unexpected {unexpected}")
        return hf

    def epoch_batches(self, epoch):
        """Micro-batches of sample indices: a permutation seeded by (seed, epoch), cut in order."""
        order = torch.randperm(len(self.train_data), generator=torch.Generator().manual_seed(self.cfg.seed + epoch))
        self.epoch = epoch
        n = len(order) // self.micro_size * self.micro_size
        return order[:n].view(-1, self.micro_size).tolist()

    def collate(self, indices, dataset=None):
        """Samples -> a batch; samples stored unmasked get masks seeded by (seed, epoch, sample index)
        (dynamic masking: new masks every epoch, the same ones after a resume). With mask_prob,
        training samples are unmasked (their labels put back) and masked again that way at that
        rate; held-out samples keep their prepared masks, so validation stays comparable."""
        dataset = self.train_data if dataset is None else dataset
        samples = [dataset[i] for i in indices]
        s, c = self.spec, self.cfg
        remask = c.mask_prob > 0 and dataset is self.train_data
        prob = c.mask_prob if remask else s.masked_lm_prob
        most = (c.max_predictions or s.max_seq_length) if remask else s.max_predictions_per_seq
        for k, (i, (ids, b_start, nsp, positions, labels)) in enumerate(zip(indices, samples, strict=True)):
            if len(positions) == 0 or remask:
                ids = ids.tolist()
                for p, label in zip(positions, labels, strict=True):
                    ids[p] = int(label)
                rng = random.Random(f"{c.seed}-{self.epoch}-{i}")
                ids, positions, labels = data.mask_tokens(ids, self.vocab, rng, prob, most, s.whole_word_mask)
                samples[k] = (ids, b_start, nsp, positions, labels)
        return data.collate_pretraining(samples, self.vocab.pad)

    def counts(self, batch):
        """[masked tokens, sequences (the two losses' divisors), real tokens (for tokens/s)]"""
        return [int((batch["labels"] != -100).sum()), len(batch["labels"]), int(batch["attention_mask"].sum())]

    def outputs(self, model, batch, device):
        """-> (MLM logits at the masked positions (M, V), their targets (M,), NSP logits (B, 2))."""
        batch = {k: v.to(device) for k, v in batch.items()}
        labels = batch["labels"]
        if self.cfg.model == "bert":  # ours projects only the masked positions to the vocabulary
            out = model(**batch)
            return out.mlm_logits, labels[labels != -100], out.nsp_logits
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
        out = model(**inputs)
        return out.prediction_logits[labels != -100], labels[labels != -100], out.seq_relationship_logits

    def loss(self, model, batch, totals, device):
        mlm_logits, targets, nsp_logits = self.outputs(model, batch, device)
        mlm = F.cross_entropy(mlm_logits.float(), targets, reduction="sum")
        nsp = F.cross_entropy(nsp_logits.float(), batch["next_sentence_label"].to(device), reduction="sum")
        stats = [
            mlm.item(),
            nsp.item(),
            int((mlm_logits.argmax(-1) == targets).sum()),
            int((nsp_logits.argmax(-1).cpu() == batch["next_sentence_label"]).sum()),
        ]
        return mlm / totals[0] + nsp / totals[1], stats

    def row(self, stats, totals):
        mlm, nsp = stats[0] / totals[0], stats[1] / totals[1]
        return {
            "loss": mlm + nsp,
            "mlm_loss": mlm,
            "nsp_loss": nsp,
            "mlm_acc": stats[2] / totals[0],
            "nsp_acc": stats[3] / totals[1],
        }

    @torch.no_grad()
    def validate(self, model, autocast):
        """Held-out MLM loss / accuracy and NSP loss / accuracy (its masks were fixed at preparation)."""
        device = next(model.parameters()).device
        sums, totals = [0.0] * 4, [0, 0, 0]
        for k in range(0, len(self.valid_data), 64):
            batch = self.collate(list(range(k, min(k + 64, len(self.valid_data)))), self.valid_data)
            counts = self.counts(batch)
            with autocast():
                _, stats = self.loss(model, batch, [1, 1], device)
            sums = [a + b for a, b in zip(sums, stats, strict=True)]
            totals = [a + b for a, b in zip(totals, counts, strict=True)]
        return {"val_" + k: v for k, v in self.row(sums, totals).items()}


class LMTask:
    """--model gpt (ours) or hf-gpt2 (HF's GPT2LMHeadModel, same initial weights): next-token
    cross-entropy on random windows of the token files of `python data.py lm` (nanoGPT's batches),
    drawn by a generator seeded per epoch so that runs resume exactly; validation estimates the
    loss on eval_iters fixed batches of each split."""

    def __init__(self, cfg, world):
        import gpt

        self.cfg = cfg
        self.micro_size = micro_size(cfg, world, "batch_size")  # windows per micro-batch
        self.meta, self.tok, self.splits = data.load_lm(cfg.dataset)
        self.context = cfg.context or gpt.GPTConfig.from_preset(cfg.arch).n_positions
        if min(len(t) for t in self.splits.values()) <= self.context + 1:
            raise ValueError(f"the data has fewer tokens than a window of context {self.context}")
        self.info = {"tokens": self.meta["tokens"], "tokenizer": self.meta["tokenizer"]}

    def build_model(self):
        import gpt

        c = self.cfg
        drop = dict(resid_pdrop=c.dropout, embd_pdrop=c.dropout, attn_pdrop=c.dropout)
        if c.init_from:
            ours = gpt.GPT.from_pretrained(c.init_from, **drop)
        else:
            config = gpt.GPTConfig.from_preset(c.arch, vocab_size=self.meta["vocab_size"], **drop)
            ours = gpt.GPT(config)
        if ours.config.n_positions < self.context:
            raise ValueError(f"context {self.context} is longer than the model's n_positions {ours.config.n_positions}")
        if ours.config.vocab_size != self.meta["vocab_size"]:
            raise ValueError(
                f"the model's vocabulary ({ours.config.vocab_size}) is not the data's ({self.meta['vocab_size']})"
            )
        n = sum(p.numel() for p in ours.parameters()) - ours.wpe.weight.numel()
        L, C = ours.config.n_layer, ours.config.n_embd
        self.flops_per_token = 6 * n + 12 * L * C * self.context  # PaLM's estimate, as nanoGPT's MFU
        if c.model == "gpt":
            return ours
        import transformers  # hf-gpt2: HF's model, starting from exactly our initial weights

        hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(**ours.config.to_hf()))
        missing, unexpected = hf.load_state_dict(ours.hf_state_dict(), strict=False)
        if unexpected or missing != ["lm_head.weight"]:
            raise RuntimeError(f"hf-gpt2: weights did not map: missing {missing}, unexpected {unexpected}")
        return hf

    def _offsets(self, split, n, seed):
        g = torch.Generator().manual_seed(seed)
        return torch.randint(len(self.splits[split]) - self.context, (n, self.micro_size), generator=g).tolist()

    def epoch_batches(self, epoch):
        """An epoch: as many random windows as the training tokens fill, in micro-batches."""
        n = max(1, len(self.splits["train"]) // (self.context * self.micro_size))
        return self._offsets("train", n, self.cfg.seed + epoch)

    def collate(self, offsets, split="train"):
        return data.lm_windows(self.splits[split], offsets, self.context)

    def counts(self, batch):
        return [batch[1].numel(), batch[1].numel()]  # [targets, tokens]

    def loss(self, model, batch, totals, device):
        x, y = (t.to(device) for t in batch)
        if self.cfg.model == "gpt":  # ours computes the loss itself (on the CPU, without transposing the logits)
            loss = model(x, targets=y).loss * y.numel()
        else:
            loss = F.cross_entropy(model(x).logits.flatten(0, 1).float(), y.flatten(), reduction="sum")
        return loss / totals[0], [loss.item()]

    def row(self, stats, totals):
        return {"loss": stats[0] / totals[0]}

    @torch.no_grad()
    def validate(self, model, autocast):
        """Mean loss over eval_iters fixed batches of each split (nanoGPT's estimate_loss)."""
        device = next(model.parameters()).device
        out = {}
        for split, key in (("val", "val_loss"), ("train", "train_eval_loss")):
            total = n = 0
            for offsets in self._offsets(split, self.cfg.eval_iters, seed=12345):
                x, y = (t.to(device) for t in self.collate(offsets, split))
                with autocast():
                    logits = model(x).logits
                total += float(
                    torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="sum")
                )
                n += y.numel()
            out[key] = total / n
        return out


def make_task(cfg, world):
    if cfg.glue_task:
        import finetune_glue

        return finetune_glue.GlueTask(cfg, world)
    if cfg.model == "transformer":
        return TranslationTask(cfg, world)
    if cfg.model in ("bert", "hf-bert"):
        return PretrainingTask(cfg, world)
    if cfg.model in ("gpt", "hf-gpt2"):
        return LMTask(cfg, world)
    raise ValueError(f"--model must be transformer, bert, hf-bert, gpt or hf-gpt2, got {cfg.model!r}")


def lr_factor(cfg, d_model):
    """The learning rate at optimizer step i (0-based) as a fraction of cfg.lr."""
    if cfg.schedule == "noam":  # the paper: linear warmup, then inverse square root, peak at `warmup`
        peak = T.noam_lr(cfg.warmup, d_model, cfg.warmup)
        return lambda i: T.noam_lr(i + 1, d_model, cfg.warmup) / peak
    if cfg.schedule == "linear":  # BERT: linear warmup, then linear decay to 0
        total = cfg.decay_steps or cfg.max_steps
        if total <= cfg.warmup:
            raise ValueError(f"schedule linear: decay_steps or max_steps ({total}) must exceed warmup ({cfg.warmup})")
        return lambda i: min((i + 1) / max(cfg.warmup, 1), max(0.0, (total - i - 1) / (total - cfg.warmup)))
    if cfg.schedule == "cosine":  # nanoGPT: linear warmup, cosine down to min_lr at decay_steps, then flat
        total, floor = cfg.decay_steps or cfg.max_steps, cfg.min_lr / cfg.lr

        def cosine(i):
            if i < cfg.warmup:
                return (i + 1) / (cfg.warmup + 1)
            ratio = min(1.0, (i - cfg.warmup) / max(1, total - cfg.warmup))
            return floor + 0.5 * (1 + math.cos(math.pi * ratio)) * (1 - floor)

        return cosine
    raise ValueError(f"--schedule must be noam, linear or cosine, got {cfg.schedule!r}")


def param_groups(model, weight_decay, lr=1.0, llrd=1.0):
    """AdamW groups: weight decay on matrices and embeddings (>= 2-D), none on biases and norms.

    With layer-wise lr decay (llrd < 1, BERT-family encoders), parameter groups also split by
    depth below the top: the top layer, pooler and heads get lr; layer i of L gets lr * llrd^(L-1-i);
    the embeddings lr * llrd^L."""
    n_layers = getattr(getattr(model, "config", None), "num_hidden_layers", 0)
    groups = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        depth = layer_depth(name, n_layers) if llrd != 1.0 else 0
        decay = weight_decay if p.dim() >= 2 else 0.0
        key = (depth, p.dim() < 2)  # per depth: the decayed group first
        groups.setdefault(key, {"params": [], "weight_decay": decay, "lr": lr * llrd**depth})["params"].append(p)
    return [groups[k] for k in sorted(groups)]


def layer_depth(name, n_layers):
    """How far below the top of an n-layer encoder a parameter sits: 0 for the top layer and for
    everything above it (pooler, heads), L-1-i for layer i, L for the embeddings (ours and HF's names)."""
    if not n_layers:
        raise ValueError("llrd: the model has no config.num_hidden_layers (a BERT-family encoder is needed)")
    if ".embeddings." in f".{name}":
        return n_layers
    m = re.search(r"(?:^|\.)(?:layers|layer)\.(\d+)\.", name)
    return n_layers - 1 - int(m.group(1)) if m else 0


class Run:
    """Everything a training run holds: config, task (data + model + loss), optimizer, position, logs."""

    def __init__(self, cfg, resume=False):
        self.cfg = cfg
        self.ddp = "RANK" in os.environ
        if self.ddp:
            use_cuda = torch.cuda.is_available() and cfg.device in ("auto", "cuda")
            if not dist.is_initialized():  # once per process: finetune_glue.py makes several runs
                dist.init_process_group("nccl" if use_cuda else "gloo")
            self.rank, self.world = dist.get_rank(), dist.get_world_size()
            if use_cuda:
                torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        else:
            self.rank, self.world = 0, 1
        dev = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        self.device = torch.device(dev, torch.cuda.current_device()) if dev == "cuda" else torch.device(dev)
        self.out = Path(cfg.out_dir)
        self.master = self.rank == 0
        if self.master:
            self.out.mkdir(parents=True, exist_ok=True)
        self.task = make_task(cfg, self.world)

        # model and optimizer
        torch.manual_seed(cfg.seed)
        self.model = self.task.build_model().to(self.device)
        fused = {"fused": True} if self.device.type == "cuda" else {}
        self.opt = torch.optim.AdamW(
            param_groups(self.model, cfg.weight_decay, cfg.lr, cfg.llrd),
            lr=cfg.lr,
            betas=(0.9, cfg.beta2),
            eps=cfg.eps,
            **fused,
        )
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lr_factor(cfg, cfg.d_model))
        self.step, self.epoch, self.batch_in_epoch = 0, 0, 0
        random.seed(cfg.seed)
        if resume:
            self.load(latest_checkpoint(self.out))
        self.train_model = self.model
        if cfg.compile:
            self.train_model = torch.compile(self.train_model)
        if self.ddp:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = torch.nn.parallel.DistributedDataParallel(self.train_model, device_ids=ids)
        self.writers = self.open_writers() if self.master else []

    # ---- logs

    def open_writers(self):
        writers = []
        if self.cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            writers.append(SummaryWriter(str(self.out / "tb")))
        if self.cfg.wandb:
            import wandb

            wandb.init(project="transformers-from-scratch", config=asdict(self.cfg), dir=str(self.out))
            writers.append(wandb)
        return writers

    def log(self, row):
        """One row of metrics: to metrics.jsonl, and to tensorboard / wandb when on."""
        if not self.master:
            return
        row = {"step": self.step, "epoch": self.epoch, **row}
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        for w in self.writers:
            scalars = {k: v for k, v in row.items() if isinstance(v, int | float)}
            if hasattr(w, "add_scalar"):
                for k, v in scalars.items():
                    w.add_scalar(k, v, self.step)
            else:
                w.log(scalars, step=self.step)

    def header(self):
        info = {
            "config": asdict(self.cfg),
            "code": git_version(),
            "versions": {
                "python": platform.python_version(),
                "torch": torch.__version__,
                **{m: _version(m) for m in ("tokenizers", "sacrebleu", "numpy")},
            },
            "hardware": hardware(self.device),
            "world_size": self.world,
            "parameters": sum(p.numel() for p in self.model.parameters()),
            **self.task.info,
            "command": " ".join(sys.argv),
        }
        text = json.dumps(info, indent=1)
        with open(self.out / "log.txt", "a") as f:
            f.write(text + "\n")
        print(text)

    # ---- checkpoints

    def state(self):
        rng = {"torch": torch.get_rng_state(), "python": random.getstate()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "config": asdict(self.cfg),
            "position": {"step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch},
            "rng": rng,
        }

    def save(self):
        if not self.master:
            return
        path = self.out / f"ckpt_{self.step:07d}.pt"
        tmp = path.with_suffix(".tmp")
        torch.save(self.state(), tmp)
        os.replace(tmp, path)  # atomic: an interrupted save never replaces a good checkpoint
        for old in checkpoints(self.out)[: -self.cfg.keep_last]:
            old.unlink()

    def load(self, path):
        ck = load_checkpoint(path)
        self.model.load_state_dict(ck["model"])
        self.opt.load_state_dict(ck["optimizer"])
        self.sched.load_state_dict(ck["scheduler"])
        pos = ck["position"]
        self.step, self.epoch, self.batch_in_epoch = pos["step"], pos["epoch"], pos["batch_in_epoch"]
        if self.master and (self.out / "metrics.jsonl").exists():  # forget what came after the checkpoint
            rows = [json.loads(line) for line in (self.out / "metrics.jsonl").read_text().splitlines()]
            data.write_jsonl(self.out / "metrics.jsonl", [r for r in rows if r["step"] <= self.step])
        torch.set_rng_state(ck["rng"]["torch"])
        random.setstate(_python_rng_state(ck["rng"]["python"]))
        if "cuda" in ck["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(ck["rng"]["cuda"], self.device)

    # ---- training

    def epoch_steps(self):
        """This epoch's optimizer steps: each a list of this process's micro-batches (index lists).

        The task cuts the epoch into micro-batches (shuffled per epoch); step s takes the next
        grad_accum * world_size of them, and process r every world_size-th from r."""
        batches = self.task.epoch_batches(self.epoch)
        per_step = self.cfg.grad_accum * self.world
        steps = [batches[i : i + per_step] for i in range(0, len(batches) - per_step + 1, per_step)]
        return [s[self.rank :: self.world] for s in steps]

    def train_step(self, micro_batches):
        row, n_tokens = self.accumulate_gradients(micro_batches)
        self.optimizer_step()
        return row, n_tokens

    def accumulate_gradients(self, micro_batches):
        """Forward and backward over this process's micro-batches of the step. The gradient is
        that of the losses summed over every target of the step, in all processes, divided by
        their number: the same as one batch holding them all. -> (metrics row, tokens seen)."""
        model = self.train_model
        model.train()
        batches = [self.task.collate(b) for b in micro_batches]
        counts = torch.tensor([sum(c) for c in zip(*map(self.task.counts, batches), strict=True)], dtype=torch.float64)
        if self.ddp:  # every process divides by the global counts
            counts = self.all_reduce(counts)
        totals = counts.tolist()
        stats = None
        for i, batch in enumerate(batches):
            last = i == len(batches) - 1
            with model.no_sync() if self.ddp and not last else contextlib.nullcontext():
                with self.autocast():
                    loss, s = self.task.loss(model, batch, totals, self.device)
                (loss * self.world).backward()  # DDP averages gradients over processes: * world gives the sum
            stats = s if stats is None else [a + b for a, b in zip(stats, s, strict=True)]
        stats = torch.tensor(stats, dtype=torch.float64)
        if self.ddp:
            stats = self.all_reduce(stats)
        return self.task.row(stats.tolist(), totals), totals[-1]

    def optimizer_step(self):
        if self.cfg.clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.sched.step()
        self.step += 1

    def all_reduce(self, t):
        t = t.to(self.device)
        dist.all_reduce(t)
        return t.cpu()

    def use_bf16(self):
        return (self.device.type == "cuda" and self.cfg.bf16) or (self.device.type == "cpu" and self.cfg.cpu_bf16)

    def autocast(self):
        if self.use_bf16():
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def train(self):
        from tqdm import tqdm

        c = self.cfg
        peak = None  # the device's measured matmul FLOP/s, for the MFU of models that count their FLOPs
        if self.master:
            self.header()
            if hasattr(self.task, "flops_per_token"):
                import bench

                peak = bench.matmul_peak(self.device, torch.bfloat16 if self.use_bf16() else torch.float32)
                self.log({"matmul_peak_flops": peak})
        bar = tqdm(disable=not self.master, desc="train", dynamic_ncols=True)
        seconds, tokens = 0.0, 0.0  # training time and tokens since the last log line
        while self.epoch < c.max_epochs and not self.done():
            steps = self.epoch_steps()
            bar.reset(total=len(steps))
            bar.update(self.batch_in_epoch)
            while self.batch_in_epoch < len(steps) and not self.done():
                t0 = time.perf_counter()
                row, n_tokens = self.train_step(steps[self.batch_in_epoch])
                seconds, tokens = seconds + time.perf_counter() - t0, tokens + n_tokens
                self.batch_in_epoch += 1
                bar.update(1)
                if self.step % c.log_every == 0:
                    lr = self.sched.get_last_lr()[0]
                    bar.set_postfix(loss=f"{row['loss']:.3f}", tok_s=f"{tokens / seconds:.0f}", lr=f"{lr:.2e}")
                    speed = {"tokens_per_s": tokens / seconds}
                    if peak:  # model FLOPs per token x tokens/s over the peak (all processes' tokens)
                        speed["mfu"] = self.task.flops_per_token * tokens / seconds / (peak * self.world)
                    self.log({**row, "lr": lr, **speed})
                    seconds, tokens = 0.0, 0.0
                end_of_epoch = self.batch_in_epoch == len(steps)
                if end_of_epoch:
                    self.epoch, self.batch_in_epoch = self.epoch + 1, 0
                if (c.eval_every and self.step % c.eval_every == 0) or (not c.eval_every and end_of_epoch):
                    self.validate()
                if (c.save_every and self.step % c.save_every == 0) or (not c.save_every and end_of_epoch):
                    self.save()
                if end_of_epoch:
                    break  # the next epoch has batches of its own
        bar.close()
        if not (self.out / f"ckpt_{self.step:07d}.pt").exists():
            self.save()  # the final state, whatever save_every says
        if self.ddp:
            dist.barrier()

    def done(self):
        return bool(self.cfg.max_steps) and self.step >= self.cfg.max_steps

    def validate(self):
        if self.master:
            self.model.eval()
            row = self.task.validate(self.model, self.autocast)
            if row:
                self.log(row)


# ------------------------------------------------------------------------------ evaluation


@torch.no_grad()
def translate(model, tok, sentences, beam=4, length_penalty=0.6, batch_size=128):
    """Sentences -> detokenized translations, in order (batched by length for speed)."""
    model.eval()
    device = next(model.parameters()).device
    eos = tok.token_to_id(data.EOS)
    ids = [e.ids + [eos] for e in tok.encode_batch(sentences, add_special_tokens=False)]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    out = [None] * len(ids)
    for k in range(0, len(order), batch_size):
        chunk = order[k : k + batch_size]
        src = data.collate_translation([(ids[i], [eos]) for i in chunk], pad_id=model.config.pad_id)[0]
        tokens = model.generate(src.to(device), beam_size=beam, length_penalty=length_penalty)
        for i, row in zip(chunk, tokens.cpu(), strict=True):
            out[i] = data.decode(tok, row)
    return out


def bleu_scores(hyps, refs, lang):
    """sacreBLEU on detokenized, cased text (the standard score), and the score comparable with
    the pytorch-seq2seq tutorial: text split by spaCy's rule-based tokenizer (the one its
    `*_core_*_sm` models use), then lowercased, as its torchtext fields did."""
    import sacrebleu

    bleu = sacrebleu.BLEU()
    standard = bleu.corpus_score(hyps, [refs])
    tokenize = _spacy_tokenizer(lang)
    lower = sacrebleu.corpus_bleu(
        [tokenize(h).lower() for h in hyps], [[tokenize(r).lower() for r in refs]], tokenize="none", force=True
    )
    return {"bleu": standard.score, "bleu_lc_tok": lower.score, "detail": f"{standard} {bleu.get_signature()}"}


def _spacy_tokenizer(lang):
    import spacy

    nlp = spacy.blank(lang)
    return lambda text: " ".join(t.text for t in nlp.tokenizer(text))


def average_checkpoints(paths):
    """The element-wise mean of the models in `paths` (the paper averages the last 5)."""
    avg = None
    for p in paths:
        sd = load_checkpoint(p)["model"]
        if avg is None:
            avg = {k: v.clone().double() for k, v in sd.items()}
        else:
            for k, v in sd.items():
                avg[k] += v.double()
    return {k: (v / len(paths)).to(sd[k].dtype) for k, v in avg.items()}


def evaluate(out_dir, overrides=None, split="test"):
    """BLEU of the last checkpoint and of the average of the kept ones, greedy and beam, on the
    test set (or on the validation set, to choose beam size and length penalty)."""
    paths = checkpoints(Path(out_dir))
    if not paths:
        raise FileNotFoundError(f"no checkpoints in {out_dir}")
    cfg = make_config(None, overrides or {}, base=TrainConfig(**load_checkpoint(paths[-1])["config"]))
    if cfg.model != "transformer":
        return evaluate_task(cfg, paths[-1])
    tok = data.translation_tokenizer(cfg.dataset, cfg.src_lang, cfg.tgt_lang, cfg.vocab_size, cfg.tokenizer)
    test = data.read_parallel(cfg.dataset, split, cfg.src_lang, cfg.tgt_lang)
    model = T.Seq2SeqTransformer(model_config(cfg, tok))
    results = {"parameters": sum(p.numel() for p in model.parameters()), "direction": f"{cfg.src_lang}-{cfg.tgt_lang}"}
    for name, weights in (
        ("last", load_checkpoint(paths[-1])["model"]),
        (f"avg{len(paths)}", average_checkpoints(paths)),
    ):
        model.load_state_dict(weights)
        for beam in (1, cfg.beam):
            t0 = time.perf_counter()
            hyps = translate(model, tok, [s for s, _ in test], beam=beam, length_penalty=cfg.length_penalty)
            scores = bleu_scores(hyps, [t for _, t in test], cfg.tgt_lang)
            key = f"{split}_{name}_{'greedy' if beam == 1 else f'beam{beam}_lp{cfg.length_penalty}'}"
            results[key] = {**scores, "seconds": time.perf_counter() - t0}
            data.write_jsonl(Path(out_dir) / f"{key}.hyp.jsonl", [{"hyp": h} for h in hyps])
            print(key, json.dumps(results[key]))
    path = Path(out_dir) / f"{split}_results_lp{cfg.length_penalty}.json"
    path.write_text(json.dumps(results, indent=1))
    return results


def task_model(cfg, weights):
    """A run's task and model rebuilt from its config, holding `weights` (a checkpoint's "model")."""
    task = make_task(cfg, world=1)
    model = task.build_model()
    model.load_state_dict(weights)
    return task, model.eval()


def evaluate_task(cfg, path):
    """The task's validation metrics (BERT: held-out MLM / NSP; GPT: loss) of a run's checkpoint."""
    task, model = task_model(cfg, load_checkpoint(path)["model"])
    results = {"checkpoint": str(path), **task.validate(model, contextlib.nullcontext)}
    print(json.dumps(results, indent=1))
    (Path(cfg.out_dir) / "valid_results.json").write_text(json.dumps(results, indent=1))
    return results


def export_hf(out_dir, folder):
    """A BERT run's last checkpoint -> an HF folder (config.json, model.safetensors, tokenizer.json)
    that transformers, bert.BertForPreTraining.from_pretrained and finetune_glue.py load."""
    import shutil

    ck = load_checkpoint(latest_checkpoint(out_dir))
    cfg = TrainConfig(**ck["config"])
    if cfg.model != "bert":
        raise ValueError(f"--export-hf: only --model bert runs export (this one: {cfg.model})")
    _, model = task_model(cfg, ck["model"])
    model.save_pretrained(folder)
    shutil.copy(Path(cfg.dataset) / "tokenizer.json", Path(folder) / "tokenizer.json")
    return folder


def sample(out_dir, prompt, init_from="", max_new_tokens=500, temperature=0.8, top_k=200, top_p=None, seed=1337):
    """Text from a GPT: the last checkpoint of a --model gpt run (with its data's tokenizer), or an
    HF GPT-2 / GPT-1 folder or hub name (its tokenizer.json, else tiktoken's gpt2)."""
    import gpt

    if init_from:
        model = gpt.GPT.from_pretrained(init_from)
        folder = Path(T.resolve_checkpoint(init_from))
        if (folder / "tokenizer.json").exists():
            from tokenizers import Tokenizer

            tok = data.HFBPETokenizer(Tokenizer.from_file(str(folder / "tokenizer.json")))
        else:
            tok = data.TiktokenTokenizer("gpt2")
    else:
        ck = load_checkpoint(latest_checkpoint(out_dir))
        cfg = TrainConfig(**ck["config"])
        if cfg.model != "gpt":
            raise ValueError(f"--sample: {out_dir} is a {cfg.model} run; sampling needs a --model gpt run")
        task, model = task_model(cfg, ck["model"])
        tok = task.tok
    ids = tok.encode(prompt) or [tok.eot if tok.eot is not None else 0]
    g = torch.Generator().manual_seed(seed)
    out = model.eval().generate(
        torch.tensor([ids]), max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, generator=g
    )
    return tok.decode(out[0].tolist())


def plot(out_dir, compare=()):
    """metrics.jsonl -> curves.png against step: training and validation loss, and validation BLEU
    (translation) or MLM / NSP accuracy (BERT). Runs in `compare` are drawn dashed on the same axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for n, run in enumerate([out_dir, *compare]):
        rows = [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines()]
        train = [r for r in rows if "loss" in r]
        val = [r for r in rows if "val_loss" in r]
        style, name = ("-" if n == 0 else "--"), Path(run).name

        def curve(ax, rs, key, label, marker="", style=style, name=name):
            ax.plot([r["step"] for r in rs], [r[key] for r in rs], marker + style, label=f"{name}: {label}")

        curve(ax1, train, "loss", "train" + (" (label-smoothed)" if any("val_bleu" in r for r in val) else ""))
        curve(ax1, val, "val_loss", "validation", "o")
        if any("val_bleu" in r for r in val):
            curve(ax2, val, "val_bleu", "validation BLEU (greedy)", "o")
        elif any("mlm_acc" in r for r in train):
            for key in ("mlm_acc", "nsp_acc"):
                curve(ax2, train, key, f"train {key}")
                curve(ax2, val, "val_" + key, f"held-out {key}", "o")
        else:  # language modeling: training speed
            curve(ax2, train, "tokens_per_s", "tokens/s")
    ax1.set_xlabel("step")
    ax1.set_ylabel("loss per target")
    ax2.set_xlabel("step")
    labels = " ".join(line.get_label() for line in ax2.lines)
    ax2.set_ylabel("BLEU" if "BLEU" in labels else "tokens/s" if "tokens/s" in labels else "accuracy")
    for ax in (ax1, ax2):
        ax.legend(fontsize=7)
    fig.suptitle(" vs ".join(map(str, [out_dir, *compare])))
    fig.tight_layout()
    path = Path(out_dir) / "curves.png"
    fig.savefig(path, dpi=100)
    return path


# ----------------------------------------------------------------------------------- helpers


def checkpoints(out_dir):
    return sorted(Path(out_dir).glob("ckpt_*.pt"))


def latest_checkpoint(out_dir):
    paths = checkpoints(out_dir)
    if not paths:
        raise FileNotFoundError(f"--resume: no checkpoint (ckpt_*.pt) in {out_dir}")
    return paths[-1]


def load_checkpoint(path):
    """Weights only: tensors and plain containers, never arbitrary pickled objects."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise RuntimeError(f"cannot read checkpoint {path}: {type(e).__name__}: {e}") from e


def _python_rng_state(state):  # torch.load gives lists back where random.getstate() had tuples
    version, internal, gauss = state
    return (version, tuple(internal), gauss)


def git_version():
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def hardware(device):
    info = {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _version(module):
    try:
        return __import__(module).__version__
    except Exception:
        return None


def main(argv=None):
    actions, overrides = parse_args(argv)
    out_dir = overrides.get("out_dir", TrainConfig.out_dir)
    if actions["plot"]:
        print(plot(out_dir, actions["compare"]))
        return
    if actions["sample"] is not None:
        keys = ("max_new_tokens", "temperature", "top_k", "top_p")
        text = sample(out_dir, actions["sample"], overrides.get("init_from", ""), **{k: actions[k] for k in keys})
        print(text)
        return text
    if actions["export_hf"]:
        print(export_hf(out_dir, actions["export_hf"]))
        return
    if actions["evaluate"]:
        keep = ("beam", "length_penalty")
        return evaluate(out_dir, {k: v for k, v in overrides.items() if k in keep}, actions["split"])
    if actions["resume"]:
        base = TrainConfig(**load_checkpoint(latest_checkpoint(out_dir))["config"])
        cfg = make_config(actions["preset"], overrides, base=base)
    else:
        cfg = make_config(actions["preset"], overrides)
    run = Run(cfg, resume=actions["resume"])
    run.train()
    if run.ddp:
        dist.destroy_process_group()
    return run


if __name__ == "__main__":
    main()
