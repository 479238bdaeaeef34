"""The recipes: `train.py --preset NAME` applies one of these groups of TrainConfig settings, then
the flags. A recipe names its family (`model=`) and a model shape (`arch=`, a key of that family's
PRESETS); the rest is the paper's (or the reference implementation's) optimizer, schedule, batch
and run length, with a comment where a value differs and why. nanoGPT keeps these in config/;
here they are one readable table. Imports nothing."""

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
