"""Every run's settings: the loop's `TrainConfig`, each family's config (TrainConfig plus the
settings only that family reads; a task names its own as `Config`), and the recipes: `train.py
--preset NAME` applies one group of settings, then the flags. A recipe names its family
(`model=`) and a model shape (`arch=`, a key of that family's PRESETS); the rest is the paper's
(or the reference implementation's) optimizer, schedule, batch and run length, with a comment
where a value differs and why. nanoGPT keeps these in config/; here they are one readable file.
Every field is a flag of train.py, its comment the flag's --help. Imports nothing of ours."""

from dataclasses import dataclass, fields


@dataclass
class TrainConfig:
    """What the loop (train.py) reads, and every run has."""

    model: str = "transformer"  # a row of FAMILIES: transformer, bert, gpt, t5, bart, *-translate (hf-*: HF's)
    dataset: str = "multi30k"  # translation: multi30k | iwslt14; others: a folder of `python data.py bert` / `lm`
    out_dir: str = "out/run"  # the run folder: checkpoints, metrics.jsonl, log.txt (one run per folder)
    dropout: float = 0.1  # every family: residual, embedding and attention dropout
    # optimization: AdamW by default; the schedule is the paper's for translation, linear for BERT, cosine for GPT
    optimizer: str = "adamw"  # adamw | adamw-scale (nanoT5's: steps times each tensor's RMS) | adafactor (torch's)
    grad_accum: int = 1  # micro-batches per optimizer step and process (the batch stays the same)
    lr: float = 7e-4  # peak, reached at step `warmup` (the paper's schedule peaks at d^-0.5 warmup^-0.5)
    warmup: int = 4000  # steps of linear warmup to the peak lr
    schedule: str = "noam"  # noam (inverse sqrt) | linear (to 0 at decay_steps) | cosine (to min_lr)
    decay_steps: int = 0  # linear, cosine: the step where the decay ends (0: max_steps, else max_epochs' end)
    min_lr: float = 0.0  # cosine: the floor
    beta1: float = 0.9  # AdamW's first-moment decay
    beta2: float = 0.98  # AdamW's second-moment decay (BERT: 0.999)
    eps: float = 1e-9  # AdamW's epsilon (BERT: 1e-6)
    weight_decay: float = 0.0  # AdamW's, on >= 2-D tensors only
    llrd: float = 1.0  # layer-wise lr decay: layer i of L gets lr * llrd^(L-1-i), embeddings lr * llrd^L
    clip: float = 0.0  # max gradient norm, 0 = no clipping
    max_epochs: int = 20  # stop after this many epochs
    max_steps: int = 0  # stop after this many optimizer steps (0: by epochs)
    # evaluation, checkpoints, logs
    eval_every: int = 0  # steps between validations (0: at each epoch's end)
    save_every: int = 0  # steps between checkpoints (0: at each epoch's end)
    keep_last: int = 5  # checkpoints kept, and averaged for the final evaluation
    log_every: int = 20  # steps between training log rows (loss, lr, tokens/s)
    seed: int = 1337  # initial weights, data order, dropout
    device: str = "auto"  # auto: cuda if available
    bf16: bool = True  # autocast to bf16 on CUDA
    cpu_bf16: bool = False  # autocast to bf16 on CPU too: ~2x faster steps where the CPU has AVX512-BF16/AMX
    compile: bool = False  # torch.compile the training model
    time_limit: float = 0.0  # hours of this invocation, then save and exit with code 75 (0: none); --resume goes on
    fsdp: bool = False  # under torchrun: FSDP2 (parameters, gradients and optimizer state sharded per block)
    tensorboard: bool = False  # also log to <out_dir>/tb
    wandb: bool = False  # also log to Weights & Biases

    def __post_init__(self):
        """Every number in its range and every choice known, checked once, before any work starts."""
        flag = lambda name: f"{name} (--{name.replace('_', '-')})"  # noqa: E731
        mine = {f.name for f in fields(self)}
        for names, ok, want in RANGES:
            for name in mine.intersection(names):
                if not ok(value := getattr(self, name)):
                    raise ValueError(f"{flag(name)} must be {want}, got {value!r}")
        for name in mine.intersection(CHOICES):
            value = getattr(self, name)
            if value not in CHOICES[name] and not (name == "tokenizer" and value.endswith(".json")):
                raise ValueError(f"{flag(name)} must be one of {', '.join(CHOICES[name])}, got {value!r}")
        if self.schedule == "cosine" and self.min_lr > self.lr:
            raise ValueError(f"min_lr (--min-lr {self.min_lr}) must not exceed lr (--lr {self.lr})")


@dataclass
class TranslationConfig(TrainConfig):
    """A translation dataset's pairs, batches and decoding (every translation row)."""

    src_lang: str = "de"  # translation: the source language (a file suffix of the dataset)
    tgt_lang: str = "en"  # translation: the target language
    vocab_size: int = 8000  # translation: one joint subword vocabulary for both languages
    tokenizer: str = "bpe"  # translation: the subword model, bpe | unigram, or a tokenizer.json (e.g. a pretraining's)
    max_len: int = 128  # translation: training pairs with a longer side (in tokens) are dropped
    train_fraction: float = 1.0  # translation: train on this random share of the pairs (labeled data scarce)
    batch_tokens: int = 25000  # translation, per optimizer step; the paper: ~25k source + 25k target tokens
    label_smoothing: float = 0.1  # translation: the paper's 0.1
    beam: int = 4  # translation: beam size of the final evaluation
    length_penalty: float = 0.6  # translation: GNMT's alpha in the beam search (t5, bart: HF's exponent)


@dataclass
class PaperTranslationConfig(TranslationConfig):
    """--model transformer: the paper's model (its defaults: transformer.TransformerConfig)."""

    d_model: int = 512  # translation: the model width
    nhead: int = 8  # translation: attention heads
    num_layers: int = 6  # translation: encoder and decoder layers, each
    dim_feedforward: int = 2048  # translation: the feed-forward inner width
    norm_first: bool = False  # translation: pre-LN blocks (the paper: post-LN)
    share_embeddings: bool = True  # translation: source, target and output embeddings are one matrix


@dataclass
class TextToTextConfig(TranslationConfig):
    """--model t5-translate, bart-translate: a pretrained (or fresh) seq2seq model as translator."""

    arch: str = ""  # a shape of t5.PRESETS / bart.PRESETS (ignored with init_from)
    init_from: str = ""  # an HF folder / hub name to start from, e.g. a pretraining run's export


@dataclass
class UniLMTranslationConfig(TranslationConfig):
    """--model unilm-translate: UniLM fine-tuned s2s-ft's way as a translator (--init-from's network and vocabulary)."""

    init_from: str = ""  # a BERT folder (HF's layout): the network and its WordPiece vocabulary
    reinit: bool = False  # the same network from random init (the baseline of a pretrained start)


@dataclass
class PretrainingConfig(TrainConfig):
    """--model bert, hf-bert: masked-LM + NSP on `python data.py bert`'s shards (albert, hf-albert: + SOP)."""

    arch: str = "bert-mini"  # a shape of bert.PRESETS / albert.PRESETS (ignored with init_from)
    init_from: str = ""  # an HF folder / hub name to start from (continued pretraining)
    batch_size: int = 256  # sequences per optimizer step
    mask_prob: float = 0.0  # bert: re-mask training samples at load time at this rate (0: as prepared)
    max_predictions: int = 0  # with mask_prob: masked tokens per sample at most (0: all the rate gives)
    pos_init: str = "normal"  # bert, bart from scratch: normal | sinusoidal (learned positions start as sinusoids)


@dataclass
class DistillConfig(PretrainingConfig):
    """--model tinybert: TinyBERT's general distillation of a student (--arch, or --init-from) from
    --teacher on the unmasked text of `python data.py bert`'s shards (made with the teacher's tokenizer)."""

    arch: str = "tinybert-4l-312"
    teacher: str = ""  # an HF BERT folder / hub name (e.g. all-MiniLM-L6-v2)


@dataclass
class LMConfig(TrainConfig):
    """--model gpt, t5 (and their hf- twins): windows of `python data.py lm`'s token files."""

    arch: str = ""  # a shape of gpt.PRESETS / t5.PRESETS / bart.PRESETS (ignored with init_from)
    init_from: str = ""  # an HF folder / hub name to start from (continued pretraining)
    batch_size: int = 256  # windows per optimizer step
    context: int = 0  # gpt: tokens per window (0: the arch's n_positions); t5, bart: input tokens (0: 512)
    eval_iters: int = 20  # batches of each split in the validation estimate


@dataclass
class PermutationLMConfig(LMConfig):
    """--model xlnet, hf-xlnet: XLNet's permutation LM on `python data.py lm`'s token files."""

    reuse_len: int = 0  # the first tokens of a window that the next one remembers (0: context // 2)
    num_predict: int = 0  # targets per window (0: context // 6, about zihangdai/xlnet's 85 of 512)
    perm_size: int = 0  # the factorization order permutes chunks of this many tokens alike (0: reuse_len)


@dataclass
class DenoisingConfig(LMConfig):
    """--model bart, hf-bart: BART's denoising."""

    noising: str = "infill+permute"  # bart: mask, delete, infill, permute, rotate or infill+permute (BART-large's)
    pos_init: str = "normal"  # from scratch: normal | sinusoidal (both position tables start as the same sinusoids)


@dataclass
class FinetuneConfig(TrainConfig):
    """A GLUE fine-tuning run (finetune_glue.py; its task settings: finetune_glue.GlueConfig)."""

    init_from: str = ""  # the pretrained model: an HF folder / hub name, or a run's export
    batch_size: int = 32  # sequences per optimizer step
    max_len: int = 128  # tokens per sequence at most (pairs: the longer side truncated first)


AT_LEAST_1 = ("batch_tokens", "batch_size", "grad_accum", "max_epochs", "keep_last", "log_every", "eval_iters", "beam")
AT_LEAST_1 += ("vocab_size", "max_len", "d_model", "nhead", "num_layers", "dim_feedforward")
AT_LEAST_0 = ("warmup", "decay_steps", "max_steps", "eval_every", "save_every", "max_predictions", "context")
AT_LEAST_0 += ("min_lr", "weight_decay", "clip", "length_penalty", "time_limit")
RANGES = [  # (fields, test, what the value must be): a config checks those it has
    (AT_LEAST_1, lambda v: v >= 1, ">= 1"),
    (AT_LEAST_0, lambda v: v >= 0, ">= 0"),
    (("lr", "eps"), lambda v: v > 0, "> 0"),
    (("dropout", "label_smoothing", "mask_prob", "beta1", "beta2"), lambda v: 0 <= v < 1, "in [0, 1)"),
    (("llrd", "train_fraction"), lambda v: 0 < v <= 1, "in (0, 1]"),
]
CHOICES = {
    "schedule": ("noam", "linear", "cosine"),
    "optimizer": ("adamw", "adamw-scale", "adafactor"),
    "pos_init": ("normal", "sinusoidal"),
    "tokenizer": ("bpe", "unigram", "<a tokenizer.json>"),
}

# ---------------------------------------------------------------------------------- the recipes

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
    # T5 span corruption on a CPU: the Multi30k-sized T5 (7.6M at an 8,000 vocabulary), inputs of 128 tokens,
    # nanoT5's optimizer (AdamW with RMS scaling, lr 2e-2, cosine to 1e-5, clip 1, no dropout), a smaller batch
    "t5-span-cpu": dict(
        model="t5",
        arch="t5-multi30k",
        context=128,
        batch_size=32,
        optimizer="adamw-scale",
        lr=2e-2,
        min_lr=1e-5,
        warmup=300,
        schedule="cosine",
        eps=1e-8,
        beta2=0.99,
        clip=1.0,
        dropout=0.0,
        max_steps=3000,
        max_epochs=10**6,
        eval_every=250,
        save_every=250,
        log_every=10,
    ),
    # Multi30k as text to text: the translation model's batches, nanoT5's optimizer (docs/t5.md's sweep)
    "t5-multi30k": dict(
        model="t5-translate",
        arch="t5-multi30k",
        batch_tokens=2048,
        optimizer="adamw-scale",
        lr=2e-2,
        warmup=300,
        schedule="cosine",
        decay_steps=2872,  # 8 epochs of 359 steps
        min_lr=1e-3,
        max_epochs=8,
        clip=1.0,
        dropout=0.1,
        label_smoothing=0.1,
    ),
    # UniLM fine-tuned as a translator on Multi30k, s2s-ft's way (--init-from a BERT folder, e.g. all-MiniLM-L6-v2):
    # AdamW with s2s-ft's weight decay 0.01, label smoothing 0.1 and linear decay; a CPU-sized batch and a peak
    # lr for a small model
    "unilm-multi30k": dict(
        model="unilm-translate",
        batch_tokens=4096,
        max_len=64,
        lr=1e-4,
        warmup=100,
        schedule="linear",
        weight_decay=0.01,
        max_epochs=10,
        clip=1.0,
        dropout=0.1,
        label_smoothing=0.1,
        length_penalty=1.0,
    ),
    # BART fine-tuned as a translator on Multi30k (from --init-from, or bart-small from scratch): AdamW as
    # in fairseq's recipes, a peak lr for a small model, two epochs (the noising ablation: one)
    "bart-multi30k": dict(
        model="bart-translate",
        arch="bart-small",
        batch_tokens=2048,
        lr=5e-4,
        warmup=200,
        schedule="cosine",
        min_lr=1e-5,
        max_epochs=2,
        beta2=0.98,
        eps=1e-6,
        weight_decay=0.01,
        clip=1.0,
        dropout=0.1,
        label_smoothing=0.1,
        eval_every=0,
        log_every=20,
    ),
    "t5-tiny-test": dict(
        model="t5", arch="t5-tiny-test", context=32, batch_size=4, lr=1e-3, warmup=2, schedule="cosine", max_steps=4
    ),
    # ALBERT's Table 5 at this CPU's scale: albert-mini (one 256-wide layer run 4 times, E = 128) with
    # bert-mini-cpu's optimizer and 40% re-masking (AdamW, not the paper's LAMB at batch 4096), 32 x 128 tokens,
    # no dropout (ALBERT v2's)
    "albert-mini-cpu": dict(
        _BERT_OPTIMIZER,
        model="albert",
        dropout=0.0,  # ALBERT v2's
        arch="albert-mini",
        batch_size=32,
        lr=1e-3,
        warmup=200,
        max_steps=5000,
        mask_prob=0.4,
        eval_every=500,
        save_every=500,
        log_every=50,
    ),
    "albert-tiny-test": dict(
        model="albert", arch="albert-tiny-test", batch_size=8, lr=1e-3, warmup=2, schedule="linear", max_steps=4
    ),
    # TinyBERT's general distillation on a CPU: the TinyBERT4 student from all-MiniLM-L6-v2 (--teacher) on
    # books + wiki with its tokenizer, 32 x 128 tokens; TinyBERT's lr 1e-4 at batch 256 becomes 5e-4 at 32
    "tinybert-general-cpu": dict(
        _BERT_OPTIMIZER,
        model="tinybert",
        arch="tinybert-4l-312",
        batch_size=32,
        lr=5e-4,
        warmup=200,
        max_steps=4000,
        eval_every=500,
        save_every=500,
        log_every=50,
    ),
    # XLNet's permutation LM on a CPU: xlnet-mini (bert-mini's shape), 32 windows of 128 tokens (64 reused,
    # the 64 before each window its memory), BERT's AdamW recipe at a small model's lr
    "xlnet-mini-cpu": dict(
        _BERT_OPTIMIZER,
        model="xlnet",
        arch="xlnet-mini",
        batch_size=32,
        context=128,
        lr=5e-4,
        warmup=200,
        max_steps=5000,
        eval_every=500,
        save_every=500,
        log_every=50,
        eval_iters=20,
    ),
    "xlnet-tiny-test": dict(
        model="xlnet",
        arch="xlnet-tiny-test",
        context=16,
        batch_size=4,
        lr=1e-3,
        warmup=2,
        schedule="linear",
        max_steps=4,
    ),
    "tinybert-tiny-test": dict(  # with a teacher made by the test (two heads, as bert-tiny)
        model="tinybert", arch="bert-tiny", batch_size=8, lr=1e-3, warmup=2, schedule="linear", max_steps=4, dropout=0.0
    ),
    "bert-tiny-test": dict(
        model="bert", arch="bert-tiny", batch_size=8, lr=1e-3, warmup=2, schedule="linear", max_steps=4, dropout=0.0
    ),
    # BART denoising on a CPU: bart-small (about the Multi30k model), 128-token windows; fairseq's
    # BART recipe scaled down (AdamW 0.9/0.98, eps 1e-6, weight decay 0.01, clip 0.1... here 1.0)
    "bart-denoise-cpu": dict(
        model="bart",
        arch="bart-small",
        context=128,
        batch_size=32,
        lr=1e-3,
        min_lr=1e-5,
        warmup=300,
        schedule="cosine",
        beta2=0.98,
        eps=1e-6,
        weight_decay=0.01,
        clip=1.0,
        dropout=0.1,
        max_steps=3000,
        max_epochs=10**6,
        eval_every=250,
        save_every=250,
        log_every=10,
    ),
    "bart-tiny-test": dict(
        model="bart", arch="bart-tiny-test", context=32, batch_size=4, lr=1e-3, warmup=2, schedule="cosine", max_steps=4
    ),
}
PRESETS["bert-base-1gpu"] = {**PRESETS["bert-base-8gpu"], **PRESETS["bert-base-1gpu"]}
