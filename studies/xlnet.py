"""XLNet at this CPU's scale (issue 20, docs/xlnet.md): first 200 steps of ours and of HF's
XLNetLMHeadModel through the same loop (same init, permutations and batches, dropout off: per-step
|dloss|, and the wall time of each); then the XLNet paper's ablation at equal data and size: xlnet-mini
(permutation LM, memory of the 64 tokens before each window) and bert-mini (MLM + NSP) of the same
shape, both on books + wiki in one 8,192-token WordPiece vocabulary, the same steps of 32 windows of
128 tokens (<= 90 min each); each exported and fine-tuned on SST-2 and MRPC dev (3 seeds, the same
recipe for both; fp32 throughout)."""

from study import Run

STEPS = "3000"  # each model's pretraining: xlnet-mini 1.5 s a step, bert-mini 1.0-1.25 s (fp32, AMD EPYC, 2 cores)
GLUE = {  # the same recipe for both models: SST-2's 67k sentences once at 64 tokens, MRPC's 3.7k pairs 3 times
    "sst2": ["--max-len", "64", "--epochs", "1", "--lr", "1e-4", "--seeds", "1", "2", "3", "--no-submission"],
    "mrpc": ["--max-len", "128", "--epochs", "3", "--lr", "1e-4", "--seeds", "1", "2", "3", "--no-submission"],
}
TASKS = ("sst2", "mrpc")


def twin(model):  # ours and HF's XLNetLMHeadModel through the loop: same init, same batches, no dropout
    flags = ["--max-steps", "200", "--log-every", "1", "--eval-every", "100", "--dropout", "0", "--model", model]
    return Run(
        f"steps200-{model}",
        ["train.py", "--preset", "xlnet-mini-cpu", "--dataset", "{runs}/prep-lm", *flags, "--out-dir", "{out}"],
        needs=["prep-lm"],
        minutes=6,
        metric="loss",
    )


def pretrain(model):
    data = "{runs}/prep-lm" if model == "xlnet" else "{runs}/prep-bert"
    flags = ["--max-steps", STEPS, "--eval-every", "500", "--save-every", "500", "--no-cpu-bf16"]  # fp32 both
    return Run(
        f"pretrain-{model}",
        ["train.py", "--preset", f"{model}-mini-cpu", "--dataset", data, *flags, "--out-dir", "{out}"],
        needs=["prep-lm" if model == "xlnet" else "prep-bert"],
        minutes=80 if model == "xlnet" else 60,
        metric="val_loss",
    )


def finetune(model, task):
    return Run(
        f"{task}-{model}",
        ["finetune_glue.py", "--task", task, "--model", model, *GLUE[task], "--init-from", f"{{runs}}/export-{model}"]
        + ["--out-dir", "{out}"],
        needs=[f"export-{model}"],
        minutes=25 if task == "sst2" else 10,
    )


PREP_BERT = ["data.py", "bert", "--source", "books+wiki", "--vocab-size", "8192", "--dupe-factor", "5"]
RUNS = [
    Run("prep-bert", [*PREP_BERT, "--formats", "bin", "--out", "{out}"], minutes=1.5),
    Run(
        "prep-lm",
        ["data.py", "lm", "--source", "books+wiki", "--tokenizer", "{runs}/prep-bert/tokenizer.json", "--out", "{out}"],
        needs=["prep-bert"],
        minutes=1,
    ),
    *(twin(model) for model in ("xlnet", "hf-xlnet")),
    *(pretrain(model) for model in ("xlnet", "bert")),
    *(
        Run(
            f"export-{m}",
            ["train.py", "--out-dir", f"{{runs}}/pretrain-{m}", "--export-hf", "{out}"],
            [f"pretrain-{m}"],
        )
        for m in ("xlnet", "bert")
    ),
    *(finetune(model, task) for task in TASKS for model in ("xlnet", "bert")),
]


def score(results, name, task):
    """(dev accuracy or F1 mean, std) of a finished fine-tuning run, or None."""
    r = results.get(name)
    entry = r and r["metrics"].get("results", {}).get(task)
    entry = entry[0] if isinstance(entry, list) else entry
    key = "val_acc" if task == "sst2" else "val_f1"
    return entry and (entry[key], entry.get(f"{key}_std", 0.0))


def table(results):
    """Pretraining (held-out loss, steps, time) and GLUE dev scores of each model; the 200-step twins."""
    lines = [
        "| model (4 x 256, 8k WordPiece) | objective | held-out loss | steps | pretraining time | SST-2 acc | MRPC F1 |"
    ]
    lines.append("|---|---|---|---|---|---|---|")
    for model, objective in (("xlnet", "permutation LM, memory 64"), ("bert", "MLM + NSP")):
        r = results.get(f"pretrain-{model}")
        m = r["metrics"] if r else {}
        loss = f"{m['val_loss']:.3f}" if "val_loss" in m else "-"
        steps, wall = (f"{m['step']:,}", f"{r['wall_s'] / 60:.0f} min") if r else ("-", "-")
        cells = [f"{s[0]:.2f} ± {s[1]:.2f}" if (s := score(results, f"{t}-{model}", t)) else "-" for t in TASKS]
        lines.append(f"| {model}-mini | {objective} | {loss} | {steps} | {wall} | {' | '.join(cells)} |")
    a, b = results.get("steps200-xlnet"), results.get("steps200-hf-xlnet")
    if a and b:  # the per-step losses: out/studies/xlnet/steps200-*/metrics.jsonl
        lines += [
            "",
            "| 200 steps, same init and batches | loss at 200 | held-out loss | wall time |",
            "|---|---|---|---|",
        ]
        for name, r in (("ours (`--model xlnet`)", a), ("HF (`--model hf-xlnet`)", b)):
            m = r["metrics"]
            lines.append(f"| {name} | {m['loss']:.6f} | {m.get('val_loss', float('nan')):.6f} | {r['wall_s']:.0f} s |")
    return "\n".join(lines)


def figure(results):
    """GLUE dev scores of the two pretrained models."""
    groups = {}
    for task, label in (("sst2", "SST-2 accuracy"), ("mrpc", "MRPC F1")):
        for model in ("xlnet", "bert"):
            if s := score(results, f"{task}-{model}", task):
                groups.setdefault(label, {})[f"{model}-mini"] = s[0]
    return groups and ("XLNet vs BERT at equal data and size (CPU scale)", "dev score (%)", groups)
