"""Two tiny char-level GPT runs on Tiny Shakespeare (under a minute): the study the tests use.
They differ in dropout only; `prep` makes their data."""

from study import Run

GPT = ["train.py", "--preset", "shakespeare-char-cpu", "--dataset", "{runs}/prep", "--out-dir", "{out}"]
GPT += ["--max-steps", "6", "--batch-size", "4", "--save-every", "2", "--eval-every", "3", "--eval-iters", "2"]
GPT += ["--log-every", "1", "--decay-steps", "10"]

RUNS = [
    Run("prep", ["data.py", "lm", "--source", "shakespeare", "--tokenizer", "char", "--out", "{out}"], minutes=0.1),
    Run("dropout-0", [*GPT, "--dropout", "0"], needs=["prep"], minutes=0.2, metric="val_loss"),
    Run("dropout-0.1", [*GPT, "--dropout", "0.1"], needs=["prep"], minutes=0.2, metric="val_loss"),
]


def table(results):
    """Final training and validation loss of the two GPT runs ("-": not finished)."""
    lines = ["| run | loss | val_loss |", "|---|---|---|"]
    for name in ("dropout-0", "dropout-0.1"):
        m = results[name]["metrics"] if name in results else None
        cells = [f"{m['loss']:.6f}", f"{m['val_loss']:.6f}"] if m else ["-", "-"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def figure(results):
    """Both runs' final losses."""
    runs = [n for n in ("dropout-0", "dropout-0.1") if n in results]
    groups = {n: {k: results[n]["metrics"][k] for k in ("loss", "val_loss")} for n in runs}
    return groups and ("smoke: two tiny char-level GPT runs", "loss per character", groups)
