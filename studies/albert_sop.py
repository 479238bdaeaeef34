"""ALBERT's Table 5 at this CPU's scale (issue 19): two albert-mini models trained alike (preset
albert-mini-cpu, 5,000 steps x 32 x 128 tokens, n-gram masking), one with MLM + NSP, one with
MLM + SOP, on books + wiki in one 8,192-token WordPiece vocabulary; each then scored on the
held-out pairs of both tasks (`train.py --evaluate --dataset <the other folder>`). The paper's
claim: a model trained on NSP is near chance on SOP, one trained on SOP does well on NSP. First,
200 steps of ours and of HF's AlbertForPreTraining through the same loop (same init and batches).
docs/albert.md, "Table 5"."""

from study import Run

PREP = ["data.py", "bert", "--source", "books+wiki", "--dupe-factor", "5", "--ngram", "3", "--formats", "bin"]
TASKS = ("nsp", "sop")


def prep(task):
    vocab = ["--vocab-size", "8192"] if task == "nsp" else ["--tokenizer", "{runs}/prep-nsp/tokenizer.json"]
    return Run(
        f"prep-{task}",
        [*PREP, *vocab, "--pair-task", task, "--out", "{out}"],
        needs=[] if task == "nsp" else ["prep-nsp"],
        minutes=1.5,
    )


def pretrain(task):
    return Run(
        f"train-{task}",
        ["train.py", "--preset", "albert-mini-cpu", "--dataset", f"{{runs}}/prep-{task}", "--out-dir", "{out}"],
        needs=[f"prep-{task}"],
        minutes=52,
        metric="val_sop_acc",
    )


def score(trained, on):
    return Run(
        f"score-{trained}-on-{on}",
        ["train.py", "--out-dir", f"{{runs}}/train-{trained}", "--evaluate", "--dataset", f"{{runs}}/prep-{on}"],
        needs=[f"train-{trained}", f"prep-{on}"],
        minutes=0.5,
    )


def twin(model):  # ours and HF's AlbertForPreTraining through the loop: same init, same batches, no dropout
    flags = ["--max-steps", "200", "--decay-steps", "5000", "--log-every", "1", "--eval-every", "100", "--model", model]
    return Run(
        f"steps200-{model}",
        ["train.py", "--preset", "albert-mini-cpu", "--dataset", "{runs}/prep-sop", *flags, "--out-dir", "{out}"],
        needs=["prep-sop"],
        minutes=3,
        metric="loss",
    )


RUNS = [
    *(prep(task) for task in TASKS),
    *(twin(model) for model in ("albert", "hf-albert")),
    *(pretrain(task) for task in TASKS),
    *(score(trained, on) for trained in TASKS for on in TASKS),
]


def table(results):
    """Held-out pair-task accuracy (the head's accuracy on the folder's valid split: NSP or SOP pairs),
    and the held-out MLM accuracy, of each model on each task's data."""
    lines = ["| trained on | NSP accuracy | SOP accuracy | MLM accuracy (own data) | steps | wall time |"]
    lines.append("|---|---|---|---|---|---|")
    for trained in TASKS:
        cells = []
        for on in TASKS:
            r = results.get(f"score-{trained}-on-{on}")
            scores = r and r["metrics"].get(f"valid_results_prep-{on}", {})
            cells.append(f"{scores['val_sop_acc']:.3f}" if scores else "-")
        t = results.get(f"train-{trained}")
        m = t["metrics"] if t else {}
        mlm = f"{m['val_mlm_acc']:.3f}" if "val_mlm_acc" in m else "-"
        steps, wall = (f"{m['step']:,}", f"{t['wall_s'] / 60:.0f} min") if t else ("-", "-")
        lines.append(f"| MLM + {trained.upper()} | {' | '.join(cells)} | {mlm} | {steps} | {wall} |")
    a, b = results.get("steps200-albert"), results.get("steps200-hf-albert")
    if a and b:  # the per-step losses: out/studies/albert_sop/steps200-*/metrics.jsonl
        ma, mb = a["metrics"], b["metrics"]
        lines += ["", "| 200 steps, same init and batches | loss at 200 | val MLM acc | val SOP acc | wall time |"]
        lines.append("|---|---|---|---|---|")
        for name, m, r in (("ours (`--model albert`)", ma, a), ("HF (`--model hf-albert`)", mb, b)):
            cells = f"{m['loss']:.6f} | {m['val_mlm_acc']:.4f} | {m['val_sop_acc']:.4f} | {r['wall_s']:.0f} s"
            lines.append(f"| {name} | {cells} |")
    return "\n".join(lines)


def figure(results):
    """Held-out pair accuracy of each model on NSP and SOP pairs (chance: 0.5)."""
    groups = {}
    for trained in TASKS:
        for on in TASKS:
            r = results.get(f"score-{trained}-on-{on}")
            scores = r and r["metrics"].get(f"valid_results_prep-{on}", {})
            if scores:
                groups.setdefault(f"trained with {trained.upper()}", {})[f"{on.upper()} pairs"] = scores["val_sop_acc"]
    return groups and ("ALBERT's Table 5 at CPU scale: pair-task accuracy", "held-out accuracy", groups)
