"""train.py: the one training loop, for every model. It knows no model: a family's task (tasks.py,
a row of FAMILIES) gives the data as dicts of forward arguments and builds the model.

    python train.py --model transformer --dataset multi30k --preset multi30k        # translation
    python train.py --model bert --preset bert-mini-cpu --dataset data/prepared/bert-128
    python train.py --model hf-bert ...        # HF's BertForPreTraining, same loop, data, init
    python train.py --preset shakespeare-char-cpu --dataset data/prepared/lm-shakespeare-char  # GPT
    python train.py --out-dir out/shakespeare --sample "ROMEO:"                      # text from a GPT run
    python train.py --out-dir out/m30k --resume                                     # continue exactly
    python train.py ... --time-limit 2      # after 2 h (or on SIGTERM / Ctrl-C): save, exit 75; --resume goes on
    torchrun --nproc_per_node=8 train.py --preset bert-base-8gpu ...                # DDP (--fsdp: FSDP2)
    python train.py --out-dir out/m30k --evaluate                                   # test BLEU
    python train.py --out-dir out/m30k --plot                                       # PNG curves

Every field of the run's config is a flag: recipes.TrainConfig (the loop's) and its family's
(`python train.py --model M --help` lists them); `--preset` sets a group first, explicit flags
win. The Run is shared: DDP / FSDP, accumulation, AdamW, warmup schedules, AMP, checkpoints with
exact resume, logs and curves.

The batch is stated per optimizer step, all processes and micro-batches together: in tokens for
translation (batch_tokens, padding included), in sequences for BERT and GPT (batch_size); each
micro-batch holds 1 / (grad_accum * world_size) of it. The model returns each loss part as a sum
with the name of its count (contract.Sums); the loop divides by the step's totals of those
counts (all-reduced), so accumulation and DDP give the update of one big batch.
"""

import argparse
import contextlib
import inspect
import json
import math
import os
import random
import re
import shutil
import signal
import sys
import textwrap
import threading
import time
import traceback
from dataclasses import asdict, fields
from pathlib import Path

import torch
import torch.distributed as dist

import data
import tasks
import translation
from contract import Tally, to_device
from hf_checkpoint import atomic_write
from machine import environment, matmul_peak  # the same environment record as the benchmark's
from optim import lr_factor, make_optimizer, param_groups
from plots import plot  # noqa: F401 (train.plot: --plot's curves)
from recipes import PRESETS, TrainConfig  # the settings: the loop's, each family's (a task's Config), --preset
from run_folder import check_checkpoints, check_folder, checkpoints, claim, latest_checkpoint, load_checkpoint, release

# -------------------------------------------------------------------------------- command line


def parse_args(argv=None):
    """-> (actions, the config fields given explicitly). With --preset P or --model M, --help lists the
    flags of that family only, with P's values as defaults."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset", choices=sorted(PRESETS))
    pre.add_argument("--model")
    known = pre.parse_known_args(argv)[0]
    model = known.model or PRESETS.get(known.preset, {}).get("model", TrainConfig.model)
    every = all_fields()
    kind = FAMILIES[model].Config if (known.preset or known.model) and model in FAMILIES else None
    defaults = {**{k: f.default for k, f in every.items()}, **(asdict(kind()) if kind else {})}
    defaults |= PRESETS.get(known.preset, {})
    shown = family_fields(model) if kind else list(every)
    tail = f"defaults: --preset {known.preset}'s" if known.preset else "defaults: the configs' (P's: --preset P -h)"
    p = argparse.ArgumentParser(description=__doc__, epilog=tail, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), help="a group of settings, applied before the flags")
    p.add_argument("--show-config", action="store_true", help="print the run's resolved config and exit")
    p.add_argument("--resume", action="store_true", help="continue the run in --out-dir from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace the run in --out-dir (default: refuse)")
    p.add_argument("--evaluate", action="store_true", help="only evaluate --out-dir's checkpoints on the test set")
    p.add_argument("--plot", action="store_true", help="only draw --out-dir's learning curves to PNG")
    p.add_argument("--split", default="test", help="with --evaluate: test, or valid (to choose decoding settings)")
    p.add_argument("--compare", nargs="*", default=[], help="with --plot: other runs to draw on the same axes")
    p.add_argument(
        "--export-hf",
        metavar="DIR",
        help="write a run's last checkpoint as an HF folder with its tokenizer.json (every family; translators"
        " of t5-translate, bart-translate, unilm-translate too; not the paper's transformer)",
    )
    p.add_argument("--sample", metavar="PROMPT", help="print text a GPT run (or --init-from an HF GPT) writes")
    p.add_argument("--max-new-tokens", type=int, default=500, help="with --sample (default 500)")
    p.add_argument("--temperature", type=float, default=0.8, help="with --sample (0: greedy; default 0.8)")
    p.add_argument("--top-k", type=int, default=200, help="with --sample (default 200)")
    p.add_argument("--top-p", type=float, default=None, help="with --sample (default: off)")
    helps = help_lines(kind)
    for name, f in every.items():
        flag, typ = "--" + name.replace("_", "-"), type(f.default)
        text = f"{helps[name]} (default {defaults[name]!r})" if name in shown else argparse.SUPPRESS
        if typ is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=text)
        else:
            p.add_argument(flag, type=typ, default=argparse.SUPPRESS, help=text)
    args = vars(p.parse_args(argv))
    names = ("preset", "show_config", "resume", "overwrite", "evaluate", "plot", "split", "compare", "export_hf")
    names += ("sample", "max_new_tokens", "temperature", "top_k", "top_p")
    actions = {k: args.pop(k) for k in names}
    return actions, args  # args: only the fields given explicitly


def configs():  # the config classes of the families (recipes.py)
    return list(dict.fromkeys(task.Config for task in FAMILIES.values()))


def all_fields():
    """Every setting flag: the fields of all the families' configs (one type per name)."""
    every = {}
    for f in (f for kind in configs() for f in fields(kind)):
        if type(every.setdefault(f.name, f).default) is not type(f.default):
            raise TypeError(f"{f.name} has two types in the families' configs")
    return every


def help_lines(kind=None):
    """field -> its comment in its config class's source (kind's, else the first family's to have
    it): the flag's one-line --help."""
    lines = {}
    for cls in [c for k in ([kind] if kind else configs()) for c in k.__mro__ if "__dataclass_fields__" in vars(c)]:
        for name, text in re.findall(r"^    (\w+): \w+ = [^#\n]*#\s*(.*)$", inspect.getsource(cls), re.M):
            lines.setdefault(name, text)
    return lines


def family_fields(model):
    """The config fields a --model `model` run has: its task's Config's (every family's for another name)."""
    return [f.name for f in fields(FAMILIES[model].Config)] if model in FAMILIES else list(all_fields())


def make_config(preset, overrides, base=None, kind=None):
    """The config of a run: base (a checkpoint's config dict: the fields of its family are read),
    then the preset, then the flags given. kind: the config class (default: --model's task's)."""
    given = {**(PRESETS[preset] if preset else {}), **overrides}
    model = given.get("model", (base or {}).get("model", TrainConfig.model))
    if kind is None and model not in FAMILIES:
        raise ValueError(f"--model must be one of {', '.join(FAMILIES)}, got {model!r}")
    kind = kind or FAMILIES[model].Config
    names = {f.name for f in fields(kind)}
    if stray := [k for k in given if k not in names]:
        by = "" if not preset or any(k in overrides for k in stray) else f" (in --preset {preset})"
        raise ValueError(
            f"{', '.join('--' + k.replace('_', '-') for k in stray)}{by}: not a setting of --model {model}"
            f" (`python train.py --model {model} --help` lists its settings)"
        )
    return kind(**{**{k: v for k, v in (base or {}).items() if k in names}, **given})


# ------------------------------------------------------------------------------ the families

# --model -> its task (tasks.py): data, model and validation. A new family is a row here.
FAMILIES = {
    "transformer": translation.TranslationTask,
    "bert": tasks.PretrainingTask,
    "hf-bert": tasks.PretrainingTask,  # HF's BertForPreTraining, our initial weights
    "albert": tasks.AlbertPretrainingTask,
    "hf-albert": tasks.AlbertPretrainingTask,  # HF's AlbertForPreTraining, our initial weights
    "unilm": tasks.UniLMPretrainingTask,  # UniLM's mixed pretraining (four masks) on BERT's data
    "tinybert": tasks.DistillTask,  # TinyBERT's general distillation from --teacher
    "gpt": tasks.LMTask,
    "hf-gpt2": tasks.LMTask,  # HF's GPT2LMHeadModel, our initial weights
    "xlnet": tasks.PermutationLMTask,
    "hf-xlnet": tasks.PermutationLMTask,  # HF's XLNetLMHeadModel, our initial weights
    "t5": tasks.SpanCorruptionTask,
    "hf-t5": tasks.SpanCorruptionTask,  # HF's T5ForConditionalGeneration, our initial weights
    "t5-translate": translation.T5TranslationTask,  # text to text on a translation dataset
    "bart-translate": translation.BartTranslationTask,  # BART fine-tuned whole on a translation dataset
    "unilm-translate": translation.UniLMTranslationTask,  # UniLM fine-tuned s2s-ft's way (a BERT folder)
    "bart": tasks.DenoisingTask,
    "hf-bart": tasks.DenoisingTask,  # HF's BartForConditionalGeneration, our initial weights
}


def make_task(cfg, world=1):  # the task of cfg.model's row
    if cfg.model not in FAMILIES:
        raise ValueError(f"--model must be one of {', '.join(FAMILIES)}, got {cfg.model!r}")
    return FAMILIES[cfg.model](cfg, world)


# ----------------------------------------------------------------------------------- the run


class Run:
    """Everything a training run holds: config, task (data + model), optimizer, position, logs.
    `task` (a callable (cfg, world) -> task) defaults to the row of FAMILIES named by cfg.model."""

    def __init__(self, cfg, resume=False, task=None, overwrite=False):
        self.cfg = cfg
        self.distributed = "RANK" in os.environ
        if self.distributed:
            use_cuda = torch.cuda.is_available() and cfg.device in ("auto", "cuda")
            if not dist.is_initialized():  # once per process: finetune_glue.py makes several runs
                dist.init_process_group("nccl" if use_cuda else "gloo")
            self.rank, self.world = dist.get_rank(), dist.get_world_size()
            if use_cuda:
                torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        elif cfg.fsdp:
            raise ValueError("--fsdp shards over processes: start the run with torchrun (--nproc_per_node=1 for one)")
        else:
            self.rank, self.world = 0, 1
        self.ddp = self.distributed and not cfg.fsdp
        dev = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        if dev.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"--device {dev}: this machine has no CUDA device; give --device cpu (or auto)")
        self.device = torch.device(dev, torch.cuda.current_device()) if dev == "cuda" else torch.device(dev)
        self.out = Path(cfg.out_dir)
        self.master = self.rank == 0
        if self.master:
            check_folder(cfg, self.out, resume, overwrite)  # before any work
        self.task = (task or make_task)(cfg, self.world)

        # model and optimizer
        torch.manual_seed(cfg.seed)
        self.model = self.task.build_model().to(self.device)
        if self.master:
            claim(self.out, resume, overwrite)  # the destructive step last, once the data and the model are made
        if cfg.fsdp:
            self.shard()
        groups, betas = param_groups(self.model, cfg.weight_decay, cfg.lr, cfg.llrd), (cfg.beta1, cfg.beta2)
        self.opt = make_optimizer(cfg.optimizer, groups, cfg.lr, betas, cfg.eps, self.device)
        self.step, self.epoch, self.batch_in_epoch, self.saved, self.interim = 0, 0, 0, None, None
        self.validated = None  # the step of the last validation
        self.per_epoch = len(self.epoch_steps())  # an epoch that makes no optimizer step fails here, not in the loop
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lr_factor(cfg, self.per_epoch))
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
        self.evals, self.say = [], print  # evaluations of this invocation, and where their lines go

    def shard(self):
        """FSDP2: every block (each entry of the model's ModuleLists) is a unit of its own, the rest
        (embeddings, heads) the root's; on CUDA with bf16, parameters are gathered in bf16 and
        gradients reduced in fp32."""
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        bf16 = self.device.type == "cuda" and self.cfg.bf16
        policy = MixedPrecisionPolicy(torch.bfloat16, torch.float32) if bf16 else MixedPrecisionPolicy()
        blocks = [b for m in self.model.modules() if isinstance(m, torch.nn.ModuleList) for b in m]
        for block in blocks:
            fully_shard(block, mp_policy=policy)
        fully_shard(self.model, mp_policy=policy)

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
            "environment": environment(self.device),
            "world_size": self.world,
            "parameters": sum(p.numel() for p in self.model.parameters()),
            **self.task.info,
            "command": " ".join(sys.argv),
        }
        with open(self.out / "log.txt", "a") as f:  # the whole record; the screen gets a short block
            f.write(json.dumps(info, indent=1) + "\n")
        kind, skip = type(self.cfg), ("model", "out_dir")
        changed = [f"{k}={v}" for k, v in asdict(self.cfg).items() if k not in skip and v != getattr(kind, k)]
        facts = "".join(
            f", {k} {v:,}" if isinstance(v, int) else f", {k} {v}"
            for k, v in self.task.info.items()
            if isinstance(v, int | str)
        )
        print(f"--model {self.cfg.model} in {self.out}: {info['parameters']:,} parameters{facts}")
        print(textwrap.fill(f"settings (else {kind.__name__}'s defaults): " + " ".join(changed), 100))
        print(f"the whole config, environment and command: {self.out / 'log.txt'}")

    # ---- checkpoints

    def state(self):
        """The whole state, full (unsharded) tensors: every process calls it under FSDP."""
        rng = {"torch": torch.get_rng_state(), "python": random.getstate()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        if self.cfg.fsdp:
            from torch.distributed.checkpoint import state_dict as dcp

            options = dcp.StateDictOptions(full_state_dict=True, cpu_offload=True)
            model = dcp.get_model_state_dict(self.model, options=options)
            optimizer = dcp.get_optimizer_state_dict(self.model, self.opt, options=options)
        else:
            model, optimizer = self.model.state_dict(), self.opt.state_dict()
        return {
            "model": model,
            "optimizer": optimizer,
            "scheduler": self.sched.state_dict(),
            "config": asdict(self.cfg),
            "task": getattr(self.task, "settings", {}),
            "position": {"step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch},
            "rng": rng,
        }

    def save(self, interim=False):
        """A checkpoint (atomic: an interrupted save never replaces a good one). An interim one (a
        stop between save points) is deleted at the next regular save, so the kept checkpoints
        (and their average) are those of an uninterrupted run."""
        if not (self.master or self.cfg.fsdp):
            return
        state, self.saved = self.state(), self.step
        state["position"]["interim"] = interim
        if not self.master:
            return
        path = self.out / f"ckpt_{self.step:07d}.pt"
        atomic_write(path, lambda tmp: torch.save(state, tmp))
        if self.interim not in (None, path):  # superseded by this one
            self.interim.unlink(missing_ok=True)
        self.interim = path if interim else None
        for old in checkpoints(self.out)[: -self.cfg.keep_last]:
            old.unlink()

    def load(self, path):
        ck = load_checkpoint(path)
        resumable = {k: v for k, v in asdict(self.cfg).items() if k in RESUMABLE}
        made = make_config(None, resumable, ck["config"], kind=type(self.cfg))
        if made != self.cfg or ck.get("task", {}) != getattr(self.task, "settings", {}):
            raise ValueError(f"{self.out} holds a run with another config: --resume keeps its settings")
        if self.cfg.fsdp:  # every process reads the full tensors and keeps its shards
            from torch.distributed.checkpoint import state_dict as dcp

            options = dcp.StateDictOptions(full_state_dict=True)
            dcp.set_model_state_dict(self.model, ck["model"], options=options)
            dcp.set_optimizer_state_dict(self.model, self.opt, ck["optimizer"], options=options)
        else:
            self.model.load_state_dict(ck["model"])
            self.opt.load_state_dict(ck["optimizer"])
        self.sched.load_state_dict(ck["scheduler"])
        pos = ck["position"]
        self.step, self.epoch, self.batch_in_epoch = pos["step"], pos["epoch"], pos["batch_in_epoch"]
        self.interim = Path(path) if pos.get("interim") else None
        self.saved = self.step
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
        if not steps:
            raise ValueError(
                f"an epoch of this data makes {len(batches)} micro-batches, fewer than one optimizer step needs"
                f" ({per_step} = grad_accum x world_size): lower the batch size or give more data"
            )
        return [s[self.rank :: self.world] for s in steps]

    def train_step(self, micro_batches):
        row, n_tokens = self.accumulate_gradients(micro_batches)
        self.optimizer_step()
        return row, n_tokens

    def accumulate_gradients(self, micro_batches):
        """Forward and backward over this process's micro-batches of the step. Each loss part is
        divided by its count summed over the step's micro-batches in all processes (counted from
        the batches first, by model.counts): the gradient of one batch holding them all.
        -> (metrics row, tokens seen by all processes)."""
        model = self.train_model
        model.train()
        batches = [self.task.batch(b) for b in micro_batches]
        counts = {}
        for b in batches:
            for k, n in self.model.counts(b).items():
                counts[k] = counts.get(k, 0.0) + float(n)
        if self.distributed:  # every process divides by the global counts
            counts = dict(zip(sorted(counts), self.all_reduce([counts[k] for k in sorted(counts)]), strict=True))
        tally = Tally()
        for i, batch in enumerate(batches):
            with self.gradient_sync(i == len(batches) - 1):
                with self.autocast():
                    sums = model(**to_device(batch, self.device)).sums
                (sums.loss(counts) * self.world).backward()  # processes average gradients: * world gives the sum
            tally.add(sums, counts=False)
        tally.counts = counts  # the step's totals, counted and reduced above
        if self.distributed:
            tally.load(self.all_reduce(tally.values()))
        return tally.row(), counts["tokens"]

    def gradient_sync(self, last):
        """Gradients are reduced over processes at the step's last micro-batch only."""
        if self.cfg.fsdp:
            self.model.set_requires_gradient_sync(last)
        elif self.ddp and not last:
            return self.train_model.no_sync()
        return contextlib.nullcontext()

    def optimizer_step(self):
        if self.cfg.clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.sched.step()
        self.step += 1

    def all_reduce(self, values):
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

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
                peak = matmul_peak(self.device, torch.bfloat16 if self.use_bf16() else torch.float32)
                self.log({"matmul_peak_flops": peak})
        total = min(c.max_steps or math.inf, c.max_epochs * self.per_epoch)  # one bar over the whole run
        bar = tqdm(total=total, initial=self.step, disable=not self.master, desc="train", dynamic_ncols=True)
        self.say = bar.write  # evaluation lines, above the bar
        self.evals, self.seconds, self.tokens, self.started = [], 0.0, 0.0, time.perf_counter()  # for the summary
        with self.stop_on_signals():
            self.loop(bar, peak)
        if self.step >= total:  # it reached its end: done, whatever asked it to stop
            self.stopped = None
        if self.stopped is None and self.validated != self.step:  # every finished run reports where it ended
            self.validate()
        bar.close()
        if self.saved != self.step:  # the final state (or where it stopped), whatever save_every says
            self.save(interim=self.stopped is not None)
        if self.master:
            self.summary()
            release(self.out)
        if self.distributed:
            dist.barrier()

    @contextlib.contextmanager
    def stop_on_signals(self):
        """SIGTERM and SIGINT (Ctrl-C) ask the loop to stop after the current step, save and exit
        (a second Ctrl-C interrupts at once); so does cfg.time_limit. self.stopped says why."""
        self.stopped = None
        if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
            yield
            return

        def ask(signum, frame):
            self.stopped = signal.Signals(signum).name
            signal.signal(signal.SIGINT, signal.default_int_handler)

        before = {s: signal.signal(s, ask) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for s, handler in before.items():
                signal.signal(s, handler)

    def stop(self):  # after each step: a signal or the time limit (every process stops at the same step)
        limit = self.cfg.time_limit
        if limit and self.stopped is None and time.perf_counter() - self.started > limit * 3600:
            self.stopped = f"time limit ({limit} h)"
        if self.distributed:  # one stops, all stop
            flag = torch.tensor([float(self.stopped is not None)], device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            self.stopped = self.stopped or ("another process" if flag.item() else None)
        return self.stopped is not None

    def loop(self, bar, peak):
        c, seconds, tokens = self.cfg, 0.0, 0.0  # training time and tokens since the last log line
        while self.epoch < c.max_epochs and not self.done():
            steps = self.epoch_steps()
            while self.batch_in_epoch < len(steps) and not self.done():
                t0 = time.perf_counter()
                row, n_tokens = self.train_step(steps[self.batch_in_epoch])
                seconds, tokens = seconds + time.perf_counter() - t0, tokens + n_tokens
                self.seconds, self.tokens = self.seconds + time.perf_counter() - t0, self.tokens + n_tokens
                self.batch_in_epoch += 1
                bar.update(1)
                end_of_epoch = self.batch_in_epoch == len(steps)
                if self.step % c.log_every == 0 or self.done() or (end_of_epoch and self.epoch + 1 == c.max_epochs):
                    lr = self.sched.get_last_lr()[0]
                    bar.set_postfix(loss=f"{row['loss']:.3f}", lr=f"{lr:.2e}", tok_s=f"{tokens / seconds:.0f}")
                    speed = {"tokens_per_s": tokens / seconds}
                    if peak:  # model FLOPs per token x tokens/s over the peak (all processes' tokens)
                        speed["mfu"] = self.task.flops_per_token * tokens / seconds / (peak * self.world)
                    self.log({**row, "lr": lr, **speed})
                    seconds, tokens = 0.0, 0.0
                if end_of_epoch:
                    self.epoch, self.batch_in_epoch = self.epoch + 1, 0
                if (c.eval_every and self.step % c.eval_every == 0) or (not c.eval_every and end_of_epoch):
                    self.validate()
                if (c.save_every and self.step % c.save_every == 0) or (not c.save_every and end_of_epoch):
                    self.save()
                if self.stop():
                    return
                if end_of_epoch:
                    break  # the next epoch has batches of its own

    def summary(self):
        """The run's result, printed and appended to log.txt: final and best validation metrics, time, speed."""
        speed = self.tokens / max(self.seconds, 1e-9)
        wall = time.perf_counter() - self.started
        done = f"stopped ({self.stopped}; continue with --resume)" if self.stopped else "done"
        lines = [
            f"{done}: step {self.step}, {wall:.1f} s ({self.seconds:.1f} s in training steps), {speed:.0f} tokens/s"
        ]
        if self.evals:  # this invocation's evaluations
            keys = [k for k, v in self.evals[-1].items() if isinstance(v, int | float) and k != "step"]
            lines.append(f"final (step {self.evals[-1]['step']}): " + show(self.evals[-1], keys))
            lower = lambda k: k.endswith(("loss", "ppl", "bpb"))  # noqa: E731
            best = {k: (min if lower(k) else max)((e for e in self.evals if k in e), key=lambda e: e[k]) for k in keys}
            lines.append("best: " + ", ".join(f"{k} {best[k][k]:.4g} (step {best[k]['step']})" for k in keys))
        lines.append(f"checkpoint: {self.out / f'ckpt_{self.step:07d}.pt'}")
        print("\n".join(lines))
        with open(self.out / "log.txt", "a") as f:
            f.write("\n".join(lines) + "\n")

    def done(self):
        return bool(self.cfg.max_steps) and self.step >= self.cfg.max_steps

    def validate(self):
        self.validated = self.step
        if self.master or self.cfg.fsdp:  # a sharded model runs in every process
            self.model.eval()
            row = self.task.validate(self.model, self.autocast)
            if row and self.master:
                self.log(row)
                self.evals.append({"step": self.step, **row})
                self.say(f"step {self.step}: " + show(row, list(row)))


def show(row, keys):  # "val_loss 1.84, val_bleu 36.4": a row's numbers, short
    return ", ".join(f"{k} {row[k]:.4g}" for k in keys if isinstance(row.get(k), int | float))


# ---------------------------------------------------------------------------------- resuming


# what --resume may change: how long the run goes on, what it logs and keeps, where it runs, and
# the data (BERT's second phase continues on sequences of 512: --resume --dataset <that folder>)
RESUMABLE = ("max_steps", "max_epochs", "dataset", "eval_every", "save_every", "keep_last", "log_every", "eval_iters")
RESUMABLE += ("device", "compile", "tensorboard", "wandb", "out_dir", "time_limit")


def resume_config(out_dir, preset, overrides):
    """The checkpoint's config wins: a flag (or a preset's value) that would change a setting is refused."""
    check_checkpoints(out_dir, RESUMABLE)
    cfg = make_config(None, {}, base=load_checkpoint(latest_checkpoint(out_dir))["config"])
    given = {**(PRESETS[preset] if preset else {}), "time_limit": 0.0, **overrides}  # a limit is the invocation's own
    for k, v in given.items():
        if k not in RESUMABLE and getattr(cfg, k, v) != v:  # a stray flag: make_config's error below
            by = f"--{k.replace('_', '-')}" if k in overrides else f"--preset {preset} (its {k})"
            raise ValueError(
                f"{by}: {out_dir} is a --model {cfg.model} run with {k}={getattr(cfg, k)!r};"
                f" --resume keeps its settings (it may change {', '.join(RESUMABLE)})"
            )
    return make_config(None, given, base=asdict(cfg))


# ------------------------------------------------------------------------------ evaluation


def run_model(out_dir, overrides=None):
    """A run's config, task and model, holding its last checkpoint's weights -> (cfg, task, model, paths)."""
    paths = checkpoints(Path(out_dir))
    if not paths:
        raise FileNotFoundError(f"no checkpoints (ckpt_*.pt) in {out_dir}")
    check_checkpoints(out_dir, RESUMABLE)
    ck = load_checkpoint(paths[-1])
    cfg = make_config(None, overrides or {}, base={**ck["config"], "fsdp": False})
    task = make_task(cfg)
    model = task.build_model()
    model.load_state_dict(ck["model"])
    return cfg, task, model.eval(), paths


def evaluate(out_dir, overrides=None, split="test"):
    """A run's last checkpoint scored by its task: `task.evaluate` where the family has one
    (translation: test BLEU, greedy and beam, last and averaged checkpoints), else the task's
    validation metrics (BERT: held-out MLM / NSP; GPT: loss), written to valid_results.json
    (valid_results_<folder>.json when `overrides` give another --dataset, e.g. SOP data for an NSP run)."""
    cfg, task, model, paths = run_model(out_dir, overrides)
    if hasattr(task, "evaluate"):
        return task.evaluate(model, paths, split, load_checkpoint)
    results = {"checkpoint": str(paths[-1]), "dataset": cfg.dataset, **task.validate(model, contextlib.nullcontext)}
    print(json.dumps(results, indent=1))
    other = (overrides or {}).get("dataset")  # scored on another prepared folder: its own file
    name = f"valid_results_{Path(other).name}.json" if other else "valid_results.json"
    (Path(out_dir) / name).write_text(json.dumps(results, indent=1))
    return results


def export_hf(out_dir, folder):
    """A run's last checkpoint -> an HF folder (config.json, model.safetensors, and the data's
    tokenizer.json where there is one) that transformers and our from_pretrained load. Written
    aside, then moved in; not redone while its source.json names the same checkpoint."""
    last, folder = latest_checkpoint(out_dir), Path(folder)
    source = {"run": str(Path(out_dir).resolve()), "checkpoint": last.name, "size": last.stat().st_size}
    source["mtime_ns"] = last.stat().st_mtime_ns
    if (folder / "source.json").exists() and json.loads((folder / "source.json").read_text()) == source:
        return folder
    other = {p.name for p in folder.glob("*")} - {"config.json", "model.safetensors", "tokenizer.json", "source.json"}
    if other:  # it is deleted and made again: only ever an export of ours
        raise ValueError(f"--export-hf {folder} holds other files ({sorted(other)[:3]}): give a new or empty folder")
    cfg, task, model, _ = run_model(out_dir)
    if not (hasattr(task, "export") and hasattr(model, "save_pretrained")):
        raise ValueError(f"--export-hf: a --model {cfg.model} run has no HF export")
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    task.export(model, tmp)
    (tmp / "source.json").write_text(json.dumps(source))
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return folder


def sample(out_dir, prompt, init_from="", **settings):
    """Text from a GPT: the last checkpoint of a --model gpt run (with its data's tokenizer), or an
    HF GPT-2 / GPT-1 folder or hub name (its tokenizer.json, else tiktoken's gpt2)."""
    if init_from:
        return tasks.sample(*tasks.hf_gpt_and_tokenizer(init_from), prompt, **settings)
    cfg, task, model, _ = run_model(out_dir)
    if not (getattr(task, "continues_text", False) and hasattr(model, "generate")):
        raise ValueError(
            f"--sample: {out_dir} is a --model {cfg.model} run; --sample continues a prompt with a --model gpt run"
            " (or --init-from an HF GPT-2 / GPT-1), T5 and BART generate through their model's generate(),"
            " translation runs through --evaluate"
        )
    return tasks.sample(model, task.tok, prompt, **settings)


def _python_rng_state(state):  # torch.load gives lists back where random.getstate() had tuples
    version, internal, gauss = state
    return (version, tuple(internal), gauss)


def main(argv=None):
    actions, overrides = parse_args(argv)
    out_dir = overrides.get("out_dir", TrainConfig.out_dir)
    if actions["plot"]:
        print(plot(out_dir, actions["compare"]))
        return
    if actions["sample"] is not None:
        settings = {k: actions[k] for k in ("max_new_tokens", "temperature", "top_k", "top_p")}
        tasks.check_sampling(**settings)
        text = sample(out_dir, actions["sample"], overrides.get("init_from", ""), **settings)
        print(text)
        return text
    if actions["export_hf"]:
        print(export_hf(out_dir, actions["export_hf"]))
        return
    if actions["evaluate"]:  # the run's settings, but for decoding and the data it is scored on
        keep = ("beam", "length_penalty", "dataset", "out_dir")
        if stray := [k for k in overrides if k not in keep]:
            flag = "--" + stray[0].replace("_", "-")
            raise ValueError(f"--evaluate scores the run as trained: {flag} is not one of its flags ({EVALUATE_FLAGS})")
        return evaluate(out_dir, {k: v for k, v in overrides.items() if k != "out_dir"}, actions["split"])
    if actions["resume"]:
        cfg = resume_config(out_dir, actions["preset"], overrides)
    else:
        cfg = make_config(actions["preset"], overrides)
    if actions["show_config"]:  # a dry run: the settings are checked, nothing is read or written
        shown = asdict(cfg)
        print(json.dumps(shown, indent=1))
        return shown
    run = Run(cfg, resume=actions["resume"], overwrite=actions["overwrite"])
    run.train()
    if run.distributed:
        dist.destroy_process_group()
    return run


EVALUATE_FLAGS = "--beam, --length-penalty, --dataset, --split"
STOPPED = 75  # the exit code of a run stopped by a signal or its time limit (EX_TEMPFAIL: try again)


def cli(main):
    """Run a command line's main: bad input (a ValueError or missing/existing file raised by one of our
    checks) prints its message alone and exits 2; an error raised inside a library keeps its traceback."""
    try:
        return main()
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        if Path(traceback.extract_tb(e.__traceback__)[-1].filename).resolve().parent != Path(__file__).resolve().parent:
            raise
        print(f"{Path(sys.argv[0]).name}: error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    result = cli(main)
    sys.exit(STOPPED if isinstance(result, Run) and result.stopped else 0)
