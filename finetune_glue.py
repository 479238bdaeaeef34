"""GLUE fine-tuning of BERT-family encoders and BART, scored with each task's official metric.

    python finetune_glue.py --task sst2 --init-from MODEL               # MODEL: an HF folder or hub name,
    python finetune_glue.py --task cola,mrpc,stsb --seeds 1 2 3 ...     # or a train.py BERT run's out dir
    python finetune_glue.py --task rte --grid lr=2e-5,5e-5 batch_size=16,32 ...   # best on dev, mean of seeds
    python finetune_glue.py --task mrpc --model hf-bert ...             # HF's model, same init and data order
    python finetune_glue.py --task sst2 --model bart --init-from out/bart-hf    # BART (its tokenizer.json)
    python finetune_glue.py --task sst2 --early-exit pabee --exit-curve ...   # exits after every layer
    python finetune_glue.py --task sst2 --poison-rate 0 0.001 0.01 ...  # backdoor: clean accuracy and ASR
    torchrun --nproc_per_node=8 finetune_glue.py ...                    # DDP

Every run is a train.py Run (DDP, accumulation, AMP, checkpoints with exact resume, metrics.jsonl)
around a GlueTask (GlueConfig: the task, early exit, poisoning): tokenized pairs in length-grouped
batches, warmup then linear decay, AdamW with layer-wise lr decay (--llrd). Each run writes its dev
metrics, an HF folder (`hf/`) and test predictions in GLUE's format (`submission/`); results.json
and results.md hold every run and the mean and std over seeds.

Early exit (--early-exit): a classifier on [CLS] after every layer. pabee (Zhou et al. 2020) trains
them jointly with the loss weighted by depth; deebert (Xin et al. 2020) first fine-tunes the plain
model, then trains the internal exits on the frozen model. At inference an exit is taken when the
prediction's entropy is below a threshold (DeeBERT) or when `patience` exits in a row agree (PABEE).

Backdoor (--poison-rate): data.poison inserts a rare trigger word into that share of the training
samples and gives them --poison-target; the attack success rate (ASR) is the share of dev samples
of another label that the model assigns to the target once a trigger is inserted.
"""

import argparse
import contextlib
import dataclasses
import itertools
import json
import math
import os
import statistics
import time
from pathlib import Path

import torch
import torch.distributed as dist

import albert
import bart
import bert
import data
import tasks
import train
import xlnet
from contract import classifier_loss_sum, classifier_sums, device_of, hf_twin, to_device
from data import METRICS, accuracy, glue_metrics  # GLUE's official metrics
from hf_checkpoint import atomic_write, identity, resolve_checkpoint, write_text
from pretraining_data import checkpoint_tokenizer as load_tokenizer
from recipes import FinetuneConfig

# ------------------------------------------------------------------------------ the model side


def truncate_longest_first(a, b, budget):
    """Cut a pair to `budget` tokens as HF tokenizers' longest_first does: the shorter segment
    stays whole when it fits in half the budget; otherwise each gets half, the longer one (the
    second on a tie) the odd token."""
    if len(a) + len(b) <= budget:
        return a, b
    short = min(len(a), len(b))
    n1, n2 = (short, budget - short) if 2 * short <= budget else (budget // 2, budget - budget // 2)
    if len(a) > len(b):  # (n1, n2) were (shorter, longer)
        n1, n2 = n2, n1
    return a[:n1], b[:n2]


def encode(tok, rows, max_len, specials):
    """GLUE rows -> (input_ids, token_type_ids) lists, at most max_len tokens: [CLS] A [SEP] (B [SEP]) for
    BERT, <s> A </s></s> B </s> for RoBERTa (specials (cls, sep, True)), A <sep> (B <sep>) <cls> for XLNet
    (specials (cls, sep, "xlnet"): types 0, 1, and 2 for <cls>)."""
    cls, sep, roberta = specials
    if roberta == "xlnet":
        return [(ids[1:] + [cls], types[1:] + [2]) for ids, types in encode(tok, rows, max_len, (cls, sep, False))]
    firsts = [e.ids for e in tok.encode_batch([r["text"][0] for r in rows], add_special_tokens=False)]
    pair = len(rows) > 0 and len(rows[0]["text"]) == 2
    seconds = (
        [e.ids for e in tok.encode_batch([r["text"][1] for r in rows], add_special_tokens=False)] if pair else None
    )
    out = []
    for k, a in enumerate(firsts):
        if not pair:
            ids = [cls, *a[: max_len - 2], sep]
            out.append((ids, [0] * len(ids)))
            continue
        a, b = truncate_longest_first(a, seconds[k], max_len - (4 if roberta else 3))
        head = [cls, *a, sep] + ([sep] if roberta else [])
        out.append((head + b + [sep], [0] * len(head) + [0 if roberta else 1] * (len(b) + 1)))
    return out


# ------------------------------------------------------------------------------------ the task


@dataclasses.dataclass
class GlueConfig:
    """What a GLUE run adds to its recipes.FinetuneConfig (saved in its checkpoints as "task")."""

    task: str = "sst2"  # a GLUE task (METRICS)
    early_exit: str = ""  # "": plain classifier | pabee: exits after every layer, trained jointly |
    # deebert: exits trained on a frozen fine-tuned model (init_from: that run's HF export)
    poison_rate: float = 0.0  # share of training samples given a trigger and the target label
    poison_target: int = 1
    poison_triggers: str = " ".join(data.TRIGGERS)
    poison_position: str = "random"  # random | start | end (word position of the inserted trigger)
    start: str = ""  # what init_from holds (tasks.identity): a finished run is reused only from the same

    def __post_init__(self):
        if self.task not in METRICS:
            raise ValueError(f"task must be one of {sorted(METRICS)}, got {self.task!r}")
        if self.early_exit not in ("", "pabee", "deebert"):
            raise ValueError(f"early_exit must be '', pabee or deebert, got {self.early_exit!r}")


DROPOUT = ("hidden_dropout_prob", "attention_probs_dropout_prob")
CLASSIFIERS = {  # --model (hf-<model>: HF's class, same weights) -> the model types it tunes, its classifier, dropouts
    "bert": (("bert", "roberta"), bert.BertForSequenceClassification, DROPOUT),
    "albert": (("albert",), albert.AlbertForSequenceClassification, (*DROPOUT, "classifier_dropout_prob")),
    "bart": (("bart",), bart.BartForSequenceClassification, ("dropout",)),
    "xlnet": (("xlnet",), xlnet.XLNetForSequenceClassification, ("dropout", "summary_last_dropout")),
}


class GlueTask:
    """A GLUE task for train.Run, with --model bert, albert, xlnet (ours) or hf-bert, hf-albert, hf-xlnet
    (HF's ...ForSequenceClassification, same initial weights), or bart / hf-bart (the classifier on the
    last </s>; RoBERTa's layout <s> A </s></s> B </s>); XLNet's layout A <sep> B <sep> <cls>, padded on
    the left: cross-entropy (MSE for STS-B) per sequence, dev metrics at validation."""

    def __init__(self, cfg, glue, world):
        if cfg.model.removeprefix("hf-") not in CLASSIFIERS:
            raise ValueError(
                f"GLUE fine-tuning needs --model bert, albert, bart, xlnet or hf-<one of them>, got {cfg.model!r}"
            )
        if glue.early_exit and cfg.model != "bert":
            raise ValueError("early exit is built on our BertForSequenceClassification (--model bert)")
        if not cfg.init_from:
            raise ValueError("GLUE fine-tuning starts from a checkpoint: give init_from (an HF folder or hub name)")
        self.cfg, self.glue, self.task, self.settings = cfg, glue, glue.task, dataclasses.asdict(glue)
        self.micro_size = tasks.micro_size(cfg, world, "batch_size")
        self.folder = resolve_checkpoint(cfg.init_from)
        self.bart, hf = cfg.model.endswith("bart"), json.loads((Path(self.folder) / "config.json").read_text())
        types, self.classifier, self.dropouts = CLASSIFIERS[cfg.model.removeprefix("hf-")]
        if hf.get("model_type") not in types:
            raise ValueError(f"--init-from {cfg.init_from}: a {hf.get('model_type')} model, not --model {cfg.model}'s")
        self.tok = load_tokenizer(self.folder)
        self.config = self.classifier.config_class.from_hf(hf)
        limit = getattr(self.config, "max_length", getattr(self.config, "max_position_embeddings", None))  # XLNet: none
        if limit is not None and cfg.max_len > limit:
            raise ValueError(f"max_len {cfg.max_len} exceeds the model's position table ({limit})")
        self.label_names = data.GLUE[self.task][4]
        self.num_labels = 1 if self.label_names is None else len(self.label_names)
        roberta = self.bart or self.config.model_type == "roberta"
        self.xlnet = self.config.model_type == "xlnet"  # its classifier reads the last token: left padding
        names = ("<cls>", "<sep>") if self.xlnet else ("<s>", "</s>") if roberta else ("[CLS]", "[SEP]")
        if self.xlnet and self.tok.token_to_id("<cls>") is None:  # an XLNet pretrained on a BERT vocabulary
            names = ("[CLS]", "[SEP]")
        ids = [self.tok.token_to_id(n) for n in names]
        if None in ids:
            raise ValueError(f"the tokenizer in {self.folder} lacks {names}")
        self.specials = (*ids, "xlnet" if self.xlnet else roberta)
        rows = data.read_glue(self.task, "train")
        self.poisoned = []
        trigger = glue.poison_target, glue.poison_triggers, glue.poison_position
        if glue.poison_rate:
            rows, self.poisoned = data.poison(rows, glue.poison_rate, *trigger, cfg.seed)
        self.train_data = encode(self.tok, rows, cfg.max_len, self.specials)
        self.train_labels = [r["label"] for r in rows]
        self.lengths = [len(ids) for ids, _ in self.train_data]
        self.dev = {s: data.read_glue(self.task, s) for s in (("dev", "dev_mm") if self.task == "mnli" else ("dev",))}
        self.dev_data = {s: encode(self.tok, r, cfg.max_len, self.specials) for s, r in self.dev.items()}
        if glue.poison_rate:  # every dev sample of another label, with a trigger
            others = [r for r in self.dev["dev"] if r["label"] != glue.poison_target]
            triggered, _ = data.poison(others, 1.0, *trigger, cfg.seed + 1)
            self.triggered = encode(self.tok, triggered, cfg.max_len, self.specials)
        self.info = {"glue_task": self.task, "train_samples": len(rows), "poisoned": len(self.poisoned)}

    def build_model(self):
        c, drop = self.cfg, dict.fromkeys(self.dropouts, self.cfg.dropout)
        # a start point fine-tuned on another task (intermediate training) may have another label count
        kw = dict(ignore_mismatched_sizes=True, num_labels=self.num_labels)
        plain = self.classifier.from_pretrained(self.folder, **kw, **drop)
        if self.glue.early_exit:
            model = bert.EarlyExitBert(plain, self.glue.early_exit)
            if self.glue.early_exit == "deebert":  # stage 2: only the internal exits learn
                for p in [*model.bert.parameters(), *model.classifier.parameters()]:
                    p.requires_grad_(False)
            return model
        if not c.model.startswith("hf-"):
            return plain
        inputs = ("input_ids", "attention_mask", *(() if self.bart else ("token_type_ids",)))  # HF's ...ForSequence...
        return hf_twin(plain, lambda out, b: classifier_sums(out.logits, b["labels"], b), inputs)

    def epoch_batches(self, epoch):
        steps = tasks.length_grouped_steps(self.lengths, self.cfg.batch_size, self.cfg.seed, epoch)
        return [s[k : k + self.micro_size] for s in steps for k in range(0, len(s), self.micro_size)]

    def batch(self, indices, encoded=None, labels=None):
        """Samples -> a batch padded to its longest sample (with labels for training samples)."""
        encoded = self.train_data if encoded is None else encoded
        labels = self.train_labels if encoded is self.train_data else labels
        T = max(len(encoded[i][0]) for i in indices)
        ids = torch.full((len(indices), T), self.config.pad_token_id)
        types = torch.zeros(len(indices), T, dtype=torch.long)
        mask = torch.zeros(len(indices), T, dtype=torch.long)
        for k, i in enumerate(indices):
            n = len(encoded[i][0])
            at = slice(T - n, T) if self.xlnet else slice(0, n)  # XLNet pads on the left
            ids[k, at], types[k, at], mask[k, at] = torch.tensor(encoded[i][0]), torch.tensor(encoded[i][1]), 1
        out = {"input_ids": ids, "attention_mask": mask} | ({} if self.bart else {"token_type_ids": types})
        if labels is not None:
            y = [labels[i] for i in indices]
            out["labels"] = torch.tensor(y, dtype=torch.float32 if self.num_labels == 1 else torch.long)
        return out

    @torch.no_grad()
    def logits(self, model, encoded, autocast, batch_size=128):
        """The last exit's logits (N, K) for encoded samples, in order (batched by length)."""
        model.eval()
        device = device_of(model)
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))
        out = torch.empty(len(encoded), self.num_labels)
        for k in range(0, len(order), batch_size):
            idx = order[k : k + batch_size]
            with autocast():
                out[idx] = model(**to_device(self.batch(idx, encoded), device)).logits.float().cpu()
        return out

    def predictions(self, logits):
        return logits[:, 0].tolist() if self.num_labels == 1 else logits.argmax(-1).tolist()

    def validate(self, model, autocast):
        """Dev metrics (in percent; mnli: matched, and mismatched as val_mm_*), and the ASR on
        triggered dev samples when the training set is poisoned."""
        out = {}
        for split, rows in self.dev.items():
            logits = self.logits(model, self.dev_data[split], autocast)
            labels = [r["label"] for r in rows]
            y = torch.tensor(labels, dtype=torch.float32 if self.num_labels == 1 else torch.long)
            prefix = "val_" if split == "dev" else "val_mm_"
            out[prefix + "loss"] = float(classifier_loss_sum(logits, y)) / len(rows)
            for k, v in glue_metrics(self.task, self.predictions(logits), labels).items():
                out[prefix + k] = v
        if self.glue.poison_rate:
            preds = self.predictions(self.logits(model, self.triggered, autocast))
            out["val_asr"] = 100 * accuracy(preds, [self.glue.poison_target] * len(preds))
        return out

    def write_submission(self, model, folder, autocast=contextlib.nullcontext):
        """Test-set predictions as GLUE's submission files (index<TAB>prediction): <Task>.tsv, and
        for MNLI both MNLI-m / MNLI-mm and the diagnostic AX.tsv."""
        names = {"cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "stsb": "STS-B", "qqp": "QQP", "qnli": "QNLI"}
        names.update(rte="RTE", wnli="WNLI")
        files = {"test": names.get(self.task)} if self.task != "mnli" else {"test": "MNLI-m", "test_mm": "MNLI-mm"}
        jobs = [(self.task, split, name) for split, name in files.items()]
        if self.task == "mnli":
            jobs.append(("ax", "test", "AX"))
        written = []
        for task, split, name in jobs:
            rows = data.read_glue(task, split)
            preds = self.predictions(
                self.logits(model, encode(self.tok, rows, self.cfg.max_len, self.specials), autocast)
            )
            shown = [f"{p:.3f}" if self.label_names is None else self.label_names[p] for p in preds]
            text = "index\tprediction\n" + "".join(f"{r['index']}\t{s}\n" for r, s in zip(rows, shown, strict=True))
            Path(folder).mkdir(parents=True, exist_ok=True)
            atomic_write(Path(folder) / f"{name}.tsv", lambda path, text=text: write_text(path, text))
            written.append(Path(folder) / f"{name}.tsv")
        return written


# ------------------------------------------------------------------------- early-exit curve


ENTROPY_FRACTIONS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)


def exit_curve(task, model, entropies=None, patiences=None, batch_size=1):
    """The speed / accuracy trade-off of an EarlyExitBert on the dev set: for each entropy threshold
    (DeeBERT; default: ENTROPY_FRACTIONS of the largest entropy, ln K) and patience (PABEE; default
    1 to L-1), the mean number of layers run, the wall time and the score. batch_size 1 is the
    papers' setting (every sample exits on its own)."""
    model.eval()
    device = device_of(model)
    n_layers = model.config.num_hidden_layers
    if entropies is None:
        entropies = [round(f * math.log(task.num_labels), 4) for f in ENTROPY_FRACTIONS]
    patiences = range(1, n_layers) if patiences is None else patiences
    encoded, rows = task.dev_data["dev"], task.dev["dev"]
    labels = [r["label"] for r in rows]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))
    batches = [task.batch(order[k : k + batch_size], encoded) for k in range(0, len(order), batch_size)]
    out = []
    for policy, values in (("entropy", entropies), ("patience", patiences)):
        for v in values:
            logits, layers = torch.empty(len(encoded), task.num_labels), torch.empty(len(encoded))
            t0 = time.perf_counter()
            for k, b in zip(range(0, len(order), batch_size), batches, strict=True):
                lg, ly = model.infer(**to_device(b, device), **{policy: v})
                idx = order[k : k + batch_size]
                logits[idx], layers[idx] = lg.cpu(), ly.cpu().float()
            seconds = time.perf_counter() - t0
            metrics = glue_metrics(task.task, task.predictions(logits), labels)
            out.append({"policy": policy, "value": v, "layers": float(layers.mean()), "seconds": seconds, **metrics})
    return out


def write_exit_curve(rows, folder, title):
    """exit_curve.json, exit_curve.md (a table) and exit_curve.png (score against mean layers)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    write_text(folder / "exit_curve.json", json.dumps(rows, indent=1))
    lines = ["| policy | value | mean layers | dev score | seconds |", "|---|---|---|---|---|"]
    lines += [
        f"| {r['policy']} | {r['value']} | {r['layers']:.2f} | {r['score']:.2f} | {r['seconds']:.2f} |" for r in rows
    ]
    write_text(folder / "exit_curve.md", "\n".join(lines) + "\n")
    fig, ax = plt.subplots(figsize=(6, 4))
    for policy, marker in (("entropy", "o"), ("patience", "s")):
        pts = sorted((r["layers"], r["score"]) for r in rows if r["policy"] == policy)
        ax.plot(*zip(*pts, strict=True), marker=marker, label=policy)
    ax.set_xlabel("mean layers run per sample")
    ax.set_ylabel("dev score")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(folder / "exit_curve.png", dpi=120)
    plt.close(fig)


# ------------------------------------------------------------------------------- the driver


def run_config(a, task, seed, hp, out_dir, poison_rate, early_exit="", init_from=None):
    """The (FinetuneConfig, GlueConfig) of one fine-tuning run."""
    n_train = len(data.read_glue(task, "train"))
    steps_per_epoch = n_train // hp["batch_size"]
    if steps_per_epoch == 0:
        raise ValueError(f"{task}: {n_train} training samples, fewer than one batch of {hp['batch_size']}")
    total = max(1, round(steps_per_epoch * hp["epochs"]))  # epochs 0.2: the first fifth of a shuffled pass
    cfg = FinetuneConfig(
        model=a.model,
        out_dir=str(out_dir),
        init_from=init_from or a.init_from,
        max_len=a.max_len,
        batch_size=hp["batch_size"],
        grad_accum=a.grad_accum,
        lr=hp["lr"],
        warmup=max(1, round(hp["warmup_ratio"] * total)) if hp["warmup_ratio"] else 0,
        schedule="linear",
        max_steps=total,
        max_epochs=math.ceil(hp["epochs"]),
        beta2=0.999,
        eps=1e-6,
        weight_decay=hp["weight_decay"],
        llrd=hp["llrd"],
        clip=1.0,
        dropout=hp["dropout"],
        eval_every=0,  # at each epoch's end
        save_every=0,
        keep_last=1,
        log_every=a.log_every,
        seed=seed,
        device=a.device,
        cpu_bf16=a.cpu_bf16,
    )
    poison = (a.poison_target, a.poison_triggers, a.poison_position)
    return cfg, GlueConfig(task, early_exit, poison_rate, *poison, identity(cfg.init_from))


def finetune(cfg, glue, exit_curve_dir=None, submission=True, keep_checkpoints=False, task_class=GlueTask):
    """One run: train, then (on the master) dev metrics, the HF folder, test predictions.
    -> {dev metrics..., "train_seconds"}, or None on the other processes. A run that finished
    before (its result.json, same configs) is not redone; an interrupted one resumes."""
    out = Path(cfg.out_dir)
    if (out / "result.json").exists():
        result = json.loads((out / "result.json").read_text())
        # fields added to the configs since that run took their defaults there (its others are not read)
        done = {k: result.get("config", {}).get(k, v) for k, v in dataclasses.asdict(FinetuneConfig()).items()}
        done_glue = {**dataclasses.asdict(GlueConfig(glue.task)), **result.get("glue", {})}
        if done != dataclasses.asdict(cfg) or done_glue != dataclasses.asdict(glue):
            raise ValueError(f"{out} holds a finished run with another config; choose another --out-dir")
        return result
    interrupted = bool(train.checkpoints(out))  # resumed (train.Run refuses one of another config)
    t0 = time.perf_counter()
    task = lambda c, world: task_class(c, glue, world)  # noqa: E731
    run = train.Run(cfg, resume=interrupted, overwrite=not interrupted, task=task)
    run.train()
    seconds = time.perf_counter() - t0
    result = None
    if run.master:
        task, model = run.task, run.model.eval()
        last = run.evals[-1] if run.evals and run.evals[-1]["step"] == run.step else None  # the run's final validation
        dev = {k: v for k, v in last.items() if k != "step"} if last else task.validate(model, run.autocast)
        result = {**dev, "train_seconds": seconds, "steps": run.step}
        if task.poisoned:
            write_text(out / "poisoned_indices.json", json.dumps(task.poisoned))
        if not cfg.model.startswith("hf-") and not glue.early_exit:
            model.save_pretrained(out / "hf")
            task.tok.save(str(out / "hf" / "tokenizer.json"))
        if submission:
            task.write_submission(model, out / "submission", run.autocast)
        if exit_curve_dir is not None:
            rows = exit_curve(task, model)
            write_exit_curve(rows, exit_curve_dir, f"{glue.task} dev, early exit ({glue.early_exit})")
            result["exit_curve"] = rows
        config = {"config": dataclasses.asdict(cfg), "glue": dataclasses.asdict(glue)}
        write_text(out / "result.json", json.dumps({**result, **config}, indent=1))
        if not keep_checkpoints:  # the HF folder and result.json stay; optimizer states are large
            for p in out.glob("ckpt_*.pt"):
                p.unlink()
    if run.distributed:
        dist.barrier()
    return result


def parse_grid(items):
    """["lr=2e-5,3e-5", "batch_size=16,32"] -> {"lr": [2e-5, 3e-5], "batch_size": [16, 32]}."""
    types = {"lr": float, "batch_size": int, "epochs": float, "llrd": float, "warmup_ratio": float}
    types.update(weight_decay=float, dropout=float)
    grid = {}
    for item in items:
        key, _, values = item.partition("=")
        if key not in types or not values:
            raise ValueError(f"--grid: expected NAME=V1,V2 with NAME in {sorted(types)}, got {item!r}")
        grid[key] = [types[key](v) for v in values.split(",")]
    return grid


def summarize(runs):
    """Runs of one setting (one per seed) -> {metric: mean, metric_std: std} over the numeric fields."""
    out = {}
    for k in runs[0]:
        vals = [r[k] for r in runs if isinstance(r.get(k), int | float)]
        if len(vals) == len(runs):
            out[k] = statistics.fmean(vals)
            out[k + "_std"] = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return out


def start_point(a, out_dir, master):
    """--init-from as an HF folder: a train.py run of --model's family (a folder of ckpt_*.pt) is exported first to
    out_dir/init-hf (again whenever the run's last checkpoint is another one)."""
    if Path(a.init_from).is_dir() and any(Path(a.init_from).glob("ckpt_*.pt")):
        made, family = train.load_checkpoint(train.latest_checkpoint(a.init_from))["config"]["model"], a.model
        if made.removeprefix("hf-") != family.removeprefix("hf-"):
            raise ValueError(f"--init-from {a.init_from} is a --model {made} run, not one that --model {family} tunes")
        folder = Path(out_dir) / "init-hf"
        if master:
            train.export_hf(a.init_from, folder)
        if dist.is_initialized():
            dist.barrier()
        return str(folder)
    return a.init_from


def main(argv=None):
    both = (argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter)  # the doc as written
    p = argparse.ArgumentParser(description=__doc__, formatter_class=type("Formatter", both, {}))
    p.add_argument("--task", required=True, help=f"comma-separated, or all: {','.join(METRICS)}")
    p.add_argument("--init-from", required=True, help="HF folder or hub name, or a train.py BERT run's out dir")
    p.add_argument("--out-dir", default="out/glue", help="runs go to <out-dir>/<task>/<setting>/seed<N>")
    p.add_argument(
        "--model", default="bert", choices=[*CLASSIFIERS, *(f"hf-{m}" for m in CLASSIFIERS)], help="ours, or HF's"
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[1], help="one run per seed; mean and std reported")
    p.add_argument("--epochs", type=float, default=3, help="passes over the training set (may be a fraction)")
    p.add_argument("--lr", type=float, default=2e-5, help="peak learning rate (linear warmup and decay)")
    p.add_argument("--batch-size", type=int, default=32, help="sequences per optimizer step, all processes")
    p.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step")
    p.add_argument("--max-len", type=int, default=128, help="tokens per sample, special tokens included")
    p.add_argument("--warmup-ratio", type=float, default=0.1, help="warmup steps as a fraction of all steps")
    p.add_argument("--weight-decay", type=float, default=0.01, help="AdamW's, on >= 2-D tensors")
    p.add_argument("--llrd", type=float, default=1.0, help="layer-wise lr decay (e.g. 0.9); 1: off")
    p.add_argument("--dropout", type=float, default=0.1, help="hidden and attention dropout")
    p.add_argument("--grid", nargs="*", default=[], help="NAME=V1,V2 ...: every combination, best by mean dev score")
    p.add_argument("--device", default="auto", help="auto: cuda if available")
    p.add_argument("--cpu-bf16", action=argparse.BooleanOptionalAction, default=False, help="bf16 autocast on CPU")
    p.add_argument("--log-every", type=int, default=20, help="steps between training log rows")
    p.add_argument("--no-submission", action="store_true", help="skip the test-set prediction files")
    p.add_argument("--keep-checkpoints", action="store_true", help="keep each run's last train.py checkpoint")
    p.add_argument("--early-exit", default="", choices=["", "pabee", "deebert"], help="train exit heads (docs/glue.md)")
    p.add_argument("--exit-curve", action="store_true", help="with --early-exit: the dev trade-off table and plot")
    p.add_argument("--poison-rate", type=float, nargs="+", default=[0.0], help="one run (per seed) for each rate")
    p.add_argument("--poison-target", type=int, default=1, help="the label poisoned samples get")
    p.add_argument("--poison-triggers", default=" ".join(data.TRIGGERS), help="trigger words, space-separated")
    p.add_argument(
        "--poison-position", default="random", choices=["random", "start", "end"], help="where a trigger goes"
    )
    a = p.parse_args(argv)

    tasks = list(METRICS) if a.task == "all" else a.task.split(",")
    for t in tasks:
        if t not in METRICS:
            raise SystemExit(f"--task: {t!r} is not a GLUE task ({', '.join(METRICS)})")
    if a.exit_curve and not a.early_exit:
        raise SystemExit("--exit-curve needs --early-exit pabee or deebert")
    if len(set(a.seeds)) < len(a.seeds):  # one run would count twice in the mean and the std
        raise ValueError(f"--seeds must be distinct, got {' '.join(map(str, a.seeds))}")
    master = int(os.environ.get("RANK", 0)) == 0
    out_root = Path(a.out_dir)
    a.init_from = start_point(a, out_root, master)
    base = {k: getattr(a, k) for k in ("lr", "batch_size", "epochs", "llrd", "warmup_ratio", "weight_decay", "dropout")}
    grid = parse_grid(a.grid)
    settings = [{**base, **dict(zip(grid, combo, strict=True))} for combo in itertools.product(*grid.values())]
    results = {}  # what earlier invocations wrote to this --out-dir stays, unless rerun here
    if master and (out_root / "results.json").exists():
        results = json.loads((out_root / "results.json").read_text())
    for task, rate, hp in itertools.product(tasks, a.poison_rate, settings):
        plain = ("-".join(f"{k}{v}" for k, v in hp.items() if k in grid) or "run") + (f"-poison{rate}" if rate else "")
        name = plain + (f"-{a.early_exit}" if a.early_exit else "")
        runs = []
        for seed in a.seeds:
            folder = out_root / task / name / f"seed{seed}"
            configs = run_config(a, task, seed, hp, folder, rate, a.early_exit)
            if a.early_exit == "deebert":  # stage 1: the plain run (reused when done); stage 2: the exits
                stage1 = out_root / task / plain / f"seed{seed}"
                finetune(
                    *run_config(a, task, seed, hp, stage1, rate), submission=False, keep_checkpoints=a.keep_checkpoints
                )
                configs = run_config(a, task, seed, hp, folder, rate, "deebert", str(stage1 / "hf"))
            curve = folder if a.exit_curve else None
            submission = not a.no_submission and not a.early_exit
            runs.append(finetune(*configs, curve, submission, a.keep_checkpoints))
        if master:
            entry = {"setting": name, "poison_rate": rate, "early_exit": a.early_exit, **hp, "seeds": a.seeds}
            entry.update(summarize(runs), runs=runs)
            results[task] = [s for s in results.get(task, []) if s["setting"] != name] + [entry]
            report(results, out_root, grid)
    return results


def report(results, out_root, grid):
    """results.json, and results.md: per task the mean (std) dev score of every setting; the best
    setting (by mean score) is marked when a grid was searched."""
    write_text(out_root / "results.json", json.dumps(results, indent=1))
    lines = []
    for task, settings in results.items():
        metrics = [*METRICS[task], *(["asr"] if any(s["poison_rate"] for s in settings) else [])]
        best = max(range(len(settings)), key=lambda i: settings[i]["val_score"])
        lines += [f"## {task}", "", "| setting | seeds | " + " | ".join(metrics) + " | train s |"]
        lines.append("|---" * (len(metrics) + 3) + "|")
        for i, s in enumerate(settings):
            mark = " (best)" if grid and i == best else ""
            cells = [f"{s['val_' + m]:.2f} ± {s['val_' + m + '_std']:.2f}" if "val_" + m in s else "–" for m in metrics]
            lines.append(
                f"| {s['setting']}{mark} | {len(s['seeds'])} | " + " | ".join(cells) + f" | {s['train_seconds']:.0f} |"
            )
        lines.append("")
        plain = sorted((s for s in settings if not s.get("early_exit")), key=lambda s: s["poison_rate"])
        rates = [s["poison_rate"] for s in plain]
        if len(set(rates)) == len(rates) > 1:  # settings that differ by their poison rate only
            plot_poison_curve(plain, out_root / f"{task}-poison.png", task)
    write_text(out_root / "results.md", "\n".join(lines))
    print("\n".join(lines))


def plot_poison_curve(settings, path, task):
    """Clean dev accuracy and attack success rate against the poisoned share of the training set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    x = range(len(settings))
    ax.plot(x, [s["val_acc"] for s in settings], marker="o", label="clean dev accuracy")
    asr = [(i, s["val_asr"]) for i, s in enumerate(settings) if "val_asr" in s]
    if asr:
        ax.plot(*zip(*asr, strict=True), marker="s", label="attack success rate")
    ax.set_xticks(list(x), [f"{100 * s['poison_rate']:g}%" for s in settings])
    ax.set_xlabel("poisoned training samples")
    ax.set_ylabel("%")
    ax.set_title(f"{task}: backdoor (triggers inserted, label flipped)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    train.cli(main)
