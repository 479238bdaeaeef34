"""train.py: the one training loop. This version trains the paper's Transformer on translation.

    python train.py --model transformer --dataset multi30k --preset multi30k        # train
    python train.py --out-dir out/m30k --resume                                     # continue exactly
    torchrun --nproc_per_node=8 train.py --preset transformer-base ...              # DDP
    python train.py --out-dir out/m30k --evaluate                                   # test BLEU
    python train.py --out-dir out/m30k --plot                                       # PNG curves

Every field of TrainConfig is a flag (`python train.py --help` lists them); `--preset` sets a
group first, explicit flags win. The batch is stated in tokens per optimizer step (all processes
and micro-batches together, padding included); each micro-batch holds batch_tokens /
(grad_accum * world_size) of them. The loss is summed over target tokens and divided by the
step's total, so accumulation and DDP give the update of one big batch.
"""

import argparse
import contextlib
import json
import math
import os
import platform
import random
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.distributed as dist

import data
import transformer as T


@dataclass
class TrainConfig:
    model: str = "transformer"
    dataset: str = "multi30k"  # multi30k | iwslt14
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
    # optimization: Adam(0.9, 0.98, 1e-9), the paper's warmup then inverse-sqrt decay
    batch_tokens: int = 25000  # per optimizer step; the paper: ~25k source + 25k target tokens
    grad_accum: int = 1
    lr: float = 7e-4  # peak, reached at step `warmup` (the paper's schedule peaks at d^-0.5 warmup^-0.5)
    warmup: int = 4000
    beta2: float = 0.98
    eps: float = 1e-9
    weight_decay: float = 0.0
    clip: float = 0.0  # max gradient norm, 0 = no clipping
    max_epochs: int = 20
    max_steps: int = 0  # stop after this many optimizer steps (0: by epochs)
    # evaluation, checkpoints, logs
    eval_every: int = 0  # steps between validations (0: at each epoch's end)
    save_every: int = 0  # steps between checkpoints (0: at each epoch's end)
    keep_last: int = 5  # checkpoints kept, and averaged for the final evaluation
    log_every: int = 20
    beam: int = 4
    length_penalty: float = 0.6
    seed: int = 1337
    device: str = "auto"  # auto: cuda if available
    bf16: bool = True  # autocast to bf16 on CUDA (ignored on CPU)
    compile: bool = False
    tensorboard: bool = False
    wandb: bool = False


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
}


# -------------------------------------------------------------------------------- command line


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), help="a group of settings, applied before the flags")
    p.add_argument("--resume", action="store_true", help="continue the run in --out-dir from its last checkpoint")
    p.add_argument("--evaluate", action="store_true", help="only evaluate --out-dir's checkpoints on the test set")
    p.add_argument("--plot", action="store_true", help="only draw --out-dir's learning curves to PNG")
    p.add_argument("--split", default="test", help="with --evaluate: test, or valid (to choose decoding settings)")
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.type is bool or isinstance(f.default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS)
        else:
            p.add_argument(flag, type=type(f.default), default=argparse.SUPPRESS, help=f"default {f.default!r}")
    args = vars(p.parse_args(argv))
    actions = {k: args.pop(k) for k in ("preset", "resume", "evaluate", "plot", "split")}
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


class Run:
    """Everything a training run holds: config, data, model, optimizer, position, logs."""

    def __init__(self, cfg, resume=False):
        self.cfg = cfg
        self.ddp = "RANK" in os.environ
        if self.ddp:
            use_cuda = torch.cuda.is_available() and cfg.device in ("auto", "cuda")
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
        if cfg.batch_tokens % (cfg.grad_accum * self.world):
            raise ValueError(
                f"batch_tokens ({cfg.batch_tokens}) must be divisible by grad_accum * world_size "
                f"({cfg.grad_accum} * {self.world})"
            )
        self.micro_tokens = cfg.batch_tokens // (cfg.grad_accum * self.world)

        # data
        self.tok = data.translation_tokenizer(cfg.dataset, cfg.src_lang, cfg.tgt_lang, cfg.vocab_size, cfg.tokenizer)
        self.train_pairs = data.encode_pairs(
            self.tok, data.read_parallel(cfg.dataset, "train", cfg.src_lang, cfg.tgt_lang), cfg.max_len
        )
        self.valid_text = data.read_parallel(cfg.dataset, "valid", cfg.src_lang, cfg.tgt_lang)
        self.valid_pairs = data.encode_pairs(self.tok, self.valid_text)
        self.lengths = [max(len(s), len(t)) for s, t in self.train_pairs]

        # model and optimizer
        torch.manual_seed(cfg.seed)
        self.model = T.Seq2SeqTransformer(model_config(cfg, self.tok)).to(self.device)
        self.opt = torch.optim.Adam(
            self.model.parameters(), lr=cfg.lr, betas=(0.9, cfg.beta2), eps=cfg.eps, weight_decay=cfg.weight_decay
        )
        peak = T.noam_lr(cfg.warmup, cfg.d_model, cfg.warmup)
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda i: T.noam_lr(i + 1, cfg.d_model, cfg.warmup) / peak
        )
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
            "train_pairs": len(self.train_pairs),
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

        Batches are cut by token count and shuffled per epoch (data.token_batches); step s takes
        the next grad_accum * world_size of them, and process r every world_size-th from r."""
        c = self.cfg
        batches = data.token_batches(self.lengths, self.micro_tokens, seed=c.seed, epoch=self.epoch)
        per_step = c.grad_accum * self.world
        steps = [batches[i : i + per_step] for i in range(0, len(batches) - per_step + 1, per_step)]
        return [s[self.rank :: self.world] for s in steps]

    def train_step(self, micro_batches):
        loss, n_tokens = self.accumulate_gradients(micro_batches)
        self.optimizer_step()
        return loss, n_tokens

    def accumulate_gradients(self, micro_batches):
        """Forward and backward over this process's micro-batches of the step. The gradient is
        that of the loss summed over every target token of the step, in all processes, divided
        by their number: the same as one batch holding them all. -> (mean loss, tokens seen)."""
        c, model = self.cfg, self.train_model
        model.train()
        batches = [data.collate_translation([self.train_pairs[i] for i in b]) for b in micro_batches]
        pad = self.model.config.pad_id
        n_target = sum(int((labels != pad).sum()) for _, _, labels in batches)
        n_source = sum(int((src != pad).sum()) for src, _, _ in batches)
        counts = torch.tensor([n_target, n_source + n_target, 0.0], dtype=torch.float64)
        if self.ddp:  # every process divides by the global token count
            counts = self.all_reduce(counts)
        for i, (src, tgt_in, labels) in enumerate(batches):
            src, tgt_in, labels = src.to(self.device), tgt_in.to(self.device), labels.to(self.device)
            last = i == len(batches) - 1
            with model.no_sync() if self.ddp and not last else contextlib.nullcontext():
                with self.autocast():
                    logits = model(src, tgt_in).logits
                loss = T.label_smoothed_loss(logits, labels, pad, c.label_smoothing, reduction="sum")
                # DDP averages gradients over processes, hence * world: a global sum / n
                (loss * (self.world / counts[0].item())).backward()
            counts[2] += loss.item()
        total = self.all_reduce(counts[2:]) if self.ddp else counts[2:]
        return total.item() / counts[0].item(), counts[1].item()

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

    def autocast(self):
        if self.device.type == "cuda" and self.cfg.bf16:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def train(self):
        from tqdm import tqdm

        c = self.cfg
        if self.master:
            self.header()
        bar = tqdm(disable=not self.master, desc="train", dynamic_ncols=True)
        seconds, tokens = 0.0, 0.0  # training time and tokens since the last log line
        while self.epoch < c.max_epochs and not self.done():
            steps = self.epoch_steps()
            bar.reset(total=len(steps))
            bar.update(self.batch_in_epoch)
            while self.batch_in_epoch < len(steps) and not self.done():
                t0 = time.perf_counter()
                loss, n_tokens = self.train_step(steps[self.batch_in_epoch])
                seconds, tokens = seconds + time.perf_counter() - t0, tokens + n_tokens
                self.batch_in_epoch += 1
                bar.update(1)
                if self.step % c.log_every == 0:
                    lr = self.sched.get_last_lr()[0]
                    bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{tokens / seconds:.0f}", lr=f"{lr:.2e}")
                    self.log({"loss": loss, "lr": lr, "tokens_per_s": tokens / seconds})
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

    @torch.no_grad()
    def validate(self):
        """Validation cross-entropy (no smoothing, per target token), perplexity and greedy BLEU."""
        if not self.master:
            return
        self.model.eval()
        pad, total, n = self.model.config.pad_id, 0.0, 0
        for b in data.token_batches([max(len(s), len(t)) for s, t in self.valid_pairs], 8192, shuffle=False):
            src, tgt_in, labels = (
                x.to(self.device) for x in data.collate_translation([self.valid_pairs[i] for i in b])
            )
            with self.autocast():
                logits = self.model(src, tgt_in).logits
            total += float(T.label_smoothed_loss(logits, labels, pad, smoothing=0.0, reduction="sum"))
            n += int((labels != pad).sum())
        hyps = translate(self.model, self.tok, [s for s, _ in self.valid_text], beam=1)
        bleu = bleu_scores(hyps, [t for _, t in self.valid_text], self.cfg.tgt_lang)
        self.log({"val_loss": total / n, "val_ppl": math.exp(total / n), "val_bleu": bleu["bleu"]})


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


def plot(out_dir):
    """metrics.jsonl -> curves.png: training and validation loss, validation BLEU, against step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in (Path(out_dir) / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if "loss" in r]
    val = [r for r in rows if "val_loss" in r]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.plot([r["step"] for r in train], [r["loss"] for r in train], label="train (label-smoothed)")
    ax1.plot([r["step"] for r in val], [r["val_loss"] for r in val], "o-", label="validation (cross-entropy)")
    ax1.set_xlabel("step")
    ax1.set_ylabel("loss per target token")
    ax1.legend()
    ax2.plot([r["step"] for r in val], [r["val_bleu"] for r in val], "o-")
    ax2.set_xlabel("step")
    ax2.set_ylabel("validation BLEU (greedy, sacreBLEU)")
    fig.suptitle(str(out_dir))
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
        print(plot(out_dir))
        return
    if actions["evaluate"]:
        evaluate(out_dir, {k: v for k, v in overrides.items() if k in ("beam", "length_penalty")}, actions["split"])
        return
    if actions["resume"]:
        base = TrainConfig(**load_checkpoint(latest_checkpoint(out_dir))["config"])
        cfg = make_config(actions["preset"], overrides, base=base)
    else:
        cfg = make_config(actions["preset"], overrides)
    if cfg.model != "transformer":
        raise ValueError(f"--model: this version trains 'transformer' only, got {cfg.model!r}")
    run = Run(cfg, resume=actions["resume"])
    run.train()
    if run.ddp:
        dist.destroy_process_group()
    return run


if __name__ == "__main__":
    main()
