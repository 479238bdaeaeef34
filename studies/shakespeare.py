"""nanoGPT's Tiny Shakespeare CPU recipe, ours against HF's GPT2LMHeadModel through the same loop
(same init and batches): docs/results.md, "nanoGPT's Tiny Shakespeare CPU recipe". nanoGPT
reports about 1.88 validation loss for this recipe."""

from study import Run

GPT = ["train.py", "--preset", "shakespeare-char-cpu", "--dataset", "{runs}/prep", "--out-dir", "{out}"]

RUNS = [
    Run("prep", ["data.py", "lm", "--source", "shakespeare", "--tokenizer", "char", "--out", "{out}"], minutes=0.2),
    Run("ours", [*GPT, "--model", "gpt"], needs=["prep"], minutes=1.2, metric="val_loss"),
    Run("hf", [*GPT, "--model", "hf-gpt2"], needs=["prep"], minutes=1.4, metric="val_loss"),
]


def table(results):
    lines = ["| run | validation loss at step 2000 | train estimate | wall time | tokens/s (last log) |"]
    lines.append("|---|---|---|---|---|")
    for name, label in (("ours", "ours (`--model gpt`)"), ("hf", "HF GPT2LMHeadModel (`--model hf-gpt2`)")):
        r = results.get(name)
        if r is None:
            lines.append(f"| {label} | - | - | - | - |")
            continue
        m = r["metrics"]
        cells = f"{m['val_loss']:.4f} | {m['train_eval_loss']:.4f} | {r['wall_s']:.0f} s | {m['tokens_per_s']:,.0f}"
        lines.append(f"| {label} | {cells} |")
    return "\n".join(lines)


def figure(results):
    """Validation loss of ours and HF's, beside nanoGPT's reported ~1.88."""
    groups = {
        label: {"val_loss": results[n]["metrics"]["val_loss"]}
        for n, label in (("ours", "ours"), ("hf", "HF"))
        if n in results
    }
    return groups and (
        "Tiny Shakespeare, nanoGPT's CPU recipe",
        "validation loss",
        {**groups, "nanoGPT (reported)": {"val_loss": 1.88}},
    )
