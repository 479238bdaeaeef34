"""Translation, as the training loop meets it: the paper's model (`--model transformer`), T5's text
to text (`t5-translate`) and BART fine-tuned whole (`bart-translate`), each a task for train.Run
(see tasks.py for what a task gives the loop), and their evaluation: sentences decoded in
length-sorted batches, and BLEU twice (sacreBLEU's standard score, and the lowercased
spaCy-tokenized score that the pytorch-seq2seq tutorial reports)."""

import json
import math
import random
import time
from pathlib import Path

import torch

import data
import recipes
import transformer as T
from contract import device_of, objective_means, to_device
from hf_checkpoint import read_json, resolve_checkpoint
from run_folder import average_checkpoints
from tasks import micro_size


@torch.no_grad()
def translate(tok, sentences, generate, pad_id, prefix=(), batch_size=128, progress=None, eos=None):
    """Sentences (each after `prefix` ids, then `eos`: by default the tokenizer's EOS) -> detokenized
    translations, in order, batched by length for speed: generate(src (B, S)) gives each row's tokens,
    decoded up to the first EOS. progress: a bar's title (a bar over the sentences)."""
    from tqdm import tqdm

    eos = tok.token_to_id(data.EOS) if eos is None else eos
    ids = [[*prefix, *e.ids, eos] for e in tok.encode_batch(sentences, add_special_tokens=False)]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    out = [None] * len(ids)
    bar = tqdm(total=len(ids), desc=progress, disable=progress is None, unit="sentence", leave=False)
    for k in range(0, len(order), batch_size):
        chunk = order[k : k + batch_size]
        src = data.collate_translation([(ids[i], [eos]) for i in chunk], pad_id=pad_id)[0]
        for i, row in zip(chunk, generate(src).cpu(), strict=True):
            out[i] = data.decode(tok, row, eos)
        bar.update(len(chunk))
    bar.close()
    return out


def bleu_scores(hyps, refs, lang):
    """sacreBLEU on detokenized, cased text (the standard score), and the score comparable with
    the pytorch-seq2seq tutorial: text split by spaCy's rule-based tokenizer (the one its
    `*_core_*_sm` models use), then lowercased, as its torchtext fields did."""
    import sacrebleu
    import spacy

    bleu = sacrebleu.BLEU()
    standard = bleu.corpus_score(hyps, [refs])
    nlp = spacy.blank(lang)
    tokenize = lambda text: " ".join(t.text for t in nlp.tokenizer(text))
    lower = sacrebleu.corpus_bleu(
        [tokenize(h).lower() for h in hyps], [[tokenize(r).lower() for r in refs]], tokenize="none", force=True
    )
    return {"bleu": standard.score, "bleu_lc_tok": lower.score, "detail": f"{standard} {bleu.get_signature()}"}


# ------------------------------------------------------------------------------- the tasks


def model_config(c, tok):
    """The translation model's config from the run's config and its tokenizer's vocabulary."""
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


class TranslationTask:
    """--model transformer: the paper's model on a translation dataset. Micro-batches of pairs cut
    by token count; label-smoothed loss per target token; validation loss, perplexity, greedy BLEU;
    `evaluate`: test BLEU of the last and the averaged checkpoints, greedy and beam."""

    Config = recipes.PaperTranslationConfig  # the run's settings: the loop's and this family's

    def __init__(self, cfg, world):
        self.cfg = cfg
        self.micro_size = micro_size(cfg, world, "batch_tokens")  # tokens per micro-batch
        self.tok = data.translation_tokenizer(cfg.dataset, cfg.src_lang, cfg.tgt_lang, cfg.vocab_size, cfg.tokenizer)
        self.train_pairs = data.encode_pairs(
            self.tok, data.read_parallel(cfg.dataset, "train", cfg.src_lang, cfg.tgt_lang), cfg.max_len
        )
        self.train_pairs = self.share(self.train_pairs)
        self.valid_text = data.read_parallel(cfg.dataset, "valid", cfg.src_lang, cfg.tgt_lang)
        self.valid_pairs = data.encode_pairs(self.tok, self.valid_text)
        self.lengths = [max(len(s), len(t)) for s, t in self.train_pairs]
        self.pad = self.tok.token_to_id(data.PAD)
        self.info = {"train_pairs": len(self.train_pairs)}

    def share(self, pairs):
        """A random share (--train-fraction) of the training pairs, the same for every run of this seed."""
        c = self.cfg
        if c.train_fraction >= 1:
            return pairs
        keep = sorted(random.Random(c.seed).sample(range(len(pairs)), round(c.train_fraction * len(pairs))))
        return [pairs[i] for i in keep]

    def build_model(self):
        return T.TranslationModel(model_config(self.cfg, self.tok))

    def epoch_batches(self, epoch):
        return data.token_batches(self.lengths, self.micro_size, seed=self.cfg.seed, epoch=epoch)

    def batch(self, indices, pairs=None):
        pairs = self.train_pairs if pairs is None else pairs
        src, tgt, labels = data.collate_translation([pairs[i] for i in indices], self.pad)
        return {"src": src, "tgt": tgt, "labels": labels}

    @torch.no_grad()
    def validate(self, model, autocast):
        """Validation cross-entropy (no smoothing, per target token), perplexity and greedy BLEU."""
        device, total, n = device_of(model), 0.0, 0
        for b in data.token_batches([max(len(s), len(t)) for s, t in self.valid_pairs], 8192, shuffle=False):
            batch = to_device(self.batch(b, self.valid_pairs), device)
            with autocast():
                logits = model(batch["src"], batch["tgt"]).logits
            total += float(T.label_smoothed_loss(logits, batch["labels"], self.pad, smoothing=0.0, reduction="sum"))
            n += int((batch["labels"] != self.pad).sum())
        hyps = self.translate(model, [s for s, _ in self.valid_text], beam=1)
        bleu = bleu_scores(hyps, [t for _, t in self.valid_text], self.cfg.tgt_lang)
        return {"val_loss": total / n, "val_ppl": math.exp(total / n), "val_bleu": bleu["bleu"]}

    def evaluate(self, model, paths, split, load):
        """BLEU of the last checkpoint and of the average of the kept ones, greedy and beam, on the
        test set (or on the validation set, to choose beam size and length penalty)."""
        c, out_dir = self.cfg, Path(paths[-1]).parent
        test = data.read_parallel(c.dataset, split, c.src_lang, c.tgt_lang)
        results = {"parameters": sum(p.numel() for p in model.parameters()), "direction": f"{c.src_lang}-{c.tgt_lang}"}
        weights = [("last", lambda: load(paths[-1])["model"])]  # and the average, when there is one
        weights += [(f"avg{len(paths)}", lambda: average_checkpoints(paths, load))] if len(paths) > 1 else []
        for name, read in weights:
            model.load_state_dict(read())
            for beam in (1, c.beam):
                key = f"{split}_{name}_" + ("greedy" if beam == 1 else f"beam{beam}_lp{c.length_penalty}")
                t0 = time.perf_counter()
                hyps = self.translate(model, [s for s, _ in test], beam, c.length_penalty, progress=key)
                scores = bleu_scores(hyps, [t for _, t in test], c.tgt_lang)
                results[key] = {**scores, "seconds": time.perf_counter() - t0}
                data.write_jsonl(out_dir / f"{key}.hyp.jsonl", [{"hyp": h} for h in hyps])
                print(key, json.dumps(results[key]))
        (out_dir / f"{split}_results_lp{c.length_penalty}.json").write_text(json.dumps(results, indent=1))
        return results

    def export(self, model, folder):
        """--export-hf (T5, BART and UniLM translators; the paper's model has no HF twin): the model's HF
        folder and the translation vocabulary's tokenizer.json beside it."""
        model.save_pretrained(folder)
        self.tok.save(str(Path(folder) / "tokenizer.json"))

    def translate(self, model, sentences, beam=4, length_penalty=0.6, progress=None):
        device = device_of(model.eval())
        generate = lambda src: model.generate(src.to(device), beam_size=beam, length_penalty=length_penalty)  # noqa: E731
        return translate(self.tok, sentences, generate, model.config.pad_id, progress=progress)


class T5TranslationTask(TranslationTask):
    """--model t5-translate: translation as text to text, T5's way: "translate German to English: "
    + the source sentence -> the target sentence, on the translation task's data and joint subword
    vocabulary (its <pad> is T5's pad and decoder start, its </s> T5's eos). The loss is smoothed
    by --label-smoothing as the translation model's (T5 does not smooth: 0 gives its plain
    cross-entropy); validation: loss and greedy BLEU; `evaluate`: test BLEU, greedy and beam (HF's
    length penalty, sum log p / length**lp)."""

    Config = recipes.TextToTextConfig
    LANGUAGES = {"de": "German", "en": "English", "fr": "French", "cs": "Czech"}

    def __init__(self, cfg, world):
        super().__init__(cfg, world)
        names = [self.LANGUAGES.get(lang, lang) for lang in (cfg.src_lang, cfg.tgt_lang)]
        self.prefix = self.tok.encode(f"translate {names[0]} to {names[1]}: ", add_special_tokens=False).ids
        self.eos = self.tok.token_to_id(data.EOS)
        self.target_prefix, self.start = [], self.pad  # before each target; the decoder's start token
        self.lengths = self.lengths_of(self.train_pairs)

    def lengths_of(self, pairs):  # what batching by tokens counts: the longer side, the prefixes included
        return [max(len(self.prefix) + len(s), len(self.target_prefix) + len(t)) for s, t in pairs]

    def build_model(self):
        import t5

        c, ids = self.cfg, dict(pad_token_id=self.pad, eos_token_id=self.eos, decoder_start_token_id=self.pad)
        if c.init_from:  # e.g. a span-corruption run on this vocabulary (data.py lm --tokenizer <its file>)
            model = t5.T5ForConditionalGeneration.from_pretrained(c.init_from, dropout_rate=c.dropout)
            self.check_checkpoint(model.config, ids, resolve_checkpoint(c.init_from))
        else:
            V = self.tok.get_vocab_size()
            config = t5.T5Config.from_preset(c.arch, vocab_size=V, dropout_rate=c.dropout, **ids)
            model = t5.T5ForConditionalGeneration(config)
        model.label_smoothing = c.label_smoothing
        return model

    def check_checkpoint(self, config, ids, folder):
        """--init-from must speak this vocabulary: its tokens (tokenizer.json, when it has one) at the same
        ids, room for them all, and the same pad, eos and decoder start."""
        have = {k: getattr(config, k) for k in ids}
        if config.vocab_size < self.tok.get_vocab_size() or have != ids:
            raise ValueError(
                f"--init-from {folder}: vocabulary {config.vocab_size} and ids {have}; this task needs at least"
                f" {self.tok.get_vocab_size()} tokens and {ids}"
            )
        from tokenizers import Tokenizer

        path = Path(folder) / "tokenizer.json"
        if path.exists() and (vocab := Tokenizer.from_file(str(path)).get_vocab()) != self.tok.get_vocab():
            raise ValueError(
                f"--init-from {folder} has another tokenizer.json ({len(vocab)} tokens) than this task's"
                f" ({self.tok.get_vocab_size()}): pretrain on `data.py lm --tokenizer <this task's tokenizer file>`"
            )

    def batch(self, indices, pairs=None):
        pairs = self.train_pairs if pairs is None else pairs
        examples = [(self.prefix + pairs[i][0], self.target_prefix + pairs[i][1]) for i in indices]
        src, decoder_input_ids, labels = data.collate_translation(examples, self.pad, bos_id=self.start)
        labels = labels.masked_fill(labels == self.pad, -100)
        return {
            "input_ids": src,
            "attention_mask": src != self.pad,
            "decoder_input_ids": decoder_input_ids,
            "labels": labels,
        }

    @torch.no_grad()
    def validate(self, model, autocast):
        lengths = self.lengths_of(self.valid_pairs)
        batches = (self.batch(b, self.valid_pairs) for b in data.token_batches(lengths, 8192, shuffle=False))
        row = {"val_" + k: v for k, v in objective_means(model, batches, autocast).items()}
        hyps = self.translate(model, [s for s, _ in self.valid_text], beam=1)
        return {**row, "val_bleu": bleu_scores(hyps, [t for _, t in self.valid_text], self.cfg.tgt_lang)["bleu"]}

    def translate(self, model, sentences, beam=4, length_penalty=0.6, progress=None):
        device, P = device_of(model.eval()), len(self.prefix)

        def generate(src):  # at most the paper model's limit: source length + 50; without the start token
            src = src.to(device)
            n = min(src.shape[1] - P + 50, getattr(model.config, "max_position_embeddings", 10**6) - 1)  # BART's
            out = model.generate(src, src != self.pad, max_new_tokens=n, num_beams=beam, length_penalty=length_penalty)
            return out[:, 1:]

        return translate(self.tok, sentences, generate, self.pad, self.prefix, progress=progress)


class BartTranslationTask(T5TranslationTask):
    """--model bart-translate: BART fine-tuned whole as a translator (as mBART is; the paper's extra
    source encoder for a foreign language is left out): <s> source </s> -> <s> target </s>, the
    decoder starting from </s>, generation with <s> forced first. The vocabulary: --tokenizer (a
    pretraining export's tokenizer.json, which must equal --init-from's) or the dataset's joint
    subwords. Loss (smoothed by --label-smoothing, 0.1 in fairseq's BART recipes), validation and
    `evaluate` as t5-translate's."""

    def __init__(self, cfg, world):
        TranslationTask.__init__(self, cfg, world)
        self.bos, self.eos = self.tok.token_to_id(data.BOS), self.tok.token_to_id(data.EOS)
        self.prefix, self.target_prefix, self.start = [self.bos], [self.bos], self.eos
        self.lengths = self.lengths_of(self.train_pairs)

    def build_model(self):
        import bart

        c = self.cfg
        ids = dict(pad_token_id=self.pad, bos_token_id=self.bos, eos_token_id=self.eos, decoder_start_token_id=self.eos)
        drop = dict(dropout=c.dropout, attention_dropout=c.dropout, activation_dropout=c.dropout)
        if c.init_from:  # e.g. a denoising run's export (its tokenizer.json given as --tokenizer)
            model = bart.BartForConditionalGeneration.from_pretrained(c.init_from, **drop)
            self.check_checkpoint(model.config, ids, resolve_checkpoint(c.init_from))
        else:
            V = self.tok.get_vocab_size()
            model = bart.BartForConditionalGeneration(bart.BartConfig.from_preset(c.arch, vocab_size=V, **drop, **ids))
        if c.max_len + 1 > (P := model.config.max_position_embeddings):  # the source with its <s>
            raise ValueError(f"max_len (--max-len {c.max_len}) + <s> exceeds the model's {P} positions")
        model.config.forced_bos_token_id, model.config.forced_eos_token_id = self.bos, self.eos
        model.label_smoothing = c.label_smoothing
        return model


class UniLMTranslationTask(TranslationTask):
    """--model unilm-translate: UniLM fine-tuned as a translator the way microsoft/unilm's s2s-ft does
    it (unilm.s2s_batch: [CLS] source [SEP] | target [SEP] | pseudo target, the loss on the pseudo
    tokens, label-smoothed by --label-smoothing as s2s-ft's 0.1, per target token), in the network
    and WordPiece vocabulary of --init-from (any BERT folder), or with --reinit the same network from
    random init. Batches are cut by tokens of the layout (source + 2 x target). Validation: the loss
    and greedy BLEU; `evaluate`: test BLEU, greedy and beam (HF's length penalty)."""

    Config = recipes.UniLMTranslationConfig

    def __init__(self, cfg, world):
        import pretraining_data

        if not cfg.init_from:
            raise ValueError("--init-from: unilm-translate takes its network and vocabulary from a BERT folder")
        self.cfg, self.epoch = cfg, 0
        self.micro_size = micro_size(cfg, world, "batch_tokens")
        self.folder = resolve_checkpoint(cfg.init_from)
        self.tok = pretraining_data.checkpoint_tokenizer(self.folder)
        names = ("[CLS]", "[SEP]", "[MASK]", "[PAD]")
        self.ids = tuple(self.tok.token_to_id(n) for n in names)  # cls, sep, mask, pad
        if None in self.ids:
            raise ValueError(f"--init-from {cfg.init_from}: its tokenizer lacks one of {names}")
        self.pad, self.positions = self.ids[3], read_json(Path(self.folder) / "config.json")["max_position_embeddings"]
        if 2 * cfg.max_len > self.positions:  # a source and its target side by side
            raise ValueError(f"max_len (--max-len {cfg.max_len}) x 2 exceeds --init-from's {self.positions} positions")
        self.train_pairs = self.encode(data.read_parallel(cfg.dataset, "train", cfg.src_lang, cfg.tgt_lang))
        self.train_pairs = self.share(self.train_pairs)
        self.valid_text = data.read_parallel(cfg.dataset, "valid", cfg.src_lang, cfg.tgt_lang)
        self.valid_pairs = self.encode(self.valid_text, limit=False)
        self.lengths = self.lengths_of(self.train_pairs)
        self.info = {"train_pairs": len(self.train_pairs)}

    def encode(self, pairs, limit=True):  # sentences -> token ids (no specials); training pairs over max_len dropped
        src, tgt = (
            [e.ids for e in self.tok.encode_batch(list(side), add_special_tokens=False)]
            for side in zip(*pairs, strict=True)
        )
        out = list(zip(src, tgt, strict=True))
        return [p for p in out if not limit or max(len(p[0]) + 2, len(p[1]) + 1) <= self.cfg.max_len]

    @staticmethod
    def lengths_of(pairs):  # the s2s layout's tokens: [CLS] source [SEP], target [SEP] twice
        return [len(s) + 2 + 2 * (len(t) + 1) for s, t in pairs]

    def build_model(self):
        import unilm

        c = self.cfg
        drop = dict(hidden_dropout_prob=c.dropout, attention_probs_dropout_prob=c.dropout)
        model = unilm.UniLMForLM.from_pretrained(self.folder, **drop)
        if c.reinit:  # the same network from random init (the loop seeded torch)
            model = unilm.UniLMForLM(model.config)
        model.label_smoothing = c.label_smoothing
        return model

    def epoch_batches(self, epoch):
        self.epoch = epoch  # the pseudo tokens are drawn anew each epoch
        return data.token_batches(self.lengths, self.micro_size, seed=self.cfg.seed, epoch=epoch)

    def batch(self, indices, pairs=None):
        import unilm

        train = pairs is None
        pairs = self.train_pairs if train else pairs
        seeds = [(self.cfg.seed * 1000 + self.epoch) * 1_000_003 + i if train else i for i in indices]
        src, tgt = [pairs[i][0] for i in indices], [pairs[i][1] for i in indices]
        V = self.tok.get_vocab_size()
        return unilm.s2s_batch(src, tgt, self.ids, V, seeds=seeds, max_positions=self.positions)

    @torch.no_grad()
    def validate(self, model, autocast):
        batches = (
            self.batch(b, self.valid_pairs)
            for b in data.token_batches(self.lengths_of(self.valid_pairs), 8192, shuffle=False)
        )
        row = {"val_" + k: v for k, v in objective_means(model, batches, autocast).items()}
        hyps = self.translate(model, [s for s, _ in self.valid_text], beam=1)
        return {**row, "val_bleu": bleu_scores(hyps, [t for _, t in self.valid_text], self.cfg.tgt_lang)["bleu"]}

    def translate(self, model, sentences, beam=4, length_penalty=0.6, progress=None):
        device, (cls, sep, mask, pad) = device_of(model.eval()), self.ids
        limit = model.config.max_position_embeddings

        def generate(src):  # at most the source length + 50 new tokens, within the position table
            src = src.to(device)
            n = min(src.shape[1] + 50, limit - src.shape[1] - 1)
            kw = dict(
                mask_token_id=mask, eos_token_id=sep, max_new_tokens=n, num_beams=beam, length_penalty=length_penalty
            )
            return model.generate(src, (src != pad).long(), **kw)

        return translate(self.tok, sentences, generate, pad, prefix=[cls], progress=progress, eos=sep)
