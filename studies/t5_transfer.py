"""T5 transfer: span-corruption pretraining on books + wiki + Multi30k's unpaired text in the
translation BPE, then Multi30k De->En fine-tuning with 10% and 100% of the pairs, from the
pretrained weights and from T5's own random init at the same shape and vocabulary (the same
--init-from path, so the two differ in their initial weights only): docs/results.md,
"Transfer: span-corruption pretraining, then Multi30k with 10% and 100% of the pairs" (its
numbers were made with these commands run by hand)."""

from study import Run

TUNE = ["--preset", "t5-multi30k", "--max-steps", "718", "--decay-steps", "718", "--warmup", "100"]
TUNE += ["--max-epochs", "1000", "--eval-every", "359", "--save-every", "359"]
STARTS = {"pretrained": "{runs}/export", "random": "{runs}/setup/random"}
FRACTIONS = ("0.1", "1.0")


def fine_tune(start, fraction):
    return Run(
        f"tune-{start}-{fraction}",
        ["train.py", *TUNE, "--init-from", STARTS[start], "--train-fraction", fraction, "--out-dir", "{out}"],
        needs=["export" if start == "pretrained" else "setup"],
        minutes=19,
        metric="val_bleu",
    )


RUNS = [
    Run("setup", ["studies/_t5_transfer_setup.py", "{out}"], minutes=0.5),
    Run(
        "prep",
        ["data.py", "lm", "--source", "books+wiki+multi30k", "--tokenizer", "{runs}/setup/tokenizer.json"]
        + ["--out", "{out}"],
        needs=["setup"],
        minutes=1,
    ),
    Run(
        "pretrain",
        [
            "train.py",
            "--preset",
            "t5-span-cpu",
            "--max-steps",
            "2800",
            "--dataset",
            "{runs}/prep",
            "--out-dir",
            "{out}",
        ],
        needs=["prep"],
        minutes=51,
        metric="val_loss",
    ),
    Run(
        "export", ["train.py", "--out-dir", "{runs}/pretrain", "--export-hf", "{out}"], needs=["pretrain"], minutes=0.2
    ),
    *(fine_tune(start, fraction) for fraction in FRACTIONS for start in STARTS),
    *(
        Run(
            f"test-{start}-{fraction}",
            ["train.py", "--out-dir", f"{{runs}}/tune-{start}-{fraction}", "--evaluate"],
            needs=[f"tune-{start}-{fraction}"],
            minutes=3,
        )
        for fraction in FRACTIONS
        for start in STARTS
    ),
]


def table(results):
    lines = ["| pairs | start | validation greedy BLEU, step 718 | test2016 greedy, sacreBLEU / lc+spaCy | beam 4 |"]
    lines.append("|---|---|---|---|---|")
    for fraction in FRACTIONS:
        pairs = "10% (2,900 pairs, 20 epochs)" if fraction == "0.1" else "100% (29,000 pairs, 2 epochs)"
        cells = {}
        for start in STARTS:
            tune, test = results.get(f"tune-{start}-{fraction}"), results.get(f"test-{start}-{fraction}")
            scores = test and test["metrics"].get("test_results_lp0.6", {})
            greedy, beam = (scores or {}).get("test_last_greedy"), (scores or {}).get("test_last_beam4_lp0.6")
            cells[start] = (tune and tune["metrics"].get("val_bleu"), greedy, beam)
            lines.append(f"| {pairs} | {start} | " + " | ".join(show(x) for x in cells[start]) + " |")
        if all(v is not None for c in cells.values() for v in c):
            gain = [gap(cells["pretrained"][i], cells["random"][i]) for i in range(3)]
            lines.append(f"| {pairs} | **gain** | " + " | ".join(gain) + " |")
    return "\n".join(lines)


def show(x):  # a validation BLEU, or a test score's two BLEUs
    if x is None:
        return "-"
    return f"{x:.1f}" if isinstance(x, float | int) else f"{x['bleu']:.2f} / {x['bleu_lc_tok']:.2f}"


def gap(a, b):
    if isinstance(a, float | int):
        return f"{a - b:+.1f}"
    return f"{a['bleu'] - b['bleu']:+.2f} / {a['bleu_lc_tok'] - b['bleu_lc_tok']:+.2f}"


def figure(results):
    """Test greedy sacreBLEU from random init and from span-corruption pretraining, per share of the pairs."""
    groups = {}
    for fraction in FRACTIONS:
        for start in STARTS:
            test = results.get(f"test-{start}-{fraction}")
            greedy = test and test["metrics"].get("test_results_lp0.6", {}).get("test_last_greedy")
            if greedy:
                groups.setdefault(f"{float(fraction):.0%} of the pairs", {})[start] = greedy["bleu"]
    return groups and ("T5 on Multi30k De->En: pretraining's gain", "test2016 greedy sacreBLEU", groups)
