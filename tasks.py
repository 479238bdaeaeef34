"""tasks.py: how each model family meets the training loop (train.py knows no model).

A task holds a family's data and builds its model; the loop asks it for three things:

    task.epoch_batches(epoch) -> [micro-batch, ...]     each a list of sample indices, shuffled per epoch
    task.batch(indices)       -> {forward argument: tensor}   inputs, masks and labels: the whole batch
    task.build_model()        -> a module: model(**batch).sums is a contract.Sums, and
                                 model.counts(batch) gives the same counts before the forward

and, for validation, `task.validate(model, autocast) -> {"val_...": number}` (often the
objective's own means over held-out batches: `objective_means`). An HF baseline (`--model
hf-bert`, `hf-gpt2`) is HF's model with our initial weights, wrapped by `HFTwin` so that it
answers the same contract. docs/architecture.md shows a toy task end to end.
"""

import math
import shutil
from pathlib import Path

import numpy as np
import torch
from torch import nn

import data
import decoding
import pretraining_data
import recipes
import transformer as T
from contract import hf_twin, objective_means, seq2seq_sums, shift_right
from hf_checkpoint import resolve_checkpoint


def sinusoidal_(table, std):
    """A learned position table (P, d) starts from sinusoids (transformer.PositionalEncoding's) scaled to the
    init's std: positions that a dot product can compare from the first step (--pos-init sinusoidal)."""
    pe = T.PositionalEncoding(table.shape[1], table.shape[0]).pe
    with torch.no_grad():
        table.copy_(pe * (std / pe.std()))


def micro_size(cfg, world, field):
    """A micro-batch's share of the optimizer step's batch (cfg.<field>), which must split evenly."""
    total, parts = getattr(cfg, field), cfg.grad_accum * world
    if total % parts:
        raise ValueError(f"{field} ({total}) must be divisible by grad_accum * world_size ({cfg.grad_accum} * {world})")
    return total // parts


def length_grouped_steps(lengths, batch_size, seed, epoch, group=50):
    """One epoch's optimizer steps (lists of sample indices, batch_size each; the remainder is
    dropped): a permutation seeded by (seed, epoch), sorted by length within chunks of `group`
    steps so that each batch pads little, then the steps shuffled. A step holds the same samples
    whatever the accumulation or the number of processes."""
    g = torch.Generator().manual_seed(seed + epoch)
    order = torch.randperm(len(lengths), generator=g).tolist()
    order = order[: len(order) // batch_size * batch_size]
    steps = []
    for k in range(0, len(order), group * batch_size):
        chunk = sorted(order[k : k + group * batch_size], key=lambda i: -lengths[i])
        steps += [chunk[j : j + batch_size] for j in range(0, len(chunk), batch_size)]
    return [steps[i] for i in torch.randperm(len(steps), generator=g).tolist()]


# ---------------------------------------------------------------------------- BERT pretraining


class PretrainingTask:
    """--model bert (ours) or hf-bert (HF's BertForPreTraining, same initial weights): masked-LM +
    next-sentence prediction on the binary shards of `python data.py bert`: the mean MLM
    cross-entropy over the step's masked tokens plus the mean NSP cross-entropy over its
    sequences; validation on the held-out split (its masks fixed at preparation)."""

    Config = recipes.PretrainingConfig

    def __init__(self, cfg, world):
        self.cfg = cfg
        self.micro_size = micro_size(cfg, world, "batch_size")  # sequences per micro-batch
        self.train_data = pretraining_data.PretrainingData(cfg.dataset, "train")
        self.valid_data = pretraining_data.PretrainingData(cfg.dataset, "valid")
        from tokenizers import Tokenizer

        self.tok = Tokenizer.from_file(str(Path(cfg.dataset) / "tokenizer.json"))
        if self.tok.padding or self.tok.truncation:  # data.py saves the tokenizer it used, plain
            raise ValueError(
                f"{cfg.dataset}: its tokenizer.json pads or truncates, so the samples were made of"
                " sentences padded to a fixed length; prepare the data again (data.py now uses it plain)"
            )
        made_with = self.train_data.meta["settings"].get("tokenizer")  # absent in folders made before it was kept
        if made_with and data.tokenizer_hash(self.tok) != made_with:
            raise ValueError(f"--dataset {cfg.dataset}: its tokenizer.json is not the one the samples were made with")
        self.vocab = pretraining_data.Vocab.of(self.tok)
        self.spec = self.train_data.spec
        self.info = {"train_samples": len(self.train_data), "valid_samples": len(self.valid_data)}
        self.info["spec"] = self.spec.__dict__
        self.epoch = 0  # dynamic masking draws new masks each epoch

    def build_model(self):
        """The family's model (make_model), checked against the data's vocabulary; hf-*: HF's model with the
        same weights under our contract, the family's sums on HF's logits."""
        ours, objective, pair_logits = self.make_model()
        if ours.config.vocab_size != self.vocab.size:
            raise ValueError(
                f"the model's vocabulary ({ours.config.vocab_size}) differs from the data's ({self.vocab.size})"
            )
        if not self.cfg.model.startswith("hf-"):
            return ours

        def sums(out, b):  # HF projects every position: keep the masked ones
            where = b["labels"] != -100
            return objective(out.prediction_logits[where], b["labels"][where], getattr(out, pair_logits), b)

        return hf_twin(ours, sums, ("input_ids", "attention_mask", "token_type_ids"))

    def make_model(self):
        """-> (BertForPreTraining, its sums, the name of HF's pair logits), from --init-from or --arch."""
        import bert

        c = self.cfg
        if c.init_from:
            self.check_vocabulary(resolve_checkpoint(c.init_from))
            ours = bert.BertForPreTraining.from_pretrained(c.init_from)
        else:
            config = bert.BertConfig.from_preset(
                c.arch,
                vocab_size=self.vocab.size,
                pad_token_id=self.vocab.pad,
                hidden_dropout_prob=c.dropout,
                attention_probs_dropout_prob=c.dropout,
                max_position_embeddings=max(512, self.spec.max_seq_length),
            )
            ours = bert.BertForPreTraining(config)
            if c.pos_init == "sinusoidal":
                sinusoidal_(ours.bert.embeddings.position.weight, config.initializer_range)
        return ours, bert.pretraining_sums, "seq_relationship_logits"

    def check_vocabulary(self, folder):
        """A checkpoint's tokenizer (tokenizer.json or vocab.txt) must be the data's: same tokens, same ids."""
        folder, vocab = Path(folder), None
        if (folder / "tokenizer.json").exists():
            from tokenizers import Tokenizer

            vocab = Tokenizer.from_file(str(folder / "tokenizer.json")).get_vocab()
        elif (folder / "vocab.txt").exists():
            vocab = {t: i for i, t in enumerate(data.read_text(folder / "vocab.txt").splitlines())}
        if vocab is not None and vocab != self.tok.get_vocab():
            same = len(set(vocab.items()) & set(self.tok.get_vocab().items()))
            raise ValueError(
                f"--init-from {folder} has another vocabulary than --dataset {self.cfg.dataset}'s tokenizer.json"
                f" ({same} of {len(vocab)} tokens agree): prepare the data with `data.py bert --tokenizer {folder}`"
            )

    def epoch_batches(self, epoch):
        """Micro-batches of sample indices: a permutation seeded by (seed, epoch), cut in order."""
        order = torch.randperm(len(self.train_data), generator=torch.Generator().manual_seed(self.cfg.seed + epoch))
        self.epoch = epoch
        n = len(order) // self.micro_size * self.micro_size
        return order[:n].view(-1, self.micro_size).tolist()

    def batch(self, indices, dataset=None):
        """Samples -> a batch, masked by the pipeline (pretraining_data.PretrainingData.batch): dynamic masks
        seeded by (seed, epoch, sample), or with mask_prob training samples masked again at that rate."""
        dataset = self.train_data if dataset is None else dataset
        c, training = self.cfg, dataset is self.train_data
        return dataset.batch(
            indices, self.vocab, f"{c.seed}-{self.epoch}", c.mask_prob if training else 0.0, c.max_predictions
        )

    def valid_batches(self, size=64):
        n = len(self.valid_data)
        return (self.batch(list(range(k, min(k + size, n))), self.valid_data) for k in range(0, n, size))

    def validate(self, model, autocast):
        """Held-out MLM loss / accuracy and NSP loss / accuracy."""
        return {"val_" + k: v for k, v in objective_means(model, self.valid_batches(), autocast).items()}

    def export(self, model, folder):
        export(model, folder, self.cfg.dataset)


class AlbertPretrainingTask(PretrainingTask):
    """--model albert (ours) or hf-albert (HF's AlbertForPreTraining, same initial weights): PretrainingTask's
    data and objective, the pair label given as `sentence_order_label`: ALBERT's MLM + SOP on a folder of
    `data.py bert --pair-task sop --ngram 3`, or MLM + NSP (the same head) on an NSP folder."""

    def make_model(self):
        """-> (AlbertForPreTraining, its sums, the name of HF's pair logits), from --init-from or --arch."""
        import albert

        c = self.cfg
        if c.pos_init != "normal":
            raise ValueError(f"pos_init (--pos-init {c.pos_init}) is BERT's; ALBERT's positions start normal")
        if c.init_from:
            self.check_vocabulary(resolve_checkpoint(c.init_from))
            ours = albert.AlbertForPreTraining.from_pretrained(c.init_from)
        else:
            shape = dict(vocab_size=self.vocab.size, pad_token_id=self.vocab.pad)
            shape |= dict(max_position_embeddings=max(512, self.spec.max_seq_length))
            drop = dict(hidden_dropout_prob=c.dropout, attention_probs_dropout_prob=c.dropout)
            drop |= dict(classifier_dropout_prob=c.dropout)  # before the SOP head
            ours = albert.AlbertForPreTraining(albert.AlbertConfig.from_preset(c.arch, **shape, **drop))
        return ours, albert.pretraining_sums, "sop_logits"

    def batch(self, indices, dataset=None):
        b = super().batch(indices, dataset)
        b["sentence_order_label"] = b.pop("next_sentence_label")
        return b


class UniLMPretrainingTask(PretrainingTask):
    """--model unilm: UniLM's mixed pretraining (unilm.UniLMForLM, from --arch or --init-from) on a
    `data.py bert` folder: each sample's cloze tokens are predicted under a mode drawn for it (seeded by
    seed, epoch and sample): bidirectional 1/3, seq2seq 1/3 (segment A the source, B the target),
    left-to-right 1/6, right-to-left 1/6, the paper's shares; the pair label is not used."""

    MODES = (("bidirectional", 2), ("seq2seq", 2), ("left-to-right", 1), ("right-to-left", 1))  # sixths

    def make_model(self):
        import bert
        import unilm

        c = self.cfg
        if c.init_from:
            self.check_vocabulary(resolve_checkpoint(c.init_from))
            return unilm.UniLMForLM.from_pretrained(c.init_from), None, None
        shape = dict(vocab_size=self.vocab.size, pad_token_id=self.vocab.pad)
        drop = dict(hidden_dropout_prob=c.dropout, attention_probs_dropout_prob=c.dropout)
        shape |= dict(max_position_embeddings=max(512, self.spec.max_seq_length))
        config = bert.BertConfig.from_preset(c.arch, **shape, **drop)
        return unilm.UniLMForLM(config), None, None

    def batch(self, indices, dataset=None):
        import unilm

        b = super().batch(indices, dataset)
        split = 0 if dataset is None or dataset is self.train_data else 1
        modes = [self.mode(self.cfg.seed, self.epoch if split == 0 else 0, i, split) for i in indices]
        names = ("input_ids", "attention_mask", "token_type_ids")
        masks = [unilm.mode_mask(m, *(b[k][j : j + 1] for k in names)) for j, m in enumerate(modes)]  # (1, T, T) each
        b.pop("next_sentence_label")
        return {**b, "self_attention_mask": torch.cat(masks)}

    @classmethod
    def mode(cls, seed, epoch, index, split=0):
        """The mode of a sample, a pure function of (seed, epoch, sample index, split)."""
        draw = np.random.default_rng([seed, epoch, index, split]).integers(6)
        for name, sixths in cls.MODES:
            if draw < sixths:
                return name
            draw -= sixths


class DistillTask(PretrainingTask):
    """--model tinybert: TinyBERT's general distillation (bert.TinyBertDistiller, stage "intermediate"):
    a student BertModel (--arch, or --init-from) learns --teacher's hidden states and attention scores
    on the original text of a `data.py bert` folder made with the teacher's tokenizer (masks undone;
    no labels). Validation: the same losses on the held-out split; the export is the student."""

    Config = recipes.DistillConfig

    def build_model(self):
        import bert

        c = self.cfg
        if not c.teacher:
            raise ValueError("--teacher: tinybert distills a teacher; give an HF BERT folder or hub name")
        for source in (c.teacher, c.init_from):
            if source:
                self.check_vocabulary(resolve_checkpoint(source))
        teacher = bert.BertModel.from_pretrained(c.teacher)
        if c.init_from:
            student = bert.BertModel.from_pretrained(c.init_from)
            student.pooler = None  # not distilled (no gradient would reach it)
        else:
            t, drop = teacher.config, dict(hidden_dropout_prob=c.dropout, attention_probs_dropout_prob=c.dropout)
            shape = dict(vocab_size=t.vocab_size, pad_token_id=t.pad_token_id, type_vocab_size=t.type_vocab_size)
            shape |= dict(max_position_embeddings=t.max_position_embeddings, hidden_act=t.hidden_act)
            student = bert.BertModel(bert.BertConfig.from_preset(c.arch, **shape, **drop), add_pooling_layer=False)
        if student.config.vocab_size != self.vocab.size:
            raise ValueError(
                f"the student's vocabulary ({student.config.vocab_size}) differs from the data's ({self.vocab.size})"
            )
        return bert.TinyBertDistiller(student, teacher)

    def batch(self, indices, dataset=None):
        b = super().batch(indices, dataset)
        ids = torch.where(b["labels"] != -100, b["labels"], b["input_ids"])  # the text before masking
        return {"input_ids": ids, "attention_mask": b["attention_mask"], "token_type_ids": b["token_type_ids"]}


# ------------------------------------------------------------------------ GPT language modeling


class LMTask:
    """--model gpt (ours) or hf-gpt2 (HF's GPT2LMHeadModel, same initial weights): next-token
    cross-entropy on random windows of the token files of `python data.py lm` (nanoGPT's batches),
    drawn by a generator seeded per epoch so that runs resume exactly; validation estimates the
    loss on eval_iters fixed batches of each split."""

    Config = recipes.LMConfig
    continues_text = True  # train.py --sample (T5, BART: their model's generate)
    next_token_loss = True  # the loss is the text's own cost: also reported in bits per byte (val_bpb)

    def __init__(self, cfg, world):
        import gpt

        self.cfg = cfg
        self.micro_size = micro_size(cfg, world, "batch_size")  # windows per micro-batch
        self.meta, self.tok, self.splits = data.load_lm(cfg.dataset)
        self.context = self.window = cfg.context or gpt.GPTConfig.from_preset(cfg.arch).n_positions
        self.check_length()
        self.info = {"tokens": self.meta["tokens"], "tokenizer": self.meta["tokenizer"]}

    def build_model(self):
        import gpt

        c = self.cfg
        drop = dict(resid_pdrop=c.dropout, embd_pdrop=c.dropout, attn_pdrop=c.dropout)
        if c.init_from:
            ours = gpt.GPT.from_pretrained(c.init_from, **drop)
        else:
            ours = gpt.GPT(gpt.GPTConfig.from_preset(c.arch, vocab_size=self.meta["vocab_size"], **drop))
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
        return hf_twin(ours, lambda out, b: gpt.lm_sums(out.logits, b["targets"]), ("input_ids",))

    def check_length(self):
        if min(len(t) for t in self.splits.values()) <= self.window + 1:
            raise ValueError(f"the data has fewer tokens than a window of {self.window}")

    def _offsets(self, split, n, seed):
        g = torch.Generator().manual_seed(seed)
        return torch.randint(len(self.splits[split]) - self.window, (n, self.micro_size), generator=g).tolist()

    def epoch_batches(self, epoch):
        """An epoch: as many random windows as the training tokens fill, in micro-batches."""
        n = max(1, len(self.splits["train"]) // (self.window * self.micro_size))
        return self._offsets("train", n, self.cfg.seed + epoch)

    def batch(self, offsets, split="train"):
        """Windows -> inputs and their next tokens (`targets`: nanoGPT's T targets for T inputs,
        which HF's shifted `labels` cannot express within the context)."""
        x, y = data.lm_windows(self.splits[split], offsets, self.context)
        return {"input_ids": x, "targets": y}

    def validate(self, model, autocast):
        """Mean loss over eval_iters fixed batches of each split (nanoGPT's estimate_loss), and in bits per
        byte of text (val_bpb: comparable across tokenizers) where meta.json counts the split's bytes."""
        out = {}
        for split, key in (("val", "val_loss"), ("train", "train_eval_loss")):
            batches = (self.batch(o, split) for o in self._offsets(split, self.cfg.eval_iters, seed=12345))
            out[key] = objective_means(model, batches, autocast)["loss"]
        if self.next_token_loss and self.meta.get("bytes", {}).get("val"):  # nats/token x tokens/byte, in bits
            out["val_bpb"] = out["val_loss"] / math.log(2) * self.meta["tokens"]["val"] / self.meta["bytes"]["val"]
        return out

    def export(self, model, folder):
        export(model, folder, self.cfg.dataset)


class PermutationLMTask(LMTask):
    """--model xlnet (ours) or hf-xlnet (HF's XLNetLMHeadModel, same initial weights): XLNet's permutation
    LM on random windows of `data.py lm` token files (xlnet.plm_example: span targets, a factorization order
    per part, the first reuse_len tokens a part of their own, seeded by seed, window and split); each
    window's memory is the reuse_len tokens before it, encoded without gradient and without a
    permutation (zihangdai/xlnet carries the previous step's states instead: here every batch stands
    alone, so accumulation, DDP and resume stay exact); HF's twin gets its memory from its own transformer."""

    Config = recipes.PermutationLMConfig
    continues_text = False
    next_token_loss = False  # its loss is not the text's next-token cost: no bits per byte

    def __init__(self, cfg, world):
        self.cfg = cfg
        self.micro_size = micro_size(cfg, world, "batch_size")
        self.meta, self.tok, self.splits = data.load_lm(cfg.dataset)
        self.context = cfg.context or 512
        self.reuse = cfg.reuse_len or self.context // 2
        self.predict = cfg.num_predict or self.context // 6
        self.perm_size = cfg.perm_size or self.reuse
        if (
            not 0 < self.reuse < self.context
            or self.reuse % self.perm_size
            or (self.context - self.reuse) % self.perm_size
        ):
            raise ValueError(
                f"reuse_len ({self.reuse}) must be in (0, context {self.context}), and perm_size ({self.perm_size})"
                " must divide both it and the rest of the window"
            )
        self.window = self.reuse + self.context  # the memory, then the window
        self.check_length()
        self.info = {"tokens": self.meta["tokens"], "tokenizer": self.meta["tokenizer"]}

    def build_model(self):
        import xlnet

        c = self.cfg
        if c.init_from:
            ours = xlnet.XLNetLMHeadModel.from_pretrained(c.init_from, dropout=c.dropout)
        else:
            config = xlnet.XLNetConfig.from_preset(c.arch, vocab_size=self.meta["vocab_size"], dropout=c.dropout)
            ours = xlnet.XLNetLMHeadModel(config)
        ours.config.reuse_len = ours.config.mem_len = None  # the memory: all of mem_ids
        if ours.config.vocab_size != self.meta["vocab_size"]:
            raise ValueError(
                f"the model's vocabulary ({ours.config.vocab_size}) is not the data's ({self.meta['vocab_size']})"
            )
        if c.model == "xlnet":
            return ours
        inputs = ("input_ids", "perm_mask", "target_mapping", "mem_ids")
        twin = hf_twin(ours, lambda out, b: xlnet.lm_sums(out.logits, b["labels"], b), inputs)
        twin.hf = HFWithMemory(twin.hf)
        return twin

    def batch(self, offsets, split="train"):
        import xlnet

        tokens, R, out = self.splits[split], self.reuse, []
        for o in offsets:
            row = torch.from_numpy(tokens[o : o + self.window].astype(np.int64))
            rng = np.random.default_rng([self.cfg.seed, o, split == "train"])
            out.append({"mem_ids": row[:R], **xlnet.plm_example(row[R:], R, self.predict, self.perm_size, rng)})
        return {k: torch.stack([e[k] for e in out]) for k in out[0]}


class HFWithMemory(nn.Module):
    """HF's XLNetLMHeadModel given mem_ids: its transformer encodes them (no gradient) into its memory."""

    def __init__(self, hf):
        super().__init__()
        self.model, self.config = hf, hf.config

    def forward(self, input_ids, perm_mask, target_mapping, mem_ids, labels=None):
        with torch.no_grad():
            mems = self.model.transformer(input_ids=mem_ids, use_mems=True).mems
        x = dict(input_ids=input_ids, perm_mask=perm_mask, target_mapping=target_mapping, mems=mems)
        return self.model(**x, labels=labels)


class SpanCorruptionTask(LMTask):
    """--model t5 (ours) or hf-t5 (HF's T5ForConditionalGeneration, same initial weights): T5's span
    corruption on random windows of the token files of `python data.py lm`. A window holds as many
    raw tokens as an input of `context` tokens takes after corruption (568 for 512); its noise is
    seeded by the run's seed and the window's offset, so runs resume exactly. A T5 vocabulary
    (`--tokenizer unigram<N>`) gives its own pad (the decoder start), eos and 100 sentinels; one
    with <pad> and </s> (a translation vocabulary) gets the sentinels after its ids; with any
    other, the data's ids stay and T5's come after them: pad, eos, then the sentinels,
    <extra_id_0> the top id. Validation: the loss on eval_iters fixed batches of each split."""

    continues_text = False
    next_token_loss = False  # its loss is not the text's next-token cost: no bits per byte

    def __init__(self, cfg, world):
        import t5

        self.cfg = cfg
        self.micro_size = micro_size(cfg, world, "batch_size")  # windows per micro-batch
        self.meta, self.tok, self.splits = data.load_lm(cfg.dataset)
        self.context = cfg.context or 512  # corrupted input tokens
        self.window, self.target_length = t5.input_and_target_lengths(self.context)
        self.check_length()
        V, tok = self.meta["vocab_size"], getattr(self.tok, "tok", None)
        pad, eos, sentinel = (tok.token_to_id(t) if tok else None for t in ("<pad>", "</s>", "<extra_id_0>"))
        if sentinel is not None:
            self.pad, self.eos, self.first_sentinel, self.vocab_size = pad, eos, sentinel, V
        elif pad is not None and eos is not None:  # e.g. a translation vocabulary: its own pad and eos
            self.pad, self.eos, self.first_sentinel, self.vocab_size = pad, eos, V + 99, V + 100
        else:
            self.pad, self.eos, self.first_sentinel, self.vocab_size = V, V + 1, V + 101, V + 102
        self.info = {"tokens": self.meta["tokens"], "tokenizer": self.meta["tokenizer"], "window": self.window}

    def build_model(self):
        import t5

        c = self.cfg
        ids = dict(pad_token_id=self.pad, eos_token_id=self.eos, decoder_start_token_id=self.pad)
        if c.init_from:
            ours = t5.T5ForConditionalGeneration.from_pretrained(c.init_from, dropout_rate=c.dropout)
        else:
            config = t5.T5Config.from_preset(c.arch, vocab_size=self.vocab_size, dropout_rate=c.dropout, **ids)
            ours = t5.T5ForConditionalGeneration(config)
        if ours.config.vocab_size != self.vocab_size:
            raise ValueError(
                f"the model's vocabulary ({ours.config.vocab_size}) differs from the data's + T5's ({self.vocab_size})"
            )
        if c.model == "t5":
            return ours
        sums = lambda out, b: seq2seq_sums(out.logits, b["labels"], b["input_ids"], b.get("attention_mask"))  # noqa: E731
        return hf_twin(ours, sums, ("input_ids", "decoder_input_ids"))

    def batch(self, offsets, split="train"):
        import t5

        tokens, seed = self.splits[split], [self.cfg.seed, 0 if split == "train" else 1]
        pairs = [
            t5.span_corruption(
                tokens[o : o + self.window], np.random.default_rng([*seed, o]), self.first_sentinel, self.eos
            )
            for o in offsets
        ]
        inputs, labels = (torch.from_numpy(np.stack(x).astype(np.int64)) for x in zip(*pairs, strict=True))
        decoder_input_ids = shift_right(labels, self.pad, self.pad)
        return {"input_ids": inputs, "decoder_input_ids": decoder_input_ids, "labels": labels}


class DenoisingTask(LMTask):
    """--model bart (ours) or hf-bart (HF's BartForConditionalGeneration, same initial weights):
    BART's denoising on random windows of the token files of `python data.py lm`: each window,
    <s> + (context - 2) tokens + </s>, is the target; the encoder reads it noised by --noising
    (bart.add_noise; sentences end at the newline token, the sentence separator of data.py's
    documents), seeded by the run's seed and the window's offset, so runs resume exactly. A BART
    vocabulary (`--tokenizer bart-bpe<N>`) gives its ids; those of <s> <pad> </s> <mask> that
    another lacks come after its ids (a translation vocabulary: <mask> only). Validation: the loss
    on eval_iters fixed batches of each split."""

    Config = recipes.DenoisingConfig
    continues_text = False
    next_token_loss = False  # its loss is not the text's next-token cost: no bits per byte

    def __init__(self, cfg, world):
        import bart

        if cfg.noising not in bart.NOISINGS:
            raise ValueError(f"noising (--noising) must be one of {', '.join(bart.NOISINGS)}, got {cfg.noising!r}")
        self.cfg = cfg
        self.micro_size = micro_size(cfg, world, "batch_size")  # windows per micro-batch
        self.meta, self.tok, self.splits = data.load_lm(cfg.dataset)
        self.context = cfg.context or 512
        self.window = self.context - 2  # the inner tokens; <s> and </s> around them
        if self.window < 1:
            raise ValueError(f"context (--context {cfg.context}) must be >= 3 for BART: <s>, a token, </s>")
        self.check_length()
        V, tok = self.meta["vocab_size"], getattr(self.tok, "tok", None)
        found = [tok.token_to_id(t) if tok else None for t in ("<s>", "<pad>", "</s>", "<mask>")]
        extra = iter(range(V, V + 4))  # the ones the vocabulary lacks come after its ids
        self.bos, self.pad, self.eos, self.mask = (i if i is not None else next(extra) for i in found)
        self.vocab_size = V + found.count(None)
        newline = tok.encode("\n", add_special_tokens=False).ids if tok else []
        self.full_stop = newline[0] if len(newline) == 1 else -1  # no such token: one sentence per window
        self.info = {"tokens": self.meta["tokens"], "tokenizer": self.meta["tokenizer"], "noising": cfg.noising}

    def build_model(self):
        import bart

        c = self.cfg
        drop = dict(dropout=c.dropout, attention_dropout=c.dropout, activation_dropout=c.dropout)
        if c.init_from:
            ours = bart.BartForConditionalGeneration.from_pretrained(c.init_from, **drop)
        else:
            ids = dict(bos_token_id=self.bos, pad_token_id=self.pad, eos_token_id=self.eos)
            ids |= dict(decoder_start_token_id=self.eos, forced_eos_token_id=self.eos)
            config = bart.BartConfig.from_preset(c.arch, vocab_size=self.vocab_size, **drop, **ids)
            ours = bart.BartForConditionalGeneration(config)
            if c.pos_init == "sinusoidal":  # position p is row p + 2 (HF's offset) in both stacks
                for stack in (ours.model.encoder, ours.model.decoder):
                    sinusoidal_(stack.embed_positions.weight[2:], config.init_std)
        mc = ours.config
        if mc.vocab_size != self.vocab_size or mc.max_position_embeddings < self.context:
            raise ValueError(
                f"the model's vocabulary ({mc.vocab_size}) or positions ({mc.max_position_embeddings}) do not fit"
                f" the data's vocabulary + BART's ({self.vocab_size}) or --context {self.context}"
            )
        if c.model == "bart":
            return ours

        sums = lambda out, b: seq2seq_sums(out.logits, b["labels"], b["input_ids"], b["attention_mask"])  # noqa: E731
        return hf_twin(ours, sums, ("input_ids", "attention_mask", "decoder_input_ids"))

    def batch(self, offsets, split="train"):
        import bart

        tokens, seed = self.splits[split], [self.cfg.seed, 0 if split == "train" else 1]
        docs = [np.concatenate([[self.bos], tokens[o : o + self.window], [self.eos]]).astype(np.int64) for o in offsets]
        noised = [
            bart.add_noise(
                d, np.random.default_rng([*seed, o]), self.cfg.noising, self.mask, self.full_stop, self.vocab_size
            )
            for d, o in zip(docs, offsets, strict=True)
        ]
        inputs = torch.full((len(docs), max(map(len, noised))), self.pad, dtype=torch.long)
        for r, x in enumerate(noised):
            inputs[r, : len(x)] = torch.from_numpy(x)
        labels = torch.from_numpy(np.stack(docs))
        decoder_input_ids = shift_right(labels, self.eos, self.pad)
        return {
            "input_ids": inputs,
            "attention_mask": inputs != self.pad,
            "decoder_input_ids": decoder_input_ids,
            "labels": labels,
        }

    def validate(self, model, autocast):
        """LMTask's losses, and whether the encoder is used: val_loss_other_source is the loss when each
        window's encoder reads the next window's noised text (rolled by one in the batch). A used encoder
        gives a gap above val_loss; a collapsed one (decoding from the prefix alone) none."""
        out = super().validate(model, autocast)
        rolled = lambda b: b | {k: b[k].roll(1, 0) for k in ("input_ids", "attention_mask")}  # noqa: E731
        batches = (rolled(self.batch(o, "val")) for o in self._offsets("val", self.cfg.eval_iters, seed=12345))
        return out | {"val_loss_other_source": objective_means(model, batches, autocast)["loss"]}


def export(model, folder, dataset):
    """An HF folder: the model (config.json, model.safetensors) and the data's tokenizer.json, if any."""
    model.save_pretrained(folder)
    if (Path(dataset) / "tokenizer.json").exists():
        shutil.copy(Path(dataset) / "tokenizer.json", Path(folder) / "tokenizer.json")


def sample(model, tok, prompt, max_new_tokens=500, temperature=0.8, top_k=200, top_p=None, seed=1337):
    """Text a GPT writes after `prompt`."""
    ids = tok.encode(prompt) or [tok.eot if tok.eot is not None else 0]
    g = torch.Generator().manual_seed(seed)
    out = model.eval().generate(
        torch.tensor([ids]), max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, generator=g
    )
    return tok.decode(out[0].tolist())


def check_sampling(max_new_tokens, temperature, top_k, top_p):  # the CLI's flags, before any model is read
    if max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens must be >= 1, got {max_new_tokens}")
    decoding.check_sampling(temperature, top_k, top_p, name=lambda k: "--" + k.replace("_", "-"))


def hf_gpt_and_tokenizer(init_from):
    """An HF GPT-2 / GPT-1 folder or hub name -> (our GPT, its tokenizer.json, else tiktoken's gpt2)."""
    import gpt

    model = gpt.GPT.from_pretrained(init_from)
    folder = Path(resolve_checkpoint(init_from))
    if (folder / "tokenizer.json").exists():
        from tokenizers import Tokenizer

        return model, data.HFBPETokenizer(Tokenizer.from_file(str(folder / "tokenizer.json")))
    return model, data.TiktokenTokenizer("gpt2")
