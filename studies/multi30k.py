"""The paper's recipe on Multi30k De->En at a 2-core-CPU size (`--preset multi30k`: 3+3 layers,
d 256, 16 epochs), then test BLEU of the last and the averaged checkpoints, greedy and beam 4
at the paper's alpha 0.6 and at 1.4 (the alpha chosen on the validation set): docs/results.md,
"Multi30k translation with the paper's recipe". The pytorch-seq2seq tutorial reports 36.5
(lowercased, spaCy-tokenized: our "lc+spaCy" column)."""

from study import Run

TRAIN = ["train.py", "--model", "transformer", "--dataset", "multi30k", "--preset", "multi30k", "--out-dir", "{out}"]


def evaluate(split, lp):  # BLEU of the train run's last and averaged checkpoints, greedy and beam 4
    return ["train.py", "--out-dir", "{runs}/train", "--evaluate", "--split", split, "--length-penalty", lp]


RUNS = [
    Run("train", TRAIN, minutes=50, metric="val_bleu"),
    *(Run(f"valid-lp{lp}", evaluate("valid", lp), ["train"], minutes=2) for lp in ("0.6", "1.0", "1.4")),
    *(Run(f"test-lp{lp}", evaluate("test", lp), ["train"], minutes=2) for lp in ("0.6", "1.4")),
]


def table(results):
    lines = [
        "| weights | decoding | sacreBLEU (cased, detok) | lc+spaCy (comparable) | decode time |",
        "|---|---|---|---|---|",
    ]
    rows = [("last", "greedy", "0.6"), ("last", "beam4_lp0.6", "0.6"), ("last", "beam4_lp1.4", "1.4")]
    rows += [("avg5", "greedy", "0.6"), ("avg5", "beam4_lp0.6", "0.6"), ("avg5", "beam4_lp1.4", "1.4")]
    for weights, decoding, lp in rows:
        r = results.get(f"test-lp{lp}")
        s = r and r["metrics"].get(f"test_results_lp{lp}", {}).get(f"test_{weights}_{decoding}")
        name = "last checkpoint" if weights == "last" else "average of the last 5"
        how = "greedy" if decoding == "greedy" else f"beam 4, alpha {lp}"
        cells = f"{s['bleu']:.2f} | {s['bleu_lc_tok']:.2f} | {s['seconds']:.1f} s" if s else "- | - | -"
        lines.append(f"| {name} | {how} | {cells} |")
    return "\n".join(lines)


def figure(results):
    """sacreBLEU of each decoding, last checkpoint and the average of the last 5."""
    groups = {}
    for lp, decoding in (("0.6", "greedy"), ("0.6", "beam4_lp0.6"), ("1.4", "beam4_lp1.4")):
        r = results.get(f"test-lp{lp}")
        scores = r and r["metrics"].get(f"test_results_lp{lp}", {})
        if scores:
            groups[decoding] = {w: scores[f"test_{w}_{decoding}"]["bleu"] for w in ("last", "avg5")}
    return groups and ("Multi30k De->En test2016, the paper's base recipe", "sacreBLEU", groups)
